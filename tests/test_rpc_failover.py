"""RPC failover: several endpoints, each request on the healthiest, a failing endpoint taken
out and probed back in, lagging heads, chain-id checks at start-up, broadcasts to every
endpoint, and garbage answers that are always BadResponseError (never a traceback)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import pytest
import structlog
from aiohttp import web
from eth_account import Account
from eth_utils import keccak
from structlog.testing import capture_logs

from keeper.cli import main
from keeper.errors import BadResponseError, ConfigError, RpcError, TransientError
from keeper.rpc import Rpc

from .conftest import DEVNET_CONFIG, KEEPER, KEEPER_KEY, only_env
from .faultproxy import FaultProxy, free_port, served

pytestmark = pytest.mark.asyncio(loop_scope="session")

FAST = dict(timeout_s=2.0, probe_interval_s=0.1)


def dead_url(path: str = "/") -> str:
    return f"http://127.0.0.1:{free_port()}{path}"


class StubNode:
    """A tiny JSON-RPC endpoint: eth_chainId and eth_blockNumber from attributes, anything else
    'method not found'; `reply` (payload -> JSON value) or `raw` (bytes) override the answer."""

    def __init__(self, chain_id: int = 31337, head: int = 0):
        self.chain_id = chain_id
        self.head = head
        self.reply: Callable[[Any], Any] | None = None
        self.raw: bytes | None = None
        self.status = 200
        self.seen: list[str] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    def url_with(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def url(self) -> str:
        return self.url_with("/")

    def answer(self, item: dict[str, Any]) -> dict[str, Any]:
        m = item.get("method")
        if m == "eth_chainId":
            return {"jsonrpc": "2.0", "id": item.get("id"), "result": hex(self.chain_id)}
        if m == "eth_blockNumber":
            return {"jsonrpc": "2.0", "id": item.get("id"), "result": hex(self.head)}
        return {"jsonrpc": "2.0", "id": item.get("id"), "error": {"code": -32601, "message": "method not found"}}

    async def handle(self, request: web.Request) -> web.Response:
        payload = json.loads(await request.read())
        items = payload if isinstance(payload, list) else [payload]
        self.seen.extend(str(i.get("method")) for i in items)
        if self.raw is not None:
            return web.Response(status=self.status, body=self.raw, content_type="application/json")
        if self.reply is not None:
            return web.Response(status=self.status, body=json.dumps(self.reply(payload)), content_type="application/json")
        out = [self.answer(i) for i in items]
        return web.Response(body=json.dumps(out if isinstance(payload, list) else out[0]), content_type="application/json")

    async def __aenter__(self) -> "StubNode":
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def until(cond: Callable[[], Any], what: str, tries: int = 200, every_s: float = 0.02) -> None:
    for _ in range(tries):
        if cond():
            return
        await asyncio.sleep(every_s)
    raise AssertionError(f"never happened: {what}")


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


def signed_transfer(chain) -> str:
    base = int(chain.call("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
    tx = {"type": 2, "chainId": 31337, "nonce": chain.nonce(KEEPER), "to": KEEPER, "value": 1, "gas": 21_000,
          "maxFeePerGas": 2 * base + 10**9, "maxPriorityFeePerGas": 10**9, "data": b""}
    return "0x" + Account.sign_transaction(tx, KEEPER_KEY).raw_transaction.hex()


# -- one endpoint: as before --------------------------------------------------------------------
async def test_one_endpoint_costs_one_request_per_call_and_no_head_checks(chain):
    async with FaultProxy(chain.url) as proxy:
        rpc = Rpc(proxy.url)
        with capture_logs() as logs:
            assert await rpc.connect() == 31337
            await rpc.block_number()
            await rpc.batch([("eth_blockNumber", []), ("eth_chainId", [])])
            assert await rpc.check_heads() is None
        await rpc.close()
    assert proxy.seen == ["eth_chainId", "eth_blockNumber", "eth_blockNumber", "eth_chainId"]
    assert logs == []
    assert rpc.endpoints_status() == [{"url": proxy.url.rstrip("/"), "healthy": True, "reason": None,
                                       "last_error": None, "requests": 3, "failures": 0}]


# -- failover ----------------------------------------------------------------------------------
async def test_requests_move_to_the_second_endpoint_when_the_first_is_down_and_come_back(chain):
    async with FaultProxy(chain.url) as a, FaultProxy(chain.url) as b:
        rpc = Rpc([a.url, b.url], **FAST, log=structlog.get_logger())
        with capture_logs() as logs:
            head = await rpc.block_number()
            assert (a.count("eth_blockNumber"), b.count("eth_blockNumber")) == (1, 0), "the first endpoint first"

            a.down = True
            for _ in range(5):
                assert await rpc.block_number() == head
            assert b.count("eth_blockNumber") == 5
            st = rpc.endpoints_status()
            assert st[0]["healthy"] is False and "cannot reach RPC" in st[0]["reason"] and st[0]["failures"] >= 1
            assert st[1]["healthy"] is True
            assert len(events(logs, "rpc_endpoint_down")) == 1, "logged once, not per request"

            a.down = False

            async def traffic_brings_it_back() -> bool:
                await rpc.block_number()  # requests trigger the probe when it is due
                return rpc.endpoints_status()[0]["healthy"]

            for _ in range(200):
                if await traffic_brings_it_back():
                    break
                await asyncio.sleep(0.02)
            assert rpc.endpoints_status()[0]["healthy"]
            before = a.count("eth_blockNumber")
            await rpc.block_number()
            assert a.count("eth_blockNumber") == before + 1, "the first endpoint is used again"
        await rpc.close()
    down, up = events(logs, "rpc_endpoint_down"), events(logs, "rpc_endpoint_up")
    assert down[0]["url"] == a.url.rstrip("/") and len(up) == 1 and up[0]["url"] == a.url.rstrip("/")


async def test_a_hanging_endpoint_times_out_and_the_request_is_answered_by_the_next(chain):
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response(text="late")

    async with served(hang) as hanging, FaultProxy(chain.url) as b:
        rpc = Rpc([hanging, b.url], timeout_s=0.3, probe_interval_s=60)
        try:
            assert await rpc.block_number() == chain.block_number()
            st = rpc.endpoints_status()
            assert not st[0]["healthy"] and "timed out" in st[0]["reason"]
            await rpc.block_number()
            assert rpc.endpoints_status()[0]["requests"] == 1, "not asked again before its probe is due"
            assert b.count("eth_blockNumber") == 2
        finally:
            release.set()
            await rpc.close()


async def test_a_node_error_is_not_an_endpoint_failure(chain):
    async with FaultProxy(chain.url) as a, FaultProxy(chain.url) as b:
        a.add("eth_call", "rpc_error", error=(3, "execution reverted"))
        rpc = Rpc([a.url, b.url], **FAST)
        with pytest.raises(RpcError, match="execution reverted"):
            await rpc.call("eth_call", [{"to": KEEPER, "data": "0x"}, "latest"])
        await rpc.close()
    assert rpc.endpoints_status()[0]["healthy"] and b.seen == [], "no failover, no retry"


async def test_with_every_endpoint_down_each_is_tried_and_the_first_to_recover_answers(chain):
    async with FaultProxy(chain.url) as a, FaultProxy(chain.url) as b:
        rpc = Rpc([a.url, b.url], timeout_s=2.0, probe_interval_s=60)
        a.down = b.down = True
        with pytest.raises(TransientError, match="2 RPC endpoints failed") as ei:
            await rpc.block_number()
        assert not isinstance(ei.value, BadResponseError)
        assert not any(s["healthy"] for s in rpc.endpoints_status())
        b.down = False  # long before any probe: the request itself tries the endpoints that are out
        assert await rpc.block_number() == chain.block_number()
        assert [s["healthy"] for s in rpc.endpoints_status()] == [False, True]
        await rpc.close()


# -- head lag ------------------------------------------------------------------------------------
async def test_an_endpoint_whose_head_lags_is_taken_out(chain):
    head = chain.block_number()
    assert head > 10
    async with StubNode(head=head - 10) as stale:
        rpc = Rpc([stale.url, chain.url], timeout_s=2.0, max_head_lag_blocks=3, probe_interval_s=0.1,
                  log=structlog.get_logger())
        with capture_logs() as logs:
            assert await rpc.connect() == 31337  # same chain: it is fine at start-up
            assert await rpc.check_heads() == head
            st = rpc.endpoints_status()
            assert st[0]["healthy"] is False and st[0]["reason"] == "lagging 10 blocks"
            assert st[0]["failures"] == 0 and st[1]["healthy"]
            seen = len(stale.seen)
            assert await rpc.block_number() == head, "the request went to the endpoint that is not behind"

            await asyncio.sleep(0.15)  # a probe is due, but the stub is still behind: it stays out
            await rpc.block_number()
            await until(lambda: len(stale.seen) > seen, "the lagging endpoint is probed")
            await until(lambda: rpc.endpoints_status()[0]["reason"] == "lagging 10 blocks"
                        and all(ep.probe is None for ep in rpc._eps), "probe done")
            assert not rpc.endpoints_status()[0]["healthy"]

            stale.head = head  # caught up: the next probe brings it back
            for _ in range(200):
                await rpc.block_number()
                if rpc.endpoints_status()[0]["healthy"]:
                    break
                await asyncio.sleep(0.02)
            assert rpc.endpoints_status()[0]["healthy"]
            assert await rpc.check_heads() == head
            assert rpc.endpoints_status()[0]["healthy"]
        await rpc.close()
    down = events(logs, "rpc_endpoint_down")
    assert len(down) == 1 and down[0]["reason"] == "lagging 10 blocks"
    assert len(events(logs, "rpc_endpoint_up")) == 1


# -- start-up ----------------------------------------------------------------------------------
async def test_endpoints_on_different_chains_are_a_config_error(chain):
    async with StubNode(chain_id=1, head=5) as mainnet:
        rpc = Rpc([chain.url, mainnet.url_with("/v3/0123456789abcdefSECRET")], **FAST)
        with pytest.raises(ConfigError) as ei:
            await rpc.connect()
        await rpc.close()
    port = chain.url.split(":")[-1].rstrip("/")
    assert str(ei.value) == (f"chain.rpc_urls: http://127.0.0.1:{port} is on chain 31337 but "
                             f"http://127.0.0.1:{mainnet.port}/*** is on chain 1")


async def test_connect_takes_out_endpoints_that_do_not_answer_but_needs_one(chain):
    secret = dead_url("/v2/0123456789abcdefSECRET")
    rpc = Rpc([secret, chain.url], **FAST, log=structlog.get_logger())
    with capture_logs() as logs:
        assert await rpc.connect() == 31337
        assert await rpc.block_number() == chain.block_number()
    await rpc.close()
    st = rpc.endpoints_status()
    assert [s["healthy"] for s in st] == [False, True] and st[0]["url"].endswith("/***")
    down = events(logs, "rpc_endpoint_down")
    assert len(down) == 1 and "SECRET" not in json.dumps(down) and "SECRET" not in json.dumps(st)

    rpc = Rpc([dead_url("/key/abcdefSECRET"), dead_url()], **FAST)
    with pytest.raises(TransientError) as ei:
        await rpc.connect()
    await rpc.close()
    assert "cannot reach RPC" in str(ei.value) and "SECRET" not in str(ei.value)


# -- broadcasts ----------------------------------------------------------------------------------
async def test_a_send_goes_to_every_healthy_endpoint(chain):
    raw = signed_transfer(chain)
    tx_hash = "0x" + keccak(hexstr=raw).hex()
    async with FaultProxy(chain.url) as a, FaultProxy(chain.url) as b, FaultProxy(chain.url) as c:
        rpc = Rpc([a.url, b.url, c.url], **FAST)
        c.down = True
        await rpc.check_heads()  # c is taken out: a send skips it
        assert [s["healthy"] for s in rpc.endpoints_status()] == [True, True, False]
        assert await rpc.send_raw_transaction(raw) == tx_hash
        await until(lambda: a.forwarded_raw == [raw] and b.forwarded_raw == [raw], "both healthy endpoints got it")
        await until(lambda: not rpc._bg, "the other send finished")
        assert c.count("eth_sendRawTransaction") == 0
        await rpc.close()
    await until(lambda: chain.call("eth_getTransactionReceipt", [tx_hash]), "mined")
    assert chain.call("eth_getTransactionReceipt", [tx_hash])["status"] == "0x1"


async def test_a_send_that_every_endpoint_refuses_raises_the_first_error_and_unreachable_is_transient(chain):
    raw = signed_transfer(chain)
    async with FaultProxy(chain.url) as a, FaultProxy(chain.url) as b:
        a.add("eth_sendRawTransaction", "rpc_error", error=(-32000, "nonce too low"))
        b.add("eth_sendRawTransaction", "rpc_error", error=(-32000, "insufficient funds"))
        rpc = Rpc([a.url, b.url], **FAST)
        with pytest.raises(RpcError, match="nonce too low"):
            await rpc.send_raw_transaction(raw)
        assert all(s["healthy"] for s in rpc.endpoints_status())

        a.clear()
        b.clear()
        a.add("eth_sendRawTransaction", "rpc_error", error=(-32000, "already known"))
        b.down = True
        assert await rpc.send_raw_transaction(raw) == "0x" + keccak(hexstr=raw).hex(), "already known = accepted"

        a.clear()
        a.down = True
        with pytest.raises(TransientError, match="cannot reach RPC"):
            await rpc.send_raw_transaction(raw)
        await rpc.close()
    assert a.forwarded_raw == [] and b.forwarded_raw == [], "nothing reached the node"


# -- garbage: always BadResponseError ------------------------------------------------------------
@pytest.mark.parametrize("action", ["html502", "truncated", "wrong_id", "null_result", "malformed_error"])
async def test_garbage_from_a_proxy_is_a_bad_response(chain, action):
    async with FaultProxy(chain.url) as proxy:
        rpc = Rpc(proxy.url, timeout_s=2.0)
        for method in ("eth_blockNumber", "eth_getBlockByNumber", "eth_chainId"):
            proxy.add(method, action)
        with pytest.raises(BadResponseError):
            await rpc.block_number()
        with pytest.raises(BadResponseError):
            await rpc.get_block("latest")
        with pytest.raises(BadResponseError):
            await rpc.connect()
        if action == "null_result":  # null is a valid JSON-RPC result: the typed helpers above refuse it
            assert await rpc.batch([("eth_blockNumber", []), ("eth_chainId", [])]) == [None, None]
        else:
            with pytest.raises(BadResponseError):
                await rpc.batch([("eth_blockNumber", []), ("eth_chainId", [])], return_errors=True)
            st = rpc.endpoints_status()[0]
            assert not st["healthy"] and st["failures"] == 4 and st["last_error"]
        proxy.clear()
        assert await rpc.block_number() == chain.block_number()
        assert rpc.endpoints_status()[0]["healthy"], "back after one good answer"
        await rpc.close()


GARBAGE: dict[str, tuple[Any, Any]] = {
    # name: (raw bytes or a reply function, what it is)
    "non_utf8": (b"\xff\xfe\xfa{\"jsonrpc\"", None),
    "empty_body": (b"", None),
    "deep_nesting": (b"[" * 100_000, None),
    "huge_int": (b'{"jsonrpc":"2.0","id":1,"result":' + b"9" * 5000 + b"}", None),
    "list_for_single": (None, lambda p: [{"jsonrpc": "2.0", "id": 1, "result": "0x1"}]),
    "no_jsonrpc": (None, lambda p: {"id": p["id"], "result": "0x1"}),
    "error_not_a_dict": (None, lambda p: {"jsonrpc": "2.0", "id": p["id"], "error": "boom"}),
    "error_code_float": (None, lambda p: {"jsonrpc": "2.0", "id": p["id"], "error": {"code": -32000.5, "message": "x"}}),
    "error_code_bool": (None, lambda p: {"jsonrpc": "2.0", "id": p["id"], "error": {"code": True, "message": "x"}}),
    "error_message_not_str": (None, lambda p: {"jsonrpc": "2.0", "id": p["id"], "error": {"code": 3, "message": [1]}}),
    "error_without_message": (None, lambda p: {"jsonrpc": "2.0", "id": p["id"], "error": {"code": 3}}),
    "neither_result_nor_error": (None, lambda p: {"jsonrpc": "2.0", "id": p["id"]}),
    "result_not_hex": (None, lambda p: {"jsonrpc": "2.0", "id": p["id"], "result": {"a": 1}}),
    "string_id": (None, lambda p: {"jsonrpc": "2.0", "id": str(p["id"]), "result": "0x1"}),
}


@pytest.mark.parametrize("name", sorted(GARBAGE))
async def test_garbage_from_a_node_is_a_bad_response_for_a_call(name):
    raw, reply = GARBAGE[name]
    async with StubNode() as node:
        node.raw, node.reply = raw, reply
        rpc = Rpc(node.url, timeout_s=2.0)
        with pytest.raises(BadResponseError):
            await rpc.block_number()
        with pytest.raises(BadResponseError):
            await rpc.connect()
        await rpc.close()


BATCH_GARBAGE: dict[str, Callable[[Any], Any]] = {
    "one_error_object": lambda p: {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "batch too large"}},
    "one_result_object": lambda p: {"jsonrpc": "2.0", "id": p[0]["id"], "result": "0x1"},
    "one_malformed_error": lambda p: {"jsonrpc": "2.0", "id": None, "error": {"code": "oops"}},
    "too_few": lambda p: [{"jsonrpc": "2.0", "id": p[0]["id"], "result": "0x1"}],
    "duplicate_ids": lambda p: [{"jsonrpc": "2.0", "id": p[0]["id"], "result": "0x1"}] * len(p),
    "item_not_a_dict": lambda p: ["0x1"] * len(p),
    "item_without_id": lambda p: [{"jsonrpc": "2.0", "result": "0x1"} for _ in p],
    "item_malformed_error": lambda p: [{"jsonrpc": "2.0", "id": i["id"], "error": {"code": None, "message": "m"}}
                                       for i in p],
    "null": lambda p: None,
}


@pytest.mark.parametrize("name", sorted(BATCH_GARBAGE))
async def test_garbage_from_a_node_is_a_bad_response_for_a_batch(name):
    async with StubNode() as node:
        node.reply = BATCH_GARBAGE[name]
        rpc = Rpc(node.url, timeout_s=2.0)
        for return_errors in (False, True):
            with pytest.raises(BadResponseError):
                await rpc.batch([("eth_blockNumber", []), ("eth_chainId", [])], return_errors=return_errors)
        await rpc.close()


async def test_a_batch_answered_by_one_error_object_is_the_nodes_answer_not_an_endpoint_failure(chain):
    async with StubNode() as node, FaultProxy(chain.url) as b:
        node.reply = BATCH_GARBAGE["one_error_object"]
        rpc = Rpc([node.url, b.url], **FAST)
        with pytest.raises(BadResponseError, match="one error for the whole batch: batch too large"):
            await rpc.batch([("eth_blockNumber", []), ("eth_chainId", [])])
        assert rpc.endpoints_status()[0]["healthy"] and b.seen == []
        node.reply = BATCH_GARBAGE["one_result_object"]  # garbage: the endpoint's fault, answered by the next
        assert await rpc.batch([("eth_chainId", [])]) == ["0x7a69"]
        assert not rpc.endpoints_status()[0]["healthy"]
        await rpc.close()


@pytest.mark.parametrize("data, expected", [
    ("0x08c379a0", "0x08c379a0"),
    ({"data": "0xdead"}, "0xdead"),
    ({"data": {"data": "0xbeef"}}, "0xbeef"),
    ({"message": "m", "originalError": {"data": "0xcafe"}}, "0xcafe"),
    ("Reverted 0xabcd", "0xabcd"),
    ([1, 2], None),
    (12, None),
    ({"data": {"data": {"data": {"data": {"data": "0x1"}}}}}, None),
    ({"weird": True}, None),
])
async def test_revert_data_nested_oddly_is_read_or_dropped_never_an_exception(data, expected):
    async with StubNode() as node:
        node.reply = lambda p: {"jsonrpc": "2.0", "id": p["id"], "error": {"code": 3, "message": "execution reverted",
                                                                           "data": data}}
        rpc = Rpc(node.url, timeout_s=2.0)
        with pytest.raises(RpcError) as ei:
            await rpc.call("eth_call", [{"to": KEEPER, "data": "0x"}, "latest"])
        await rpc.close()
    assert ei.value.code == 3 and ei.value.data == expected


# -- the keeper, as a user runs it ------------------------------------------------------------------
async def test_a_malformed_error_at_start_is_one_error_line_without_traceback(chain, capsys, monkeypatch):
    async with FaultProxy(chain.url) as proxy:
        proxy.add("eth_chainId", "malformed_error")
        monkeypatch.setenv("KEEPER_RPC_URL", proxy.url)
        code = await asyncio.to_thread(main, ["run", "--config", str(DEVNET_CONFIG), "--dry-run", "--once"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: chain.rpc_url: eth_chainId: malformed error object") and err.count("\n") == 1
    assert "after 3 attempts" in err
    assert "Traceback" not in out + err


async def test_a_keeper_with_two_endpoints_runs_when_the_first_is_down(chain, capsys, monkeypatch):
    async with FaultProxy(chain.url) as a, FaultProxy(chain.url) as b:
        a.down = True
        # devnet.toml names chain.rpc_url, which always comes first in the list: point it at `a` too
        monkeypatch.delenv("KEEPER_RPC_URL", raising=False)
        monkeypatch.setenv("KEEPER_CHAIN__RPC_URL", a.url)
        monkeypatch.setenv("KEEPER_CHAIN__RPC_URLS", json.dumps([a.url, b.url]))
        for k, v in only_env("aave-v3-devnet").items():
            monkeypatch.setenv(k, v)
        code = await asyncio.to_thread(main, ["run", "--config", str(DEVNET_CONFIG), "--dry-run", "--once"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    names = [e["event"] for e in lines]
    assert "keeper_started" in names
    down = [e for e in lines if e["event"] == "rpc_endpoint_down"]
    assert len(down) == 1 and down[0]["url"] == a.url.rstrip("/")
    assert b.count("eth_chainId") >= 1 and b.count("eth_call") + b.count("eth_getBlockByNumber") > 0
    assert "Traceback" not in out + err
