"""The send path under faults, on the devnet, through a fault-injecting JSON-RPC proxy.

Every test checks the same things at the end: no intent has two transactions on chain
(and no account two intents open at once), every liquidation the keeper sent and that
was mined is reported, nothing unprofitable was sent, no traceback and no secret in the
keeper's output.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from keeper import abi

from .conftest import KEEPER
from .faultproxy import FaultProxy, JsonLogs, assert_clean, assert_trustworthy, journal_records

AAVE = "aave-v3-devnet"
pytestmark = pytest.mark.asyncio(loop_scope="session")
POOL = abi.load("AavePool")
LIQ = POOL.event("LiquidationCall")
GWEI = 10**9


@pytest.fixture
def logs():
    return JsonLogs()


def rss_kib() -> int:
    """This process's resident memory (VmRSS), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


async def run_cycles(keeper, chain, n: int, mine: bool = True) -> list[Any]:
    """n cycles as the daemon runs them: an RPC failure is retried (the loop backs off and
    retries; here at once)."""
    from keeper.errors import TransientError

    outs: list[Any] = []
    for _ in range(n):
        for attempt in range(3):
            try:
                outs += await keeper.cycle(await keeper.read_head())
                break
            except TransientError:
                if attempt == 2:
                    raise
        if mine:
            chain.call("evm_mine")
    return outs


def liquidations(chain, from_block: int) -> list[dict]:
    logs = chain.call("eth_getLogs", [{"address": chain.dep.pool, "fromBlock": hex(from_block), "toBlock": "latest",
                                       "topics": [LIQ.topic0]}])
    return [LIQ.decode(lg) for lg in logs]


