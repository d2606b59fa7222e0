"""Private submission: signed transactions sent as bundles to one or several relays.

`eth_sendBundle` with params [{"txs": [raw...], "blockNumber": hex}], POSTed with the header
    X-Flashbots-Signature: <auth address>:<signature of the hex keccak256 of the body>
signed by a separate auth key that holds no funds (never logged).

- Concurrency: every (relay, target block) post of a round goes out at once, each bounded by
  `timeout_s` (aiohttp's total timeout, and asyncio.wait_for around it). A round returns as
  soon as every bundle of it has been accepted for every target block by some relay, or when
  every post has ended, and in any case within about `timeout_s`. Posts still running then
  (a slow or hanging relay) finish in the background, bounded by the same timeout, and are
  only counted; nothing waits for them.
- Health: per relay, accepted / errors / timeouts and the last error (`stats`, `status()`).
  A relay whose posts all failed in K consecutive rounds is skipped for an interval that
  doubles each time (2 s up to 60 s), then tried again (`relay_backed_off`, `relay_recovered`).
  If every relay is backed off, all are tried anyway: a round never makes zero attempts.
- `broadcast` records the submission first, then posts; when no relay accepted it raises
  TransientError but the submission stays recorded and is re-targeted on the next block by
  `on_block`, which never raises.
- A newer transaction on the same sender and nonce (a replacement, a cancellation) supersedes
  the older submission: only the newest one is re-targeted.
- Relay URLs are only ever logged redacted (`scheme://host:port/***`): they can carry tokens.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp
from eth_account.messages import encode_defunct
from eth_utils import keccak

from ..errors import RpcError, TransientError
from ..redact import redact_url, scrub
from ..rpc import Rpc, encode_json, parse_json, rejection_kind
from ..types import Head

FAIL_THRESHOLD = 3  # consecutive failed rounds before a relay is skipped
BACKOFF_INITIAL_S = 2.0
BACKOFF_MAX_S = 60.0


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


def _sender_nonce(raw: bytes) -> tuple[str, int] | None:
    """(sender, nonce) of a signed transaction, or None if it cannot be decoded."""
    try:
        import rlp
        from eth_account import Account

        typed = raw[0] <= 0x7F  # EIP-2718: type byte, then [chainId, nonce, ...]; legacy: [nonce, ...]
        fields = rlp.decode(raw[1:]) if typed else rlp.decode(raw)
        nonce_field = fields[1] if typed else fields[0]
        nonce = int.from_bytes(nonce_field, "big")
        return Account.recover_transaction(raw).lower(), nonce
    except Exception:
        return None


def _short(text: str, limit: int = 200) -> str:
    text = scrub(text)
    return text if len(text) <= limit else text[:limit] + "…"


class _Rejected(Exception):
    """The relay answered, but not with an acceptance (JSON-RPC error, HTTP error, garbage)."""


@dataclass
class _Relay:
    url: str  # never logged
    label: str  # redacted, unique
    stats: dict[str, Any] = field(default_factory=lambda: {"accepted": 0, "errors": 0, "timeouts": 0,
                                                           "last_error": ""})
    consecutive_failures: int = 0
    backoff_s: float = 0.0
    skip_until: float = 0.0


class RelayBroadcaster:
    name = "relay"
    public_pool = False  # the node the keeper reads does not see bundles: on_block re-targets them

    def __init__(self, urls: tuple[str, ...], auth_signer: Any, target_blocks: int, log: Any,
                 public: Rpc | None = None, timeout_s: float = 2.0, *, fail_threshold: int = FAIL_THRESHOLD,
                 backoff_initial_s: float = BACKOFF_INITIAL_S, backoff_max_s: float = BACKOFF_MAX_S,
                 clock: Callable[[], float] = time.monotonic):
        self.urls = tuple(urls)
        self._auth = auth_signer  # never logged
        self.target_blocks = max(1, int(target_blocks))
        self.log = log
        self.public = public  # fallback: the public mempool
        self.timeout_s = float(timeout_s)
        self.timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        self.fail_threshold = max(1, fail_threshold)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self.submissions: dict[str, tuple[bytes, int]] = {}  # tx hash -> (raw, last target block)
        self._nonce_of: dict[str, tuple[str, int]] = {}  # tx hash -> (sender, nonce)
        self._background: set[asyncio.Task] = set()
        self._relays: list[_Relay] = []
        self.stats: dict[str, dict[str, Any]] = {}  # label -> the relay's own stats dict
        for u in self.urls:
            label = redact_url(u)
            if label in self.stats:  # two URLs on one host: keep them apart without showing the path
                label = f"{label}#{sum(1 for r in self._relays if r.label.startswith(label)) + 1}"
            relay = _Relay(url=u, label=label)
            self._relays.append(relay)
            self.stats[label] = relay.stats

    # -- health -------------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Per relay (URL redacted): counts, last error, consecutive failed rounds, backoff left."""
        now = self._clock()
        return [{"relay": r.label, **r.stats, "consecutive_failures": r.consecutive_failures,
                 "backed_off_s": round(max(0.0, r.skip_until - now), 3)} for r in self._relays]

    def _pick(self) -> list[_Relay]:
        now = self._clock()
        active = [r for r in self._relays if r.skip_until <= now]
        if not active:  # never zero attempts
            self.log.warning("relay_all_backed_off", relays=len(self._relays))
            active = list(self._relays)
        return active

    def _health(self, relay: _Relay, results: list[tuple[int, str, str]]) -> None:
        """After a round: results are (block, kind, detail) of this relay's posts."""
        if any(kind == "ok" for _, kind, _ in results):
            if relay.consecutive_failures:
                self.log.info("relay_recovered", relay=relay.label, after_failed_rounds=relay.consecutive_failures)
            relay.consecutive_failures, relay.backoff_s, relay.skip_until = 0, 0.0, 0.0
            return
        failed = [(b, kind, d) for b, kind, d in results if kind != "cancelled"]
        if not failed:
            return
        relay.consecutive_failures += 1
        block, _, detail = failed[0]
        self.log.warning("relay_error", relay=relay.label, block=block, failed_posts=len(failed),
                         timeouts=sum(1 for _, k, _ in failed if k == "timeout"), error=detail,
                         consecutive_failures=relay.consecutive_failures)
        if relay.consecutive_failures >= self.fail_threshold:
            relay.backoff_s = (self.backoff_initial_s if relay.backoff_s <= 0
                               else min(relay.backoff_s * 2, self.backoff_max_s))
            relay.skip_until = self._clock() + relay.backoff_s
            self.log.warning("relay_backed_off", relay=relay.label, consecutive_failures=relay.consecutive_failures,
                             retry_in_s=relay.backoff_s)

    # -- one post -----------------------------------------------------------------------
    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # no pool limit: a hanging relay holding connections must not queue the healthy ones
            self._session = aiohttp.ClientSession(timeout=self.timeout, connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def _post(self, url: str, body: str, headers: dict[str, str]) -> Any:
        """The relay's result; raises _Rejected (answered, but no acceptance), TimeoutError,
        or aiohttp/OS errors (unreachable)."""
        async with self._sess().post(url, data=body, headers=headers) as resp:
            text = await resp.text(errors="replace")
            status = resp.status
        try:
            reply = parse_json(text)
        except (ValueError, RecursionError):
            raise _Rejected(f"HTTP {status}, not JSON: {text[:80]!r}") from None
        if not isinstance(reply, dict):
            raise _Rejected(f"HTTP {status}, malformed answer: {text[:80]!r}")
        err = reply.get("error")
        if err is not None:
            code, msg = (err.get("code", "?"), err.get("message", "")) if isinstance(err, dict) else ("?", err)
            raise _Rejected(f"HTTP {status}, error {code}: {str(msg)[:120]}")
        if status >= 400 or "result" not in reply:
            raise _Rejected(f"HTTP {status}, malformed answer: {text[:80]!r}")
        return reply["result"]

    async def _attempt(self, relay: _Relay, block: int, body: str, headers: dict[str, str]) -> tuple[int, str, str]:
        st = relay.stats
        try:
            await asyncio.wait_for(self._post(relay.url, body, headers), self.timeout_s)
        except TimeoutError:  # asyncio.TimeoutError and aiohttp's timeouts are TimeoutError on 3.11
            st["timeouts"] += 1
            st["last_error"] = f"no answer within {self.timeout_s:g} s"
            return block, "timeout", st["last_error"]
        except _Rejected as e:
            detail = _short(str(e))
        except (aiohttp.ClientError, OSError) as e:
            detail = _short(f"unreachable: {e.__class__.__name__}: {e}")
        except Exception as e:  # noqa: BLE001 - a relay must never break a round
            detail = _short(f"{e.__class__.__name__}: {e}")
        else:
            st["accepted"] += 1
            return block, "ok", ""
        st["errors"] += 1
        st["last_error"] = detail
        return block, "error", detail

    # -- a round: every bundle to every relay at once --------------------------------------
    def _body(self, txs: list[bytes], block: int) -> tuple[str, dict[str, str]]:
        body = encode_json({"jsonrpc": "2.0", "id": 1, "method": "eth_sendBundle",
                            "params": [{"txs": ["0x" + t.hex() for t in txs], "blockNumber": hex(block)}]})
        return body, {"content-type": "application/json",
                      "X-Flashbots-Signature": flashbots_signature(self._auth, body)}

    async def _round(self, jobs: list[tuple[str, list[bytes], int]]) -> dict[str, int]:
        """jobs: (key, txs, block). Returns, per key, how many posts were accepted by the time
        the round returned (every job accepted somewhere, every post ended, or the timeout)."""
        accepted = {key: 0 for key, _, _ in jobs}
        if not jobs:
            return accepted
        relays = self._pick()
        bodies = [(key, block, *self._body(txs, block)) for key, txs, block in jobs]
        meta: dict[asyncio.Task, tuple[_Relay, str, int]] = {}
        for r in relays:
            for key, block, body, headers in bodies:
                meta[asyncio.ensure_future(self._attempt(r, block, body, headers))] = (r, key, block)
        need = {(key, block) for key, _, block in jobs}
        covered: set[tuple[str, int]] = set()
        pending: set[asyncio.Task] = set(meta)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s + 0.25  # the posts bound themselves; this is a third belt
        try:
            while pending and covered != need:
                left = deadline - loop.time()
                if left <= 0:
                    break
                done, pending = await asyncio.wait(pending, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    _, key, block = meta[t]
                    if t.result()[1] == "ok":
                        accepted[key] += 1
                        covered.add((key, block))
        except asyncio.CancelledError:
            for t in meta:
                t.cancel()
            raise
        if pending:  # slow relays: let their posts end (bounded) and count them, without waiting here
            bg = asyncio.ensure_future(self._finish(meta, relays))
            self._background.add(bg)
            bg.add_done_callback(self._background.discard)
        else:
            self._account(meta, relays)
        return accepted

    async def _finish(self, meta: dict[asyncio.Task, tuple[_Relay, str, int]], relays: list[_Relay]) -> None:
        try:
            await asyncio.wait(list(meta), timeout=self.timeout_s + 1.0)
        except asyncio.CancelledError:
            for t in meta:
                t.cancel()
            raise
        for t in meta:
            if not t.done():
                t.cancel()
        self._account(meta, relays)

    def _account(self, meta: dict[asyncio.Task, tuple[_Relay, str, int]], relays: list[_Relay]) -> None:
        for r in relays:
            res: list[tuple[int, str, str]] = []
            for t, (rr, _, block) in meta.items():
                if rr is not r:
                    continue
                if t.done() and not t.cancelled():
                    res.append(t.result())
                else:
                    res.append((block, "cancelled", ""))
            self._health(r, res)

    async def settle(self) -> None:
        """Wait for the posts still running in the background (each bounded by the timeout)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # -- the broadcaster interface ---------------------------------------------------------
    def _record(self, tx_hash: str, raw: bytes, last: int) -> None:
        sn = self._nonce_of.get(tx_hash) or _sender_nonce(raw)
        if sn is not None:
            for h in [h for h, v in self._nonce_of.items() if v == sn and h != tx_hash]:
                if h in self.submissions:
                    self.log.info("bundle_superseded", tx=h, by=tx_hash)
                self.submissions.pop(h, None)
                self._nonce_of.pop(h, None)
            self._nonce_of[tx_hash] = sn
        self.submissions[tx_hash] = (raw, last)

    def _forget(self, tx_hash: str) -> None:
        self.submissions.pop(tx_hash, None)
        self._nonce_of.pop(tx_hash, None)

    async def broadcast(self, raw: bytes, tx_hash: str, head: Head, behind: bytes | None = None) -> None:
        """Record, then post to every relay for each of the next target_blocks blocks at once.
        Raises TransientError when no relay accepted; the submission is kept all the same and
        on_block sends it again on the next block. behind: a signed pending transaction this
        one must follow (an oracle update): the bundle is [behind, raw] for the next block
        (re-targeted later, it goes alone: by then the update is mined or gone)."""
        first, last = head.number + 1, head.number + self.target_blocks
        self._record(tx_hash, raw, last)
        acc = (await self._round([(tx_hash, [behind, raw] if behind and b == first else [raw], b)
                                  for b in range(first, last + 1)]))[tx_hash]
        if not acc:
            self._not_accepted(tx_hash, raw, head, f"{first}-{last}")
            raise TransientError(f"no relay accepted the bundle for blocks {first}-{last} "
                                 f"(kept; sent again on the next block)")
        self.log.info("bundle_sent", tx=tx_hash, blocks=f"{first}-{last}", relays=len(self._relays), accepted=acc)

    def _not_accepted(self, tx_hash: str, raw: bytes, head: Head, blocks: str) -> None:
        """No relay accepted it: due again on the next block (unless superseded meanwhile)."""
        if tx_hash in self.submissions:
            self.submissions[tx_hash] = (raw, head.number)
        self.log.warning("bundle_not_accepted", tx=tx_hash, blocks=blocks, relays=len(self._relays))

    async def on_block(self, head: Head, pending_hashes: set[str]) -> None:
        """Re-target bundles whose blocks have passed without inclusion (or go public). Never raises."""
        try:
            await self._on_block(head, pending_hashes)
        except Exception as e:  # noqa: BLE001 - the keeper's loop must go on
            self.log.error("relay_on_block_error", error=_short(f"{e.__class__.__name__}: {e}"))

    async def _on_block(self, head: Head, pending_hashes: set[str]) -> None:
        for h in [h for h in self.submissions if h not in pending_hashes]:
            self._forget(h)
        due = [(h, raw) for h, (raw, last) in self.submissions.items() if head.number >= last]
        if not due:
            return
        if self.public is not None:
            await asyncio.gather(*(self._go_public(h, raw) for h, raw in due))
            return
        first, last = head.number + 1, head.number + self.target_blocks
        for h, raw in due:
            self.submissions[h] = (raw, last)
        acc = await self._round([(h, [raw], b) for h, raw in due for b in range(first, last + 1)])
        for h, raw in due:
            if acc[h]:
                self.log.info("bundle_retargeted", tx=h, blocks=f"{first}-{last}", accepted=acc[h])
            else:
                self._not_accepted(h, raw, head, f"{first}-{last}")

    async def _go_public(self, h: str, raw: bytes) -> None:
        try:
            await asyncio.wait_for(self.public.send_raw_transaction("0x" + raw.hex()), self.timeout_s)
        except RpcError as e:
            if rejection_kind(e.rpc_message) in ("known", "nonce_used"):  # the node has it, or its nonce is used
                self.log.info("bundle_fallback_public", tx=h, note=_short(e.rpc_message))
            else:  # refused for good (underpriced, insufficient funds...): the tx manager decides
                self.log.warning("bundle_fallback_failed", tx=h, error=_short(e.rpc_message))
            self._forget(h)
        except Exception as e:  # noqa: BLE001 - timeout or unreachable: try again on the next block
            self.log.warning("bundle_fallback_failed", tx=h, error=_short(f"{e.__class__.__name__}: {e}"),
                             retry="next_block")
        else:
            self.log.info("bundle_fallback_public", tx=h)
            self._forget(h)

    async def close(self) -> None:
        """Stops the background posts (only counting is left in them) and closes the session."""
        for t in list(self._background):
            t.cancel()
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        if self._session is not None and not self._session.closed:
            await self._session.close()
