"""A fault-injecting JSON-RPC proxy (aiohttp, loopback) between the keeper and anvil.

    async with FaultProxy(chain.url) as proxy:
        cfg = ... KEEPER_RPC_URL=proxy.url ...
        proxy.add("eth_sendRawTransaction", "timeout_after_forward", times=1)
        proxy.down = True          # every request: connection dropped (an outage)
        proxy.delay_s = (2, 5)     # every request waits a random 2-5 s (a slow RPC)

Faults (per JSON-RPC method, "*" for all; a batch containing the method gets the fault):
  timeout_after_forward  forward to the node, then never answer (the client times out)
  swallow                answer a plausible result (the tx hash for a send) without forwarding
  html502                HTTP 502 with an HTML body
  truncated              the node's answer cut in half
  wrong_id               the node's answer with the ids changed
  null_result            the node's answer with every result replaced by null
  malformed_error        {"jsonrpc": "2.0", "id": ..., "error": {"code": "oops"}}
  rpc_error              a JSON-RPC error object (code/message given with `error=`)
  delay                  forward after `delay_s` seconds
  html502_after_forward  forward to the node (it got the request), then answer HTTP 502 with an HTML body
  reset_after_forward    forward to the node (it got the request), then drop the connection unanswered
`times` limits how often a rule fires (None: until removed with clear()).

The proxy records every method it saw (`seen`) and every raw transaction it forwarded
(`forwarded_raw`), so tests can count what really reached the node. It answers on any path,
so `proxy.token_url` (the proxy's URL with RPC_TOKEN as an API-key path) lets a test check that
an RPC token never reaches the keeper's output.

The checks the fault tests end with live here too, shared by every test file:
`JsonLogs` (the keeper's real JSON log output), `assert_trustworthy` (no intent with two
transactions on chain, no account with two intents open at once, no reverted send, no
traceback, no secret) and `assert_clean` (no traceback, no secret, in any text).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from eth_utils import keccak

from keeper import log as logmod
from keeper.devnet.anvil import free_port
from keeper.execution.relay import recover_signer

from .conftest import KEEPER, KEEPER_KEY

RPC_TOKEN = "rpc-token-5ecret9"  # an API key in an RPC URL path (FaultProxy.token_url)


logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # "down" drops connections on purpose


@dataclass
class Rule:
    method: str
    action: str
    times: int | None = None
    error: tuple[int, str] = (-32000, "injected error")
    delay_s: float = 0.0
    fired: int = 0


class FaultProxy:
    def __init__(self, upstream: str, port: int | None = None):
        self.upstream = upstream
        self.port = port or free_port()
        self.rules: list[Rule] = []
        self.down = False
        self.delay_s: tuple[float, float] | None = None
        self.seen: list[str] = []
        self.forwarded_raw: list[str] = []
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None
        self._hang = asyncio.Event()  # never set: hanging requests wait on it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def token_url(self) -> str:
        """The proxy's URL with an API token in its path, as hosted RPC providers hand out."""
        return f"http://127.0.0.1:{self.port}/v2/{RPC_TOKEN}"

    def add(self, method: str, action: str, times: int | None = None, error: tuple[int, str] = (-32000, "injected"),
            delay_s: float = 0.0) -> Rule:
        r = Rule(method, action, times, error, delay_s)
        self.rules.append(r)
        return r

    def clear(self) -> None:
        self.rules.clear()

    def count(self, method: str) -> int:
        return self.seen.count(method)

    def _rule_for(self, methods: list[str]) -> Rule | None:
        for r in self.rules:
            if (r.method == "*" or r.method in methods) and (r.times is None or r.fired < r.times):
                r.fired += 1
                return r
        return None

    async def _forward(self, body: bytes) -> bytes:
        assert self.session is not None
        async with self.session.post(self.upstream, data=body, headers={"content-type": "application/json"}) as r:
            return await r.read()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.down:
            request.transport.close() if request.transport else None
            raise ConnectionResetError("proxy down")
        try:
            payload = json.loads(body)
        except ValueError:
            return web.Response(status=400, text="bad json")
        items = payload if isinstance(payload, list) else [payload]
        methods = [str(i.get("method")) for i in items if isinstance(i, dict)]
        self.seen.extend(methods)
        if self.delay_s is not None:
            await asyncio.sleep(random.uniform(*self.delay_s))
        rule = self._rule_for(methods)
        action = rule.action if rule else None
        if action == "html502":
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if action == "malformed_error":
            return self._json(payload, [{"jsonrpc": "2.0", "id": i.get("id"), "error": {"code": "oops"}} for i in items])
        if action == "rpc_error":
            code, msg = rule.error  # type: ignore[union-attr]
            return self._json(payload, [{"jsonrpc": "2.0", "id": i.get("id"), "error": {"code": code, "message": msg}}
                                        for i in items])
        if action == "swallow":
            out = []
            for i in items:
                res: Any = None
                if i.get("method") == "eth_sendRawTransaction":
                    raw = i["params"][0]
                    res = "0x" + keccak(bytes.fromhex(raw[2:])).hex()
                out.append({"jsonrpc": "2.0", "id": i.get("id"), "result": res})
            return self._json(payload, out)
        if action == "delay":
            await asyncio.sleep(rule.delay_s)  # type: ignore[union-attr]
        self._note_sends(items)
        raw = await self._forward(body)
        if action == "timeout_after_forward":
            await self._hang.wait()
        if action == "html502_after_forward":  # the node has it; the gateway in front says 502
            return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")
        if action == "reset_after_forward":  # the node has it; the connection drops before any answer
            if request.transport is not None:
                request.transport.abort()
            raise ConnectionResetError("proxy reset after forwarding")
        if action == "truncated":
            return web.Response(body=raw[: max(1, len(raw) // 2)], content_type="application/json")
        if action in ("wrong_id", "null_result"):
            reply = json.loads(raw)
            replies = reply if isinstance(reply, list) else [reply]
            for r in replies:
                if action == "wrong_id":
                    r["id"] = (r.get("id") or 0) + 1_000_000
                else:
                    r.pop("error", None)
                    r["result"] = None
            return web.Response(body=json.dumps(reply), content_type="application/json")
        return web.Response(body=raw, content_type="application/json")

    def _note_sends(self, items: list[Any]) -> None:
        for i in items:
            if isinstance(i, dict) and i.get("method") == "eth_sendRawTransaction":
                self.forwarded_raw.append(i["params"][0])

    @staticmethod
    def _json(payload: Any, replies: list[Any]) -> web.Response:
        return web.Response(body=json.dumps(replies if isinstance(payload, list) else replies[0]),
                            content_type="application/json")

    async def start(self) -> "FaultProxy":
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        return self

    async def stop(self) -> None:
        self._hang.set()  # requests left hanging end now, so the server can shut down
        if self.session is not None:
            await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def __aenter__(self) -> "FaultProxy":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


@asynccontextmanager
async def served(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                 port: int | None = None) -> AsyncIterator[str]:
    """A one-handler HTTP server on loopback for the duration of the block; yields its URL."""
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()


class LocalRelay:
    """A Flashbots-style relay double on a fixed local port. Modes: ok (checks
    X-Flashbots-Signature against the one auth address it trusts and forwards each bundle
    transaction to the devnet), hanging (never answers while the test runs), error (a JSON-RPC
    error that echoes the request URL), garbage (HTTP 500, HTML). Not started = down."""

    def __init__(self, upstream: str, trusted: str, mode: str = "ok", path: str = "/"):
        self.upstream, self.trusted, self.mode, self.path = upstream, trusted.lower(), mode, path
        self.port = free_port()
        self.requests = 0
        self.answered = 0
        self.rejected = 0
        self.accepted: list[dict] = []
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def redacted(self) -> str:
        return f"http://127.0.0.1:{self.port}" + ("/***" if self.path not in ("", "/") else "")

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.text()
        if self.mode == "hanging":
            await self.release.wait()  # only set when the test is over
            return web.Response(status=504)
        self.answered += 1
        if self.mode == "error":
            return web.json_response({"jsonrpc": "2.0", "id": 1,
                                      "error": {"code": -32000, "message": f"bundle refused at {request.url}"}})
        if self.mode == "garbage":
            return web.Response(status=500, text="<html><body>Internal Server Error</body></html>",
                                content_type="text/html")
        signer = recover_signer(request.headers.get("X-Flashbots-Signature", ""), body)
        if signer is None or signer.lower() != self.trusted:
            self.rejected += 1
            return web.json_response({"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "bad signature"}},
                                     status=403)
        req = json.loads(body)
        bundle = req["params"][0]
        self.accepted.append(bundle)
        async with aiohttp.ClientSession() as s:
            for raw in bundle["txs"]:
                payload = {"jsonrpc": "2.0", "id": 1, "method": "eth_sendRawTransaction", "params": [raw]}
                async with s.post(self.upstream, json=payload) as r:
                    await r.read()
        return web.json_response({"jsonrpc": "2.0", "id": req["id"], "result": {"bundleHash": "0x" + "00" * 32}})

    async def start(self) -> "LocalRelay":
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


# -- the checks every fault scenario ends with -------------------------------------------------
class JsonLogs:
    """The keeper's real log output (JSON lines), as an operator would read it."""

    def __init__(self) -> None:
        self.buf = io.StringIO()
        logmod.setup("debug", json_lines=True, stream=self.buf)

    @property
    def text(self) -> str:
        return self.buf.getvalue()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        out = [json.loads(x) for x in self.text.splitlines() if x.startswith("{")]
        return [e for e in out if name is None or e["event"] == name]


def journal_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def assert_clean(text: str, *secrets: str, traceback_ok: bool = False) -> None:
    """No traceback (unless traceback_ok) and no secret in `text`: the signing key (whole, or
    its first 32 hex digits), the RPC token of FaultProxy.token_url, and any `secrets` given
    (a relay auth key, a relay URL token)."""
    low = text.lower()
    if not traceback_ok:
        assert "Traceback" not in text, text[text.find("Traceback") - 300:text.find("Traceback") + 1500]
    assert KEEPER_KEY[2:] not in low and KEEPER_KEY[2:34] not in low, "the signing key is in the output"
    assert RPC_TOKEN.lower() not in low, "the RPC token is in the output"
    for s in secrets:
        s = s.lower().removeprefix("0x")
        assert s not in low and s[:32] not in low, "a secret is in the output"


def assert_clean_events(events: list[dict[str, Any]], *secrets: str) -> None:
    """assert_clean for structlog.testing.capture_logs output (the event dicts before
    rendering): also no event carrying exception info, which would render as a traceback."""
    assert not [e for e in events if e.get("exc_info") or e.get("exception")], \
        [e for e in events if e.get("exc_info") or e.get("exception")]
    assert_clean(json.dumps(events, default=str), *secrets)


def intents_by_key(path: Path) -> dict[str, list[str]]:
    """The journal's intents per key: key -> intent ids, in order."""
    out: dict[str, list[str]] = {}
    for r in journal_records(path):
        if r["t"] == "intent":
            out.setdefault(r["key"], []).append(r["id"])
    return out


def assert_trustworthy(chain, keeper, logs: JsonLogs, *, allow_reverted: bool = False,
                       secrets: tuple[str, ...] = (), traceback_ok: bool = False) -> dict[str, Any]:
    """The invariants every fault test ends with: no account with two intents open at once, at
    most one transaction on chain per intent (counted from the journal's signed hashes and the
    node's receipts), every mined keeper transaction belongs to an intent, no reverted send
    (unless allow_reverted; a 21,000-gas cancel is fine), no traceback, no secret. Returns a
    summary for extra checks: {"mined": intent id -> receipt or None, "records": journal}."""
    summary = assert_one_transaction_per_intent(chain, Path(keeper.executor.tx.journal.path),
                                                allow_reverted=allow_reverted)
    assert_clean(logs.text, *secrets, traceback_ok=traceback_ok)
    return summary


def assert_one_transaction_per_intent(chain, journal: Path, *, allow_reverted: bool = False) -> dict[str, Any]:
    """From a keeper's journal and the node's receipts: no account with two intents open at
    once, at most one transaction on chain per intent, every mined one an intent's own, none
    reverted (unless allow_reverted; a cancel is fine)."""
    recs = journal_records(journal)
    hashes: dict[str, list[str]] = {}
    key_of: dict[str, str] = {}
    open_keys: set[str] = set()
    for r in recs:
        if r["t"] == "intent":
            assert r["key"] not in open_keys, f"two intents open at once for {r['key']}"
            open_keys.add(r["key"])
            key_of[r["id"]] = r["key"]
            hashes[r["id"]] = []
        elif r["t"] == "signed":
            hashes[r["id"]].append(r["hash"])
        elif r["t"] in ("final", "dropped"):
            open_keys.discard(key_of[r["id"]])
        elif r["t"] == "unmined":
            open_keys.add(key_of[r["id"]])
    mined_per_intent = {}
    for iid, hs in hashes.items():
        rcs = [chain.call("eth_getTransactionReceipt", [h]) for h in hs]
        mined = [rc for rc in rcs if rc]
        assert len(mined) <= 1, f"intent {key_of[iid]} has {len(mined)} transactions on chain"
        mined_per_intent[iid] = mined[0] if mined else None
    # every keeper transaction on chain belongs to exactly one intent
    ours = {h for hs in hashes.values() for h in hs}
    for rc in mined_per_intent.values():
        if rc is None:
            continue
        assert rc["transactionHash"] in ours
        tx = chain.call("eth_getTransactionByHash", [rc["transactionHash"]])
        is_cancel = tx["input"] == "0x" and tx["to"].lower() == KEEPER.lower()
        if not allow_reverted:
            assert rc["status"] == "0x1" or is_cancel, f"reverted send {rc['transactionHash']}"
    return {"mined": mined_per_intent, "records": recs}
