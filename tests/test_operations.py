"""The operator's record on the devnet: `keeper report` after live runs and after the demo,
a competitor landing first classed `raced`, the store surviving kill -9 of the keeper."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

from keeper import abi

from .conftest import DEVNET_CONFIG, KEEPER, REPO, keeper_env, only_env

AAVE = "aave-v3-devnet"
POOL = abi.load("AavePool")
ERC20 = abi.load("ERC20")
GWEI = 10**9
pytestmark = pytest.mark.asyncio(loop_scope="session")


async def report(store: Path, *extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    p = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "keeper", "report", "--config",
                                                 str(DEVNET_CONFIG), "--store", str(store), "--json", *extra],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


async def test_report_after_a_live_run_matches_the_chain_and_lists_the_skips(chain, make_keeper, tmp_path):
    chain.shock("WETH", -12)
    store = tmp_path / "store.sqlite"
    before = {s: chain.balance(s, KEEPER) for s in chain.dep.tokens}
    # a profit floor that the smallest liquidations do not reach: those are skipped, with the reason
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__STORE_PATH=str(store), KEEPER_KEEPER__MIN_PROFIT_USD="600")
    outs = await keeper.cycle(await keeper.read_head())
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert confirmed
    keeper.store.flush()
    doc = await report(store)
    actions = doc["actions"]
    assert len(actions) == len(confirmed) and all(a["status"] == "included" for a in actions)
    # each action's realized profit is the keeper's balance change, token by token
    gained: dict[str, int] = defaultdict(int)
    for a in actions:
        gained[a["realized"]["debt_asset"].lower()] += a["realized"]["profit"]
    for sym, token in chain.dep.tokens.items():
        assert chain.balance(sym, KEEPER) - before[sym] == gained[token.lower()], sym
    by_tx = {o.tx_hash: o for o in confirmed}
    for a in actions:
        assert a["realized_usd_e8"] == keeper.realized_profit_usd_e8(by_tx[a["tx_hash"]])
    assert {"below_min_profit"} <= {s["reason"] for s in doc["skips"]}
    assert doc["summary"]["actions"]["included"] == len(confirmed)


async def test_a_competitor_landing_first_is_reported_as_raced_with_the_competitor(chain, make_keeper, tmp_path,
                                                                                  monkeypatch):
    from .faultproxy import served
    from .test_server import Webhook

    chain.shock("WETH", -12)
    store = tmp_path / "store.sqlite"
    hook = Webhook()
    async with served(hook.handle) as hook_url:
        monkeypatch.setenv("KEEPER_TEST_WEBHOOK", hook_url)
        keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__STORE_PATH=str(store),
                                   KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1", KEEPER_ALERTS__WEBHOOK_URL_ENV="KEEPER_TEST_WEBHOOK",
                                   KEEPER_ALERTS__RACED_MIN_USD="0")
        victim, first_block = await _race(chain, keeper)
        await keeper.alerts.drain()
    # the operator was told, with the competitor
    raced_alerts = [b for b in hook.bodies if b["kind"] == "raced_miss"]
    assert len(raced_alerts) == 1 and "c0de" in raced_alerts[0]["message"].lower()
    keeper.store.flush()
    doc = await report(store)
    raced = [m for m in doc["misses"] if m["klass"] == "raced"]
    assert len(raced) == 1, doc["misses"]
    m = raced[0]
    assert m["account"].lower() == victim.lower() and m["liquidator"].lower() == RIVAL.lower()
    why = m["why"]
    assert why["competitor"].lower() == RIVAL.lower() and why["blocks_behind"] == m["block"] - first_block
    # the keeper's own liquidations of the other accounts are "ours"
    assert doc["summary"]["classes"]["ours"] >= 1


RIVAL = "0x000000000000000000000000000000000000c0DE"


async def _race(chain, keeper) -> tuple[str, int]:
    """The keeper sends (automine off); a competitor liquidates its first account with a higher
    tip; the block is mined; the keeper follows two more blocks. Returns (that account, the
    block the keeper first saw it in)."""
    chain.call("evm_setAutomine", [False])
    try:
        first = await keeper.read_head()
        await keeper.cycle(first)
        t = sorted(keeper.executor.tx.in_flight(), key=lambda t: t.nonce)[0]
        d = t.plan.data  # liquidateWithInventory(collateral, debt, user, ...)
        coll, debt, victim = ("0x" + d[4 + 32 * i + 12:4 + 32 * (i + 1)].hex() for i in range(3))
        chain.rival_liquidates(RIVAL, coll, debt, victim)
        chain.call("evm_mine")  # the rival first (higher tip), the keeper's right behind it
        for _ in range(2):
            await keeper.cycle(await keeper.read_head())
            chain.call("evm_mine")
    finally:
        chain.call("evm_setAutomine", [True])
    return victim, first.number


async def test_the_demo_leaves_a_report_of_each_action_and_the_skips(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    p = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "keeper", "demo", "--port", "0"], cwd=REPO,
                                env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    confirmed = int(p.stdout.split(" actions confirmed")[0].rsplit("\n", 1)[-1])
    doc = await report(REPO / ".devnet" / "demo-store.sqlite")
    included = [a for a in doc["actions"] if a["status"] == "included"]
    assert len(included) == confirmed
    # each realized figure is what the demo's summary printed (the same receipts)
    printed = sorted(round(float(line.split()[-1].replace(",", "")), 2) for line in p.stdout.splitlines()
                     if line.startswith(tuple(f"{p['name']} " for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"])))
    assert sorted(round(a["realized_usd_e8"] / 1e8, 2) for a in included) == printed
    assert "skips" in doc and "by_protocol" in doc


async def test_kill_9_of_the_keeper_loses_no_record_it_reported_written(chain, tmp_path):
    """A live keeper daemon is killed right after the store said it had written rows: a
    restart's report has every one of them."""
    from keeper.store import StoreReader

    chain.shock("WETH", -12)
    store = tmp_path / "store.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    env.update(keeper_env(chain, KEEPER_KEEPER__JOURNAL=str(tmp_path / "journal.jsonl"),
                          KEEPER_KEEPER__STORE_PATH=str(store), **only_env(AAVE)))
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "keeper", "--json-logs", "run", "--config",
                                                str(DEVNET_CONFIG), cwd=REPO, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    written = 0
    try:
        async def until_written() -> None:
            nonlocal written
            assert proc.stdout is not None
            async for line in proc.stdout:
                if b'"store_flushed"' in line:
                    written = json.loads(line)["written"]
                    if written > 0:
                        return
        await asyncio.wait_for(until_written(), 60)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert written > 0
    r = StoreReader(store)
    try:
        rows = sum(r._q(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"]
                   for t in ("seen", "decision", "tx", "outcome", "chain_liquidation"))
    finally:
        r.close()
    assert rows >= written