# -- broadcasts that fail in ways that say nothing -------------------------------------------
async def test_a_broadcast_that_times_out_after_reaching_the_node_is_tracked_and_never_sent_twice(
        chain, make_keeper, logs):
    chain.shock("WETH", -12)
    start = chain.block_number()
    async with FaultProxy(chain.url) as proxy:
        proxy.add("eth_sendRawTransaction", "timeout_after_forward", times=2)
        keeper = await make_keeper(only=AAVE, KEEPER_RPC_URL=proxy.url, KEEPER_CHAIN__RPC_TIMEOUT_S="0.5",
                                   KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.5")
        outs = await run_cycles(keeper, chain, 3)
    uncertain = logs.events("broadcast_uncertain")
    assert len(uncertain) == 2
    sent = logs.events("liquidation_sent")
    confirmed = [o for o in outs if o.status == "confirmed"]
    # the two "failed" broadcasts did reach the node: they are reported like the others
    assert len(confirmed) == len(sent) >= 3
    assert {e["tx"] for e in uncertain} <= {o.tx_hash for o in confirmed}
    assert len(liquidations(chain, start + 1)) == len(sent)
    assert_trustworthy(chain, keeper, logs)


@pytest.mark.parametrize("mining", ["automine", "next_block"])
@pytest.mark.parametrize("fault", ["html502_after_forward", "reset_after_forward"])
async def test_a_broadcast_answered_502_or_reset_after_reaching_the_node_is_maybe_sent_and_lands_once(
        chain, make_keeper, logs, fault, mining):
    """The node got the transaction; the gateway in front of it answers HTTP 502, or the
    connection drops before the answer. The keeper cannot tell it from a send that never
    arrived: it must track it as maybe sent, never sign a second transaction for the intent,
    and report it once it is mined: at once (automine), or in a later block, while the
    next cycles see it waiting in the node's pool (next_block). (Through an RPC URL with an
    API token in its path.)"""
    chain.shock("WETH", -12)
    start = chain.block_number()
    async with FaultProxy(chain.url) as proxy:
        proxy.add("eth_sendRawTransaction", fault, times=2)
        keeper = await make_keeper(only=AAVE, KEEPER_RPC_URL=proxy.token_url, KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.3")
        base = chain.nonce(KEEPER)
        if mining == "next_block":
            chain.call("evm_setAutomine", [False])
        try:
            outs = await run_cycles(keeper, chain, 3)
        finally:
            chain.call("evm_setAutomine", [True])
        forwarded = list(proxy.forwarded_raw)
    uncertain = logs.events("broadcast_uncertain")
    assert len(uncertain) == 2, [e["event"] for e in logs.events()]
    # said as it is: the gateway's 502, or the dropped connection
    assert all(("502" in e["error"]) if fault.startswith("html502") else ("502" not in e["error"]) for e in uncertain), \
        [e["error"] for e in uncertain]
    sent = logs.events("liquidation_sent")
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert len(sent) >= 3 and len(confirmed) == len(sent)
    # the two "failed" broadcasts did reach the node: mined and reported like the others
    assert {e["tx"] for e in uncertain} <= {o.tx_hash for o in confirmed}
    # one transaction per intent on chain, at consecutive nonces; each user liquidated once
    assert chain.nonce(KEEPER) == base + len(sent)
    users = Counter(e["user"].lower() for e in liquidations(chain, start + 1))
    assert len(users) == len(sent) and set(users.values()) == {1}
    # what reached the node twice (a rebroadcast of the very same bytes) is never a second transaction
    assert {e["intent"] for e in logs.events("tx_replaced")} == set()
    assert len(set(forwarded)) == len(sent)
    assert_trustworthy(chain, keeper, logs)


async def test_a_swallowed_broadcast_is_sent_again_as_the_same_transaction(chain, make_keeper, logs):
    chain.shock("WETH", -12)
    async with FaultProxy(chain.url) as proxy:
        proxy.add("eth_sendRawTransaction", "swallow", times=1)  # a hash comes back, the node never saw it
        keeper = await make_keeper(only=AAVE, KEEPER_RPC_URL=proxy.url, KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.3")
        outs = await run_cycles(keeper, chain, 3)
        forwarded = list(proxy.forwarded_raw)
    rebroadcast = logs.events("tx_rebroadcast")
    assert len(rebroadcast) == 1
    first = logs.events("liquidation_sent")[0]
    assert rebroadcast[0]["tx"] == first["tx"]  # the very same signed transaction
    confirmed = {o.tx_hash for o in outs if o.status == "confirmed"}
    assert first["tx"] in confirmed
    assert len(forwarded) == len(set(forwarded))  # nothing reached the node twice
    assert_trustworthy(chain, keeper, logs)


@pytest.mark.parametrize("fault", ["html502", "truncated", "wrong_id", "null_result", "malformed_error"])
async def test_a_liquidation_mined_while_receipt_reads_fail_is_still_reported(chain, make_keeper, logs, fault):
    chain.shock("WETH", -12)
    async with FaultProxy(chain.url) as proxy:
        proxy.add("eth_getTransactionReceipt", fault, times=6)
        keeper = await make_keeper(only=AAVE, KEEPER_RPC_URL=proxy.url, KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.2")
        outs = []
        for _ in range(6):
            try:
                outs += await run_cycles(keeper, chain, 1)
            except Exception as e:  # the daemon's loop logs and retries these; so does this test
                from keeper.errors import TransientError

                assert isinstance(e, TransientError), repr(e)
    sent = logs.events("liquidation_sent")
    confirmed = logs.events("liquidation_confirmed")
    assert len(sent) >= 3
    assert sorted(e["tx"] for e in confirmed) == sorted(e["tx"] for e in sent)
    assert len([o for o in outs if o.status == "confirmed"]) == len(sent)
    assert_trustworthy(chain, keeper, logs)


# -- fees -----------------------------------------------------------------------------------
async def test_a_gas_spike_over_the_fee_cap_stops_sending_only_while_it_lasts(chain, make_keeper, logs):
    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__MAX_FEE_GWEI="50", KEEPER_KEEPER__MAX_CONSECUTIVE_FAILURES="1")
    nonce = chain.nonce(KEEPER)
    chain.call("anvil_setNextBlockBaseFeePerGas", [hex(80 * GWEI)])
    chain.call("evm_mine")
    outs = await run_cycles(keeper, chain, 2, mine=False)
    assert outs and {o.reason for o in outs} == {"fee_cap"}
    assert chain.nonce(KEEPER) == nonce
    # the spike passes: the keeper sends by itself, nothing was counted as a failure
    chain.call("anvil_setNextBlockBaseFeePerGas", [hex(GWEI)])
    chain.call("evm_mine")
    outs = await run_cycles(keeper, chain, 1)
    assert sum(o.status == "confirmed" for o in outs) >= 3
    assert not keeper.executor.tx.paused and keeper.executor.tx.consecutive_failures == 0
    assert not logs.events("sending_paused")
    assert_trustworthy(chain, keeper, logs)


async def test_a_base_fee_that_rises_before_inclusion_is_repriced_not_counted_as_a_failure(chain, make_keeper, logs):
    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__MAX_CONSECUTIVE_FAILURES="1")
    head = await keeper.read_head()  # priced on this block's base fee ...
    chain.call("anvil_setNextBlockBaseFeePerGas", [hex(20 * GWEI)])  # ... the next one is 20 gwei
    outs = await keeper.cycle(head)
    repriced = logs.events("send_repriced")
    assert repriced and all(e["max_fee_gwei"] >= 20 for e in repriced)
    assert sum(o.status == "confirmed" for o in outs) >= 3
    assert not keeper.executor.tx.paused and not logs.events("sending_paused")
    assert_trustworthy(chain, keeper, logs)


async def test_the_pause_after_repeated_failures_lifts_itself_after_the_cooldown(chain, make_keeper, logs):
    from keeper.types import TxPlan

    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__MAX_CONSECUTIVE_FAILURES="2",
                               KEEPER_KEEPER__PAUSE_COOLDOWN_S="0.5")
    tm = keeper.executor.tx
    erc20 = abi.load("ERC20")
    bad = TxPlan(to=chain.dep.tokens["USDC"], data=erc20.fn("transfer").encode(chain.dep.depositor, 10**40),
                 gas_limit=100_000)
    for i in range(2):
        t = await tm.send(bad, 100_000, await keeper.read_head(), key=f"bad:{i}")
        await tm.wait([t], 5)
    assert tm.paused and logs.events("sending_paused")
    from keeper.execution.txmanager import SendRefused

    with pytest.raises(SendRefused):
        await tm.send(TxPlan(to=KEEPER, data=b"", gas_limit=21_000), 21_000, await keeper.read_head(), key="ok:0")
    await asyncio.sleep(0.6)
    t = await tm.send(TxPlan(to=KEEPER, data=b"", gas_limit=21_000), 21_000, await keeper.read_head(), key="ok:1")
    await tm.wait([t], 5)
    assert t.status == "mined" and not tm.paused
    assert logs.events("sending_resumed")
    assert_trustworthy(chain, keeper, logs, allow_reverted=True)


# -- the nonce: others on the key, a competitor, reorgs --------------------------------------
async def test_an_external_transaction_on_the_keepers_nonce_is_seen_and_later_sends_are_not_taken_for_it(
        chain, make_keeper, logs):
    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
    chain.call("evm_setAutomine", [False])
    try:
        await keeper.cycle(await keeper.read_head())
        sent = sorted(keeper.executor.tx.in_flight(), key=lambda t: t.nonce)
        assert len(sent) >= 3
        victim = sent[0]
        # someone else with the key replaces the first one in the pool (same nonce, higher fees)
        chain.call("anvil_impersonateAccount", [KEEPER])
        chain.call("eth_sendTransaction", [{"from": KEEPER, "to": KEEPER, "value": "0x0", "nonce": hex(victim.nonce),
                                            "gas": hex(21_000), "maxFeePerGas": hex(50 * GWEI),
                                            "maxPriorityFeePerGas": hex(10 * GWEI)}])
        chain.call("evm_mine")
        outs = await run_cycles(keeper, chain, 2)
    finally:
        chain.call("evm_setAutomine", [True])
    dropped = logs.events("tx_dropped")
    assert [e["intent"] for e in dropped] == [victim.key]
    assert dropped[0]["reason"] == "nonce_used_by_another_transaction"
    confirmed = {o.opp.key for o in outs if o.status == "confirmed"}
    assert {t.key for t in sent[1:]} <= confirmed  # mined right behind it: not taken for "someone else"
    assert_trustworthy(chain, keeper, logs)


async def test_a_competitor_landing_first_in_the_same_block_costs_at_most_one_send(chain, make_keeper, logs):
    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
    start = chain.block_number()
    chain.call("evm_setAutomine", [False])
    try:
        await keeper.cycle(await keeper.read_head())
        t = sorted(keeper.executor.tx.in_flight(), key=lambda t: t.nonce)[0]
        victim = "0x" + t.plan.data[4 + 64 + 12:4 + 96].hex()
        coll, debt = "0x" + t.plan.data[4 + 12:4 + 32].hex(), "0x" + t.plan.data[4 + 44:4 + 64].hex()
        rival = "0x000000000000000000000000000000000000c0DE"
        chain.rival_liquidates(rival, coll, debt, victim)
        chain.call("evm_mine")  # the rival first (higher tip), the keeper's right behind it
        await run_cycles(keeper, chain, 3)
    finally:
        chain.call("evm_setAutomine", [True])
    events = liquidations(chain, start + 1)
    per_user = Counter((e["user"].lower(), e["liquidator"].lower()) for e in events)
    assert per_user[(victim.lower(), rival.lower())] == 1
    assert per_user[(victim.lower(), KEEPER.lower())] <= 1  # at most the one send (it may still have paid)
    reported = [e for e in logs.events() if e.get("account", "").lower() == victim.lower()
                and e["event"] in ("liquidation_confirmed", "liquidation_failed")]
    assert len(reported) == 1
    assert_trustworthy(chain, keeper, logs, allow_reverted=True)


async def test_losing_races_does_not_pause_sending_but_a_real_failure_does(chain, make_keeper, logs):
    """With max_consecutive_failures = 1: the keeper's liquidation reverts because a competitor
    liquidated the account first in the same block (a lost race: the call succeeds against the
    state before that block) and sending goes on; a send that reverts against that state too
    still pauses it."""
    from keeper.types import TxPlan

    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1",
                               KEEPER_KEEPER__MAX_CONSECUTIVE_FAILURES="1")
    tm = keeper.executor.tx
    chain.call("evm_setAutomine", [False])
    try:
        await keeper.cycle(await keeper.read_head())
        t = sorted(tm.in_flight(), key=lambda t: t.nonce)[0]
        victim = "0x" + t.plan.data[4 + 64 + 12:4 + 96].hex()
        coll, debt = "0x" + t.plan.data[4 + 12:4 + 32].hex(), "0x" + t.plan.data[4 + 44:4 + 64].hex()
        chain.rival_liquidates("0x000000000000000000000000000000000000c0DE", coll, debt, victim)
        chain.call("evm_mine")  # the rival first (higher tip), the keeper's right behind it
        await run_cycles(keeper, chain, 2)
    finally:
        chain.call("evm_setAutomine", [True])
    rc = chain.call("eth_getTransactionReceipt", [t.mined_hash])
    assert rc["status"] == "0x0"  # ours reverted: the rival had taken it
    lost = logs.events("lost_race")
    assert [e["intent"] for e in lost] == [t.key] and tm.lost_races == 1
    assert not tm.paused and not logs.events("sending_paused")
    bad = TxPlan(to=chain.dep.tokens["USDC"], data=abi.load("ERC20").fn("transfer").encode(chain.dep.depositor, 10**40),
                 gas_limit=100_000)
    sent = await tm.send(bad, 100_000, await keeper.read_head(), key="bad:0")
    await tm.wait([sent], 5)
    assert tm.paused and len(logs.events("sending_paused")) == 1
    assert_trustworthy(chain, keeper, logs, allow_reverted=True)


