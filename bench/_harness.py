"""Shared helpers for the benchmarks: a raw async JSON-RPC client, a timestamping TCP relay in
front of anvil, and percentiles.

SendRecorder is a byte-level TCP relay (asyncio streams), not an HTTP proxy: every byte is
forwarded as soon as it is read, in both directions, so websocket upgrades (anvil serves ws on
the same port) pass through untouched. On the client-to-node side it follows the HTTP/1.1
request framing (Content-Length) just far enough to notice a request whose body holds
`eth_sendRawTransaction`; it then records time.monotonic() at the moment the last byte of that
request was read (the moment the node can start on it), with the raw transaction. Senders,
hashes and nonces are recovered afterwards (`Send.decode`), off the relaying path. A
connection that upgrades to a websocket, or a request without Content-Length (chunked), is
relayed blind from then on (a chunk holding the method name is still recorded, at the time
that chunk was read).

time.monotonic() is CLOCK_MONOTONIC, one clock for every process on the machine, so times
taken here compare with times taken in other processes.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import aiohttp

MARKER = b"eth_sendRawTransaction"
CHUNK = 1 << 16


# -- JSON-RPC --------------------------------------------------------------------------------
class RpcError(RuntimeError):
    pass


class AsyncRpc:
    """Raw JSON-RPC over aiohttp (one keep-alive pool)."""

    def __init__(self, url: str, timeout_s: float = 120.0):
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.session: aiohttp.ClientSession | None = None
        self._id = 0

    async def __aenter__(self) -> "AsyncRpc":
        self.session = aiohttp.ClientSession(timeout=self.timeout)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def _post(self, payload: Any) -> Any:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=self.timeout)
        async with self.session.post(self.url, data=json.dumps(payload),
                                     headers={"content-type": "application/json"}) as r:
            return json.loads(await r.read())

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        self._id += 1
        reply = await self._post({"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)})
        if "error" in reply:
            raise RpcError(f"{method}: {reply['error']}")
        return reply["result"]

    async def batch(self, calls: Iterable[tuple[str, Sequence[Any]]], chunk: int = 1500) -> list[Any]:
        """Results in order; an error item comes back as {"error": ...}. Split into requests of
        `chunk` items (anvil refuses bodies over 2 MiB)."""
        calls = list(calls)
        out: list[Any] = []
        for i in range(0, len(calls), chunk):
            reqs = []
            for m, p in calls[i:i + chunk]:
                self._id += 1
                reqs.append({"jsonrpc": "2.0", "id": self._id, "method": m, "params": list(p)})
            reply = await self._post(reqs)
            if isinstance(reply, dict):
                raise RpcError(f"batch refused: {reply.get('error')}")
            by_id = {r["id"]: r for r in reply}
            for r in reqs:
                a = by_id[r["id"]]
                out.append({"error": a["error"]} if "error" in a else a["result"])
        return out


# -- the timestamping relay ----------------------------------------------------------------
@dataclass
class Send:
    t: float  # time.monotonic() when the request's last byte reached the relay
    raw: str  # 0x-hex signed transaction
    conn: int  # relay connection number
    _decoded: dict[str, Any] | None = field(default=None, repr=False)

    def decode(self) -> dict[str, Any]:
        """sender, hash, nonce, to, data (recovered from the signed bytes; cached)."""
        if self._decoded is None:
            from eth_account import Account
            from eth_utils import keccak

            raw = bytes.fromhex(self.raw[2:])
            sender = Account.recover_transaction(self.raw)
            d: dict[str, Any] = {"sender": sender, "hash": "0x" + keccak(raw).hex()}
            try:
                import rlp

                if raw[0] < 0x7F:  # typed: 1 = access list, 2 = EIP-1559
                    f = rlp.decode(raw[1:])
                    nonce, to, data = f[1], f[4 if raw[0] == 1 else 5], f[6 if raw[0] == 1 else 7]
                else:  # legacy: nonce, gasPrice, gas, to, value, data, v, r, s
                    f = rlp.decode(raw)
                    nonce, to, data = f[0], f[3], f[5]
                d["nonce"] = int.from_bytes(nonce, "big")
                d["to"] = "0x" + bytes(to).hex() if to else None
                d["data"] = bytes(data)
            except Exception as e:  # noqa: BLE001 - the sender and hash are what matter
                d["decode_error"] = f"{e.__class__.__name__}: {e}"
            self._decoded = d
        return self._decoded


class SendRecorder:
    """TCP relay 127.0.0.1:port -> upstream that timestamps eth_sendRawTransaction requests."""

    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.sends: list[Send] = []
        self.port = 0
        self._server: asyncio.AbstractServer | None = None
        self._changed = asyncio.Event()
        self._conns = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> "SendRecorder":
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0, limit=CHUNK)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_send(self, after: float, timeout_s: float) -> Send | None:
        """The first send recorded at or after `after` (monotonic), waiting up to timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            for s in self.sends:
                if s.t >= after:
                    return s
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def sends_between(self, start: float, end: float = math.inf) -> list[Send]:
        return [s for s in self.sends if start <= s.t < end]

    def _record(self, t: float, body: bytes, conn: int) -> None:
        try:
            payload = json.loads(body)
        except ValueError:
            return
        for item in payload if isinstance(payload, list) else [payload]:
            if isinstance(item, dict) and item.get("method") == "eth_sendRawTransaction":
                params = item.get("params") or []
                if params and isinstance(params[0], str):
                    self.sends.append(Send(t, params[0], conn))
        self._changed.set()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:  # close(): end quietly (asyncio asks the task for its exception)
            writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._conns += 1
        conn = self._conns
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream, limit=CHUNK)
        except OSError:
            writer.close()
            return
        for w in (writer, up_writer):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = asyncio.ensure_future(self._pipe(up_reader, writer))
        try:
            await self._requests(reader, up_writer, conn)
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            try:
                up_writer.write_eof()
            except (OSError, RuntimeError):
                pass
            try:
                await asyncio.wait_for(back, 5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001
                back.cancel()
            except asyncio.CancelledError:
                back.cancel()
                raise
            finally:
                for w in (writer, up_writer):
                    w.close()
                if task is not None:
                    self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                writer.write(data)
                if writer.transport.get_write_buffer_size() > 4 * CHUNK:
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                pass

    async def _requests(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter, conn: int) -> None:
        """Forward client bytes at once; follow request framing on the side."""
        buf = bytearray()
        blind = False
        need: int | None = None  # bytes of the current request (headers + body) once known
        while True:
            data = await reader.read(CHUNK)
            if not data:
                return
            t = time.monotonic()
            up.write(data)
            if up.transport.get_write_buffer_size() > 4 * CHUNK:
                await up.drain()
            if blind:
                if MARKER in data:  # best effort for chunked bodies
                    self.sends.append(Send(t, _find_raw(data), conn))
                    self._changed.set()
                continue
            buf += data
            while True:
                if need is None:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    head = bytes(buf[:end]).lower()
                    if b"\nupgrade:" in head or b"transfer-encoding: chunked" in head:
                        blind = True
                        buf.clear()
                        break
                    length = 0
                    for line in head.split(b"\r\n"):
                        if line.startswith(b"content-length:"):
                            length = int(line.split(b":", 1)[1])
                    need = end + 4 + length
                if len(buf) < need:
                    break
                body = bytes(buf[buf.find(b"\r\n\r\n") + 4:need])
                del buf[:need]
                need = None
                if MARKER in body:
                    self._record(t, body, conn)


def _find_raw(chunk: bytes) -> str:
    i = chunk.find(MARKER)
    j = chunk.find(b'"0x', i)
    k = chunk.find(b'"', j + 1) if j >= 0 else -1
    return chunk[j + 1:k].decode() if j >= 0 and k > j else "0x"


# -- numbers --------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no values."""
    v = sorted(values)
    if not v:
        return None
    pos = (len(v) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def summary_ms(latencies_s: Sequence[float]) -> dict[str, float | None]:
    ms = [x * 1000 for x in latencies_s]
    return {k: (None if (p := percentile(ms, q)) is None else round(p, 2))
            for k, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("max_ms", 100))}


# -- when did the node announce a block ------------------------------------------------------
class HeadClock:
    """time.monotonic() at which each newHeads notification arrived over a websocket straight
    to the node (anvil serves ws on its HTTP port)."""

    def __init__(self, url: str):
        self.url = url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        self.seen: dict[int, float] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> "HeadClock":
        self._session = aiohttp.ClientSession()
        ws = await self._session.ws_connect(self.url, max_msg_size=1 << 22)
        await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}))
        reply = json.loads((await ws.receive()).data)
        if "error" in reply:
            raise RpcError(f"eth_subscribe: {reply['error']}")
        self._task = asyncio.ensure_future(self._read(ws))
        return self

    async def _read(self, ws: Any) -> None:
        async for msg in ws:
            t = time.monotonic()
            try:
                n = int(json.loads(msg.data)["params"]["result"]["number"], 16)
            except (ValueError, KeyError, TypeError):
                continue
            self.seen[n] = t  # the latest: after an evm_revert, numbers come again
            self._changed.set()

    async def wait(self, number: int, after: float = 0.0, timeout_s: float = 2.0) -> float | None:
        """When block `number` was announced, at or after `after` (monotonic); None on timeout."""
        deadline = time.monotonic() + timeout_s
        while self.seen.get(number, -1.0) < after:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass
        return self.seen[number]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


class LogTail:
    """The keeper's JSON log lines, read incrementally from its log file."""

    def __init__(self, path: Path):
        self.path = path
        self.pos = 0
        self.lines: list[dict[str, Any]] = []
        self.other: list[str] = []

    def poll(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.pos += end + 1
        new = []
        for raw in chunk[:end].split(b"\n"):
            try:
                obj = json.loads(raw)
                if isinstance(obj, dict):
                    obj["_seen"] = time.monotonic()
                    new.append(obj)
                    continue
            except ValueError:
                pass
            if raw.strip():
                self.other.append(raw.decode(errors="replace"))
        self.lines.extend(new)
        return new


def sel(sig: str) -> str:
    """The 4-byte selector of a function signature, hex without 0x."""
    from eth_utils import keccak

    return keccak(sig.encode())[:4].hex()


def enc(sig: str, types: list[str], args: list[Any]) -> str:
    """Calldata (0x-hex) for a call."""
    from eth_abi import encode

    return "0x" + sel(sig) + encode(types, args).hex()


def word(a: str) -> str:
    """An address as a 32-byte word, hex without 0x."""
    return a.lower().removeprefix("0x").rjust(64, "0")
