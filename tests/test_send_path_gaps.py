"""The "never send twice, never lose track" guarantees where the audit of issue 8 found gaps,
on the devnet: mixed answers from several endpoints to one broadcast (G1), a restart after a
reorg (G2), tracking batches cut into concurrent parts (G3), a reorg in relay mode (G4), an
endpoint on another chain probed back in (G5), the heartbeat with skipped heads (G6), the pause
lifting by itself (G7), nothing signed after stopping (G8) and an RPC fault while judging a
revert (G9)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from structlog.testing import capture_logs

from keeper import abi
from keeper.errors import RpcError
from keeper.rpc import MaybeSentError, Rpc
from keeper.types import Head, TxPlan

from .conftest import DEVNET_CONFIG, KEEPER, KEEPER_KEY, only_env
from .faultproxy import FaultProxy, LocalRelay
from .test_rpc_failover import StubNode, dead_url, signed_transfer, until
from .test_send_faults import (AAVE, JsonLogs, assert_trustworthy, journal_records, land_in_one_block, liquidations,
                               run_cycles)

pytestmark = pytest.mark.asyncio(loop_scope="session")
GWEI = 10**9


@pytest.fixture
def logs():
    return JsonLogs()


def intents_per_key(journal: Path) -> Counter:
    return Counter(r["key"] for r in journal_records(journal) if r["t"] == "intent")


def keeper_txs_per_intent(chain, journal: Path, from_block: int) -> dict[str, int]:
    """Every transaction of the keeper's address mined since from_block, counted per intent (by
    the journal's signed hashes); one that belongs to no intent fails the test."""
    recs = journal_records(journal)
    intent_of = {r["hash"]: r["id"] for r in recs if r["t"] == "signed"}
    per: Counter = Counter()
    for n in range(from_block, chain.block_number() + 1):
        blk = chain.call("eth_getBlockByNumber", [hex(n), True])
        for tx in blk["transactions"]:
            if tx["from"].lower() == KEEPER.lower():
                assert tx["hash"] in intent_of, f"a keeper transaction of no intent: {tx['hash']}"
                per[intent_of[tx["hash"]]] += 1
    return dict(per)