async def land_in_one_block(keeper, chain) -> dict[str, str]:
    """With automine off: one cycle sends, one block mines them all, the next cycle confirms;
    returns intent key -> mined hash (at least 3 of them)."""
    await keeper.cycle(await keeper.read_head())
    chain.call("evm_mine")  # all of them in one block
    outs = await keeper.cycle(await keeper.read_head())
    landed = {o.opp.key: o.tx_hash for o in outs if o.status == "confirmed"}
    assert len(landed) >= 3
    return landed


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_a_liquidation_reorged_out_is_tracked_again_and_lands_once(chain, make_keeper, logs, depth):
    chain.shock("WETH", -12)
    start = chain.block_number()
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
    chain.call("evm_setAutomine", [False])
    try:
        landed = await land_in_one_block(keeper, chain)
        for _ in range(depth - 1):
            chain.call("evm_mine")
        chain.call("anvil_reorg", [depth, []])  # the blocks down to theirs are replaced by empty ones
        assert all(chain.call("eth_getTransactionReceipt", [h]) is None for h in landed.values())
        await run_cycles(keeper, chain, 3)
    finally:
        chain.call("evm_setAutomine", [True])
    assert len(logs.events("chain_reorg")) >= 1
    reorged = {e["intent"] for e in logs.events("tx_reorged_out")}
    assert reorged == set(landed)
    assert {e["intent"] for e in logs.events("tx_rebroadcast")} == set(landed)
    # back on chain: each as the very same transaction, once
    for key, h in landed.items():
        assert chain.call("eth_getTransactionReceipt", [h])["status"] == "0x1"
    users = Counter(e["user"].lower() for e in liquidations(chain, start + 1))
    assert all(n == 1 for n in users.values()) and len(users) == len(landed)
    assert_trustworthy(chain, keeper, logs)


