"""Benchmark: same-block capture of pending oracle updates.

Goal (issue): "same-block capture >= 95% of pending oracle updates that make an account
liquidatable". This measures it on the devnet with the real keeper, live.

What is measured
    For each of --updates pending oracle updates (setAnswer on a devnet SettableAggregator,
    sent to the mempool with automine off): which accounts the update makes liquidatable (S),
    and whether the keeper liquidated every one of them IN THE UPDATE'S OWN BLOCK, in a
    successful transaction placed AFTER the update. An update is "captured" when it is; the
    capture rate is captured / updates with a non-empty S. Also: the keeper's reaction time
    (the update in the node's mempool -> the keeper saw it -> its first liquidation send
    reached the node), and where the accounts it did not take in the same block went (the
    next block, by the keeper's per-block cycle: a same-block miss; or nobody: the cleaner).

How
    - anvil with the cached devnet of N seeded Aave V3 borrowers (keeper.devnet), automine OFF
      for the whole run: the harness mines every block itself (evm_mine), so each update's
      block is exactly [the update, whatever the keeper sent before the mine].
    - keeper: the real one, `python -m keeper --json-logs run --config config/devnet.toml` as a
      subprocess, live (the devnet keeper key, anvil account 1), env overrides only: its RPC and
      websocket (KEEPER_RPC_URL / KEEPER_WS_URL) go through a timestamping TCP relay
      (bench/_harness.py SendRecorder) so the arrival of each of its sends at the node is timed;
      heartbeat every block (to know when it is idle); journal and store in a temp dir; only the
      aave-v3-devnet protocol on (--all-protocols keeps Maker and perps on: their barks/liqui-
      dations are not scored here). Everything else is config/devnet.toml as shipped (health
      "local", routes inventory + flash, pending_poll_interval_s 0.05, min profit $1).
    - Updates: feeds in turn (--feeds, default WETH,WBTC,LINK: a feed no seeded account is
      exposed to is dropped, and said so). Before each update the harness reads every
      borrower's health factor at the current block (getUserAccountData) and again with the
      aggregator's answer overridden 10% lower (eth_call state override of its storage slot:
      nothing is mined, the keeper sees nothing). For an account with collateral in that asset
      and debt in another, HF is linear in the price, so this gives the answer at which each
      account reaches HF 1. The new answer is set half-way between the k-th and the next
      critical answer below the current one (k = --per-update; moved further if two critical
      answers are within 0.1% of each other), so each update makes about k fresh accounts
      liquidatable. S is then read from the chain, not from the model: the accounts with
      getUserAccountData HF < 1 at the pre-update block with the new answer overridden.
    - Each update: wait until the keeper is idle (its heartbeat for the latest block) and the
      mempool is empty; send setAnswer from the feed owner (DEPLOYER, impersonated). Its fees:
      by default left to anvil (maxFeePerGas = next base fee + 1 gwei tip, as
      tests/test_same_block.py sends it); --update-fees wallet: 2 x next base fee + 1 gwei.
      The devnet's base fee sits at its 7 wei floor after a few empty blocks; --base-fee-gwei X
      mines an empty block at X gwei before each update, so the update's block has a base fee
      1/8 lower than the head's, as after any below-target block on a real chain. Then wait until the relay has seen keeper sends naming every account of S
      (plus --settle s for stragglers) or --window s (default 2) have passed since the update
      entered the mempool, whichever is first; then evm_mine (block B). Stopping early when S
      is covered cannot flatter the keeper: it only cuts the wait when everything is in.
    - Classification, from block B's receipts: keeper transactions (from the keeper address;
      it may go through its FlashLiquidator) with LiquidationCall logs, their position
      relative to the update, status. Accounts of S not liquidated in B: the harness waits
      for the keeper's cycle on B (its heartbeat) plus --settle s and mines B+1 ("next
      block": a miss the keeper's per-block path caught one block late), then the cleaner
      (anvil account 4) liquidates anything still liquidatable ("nobody").
      Also checked: accounts with HF < 1 after B that are not in S (should be none).
    - Profitability: every seeded account is $5k-$200k and liquidatable at HF just under 1,
      worth far more than the $1 minimum profit, so S counts in full (strict). The report
      also lists, per account of S the keeper did not take in B, every `skipped` reason it
      logged; an account the keeper never took (neither in B nor B+1) with only
      unprofitable-type reasons would be "not profitable", reported separately (the rate
      `capture_rate_profitable` excludes those accounts), never silently dropped.
    - Between updates (not timed): B+1 as above, the cleaner, then (unless --no-pools) every
      Uniswap pool holding the moved asset is arbitraged to the oracle (keeper.devnet.prices.
      move_pools_to_oracle, with automine on for those few transactions), as the market would
      follow; then the mempool is emptied and the keeper must be idle again. The first update
      is counted like the others (the devnet keeper already holds its approvals).
    - Reaction time per update, three figures: t_mempool = when the harness's
      eth_sendTransaction for the update returned (the node holds it); seen = the keeper's
      `oracle_update_pending` log line (wall clock, converted); first send = the relay's
      arrival time of the keeper's first send of this reaction. Reported: mempool->seen
      (pending-filter polling, 50 ms interval), seen->first send (re-pricing, sizing,
      simulation behind the update, signing), mempool->first send, mempool->last send.

Caveats
    - Ordering is anvil's: pending transactions by fee cap, then arrival. The keeper sends with
      the update's fee cap and a tip no higher than its, so it lands right after. Real block
      builders order by tip and bundles; a public-mempool backrun is then a race with other
      searchers, and the relay path (bundles [update, liquidation]) is NOT exercised here.
    - Local anvil over loopback: no network latency; on a real network the update is
      usually seen later (p2p propagation) and the window before the block closes is whatever
      is left of the slot, not a fixed --window.
    - One keeper, no competitors: a captured update here means the keeper was fast enough and
      right (order, sizing, simulation), not that it would win a race.
    - S comes from getUserAccountData at the pre-update block with the answer overridden: the
      block B itself is one second later (interest). The answer is put half-way between
      critical prices (>= 0.1% apart), far from that effect.
    - 2 cores: the harness, the keeper and anvil share them; the harness does its heavy reads
      (calibration, classification) only while the keeper is idle, never in the timed window.

Usage: python bench/sameblock.py [--borrowers 2000] [--updates 24] [--per-update 2] [--window 2]
                                 [--update-fees anvil|wallet] [--base-fee-gwei X] [--no-pools]
                                 [--json] [--logs DIR]
About 1.5 minutes for 2,000 borrowers and 24 updates (30 s for 200); the first run for a given
N builds and caches the devnet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (  # noqa: E402
    ANSWER_SLOT, CLEANER, GWEI, WAD, DevnetBench, LogTail, enc, keeper_env, log_warnings, machine, only_aave,
    spawn_keeper, start_relay, stop_process, summary_ms, wait_logged, wall,
)

UNPROFITABLE = ("unprofitable", "below_min_profit", "min_profit", "dust")
LIQUIDATION_TOPIC = None  # set in Bench.setup (keeper.abi)


class Bench(DevnetBench):
    strict_health = True  # an eth_call error in a health read fails the run

    def __init__(self, args: argparse.Namespace, node: Any, dep: Any, workdir: Path):
        super().__init__(args, node, dep, workdir)
        self.proc: subprocess.Popen | None = None
        self.tail: LogTail | None = None
        self.keeper = ""
        # wall clock = monotonic + offset (one machine; for the keeper's ISO log timestamps)
        self.wall_offset = time.time() - time.monotonic()

    # -- chain helpers (the rest are DevnetBench's) ---------------------------------------
    async def block_liquidations(self, number: int) -> dict[str, Any]:
        """Block `number`: its transactions in order, and per transaction sender, status and
        the users of its LiquidationCall logs."""
        blk = await self.rpc.call("eth_getBlockByNumber", [hex(number), True])
        txs = blk["transactions"]
        rcs = await self.rpc.batch([("eth_getTransactionReceipt", [t["hash"]]) for t in txs]) if txs else []
        rows = []
        for i, (t, rc) in enumerate(zip(txs, rcs)):
            users = ["0x" + lg["topics"][3][-40:] for lg in rc.get("logs", [])
                     if lg["topics"] and lg["topics"][0] == LIQUIDATION_TOPIC and len(lg["topics"]) > 3]
            rows.append({"index": i, "hash": t["hash"], "from": t["from"].lower(), "to": (t.get("to") or "").lower(),
                         "status": int(rc["status"], 16), "users": [self.words.get(u[2:], u) for u in users],
                         "max_fee_gwei": int(t.get("maxFeePerGas") or t.get("gasPrice") or "0x0", 16) / 1e9,
                         "tip_gwei": int(t.get("maxPriorityFeePerGas") or "0x0", 16) / 1e9})
        return {"number": number, "txs": rows}

    # -- set-up ---------------------------------------------------------------------------
    async def setup(self) -> None:
        global LIQUIDATION_TOPIC
        from keeper import abi

        LIQUIDATION_TOPIC = abi.load("AavePool").event("LiquidationCall").topic0
        if not isinstance(LIQUIDATION_TOPIC, str):
            LIQUIDATION_TOPIC = "0x" + bytes(LIQUIDATION_TOPIC).hex()
        await self.read_reserves()
        for sym, agg in self.dep.aggregators.items():  # the slot the override writes must be the answer
            stored = int(await self.rpc.call("eth_getStorageAt", [agg, hex(ANSWER_SLOT), "latest"]), 16)
            if stored != await self.answer(sym):
                raise RuntimeError(f"{sym} aggregator: storage slot {ANSWER_SLOT} is not the answer")
        await self.rpc.call("evm_setAutomine", [True])
        await self.fund(CLEANER)
        await self.rpc.call("evm_setAutomine", [False])

    async def start_keeper(self) -> None:
        from keeper.devnet import KEEPER

        assert self.relay is not None
        self.keeper = KEEPER.lower()
        env = keeper_env(self.relay, self.workdir)
        if not self.args.all_protocols:
            only_aave(env)
        log_path = self.workdir / "keeper.log"
        self.proc = spawn_keeper(env, log_path)
        self.tail = LogTail(log_path)
        pw = await wait_logged(self.tail, self.proc, "pending_watch", self.args.start_timeout,
                               "start watching pending transactions", last=8)
        if pw.get("mode") != "filter":
            raise RuntimeError(f"the keeper does not watch the mempool: {pw}")
        await self.mine()
        await self.keeper_idle()

    async def stop_keeper(self) -> None:
        await stop_process(self.proc)

    async def keeper_idle(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Wait until the keeper logged the heartbeat of the latest block (its cycle ended)."""
        assert self.tail is not None
        return await self.wait_heartbeat(self.tail, self.proc, timeout_s)

    async def quiet(self) -> None:
        """Mempool empty (mining what is there), keeper idle at the head, no send for a moment."""
        for _ in range(10):
            await self.mine_until_empty()
            await self.keeper_idle()
            n = len(self.relay.sends) if self.relay else 0
            await asyncio.sleep(self.args.quiet)
            if await self.pool_empty() and (self.relay is None or len(self.relay.sends) == n):
                return
        raise RuntimeError("the keeper does not go quiet")

    # -- planning an update ---------------------------------------------------------------
    async def plan(self, sym: str) -> tuple[int, int, dict[str, int], list[tuple[int, str]]] | None:
        """(current answer, new answer, HF now, [(critical answer, account)] highest first) for
        a drop of `sym` that makes about --per-update fresh accounts liquidatable; None when
        no account is exposed to a drop of `sym`."""
        block = await self.head()
        p0 = await self.answer(sym)
        h0 = await self.health(block)
        p1 = p0 * 9 // 10
        h1 = await self.health(block, (sym, p1))
        crit = []
        for a, hf0 in h0.items():
            hf1 = h1.get(a)
            if hf1 is None or hf1 >= hf0 or hf0 < WAD:
                continue
            slope = (hf0 - hf1) / (p0 - p1)
            crit.append((int(p0 - (hf0 - WAD) / slope), a))
        crit.sort(reverse=True)
        crit = [c for c in crit if c[0] > 0]
        k = self.args.per_update
        if len(crit) <= k:
            return None
        j = k
        while j < len(crit) and crit[j - 1][0] - crit[j][0] < crit[j - 1][0] / 1000:
            j += 1  # two critical answers too close to split safely: take the next gap
        if j >= len(crit):
            return None
        new = (crit[j - 1][0] + crit[j][0]) // 2
        return p0, new, h0, crit

    # -- one update -----------------------------------------------------------------------
    async def update(self, i: int, sym: str) -> dict[str, Any] | None:
        assert self.relay is not None and self.tail is not None
        a = self.args
        await self.quiet()
        if a.base_fee_gwei is not None:  # a head at that base fee, the next block's lower (an empty block)
            await self.rpc.call("anvil_setNextBlockBaseFeePerGas", [hex(int(a.base_fee_gwei * GWEI))])
            await self.mine()
            await self.keeper_idle()
        planned = await self.plan(sym)
        if planned is None:
            return None
        p0, new, h0, crit = planned
        pre = await self.head()
        # S: read from the chain, the accounts liquidatable right after the update
        h_new = await self.health(pre, (sym, new))
        already = sorted(u for u, hf in h0.items() if hf < WAD)  # none: the cleaner ran (kept as a check)
        S = sorted(u for u, hf in h_new.items() if hf < WAD and u not in already)
        agg = self.dep.aggregators[sym]
        fees: dict[str, str] = {}
        if a.update_fees == "wallet":  # 2 x the next block's base fee + a 1 gwei tip
            nxt = int((await self.rpc.call("eth_getBlockByNumber", ["pending", False]))["baseFeePerGas"], 16)
            fees = {"maxFeePerGas": hex(2 * nxt + GWEI), "maxPriorityFeePerGas": hex(GWEI)}
        head_blk = await self.rpc.call("eth_getBlockByNumber", [hex(pre), False])
        # the update, to the mempool
        n_sends = len(self.relay.sends)
        t_req = time.monotonic()
        upd = await self.rpc.call("eth_sendTransaction", [{"from": self.dep.deployer, "to": agg, "gas": hex(100_000),
                                                           "data": enc("setAnswer(int256)", ["int256"], [new]),
                                                           **fees}])
        t0 = time.monotonic()
        # the keeper's sends of this reaction (it has nothing else to do: all quiet before)
        deadline = t0 + a.window
        covered_at = None
        ours: list[Any] = []
        while True:
            now = time.monotonic()
            ours = [s for s in self.relay.sends[n_sends:] if s.decode()["sender"].lower() == self.keeper]
            named = {u for s in ours for u in self.targets(s.decode().get("data") or b"")}
            if covered_at is None and S and set(S) <= named:
                covered_at = now
            if now >= deadline or (covered_at is not None and now >= covered_at + a.settle):
                break
            await asyncio.sleep(0.005)
        t_mine = time.monotonic()
        b = await self.mine()
        t_mined = time.monotonic()
        blk = await self.block_liquidations(b)
        idx = next((r["index"] for r in blk["txs"] if r["hash"] == upd), None)
        keeper_txs = [r for r in blk["txs"] if r["from"] == self.keeper]
        same_block = sorted({u for r in keeper_txs if r["status"] == 1 and idx is not None and r["index"] > idx
                             for u in r["users"]})
        before_update = [r["hash"] for r in keeper_txs if idx is None or r["index"] < idx]
        reverted = [r["hash"] for r in keeper_txs if r["status"] != 1]
        others = [r for r in blk["txs"] if r["from"] != self.keeper and r["hash"] != upd]
        h_after = await self.health(b)
        left_after_b = sorted(u for u, hf in h_after.items() if hf < WAD)
        unexpected = sorted(set(left_after_b) - set(S) - set(same_block))
        # B+1: the keeper's per-block cycle on B takes what the reaction missed
        late_sends = [s for s in self.relay.sends[n_sends:] if s.t >= t_mine]
        await self.keeper_idle()
        await asyncio.sleep(a.settle)
        b1 = await self.mine()
        blk1 = await self.block_liquidations(b1)
        next_block = sorted({u for r in blk1["txs"] if r["from"] == self.keeper and r["status"] == 1 for u in r["users"]})
        await self.keeper_idle()
        cleaned = await self.clean()
        self.tail.poll()
        # reaction timing
        seen_line = next((l for l in self.tail.lines if l.get("event") == "oracle_update_pending"
                          and str(l.get("tx", "")).lower() == upd.lower()), None)
        reaction_line = next((l for l in self.tail.lines if l.get("event") == "oracle_update_reaction"
                              and str(l.get("tx", "")).lower() == upd.lower()), None)
        sent_lines = [l for l in self.tail.lines if l.get("event") == "liquidation_sent"
                      and str(l.get("behind", "")).lower() == upd.lower()]
        t_seen = wall(seen_line["timestamp"]) - self.wall_offset if seen_line else None
        first = ours[0].t if ours else None
        last = ours[-1].t if ours else None
        missed = sorted(set(S) - set(same_block))
        skips: dict[str, list[str]] = {}
        for l in self.tail.lines:  # why the keeper did not take them: its skips behind the update or in B..B+1
            if l.get("event") != "skipped" or l.get("account") not in missed:
                continue
            behind = str(l.get("behind", "")).lower() == upd.lower()
            if behind or (isinstance(l.get("block"), int) and pre <= l["block"] <= b1):
                skips.setdefault(l["account"], []).append(str(l.get("reason")) + (" (reaction)" if behind else ""))
        not_profitable = sorted(u for u in missed if u not in next_block and skips.get(u)
                                and all(any(w in r for w in UNPROFITABLE) for r in skips[u]))
        utx = await self.rpc.call("eth_getTransactionByHash", [upd])
        rec: dict[str, Any] = {
            "update": i, "feed": sym,
            "update_max_fee_wei": int(utx.get("maxFeePerGas") or "0x0", 16),
            "update_tip_wei": int(utx.get("maxPriorityFeePerGas") or "0x0", 16),
            "head_base_fee_wei": int(head_blk.get("baseFeePerGas") or "0x0", 16),
            "answer_from": p0, "answer_to": new, "move_pct": round((new / p0 - 1) * 100, 3),
            "tx": upd, "block": b, "update_index": idx, "block_txs": len(blk["txs"]),
            "liquidatable_before": already, "made_liquidatable": S, "n_made_liquidatable": len(S),
            "same_block": same_block, "next_block_by_keeper": next_block, "missed": missed,
            "cleaned_by_harness": cleaned, "not_profitable": not_profitable, "skip_reasons": skips,
            "captured": bool(S) and not missed,
            "captured_profitable": bool(set(S) - set(not_profitable)) and not (set(missed) - set(not_profitable)),
            "keeper_txs_in_block": len(keeper_txs), "keeper_txs_before_update": before_update,
            "keeper_txs_reverted": reverted, "foreign_txs": [r["hash"] for r in others],
            "liquidatable_after_block_not_in_S": unexpected,
            "sends": len(ours), "sends_after_mine": len(late_sends),
            "keeper_exposed": reaction_line.get("exposed") if reaction_line else None,
            "keeper_liquidatable": reaction_line.get("liquidatable") if reaction_line else None,
            "keeper_opportunities": reaction_line.get("opportunities") if reaction_line else None,
            "keeper_liquidation_sent_lines": len(sent_lines),
            "send_ms": round((t0 - t_req) * 1000, 2),
            "waited_ms": round((t_mine - t0) * 1000, 1), "evm_mine_ms": round((t_mined - t_mine) * 1000, 1),
            "mempool_to_seen_ms": None if t_seen is None else round((t_seen - t0) * 1000, 2),
            "seen_to_first_send_ms": None if t_seen is None or first is None else round((first - t_seen) * 1000, 2),
            "mempool_to_first_send_ms": None if first is None else round((first - t0) * 1000, 2),
            "mempool_to_last_send_ms": None if last is None else round((last - t0) * 1000, 2),
        }
        if not a.no_pools:
            await self.follow_pools(sym)
        return rec


