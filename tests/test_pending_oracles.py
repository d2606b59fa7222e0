"""Oracle updates seen while still pending: the decoders (keeper/oracles.py) and the mempool
watcher (keeper/sources/pending.py) against the devnet's anvil, directly and through a
fault-injecting proxy; and how anvil orders pending transactions (the comment at the top of
keeper/sources/pending.py states what test_anvil_orders_pending_by_fee_cap_then_arrival checks)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import structlog
from eth_abi import encode
from eth_utils import keccak
from structlog.testing import capture_logs

from keeper.errors import BadResponseError
from keeper.oracles import (FORWARD, MULTI_FORWARD, OCR1_TRANSMIT, OCR2_TRANSMIT, OWNER_FORWARD, SET_ANSWER,
                            FeedMap, PendingTx, call_targets, decode_update, decode_updates, effective_tip)
from keeper.rpc import Rpc
from keeper.sources.pending import PendingWatcher, resolve_aggregator

from .faultproxy import FaultProxy

GWEI = 10**9
AGG = "0x" + "a1" * 20
FWD = "0x" + "f0" * 20
OTHER = "0x" + "b2" * 20


# -- building calldata -----------------------------------------------------------------------
def set_answer(answer: int) -> bytes:
    return SET_ANSWER + encode(["int256"], [answer])


def ocr2_report(observations: list[int], ts: int = 1_700_000_000, juels: int = 5 * 10**18) -> bytes:
    observers = bytes(range(len(observations))).ljust(32, b"\x00")
    return encode(["uint32", "bytes32", "int192[]", "int192"], [ts, observers, observations, juels])


def ocr2_transmit(observations: list[int], n_sigs: int = 2, report: bytes | None = None) -> bytes:
    report = ocr2_report(observations) if report is None else report
    ctx = [b"\x11" * 32, (0x0102).to_bytes(32, "big"), b"\x33" * 32]
    return OCR2_TRANSMIT + encode(["bytes32[3]", "bytes", "bytes32[]", "bytes32[]", "bytes32"],
                                  [ctx, report, [b"\x44" * 32] * n_sigs, [b"\x55" * 32] * n_sigs, b"\x00" * 32])


def ocr1_transmit(observations: list[int], n_sigs: int = 2) -> bytes:
    observers = bytes(range(len(observations))).ljust(32, b"\x00")
    report = encode(["bytes32", "bytes32", "int192[]"], [(0x0102).to_bytes(32, "big"), observers, observations])
    return OCR1_TRANSMIT + encode(["bytes", "bytes32[]", "bytes32[]", "bytes32"],
                                  [report, [b"\x44" * 32] * n_sigs, [b"\x55" * 32] * n_sigs, b"\x00" * 32])


def forward(to: str, data: bytes, selector: bytes = FORWARD) -> bytes:
    return selector + encode(["address", "bytes"], [to, data])


# -- decoders (pure) --------------------------------------------------------------------------
def test_selectors_are_the_known_ones():
    assert SET_ANSWER.hex() == "99213cd8"
    assert OCR2_TRANSMIT.hex() == "b1dc65a4"
    assert OCR1_TRANSMIT.hex() == "c9807539"
    assert FORWARD.hex() == "6fadcf72"


@pytest.mark.parametrize("answer", [1, 3_000_00000000, -42, 2**255 - 1, -(2**255)])
def test_decode_set_answer(answer):
    assert decode_update(AGG.upper().replace("0X", "0x"), set_answer(answer)) == (AGG, answer)


def test_decode_ocr2_transmit_median():
    # odd n: the middle one; even n: observations[n/2], the upper middle (no averaging)
    assert decode_update(AGG, ocr2_transmit([100, 200, 300])) == (AGG, 200)
    assert decode_update(AGG, ocr2_transmit([100, 200, 300, 400])) == (AGG, 300)
    assert decode_update(AGG, ocr2_transmit([7])) == (AGG, 7)
    assert decode_update(AGG, ocr2_transmit([-500, -300, -100, 50, 60])) == (AGG, -100)  # negative answer
    assert decode_update(AGG, ocr2_transmit([-(2**191), 2**191 - 1])) == (AGG, 2**191 - 1)
    # OCR2 does not check order: the element at n/2 is what the contract stores
    assert decode_update(AGG, ocr2_transmit([300, 100, 200])) == (AGG, 100)
    assert decode_update(AGG, ocr2_transmit(list(range(31)), n_sigs=11)) == (AGG, 15)


def test_decode_ocr2_transmit_malformed_is_none():
    good = ocr2_transmit([100, 200, 300])
    assert decode_update(AGG, good[:-1]) is None  # truncated
    assert decode_update(AGG, good + b"\x00" * 32) is None  # calldata length mismatch (the contract reverts)
    assert decode_update(AGG, ocr2_transmit([])) is None  # no observations
    assert decode_update(AGG, ocr2_transmit(list(range(32)))) is None  # more than maxNumOracles
    assert decode_update(AGG, ocr2_transmit([1, 2], report=b"\x01" * 100)) is None  # report is garbage
    assert decode_update(AGG, ocr2_transmit([1, 2], report=ocr2_report([1, 2]) + b"\x00" * 32)) is None  # report length
    # an observation that does not fit int192 (dirty sign extension): abi.decode reverts
    bad = encode(["uint32", "bytes32", "int256[]", "int192"], [1, b"\x00" * 32, [2**200], 0])
    assert decode_update(AGG, ocr2_transmit([1], report=bad)) is None
    # rs and ss of different lengths: "signatures out of registration"
    ctx = [b"\x11" * 32] * 3
    uneven = OCR2_TRANSMIT + encode(["bytes32[3]", "bytes", "bytes32[]", "bytes32[]", "bytes32"],
                                    [ctx, ocr2_report([1, 2, 3]), [b"\x44" * 32] * 2, [b"\x55" * 32], b"\x00" * 32])
    assert decode_update(AGG, uneven) is None


def test_decode_ocr1_transmit():
    assert decode_update(AGG, ocr1_transmit([100, 200, 300, 400])) == (AGG, 300)
    assert decode_update(AGG, ocr1_transmit([-3, -2, -1])) == (AGG, -2)
    assert decode_update(AGG, ocr1_transmit([300, 100, 200])) is None  # OCR1 reverts: "observations not sorted"
    assert decode_update(AGG, ocr1_transmit([1, 2])[:-5]) is None


def test_decode_forwarded():
    assert decode_update(FWD, forward(AGG, ocr2_transmit([1, 5, 9]))) == (AGG, 5)
    assert decode_update(FWD, forward(AGG, set_answer(-77))) == (AGG, -77)
    assert decode_update(FWD, forward(AGG, set_answer(12), OWNER_FORWARD)) == (AGG, 12)
    assert decode_update(FWD, forward(FWD, forward(AGG, set_answer(3)))) == (AGG, 3)  # nested
    assert decode_update(FWD, forward(AGG, b"\xde\xad\xbe\xef" + b"\x00" * 64)) is None  # forwards something else
    assert decode_update(FWD, forward(AGG, ocr2_transmit([1, 2, 3]))[:-40]) is None
    multi = MULTI_FORWARD + encode(["address[]", "bytes[]"], [[AGG, OTHER], [set_answer(1), ocr2_transmit([4, 5, 6])]])
    assert decode_updates(FWD, multi) == [(AGG, 1), (OTHER, 5)]
    assert decode_update(FWD, multi) == (AGG, 1)
    assert call_targets(FWD, multi) == (FWD, AGG, OTHER)
    assert call_targets(FWD, forward(AGG, set_answer(1))) == (FWD, AGG)
    assert call_targets(AGG, set_answer(1)) == (AGG,)
    assert call_targets(None, set_answer(1)) == ()


@pytest.mark.parametrize("data", [b"", b"\x99\x21", SET_ANSWER, SET_ANSWER + b"\x00" * 31, b"\x00" * 100,
                                  OCR2_TRANSMIT, OCR2_TRANSMIT + b"\xff" * 400, OCR1_TRANSMIT + b"\x00" * 31,
                                  FORWARD + b"\xff" * 100, MULTI_FORWARD + b"\x00" * 5, keccak(b"x") * 10])
def test_decode_garbage_is_none(data):
    assert decode_update(AGG, data) is None
    assert decode_updates(AGG, data) == []
    call_targets(AGG, data)  # never raises


def test_decode_contract_creation_is_none():
    assert decode_update(None, set_answer(5)) is None


def rpc_tx(**over: Any) -> dict[str, Any]:
    tx = {"type": "0x2", "hash": "0x" + "ab" * 32, "from": "0x" + "CD" * 20, "to": AGG, "input": "0x" + set_answer(9).hex(),
          "nonce": "0x7", "gas": "0x186a0", "gasPrice": hex(50 * GWEI), "maxFeePerGas": hex(50 * GWEI),
          "maxPriorityFeePerGas": hex(2 * GWEI), "value": "0x0", "blockNumber": None}
    tx.update(over)
    return {k: v for k, v in tx.items() if v is not ...}


def test_pending_tx_from_rpc():
    tx = PendingTx.from_rpc(rpc_tx(), seen_at=1.5, raw=b"\x02")
    assert tx is not None
    assert (tx.hash, tx.sender, tx.to, tx.nonce, tx.gas, tx.type) == ("0x" + "ab" * 32, "0x" + "cd" * 20, AGG, 7, 100_000, 2)
    assert (tx.gas_price, tx.max_fee_per_gas, tx.max_priority_fee_per_gas, tx.value) == (50 * GWEI, 50 * GWEI, 2 * GWEI, 0)
    assert tx.seen_at == 1.5 and tx.raw == b"\x02" and tx.block_number is None and tx.fee_cap == 50 * GWEI
    assert decode_update(tx.to, tx.input) == (AGG, 9)
    legacy = PendingTx.from_rpc(rpc_tx(type="0x0", maxFeePerGas=..., maxPriorityFeePerGas=..., to=None, input=...,
                                       data="0x"))
    assert legacy is not None and legacy.to is None and legacy.input == b"" and legacy.max_fee_per_gas is None
    assert PendingTx.from_rpc(rpc_tx(type=...)).type == 0  # pre-typed nodes
    assert PendingTx.from_rpc(None) is None
    with pytest.raises(AttributeError):
        tx.nonce = 8  # type: ignore[misc]


@pytest.mark.parametrize("bad", [
    "not a dict", [1], {},
    rpc_tx(hash="0x1234"), rpc_tx(hash=None), rpc_tx(**{"from": "0xzz" + "00" * 19}), rpc_tx(to="0x12"),
    rpc_tx(nonce=7), rpc_tx(nonce="0x"), rpc_tx(gas="0xfoo"), rpc_tx(value="0x" + "f" * 65), rpc_tx(input="abc"),
    rpc_tx(input="0x123"), rpc_tx(input=..., data=...), rpc_tx(maxPriorityFeePerGas=...),
    rpc_tx(gasPrice=..., maxFeePerGas=..., maxPriorityFeePerGas=...), rpc_tx(blockNumber=12),
])
def test_pending_tx_from_rpc_rejects_malformed(bad):
    with pytest.raises(BadResponseError):
        PendingTx.from_rpc(bad)


def test_effective_tip():
    tx = PendingTx.from_rpc(rpc_tx())
    assert effective_tip(tx, 10 * GWEI) == 2 * GWEI  # the tip fits under the cap
    assert effective_tip(tx, 49 * GWEI) == 1 * GWEI  # capped by maxFeePerGas - base fee
    assert effective_tip(tx, 60 * GWEI) == -10 * GWEI  # cannot be included
    legacy = PendingTx.from_rpc(rpc_tx(type="0x0", gasPrice=hex(30 * GWEI), maxFeePerGas=..., maxPriorityFeePerGas=...))
    assert effective_tip(legacy, 10 * GWEI) == 20 * GWEI and legacy.fee_cap == 30 * GWEI


def test_feed_map():
    proxy_a, proxy_b, agg1, agg2 = ("0x" + c * 40 for c in "1234")
    fm = FeedMap([(proxy_a.upper().replace("0X", "0x"), agg1)])
    fm.add(proxy_b, agg1)
    fm.add(agg2)  # an aggregator read directly
    assert sorted(fm.lookup(agg1.upper().replace("0X", "0x"))) == sorted([proxy_a, proxy_b])
    assert fm.lookup(agg2) == [agg2] and fm.lookup(OTHER) == []
    assert fm.targets() == {agg1, agg2} and agg1 in fm and len(fm) == 3
    fm.add(proxy_b, agg2)  # the proxy now points at another aggregator
    assert fm.lookup(agg1) == [proxy_a] and sorted(fm.lookup(agg2)) == sorted([agg2, proxy_b])
    fm.remove(proxy_a)
    assert fm.lookup(agg1) == [] and fm.targets() == {agg2} and fm.aggregator_of(proxy_b) == agg2


# -- devnet --------------------------------------------------------------------------------------
pytest_asyncio_mark = pytest.mark.asyncio(loop_scope="session")


def owner_of(chain: Any, agg: str) -> str:
    out = chain.call("eth_call", [{"to": agg, "data": "0x8da5cb5b"}, "latest"])  # owner()
    return "0x" + out[-40:]


def latest_answer(chain: Any, agg: str) -> int:
    out = chain.call("eth_call", [{"to": agg, "data": "0x50d25bcd"}, "latest"])  # latestAnswer()
    return int.from_bytes(bytes.fromhex(out[2:]), "big", signed=True)


def send(chain: Any, sender: str, to: str, data: bytes = b"", *, max_fee: int = 50 * GWEI, tip: int = 2 * GWEI,
         gas: int = 100_000) -> str:
    return chain.call("eth_sendTransaction", [{"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(gas),
                                               "maxFeePerGas": hex(max_fee), "maxPriorityFeePerGas": hex(tip)}])


async def until(pred: Any, timeout_s: float = 10.0) -> None:
    end = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(0.02)


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


@pytest_asyncio_mark
async def test_pending_set_answer_is_seen_before_it_is_mined(chain):
    syms = sorted(chain.dep.aggregators)
    agg, other_agg = chain.dep.aggregators[syms[0]].lower(), chain.dep.aggregators[syms[1]].lower()
    owner = owner_of(chain, agg)
    assert owner == chain.dep.deployer.lower()  # anvil account 0, unlocked: eth_sendTransaction signs for real
    accounts = chain.call("eth_accounts")
    before = latest_answer(chain, agg)
    new_answer = before * 7 // 10
    # earlier tests may have impersonated the deployer (snapshots do not undo that): then anvil
    # would send for it unsigned, and the raw bytes would not hash to the transaction
    chain.call("anvil_stopImpersonatingAccount", [owner])
    chain.call("evm_setAutomine", [False])
    try:
        async with Rpc(chain.url) as rpc:
            feeds = FeedMap([(agg, agg)])
            w = PendingWatcher(rpc, structlog.get_logger(), feeds.targets, poll_interval_s=0.02)
            await w.start()
            assert w.mode == "filter"
            try:
                nonce = chain.nonce(owner)
                unrelated = [send(chain, accounts[3], accounts[4], max_fee=60 * GWEI),  # a plain transfer
                             send(chain, owner, other_agg, set_answer(123), max_fee=60 * GWEI)]  # another feed
                h = send(chain, owner, agg, set_answer(new_answer), max_fee=40 * GWEI, tip=3 * GWEI)
                tx = await asyncio.wait_for(w.queue.get(), 10)
                await until(lambda: w.fetched >= 3)
                assert w.queue.empty() and w.matched == 1 and w.seen >= 3
                assert chain.call("eth_getTransactionReceipt", [h]) is None  # still pending
            finally:
                await w.close()
            assert w.mode == "off"
        assert tx.hash == h and tx.sender == owner and tx.to == agg and tx.block_number is None
        assert tx.nonce == nonce + 1  # the other feed's update went first
        assert (tx.type, tx.max_fee_per_gas, tx.max_priority_fee_per_gas, tx.gas, tx.value) == (2, 40 * GWEI, 3 * GWEI,
                                                                                               100_000, 0)
        assert tx.raw is not None and "0x" + keccak(tx.raw).hex() == h
        assert decode_update(tx.to, tx.input) == (agg, new_answer)
        assert feeds.lookup(agg) == [agg]
        assert h not in unrelated
        base = int(chain.call("eth_getBlockByNumber", ["pending", False])["baseFeePerGas"], 16)
        assert effective_tip(tx, base) == min(3 * GWEI, 40 * GWEI - base)
    finally:
        chain.call("evm_mine")
        chain.call("evm_setAutomine", [True])
    assert latest_answer(chain, agg) == new_answer
    assert chain.call("eth_getTransactionReceipt", [h])["status"] == "0x1"


@pytest_asyncio_mark
async def test_resolve_aggregator(chain):
    agg = next(iter(chain.dep.aggregators.values()))
    async with Rpc(chain.url) as rpc:
        # the devnet's SettableAggregator has no aggregator(): it is its own aggregator
        assert await resolve_aggregator(rpc, agg) == agg.lower()


def test_anvil_orders_pending_by_fee_cap_then_arrival(chain):
    """Two pending EIP-1559 transactions from different senders, mined in one block: which
    comes first? (What keeper/sources/pending.py's top comment says.)"""
    accounts = chain.call("eth_accounts")
    a, b, sink = accounts[5], accounts[6], accounts[7]

    def block_order(first: tuple[int, int], second: tuple[int, int]) -> list[int]:
        """(tip, max fee) of the first-sent and the second-sent; their indexes in the block."""
        h1 = send(chain, a, sink, tip=first[0], max_fee=first[1], gas=21_000)
        h2 = send(chain, b, sink, tip=second[0], max_fee=second[1], gas=21_000)
        chain.call("evm_mine")
        txs = chain.call("eth_getBlockByNumber", ["latest", False])["transactions"]
        assert len(txs) == 2
        return [txs.index(h1), txs.index(h2)]

    chain.call("evm_setAutomine", [False])
    try:
        cap = 50 * GWEI
        # (a) same priority fee, one after the other: arrival order
        assert block_order((2 * GWEI, cap), (2 * GWEI, cap)) == [0, 1]
        # (b) the second with a lower priority fee: still after the first
        assert block_order((2 * GWEI, cap), (1 * GWEI, cap)) == [0, 1]
        # (c) the second with a higher priority fee: STILL after the first (the tip is not the order)
        assert block_order((2 * GWEI, cap), (3 * GWEI, cap)) == [0, 1]
        # what does decide: the fee cap, highest first ...
        assert block_order((2 * GWEI, cap), (2 * GWEI, cap + 1)) == [1, 0]
        assert block_order((3 * GWEI, cap), (1 * GWEI, cap + GWEI)) == [1, 0]
        assert block_order((2 * GWEI, cap), (5 * GWEI, cap - 1)) == [0, 1]
    finally:
        chain.call("evm_mine")
        chain.call("evm_setAutomine", [True])


# -- nodes that misbehave (through tests/faultproxy.py) ----------------------------------------------
@pytest_asyncio_mark
async def test_node_without_pending_filters(chain):
    async with FaultProxy(chain.url) as proxy:
        proxy.add("eth_newPendingTransactionFilter", "rpc_error",
                  error=(-32601, "the method eth_newPendingTransactionFilter does not exist/is not available"))
        async with Rpc(proxy.url) as rpc:
            with capture_logs() as logs:
                w = PendingWatcher(rpc, structlog.get_logger(), {AGG}, poll_interval_s=0.01)
                await w.start()
                await asyncio.sleep(0.3)
                await w.start()  # a second start: refused again, not logged again
                await asyncio.sleep(0.1)
                await w.close()
        assert w.mode == "off" and not w.running
        assert "does not exist" in (w.reason or "")
        un = events(logs, "pending_unavailable")
        assert len(un) == 1 and un[0]["log_level"] == "warning" and "node of your own" in un[0]["hint"]
        assert proxy.count("eth_newPendingTransactionFilter") == 2 and proxy.count("eth_getFilterChanges") == 0
        assert not [e for e in logs if e["log_level"] == "error"]


@pytest_asyncio_mark
async def test_forgotten_filter_transient_errors_and_refused_raw(chain):
    """The node forgets the filter once (recreated), fails a few polls and one body batch
    (backoff, then on), and refuses eth_getRawTransactionByHash (queued without raw)."""
    agg = next(iter(chain.dep.aggregators.values())).lower()
    owner = chain.dep.deployer
    chain.call("evm_setAutomine", [False])
    try:
        async with FaultProxy(chain.url) as proxy, Rpc(proxy.url) as rpc:
            with capture_logs() as logs:
                w = PendingWatcher(rpc, structlog.get_logger(), lambda: {agg}, poll_interval_s=0.01,
                                   max_backoff_s=0.05)
                proxy.add("eth_getFilterChanges", "rpc_error", times=1, error=(-32000, "filter not found"))
                await w.start()
                await until(lambda: w.filters_created == 2)
                proxy.add("eth_getFilterChanges", "html502", times=3)
                proxy.add("eth_getTransactionByHash", "truncated", times=1)
                proxy.add("eth_getRawTransactionByHash", "rpc_error", error=(-32601, "Method not found"))
                h = send(chain, owner, agg, set_answer(4242))
                tx = await asyncio.wait_for(w.queue.get(), 10)
                await w.close()
        assert tx.hash == h and tx.raw is None and decode_update(tx.to, tx.input) == (agg, 4242)
        assert len(events(logs, "pending_filter_lost")) == 1
        failed = [e for e in events(logs, "pending_poll_failed") if e["log_level"] == "warning"]
        assert len(failed) == 1 and events(logs, "pending_poll_recovered")
        assert len(events(logs, "pending_raw_unavailable")) == 1
        assert not events(logs, "pending_unavailable") and not [e for e in logs if e["log_level"] == "error"]
        assert proxy.count("eth_getTransactionByHash") >= 2  # the failed body batch was read again
    finally:
        chain.call("evm_mine")
        chain.call("evm_setAutomine", [True])


@pytest_asyncio_mark
async def test_filter_forgotten_every_time_means_unavailable(chain):
    """A load-balanced RPC: the filter is created, and the next poll lands on a node that has
    never heard of it."""
    async with FaultProxy(chain.url) as proxy:
        proxy.add("eth_getFilterChanges", "rpc_error", error=(-32000, "filter not found"))
        async with Rpc(proxy.url) as rpc:
            with capture_logs() as logs:
                w = PendingWatcher(rpc, structlog.get_logger(), {AGG}, poll_interval_s=0.01)
                await w.start()
                await until(lambda: not w.running)
                await asyncio.sleep(0.1)
                await w.close()
        assert w.mode == "off" and "load-balanced" in (w.reason or "")
        assert len(events(logs, "pending_unavailable")) == 1
        assert proxy.count("eth_newPendingTransactionFilter") == 3


@pytest_asyncio_mark
async def test_seen_hashes_are_bounded_and_queued_once(chain):
    """A hash the filter reports again is not fetched again; the memory of hashes is bounded."""
    accounts = chain.call("eth_accounts")
    chain.call("evm_setAutomine", [False])
    try:
        async with Rpc(chain.url) as rpc:
            w = PendingWatcher(rpc, structlog.get_logger(), {accounts[8]}, poll_interval_s=0.01, max_seen=3)
            await w.start()
            try:
                hs = [send(chain, accounts[5 + i % 2], accounts[8], gas=21_000) for i in range(5)]
                await until(lambda: w.matched == 5)
                assert len(w._seen) == 3 and w.seen == 5
                await asyncio.sleep(0.1)  # more polls: nothing is queued twice
                got = [w.queue.get_nowait().hash for _ in range(5)]
                assert sorted(got) == sorted(hs) and w.queue.empty()
            finally:
                await w.close()
    finally:
        chain.call("evm_mine")
        chain.call("evm_setAutomine", [True])


@pytest_asyncio_mark
async def test_pending_updates_pushed_over_the_websocket_arrive_without_waiting_for_the_poll(chain):
    """With a websocket (chain.ws_url), pending hashes are pushed: an update is queued at once
    although the filter is polled only every 30 s."""
    syms = sorted(chain.dep.aggregators)
    agg = chain.dep.aggregators[syms[0]].lower()
    owner = owner_of(chain, agg)
    chain.call("anvil_stopImpersonatingAccount", [owner])
    chain.call("evm_setAutomine", [False])
    try:
        async with Rpc(chain.url) as rpc:
            w = PendingWatcher(rpc, structlog.get_logger(), FeedMap([(agg, agg)]).targets, poll_interval_s=30,
                               ws_url=chain.url.replace("http://", "ws://"))
            await w.start()
            try:
                await until(lambda: w._ws_task is not None and w.mode == "filter")
                await asyncio.sleep(0.3)  # subscribed
                t0 = time.monotonic()
                h = send(chain, owner, agg, set_answer(latest_answer(chain, agg) // 2), max_fee=40 * GWEI)
                tx = await asyncio.wait_for(w.queue.get(), 5)
                took = time.monotonic() - t0
            finally:
                await w.close()
        assert tx.hash == h and w.pushed >= 1
        assert took < 5  # pushed: far below the 30 s poll
    finally:
        chain.call("evm_mine")
        chain.call("evm_setAutomine", [True])