async def test_with_three_confirmations_a_send_reorged_out_two_deep_is_tracked_again_and_lands_once(
        chain, make_keeper, logs):
    """confirmations = 3: the liquidations are mined and 2 deep (not final, their accounts in
    flight) when a 2-block reorg takes their block away. They go back in flight (never
    "final", never forgotten), are rebroadcast as the very same transactions and land once;
    nothing is sent again for those accounts meanwhile."""
    chain.shock("WETH", -12)
    start = chain.block_number()
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__CONFIRMATIONS="3", KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
    chain.call("evm_setAutomine", [False])
    try:
        await keeper.cycle(await keeper.read_head())
        chain.call("evm_mine")  # all in one block: 1 deep
        outs = await keeper.cycle(await keeper.read_head())
        landed = {o.opp.key: o.tx_hash for o in outs if o.status == "confirmed"}
        assert len(landed) >= 3
        chain.call("evm_mine")  # 2 deep of 3
        outs = await keeper.cycle(await keeper.read_head())
        assert set(landed) <= keeper.executor.tx.in_flight_keys()
        assert not [o for o in outs if o.opp.key in landed and o.status != "skipped"]
        assert not [r for r in journal_records(Path(keeper.executor.tx.journal.path)) if r["t"] == "final"]
        chain.call("anvil_reorg", [2, []])  # their block and the one on it replaced by empty ones
        assert all(chain.call("eth_getTransactionReceipt", [h]) is None for h in landed.values())
        outs = await run_cycles(keeper, chain, 5)
    finally:
        chain.call("evm_setAutomine", [True])
    assert logs.events("chain_reorg")
    reorged = logs.events("tx_reorged_out")
    assert {e["intent"] for e in reorged} == set(landed) and {e["was"] for e in reorged} == {"mined"}
    assert {e["intent"] for e in logs.events("tx_rebroadcast")} == set(landed)
    for h in landed.values():  # back on chain as the very same transactions
        assert chain.call("eth_getTransactionReceipt", [h])["status"] == "0x1"
    # reported once more each (the receipt moved) but never sent again
    assert len(logs.events("liquidation_sent")) == len(landed)
    assert not [o for o in outs if o.opp.key in landed and o.status not in ("skipped", "confirmed")]
    users = Counter(e["user"].lower() for e in liquidations(chain, start + 1))
    assert len(users) == len(landed) and set(users.values()) == {1}
    assert not (set(landed) & keeper.executor.tx.in_flight_keys())  # final again once 3 deep
    summary = assert_trustworthy(chain, keeper, logs)
    assert sum(rc is not None for rc in summary["mined"].values()) == len(landed)


