"""Private submission: signed transactions sent as bundles to one or several relays.

`eth_sendBundle` with params [{"txs": [raw...], "blockNumber": hex}], POSTed to every relay at
once, for each of the next `target_blocks` blocks, with the header
    X-Flashbots-Signature: <auth address>:<signature of the hex keccak256 of the body>
signed by a separate auth key that holds no funds. Inclusion is tracked by the transaction
manager through receipts; if the bundle is not in after its target blocks it is sent for
the next ones again, or (fallback_public) to the public mempool.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from eth_account.messages import encode_defunct
from eth_utils import keccak

from ..errors import RpcError, TransientError
from ..rpc import Rpc, redact_url
from ..types import Head


def flashbots_signature(auth_signer: Any, body: str) -> str:
    """The X-Flashbots-Signature header value for a request body."""
    digest = "0x" + keccak(text=body).hex()
    sig = auth_signer.sign_message(encode_defunct(text=digest)).signature
    return f"{auth_signer.address}:0x{bytes(sig).hex()}"


def recover_signer(header: str, body: str) -> str | None:
    """Who signed a request (the relay side of flashbots_signature); None if malformed."""
    from eth_account import Account

    try:
        addr, sig = header.split(":", 1)
        digest = "0x" + keccak(text=body).hex()
        rec = Account.recover_message(encode_defunct(text=digest), signature=sig)
    except Exception:
        return None
    return rec if rec.lower() == addr.lower() else None


class RelayBroadcaster:
    name = "relay"

    def __init__(self, urls: tuple[str, ...], auth_signer: Any, target_blocks: int, log: Any,
                 public: Rpc | None = None, timeout_s: float = 5.0):
        self.urls = urls
        self._auth = auth_signer  # never logged
        self.target_blocks = target_blocks
        self.log = log
        self.public = public  # fallback: the public mempool
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self.submissions: dict[str, tuple[bytes, int]] = {}  # tx hash -> (raw, last target block)

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def _post(self, url: str, body: str) -> Any:
        headers = {"content-type": "application/json", "X-Flashbots-Signature": flashbots_signature(self._auth, body)}
        try:
            async with self._sess().post(url, data=body, headers=headers) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise TransientError(f"relay {redact_url(url)}: {e.__class__.__name__}: {e}") from e
        try:
            reply = json.loads(text)
        except ValueError:
            raise TransientError(f"relay {redact_url(url)} answered HTTP {status}: {text[:120]!r}") from None
        if isinstance(reply, dict) and reply.get("error"):
            err = reply["error"]
            raise RpcError("eth_sendBundle", int(err.get("code", 0)), str(err.get("message", "")))
        return reply.get("result") if isinstance(reply, dict) else None

    async def send_bundle(self, txs: list[bytes], block: int) -> list[Any]:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_sendBundle",
                           "params": [{"txs": ["0x" + t.hex() for t in txs], "blockNumber": hex(block)}]},
                          separators=(",", ":"))
        results = await asyncio.gather(*(self._post(u, body) for u in self.urls), return_exceptions=True)
        ok = [r for r in results if not isinstance(r, BaseException)]
        for u, r in zip(self.urls, results):
            if isinstance(r, BaseException):
                self.log.warning("relay_error", relay=redact_url(u), block=block, error=str(r))
        if not ok:
            raise TransientError(f"no relay accepted the bundle for block {block}")
        return ok

    async def broadcast(self, raw: bytes, tx_hash: str, head: Head) -> None:
        last = head.number + self.target_blocks
        for b in range(head.number + 1, last + 1):
            await self.send_bundle([raw], b)
        self.submissions[tx_hash] = (raw, last)
        self.log.info("bundle_sent", tx=tx_hash, blocks=f"{head.number + 1}-{last}", relays=len(self.urls))

    async def on_block(self, head: Head, pending_hashes: set[str]) -> None:
        """Re-target bundles whose blocks have passed without inclusion (or go public)."""
        for h, (raw, last) in list(self.submissions.items()):
            if h not in pending_hashes:
                del self.submissions[h]
                continue
            if head.number < last:
                continue
            if self.public is not None:
                try:
                    await self.public.call("eth_sendRawTransaction", ["0x" + raw.hex()])
                    self.log.info("bundle_fallback_public", tx=h)
                except RpcError as e:
                    self.log.warning("bundle_fallback_failed", tx=h, error=e.rpc_message)
                del self.submissions[h]
            else:
                await self.broadcast(raw, h, head)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
