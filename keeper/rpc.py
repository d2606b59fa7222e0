"""A lean JSON-RPC client on aiohttp.

One HTTP session, raw JSON-RPC objects, batches as one POST of a JSON array.
Anything that is not a well-formed JSON-RPC answer raises BadResponseError
(a TransientError: the caller retries later); a JSON-RPC error object raises
RpcError with the node's code, message and revert data.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any, Iterable

import aiohttp

from .errors import BadResponseError, RpcError, TransientError


def _hex(n: int) -> str:
    return hex(n)


def redact_url(url: str) -> str:
    """Hide credentials and API keys embedded in an RPC URL for logging."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    path = parts.path
    # providers put keys in the last path segment (e.g. /v2/<key>)
    segs = path.split("/")
    if segs and len(segs[-1]) >= 16:
        segs[-1] = "***"
    return f"{parts.scheme}://{host}{'/'.join(segs)}"


class Rpc:
    def __init__(self, url: str, timeout_s: float = 10.0):
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> "Rpc":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                headers={"content-type": "application/json"},
                connector=aiohttp.TCPConnector(limit=16, ttl_dns_cache=300),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def _post(self, payload: Any) -> Any:
        body = json.dumps(payload, separators=(",", ":"))
        try:
            async with self._sess().post(self.url, data=body) as resp:
                raw = await resp.read()
                status = resp.status
        except asyncio.TimeoutError as e:
            raise TransientError(f"RPC {redact_url(self.url)} timed out") from e
        except aiohttp.ClientError as e:
            raise TransientError(f"cannot reach RPC {redact_url(self.url)}: {e.__class__.__name__}: {e}") from e
        except OSError as e:
            raise TransientError(f"cannot reach RPC {redact_url(self.url)}: {e}") from e
        try:
            return json.loads(raw)
        except ValueError:
            snippet = raw[:120].decode("utf-8", "replace")
            raise BadResponseError(
                f"RPC {redact_url(self.url)} answered HTTP {status} with non-JSON: {snippet!r}"
            ) from None

    @staticmethod
    def _result(method: str, reply: Any) -> Any:
        if not isinstance(reply, dict) or reply.get("jsonrpc") != "2.0" or ("result" not in reply and "error" not in reply):
            raise BadResponseError(f"{method}: malformed JSON-RPC answer: {str(reply)[:120]!r}")
        err = reply.get("error")
        if err is not None:
            if not isinstance(err, dict):
                raise BadResponseError(f"{method}: malformed error object: {str(err)[:120]!r}")
            data = err.get("data")
            if isinstance(data, dict):  # some nodes nest revert data
                data = data.get("data")
            raise RpcError(method, int(err.get("code", 0)), str(err.get("message", "")), data if isinstance(data, str) else None)
        return reply["result"]

    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        reply = await self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params or []})
        return self._result(method, reply)

    async def batch(self, requests: Iterable[tuple[str, list[Any]]], return_errors: bool = False) -> list[Any]:
        """Send many requests as one JSON array; answers come back in request order.

        With return_errors, an RpcError is returned in place of that answer instead of raised.
        """
        reqs = list(requests)
        if not reqs:
            return []
        first = next(self._ids)
        payload = [{"jsonrpc": "2.0", "id": first + i, "method": m, "params": p} for i, (m, p) in enumerate(reqs)]
        for _ in range(len(reqs) - 1):
            next(self._ids)
        replies = await self._post(payload)
        if not isinstance(replies, list) or len(replies) != len(reqs):
            raise BadResponseError(f"batch of {len(reqs)}: malformed answer: {str(replies)[:120]!r}")
        by_id: dict[int, Any] = {}
        for r in replies:
            if not isinstance(r, dict) or not isinstance(r.get("id"), int):
                raise BadResponseError(f"batch: malformed answer item: {str(r)[:120]!r}")
            by_id[r["id"]] = r
        out: list[Any] = []
        for i, (m, _) in enumerate(reqs):
            r = by_id.get(first + i)
            if r is None:
                raise BadResponseError(f"batch: answer for {m} missing")
            try:
                out.append(self._result(m, r))
            except RpcError as e:
                if not return_errors:
                    raise
                out.append(e)
        return out

    # -- typed helpers ---------------------------------------------------------------
    async def block_number(self) -> int:
        return parse_int(await self.call("eth_blockNumber"), "eth_blockNumber")

    async def chain_id(self) -> int:
        return parse_int(await self.call("eth_chainId"), "eth_chainId")

    async def eth_call(self, to: str, data: bytes, block: int | str = "latest", sender: str | None = None, value: int = 0) -> bytes:
        tx: dict[str, Any] = {"to": to, "data": "0x" + data.hex()}
        if sender:
            tx["from"] = sender
        if value:
            tx["value"] = _hex(value)
        res = await self.call("eth_call", [tx, _block_tag(block)])
        return parse_bytes(res, "eth_call")

    async def get_block(self, tag: int | str = "latest") -> dict[str, Any]:
        blk = await self.call("eth_getBlockByNumber", [_block_tag(tag), False])
        if not isinstance(blk, dict) or "number" not in blk:
            raise BadResponseError(f"eth_getBlockByNumber({tag}): malformed block: {str(blk)[:120]!r}")
        return blk


def _block_tag(block: int | str) -> str:
    return hex(block) if isinstance(block, int) else block


def parse_int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise BadResponseError(f"{what}: expected a hex quantity, got {str(value)[:80]!r}")
    try:
        return int(value, 16)
    except ValueError:
        raise BadResponseError(f"{what}: expected a hex quantity, got {value[:80]!r}") from None


def parse_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise BadResponseError(f"{what}: expected hex data, got {str(value)[:80]!r}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise BadResponseError(f"{what}: expected hex data, got {value[:80]!r}") from None