async def test_a_mined_but_not_final_send_keeps_its_account_in_flight(chain, make_keeper, logs):
    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__CONFIRMATIONS="3", KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
    chain.call("evm_setAutomine", [False])
    try:
        await keeper.cycle(await keeper.read_head())
        chain.call("evm_mine")  # all in one block
        outs = await keeper.cycle(await keeper.read_head())
        landed = {o.opp.key for o in outs if o.status == "confirmed"}
        assert len(landed) >= 3 and landed <= keeper.executor.in_flight  # 1 deep of 3
        chain.call("evm_mine")
        outs = await keeper.cycle(await keeper.read_head())
        assert landed <= keeper.executor.in_flight  # 2 deep of 3: not sent again
        assert not [o for o in outs if o.opp.key in landed and o.status != "skipped"]
        chain.call("evm_mine")
        await keeper.cycle(await keeper.read_head())
        assert not (landed & keeper.executor.tx.in_flight_keys())  # 3 deep: final
    finally:
        chain.call("evm_setAutomine", [True])
    assert_trustworthy(chain, keeper, logs)


# -- outages, slow nodes, stopping ------------------------------------------------------------
async def test_an_rpc_outage_is_logged_retried_and_the_keeper_recovers_by_itself(chain, make_keeper, logs):
    async with FaultProxy(chain.url) as proxy:
        keeper = await make_keeper(only=AAVE, KEEPER_RPC_URL=proxy.url, KEEPER_CHAIN__POLL_INTERVAL_S="0.05",
                                   KEEPER_CHAIN__RPC_TIMEOUT_S="0.5", KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.3")
        task = asyncio.create_task(keeper.run())
        await asyncio.sleep(0.3)
        proxy.down = True
        chain.shock("WETH", -12)  # the market moves during the outage
        await asyncio.sleep(20)
        proxy.down = False
        for _ in range(400):
            if logs.events("liquidation_confirmed"):
                break
            await asyncio.sleep(0.1)
        keeper.stop()
        await asyncio.wait_for(task, 10)
    errors = logs.events("rpc_error")
    assert len(errors) >= 3 and all(e["retry_in_s"] <= 30 for e in errors)
    assert len(logs.events("rpc_recovered")) == 1
    assert logs.events("liquidation_confirmed"), "the keeper went on after the outage"
    assert_trustworthy(chain, keeper, logs)


async def test_a_slow_rpc_never_piles_up_cycles_and_a_stop_is_prompt(chain, make_keeper, logs):
    chain.shock("WETH", -12)
    async with FaultProxy(chain.url) as proxy:
        keeper = await make_keeper(only=AAVE, KEEPER_RPC_URL=proxy.url, KEEPER_CHAIN__POLL_INTERVAL_S="0.05")
        proxy.delay_s = (2, 5)
        running = 0
        most = 0
        real_cycle = keeper.cycle

        async def counted(head, background=False):
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                return await real_cycle(head, background)
            finally:
                running -= 1

        keeper.cycle = counted
        task = asyncio.create_task(keeper.run())
        tasks_seen = []
        rss = [rss_kib()]
        t_start = time.monotonic()
        first_confirmed_s = first_sent_s = None
        # at least 12 s of a slow node; then until a liquidation is confirmed (bounded: 45 s)
        for i in range(45):
            chain.call("evm_mine")
            await asyncio.sleep(1)
            tasks_seen.append(len(asyncio.all_tasks()))
            rss.append(rss_kib())
            if first_sent_s is None and logs.events("liquidation_sent"):
                first_sent_s = time.monotonic() - t_start
            if first_confirmed_s is None and logs.events("liquidation_confirmed"):
                first_confirmed_s = time.monotonic() - t_start
            if i >= 11 and first_confirmed_s is not None:
                break
        print(f"slow rpc: first sent after {first_sent_s} s, first confirmed after {first_confirmed_s} s, "
              f"rss {rss[0]}..{max(rss)} KiB, tasks {tasks_seen}")
        sent_at_stop = len(logs.events("liquidation_sent"))
        signed_at_stop = sum(r["t"] == "signed" for r in journal_records(Path(keeper.executor.tx.journal.path)))
        t0 = time.monotonic()
        keeper.stop()
        await asyncio.wait_for(task, 15)
        stopped_in = time.monotonic() - t0
    assert most == 1  # one cycle at a time, however slow the node
    # no pile-up of tasks: a cycle's concurrent reads (each request also a task of the
    # in-process proxy), the pending-update watcher and the reactions beside the loop, and no
    # more however long the node keeps being slow
    # (up to ~8 reads of a cycle in flight at once, two tasks each with the in-process proxy)
    assert max(tasks_seen) <= 48, tasks_seen
    # progress however slow the node: a liquidation is sent and confirmed (it was "nothing
    # confirmed in 75 s" when a cycle waited for its sends)
    assert first_sent_s is not None and first_confirmed_s is not None, (first_sent_s, first_confirmed_s)
    assert first_confirmed_s < 45
    # stable memory: the process grows by less than 64 MiB over the run (RSS, sampled every second),
    # and the second half of the run adds little to the first
    assert max(rss) - rss[0] < 64 * 1024, rss
    half = len(rss) // 2
    assert max(rss[half:]) - max(rss[:half]) < 16 * 1024, rss
    assert stopped_in < 10
    # nothing new is signed after the stop
    assert len(logs.events("liquidation_sent")) == sent_at_stop
    assert sum(r["t"] == "signed" for r in journal_records(Path(keeper.executor.tx.journal.path))) == signed_at_stop
    assert_trustworthy(chain, keeper, logs)


async def test_a_chain_that_goes_back_resyncs_the_nonce_and_sends_nothing_stale_or_twice(make_keeper, logs, tmp_path):
    """anvil restarted from its state cache under a running keeper: the liquidations it had
    landed are gone, and so is the price drop that made them pay."""
    from keeper.devnet import free_port, shock, start_devnet

    from .conftest import N_BORROWERS, Chain

    port = free_port()
    node, dep = start_devnet(port=port, n_borrowers=N_BORROWERS, log_path=tmp_path / "anvil-1.log")
    try:
        first = Chain(node.url, dep)
        base_nonce = first.nonce(KEEPER)
        shock(node.url, dep, "WETH", -12)
        keeper = await make_keeper(only=AAVE, KEEPER_RPC_URL=node.url, KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.3")
        outs = await keeper.cycle(await keeper.read_head())
        landed = [o for o in outs if o.status == "confirmed"]
        assert len(landed) >= 3 and first.nonce(KEEPER) == base_nonce + len(landed)
    finally:
        node.stop()
    node, dep = start_devnet(port=port, n_borrowers=N_BORROWERS, log_path=tmp_path / "anvil-2.log")
    try:
        again = Chain(node.url, dep)
        assert again.nonce(KEEPER) == base_nonce
        again.call("evm_mine")
        await run_cycles(keeper, again, 2)
        assert logs.events("chain_went_back")
        # the old sends would revert on this chain: none is sent again, none is cancelled
        assert again.nonce(KEEPER) == base_nonce
        assert {e["reason"] for e in logs.events("tx_dropped")} == {"would_revert_not_in_pool"}
        assert not keeper.executor.tx.in_flight() and keeper.executor.tx.nonce == base_nonce
        # the price drops again on this chain: new sends start at the node's nonce, no gap
        start = again.block_number()
        shock(node.url, dep, "WETH", -12)
        outs = await run_cycles(keeper, again, 2)
        confirmed = [o for o in outs if o.status == "confirmed"]
        assert len(confirmed) >= 3
        assert again.nonce(KEEPER) == base_nonce + len(confirmed)
        assert not again.call("txpool_content")["queued"]
        users = Counter(e["user"].lower() for e in liquidations(again, start + 1))
        assert all(n == 1 for n in users.values()) and len(users) == len(confirmed)
        # the shared per-intent check on the chain as it is now: the first chain's intents have
        # nothing on it, every new intent one successful transaction, no account two open intents
        summary = assert_trustworthy(again, keeper, logs)
        on_chain = [rc for rc in summary["mined"].values() if rc is not None]
        assert len(on_chain) == len(confirmed) and {rc["status"] for rc in on_chain} == {"0x1"}
        dropped = {r["id"] for r in summary["records"] if r["t"] == "dropped"}
        assert {o.tx_hash for o in landed} <= {h for r in summary["records"] if r["t"] == "signed"
                                               and r["id"] in dropped for h in [r["hash"]]}
    finally:
        node.stop()


async def test_sigterm_during_a_slow_cycle_stops_at_once_and_sends_nothing_after(chain, tmp_path):
    import signal
    import sys

    from .conftest import DEVNET_CONFIG, REPO, keeper_env, only_env

    chain.shock("WETH", -12)
    journal = tmp_path / "journal.jsonl"
    async with FaultProxy(chain.url) as proxy:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
        env.update(keeper_env(chain, KEEPER_RPC_URL=proxy.url, KEEPER_KEEPER__JOURNAL=str(journal),
                              KEEPER_PROTOCOLS__0__ROUTES='["inventory"]', **only_env(AAVE)))
        p = await asyncio.create_subprocess_exec(sys.executable, "-m", "keeper", "--json-logs", "run", "--config",
                                                 str(DEVNET_CONFIG), cwd=REPO, env=env,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        lines: list[str] = []
        assert p.stdout is not None
        while True:
            line = (await asyncio.wait_for(p.stdout.readline(), 60)).decode()
            assert line, "".join(lines)
            lines.append(line)
            if '"keeper_started"' in line:
                break
        proxy.delay_s = (2, 5)  # now every call takes 2-5 s: the first cycle is slow
        await asyncio.sleep(3)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(p.communicate(), 30)
        took = time.monotonic() - t0
    out = "".join(lines) + rest.decode()
    events = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    names = [e["event"] for e in events]
    assert p.returncode == 0, out[-2000:]
    assert "stopping" in names
    after = names[names.index("stopping"):]
    assert "liquidation_sent" not in after and "tx_replaced" not in after
    assert took < 15  # not a whole slow cycle of 2-5 s calls
    assert_clean(out)  # no traceback, no key (whole or its first half), no RPC token
    signed = [r for r in journal_records(journal) if r["t"] == "signed"] if journal.exists() else []
    assert len(signed) == sum(n == "liquidation_sent" for n in names)


async def test_in_relay_mode_a_nonce_resync_counts_the_private_transactions_the_node_cannot_see(
        chain, make_keeper, logs, monkeypatch):
    from aiohttp import web
    from eth_account import Account

    from .faultproxy import served

    held: list[str] = []

    async def relay(request: web.Request) -> web.Response:  # accepts bundles, keeps them private
        body = await request.json()
        held.extend(body["params"][0]["txs"])
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": {"bundleHash": "0x" + "00" * 32}})

    async with served(relay) as relay_url:
        chain.shock("WETH", -12)
        monkeypatch.setenv("KEEPER_RELAY_AUTH_KEY", Account.create().key.hex())
        keeper = await make_keeper(only=AAVE, KEEPER_RELAY__URLS=f'["{relay_url}"]',
                                   KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
        base = chain.nonce(KEEPER)
        await keeper.cycle(await keeper.read_head())
        sent = keeper.executor.tx.in_flight()
        assert len(sent) >= 3 and held
        await keeper.executor.on_chain_change()  # e.g. after a reorg: resync from the node
        assert keeper.executor.tx.nonce == base + len(sent)  # not the public node's count
        chain.call("evm_mine")
        before = len(held)
        await keeper.cycle(await keeper.read_head())  # nothing new for the same accounts
        assert len(keeper.executor.tx.in_flight()) == len(sent)
        assert not [e for e in logs.events("liquidation_sent")[len(sent):]]
        assert len(held) >= before
    # one intent per account, nothing on chain that is not an intent's; neither key in the output
    assert_trustworthy(chain, keeper, logs, secrets=(os.environ["KEEPER_RELAY_AUTH_KEY"],))


async def test_the_heartbeat_says_head_lag_tracked_accounts_and_cycle_time(chain, make_keeper, logs):
    keeper = await make_keeper(dry_run=True, KEEPER_KEEPER__HEARTBEAT_BLOCKS="1", KEEPER_CHAIN__POLL_INTERVAL_S="0.05")
    task = asyncio.create_task(keeper.run())
    for _ in range(3):
        await asyncio.sleep(0.3)
        chain.call("evm_mine")
    await asyncio.sleep(0.3)
    keeper.stop()
    await asyncio.wait_for(task, 10)
    beats = logs.events("heartbeat")
    assert len(beats) >= 3
    b = beats[-1]
    assert b["block"] == chain.block_number() and b["lag_s"] >= 0 and b["cycle_s"] > 0
    assert set(b["tracked"]) == set(keeper.adapters) and b["tracked"]["aave-v3-devnet"] == 40
    assert b["in_flight"] == 0 and b["paused"] is False
    assert_clean(logs.text)


async def test_a_torn_journal_tail_is_cut_on_restart_and_nothing_in_flight_is_sent_again(chain, make_keeper, logs,
                                                                                          tmp_path):
    chain.shock("WETH", -12)
    journal = tmp_path / "torn.jsonl"
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__JOURNAL=str(journal), KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
    chain.call("evm_setAutomine", [False])
    try:
        await keeper.cycle(await keeper.read_head())
        sent = {t.key for t in keeper.executor.tx.in_flight()}
        assert len(sent) >= 3
        await keeper.close()  # the process dies here ...
        with open(journal, "ab") as fh:  # ... in the middle of writing a record
            fh.write(b'{"t":"mined","id":"abc","hash":"0x12')
        again = await make_keeper(only=AAVE, KEEPER_KEEPER__JOURNAL=str(journal),
                                  KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1")
        assert logs.events("journal_repaired")
        assert {e["intent"] for e in logs.events("in_flight_restored")} == sent
        outs = await run_cycles(again, chain, 2)
    finally:
        chain.call("evm_setAutomine", [True])
    assert not [o for o in outs if o.opp.key in sent and o.status not in ("skipped",)]
    assert len(logs.events("liquidation_sent")) == len(sent)
    restored = [e for e in logs.events("liquidation_confirmed") if e.get("restored")]
    assert {f"{e['protocol']}:{e['account']}" for e in restored} == sent  # reported after the restart
    assert all(e["collateral_received"] > 0 for e in restored)
    assert journal.read_bytes().endswith(b"\n")
    assert_trustworthy(chain, again, logs)


async def test_a_journal_that_cannot_be_written_stops_the_send_before_the_broadcast(chain, make_keeper, logs):
    from keeper.execution.journal import JournalWriteError

    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE)
    journal = keeper.executor.tx.journal
    real = journal.append

    def full_disk(rec):
        if rec["t"] == "signed":
            raise JournalWriteError("keeper.journal: cannot write: No space left on device")
        return real(rec)

    journal.append = full_disk
    nonce = chain.nonce(KEEPER)
    outs = await keeper.cycle(await keeper.read_head())
    assert outs and {o.reason for o in outs} <= {"journal_unwritable", "paused"}
    assert chain.nonce(KEEPER) == nonce and not keeper.executor.tx.in_flight()
    assert keeper.executor.tx.nonce == nonce
    journal.append = real  # space again: the keeper sends (after the pause, if it paused)
    keeper.executor.tx.paused = False
    outs = await keeper.cycle(await keeper.read_head())
    assert sum(o.status == "confirmed" for o in outs) >= 3
    assert chain.nonce(KEEPER) == nonce + sum(o.status == "confirmed" for o in outs)
    assert_clean(logs.text)
