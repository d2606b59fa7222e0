"""New heads pushed over a websocket (keeper/heads.py) against the devnet's anvil, which serves
websockets on its HTTP port; drops, stalls and garbage through a websocket-forwarding proxy."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from keeper.heads import HeadWatcher

from .faultproxy import free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")
logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


def ws_of(http_url: str) -> str:
    return "ws://" + http_url.split("://", 1)[1].rstrip("/")


async def mine(chain: Any, n: int = 1) -> None:
    for _ in range(n):
        await asyncio.to_thread(chain.call, "evm_mine")


async def until(pred: Any, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


class WsProxy:
    """Forwards websocket frames between the watcher and anvil (any path). `stop()` drops every
    connection and stops listening; `start()` again on the same port brings it back. `mute`:
    notifications from the node are dropped (a provider that stalls silently); `inject()`
    sends frames of the test's choice to every connected client."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.port = free_port()
        self.mute = False
        self.sub_id: str | None = None  # the node's answer to the client's eth_subscribe
        self.clients: set[web.WebSocketResponse] = set()
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.clients.add(ws)
        sub_rids: set[Any] = set()
        assert self.session is not None
        try:
            async with self.session.ws_connect(self.upstream) as up:
                async def client_to_node() -> None:
                    async for m in ws:
                        if m.type == aiohttp.WSMsgType.TEXT:
                            req = json.loads(m.data)
                            if req.get("method") == "eth_subscribe":
                                sub_rids.add(req.get("id"))
                            await up.send_str(m.data)

                async def node_to_client() -> None:
                    async for m in up:
                        if m.type != aiohttp.WSMsgType.TEXT:
                            continue
                        obj = json.loads(m.data)
                        if obj.get("id") in sub_rids and isinstance(obj.get("result"), str):
                            self.sub_id = obj["result"]
                        if self.mute and obj.get("method") == "eth_subscription":
                            continue
                        await ws.send_str(m.data)

                tasks = [asyncio.ensure_future(client_to_node()), asyncio.ensure_future(node_to_client())]
                try:
                    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.clients.discard(ws)
            await ws.close()
        return ws

    async def inject(self, frame: str | bytes) -> None:
        for ws in list(self.clients):
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)

    async def start(self) -> "WsProxy":
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        for ws in list(self.clients):
            await ws.close(code=1001, message=b"going away")
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.session is not None:
            await self.session.close()
            self.session = None


async def test_heads_are_pushed_over_the_websocket(chain):
    w = HeadWatcher(ws_of(chain.url), 30.0, structlog.get_logger())
    try:
        with capture_logs() as logs:
            await w.start()
        assert w.mode == "websocket"
        assert events(logs, "head_source_up") and not events(logs, "head_source_down")
        await w.wait(0.05)  # nothing should be pending, but start from a clean slate
        t0 = time.monotonic()
        await mine(chain)
        assert await w.wait(5.0) is True
        assert time.monotonic() - t0 < 2.0  # pushed: far below the 30 s poll interval
        assert w.last_number == chain.block_number()
        # nothing new: times out (websocket mode honours the caller's timeout)
        t0 = time.monotonic()
        assert await w.wait(0.3) is False
        assert 0.25 <= time.monotonic() - t0 < 2.0
        # heads announced while nobody waits are pending: the next wait returns at once, once
        await mine(chain, 3)
        await until(lambda: w.last_number == chain.block_number())
        t0 = time.monotonic()
        assert await w.wait(5.0) is True
        assert time.monotonic() - t0 < 0.1
        assert await w.wait(0.2) is False
        assert w.mode == "websocket"
    finally:
        await w.close()
    assert w.mode == "polling"
    assert w._task is None


