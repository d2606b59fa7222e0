"""Requests that fit any node: batches cut by calls and bytes, sent a few at a time, and shrunk
(and remembered) when a node refuses a size."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from keeper.config import load_config
from keeper.devnet.anvil import free_port
from keeper.errors import RpcError
from keeper.multicall import encode_aggregate3
from keeper.rpc import RequestTooLargeError, Rpc

AAVE = "aave-v3-devnet"
N_RANDOM = 6000
ASYNC = pytest.mark.asyncio(loop_scope="session")


def random_accounts(n: int) -> set[str]:
    return {"0x" + os.urandom(20).hex() for _ in range(n)}


class SizeLimitedNode:
    """An HTTP JSON-RPC proxy in front of anvil that refuses requests above a size, the way
    hosted nodes do: HTTP 413 for a body over `max_bytes` ("http413"), anvil's own answer
    {"id": null, "error": -32600 Invalid request} over `max_bytes` ("anvil"), or geth's
    [{-32600 "batch too large"}] for a batch of more than `max_calls` ("geth_batch").
    Counts what it accepted and refused."""

    def __init__(self, upstream: str, mode: str, max_bytes: int = 600_000, max_calls: int = 3):
        self.upstream, self.mode, self.max_bytes, self.max_calls = upstream, mode, max_bytes, max_calls
        self.port = free_port()
        self.accepted: list[tuple[int, int]] = []  # (calls, bytes) of each forwarded request
        self.refused: list[tuple[int, int]] = []
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def reset(self) -> None:
        self.accepted.clear()
        self.refused.clear()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        payload = json.loads(body)
        calls = len(payload) if isinstance(payload, list) else 1
        if self.mode in ("http413", "anvil") and len(body) > self.max_bytes:
            self.refused.append((calls, len(body)))
            if self.mode == "http413":
                return web.Response(status=413, text="<html><body>413 Request Entity Too Large</body></html>",
                                    content_type="text/html")
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid request"}})
        if self.mode == "geth_batch" and isinstance(payload, list) and calls > self.max_calls:
            self.refused.append((calls, len(body)))
            return web.json_response([{"jsonrpc": "2.0", "id": payload[0]["id"],
                                       "error": {"code": -32600, "message": "batch too large"}}])
        self.accepted.append((calls, len(body)))
        assert self.session is not None
        async with self.session.post(self.upstream, data=body, headers={"content-type": "application/json"}) as r:
            return web.Response(body=await r.read(), status=r.status, content_type="application/json")

    async def __aenter__(self) -> "SizeLimitedNode":
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.session is not None and self.runner is not None
        await self.session.close()
        await self.runner.cleanup()


async def _liquidatable_with_many(keeper: Any, extra: set[str]) -> tuple[list[str], int]:
    head = await keeper.read_head()
    adapter = keeper.adapters[AAVE]
    await adapter.sync(head)
    adapter.accounts |= extra
    n = len(adapter.accounts)
    return await adapter.refresh(head), n


def _raw_post(url: str, body: bytes) -> Any:
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return {"http_status": e.code}


@ASYNC
async def test_a_refresh_of_6000_accounts_succeeds_where_one_request_of_that_size_is_refused(chain, make_keeper):
    chain.shock("WETH", -12)
    keeper = await make_keeper(dry_run=True, only=AAVE)
    adapter = keeper.adapters[AAVE]
    expected, n_seeded = await _liquidatable_with_many(keeper, set())
    assert len(expected) >= 3, "the seeded devnet should have liquidatable accounts after a -12% WETH shock"

    extra = random_accounts(N_RANDOM)
    # the premise: the refresh as one request (400-call aggregate3 chunks, all in one JSON-RPC
    # batch, as the keeper used to send it) is more than anvil takes
    head = await keeper.read_head()
    calls = adapter._block_calls(sorted(adapter.accounts | extra))
    chunks = [calls[i:i + 400] for i in range(0, len(calls), 400)]
    body = json.dumps([{"jsonrpc": "2.0", "id": i + 1, "method": "eth_call",
                        "params": [{"to": keeper.mc.address, "data": "0x" + encode_aggregate3(ch).hex()}, hex(head.number)]}
                       for i, ch in enumerate(chunks)]).encode()
    assert len(body) > 2 * 1024 * 1024
    reply = _raw_post(chain.url, body)
    assert isinstance(reply, dict) and reply.get("error", {}).get("code") == -32600, str(reply)[:200]

    # the keeper, with its default limits, cuts it into requests anvil takes
    rpc = keeper.rpc
    assert (rpc.max_batch_calls, rpc.max_request_bytes, rpc.max_concurrent_requests) == (50, 1 << 20, 4)
    sizes: list[float] = []
    rpc.on_request = lambda url, s, failed: sizes.append(s)
    with capture_logs() as logs:
        found, n = await _liquidatable_with_many(keeper, extra)
    assert n >= n_seeded + N_RANDOM - 10
    assert sorted(found) == sorted(expected)
    assert len(sizes) >= 3  # more than one HTTP request
    assert not [e for e in logs if e["event"] == "request_size_reduced"]  # nothing refused: nothing shrunk
    assert (rpc.max_batch_calls, rpc.max_request_bytes) == (50, 1 << 20)
    assert len(adapter.health) == len(adapter.accounts)  # the random ones (no debt) are dropped


@ASYNC
@pytest.mark.parametrize("mode", ["http413", "anvil", "geth_batch"])
async def test_a_node_that_refuses_a_size_makes_the_keeper_shrink_and_remember(chain, make_keeper, mode):
    chain.shock("WETH", -12)
    async with SizeLimitedNode(chain.url, mode) as node:
        keeper = await make_keeper(dry_run=True, only=AAVE, KEEPER_RPC_URL=node.url)
        expected, _ = await _liquidatable_with_many(keeper, set())
        rpc = keeper.rpc
        assert not node.refused
        node.reset()
        with capture_logs() as logs:
            found, _ = await _liquidatable_with_many(keeper, random_accounts(N_RANDOM))
        assert sorted(found) == sorted(expected)
        reduced = [e for e in logs if e["event"] == "request_size_reduced"]
        assert len(reduced) == 1, reduced  # parts refused at the same time: one reduction
        assert node.refused, "the node should have refused the first large requests"
        first_requests, first_refused = len(node.accepted) + len(node.refused), len(node.refused)
        if mode == "geth_batch":
            assert rpc.max_batch_calls <= node.max_calls and reduced[0]["max_batch_calls"] == rpc.max_batch_calls
            assert rpc.max_request_bytes == 1 << 20  # the node said "batch": the byte limit stays
        else:
            assert rpc.max_request_bytes <= node.max_bytes and reduced[0]["max_request_bytes"] == rpc.max_request_bytes
            # "entity too large" (413) or -32600 for a large body: only the bytes go down
            assert rpc.max_batch_calls == 50

        # remembered: the next refreshes go straight to the smaller size
        for _ in range(2):
            node.reset()
            with capture_logs() as logs:
                found, _ = await _liquidatable_with_many(keeper, random_accounts(N_RANDOM))
            assert sorted(found) == sorted(expected)
            assert not node.refused and not [e for e in logs if e["event"] == "request_size_reduced"]
            assert len(node.accepted) < first_requests, (len(node.accepted), first_requests, first_refused)
            assert all(c <= rpc.max_batch_calls and b <= rpc.max_request_bytes for c, b in node.accepted)


@ASYNC
async def test_batches_keep_order_and_ids_across_requests_and_errors_where_they_were(chain):
    """Rpc.batch cut into many requests: answers in request order, return_errors in place,
    without it the first error in request order is raised."""
    async with Rpc(chain.url, max_batch_calls=7, max_request_bytes=4096, max_concurrent_requests=3) as rpc:
        sizes: list[float] = []
        rpc.on_request = lambda url, s, failed: sizes.append(s)
        reqs: list[tuple[str, list[Any]]] = []
        for i in range(100):
            reqs.append(("eth_getBalance", ["0x" + f"{i:040x}", "latest"]) if i % 2 else ("eth_chainId", []))
        reqs[37] = ("no_such_method", [])
        reqs[81] = ("eth_call", [{"to": "0x" + "00" * 20, "data": "0x" + "ab" * 3000}, "latest"])  # alone: > 4096 / 7
        out = await rpc.batch(reqs, return_errors=True)
        assert len(out) == 100 and len(sizes) >= 15
        cid = chain.call("eth_chainId")
        assert all(out[i] == cid for i in range(0, 100, 2)) and all(out[i].startswith("0x") for i in range(1, 37, 2))
        assert isinstance(out[37], RpcError) and out[81] == "0x"
        with pytest.raises(RpcError, match="no_such_method"):
            await rpc.batch(reqs)
        ids_before = next(rpc._ids)
        await rpc.batch(reqs[:20])
        assert next(rpc._ids) == ids_before + 21  # 20 ids for the batch, one for this next()


@ASYNC
async def test_one_request_still_refused_alone_is_a_real_error_and_calls_never_go_below_one(chain):
    async with SizeLimitedNode(chain.url, "geth_batch", max_calls=0) as node:  # refuses any array
        async with Rpc(node.url, max_batch_calls=8) as rpc:
            # the single call's answer is geth's error item itself: that call's RpcError
            with capture_logs() as logs, pytest.raises(RpcError, match="batch too large"):
                await rpc.batch([("eth_chainId", [])] * 8)
            assert rpc.max_batch_calls == 1
            assert [e["max_batch_calls"] for e in logs if e["event"] == "request_size_reduced"] == [4, 2, 1]
            assert node.refused[-1][0] == 1  # it tried the single call before giving up
            assert await rpc.call("eth_chainId") == chain.call("eth_chainId")  # not an array: fine
            assert all(ep["healthy"] for ep in rpc.endpoints_status())  # the node answered: not down
    async with SizeLimitedNode(chain.url, "http413", max_bytes=20_000) as node:
        async with Rpc(node.url) as rpc:
            big = ("eth_call", [{"to": "0x" + "00" * 20, "data": "0x" + "ab" * 15_000}, "latest"])
            with capture_logs() as logs, pytest.raises(RequestTooLargeError):
                await rpc.batch([big])
            assert rpc.max_request_bytes < 20_000  # remembered, for who can cut (Multicall)
            with pytest.raises(RequestTooLargeError):  # still refused: an error, no further halving
                await rpc.batch([big])
            assert len([e for e in logs if e["event"] == "request_size_reduced"]) == 1
            assert [r[0] for r in node.refused] == [1, 1]
            # a small request refused "for its size" is not about size: nothing shrinks
            node.max_bytes = 10
            with pytest.raises(RequestTooLargeError):
                await rpc.batch([("eth_chainId", [])])
            assert rpc.max_request_bytes > 10_000 and rpc.max_batch_calls == 50


# -- configuration ------------------------------------------------------------------
from .test_config import GOOD  # a minimal valid config


def _cfg(tmp_path: Path, extra: str) -> Any:
    p = tmp_path / "k.toml"
    p.write_text(GOOD.replace('rpc_url = "http://127.0.0.1:1"\n', 'rpc_url = "http://127.0.0.1:1"\n' + extra))
    return load_config(p, environ={})


def test_request_limits_default_and_parse(tmp_path):
    c = _cfg(tmp_path, "").chain
    assert (c.max_batch_calls, c.max_request_bytes, c.max_concurrent_requests) == (50, 1_048_576, 4)
    c = _cfg(tmp_path, "max_batch_calls = 1\nmax_request_bytes = 4096\nmax_concurrent_requests = 16\n").chain
    assert (c.max_batch_calls, c.max_request_bytes, c.max_concurrent_requests) == (1, 4096, 16)
    env = {"KEEPER_CHAIN__MAX_REQUEST_BYTES": "200000"}
    p = tmp_path / "e.toml"
    p.write_text(GOOD)
    assert load_config(p, environ=env).chain.max_request_bytes == 200_000


@pytest.mark.parametrize("line, message", [
    ("max_batch_calls = 0", "chain.max_batch_calls: must be ≥ 1"),
    ("max_batch_calls = 10001", "chain.max_batch_calls: must be ≤ 10000"),
    ("max_batch_calls = 2.5", "chain.max_batch_calls: must be an integer, got 2.5"),
    ("max_batch_calls = \"50\"", "chain.max_batch_calls: must be an integer"),
    ("max_request_bytes = 4095", "chain.max_request_bytes: must be ≥ 4096"),
    ("max_request_bytes = 268435457", "chain.max_request_bytes: must be ≤ 268435456"),
    ("max_request_bytes = true", "chain.max_request_bytes: must be an integer, got true"),
    ("max_concurrent_requests = 0", "chain.max_concurrent_requests: must be ≥ 1"),
    ("max_concurrent_requests = 17", "chain.max_concurrent_requests: must be ≤ 16"),
    ("max_concurent_requests = 4", "chain.max_concurent_requests: unknown key (did you mean max_concurrent_requests?)"),
])
def test_request_limits_bad_values_are_one_clear_line(tmp_path, line, message):
    from keeper.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        _cfg(tmp_path, line + "\n")
    assert message in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


@ASYNC
async def test_multicall_cuts_its_aggregate3_calls_again_when_one_alone_is_too_large(chain):
    """A node that refuses bodies above 100 KB: one 400-call aggregate3 eth_call (~180 KB) is
    too large alone; the byte limit goes down and Multicall encodes smaller chunks."""
    from keeper import abi
    from keeper.multicall import Call, Multicall

    f = abi.load("AavePool").fn("getUserAccountData")
    users = sorted(random_accounts(1200))
    calls = [Call(chain.dep.pool, f.encode(u)) for u in users]
    async with SizeLimitedNode(chain.url, "http413", max_bytes=100_000) as node:
        async with Rpc(node.url) as rpc:
            mc = Multicall(rpc, chain.dep.multicall3)
            with capture_logs() as logs:
                res = await mc.run(calls)
            assert len(res) == 1200 and all(ok and len(data) == 192 for ok, data in res)
            assert node.refused and rpc.max_request_bytes <= 100_000
            reduced = [e["max_request_bytes"] for e in logs if e["event"] == "request_size_reduced"]
            assert reduced and reduced[-1] == rpc.max_request_bytes
            node.reset()
            assert await mc.run(calls) == res
            assert not node.refused and all(b <= 100_000 for _, b in node.accepted)
