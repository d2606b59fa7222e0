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
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import aiohttp

MARKER = b"eth_sendRawTransaction"
CHUNK = 1 << 16

REPO = Path(__file__).resolve().parent.parent
DEVNET_CONFIG = REPO / "config" / "devnet.toml"
# anvil's public test accounts (mnemonic "test test ... junk"; local chain only)
KEEPER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # account 1
CLEANER = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65"  # account 4, unlocked on anvil
MAX_UINT = 2**256 - 1
WAD = 10**18
GWEI = 10**9
ANSWER_SLOT = 2  # SettableAggregator storage: owner, description, _answer
# generous inventories (raw units) so no bot or cleaner is ever short of the debt asset
FUNDS = {"USDC": 10**9 * 10**6, "WETH": 10**6 * 10**18, "WBTC": 10**5 * 10**8}


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
            if not await wait_changed(self._changed, deadline):
                return None

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


async def wait_changed(changed: asyncio.Event, deadline: float) -> bool:
    """Wait until `changed` is set again or the deadline (monotonic) passes; False when the
    deadline had already passed (nothing waited)."""
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    changed.clear()
    try:
        await asyncio.wait_for(changed.wait(), left)
    except asyncio.TimeoutError:
        pass
    return True


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
            if not await wait_changed(self._changed, deadline):
                return None
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


def wall(iso: Any) -> float:
    """A log line's ISO timestamp as epoch seconds (nan when it is not one)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("nan")


def machine() -> str:
    return f"{platform.machine()} {os.cpu_count()} cpu {platform.python_implementation()} {platform.python_version()}"


def log_warnings(lines: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many warning / error / critical log lines, by "level:event"."""
    counts: dict[str, int] = {}
    for l in lines:
        if l.get("level") in ("warning", "error", "critical"):
            key = f"{l.get('level')}:{l.get('event')}"
            counts[key] = counts.get(key, 0) + 1
    return counts


async def start_relay(url: str) -> SendRecorder:
    """A started SendRecorder in front of the node at `url`."""
    from urllib.parse import urlsplit

    up = urlsplit(url)
    return await SendRecorder(up.hostname or "127.0.0.1", up.port or 8545).start()