async def test_socket_drop_falls_back_to_polling_and_comes_back(chain):
    proxy = await WsProxy(ws_of(chain.url)).start()
    secret = "v3/0123456789abcdef0123456789abcdef"
    w = HeadWatcher(proxy.url("/" + secret), 0.5, structlog.get_logger(), reconnect_max_s=0.5)
    try:
        with capture_logs() as logs:
            await w.start()
            assert w.mode == "websocket"
            await mine(chain)
            assert await w.wait(5.0) is True

            await proxy.stop()  # the socket drops
            await until(lambda: w.mode == "polling")
            down = events(logs, "head_source_down")
            assert len(down) == 1 and down[0]["log_level"] == "warning"
            assert down[0]["url"] == f"ws://127.0.0.1:{proxy.port}/***"
            t0 = time.monotonic()
            assert await w.wait(30.0) is False  # polling: times out after the poll interval
            assert 0.4 <= time.monotonic() - t0 < 2.0
            await asyncio.sleep(1.5)  # several reconnects fail meanwhile: still one warning
            assert len(events(logs, "head_source_down")) == 1
            assert w.mode == "polling"

            await proxy.start()  # back on the same port
            await until(lambda: w.mode == "websocket")
            up = events(logs, "head_source_up")
            assert len(up) == 2 and up[-1]["down_for_s"] >= 1.0 and up[-1]["attempts"] >= 2
            await w.wait(0.05)
            t0 = time.monotonic()
            await mine(chain)
            assert await w.wait(5.0) is True  # pushed again
            assert time.monotonic() - t0 < 2.0
            assert w.last_number == chain.block_number()
        assert secret not in repr(logs) and "0123456789abcdef" not in repr(logs)
        assert not [e for e in logs if e["log_level"] == "error" or "exc_info" in e]
    finally:
        await w.close()
        await proxy.stop()


async def test_wait_during_a_drop_ends_after_the_poll_interval(chain):
    """A long wait() in websocket mode is cut to the poll interval when the socket drops meanwhile."""
    proxy = await WsProxy(ws_of(chain.url)).start()
    w = HeadWatcher(proxy.url(), 0.5, structlog.get_logger(), reconnect_max_s=0.5)
    try:
        await w.start()
        assert w.mode == "websocket"
        await w.wait(0.05)
        waiter = asyncio.ensure_future(w.wait(60.0))
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await proxy.stop()
        assert await asyncio.wait_for(waiter, 5.0) is False
        assert time.monotonic() - t0 < 2.0
    finally:
        await w.close()
        await proxy.stop()


async def test_nothing_listening_polls_from_the_start(chain):
    w = HeadWatcher(f"ws://127.0.0.1:{free_port()}/key/abcdef0123456789abcdef0123", 0.2, structlog.get_logger(),
                    reconnect_max_s=0.2)
    with capture_logs() as logs:
        t0 = time.monotonic()
        await w.start()
        assert time.monotonic() - t0 < 2.0
        assert w.mode == "polling"
        t0 = time.monotonic()
        assert await w.wait(10.0) is False  # the poll interval, not the caller's 10 s
        assert 0.15 <= time.monotonic() - t0 < 1.0
        await asyncio.sleep(1.0)  # retries (debug lines), not new warnings
        await w.close()
    warnings = [e for e in logs if e["log_level"] in ("warning", "error", "critical")]
    assert [e["event"] for e in warnings] == ["head_source_down"]
    assert warnings[0]["url"].endswith("/***") and "abcdef" not in repr(logs)
    assert "Connect" in warnings[0]["error"] or "connect" in warnings[0]["error"].lower()
    assert not [e for e in logs if "exc_info" in e]
    assert len(events(logs, "head_source_retry")) >= 2
    assert w.mode == "polling"


async def test_no_url_or_not_a_websocket_url_polls():
    for url, warned in ((None, False), ("", False), ("http://127.0.0.1:8545/", True)):
        w = HeadWatcher(url, 0.2, structlog.get_logger())
        with capture_logs() as logs:
            await w.start()
            assert w.mode == "polling"
            t0 = time.monotonic()
            assert await w.wait(5.0) is False
            assert 0.15 <= time.monotonic() - t0 < 1.0
            await w.close()
        assert bool(events(logs, "head_source_down")) == warned
    assert HeadWatcher(None, 1.0, None).stall_s == 30.0
    assert HeadWatcher(None, 5.0, None).stall_s == 50.0