async def two_endpoint_keeper(monkeypatch, tmp_path, urls: list[str], **env: str):
    """A live keeper on several endpoints (make_keeper always sets KEEPER_RPC_URL, which
    replaces the whole endpoint list)."""
    import tomllib

    from keeper.app import Keeper
    from keeper.config import load_config

    monkeypatch.setenv("KEEPER_PRIVATE_KEY", KEEPER_KEY)
    names = [p["name"] for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"]]
    environ = {"KEEPER_PRIVATE_KEY": KEEPER_KEY, "KEEPER_CHAIN__RPC_URL": urls[0],
               "KEEPER_CHAIN__RPC_URLS": json.dumps(urls), "KEEPER_KEEPER__JOURNAL": str(tmp_path / "journal.jsonl"),
               f"KEEPER_PROTOCOLS__{names.index(AAVE)}__ROUTES": '["inventory"]', **only_env(AAVE), **env}
    k = Keeper(load_config(DEVNET_CONFIG, environ=environ), dry_run=False)
    await k.start()
    return k


# -- G1: one endpoint refuses, another may have it -----------------------------------------------
async def test_a_refusal_from_one_endpoint_while_another_timed_out_after_forwarding_is_maybe_sent(chain):
    raw = signed_transfer(chain)
    async with FaultProxy(chain.url) as a, FaultProxy(chain.url) as b:
        a.add("eth_sendRawTransaction", "timeout_after_forward", times=1)
        b.add("eth_sendRawTransaction", "rpc_error", error=(-32000, "nonce too low"), times=1)
        rpc = Rpc([a.url, b.url], timeout_s=0.5, probe_interval_s=60)
        with pytest.raises(MaybeSentError) as ei:
            await rpc.send_raw_transaction(raw)
        assert not isinstance(ei.value, RpcError) and "nonce too low" in ei.value.refusal.rpc_message
        assert a.forwarded_raw == [raw]
        # refused by one, accepted by the other: sent
        raw2 = signed_transfer(chain)
        a.clear()
        b.add("eth_sendRawTransaction", "rpc_error", error=(-32000, "nonce too low"), times=1)
        rpc2 = Rpc([b.url, a.url], timeout_s=2, probe_interval_s=60)
        from eth_utils import keccak

        assert await rpc2.send_raw_transaction(raw2) == "0x" + keccak(hexstr=raw2).hex()
        # refused by one, the other could not even be connected to (nothing delivered): refused
        b.add("eth_sendRawTransaction", "rpc_error", error=(-32000, "insufficient funds"), times=1)
        rpc3 = Rpc([dead_url(), b.url], timeout_s=2, probe_interval_s=60)
        with pytest.raises(RpcError, match="insufficient funds"):
            await rpc3.send_raw_transaction(signed_transfer(chain))
        for r in (rpc, rpc2, rpc3):
            await r.close()


async def test_a_live_send_refused_by_one_endpoint_and_timed_out_on_the_other_lands_once(chain, tmp_path, logs,
                                                                                         monkeypatch):
    chain.shock("WETH", -12)
    start = chain.block_number()
    async with FaultProxy(chain.url) as a, FaultProxy(chain.url) as b:
        keeper = await two_endpoint_keeper(monkeypatch, tmp_path, [a.url, b.url], KEEPER_CHAIN__RPC_TIMEOUT_S="0.5",
                                           KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.5",
                                           KEEPER_CHAIN__RPC_PROBE_INTERVAL_S="0.2")
        try:
            # the first broadcast: `a` forwards it to the node and never answers, `b` refuses it
            a.add("eth_sendRawTransaction", "timeout_after_forward", times=1)
            b.add("eth_sendRawTransaction", "rpc_error", error=(-32000, "nonce too low"), times=1)
            outs = await run_cycles(keeper, chain, 3)
        finally:
            await keeper.close()
    uncertain = logs.events("broadcast_uncertain")
    assert len(uncertain) == 1 and "nonce too low" in uncertain[0]["error"]
    assert not [e for e in logs.events("nonce_resynced") if e.get("intent")], "moved to another nonce"
    assert not logs.events("tx_dropped")
    sent = logs.events("liquidation_sent")
    confirmed = {o.tx_hash for o in outs if o.status == "confirmed"}
    assert len(sent) >= 3 and uncertain[0]["tx"] in confirmed
    journal = Path(keeper.executor.tx.journal.path)
    per_intent = keeper_txs_per_intent(chain, journal, start + 1)
    assert set(per_intent.values()) == {1} and len(per_intent) == len(sent)
    users = Counter(e["user"].lower() for e in liquidations(chain, start + 1))
    assert users and set(users.values()) == {1}
    assert set(intents_per_key(journal).values()) == {1}
    assert_trustworthy(chain, keeper, logs)


# -- G2: a restart after a reorg, or with the send block unreadable ------------------------------
@pytest.mark.parametrize("fault", ["one_block_reorg", "send_block_unreadable"])
async def test_a_restart_after_a_reorg_or_an_unreadable_block_keeps_the_pending_sends_and_sends_none_twice(
        chain, make_keeper, logs, tmp_path, fault):
    chain.shock("WETH", -12)
    start = chain.block_number()
    journal = tmp_path / "restart.jsonl"
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__JOURNAL=str(journal), KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
    chain.call("evm_setAutomine", [False])
    try:
        async with FaultProxy(chain.url) as proxy:
            await keeper.cycle(await keeper.read_head())
            sent = {t.key for t in keeper.executor.tx.in_flight()}
            assert len(sent) >= 3
            await keeper.close()  # the process dies here, its sends pending
            if fault == "one_block_reorg":
                chain.call("anvil_reorg", [1, []])  # the block they were priced on gets another hash
            else:  # the endpoint answers null for the block (lagging, pruned, load-balanced)
                proxy.add("eth_getTransactionByHash", "null_result", times=1)
            again = await make_keeper(only=AAVE, KEEPER_KEEPER__JOURNAL=str(journal), KEEPER_RPC_URL=proxy.url,
                                      KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
            restored = logs.events("in_flight_restored")
            assert {e["intent"] for e in restored} == sent
            assert {e["send_block"] for e in restored} == {"changed" if fault == "one_block_reorg" else "unreadable"}
            assert not logs.events("in_flight_dropped")
            outs = await run_cycles(again, chain, 3)
    finally:
        chain.call("evm_setAutomine", [True])
    assert not [o for o in outs if o.opp.key in sent and o.status != "skipped"]
    assert len(logs.events("liquidation_sent")) == len(sent)
    assert {f"{e['protocol']}:{e['account']}" for e in logs.events("liquidation_confirmed")} == sent
    assert set(intents_per_key(journal).values()) == {1}
    per_intent = keeper_txs_per_intent(chain, journal, start + 1)
    assert len(per_intent) == len(sent) and set(per_intent.values()) == {1}
    users = Counter(e["user"].lower() for e in liquidations(chain, start + 1))
    assert len(users) == len(sent) and set(users.values()) == {1}
    assert_trustworthy(chain, again, logs)


# -- G3: tracking batches cut into parts -------------------------------------------------------
class MineBeforeCountProxy(FaultProxy):
    """A proxy that, `armed` times, holds a request reading the nonce count for a moment and has
    the node mine a block before forwarding it: whatever was read beside it, concurrently,
    saw the chain before that block."""

    armed = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if self.armed and b"eth_getTransactionCount" in body:
            self.armed -= 1
            await asyncio.sleep(0.3)
            assert self.session is not None
            async with self.session.post(self.upstream, json={"jsonrpc": "2.0", "id": 1, "method": "evm_mine",
                                                              "params": []}) as r:
                await r.read()
        return await super().handle(request)


async def test_sends_tracked_in_a_batch_cut_into_parts_are_never_taken_for_another_transaction(
        chain, make_keeper, logs):
    chain.shock("WETH", -12)
    chain.shock("WBTC", -12)
    async with MineBeforeCountProxy(chain.url) as proxy:
        # two calls per request: the per-block tracking batch is cut into many concurrent parts
        keeper = await make_keeper(only=AAVE, KEEPER_RPC_URL=proxy.url, KEEPER_CHAIN__MAX_BATCH_CALLS="2",
                                   KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
        chain.call("evm_setAutomine", [False])
        try:
            await keeper.cycle(await keeper.read_head())
            sent = {t.key: t for t in keeper.executor.tx.in_flight()}
            assert len(sent) >= 3
            proxy.armed = 1  # they are mined between the receipt reads and the nonce count
            outs = await keeper.cycle(await keeper.read_head())
            assert proxy.armed == 0
            outs += await run_cycles(keeper, chain, 2)
        finally:
            chain.call("evm_setAutomine", [True])
    assert not logs.events("tx_dropped")
    confirmed = {o.opp.key for o in outs if o.status == "confirmed"}
    assert set(sent) <= confirmed
    assert {e["tx"] for e in logs.events("liquidation_confirmed")} >= {t.latest_hash for t in sent.values()}
    assert_trustworthy(chain, keeper, logs)


# -- G4: relay mode, a reorg --------------------------------------------------------------------
async def test_in_relay_mode_a_reorged_out_send_goes_back_to_the_relays_as_the_same_transaction(
        chain, make_keeper, logs, monkeypatch):
    from eth_account import Account

    auth = Account.create()
    relay = await LocalRelay(chain.url, auth.address).start()
    chain.shock("WETH", -12)
    start = chain.block_number()
    monkeypatch.setenv("KEEPER_RELAY_AUTH_KEY", auth.key.hex())
    try:
        keeper = await make_keeper(only=AAVE, KEEPER_RELAY__URLS=f'["{relay.url}"]', KEEPER_RELAY__TARGET_BLOCKS="1",
                                   KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1", KEEPER_KEEPER__REPLACE_AFTER_BLOCKS="2")
        chain.call("evm_setAutomine", [False])
        try:
            landed = await land_in_one_block(keeper, chain)
            chain.call("anvil_reorg", [1, []])  # their block is replaced by an empty one
            assert all(chain.call("eth_getTransactionReceipt", [h]) is None for h in landed.values())
            await run_cycles(keeper, chain, 3)
        finally:
            chain.call("evm_setAutomine", [True])
    finally:
        await relay.stop()
    assert {e["intent"] for e in logs.events("tx_reorged_out")} == set(landed)
    again = logs.events("tx_rebroadcast")
    assert {e["intent"] for e in again} == set(landed) and {e["via"] for e in again} == {"relay"}
    assert {e["tx"] for e in again} == set(landed.values())  # the very same signed transactions
    assert not logs.events("tx_replaced") and not logs.events("tx_cancelled")
    relayed = {raw for b in relay.accepted for raw in b["txs"]}
    for h in landed.values():
        assert chain.call("eth_getTransactionReceipt", [h])["status"] == "0x1"
        assert chain.call("eth_getRawTransactionByHash", [h]) in relayed
    users = Counter(e["user"].lower() for e in liquidations(chain, start + 1))
    assert len(users) == len(landed) and set(users.values()) == {1}
    assert_trustworthy(chain, keeper, logs)


# -- G5: an endpoint down at start-up must be on the same chain to join ---------------------------
async def test_an_endpoint_down_at_start_up_on_another_chain_is_never_probed_back_in(chain):
    from keeper.errors import TransientError

    head = chain.block_number()
    other = StubNode(chain_id=1, head=head)  # not started yet: down at start-up
    async with FaultProxy(chain.url) as good:
        rpc = Rpc([other.url, good.url], timeout_s=2.0, probe_interval_s=0.05, log=structlog.get_logger())
        with capture_logs() as logs:
            assert await rpc.connect() == 31337
            assert [s["healthy"] for s in rpc.endpoints_status()] == [False, True]
            async with other:  # it comes up, on chain 1
                for _ in range(20):
                    assert await rpc.block_number() == head  # traffic triggers the probes
                    await asyncio.sleep(0.06)
                await until(lambda: all(ep.probe is None for ep in rpc._eps), "probes done")
                assert other.seen.count("eth_chainId") >= 2, "probed more than once"
                st = rpc.endpoints_status()
                assert st[0]["healthy"] is False and st[0]["reason"] == "on chain 1, not 31337"
                assert "eth_blockNumber" not in other.seen, "never used"
                # even with every endpoint out, it answers nothing
                good.down = True
                with pytest.raises(TransientError):
                    await rpc.block_number()
                with pytest.raises(TransientError):
                    await rpc.send_raw_transaction(signed_transfer(chain))
                assert set(other.seen) == {"eth_chainId"}
                good.down = False
                # the same endpoint on the right chain is probed back in
                other.chain_id = 31337
                for _ in range(100):
                    await rpc.block_number()
                    if rpc.endpoints_status()[0]["healthy"]:
                        break
                    await asyncio.sleep(0.03)
                assert rpc.endpoints_status()[0]["healthy"]
        await rpc.close()
    wrong = [e for e in logs if e["event"] == "rpc_endpoint_wrong_chain"]
    assert len(wrong) == 1 and wrong[0]["log_level"] == "error" and wrong[0]["url"] == other.url.rstrip("/")
    assert len([e for e in logs if e["event"] == "rpc_endpoint_up" and e["url"] == other.url.rstrip("/")]) == 1


# -- G6: the heartbeat with skipped heads -----------------------------------------------------------
async def test_the_heartbeat_fires_once_n_blocks_have_passed_even_when_heads_are_skipped(chain, make_keeper, logs):
    keeper = await make_keeper(dry_run=True, only=AAVE, KEEPER_KEEPER__HEARTBEAT_BLOCKS="10")
    # heads coalesced or cycles failing: only odd blocks are processed, never a multiple of 10
    for n in range(101, 142, 2):
        keeper._heartbeat(Head(number=n, timestamp=0, base_fee_wei=GWEI, hash="0x" + "00" * 32), 0.1)
    assert [e["block"] for e in logs.events("heartbeat")] == [101, 111, 121, 131, 141]
    # a chain that went back below the last heartbeat: counted again from there
    keeper._heartbeat(Head(number=90, timestamp=0, base_fee_wei=GWEI, hash="0x" + "00" * 32), 0.1)
    keeper._heartbeat(Head(number=95, timestamp=0, base_fee_wei=GWEI, hash="0x" + "00" * 32), 0.1)
    assert [e["block"] for e in logs.events("heartbeat")][-1] == 90


async def test_the_daemon_heartbeat_appears_every_n_blocks_when_it_processes_every_other_head(chain, make_keeper, logs):
    keeper = await make_keeper(dry_run=True, only=AAVE, KEEPER_KEEPER__HEARTBEAT_BLOCKS="4",
                               KEEPER_CHAIN__POLL_INTERVAL_S="0.05")
    if chain.block_number() % 2 == 0:
        chain.call("evm_mine")
    task = asyncio.create_task(keeper.run())
    try:
        for _ in range(10):
            await asyncio.sleep(0.4)
            chain.call("evm_mine")
            chain.call("evm_mine")  # two blocks at once: one head processed of the two (an odd one)
        await asyncio.sleep(0.4)
    finally:
        keeper.stop()
        await asyncio.wait_for(task, 10)
    beats = [e["block"] for e in logs.events("heartbeat")]
    assert len(beats) >= 3, beats
    assert all(b - a >= 4 for a, b in zip(beats, beats[1:])), beats


# -- G7: the pause lifts when the cool-down ends ---------------------------------------------------
async def test_the_pause_lifts_when_the_cooldown_ends_whoever_asks_without_waiting_for_a_send(chain, make_keeper, logs):
    from keeper import status
    from keeper.alerts import check

    class Collect:
        def __init__(self) -> None:
            self.kinds: list[str] = []

        def notify(self, kind: str, message: str, **fields: Any) -> bool:
            self.kinds.append(kind)
            return True

    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__MAX_CONSECUTIVE_FAILURES="1",
                               KEEPER_KEEPER__PAUSE_COOLDOWN_S="0.5")
    tm = keeper.executor.tx
    bad = TxPlan(to=chain.dep.tokens["USDC"], data=abi.load("ERC20").fn("transfer").encode(chain.dep.depositor, 10**40),
                 gas_limit=100_000)
    t = await tm.send(bad, 100_000, await keeper.read_head(), key="bad:0")
    await tm.wait([t], 5)
    assert keeper.executor.paused and logs.events("sending_paused")
    alerts = Collect()
    assert "paused" in check(keeper, alerts)
    assert status.health(keeper)[1].startswith("sending paused")
    signed = sum(r["t"] == "signed" for r in journal_records(Path(tm.journal.path)))
    await asyncio.sleep(0.6)
    # nothing was sent since; the health check, the alerts and the heartbeat see it lifted
    ok, reason = status.health(keeper)
    assert "paused" not in reason
    assert len(logs.events("sending_resumed")) == 1
    assert "paused" not in check(keeper, alerts)
    keeper._heartbeat(await keeper.read_head(), 0.1)
    assert logs.events("heartbeat")[-1]["paused"] is False
    assert not keeper.executor.paused and tm.consecutive_failures == 0
    assert sum(r["t"] == "signed" for r in journal_records(Path(tm.journal.path))) == signed
    assert len(logs.events("sending_resumed")) == 1  # logged once, when the cool-down ended
    assert_trustworthy(chain, keeper, logs, allow_reverted=True)


# -- G8: nothing signed after stopping ---------------------------------------------------------------
async def test_after_stopping_a_stuck_send_is_neither_replaced_nor_cancelled_nor_sent_again(chain, make_keeper, logs):
    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__REPLACE_AFTER_BLOCKS="1", KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
    tm = keeper.executor.tx
    journal = Path(tm.journal.path)
    chain.call("evm_setAutomine", [False])
    try:
        await keeper.cycle(await keeper.read_head())
        sent = sorted(tm.in_flight(), key=lambda t: t.nonce)
        assert len(sent) >= 3
        # the base fee jumps: every send is stuck (replace_after_blocks = 1: due for a replacement)
        chain.call("anvil_setNextBlockBaseFeePerGas", [hex(60 * GWEI)])
        chain.call("evm_mine")
        chain.call("anvil_dropTransaction", [sent[-1].latest_hash])  # and the node loses the last one
        signed = sum(r["t"] == "signed" for r in journal_records(journal))
        keeper.stop()  # SIGTERM: from here nothing is signed (nor sent)
        for _ in range(3):
            await keeper.cycle(await keeper.read_head())
            chain.call("evm_mine")
        assert sum(r["t"] == "signed" for r in journal_records(journal)) == signed
        assert all(len(t.hashes) == 1 for t in sent)
    finally:
        chain.call("evm_setAutomine", [True])
    for name in ("tx_replaced", "tx_cancelled", "tx_rebroadcast", "liquidation_sent"):
        assert len(logs.events(name)) == (len(sent) if name == "liquidation_sent" else 0), name
    assert_trustworthy(chain, keeper, logs)


# -- G9: an RPC fault while judging a revert ---------------------------------------------------------
async def test_an_rpc_fault_while_judging_a_revert_is_not_counted_and_it_is_judged_again_next_block(
        chain, make_keeper, logs):
    from keeper.execution.txmanager import JUDGE_TRIES

    async with FaultProxy(chain.url) as proxy:
        keeper = await make_keeper(only=AAVE, KEEPER_RPC_URL=proxy.url, KEEPER_KEEPER__MAX_CONSECUTIVE_FAILURES="1")
        tm = keeper.executor.tx
        bad = TxPlan(to=chain.dep.tokens["USDC"],
                     data=abi.load("ERC20").fn("transfer").encode(chain.dep.depositor, 10**40), gas_limit=100_000)
        # a revert whose judging eth_call always fails: never counted, then left unjudged
        proxy.add("eth_call", "html502")
        t = await tm.send(bad, 100_000, await keeper.read_head(), key="bad:0")
        await tm.wait([t], 5)
        assert t.status == "mined" and t.receipt["status"] == "0x0"
        assert not tm.paused and tm.consecutive_failures == 0
        for _ in range(JUDGE_TRIES + 1):
            chain.call("evm_mine")
            await keeper.executor.on_block(await keeper.read_head())
            assert not tm.paused and tm.consecutive_failures == 0
        assert len(logs.events("revert_unjudged")) == 1 and not tm._unjudged
        # the next one: the judging call fails once, and the next block it is judged (a real failure)
        proxy.clear()
        proxy.add("eth_call", "html502", times=1)
        t = await tm.send(bad, 100_000, await keeper.read_head(), key="bad:1")
        await tm.wait([t], 5)
        assert t.receipt["status"] == "0x0" and not tm.paused and tm.consecutive_failures == 0
        assert logs.events("revert_judge_retry")
        chain.call("evm_mine")
        await keeper.executor.on_block(await keeper.read_head())
    assert tm.paused and tm.consecutive_failures == 1 and len(logs.events("sending_paused")) == 1
    assert not logs.events("lost_race")
    assert_trustworthy(chain, keeper, logs, allow_reverted=True)


async def sends_then_node_back(chain, make_keeper, back: int) -> tuple[Any, int, int, list[int], list[Any]]:
    """The keeper sends its liquidations (automine off), then the node's nonce for its key goes
    `back` below the first of them (as after a restart from an older state), then four cycles.
    Returns (keeper, first nonce, block before, the held nonces, the cycles' outcomes)."""
    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
    base = chain.nonce(KEEPER)
    start = chain.block_number()
    chain.call("evm_setAutomine", [False])
    try:
        await keeper.cycle(await keeper.read_head())
        held = sorted(t.nonce for t in keeper.executor.tx.in_flight())
        assert len(held) >= 3 and held[0] == base
        chain.call("anvil_setNonce", [KEEPER, hex(base - back)])
        chain.call("evm_mine")
        assert chain.nonce(KEEPER) == base - back  # nothing could be mined behind the gap
        outs = await run_cycles(keeper, chain, 4)
    finally:
        chain.call("evm_setAutomine", [True])
    return keeper, base, start, held, outs


async def test_sends_held_behind_a_nonce_gap_get_the_gap_filled_and_land_once(chain, make_keeper, logs):
    """The node goes back further than the keeper watches (here: the keeper's account nonce set
    two below the sends the node holds, as after a restart from an older state; anvil then
    keeps them queued and does not serve them by hash): the nonces nothing of the keeper's will
    use get a 21,000-gas self-transfer each, so the held liquidations, and the sends after
    them, are mined instead of queueing for ever; none is dropped and sent again beside its
    queued self (that would liquidate twice once the gap is filled)."""
    # the chain now needs base-2 and base-1 first
    keeper, base, start, held, outs = await sends_then_node_back(chain, make_keeper, 2)
    assert [e["nonce"] for e in logs.events("nonce_gap_filled")] == [base - 2, base - 1]
    assert not logs.events("tx_dropped")
    assert chain.nonce(KEEPER) == base + len(held)  # the gap filled, every held send mined
    assert not chain.call("txpool_content")["queued"]
    users = Counter(e["user"].lower() for e in liquidations(chain, start + 1))
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert len(users) == len(held) == len(confirmed) and set(users.values()) == {1}
    assert [e["nonce"] for e in logs.events("nonce_gap_fill_mined")] == [base - 2, base - 1]
    assert_trustworthy(chain, keeper, logs)


async def test_a_gap_too_wide_to_fill_lets_the_sends_above_it_go_and_sends_on_the_nodes_nonce(chain, make_keeper, logs):
    """The node went back 20 nonces (a reset far back): filling would take 20 transactions, so
    the sends above the gap are let go (nonce_gap) and nothing is filled; the keeper then sends
    on the node's nonce and each account is liquidated once."""
    keeper, base, start, held, outs = await sends_then_node_back(chain, make_keeper, 20)
    assert not logs.events("nonce_gap_filled")
    dropped = logs.events("tx_dropped")
    assert len(dropped) == len(held) and {e["reason"] for e in dropped} == {"nonce_gap"}
    users = Counter(e["user"].lower() for e in liquidations(chain, start + 1))
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert users and len(users) == len(confirmed) and set(users.values()) == {1}
    assert chain.nonce(KEEPER) == base - 20 + len(confirmed)
    assert_trustworthy(chain, keeper, logs)
