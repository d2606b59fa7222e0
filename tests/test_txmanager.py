"""The transaction manager on the devnet: stuck transactions, competitors, nonces under
induced failures, private relays, restarts after kill -9, safety limits."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from structlog.testing import capture_logs

from keeper import abi, log as logmod
from keeper.config import load_config, load_signer
from keeper.execution.journal import Journal
from keeper.execution.relay import flashbots_signature
from keeper.execution.txmanager import SendRefused, TxManager
from keeper.rpc import Rpc
from keeper.types import TxPlan

from .conftest import DEVNET_CONFIG, KEEPER, KEEPER_KEY, REPO, keeper_env, only_env
from .faultproxy import JsonLogs, LocalRelay, assert_clean, assert_one_transaction_per_intent, assert_trustworthy

AAVE = "aave-v3-devnet"
pytestmark = pytest.mark.asyncio(loop_scope="session")
ERC20 = abi.load("ERC20")
POOL = abi.load("AavePool")
GWEI = 10**9


def mined_txs(chain, block: int) -> list[str]:
    return chain.call("eth_getBlockByNumber", [hex(block), False])["transactions"]


async def test_a_stuck_transaction_is_replaced_on_the_same_nonce_and_lands(chain, make_keeper):
    logs = JsonLogs()  # the keeper's real output: checked for tracebacks and secrets at the end
    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__REPLACE_AFTER_BLOCKS="2", KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.2")
    chain.call("evm_setAutomine", [False])
    try:
        await keeper.cycle(await keeper.read_head())
        sent = list(keeper.executor.tx.pending.values())
        assert len(sent) >= 3 and all(t.status == "pending" for t in sent)
        first_nonce = min(t.nonce for t in sent)
        # the base fee jumps: everything the keeper sent is under-priced and stays out
        chain.call("anvil_setNextBlockBaseFeePerGas", [hex(60 * GWEI)])
        chain.call("evm_mine")
        assert mined_txs(chain, chain.block_number()) == []
        outs = []
        for _ in range(2):
            outs += await keeper.cycle(await keeper.read_head())
            chain.call("evm_mine")
        outs += await keeper.cycle(await keeper.read_head())
        replaced = logs.events("tx_replaced")
        assert len(replaced) >= len(sent)
        confirmed = [o for o in outs if o.status == "confirmed"]
        assert len(confirmed) == len(sent)
        for t in sent:
            assert len(t.hashes) >= 2 and t.mined_hash == t.hashes[-1] != t.hashes[0]
            rc = chain.call("eth_getTransactionReceipt", [t.mined_hash])
            tx = chain.call("eth_getTransactionByHash", [t.mined_hash])
            assert int(tx["nonce"], 16) == t.nonce and rc["status"] == "0x1"
            assert int(tx["maxFeePerGas"], 16) * 1000 >= t.max_fee * 1000 >= 1125 * sent[0].max_fee // 1000 * 0
        nonces = sorted(t.nonce for t in sent)
        assert nonces == list(range(first_nonce, first_nonce + len(sent)))
        assert chain.nonce(KEEPER) == first_nonce + len(sent)
        # the store has each intent once, with its replacements and the hash that was mined
        keeper.store.flush()
        actions = {a["intent_id"]: a for a in keeper.store.actions()}
        for t in sent:
            a = actions[t.id]
            assert a["status"] == "included" and a["replacements"] == len(t.hashes) - 1 and a["tx_hash"] == t.mined_hash
    finally:
        chain.call("evm_setAutomine", [True])
    # one transaction on chain per intent (the replaced ones never), no traceback, no key
    summary = assert_trustworthy(chain, keeper, logs)
    assert sum(rc is not None for rc in summary["mined"].values()) == len(sent)


async def test_when_a_competitor_liquidates_first_the_pending_send_is_cancelled(chain, make_keeper):
    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__REPLACE_AFTER_BLOCKS="1", KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.2")
    eth_before = int(chain.call("eth_getBalance", [KEEPER, "latest"]), 16)
    chain.call("evm_setAutomine", [False])
    try:
        await keeper.cycle(await keeper.read_head())
        sent = {t.key.split(":")[1]: t for t in keeper.executor.tx.pending.values()}
        victim = sorted(sent)[0]
        t = sent[victim]
        # under-priced: the keeper's transactions stay out of the next block ...
        chain.call("anvil_setNextBlockBaseFeePerGas", [hex(60 * GWEI)])
        # ... and a competitor liquidates the same account in it
        rival = "0x000000000000000000000000000000000000c0DE"
        chain.call("anvil_setBalance", [rival, hex(10**21)])
        debt_asset = t.plan.data[4 + 32 + 12:4 + 64]
        usdc = "0x" + debt_asset.hex()
        chain.call("anvil_impersonateAccount", [rival])
        for data in (ERC20.fn("mint(uint256)").encode(10**30), ERC20.fn("approve").encode(chain.dep.pool, 2**256 - 1)):
            chain.call("eth_sendTransaction", [{"from": rival, "to": usdc, "data": "0x" + data.hex(),
                                                "gas": hex(200_000), "maxFeePerGas": hex(500 * GWEI),
                                                "maxPriorityFeePerGas": hex(100 * GWEI)}])
        coll = "0x" + t.plan.data[4 + 12:4 + 32].hex()
        liq = POOL.fn("liquidationCall").encode(coll, usdc, victim, 2**256 - 1, False)
        chain.call("eth_sendTransaction", [{"from": rival, "to": chain.dep.pool, "data": "0x" + liq.hex(),
                                            "gas": hex(1_500_000), "maxFeePerGas": hex(500 * GWEI),
                                            "maxPriorityFeePerGas": hex(100 * GWEI)}])
        chain.call("evm_mine")
        with capture_logs() as logs:
            await keeper.cycle(await keeper.read_head())  # re-simulates: the victim's call would revert now
            chain.call("evm_mine")
            outs = await keeper.cycle(await keeper.read_head())
        cancelled = [e for e in logs if e["event"] == "tx_cancelled"]
        assert [e["intent"].split(":")[1] for e in cancelled] == [victim]
        assert t.cancelled and t.status in ("mined", "final")
        tx = chain.call("eth_getTransactionByHash", [t.mined_hash])
        assert tx["to"].lower() == KEEPER.lower() and tx["input"] == "0x"  # the 21,000-gas self-transfer
        assert [o.status for o in outs if o.opp.account.lower() == victim] == ["cancelled"]
        # the victim's liquidation never reached the chain; the others landed
        spent_on_victim = int(chain.call("eth_getTransactionReceipt", [t.mined_hash])["gasUsed"], 16)
        assert spent_on_victim == 21_000  # less than any failed liquidation would have burnt
        assert {o.status for o in outs if o.opp.account.lower() != victim} == {"confirmed"}
        keeper.store.flush()
        statuses = {a["intent_id"]: a["status"] for a in keeper.store.actions()}
        assert statuses[t.id] == "cancelled"
    finally:
        chain.call("evm_setAutomine", [True])
    assert int(chain.call("eth_getBalance", [KEEPER, "latest"]), 16) < eth_before


async def test_fifty_sends_with_induced_failures_leave_no_nonce_gap_and_nothing_sent_twice(chain, tmp_path):
    cfg = load_config(DEVNET_CONFIG, environ={**keeper_env(chain), "KEEPER_KEEPER__REPLACE_AFTER_BLOCKS": "1",
                                              "KEEPER_KEEPER__JOURNAL": str(tmp_path / "j.jsonl"),
                                              "KEEPER_KEEPER__MAX_CONSECUTIVE_FAILURES": "0"})
    rpc = Rpc(chain.url)
    tm = TxManager(rpc, load_signer(cfg.keeper, environ={"KEEPER_PRIVATE_KEY": KEEPER_KEY}), cfg.keeper,
                   Journal(cfg.keeper.journal), logmod.get())
    await tm.start()
    start_nonce = tm.nonce
    usdc = chain.dep.tokens["USDC"]
    ok_plan = TxPlan(to=KEEPER, data=b"", gas_limit=21_000)
    revert_plan = TxPlan(to=usdc, data=ERC20.fn("transfer").encode(chain.dep.depositor, 10**40), gas_limit=100_000)
    external = 0
    intents = []

    async def resimulate(t):  # the plans here are always "still wanted"
        return True

    from keeper.app import Keeper

    reader = Keeper(cfg, dry_run=True)
    chain.call("evm_setAutomine", [False])
    try:
        for i in range(50):
            mode = i % 5
            if mode == 2:  # something else uses the key: our local nonce is now stale
                chain.send_as_pending(KEEPER, KEEPER, b"")
                chain.call("evm_mine")
                external += 1
            head = await reader.read_head()
            t = await tm.send(revert_plan if mode == 1 else ok_plan, 100_000 if mode == 1 else 21_000, head,
                              key=f"intent:{i}")
            intents.append(t)
            if mode == 3:  # the node forgets it
                chain.call("anvil_dropTransaction", [t.latest_hash])
                chain.call("evm_mine")
                for _ in range(2):
                    await tm.on_block(await reader.read_head(), resimulate)
            chain.call("evm_mine")
            await tm.on_block(await reader.read_head(), resimulate)
        for _ in range(3):
            chain.call("evm_mine")
            await tm.on_block(await reader.read_head(), resimulate)
    finally:
        chain.call("evm_setAutomine", [True])
        await reader.close()
    end = chain.nonce(KEEPER)
    assert end == start_nonce + 50 + external  # every nonce used once: no gap
    assert not tm.in_flight()  # final ones stay watched for reorgs, not in flight
    states = tm.journal.states()
    ours = [states[t.id] for t in intents]
    assert all(s.status in ("mined", "final") for s in ours)
    # each intent is on chain exactly once, at its own nonce
    mined_nonces = [int(chain.call("eth_getTransactionByHash", [s.mined_hash])["nonce"], 16) for s in ours]
    assert len(set(mined_nonces)) == 50
    for s in ours:
        others = [h for h in s.hashes if h != s.mined_hash]
        for h in others:
            assert chain.call("eth_getTransactionReceipt", [h]) is None
    statuses = [s.receipt_status for s in ours]
    assert statuses.count(0) == 10 and statuses.count(1) == 40
    await rpc.close()
    tm.close()


async def test_kill_switch_stops_sending_while_the_keeper_keeps_watching(chain, make_keeper, tmp_path):
    chain.shock("WETH", -12)
    stop = tmp_path / "STOP"
    stop.write_text("maintenance")
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__KILL_SWITCH_FILE=str(stop))
    nonce = chain.nonce(KEEPER)
    with capture_logs() as logs:
        outs = await keeper.cycle(await keeper.read_head())
    assert outs and {o.reason for o in outs} == {"kill_switch"} and chain.nonce(KEEPER) == nonce
    assert sum(e["event"] == "opportunity" for e in logs) >= 3  # still watching
    stop.unlink()
    outs = await keeper.cycle(await keeper.read_head())
    assert any(o.status == "confirmed" for o in outs)


async def test_sending_pauses_after_consecutive_failures_and_says_so(chain, tmp_path):
    cfg = load_config(DEVNET_CONFIG, environ={**keeper_env(chain), "KEEPER_KEEPER__JOURNAL": str(tmp_path / "j.jsonl"),
                                              "KEEPER_KEEPER__MAX_CONSECUTIVE_FAILURES": "3"})
    rpc = Rpc(chain.url)
    tm = TxManager(rpc, load_signer(cfg.keeper, environ={"KEEPER_PRIVATE_KEY": KEEPER_KEY}), cfg.keeper,
                   Journal(cfg.keeper.journal), logmod.get())
    await tm.start()
    from keeper.app import Keeper

    reader = Keeper(cfg, dry_run=True)
    bad = TxPlan(to=chain.dep.tokens["USDC"], data=ERC20.fn("transfer").encode(chain.dep.depositor, 10**40),
                 gas_limit=100_000)
    with capture_logs() as logs:
        for i in range(3):
            t = await tm.send(bad, 100_000, await reader.read_head(), key=f"bad:{i}")
            await tm.wait([t], 5)
        with pytest.raises(SendRefused) as refused:
            await tm.send(bad, 100_000, await reader.read_head(), key="bad:3")
    assert refused.value.reason == "paused"
    assert [e["event"] for e in logs].count("sending_paused") == 1
    # a gas budget refuses a send that could exceed it
    tm.paused = False
    tm.consecutive_failures = 0
    object.__setattr__(tm.cfg, "max_gas_spend_wei_per_hour", 1)
    with pytest.raises(SendRefused) as refused:
        await tm.send(bad, 100_000, await reader.read_head(), key="bad:4")
    assert refused.value.reason == "gas_budget"
    await reader.close()
    await rpc.close()
    tm.close()


async def test_private_relay_accepts_only_signed_bundles_and_the_liquidation_lands(chain, make_keeper, monkeypatch):
    from eth_account import Account

    auth = Account.create()
    relay = await LocalRelay(chain.url, auth.address).start()
    url = relay.url
    try:
        # a bundle signed by someone else is refused
        import aiohttp

        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_sendBundle", "params": [{"txs": [], "blockNumber": "0x1"}]})
        async with aiohttp.ClientSession() as s:
            async with s.post(url, data=body, headers={"X-Flashbots-Signature": flashbots_signature(Account.create(), body)}) as r:
                assert r.status == 403
        assert relay.rejected == 1
        chain.shock("WETH", -12)
        monkeypatch.setenv("KEEPER_RELAY_AUTH_KEY", auth.key.hex())
        keeper = await make_keeper(only=AAVE, KEEPER_RELAY__URLS=f'["{url}"]', KEEPER_RELAY__TARGET_BLOCKS="2")
        outs = await keeper.cycle(await keeper.read_head())
        confirmed = [o for o in outs if o.status == "confirmed"]
        assert len(confirmed) >= 3
        assert relay.accepted and relay.rejected == 1
        sent = {raw for b in relay.accepted for raw in b["txs"]}
        for o in confirmed:
            raw = chain.call("eth_getRawTransactionByHash", [o.tx_hash])
            assert raw in sent
    finally:
        await relay.stop()


@pytest.mark.asyncio(loop_scope="session")
async def test_after_kill_9_during_a_send_the_restarted_keeper_does_not_send_again(chain, tmp_path):
    chain.shock("WETH", -12)
    journal = tmp_path / "journal.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    env.update(keeper_env(chain, KEEPER_KEEPER__JOURNAL=str(journal), KEEPER_KEEPER__RECEIPT_TIMEOUT_S="30",
                          KEEPER_PROTOCOLS__0__ROUTES='["inventory"]', **only_env(AAVE)))
    nonce = chain.nonce(KEEPER)
    chain.call("evm_setAutomine", [False])
    try:
        p = subprocess.Popen([sys.executable, "-m", "keeper", "--json-logs", "run", "--config", str(DEVNET_CONFIG)],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        killed_out: list[str] = []
        for line in p.stdout:
            killed_out.append(line)
            if '"liquidation_sent"' in line or time.monotonic() > deadline:
                break
        p.send_signal(signal.SIGKILL)  # mid-flight: sent, not mined, maybe more sends under way
        p.wait(timeout=10)
        killed_out.append(p.stdout.read())  # whatever it wrote before it died
        p.stdout.close()
        killed_text = "".join(killed_out)
        assert '"liquidation_sent"' in killed_text, killed_text[-2000:]
        assert_clean(killed_text)
        pending = chain.call("txpool_content")["pending"].get(KEEPER.lower()) or \
            chain.call("txpool_content")["pending"].get(KEEPER, {})
        in_pool = len(pending)
        assert in_pool >= 1
        records = [json.loads(x) for x in journal.read_text().splitlines()]
        signed = [r for r in records if r["t"] == "signed"]
        assert len(signed) >= in_pool
        # restart once: it must restore what is in flight and not send those again
        env2 = {**env, "KEEPER_KEEPER__RECEIPT_TIMEOUT_S": "0.5"}
        q = subprocess.run([sys.executable, "-m", "keeper", "--json-logs", "run", "--config", str(DEVNET_CONFIG), "--once"],
                           cwd=REPO, env=env2, capture_output=True, text=True, timeout=120)
        assert q.returncode == 0, q.stderr
        assert_clean(q.stdout + q.stderr)  # no traceback, no key in the restarted keeper's output either
        events = [json.loads(x) for x in q.stdout.splitlines() if x.startswith("{")]
        restored = {e["intent"].split(":")[1] for e in events if e["event"] == "in_flight_restored"}
        assert len(restored) == in_pool
        resent = [e for e in events if e["event"] == "liquidation_sent" and e["account"].lower() in restored]
        assert resent == []
        assert {e["account"].lower() for e in events if e["event"] == "skipped" and e.get("reason") == "in_flight"} \
            <= restored
        new_sends = sum(e["event"] == "liquidation_sent" for e in events)
        chain.call("evm_mine")
        assert chain.nonce(KEEPER) == nonce + in_pool + new_sends
        # every account was liquidated exactly once
        logs = chain.call("eth_getLogs", [{"address": chain.dep.pool, "fromBlock": hex(chain.block_number()),
                                           "toBlock": "latest", "topics": [POOL.event("LiquidationCall").topic0]}])
        users = [POOL.event("LiquidationCall").decode(lg)["user"].lower() for lg in logs]
        assert len(users) == len(set(users)) == in_pool + new_sends and restored <= set(users)
        # the journal both processes shared: one transaction on chain per intent, none reverted
        summary = assert_one_transaction_per_intent(chain, journal)
        assert sum(rc is not None for rc in summary["mined"].values()) == in_pool + new_sends
    finally:
        chain.call("evm_setAutomine", [True])