async def test_garbage_frames_are_ignored(chain):
    proxy = await WsProxy(ws_of(chain.url)).start()
    w = HeadWatcher(proxy.url(), 30.0, structlog.get_logger(), reconnect_max_s=0.5)
    try:
        with capture_logs() as logs:
            await w.start()
            assert w.mode == "websocket" and proxy.sub_id
            await w.wait(0.05)
            sub = proxy.sub_id
            garbage: list[str | bytes] = [
                "not json", "", "null", "[]", "[" * 100_000, '{"a":' * 50_000, "42", '"0x10"',
                b"\xff\xfe\x00binary", json.dumps([{"method": "eth_subscription"}]),
                json.dumps({"jsonrpc": "2.0", "method": "eth_subscription"}),
                json.dumps({"jsonrpc": "2.0", "method": "eth_subscription", "params": "x"}),
                json.dumps({"jsonrpc": "2.0", "method": "eth_subscription", "params": {"subscription": sub}}),
                json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                            "params": {"subscription": sub, "result": {"number": 12}}}),
                json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                            "params": {"subscription": sub, "result": {"number": "0xzz"}}}),
                json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                            "params": {"subscription": sub, "result": {"number": "0x" + "f" * 100}}}),
                json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",  # someone else's subscription
                            "params": {"subscription": "0xdeadbeef", "result": {"number": "0x99"}}}),
                json.dumps({"jsonrpc": "2.0", "id": 12345, "result": "0x99"}),
                json.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": -1}}),
            ]
            for g in garbage:
                await proxy.inject(g)
            for _ in range(3000):  # a flood: only counted, nothing kept
                await proxy.inject('{"jsonrpc":"2.0","method":"eth_subscription","params":{"junk":1}}')
            await until(lambda: w.ignored >= len(garbage) + 3000 - 5)
            assert await w.wait(0.3) is False
            assert w.mode == "websocket" and w.heads == 0
            # the real thing still gets through
            await mine(chain)
            assert await w.wait(5.0) is True
            assert w.last_number == chain.block_number()
            # a well-formed notification of our subscription is a head, whoever forged it
            await proxy.inject(json.dumps({"jsonrpc": "2.0", "method": "eth_subscription",
                                           "params": {"subscription": sub, "result": {"number": "0x1234"}}}))
            assert await w.wait(5.0) is True and w.last_number == 0x1234
            # a frame over the size limit: aiohttp closes the socket; it is dropped and reconnected
            await proxy.inject("x" * (w.max_msg_size + 1))
            await until(lambda: len(events(logs, "head_source_down")) == 1)
            await until(lambda: w.mode == "websocket" and len(events(logs, "head_source_up")) == 2)
        assert not [e for e in logs if e["log_level"] == "error" or "exc_info" in e]
    finally:
        await w.close()
        await proxy.stop()


async def test_a_silent_socket_on_a_moving_chain_is_a_drop_an_idle_chain_is_not(chain):
    proxy = await WsProxy(ws_of(chain.url)).start()
    w = HeadWatcher(proxy.url(), 0.5, structlog.get_logger(), reconnect_max_s=0.3, stall_s=0.5, probe_timeout_s=1.0)
    try:
        with capture_logs() as logs:
            await w.start()
            assert w.mode == "websocket"
            proxy.mute = True  # the provider stops pushing, the socket stays open
            await asyncio.sleep(1.8)  # several quiet periods on an idle chain: answered probes
            assert w.mode == "websocket" and not events(logs, "head_source_down")
            await mine(chain)  # the chain moves, nothing is pushed
            await until(lambda: w.mode == "polling", timeout_s=6.0)
            down = events(logs, "head_source_down")
            assert len(down) == 1 and "stalled: node at block" in down[0]["error"]
            proxy.mute = False
            await until(lambda: w.mode == "websocket")
            assert len(events(logs, "head_source_up")) == 2
            await w.wait(0.05)
            await mine(chain)
            assert await w.wait(5.0) is True
    finally:
        await w.close()
        await proxy.stop()


async def test_the_daemon_acts_on_a_pushed_head_without_waiting_for_the_poll(chain, make_keeper):
    """chain.ws_url set, poll interval 30 s: a new block starts a cycle at once."""
    import asyncio

    keeper = await make_keeper(dry_run=True, only="aave-v3-devnet", KEEPER_WS_URL=chain.url.replace("http", "ws"),
                               KEEPER_CHAIN__POLL_INTERVAL_S="30")
    assert keeper.heads.mode == "websocket"
    run = asyncio.create_task(keeper.run())
    try:
        for _ in range(100):  # the first cycle runs at once
            if keeper.cycles:
                break
            await asyncio.sleep(0.05)
        before = keeper.cycles
        chain.call("evm_mine")
        for _ in range(100):  # 5 s at most, far below the 30 s poll
            if keeper.cycles > before:
                break
            await asyncio.sleep(0.05)
        assert keeper.cycles > before
    finally:
        keeper.stop()
        await asyncio.wait_for(run, 10)