def summarize(recs: list[dict[str, Any]]) -> dict[str, Any]:
    made = [r for r in recs if r["n_made_liquidatable"] > 0]
    captured = [r for r in made if r["captured"]]
    prof = [r for r in made if set(r["made_liquidatable"]) - set(r["not_profitable"])]
    captured_prof = [r for r in prof if r["captured_profitable"]]
    acc = sum(r["n_made_liquidatable"] for r in made)
    same = sum(len(set(r["same_block"]) & set(r["made_liquidatable"])) for r in made)

    reasons: dict[str, int] = {}
    for r in made:
        for u in r["missed"]:
            why = ",".join(sorted({x.replace(" (reaction)", "") for x in r["skip_reasons"].get(u, [])})) or "no skip logged"
            reasons[why] = reasons.get(why, 0) + 1

    def ms(key: str) -> dict[str, float | None]:
        return summary_ms([r[key] / 1000 for r in made if r[key] is not None])

    return {
        "updates_sent": len(recs), "updates_making_liquidatable": len(made),
        "captured_same_block": len(captured),
        "capture_rate": None if not made else round(len(captured) / len(made), 4),
        "updates_with_profitable_accounts": len(prof), "captured_same_block_profitable": len(captured_prof),
        "capture_rate_profitable": None if not prof else round(len(captured_prof) / len(prof), 4),
        "accounts_made_liquidatable": acc, "accounts_liquidated_same_block": same,
        "accounts_next_block_by_keeper": sum(len(r["next_block_by_keeper"]) for r in made),
        "accounts_cleaned_by_harness": sum(len(set(r["cleaned_by_harness"]) & set(r["made_liquidatable"])) for r in made),
        "missed_accounts_by_keeper_skip_reason": reasons,
        "keeper_txs_before_update": sum(len(r["keeper_txs_before_update"]) for r in recs),
        "keeper_txs_reverted": sum(len(r["keeper_txs_reverted"]) for r in recs),
        "liquidatable_after_block_not_in_S": sum(len(r["liquidatable_after_block_not_in_S"]) for r in recs),
        "mempool_to_seen": ms("mempool_to_seen_ms"), "seen_to_first_send": ms("seen_to_first_send_ms"),
        "mempool_to_first_send": ms("mempool_to_first_send_ms"), "mempool_to_last_send": ms("mempool_to_last_send_ms"),
    }