# -- the devnet keeper as a subprocess -------------------------------------------------------
def keeper_env(relay: SendRecorder, workdir: Path, **extra: str) -> dict[str, str]:
    """The environment of a live devnet keeper (config/devnet.toml) behind `relay`: this
    process's without KEEPER_*, then the relay as its RPC and websocket, the devnet keeper key,
    a heartbeat every block, journal and store in `workdir`, and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    env.update({
        "KEEPER_RPC_URL": relay.http_url,
        "KEEPER_WS_URL": relay.ws_url,
        "KEEPER_PRIVATE_KEY": KEEPER_KEY,
        **extra,
        "KEEPER_KEEPER__HEARTBEAT_BLOCKS": "1",
        "KEEPER_KEEPER__JOURNAL": str(workdir / "keeper-journal.jsonl"),
        "KEEPER_KEEPER__STORE_PATH": str(workdir / "keeper-store.sqlite"),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def only_aave(env: dict[str, str]) -> None:
    """Every protocol of config/devnet.toml but aave-v3-devnet off, in the keeper's `env`."""
    import tomllib

    names = [p["name"] for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"]]
    for j, n in enumerate(names):
        env[f"KEEPER_PROTOCOLS__{j}__ENABLED"] = "true" if n == "aave-v3-devnet" else "false"


def spawn_keeper(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`python -m keeper --json-logs run --config config/devnet.toml`, its output to log_path."""
    with open(log_path, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "keeper", "--json-logs", "--log-level", "info", "run",
                                 "--config", str(DEVNET_CONFIG)], cwd=REPO, env=env, stdout=f,
                                stderr=subprocess.STDOUT)


async def wait_logged(tail: LogTail, proc: subprocess.Popen, event: str, timeout_s: float, what: str,
                      last: int) -> dict[str, Any]:
    """The first `event` line the keeper logs; RuntimeError("keeper did not {what} ...", with its
    `last` events and 5 non-JSON lines) when it exits or timeout_s passes first."""
    deadline = time.monotonic() + timeout_s
    while not any(l.get("event") == event for l in tail.lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail.poll()
            raise RuntimeError(f"keeper did not {what} (exit {proc.poll()}); last lines: "
                               f"{[l.get('event') for l in tail.lines[-last:]] + tail.other[-5:]} (log {tail.path})")
        await asyncio.sleep(0.05)
        tail.poll()
    return next(l for l in tail.lines if l.get("event") == event)


async def stop_process(proc: subprocess.Popen | None) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    for _ in range(200):
        if proc.poll() is not None:
            return
        await asyncio.sleep(0.05)
    proc.kill()
    proc.wait()


# -- driving the devnet (anvil) ----------------------------------------------------------------
class DevnetBench:
    """What the devnet benchmarks (reaction.py, sameblock.py) share: the node's JSON-RPC, the
    seeded Aave borrowers, and the chain helpers the harness drives anvil with."""

    strict_health = False  # health(): an eth_call error for an account raises (else: left out)

    def __init__(self, args: Any, node: Any, dep: Any, workdir: Path):
        self.args = args
        self.node = node
        self.dep = dep
        self.workdir = workdir
        self.rpc = AsyncRpc(node.url)
        self.borrowers = list(dep.borrowers)
        self.words = {word(b)[24:]: b for b in self.borrowers}  # 40 hex -> address
        self.reserves: list[str] = []
        self.relay: SendRecorder | None = None

    async def head(self) -> int:
        return int(await self.rpc.call("eth_blockNumber"), 16)

    async def mine(self) -> int:
        await self.rpc.call("evm_mine")
        return await self.head()

    async def pool_empty(self) -> bool:
        st = await self.rpc.call("txpool_status")
        return int(st["pending"], 16) == 0 and int(st["queued"], 16) == 0

    async def mine_until_empty(self, limit: int = 20) -> None:
        for _ in range(limit):
            if await self.pool_empty():
                return
            await self.mine()
        raise RuntimeError("txpool does not empty")

    async def send_tx(self, frm: str, to: str, data: str, gas: int = 1_500_000, max_fee: int = 100 * GWEI) -> str:
        return await self.rpc.call("eth_sendTransaction", [{"from": frm, "to": to, "data": data, "gas": hex(gas),
                                                            "maxFeePerGas": hex(max_fee),
                                                            "maxPriorityFeePerGas": hex(0)}])

    async def read_reserves(self) -> None:
        """self.reserves: the pool's getReservesList()."""
        from eth_abi import decode
        from eth_utils import to_checksum_address

        data = await self.rpc.call("eth_call", [{"to": self.dep.pool, "data": "0x" + sel("getReservesList()")},
                                                "latest"])
        self.reserves = [to_checksum_address(a) for a in decode(["address[]"], bytes.fromhex(data[2:]))[0]]

    async def fund(self, who: str, approve: bool = True) -> None:
        """Ether and FUNDS of each token to `who` (minted by the deployer), and unless not
        `approve` the pool's max allowance from it; each set-up tx mined (automine on)."""
        await self.rpc.call("anvil_setBalance", [who, hex(10**24)])
        for sym, amount in FUNDS.items():
            tok = self.dep.tokens[sym]
            mint = enc("mint(address,uint256)", ["address", "uint256"], [who, amount])
            await self.receipt_ok(await self.send_tx(self.dep.deployer, tok, mint, gas=200_000))
            if approve:
                allow = enc("approve(address,uint256)", ["address", "uint256"], [self.dep.pool, MAX_UINT])
                await self.receipt_ok(await self.send_tx(who, tok, allow, gas=200_000))

    async def receipt_ok(self, h: str) -> None:
        for _ in range(500):
            r = await self.rpc.call("eth_getTransactionReceipt", [h])
            if r:
                if r["status"] != "0x1":
                    raise RuntimeError(f"set-up tx {h} reverted")
                return
            await asyncio.sleep(0.01)
        raise RuntimeError(f"set-up tx {h} not mined")

    async def answer(self, sym: str) -> int:
        data = await self.rpc.call("eth_call", [{"to": self.dep.aggregators[sym], "data": "0x" + sel("latestAnswer()")},
                                                "latest"])
        return int(data, 16)

    async def health(self, block: str | int = "latest", override: tuple[str, int] | None = None) -> dict[str, int]:
        """account -> health factor (WAD) of every borrower with debt, at `block`; override =
        (symbol, answer): that aggregator's stored answer replaced in the call (nothing mined)."""
        params_tail: list[Any] = [hex(block) if isinstance(block, int) else block]
        if override is not None:
            sym, ans = override
            slot, value = "0x" + f"{ANSWER_SLOT:064x}", "0x" + f"{ans:064x}"
            params_tail.append({self.dep.aggregators[sym]: {"stateDiff": {slot: value}}})
        data = "0x" + sel("getUserAccountData(address)")
        res = await self.rpc.batch([("eth_call", [{"to": self.dep.pool, "data": data + word(b)}, *params_tail])
                                    for b in self.borrowers])
        out = {}
        for b, r in zip(self.borrowers, res):
            if isinstance(r, str) and len(r) >= 2 + 64 * 6:
                if int(r[2 + 64:2 + 128], 16):  # debt
                    out[b] = int(r[2 + 64 * 5:2 + 64 * 6], 16)
            elif self.strict_health and isinstance(r, dict):
                raise RuntimeError(f"getUserAccountData({b}) at {block}: {r}")
        return out

    async def liquidatable(self, block: str | int = "latest") -> list[str]:
        return [a for a, hf in (await self.health(block)).items() if hf < WAD]

    async def pairs(self, users: list[str], block: str | int = "latest") -> dict[str, tuple[str, str]]:
        """user -> (first collateral reserve, first debt reserve) of its configuration bitmap."""
        data = "0x" + sel("getUserConfiguration(address)")
        tag = hex(block) if isinstance(block, int) else block
        res = await self.rpc.batch([("eth_call", [{"to": self.dep.pool, "data": data + word(u)}, tag]) for u in users])
        out = {}
        for u, r in zip(users, res):
            bits = int(r, 16) if isinstance(r, str) else 0
            debt = next((x for j, x in enumerate(self.reserves) if bits >> (2 * j) & 1), None)
            coll = next((x for j, x in enumerate(self.reserves) if bits >> (2 * j + 1) & 1), None)
            if debt and coll:
                out[u] = (coll, debt)
        return out

    async def clean(self, max_fee: int = 100 * GWEI, recheck: bool = False) -> list[str]:
        """Liquidate (from the cleaner account) every account still liquidatable; mine until none.
        The accounts it sent a liquidation for. Still some after 8 rounds: RuntimeError (with
        recheck: unless none is left after the 8th)."""
        done: list[str] = []
        for _ in range(8):
            # a pinned block, not "latest": anvil can answer an eth_call at "latest" made right as a
            # block is mined with the new state but the old block's timestamp (Aave then reverts
            # with an underflow in its interest maths)
            block = await self.head()
            users = await self.liquidatable(block)
            if not users:
                await self.mine_until_empty()
                return done
            for u, (coll, debt) in (await self.pairs(users, block)).items():
                await self.send_tx(CLEANER, self.dep.pool,
                                   enc("liquidationCall(address,address,address,uint256,bool)",
                                       ["address", "address", "address", "uint256", "bool"],
                                       [coll, debt, u, MAX_UINT, False]),
                                   max_fee=max_fee)
                done.append(u)
            await self.mine_until_empty()
        if not recheck:
            raise RuntimeError("cleaner: accounts stay liquidatable")
        left = await self.liquidatable(await self.head())
        if left:
            raise RuntimeError(f"cleaner: {len(left)} accounts stay liquidatable (e.g. {left[0]})")
        return done

    async def follow_pools(self, sym: str) -> None:
        """Arbitrage the pools holding `sym` to the oracle (keeper.devnet's helper needs automine)."""
        from keeper.devnet.prices import move_pools_to_oracle

        await self.rpc.call("evm_setAutomine", [True])
        try:
            await asyncio.to_thread(move_pools_to_oracle, self.node.url, self.dep, sym)
        finally:
            await self.rpc.call("evm_setAutomine", [False])

    def targets(self, data: bytes) -> list[str]:
        """Borrowers named (as an ABI address word) in a send's calldata, in order."""
        hexd = data[4:].hex()
        out = []
        for k in range(0, len(hexd) - 63, 64):
            w = hexd[k:k + 64]
            if w[:24] == "0" * 24 and w[24:] in self.words:
                out.append(self.words[w[24:]])
        return out

    async def wait_heartbeat(self, tail: LogTail, proc: subprocess.Popen | None,
                             timeout_s: float = 120.0) -> dict[str, Any]:
        """Wait until the keeper logged the heartbeat of the latest block (its cycle ended); that line."""
        head = await self.head()
        deadline = time.monotonic() + timeout_s
        while True:
            tail.poll()
            for l in reversed(tail.lines):
                if l.get("event") == "heartbeat" and isinstance(l.get("block"), int) and l["block"] >= head:
                    return l
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"keeper exited ({proc.poll()}); see {tail.path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"keeper logged no heartbeat for block {head} within {timeout_s}s; see {tail.path}")
            await asyncio.sleep(0.02)
