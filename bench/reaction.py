"""Benchmark: reaction latency to a price move, the keeper against a naive web3.py bot.

What is measured
    For each price move: the time from the moment block B holding the oracle update is mined
    (t0, below) to the moment the bot's first liquidation transaction reaches the node (the
    last byte of its `eth_sendRawTransaction` request read by a relay in front of anvil).
    p50/p90/p99/max over the measured moves, and the moves with no send within the timeout.
    Per move (--json): how many accounts B made liquidatable, how many the bot liquidated,
    reverted sends, and for the keeper when its log shows the first opportunity of block B
    and its cycle time (heartbeat cycle_s), i.e. where the time went.

How
    - anvil with the cached devnet of N seeded Aave V3 borrowers (keeper.devnet), automine OFF:
      the harness mines every block itself, so the oracle update is alone in block B and t0 is
      exact. The harness talks to anvil directly; both bots talk to it only through the relay.
    - The relay (bench/_harness.py SendRecorder) is a byte-level TCP relay: websocket upgrades
      pass through, so the keeper's newHeads websocket (KEEPER_WS_URL) goes through it too, as
      to a remote node. Each recorded send is decoded afterwards (sender recovered from the
      signature); its calldata must name an account that was liquidatable at B, else it is not
      counted as the reaction (approvals and other set-up sends are listed, not counted).
    - Moves: WETH's aggregator answer steps down. Before any bot runs, the harness reads every
      account's health at the current WETH price and, in a snapshot it then reverts, at 10%
      lower; with a non-WETH debt HF is linear in the WETH price, so this gives the price at
      which each account reaches HF 1. Move i sets WETH half-way between the critical prices of
      the (i+1)k-th and next account in that order, so each move makes k fresh accounts
      liquidatable, k = --per-move-pct of the tracked accounts (0.25%: 5 of 2,000, 25 of
      10,000: the same market event on a bigger book); `new_liquidatable` reports the count
      read from the chain at block B. (--step PCT: fixed price steps instead.) Move 0 is a
      warm-up (one-time work such as a first approval) and is not counted.
    - After the reaction (not timed; a reaction is over when no send came for --settle s): the
      bot's sends are mined. The keeper then gets the next blocks too (up to --max-rounds),
      until a block brings no new send from it: its per-block cycle sends what its first cycle
      left. The naive bot gets one block (it sends one transaction per block). Then a cleaner
      account liquidates whatever is still liquidatable (fee cap below the bots', so it lands
      behind them), so every move starts with none; then (unless --no-pools) the Uniswap pools
      holding WETH are arbitraged to the oracle price (they follow one move late); the txpool
      is emptied; then a quiet period (for the keeper: until it logged the heartbeat of the
      latest block, plus --quiet seconds and a random jitter of up to as much; for the naive
      bot, which is always mid-sweep at 10,000 accounts: the same quiet time).
    - t0 is the earlier of evm_mine returning and the harness's own newHeads websocket
      announcing B (measured: within a millisecond of each other; mining takes ~25 ms at
      2,000 borrowers and 100-300 ms at 10,000 on anvil, which is not counted).
    - keeper: the real one, `python -m keeper run --config config/devnet.toml` as a
      subprocess, live (the devnet keeper key, account 1), env overrides only: KEEPER_RPC_URL
      and KEEPER_WS_URL = the relay, poll interval --poll, heartbeat every block (to know it
      is idle), journal/store in a temp dir, chain.watch_pending = false (block-driven, like
      the naive bot: the issue's metric starts at the block; --keeper-pending leaves the
      keeper's same-block mempool reaction on, measured properly by bench/sameblock.py), and
      by default only the aave-v3-devnet protocol on (the naive bot watches only Aave;
      --all-protocols keeps Maker and perps on too).
      Its structlog JSON lines are kept (--logs DIR) and summarised per move.
    - naive bot: a subprocess (this file, --naive-worker), web3.py AsyncWeb3 over
      AsyncHTTPProvider (cache_allowed_requests=True unless --naive-no-cache), anvil account 3
      funded and approved by the harness. It polls eth_blockNumber every --poll s; on each new
      block it calls pool.getUserAccountData(user) once per tracked account, sequentially, in
      dep.borrowers order, at "latest"; at the first HF < 1 it reads getUserConfiguration,
      takes the first collateral and first debt reserve, and sends Pool.liquidationCall(...,
      type(uint256).max, false) signed locally with an explicit gas limit and fees and a local
      nonce (no estimateGas, no fee or nonce calls: generous to the baseline).
    - The two bots run ONE AFTER THE OTHER on the same moves from the same snapshot (keeper
      first, then evm_revert and the naive bot), in one invocation. Not concurrently: the
      machine has 2 cores, and the naive bot's thousands of eth_calls per block would load
      anvil and the CPU the keeper needs, and the keeper's sends would take the accounts the
      naive bot is racing for; one after the other, each bot has anvil to itself.

Caveats
    - Local anvil over loopback: no network latency; a remote RPC adds its round trips to
      both bots (many more to the naive bot's per-account calls).
    - The relay adds one loopback hop to every request of both bots (measured ~35 us).
    - The keeper's latency grows with the number of accounts a move makes liquidatable (it
      sizes and ranks every opportunity of the block before its first send), not only with
      the number tracked: compare --per-move-pct runs.
    - 2 cores, shared: anything else running on the machine (other anvils, builds) shows in
      both bots' figures; the load average at the start and end is in the --json output.
    - anvil quirk: an eth_call at "latest" made while a block is being mined can run on the
      new state with the old block's timestamp, and Aave then reverts with panic 0x11 (an
      interest-index underflow). The naive bot logs such a call (call_error) and moves on;
      the harness reads at pinned block numbers.
    - The naive bot reads at "latest": a sweep still running when B is mined sees the new
      prices for its remaining accounts. Its latency is then roughly the time to reach the
      next liquidatable account in its list, i.e. about sweep_time / (new liquidatable + 1):
      it depends on how many accounts a move makes liquidatable, reported per move.
    - The price move is a pure oracle update in its own block (no same-block backrun); the
      keeper reacts to the new head, as a block-driven bot does.

Usage: python bench/reaction.py [--borrowers 2000] [--moves 15] [--json] [--bots keeper,naive]
The first run for a given N builds and caches the devnet (about a minute for 2,000 borrowers,
about five for 10,000); later runs load it in seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
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
    CLEANER, DEVNET_CONFIG, GWEI, MAX_UINT, WAD, DevnetBench, HeadClock, LogTail, enc, keeper_env, log_warnings,
    machine, only_aave, spawn_keeper, start_relay, stop_process, summary_ms, wait_logged, wall,
)

# anvil's public test accounts (mnemonic "test test ... junk"; local chain only; the keeper's
# and the cleaner's are in _harness)
NAIVE_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"  # account 3
NAIVE = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
# anvil mines the highest fee cap first: the cleaner's low cap puts it behind any bot's send
# in the same block (the devnet's base fee decays to a few wei on near-empty blocks)
CLEANER_FEE_CAP = 10**8

POOL_ABI = [
    {"type": "function", "name": "getUserAccountData", "stateMutability": "view",
     "inputs": [{"name": "user", "type": "address"}],
     "outputs": [{"name": n, "type": "uint256"} for n in ("totalCollateralBase", "totalDebtBase",
                                                           "availableBorrowsBase", "currentLiquidationThreshold",
                                                           "ltv", "healthFactor")]},
    {"type": "function", "name": "getUserConfiguration", "stateMutability": "view",
     "inputs": [{"name": "user", "type": "address"}],
     "outputs": [{"name": "", "type": "tuple", "components": [{"name": "data", "type": "uint256"}]}]},
    {"type": "function", "name": "getReservesList", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "address[]"}]},
    {"type": "function", "name": "liquidationCall", "stateMutability": "nonpayable",
     "inputs": [{"name": "collateralAsset", "type": "address"}, {"name": "debtAsset", "type": "address"},
                {"name": "user", "type": "address"}, {"name": "debtToCover", "type": "uint256"},
                {"name": "receiveAToken", "type": "bool"}], "outputs": []},
]


# ==== the naive bot (subprocess) ===========================================================
async def naive_worker(spec: dict[str, Any]) -> None:
    """One getUserAccountData per account per block, sequential; liquidate the first HF < 1."""
    from eth_account import Account
    from web3 import AsyncWeb3
    from web3.providers import AsyncHTTPProvider

    def out(**kw: Any) -> None:
        print(json.dumps({"t": time.monotonic(), **kw}), flush=True)

    w3 = AsyncWeb3(AsyncHTTPProvider(spec["url"], cache_allowed_requests=spec["cache"]))
    pool = w3.eth.contract(address=spec["pool"], abi=POOL_ABI)
    acct = Account.from_key(spec["key"])
    accounts = spec["accounts"]
    reserves = await pool.functions.getReservesList().call()
    chain_id = await w3.eth.chain_id
    nonce = await w3.eth.get_transaction_count(acct.address, "pending")
    out(event="ready", accounts=len(accounts), nonce=nonce)
    failing: set[str] = set()
    last = -1
    while True:
        bn = await w3.eth.block_number
        if bn == last:
            await asyncio.sleep(spec["poll_s"])
            continue
        last = bn
        started = time.monotonic()
        found = None
        i = -1
        for i, user in enumerate(accounts):
            try:
                hf = (await pool.functions.getUserAccountData(user).call())[5]
            except Exception as e:  # noqa: BLE001 - a reverting view: note it, go on
                if user not in failing:
                    failing.add(user)
                    out(event="call_error", block=bn, user=user, index=i, error=str(e)[:200])
                continue
            if hf < WAD:
                (bits,) = await pool.functions.getUserConfiguration(user).call()
                debt = next((r for j, r in enumerate(reserves) if bits >> (2 * j) & 1), None)
                coll = next((r for j, r in enumerate(reserves) if bits >> (2 * j + 1) & 1), None)
                if debt is None or coll is None:
                    continue
                data = pool.encode_abi("liquidationCall", args=[coll, debt, user, MAX_UINT, False])
                tx = {"to": spec["pool"], "data": data, "value": 0, "gas": 1_500_000, "nonce": nonce,
                      "chainId": chain_id, "maxFeePerGas": 100 * GWEI, "maxPriorityFeePerGas": 2 * GWEI, "type": 2}
                signed = acct.sign_transaction(tx)
                try:
                    h = await w3.eth.send_raw_transaction(signed.raw_transaction)
                    nonce += 1
                    out(event="sent", block=bn, user=user, index=i, hf=hf / WAD, tx=h.to_0x_hex(),
                        after_s=time.monotonic() - started)
                except Exception as e:  # noqa: BLE001 - report, resync the nonce, go on
                    out(event="send_error", user=user, error=str(e)[:300])
                    nonce = await w3.eth.get_transaction_count(acct.address, "pending")
                found = user
                break
        out(event="sweep", block=bn, calls=i + 1, seconds=time.monotonic() - started, found=found)


# ==== harness ==============================================================================
class Harness(DevnetBench):
    def __init__(self, args: argparse.Namespace, node: Any, dep: Any, workdir: Path):
        super().__init__(args, node, dep, workdir)
        self._keeper_proc: subprocess.Popen | None = None
        self.heads: HeadClock | None = None
        self.keeper_info: dict[str, Any] = {}
        self._naive_info: dict[str, Any] = {}

    # -- chain helpers (the rest are DevnetBench's) ---------------------------------------
    async def set_weth(self, answer: int) -> str:
        return await self.send_tx(self.dep.deployer, self.dep.aggregators["WETH"],
                                  enc("setAnswer(int256)", ["int256"], [answer]), gas=100_000)

    # -- set-up ---------------------------------------------------------------------------
    async def setup(self) -> None:
        from keeper.devnet import KEEPER

        await self.read_reserves()
        await self.rpc.call("evm_setAutomine", [True])
        for who in (NAIVE, CLEANER, KEEPER):
            await self.fund(who, approve=who != KEEPER)  # the devnet state has the keeper's max approvals already

    async def calibrate(self) -> tuple[int, list[tuple[int, str]]]:
        """(P0, [(critical WETH answer, account)] highest first): the WETH answer at which each
        account with WETH exposure reaches HF 1. With a non-WETH debt, HF is linear in the WETH
        price (sum of collateral value x threshold over debt), so two readings fix the line:
        now, and 10% lower in a snapshot that is reverted (before any bot runs)."""
        p0 = await self.answer("WETH")
        h0 = await self.health()
        if any(hf < WAD for hf in h0.values()):
            raise RuntimeError("accounts are already liquidatable before any move")
        p1 = p0 * 9 // 10
        snap = await self.rpc.call("evm_snapshot")
        await self.receipt_ok(await self.set_weth(p1))
        h1 = await self.health()
        await self.rpc.call("evm_revert", [snap])
        await self._fix_base_fee()
        crit = []
        for a, hf0 in h0.items():
            hf1 = h1.get(a)
            if hf1 is None or hf1 >= hf0:  # no WETH collateral, or WETH debt: a drop does not hurt
                continue
            slope = (hf0 - hf1) / (p0 - p1)
            crit.append((int(p0 - (hf0 - WAD) / slope), a))
        crit.sort(reverse=True)
        return p0, crit

    async def _fix_base_fee(self) -> None:
        base = (await self.rpc.call("eth_getBlockByNumber", ["latest", False]))["baseFeePerGas"]
        await self.rpc.call("anvil_setNextBlockBaseFeePerGas", [base])

    # -- one phase: one bot over all the moves ------------------------------------------------
    async def phase(self, bot: str, prices: list[int]) -> dict[str, Any]:
        assert self.relay is not None
        await self.rpc.call("evm_setAutomine", [False])
        await self.mine_until_empty()
        proc, tail, bot_addr, info = await self._start_bot(bot)
        moves: list[dict[str, Any]] = []
        try:
            for i, price in enumerate(prices):
                moves.append(await self._move(bot, i, price, tail, bot_addr, info))
                m = moves[-1]
                lat = "no send" if m["latency_ms"] is None else f"{m['latency_ms']:.1f} ms"
                print(f"  {bot:<6} move {i:>2}{' (warm-up)' if i == 0 else ''}: WETH {price / 1e8:,.2f}, "
                      f"{m['new_liquidatable']} liquidatable, reaction {lat}", file=sys.stderr)
        finally:
            await stop_process(proc)
            if tail is not None:
                tail.poll()
        extra: dict[str, Any] = {}
        if bot == "keeper" and tail is not None:
            extra = self._keeper_log_summary(tail, moves)
            extra["keeper_watch_pending"] = self.args.keeper_pending or not info.get("watch_pending_off")
        if bot == "naive" and info.get("sweeps"):
            full = [s["seconds"] for s in info["sweeps"] if s.get("found") is None and s["calls"] == len(self.borrowers)]
            extra["naive_full_sweep_s_median"] = round(statistics.median(full), 3) if full else None
            extra["naive_full_sweeps"] = len(full)
        return {"bot": bot, "address": bot_addr, "moves": moves, **extra}

    async def _start_bot(self, bot: str) -> tuple[subprocess.Popen, LogTail | None, str, dict[str, Any]]:
        assert self.relay is not None
        info: dict[str, Any] = {}
        logdir = self.workdir
        if bot == "keeper":
            from keeper.devnet import KEEPER

            env = keeper_env(self.relay, logdir, KEEPER_CHAIN__POLL_INTERVAL_S=str(self.args.poll))
            if not self.args.keeper_pending:
                # block-driven, as the naive bot: no reaction to the oracle update while pending
                env["KEEPER_CHAIN__WATCH_PENDING"] = "false"
                try:
                    from keeper.config import load_config

                    load_config(DEVNET_CONFIG, environ=env)
                except Exception as e:  # noqa: BLE001 - a keeper without that setting
                    if "watch_pending" not in str(e):
                        raise
                    del env["KEEPER_CHAIN__WATCH_PENDING"]
                info["watch_pending_off"] = "KEEPER_CHAIN__WATCH_PENDING" in env
            if not self.args.all_protocols:
                only_aave(env)
            log_path = logdir / "keeper.log"
            proc = spawn_keeper(env, log_path)
            self._keeper_proc = proc
            tail = LogTail(log_path)
            started = await wait_logged(tail, proc, "keeper_started", self.args.start_timeout, "start", last=5)
            info["started"] = {k: started.get(k) for k in ("protocols", "address", "dry_run")}
            self.keeper_info = info
            await self.mine()
            await self.wait_heartbeat(tail, proc)
            return proc, tail, KEEPER, info
        spec = {"url": self.relay.http_url, "pool": self.dep.pool, "key": NAIVE_KEY, "accounts": self.borrowers,
                "poll_s": self.args.poll, "cache": not self.args.naive_no_cache}
        spec_path = logdir / "naive-spec.json"
        spec_path.write_text(json.dumps(spec))
        log_path = logdir / "naive.log"
        f = open(log_path, "wb")
        proc = subprocess.Popen([sys.executable, __file__, "--naive-worker", str(spec_path)], cwd=REPO,
                                stdout=f, stderr=subprocess.STDOUT)
        f.close()
        tail = LogTail(log_path)
        info["sweeps"] = []
        self._naive_info = info
        # wait for one full sweep (its duration sets the timeout) on a fresh block
        deadline = time.monotonic() + self.args.start_timeout + 600
        await self.mine()
        while not info["sweeps"]:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail.poll()
                raise RuntimeError(f"naive bot did not start (exit {proc.poll()}): {tail.other[-5:]} (log {log_path})")
            await asyncio.sleep(0.1)
            self._naive_poll(tail)
        return proc, tail, NAIVE, info

    def _naive_poll(self, tail: LogTail) -> None:
        for l in tail.poll():
            if l.get("event") == "sweep":
                self._naive_info["sweeps"].append(l)

    async def _settle(self) -> None:
        """Until no new send arrived for --settle seconds (at most 10 s)."""
        assert self.relay is not None
        end = time.monotonic() + 10
        n = len(self.relay.sends)
        while time.monotonic() < end:
            await asyncio.sleep(self.args.settle)
            if len(self.relay.sends) == n:
                return
            n = len(self.relay.sends)

    async def _move(self, bot: str, i: int, price: int, tail: LogTail | None, bot_addr: str,
                    info: dict[str, Any]) -> dict[str, Any]:
        assert self.relay is not None and tail is not None
        # quiet: nothing pending, the bot idle (keeper) or just running (naive)
        await self.mine_until_empty()
        if bot == "keeper":
            await self.wait_heartbeat(tail, self._keeper_proc)
        else:
            self._naive_poll(tail)
        await asyncio.sleep(self.args.quiet + random.uniform(0, self.args.quiet))
        # the move: setAnswer, then evm_mine: alone in block B (unless the keeper, watching the
        # mempool with --keeper-pending, got a send in between)
        t_sub = time.monotonic()
        await self.set_weth(price)
        t_req = time.monotonic()
        await self.rpc.call("evm_mine")
        t_ret = time.monotonic()
        t0_wall = time.time()
        block_b = int(await self.rpc.call("eth_blockNumber"), 16)
        assert self.heads is not None
        t_ws = await self.heads.wait(block_b, after=t_req, timeout_s=2.0)
        t0 = min(t_ret, t_ws) if t_ws is not None else t_ret  # the block is known from then on
        window = t_sub if self.args.keeper_pending else t0
        timeout = self.args.keeper_timeout
        if bot == "naive":
            full = [s["seconds"] for s in info["sweeps"] if s["calls"] == len(self.borrowers)]
            timeout = max(self.args.keeper_timeout, 2 * (max(full) if full else 60) + 5)
        await self.relay.wait_send(window, timeout)
        await self._settle()
        t_first_mine = time.monotonic()
        blk = await self.rpc.call("eth_getBlockByNumber", [hex(block_b), False])
        b_txs = len(blk["transactions"])
        if not self.args.keeper_pending:
            assert b_txs == 1, f"block B {block_b} holds {b_txs} txs"
        # the bot's sends are mined; the keeper also gets the blocks after B to finish what it
        # started (its per-block cycle sends what the first cycle left), until a block brings
        # nothing new from it; the naive bot gets one block (it sends one tx per block)
        rounds = 0
        while True:
            await self.mine()
            rounds += 1
            if bot != "keeper" or rounds >= self.args.max_rounds:
                break
            n0 = len(self.relay.sends)
            await self.wait_heartbeat(tail, self._keeper_proc)
            await self._settle()
            if len(self.relay.sends) == n0:
                break
        t_end = time.monotonic()
        liq_b = set(await self.liquidatable(block_b))
        rows = []
        for s in self.relay.sends_between(window, t_end):
            d = s.decode()
            target = next(iter(self.targets(d.get("data") or b"")), None)
            rc = await self.rpc.call("eth_getTransactionReceipt", [d["hash"]])
            rows.append({"after_ms": round((s.t - t0) * 1000, 3), "first_block": s.t < t_first_mine,
                         "sender": d["sender"], "nonce": d.get("nonce"), "to": d.get("to"), "target": target,
                         "target_liquidatable_at_B": target in liq_b,
                         "status": None if rc is None else int(rc["status"], 16),
                         "mined_in": None if rc is None else int(rc["blockNumber"], 16), "tx": d["hash"]})
        mine = [r for r in rows if r["sender"].lower() == bot_addr.lower()]
        liq_rows = [r for r in mine if r["target_liquidatable_at_B"]]
        first_rows = [r for r in liq_rows if r["first_block"]]
        rec: dict[str, Any] = {
            "move": i, "warmup": i == 0, "weth_answer": price, "block": block_b, "new_liquidatable": len(liq_b),
            "t0_monotonic": t0, "evm_mine_ms": round((t_ret - t_req) * 1000, 3),
            "ws_head_vs_evm_mine_return_ms": None if t_ws is None else round((t_ws - t_ret) * 1000, 3),
            "latency_ms": first_rows[0]["after_ms"] if first_rows else None,
            "first_any_send_ms": rows[0]["after_ms"] if rows else None,
            "sends": len(rows), "liquidation_sends": len(liq_rows),
            "liquidation_sends_before_first_mine": len(first_rows),
            "accounts_liquidated_by_bot": len({r["target"] for r in liq_rows if r["status"] == 1}),
            "liquidation_sends_reverted": sum(1 for r in liq_rows if r["status"] == 0),
            "blocks_after_B": rounds, "block_B_txs": b_txs,
            "other_sends": [r for r in mine if r not in liq_rows][:5],
            "foreign_senders": sorted({r["sender"] for r in rows if r not in mine}),
        }
        if self.args.keeper_pending:
            rec["oracle_tx_submitted_ms"] = round((t_sub - t0) * 1000, 3)
        if bot == "naive":
            self._naive_poll(tail)
            # the bot's own note of its first send after t0 (its "block" is the block its sweep began at)
            sent = [l for l in tail.lines if l.get("event") == "sent" and l.get("t", 0) >= t0]
            if sent:
                rec["naive_index"] = sent[0].get("index")
                rec["naive_sweep_began_at_block"] = sent[0].get("block")
                rec["naive_after_sweep_start_s"] = round(sent[0].get("after_s", 0), 3)
        else:
            tail.poll()
            hb = [l for l in tail.lines if l.get("event") == "heartbeat" and l.get("block") == block_b]
            rec["keeper_cycle_s"] = hb[0].get("cycle_s") if hb else None
            # where the keeper's time went, from its own log lines (wall clock, ~0.1 ms apart from t0's)
            for ev in ("opportunity", "liquidation_sent"):
                line = next((l for l in tail.lines if l.get("event") == ev and l.get("block") == block_b), None)
                rec[f"keeper_first_{ev}_logged_ms"] = None if line is None else round(
                    (wall(line.get("timestamp")) - t0_wall) * 1000, 2)
        # between moves: clean up, pools follow the oracle
        rec["cleaned"] = len(await self.clean(max_fee=CLEANER_FEE_CAP, recheck=True))
        if not self.args.no_pools:
            await self.follow_pools("WETH")
        await self.mine_until_empty()
        return rec

    def _keeper_log_summary(self, tail: LogTail, moves: list[dict[str, Any]]) -> dict[str, Any]:
        """Per move without a liquidation send: what the keeper logged for block B and after."""
        out: dict[str, Any] = {"keeper_log": str(tail.path)}
        out["keeper_warnings"] = log_warnings(tail.lines)
        for m in moves:
            b = m["block"]
            skips: dict[str, int] = {}
            for l in tail.lines:
                if l.get("event") == "skipped" and l.get("block") == b:
                    skips[str(l.get("reason"))] = skips.get(str(l.get("reason")), 0) + 1
            m["keeper_skips_at_B"] = skips
            if m["latency_ms"] is not None:
                continue
            about = [l for l in tail.lines if isinstance(l.get("block"), int) and b <= l["block"] <= b + 1
                     and l.get("event") not in ("health_disagreement", "chain_liquidation")]
            m["keeper_log_at_B"] = [{k: v for k, v in l.items() if k in ("event", "level", "block", "reason", "account",
                                                                         "error", "net_profit_usd", "cycle_s")}
                                    for l in about][:30]
        return out


def _source_version() -> str:
    """git HEAD of the repo, and whether keeper/ differs from it (read-only git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "keeper"], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return f"{head}{' + uncommitted changes in keeper/' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def plan_prices(p0: int, crit: list[tuple[int, str]], n: int, per_move: int | None, step_pct: float | None) -> list[int]:
    """n WETH answers, each lower than the last. per_move: move i makes accounts
    crit[i*k:(i+1)*k] liquidatable (the price half-way between the k-th and the next critical
    price). step_pct: fixed steps from just past the first critical price."""
    if not crit:
        raise RuntimeError("no account is exposed to a WETH drop")
    if step_pct is not None:
        first = crit[0][0]
        return [int(first * (1 - step_pct / 200) * (1 - step_pct / 100) ** i) for i in range(n)]
    assert per_move
    if n * per_move >= len(crit):
        raise RuntimeError(f"{n} moves of {per_move} accounts need more than the {len(crit)} exposed accounts")
    return [(crit[(i + 1) * per_move - 1][0] + crit[(i + 1) * per_move][0]) // 2 for i in range(n)]


async def run(args: argparse.Namespace, node: Any, dep: Any, workdir: Path) -> dict[str, Any]:
    h = Harness(args, node, dep, workdir)
    load0 = os.getloadavg()
    h.relay = await start_relay(node.url)
    h.heads = await HeadClock(node.url).start()
    try:
        t = time.monotonic()
        await h.setup()
        p0, crit = await h.calibrate()
        per_move = None if args.step is not None else max(1, round(len(dep.borrowers) * args.per_move_pct / 100))
        prices = plan_prices(p0, crit, args.moves + 1, per_move, args.step)
        first = crit[0][0]
        how = f"{per_move} accounts per move" if per_move else f"steps of {args.step}%"
        print(f"set-up and calibration {time.monotonic() - t:.1f}s: WETH {p0 / 1e8:,.2f}, first account liquidatable "
              f"at {first / 1e8:,.2f} ({(1 - first / p0) * 100:.2f}% down); {how}: WETH {prices[0] / 1e8:,.2f} .. "
              f"{prices[-1] / 1e8:,.2f}", file=sys.stderr)
        snap = await h.rpc.call("evm_snapshot")
        phases = []
        for k, bot in enumerate(args.bots):
            if k:
                await h.rpc.call("evm_revert", [snap])
                snap = await h.rpc.call("evm_snapshot")
                await h._fix_base_fee()
            t = time.monotonic()
            ph = await h.phase(bot, prices)
            ph["phase_s"] = round(time.monotonic() - t, 1)
            measured = [m for m in ph["moves"] if not m["warmup"]]
            lats = [m["latency_ms"] / 1000 for m in measured if m["latency_ms"] is not None]
            ph["summary"] = {"moves": len(measured), "no_send": sum(1 for m in measured if m["latency_ms"] is None),
                             **summary_ms(lats),
                             "liquidatable_total": sum(m["new_liquidatable"] for m in measured),
                             "liquidated_by_bot_total": sum(m["accounts_liquidated_by_bot"] for m in measured),
                             "reverted_sends_total": sum(m["liquidation_sends_reverted"] for m in measured),
                             "new_liquidatable_median": statistics.median([m["new_liquidatable"] for m in measured])
                             if measured else None}
            phases.append(ph)
        result = {"borrowers": len(dep.borrowers), "moves": args.moves, "step_pct": args.step,
                  "planned_per_move": per_move, "weth_start": p0, "weth_first_liquidatable": first,
                  "weth_answers": prices, "poll_s": args.poll, "quiet_s": args.quiet,
                  "pools_follow_oracle": not args.no_pools, "naive_cache": not args.naive_no_cache,
                  "aave_only": not args.all_protocols, "phases": phases, "workdir": str(workdir),
                  "loadavg_start": load0, "loadavg_end": os.getloadavg(),
                  "machine": machine()}
        ks = next((p["summary"] for p in phases if p["bot"] == "keeper"), None)
        ns = next((p["summary"] for p in phases if p["bot"] == "naive"), None)
        if ks and ns and ks.get("p50_ms") and ns.get("p50_ms"):
            result["naive_over_keeper_p50"] = round(ns["p50_ms"] / ks["p50_ms"], 1)
        return result
    finally:
        await h.heads.close()
        await h.relay.close()
        await h.rpc.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--borrowers", type=int, default=2000)
    ap.add_argument("--moves", type=int, default=15, help="measured moves (a warm-up move comes first)")
    ap.add_argument("--per-move-pct", type=float, default=0.25,
                    help="each move makes this share of the tracked accounts liquidatable, percent (default 0.25: "
                         "5 of 2,000, 25 of 10,000)")
    ap.add_argument("--step", type=float, default=None, help="instead: fixed WETH price steps, percent")
    ap.add_argument("--bots", type=lambda s: [b.strip() for b in s.split(",") if b.strip()], default=["keeper", "naive"])
    ap.add_argument("--poll", type=float, default=0.05, help="both bots' poll interval, s (the keeper also has ws heads)")
    ap.add_argument("--quiet", type=float, default=0.5, help="quiet time before each move, s (plus 0..quiet jitter)")
    ap.add_argument("--settle", type=float, default=0.5, help="a reaction is over after this long without a send, s")
    ap.add_argument("--keeper-timeout", type=float, default=15.0, help="no send within this long = no reaction, s")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--max-rounds", type=int, default=6,
                    help="blocks the keeper gets after B to finish a move before the cleaner steps in")
    ap.add_argument("--keeper-pending", action="store_true",
                    help="leave the keeper's mempool watch on (chain.watch_pending): it may start on the "
                         "pending oracle update before B is mined; sends are then counted from the update's "
                         "submission and can have negative latency")
    ap.add_argument("--no-pools", action="store_true", help="leave the Uniswap pools where they are")
    ap.add_argument("--naive-no-cache", action="store_true", help="web3 without cache_allowed_requests")
    ap.add_argument("--all-protocols", action="store_true", help="keep Maker and perps on in the keeper")
    ap.add_argument("--logs", type=Path, default=None, help="keep the bots' logs here (default: a temp dir)")
    ap.add_argument("--state-key", default=None,
                    help="use .devnet/cache/state-KEY.json as it is (no rebuild when the devnet sources changed)")
    ap.add_argument("--cache-dir", type=Path, default=None,
                    help="where --state-key's files are (default .devnet/cache; a copy elsewhere survives the "
                         "cache pruning old states when the devnet sources change)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the quiet-time jitter")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--naive-worker", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.naive_worker is not None:
        try:
            asyncio.run(naive_worker(json.loads(args.naive_worker.read_text())))
        except KeyboardInterrupt:
            pass
        return 0
    for b in args.bots:
        if b not in ("keeper", "naive"):
            ap.error(f"unknown bot {b!r} (keeper, naive)")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    random.seed(args.seed)
    from keeper.devnet import ensure_state, start_devnet

    t = time.monotonic()
    workdir = args.logs or Path(tempfile.mkdtemp(prefix="reaction-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.state_key:  # a state already in the cache, whatever the sources hash to now
        from keeper.devnet import Anvil
        from keeper.devnet.deploy import Deployment
        from keeper.devnet.state import DEFAULT_CACHE_DIR

        cache = args.cache_dir or DEFAULT_CACHE_DIR
        state = cache / f"state-{args.state_key}.json"
        dep = Deployment.load(cache / f"deployment-{args.state_key}.json")
        if len(dep.borrowers) != args.borrowers:
            ap.error(f"state {args.state_key} has {len(dep.borrowers)} borrowers, not {args.borrowers}")
        node = Anvil(port=0, state_load=state, log_path=workdir / "anvil.log").start()
        key = args.state_key
    else:
        from keeper.devnet.state import state_key

        ensure_state(args.borrowers)
        node, dep = start_devnet(port=0, n_borrowers=args.borrowers, log_path=workdir / "anvil.log")
        key = state_key(args.borrowers)
    print(f"devnet with {len(dep.borrowers)} borrowers ready in {time.monotonic() - t:.1f}s (logs in {workdir})",
          file=sys.stderr)
    source = _source_version()  # before the keeper starts: the code it runs
    try:
        r = asyncio.run(run(args, node, dep, workdir))
        r["devnet_state_key"] = key
        r["keeper_source"] = source
    finally:
        node.stop()
    if args.json:
        print(json.dumps(r, indent=1, default=str))
        return 0
    print(f"\nreaction latency, block with the price move mined -> first liquidation tx at the node "
          f"({r['borrowers']:,} tracked accounts, {r['machine']})")
    print(f"  {'accounts':>8} {'bot':<7} {'moves':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'max ms':>9} "
          f"{'no send':>8} {'liq./move':>9}")
    for p in r["phases"]:
        s = p["summary"]
        f = lambda v: "-" if v is None else f"{v:,.1f}"  # noqa: E731
        print(f"  {r['borrowers']:>8,} {p['bot']:<7} {s['moves']:>5} {f(s['p50_ms']):>9} {f(s['p90_ms']):>9} "
              f"{f(s['p99_ms']):>9} {f(s['max_ms']):>9} {s['no_send']:>8} {f(s['new_liquidatable_median']):>9}")
    for p in r["phases"]:
        s = p["summary"]
        print(f"  {p['bot']}: liquidated {s['liquidated_by_bot_total']} of the {s['liquidatable_total']} accounts "
              f"made liquidatable (the cleaner took the rest), {s['reverted_sends_total']} reverted sends")
    if "naive_over_keeper_p50" in r:
        print(f"  naive p50 / keeper p50 = {r['naive_over_keeper_p50']}x")
    print(f"  keeper source {r['keeper_source']}, devnet state {r['devnet_state_key']}, load average "
          f"{r['loadavg_start'][0]:.1f} at start, {r['loadavg_end'][0]:.1f} at end; logs in {r['workdir']}")
    for p in r["phases"]:
        if p.get("naive_full_sweep_s_median"):
            print(f"  naive full sweep of {r['borrowers']:,} accounts: {p['naive_full_sweep_s_median']} s (median)")
        if p.get("keeper_warnings"):
            print(f"  keeper warnings/errors logged: {p['keeper_warnings']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