async def run(args: argparse.Namespace, node: Any, dep: Any, workdir: Path) -> dict[str, Any]:
    bench = Bench(args, node, dep, workdir)
    bench.relay = await start_relay(node.url)
    load0 = os.getloadavg()
    t_start = time.monotonic()
    try:
        await bench.setup()
        feeds = []
        for sym in args.feeds:
            if sym not in dep.aggregators:
                print(f"feed {sym}: no such aggregator on the devnet ({sorted(dep.aggregators)}); dropped", file=sys.stderr)
                continue
            if await bench.plan(sym) is None:
                print(f"feed {sym}: no seeded account is exposed to a drop; dropped", file=sys.stderr)
                continue
            feeds.append(sym)
        if not feeds:
            raise RuntimeError("no feed moves any account")
        await bench.start_keeper()
        print(f"set-up {time.monotonic() - t_start:.1f}s; feeds {', '.join(feeds)}; keeper {bench.keeper} watching "
              f"the mempool", file=sys.stderr)
        recs: list[dict[str, Any]] = []
        k = 0
        while len(recs) < args.updates and feeds:
            sym = feeds[k % len(feeds)]
            r = await bench.update(len(recs), sym)
            if r is None:
                print(f"feed {sym}: no more accounts to move; dropped", file=sys.stderr)
                feeds.remove(sym)
                continue
            k += 1
            recs.append(r)
            lat = r["mempool_to_first_send_ms"]
            print(f"  update {r['update']:>2} {sym:<4} {r['move_pct']:+7.2f}%: "
                  f"{r['n_made_liquidatable']} made liquidatable, "
                  f"{len(set(r['same_block']) & set(r['made_liquidatable']))} same block, "
                  f"{len(r['next_block_by_keeper'])} next block, first send "
                  f"{'-' if lat is None else f'{lat:.0f} ms'}{'' if r['captured'] else '  MISS'}", file=sys.stderr)
        await bench.stop_keeper()
        assert bench.tail is not None
        bench.tail.poll()
        warnings = log_warnings(bench.tail.lines)
        return {
            "borrowers": len(dep.borrowers), "updates": recs, "summary": summarize(recs),
            "per_update_target": args.per_update, "update_fees": args.update_fees, "window_s": args.window,
            "base_fee_gwei": args.base_fee_gwei,
            "settle_s": args.settle,
            "pools_follow_oracle": not args.no_pools, "aave_only": not args.all_protocols,
            "keeper_warnings": warnings, "keeper_log": str(bench.tail.path), "workdir": str(workdir),
            "run_s": round(time.monotonic() - t_start, 1), "loadavg_start": load0, "loadavg_end": os.getloadavg(),
            "machine": machine(),
        }
    finally:
        await bench.stop_keeper()
        await bench.relay.close()
        await bench.rpc.close()


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--borrowers", type=int, default=2000)
    ap.add_argument("--updates", type=int, default=24)
    ap.add_argument("--per-update", type=int, default=2, help="fresh accounts each update aims to make liquidatable")
    ap.add_argument("--feeds", type=lambda s: [x.strip() for x in s.split(",") if x.strip()],
                    default=["WETH", "WBTC", "LINK"], help="feeds moved in turn (default WETH,WBTC,LINK)")
    ap.add_argument("--window", type=float, default=2.0, help="longest wait for the keeper's sends before mining, s")
    ap.add_argument("--settle", type=float, default=0.2, help="extra wait once the keeper's sends cover S, s")
    ap.add_argument("--quiet", type=float, default=0.1, help="quiet time (keeper idle, no sends) before an update, s")
    ap.add_argument("--update-fees", choices=("anvil", "wallet"), default="anvil",
                    help="the update's fees: anvil's eth_sendTransaction defaults (maxFee = next base fee + 1 gwei "
                         "tip, as tests/test_same_block.py), or wallet-style 2 x next base fee + 1 gwei")
    ap.add_argument("--base-fee-gwei", type=float, default=None,
                    help="before each update, mine an empty block at this base fee (the devnet otherwise sits at "
                         "its 7 wei floor): the update's block then has a base fee 1/8 lower, as after any "
                         "below-target block on a real chain")
    ap.add_argument("--no-pools", action="store_true", help="leave the Uniswap pools where they are")
    ap.add_argument("--all-protocols", action="store_true", help="keep Maker and perps on in the keeper")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--logs", type=Path, default=None, help="keep the keeper's and anvil's logs here (default: temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    from keeper.devnet import ensure_state, start_devnet

    t = time.monotonic()
    workdir = args.logs or Path(tempfile.mkdtemp(prefix="sameblock-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ensure_state(args.borrowers)
    node, dep = start_devnet(port=0, n_borrowers=args.borrowers, log_path=workdir / "anvil.log")
    print(f"devnet with {len(dep.borrowers)} borrowers ready in {time.monotonic() - t:.1f}s (logs in {workdir})",
          file=sys.stderr)
    try:
        r = asyncio.run(run(args, node, dep, workdir))
    finally:
        node.stop()
    if args.json:
        print(json.dumps(r, indent=1, default=str))
        return 0
    s = r["summary"]
    print(f"\nsame-block capture of pending oracle updates ({r['borrowers']:,} borrowers, window {r['window_s']} s, "
          f"pools {'follow the oracle' if r['pools_follow_oracle'] else 'left'}; {r['machine']}; {r['run_s']} s)")
    print(f"  {'#':>2} {'feed':<5} {'move %':>7} {'made liq.':>9} {'same blk':>8} {'next blk':>8} {'other':>5} "
          f"{'seen ms':>8} {'1st send':>8} {'last':>8}  result")
    for u in r["updates"]:
        same = len(set(u["same_block"]) & set(u["made_liquidatable"]))
        other = len(set(u["missed"]) - set(u["next_block_by_keeper"]))
        res = "captured" if u["captured"] else ("-" if not u["n_made_liquidatable"] else "MISS")
        if u["missed"]:
            res += " (" + ", ".join(sorted({x for v in u["skip_reasons"].values() for x in v}) or ["no skip logged"]) + ")"
        print(f"  {u['update']:>2} {u['feed']:<5} {u['move_pct']:>7.2f} {u['n_made_liquidatable']:>9} {same:>8} "
              f"{len(u['next_block_by_keeper']):>8} {other:>5} {_fmt(u['mempool_to_seen_ms']):>8} "
              f"{_fmt(u['mempool_to_first_send_ms']):>8} {_fmt(u['mempool_to_last_send_ms']):>8}  {res}")
    rate = s["capture_rate"]
    print(f"\n  updates sent {s['updates_sent']}, made >= 1 account liquidatable {s['updates_making_liquidatable']}, "
          f"captured in the same block {s['captured_same_block']}: capture rate "
          f"{'-' if rate is None else f'{rate * 100:.1f}%'} (goal >= 95%)")
    print(f"  accounts made liquidatable {s['accounts_made_liquidatable']}: same block "
          f"{s['accounts_liquidated_same_block']}, next block by the keeper {s['accounts_next_block_by_keeper']}, "
          f"by the cleaner {s['accounts_cleaned_by_harness']}; "
          f"keeper txs before the update {s['keeper_txs_before_update']}, reverted {s['keeper_txs_reverted']}")
    if s["missed_accounts_by_keeper_skip_reason"]:
        print(f"  missed accounts by the keeper's skip reason: {s['missed_accounts_by_keeper_skip_reason']}")
    for name, key in (("mempool -> keeper saw it", "mempool_to_seen"),
                      ("saw it -> first send at node", "seen_to_first_send"),
                      ("mempool -> first send at node", "mempool_to_first_send"),
                      ("mempool -> last send at node", "mempool_to_last_send")):
        m = s[key]
        print(f"  {name:<31} p50 {_fmt(m['p50_ms']):>7} ms  p90 {_fmt(m['p90_ms']):>7} ms  max {_fmt(m['max_ms']):>7} ms")
    if r["keeper_warnings"]:
        print(f"  keeper warnings/errors: {r['keeper_warnings']} (log {r['keeper_log']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
