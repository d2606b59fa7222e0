"""Benchmark: cold start, per-block cycle cost and memory of the Aave V3 adapter at 1,000 /
10,000 / 100,000 tracked accounts, health = "local" (the keeper's default: positions kept
locally, health recomputed only where something moved) beside health = "chain" (baseline:
getUserAccountData for every account every block).

Issue goals checked: 100,000 tracked accounts with no failed request, RSS <= 300 MB,
per-price-move work proportional to the accounts exposed to that price (not to all
accounts); cold start with 10,000 borrowers <= 10 s.

What runs (one command; every measurement in its own child process, so RSS figures are one
keeper's own and nothing is warm from an earlier part; anvil is a separate process):

1. Cold start (--cold, default 1,000 and 10,000 REAL borrowers seeded on the devnet; the goal
   is at 10,000, 1,000 shows how time and peak memory grow; a fresh anvil loaded from the
   cached state for each run): Keeper(cfg).start(), read_head(), then the
   first full dry-run cycle `keeper.cycle(head)`. Split into: start() (connect, pool book,
   adapter start: reserves); backfill = adapter.sync (eth_getLogs from block 0); account reads
   = chainstate.read_accounts of every borrower (local only; it runs concurrently with the
   first full getUserAccountData check, both inside refresh_local); health refresh =
   refresh_local / refresh as a whole; the rest of the cycle. Same for health = "chain".
   Also RSS after, and the peak RSS (VmHWM) of the process.
2. Per-block cycle cost (--sizes, default 1,000 and 10,000 REAL borrowers): one local and one
   chain keeper against the same anvil, started and past their first cycle; then for every
   block both time `keeper.cycle(head)` (dry-run) on the same head:
     steady   an empty block (evm_mine): no price moved, no event;
     move     one asset's feed price set with keeper/devnet/prices.py set_price (-0.5%, then
              back; --moves such pairs per asset), its block mined (set_price also pokes the devnet's Maker spotter and
              arbitrages its pools: more blocks, no Aave event).
   Reported per cycle: seconds (median and max), the time spent in Python's cyclic garbage
   collector during it (gc.callbacks) and its full (generation-2) collections, adapter.recomputed (local), the accounts exposed
   to the moved reserve (adapter.exposed[reserve id]), HTTP POSTs, JSON-RPC calls in them and
   Multicall3 sub-calls, counted by wrapping the keeper's own Rpc._exchange and
   Multicall.run on the instance (keeper/ is not modified).
3. 100,000 accounts (--synthetic, default 100,000): SYNTHETIC accounts. Seeding 100,000
   borrowers on anvil is too slow, so a local keeper is started on the largest real state
   (10,000 borrowers), runs its first cycle (full check against the chain), and then
   synthetic accounts are added to its LOCAL MODEL only, until the target: each is a real
   AccountState cloned under a fresh address (0x5ca1e...), with its balances scaled by a
   random factor (0.1x..10x, each balance jittered +-3%) and, for two-collateral accounts,
   sometimes one collateral dropped from the bitmap; a clone whose health would be below
   1.02 (or without debt) is drawn again, so none is confirmed against the node. They go
   into adapter.model, .accounts, .exposed, .health and (below near_health_factor) .near,
   never into .dirty, so they are never read from the node. They do not exist on chain:
   the full check every full_check_blocks would ask getUserAccountData about them (zeros:
   disagreements), so this part runs with full_check_blocks = 1,000,000 (env
   KEEPER_PROTOCOLS__0__FULL_CHECK_BLOCKS); health = "chain" cannot run on them at all.
   Measured: RSS (VmRSS, /proc/self/status) before the keeper, after the real first cycle,
   after adding the synthetic accounts, after the cycles, and the peak (VmHWM); the pure
   compute time of local.account_data for every account (three times, each at a new block
   timestamp); one full gc.collect() and the objects it traverses; cycle time on steady blocks
   and on blocks where one asset's price moved (exposed vs recomputed vs total); synthetic
   accounts read from the node (must be 0). The RSS here includes what the real first cycle
   on 10,000 borrowers left behind (its transient peak is not given back to the OS); a
   keeper with 100,000 REAL borrowers would also go through a first cycle (backfill and
   account reads) ten times as large, which this part does not exercise (see part 1's peak).

Failed requests: every child counts HTTP requests that raised or answered >= 400 and
JSON-RPC error objects in the answers; the total is reported (0 expected).

Only the Aave V3 protocol aave-v3-devnet is enabled (every other protocol of the devnet config
off: the others are small and would blur the Aave figures); Keeper(..., dry_run=True,
record=False): no SQLite store, no head watcher (as `keeper scan`); config/devnet.toml's
chain limits (defaults: 50 calls / 1 MiB per HTTP request, 4 in flight, 400 calls per
aggregate3).

Times are wall-clock on whatever else the machine is running: the load average at start and
end is printed with the results.

Usage: python bench/scale.py [--sizes 1000,10000] [--synthetic 100000] [--cold 1000,10000]
                             [--blocks 5] [--assets WBTC,WETH,LINK] [--moves 2] [--json]
The first run builds the devnet states it lacks (about 15 s for 1,000 borrowers, ~5 min for
10,000; cached in .devnet/cache/).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import only_aave  # noqa: E402

MOVE = (995, 1000)  # each price move: -0.5%, then back to the original answer
SYNTH_MIN_HF = 1_020_000_000_000_000_000


# -- measuring helpers --------------------------------------------------------------------
def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in kB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0])
    return out


def rss_mb() -> float:
    gc.collect()
    return proc_status()["VmRSS"] / 1024


def peak_mb() -> float:
    return proc_status()["VmHWM"] / 1024


class GcClock:
    """Seconds spent in the cyclic garbage collector (gc.callbacks), and collections per generation."""

    def __init__(self) -> None:
        self.s = 0.0
        self.collections = [0, 0, 0]
        self._t0 = 0.0
        gc.callbacks.append(self._cb)

    def _cb(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.s += time.perf_counter() - self._t0
            self.collections[info["generation"]] += 1


GC = GcClock()


class Counters:
    """HTTP POSTs, JSON-RPC calls in them, Multicall3 sub-calls, bytes sent, failures."""

    FIELDS = ("posts", "calls", "subcalls", "bytes_out", "failed_posts", "rpc_errors")

    def __init__(self) -> None:
        for f in self.FIELDS:
            setattr(self, f, 0)
        self.errors: list[str] = []

    def snap(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in self.FIELDS}

    def since(self, before: dict[str, int]) -> dict[str, int]:
        return {f: getattr(self, f) - before[f] for f in self.FIELDS}


def instrument(keeper: Any) -> Counters:
    """Count at the keeper's own transport: Rpc._exchange (one HTTP POST) and Multicall.run,
    both wrapped on the instances (before start(), so start-up requests count too)."""
    c = Counters()
    rpc, mc = keeper.rpc, keeper.mc
    exchange, run = rpc._exchange, mc.run

    async def counted_exchange(ep: Any, body: str) -> Any:
        c.posts += 1
        c.calls += body.count('"jsonrpc"')
        c.bytes_out += len(body)
        try:
            reply = await exchange(ep, body)
        except Exception as e:
            c.failed_posts += 1
            c.errors.append(f"{type(e).__name__}: {str(e)[:200]}")
            raise
        items = reply if isinstance(reply, list) else [reply]
        for r in items:
            if isinstance(r, dict) and "error" in r:
                c.rpc_errors += 1
                c.errors.append(str(r["error"])[:200])
        return reply

    async def counted_run(calls: Any, block: Any = "latest") -> Any:
        c.subcalls += len(calls)
        return await run(calls, block)

    rpc._exchange = counted_exchange
    mc.run = counted_run
    return c


class Timers:
    """Wrap coroutine functions; total seconds and calls per name."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self.n: dict[str, int] = {}

    def wrap(self, name: str, fn: Any) -> Any:
        async def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*a, **k)
            finally:
                self.t[name] = self.t.get(name, 0.0) + time.perf_counter() - t0
                self.n[name] = self.n.get(name, 0) + 1
        return timed

    def reset(self) -> None:
        self.t.clear()
        self.n.clear()


def make_keeper(url: str, mode: str, full_check_blocks: int | None = None) -> Any:
    from keeper.app import Keeper
    from keeper.config import load_config

    env = {"KEEPER_RPC_URL": url, "KEEPER_PROTOCOLS__0__HEALTH": mode}
    only_aave(env)  # every other protocol of the devnet config off
    if full_check_blocks is not None:
        env["KEEPER_PROTOCOLS__0__FULL_CHECK_BLOCKS"] = str(full_check_blocks)
    cfg = load_config(REPO / "config" / "devnet.toml", environ=env)
    assert cfg.protocols[0].kind == "aave_v3" and cfg.protocols[0].health == mode
    return Keeper(cfg, dry_run=True, record=False)


def aave(keeper: Any) -> Any:
    (adapter,) = [a for a in keeper.adapters.values() if a.kind == "aave_v3"]
    return adapter


def mine(url: str) -> None:
    from keeper.devnet.jsonrpc import JsonRpc

    with JsonRpc(url) as rpc:
        rpc.call("evm_mine", [])


def reserve_id(adapter: Any, symbol: str) -> int:
    for r in adapter.reserves:
        if r.symbol == symbol:
            return r.id
    raise SystemExit(f"no reserve {symbol!r}; the devnet has {[r.symbol for r in adapter.reserves]}")


def timed_blocks(url: str, dep: Any, adapter: Any, blocks: int, assets: list[str], moves: int,
                 synthetic: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """The blocks the cycles are timed on (parts 2 and 3), one at a time: `blocks` empty blocks
    ({"kind": "steady"}), then per asset `moves` pairs of price moves (MOVE, then back), each
    {"kind": "move SYM", "asset": SYM, "exposed": the adapter's accounts exposed to it} (and
    "exposed_synthetic", those in `synthetic`, when given). The caller times its cycles on each
    block before asking for the next."""
    from keeper.devnet import get_price, set_price

    for _ in range(blocks):
        mine(url)
        yield {"kind": "steady"}
    for sym in assets:
        rid = reserve_id(adapter, sym)
        p0 = get_price(url, dep, sym)
        for price in (p0 * MOVE[0] // MOVE[1], p0) * moves:
            set_price(url, dep, sym, price)
            row: dict[str, Any] = {"kind": f"move {sym}", "asset": sym, "exposed": len(adapter.exposed.get(rid, ()))}
            if synthetic is not None:
                row["exposed_synthetic"] = len(adapter.exposed.get(rid, set()) & synthetic)
            yield row


async def timed_cycle(keeper: Any, c: Counters, timers: Timers | None = None) -> dict[str, Any]:
    head = await keeper.read_head()
    before = c.snap()
    if timers is not None:
        timers.reset()
    gc0, full0 = GC.s, GC.collections[2]
    t0 = time.perf_counter()
    await keeper.cycle(head)
    dt = time.perf_counter() - t0
    a = aave(keeper)
    out = {"block": head.number, "s": dt, "gc_s": GC.s - gc0, "gc_full": GC.collections[2] - full0,
           **c.since(before), "tracked": len(a.accounts)}
    if a.cfg.health == "local":
        out["recomputed"] = a.recomputed
        out["near"] = len(a.near)
    if timers is not None:
        out["refresh_s"] = timers.t.get("refresh", 0.0)
    return out


# -- part 1: cold start -------------------------------------------------------------------
async def part_cold(url: str, mode: str) -> dict[str, Any]:
    from keeper import log as logmod
    from keeper.protocols.aave_v3 import chainstate

    logmod.setup("warning", json_lines=True, stream=sys.stderr)
    rss0 = rss_mb()
    timers = Timers()
    chainstate.read_accounts = timers.wrap("read_accounts", chainstate.read_accounts)
    t0 = time.perf_counter()
    keeper = make_keeper(url, mode)
    c = instrument(keeper)
    await keeper.start()
    t_start = time.perf_counter() - t0
    a = aave(keeper)
    a.sync = timers.wrap("sync", a.sync)
    if mode == "local":
        a.refresh_local = timers.wrap("refresh", a.refresh_local)
    else:
        a.refresh = timers.wrap("refresh", a.refresh)
    start_req = c.snap()
    t1 = time.perf_counter()
    head = await keeper.read_head()
    await keeper.cycle(head)
    t_cycle = time.perf_counter() - t1
    total = time.perf_counter() - t0
    out = {
        "mode": mode, "head": head.number, "tracked": len(a.accounts), "with_debt": len(a.health),
        "total_s": total, "start_s": t_start, "first_cycle_s": t_cycle,
        "backfill_s": timers.t.get("sync", 0.0), "account_reads_s": timers.t.get("read_accounts", 0.0),
        "refresh_s": timers.t.get("refresh", 0.0),
        "rest_of_cycle_s": t_cycle - timers.t.get("sync", 0.0) - timers.t.get("refresh", 0.0),
        "requests_start": start_req, "requests_first_cycle": c.since(start_req), "requests_total": c.snap(),
        "rss_before_mb": rss0, "rss_after_mb": rss_mb(), "peak_rss_mb": peak_mb(), "gc_s": GC.s,
        "disagreements": getattr(a, "disagreements", 0), "errors": c.errors[:5],
        "failed": c.failed_posts + c.rpc_errors,
    }
    if mode == "local":
        out["model"] = len(a.model)
    await keeper.close()
    return out


# -- part 2: per-block cycles, local and chain side by side ------------------------------
async def part_cycles(url: str, dep_path: str, blocks: int, assets: list[str], moves: int) -> dict[str, Any]:
    from keeper import log as logmod
    from keeper.devnet.deploy import Deployment

    logmod.setup("warning", json_lines=True, stream=sys.stderr)
    dep = Deployment.load(Path(dep_path))
    modes = ("local", "chain")
    keepers = {m: make_keeper(url, m) for m in modes}
    counters = {m: instrument(k) for m, k in keepers.items()}
    timers = {m: Timers() for m in modes}
    first: dict[str, Any] = {}
    for m, k in keepers.items():
        await k.start()
        a = aave(k)
        if m == "local":
            a.refresh_local = timers[m].wrap("refresh", a.refresh_local)
        else:
            a.refresh = timers[m].wrap("refresh", a.refresh)
        first[m] = await timed_cycle(k, counters[m], timers[m])
    # one more block so the first cycle's one-off work (full check, reads of everyone) is past
    mine(url)
    for m, k in keepers.items():
        await timed_cycle(k, counters[m], timers[m])
    loc = aave(keepers["local"])
    rows: list[dict[str, Any]] = []
    for block in timed_blocks(url, dep, loc, blocks, assets, moves):
        kind, about = block["kind"], {key: v for key, v in block.items() if key != "kind"}
        for m, k in keepers.items():
            rows.append({"kind": kind, "mode": m, **about, **await timed_cycle(k, counters[m], timers[m])})
    out = {"tracked": len(loc.accounts), "first_cycle": first, "rows": rows,
           "exposed": {r.symbol: len(loc.exposed.get(r.id, ())) for r in loc.reserves},
           "near": len(loc.near), "disagreements": loc.disagreements,
           "failed": sum(c.failed_posts + c.rpc_errors for c in counters.values()),
           "errors": [e for c in counters.values() for e in c.errors][:5]}
    for k in keepers.values():
        await k.close()
    return out


# -- part 3: synthetic accounts in the local model ----------------------------------------
def add_synthetic(adapter: Any, target: int, ts: int, seed: int = 1) -> tuple[set[str], dict[str, Any]]:
    """Clone the adapter's real AccountStates into its local model until `target` accounts
    (see the module docstring). Returns the synthetic addresses and a summary."""
    from keeper.protocols.aave_v3 import local
    from keeper.protocols.aave_v3.model import AccountHealth

    rng = random.Random(seed)
    prices = {r.id: r.price for r in adapter.reserves if r.price_problem in (None, "zero")}
    sources = [st for u, st in sorted(adapter.model.items()) if u in adapter.health and st.variable_debt]
    if not sources:
        raise SystemExit("no real account with debt to clone")
    near_wad = adapter.cfg.near_health_factor_wad
    added: set[str] = set()
    redrawn = dropped = 0
    i = 0
    while len(adapter.model) < target:
        src = rng.choice(sources)
        f = 10 ** rng.uniform(-1, 1)
        config = src.config
        coll = {rid: int(v * f * rng.uniform(0.97, 1.03)) for rid, v in src.collateral.items()}
        if len(coll) >= 2 and rng.random() < 0.3:
            rid = rng.choice(sorted(coll))
            del coll[rid]
            config &= ~(1 << (2 * rid + 1))  # collateral bit off (the reserve is not borrowed)
            dropped += 1
        st = local.AccountState(
            config=config, emode_category=src.emode_category, collateral=coll,
            variable_debt={rid: int(v * f * rng.uniform(0.97, 1.03)) for rid, v in src.variable_debt.items()},
            stable_debt={rid: (int(p * f), rate, t) for rid, (p, rate, t) in src.stable_debt.items()})
        d = local.account_data(st, adapter.rstates, prices, adapter.emode_cats, adapter._emode_prices, ts)
        if not d.total_debt_base or d.health_factor_wad < SYNTH_MIN_HF:
            redrawn += 1
            continue
        u = "0x5ca1e" + f"{i:035x}"
        i += 1
        adapter.model[u] = st
        adapter.accounts.add(u)
        for rid in st.exposure:
            adapter.exposed.setdefault(rid, set()).add(u)
        adapter.health[u] = AccountHealth(d.total_collateral_base, d.total_debt_base,
                                          d.avg_liquidation_threshold_bps, d.health_factor_wad)
        if d.health_factor_wad < near_wad:
            adapter.near.add(u)
        added.add(u)
    return added, {"added": len(added), "redrawn": redrawn, "collateral_dropped": dropped,
                   "sources": len(sources)}


def compute_all(adapter: Any, ts: int) -> float:
    """Pure compute: local.account_data for every account in the model at ts."""
    from keeper.protocols.aave_v3 import local

    prices = {r.id: r.price for r in adapter.reserves if r.price_problem in (None, "zero")}
    rstates, cats, eprices = adapter.rstates, adapter.emode_cats, adapter._emode_prices
    account_data = local.account_data
    t0 = time.perf_counter()
    for st in adapter.model.values():
        account_data(st, rstates, prices, cats, eprices, ts)
    return time.perf_counter() - t0


async def part_synthetic(url: str, dep_path: str, target: int, blocks: int, assets: list[str], moves: int
                         ) -> dict[str, Any]:
    from keeper import log as logmod
    from keeper.devnet.deploy import Deployment
    from keeper.protocols.aave_v3 import chainstate

    logmod.setup("warning", json_lines=True, stream=sys.stderr)
    dep = Deployment.load(Path(dep_path))
    rss: dict[str, float] = {"python_and_imports": rss_mb()}
    synthetic: set[str] = set()
    reread = {"synthetic_users_read": 0, "read_accounts_calls": 0, "users_read": 0}
    orig_read = chainstate.read_accounts

    async def read_accounts(mc: Any, pool: str, reserves: Any, users: Any, block: Any, failed: Any = None) -> Any:
        reread["read_accounts_calls"] += 1
        reread["users_read"] += len(users)
        reread["synthetic_users_read"] += sum(1 for u in users if u in synthetic)
        return await orig_read(mc, pool, reserves, users, block, failed)

    chainstate.read_accounts = read_accounts
    keeper = make_keeper(url, "local", full_check_blocks=1_000_000)
    c = instrument(keeper)
    timers = Timers()
    t0 = time.perf_counter()
    await keeper.start()
    a = aave(keeper)
    a.refresh_local = timers.wrap("refresh", a.refresh_local)
    first = await timed_cycle(keeper, c, timers)
    real = len(a.model)
    rss["after_real_first_cycle"] = rss_mb()
    t_real = time.perf_counter() - t0
    head = await keeper.read_head()
    t1 = time.perf_counter()
    synthetic, summary = add_synthetic(a, target, head.timestamp)
    t_add = time.perf_counter() - t1
    rss[f"after_synthetic_to_{len(a.model)}"] = rss_mb()
    compute = [compute_all(a, head.timestamp + k) for k in (101, 102, 103)]
    t2 = time.perf_counter()
    gc.collect()
    full_gc_s = time.perf_counter() - t2
    gc_objects = len(gc.get_objects())
    rows: list[dict[str, Any]] = []
    for block in timed_blocks(url, dep, a, blocks, assets, moves, synthetic):
        rows.append({**block, **await timed_cycle(keeper, c, timers)})
    rss["after_cycles"] = rss_mb()
    out = {
        "real": real, "target": target, "tracked": len(a.accounts), "model": len(a.model), "clone": summary,
        "real_start_and_first_cycle_s": t_real, "first_cycle": first, "add_s": t_add,
        "compute_all_s": compute, "compute_per_account_us": min(compute) / len(a.model) * 1e6,
        "full_gc_s": full_gc_s, "gc_tracked_objects": gc_objects,
        "rows": rows, "rss_mb": rss, "peak_rss_mb": peak_mb(),
        "exposed": {r.symbol: len(a.exposed.get(r.id, ())) for r in a.reserves}, "near": len(a.near),
        "synthetic_in_model_after": len(synthetic & set(a.model)),
        "disagreements": a.disagreements, "reads": reread,
        "failed": c.failed_posts + c.rpc_errors, "errors": c.errors[:5],
        "full_check_blocks": a.cfg.full_check_blocks,
    }
    await keeper.close()
    return out


# -- orchestration -----------------------------------------------------------------------
def child(part: str, **kw: Any) -> dict[str, Any]:
    """Run one part in a fresh Python process; its JSON answer on stdout, its log to a file."""
    log = REPO / ".devnet" / f"bench-scale-{part}.log"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--args", json.dumps(kw)]
    with open(log, "a") as err:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"bench part {part} failed (exit {p.returncode}); see {log}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def run_child_part(part: str, kw: dict[str, Any]) -> None:
    fn = {"cold": part_cold, "cycles": part_cycles, "synthetic": part_synthetic}[part]
    out = asyncio.run(fn(**kw))
    print(json.dumps(out))


def devnet(n: int, tag: str) -> tuple[Any, str, float]:
    from keeper.devnet import start_devnet
    from keeper.devnet.state import state_paths

    t = time.monotonic()
    node, _dep = start_devnet(port=0, n_borrowers=n, log_path=REPO / ".devnet" / f"bench-scale-anvil-{tag}.log")
    return node, str(state_paths(n)[1]), time.monotonic() - t


def med(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows) if rows else float("nan")


def summarize_cycles(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median per (kind, mode)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["kind"], r.get("mode", "local")), []).append(r)
    out = []
    for (kind, mode), rs in groups.items():
        s = {"kind": kind, "mode": mode, "n": len(rs), "s": med(rs, "s"), "posts": med(rs, "posts"),
             "calls": med(rs, "calls"), "subcalls": med(rs, "subcalls"), "bytes_out": med(rs, "bytes_out"),
             "gc_s": med(rs, "gc_s"), "gc_full": sum(r["gc_full"] for r in rs), "max_s": max(r["s"] for r in rs),
             "tracked": rs[-1]["tracked"]}
        if "recomputed" in rs[0]:
            s["recomputed"] = med(rs, "recomputed")
            s["near"] = med(rs, "near")
        if "exposed" in rs[0]:
            s["exposed"] = med(rs, "exposed")
        if "refresh_s" in rs[0]:
            s["refresh_s"] = med(rs, "refresh_s")
        out.append(s)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="Cold start, per-block cycle cost and memory of the Aave V3 adapter "
                                 "at 1,000 / 10,000 / 100,000 tracked accounts, health = local vs chain.")
    ap.add_argument("--sizes", default="1000,10000", help="real borrower counts for the per-block cycles")
    ap.add_argument("--synthetic", type=int, default=100_000, help="accounts in the local model for part 3 (0: skip)")
    ap.add_argument("--cold", default="1000,10000",
                    help="real borrower counts for the cold start (the goal is at 10,000; empty: skip)")
    ap.add_argument("--blocks", type=int, default=5, help="steady (empty) blocks timed per size")
    ap.add_argument("--assets", default="WBTC,WETH,LINK", help="assets whose price moves (one at a time)")
    ap.add_argument("--moves", type=int, default=2, help="down-and-back price moves per asset")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--args", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        run_child_part(args.part, json.loads(args.args))
        return 0

    from keeper.devnet import ensure_state

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    assets = [s.strip() for s in args.assets.split(",") if s.strip()]
    colds = [int(s) for s in args.cold.split(",") if s.strip()]
    base = max(sizes) if sizes else max(colds or [10_000])
    t_all = time.monotonic()
    for n in sorted(set(sizes + colds + ([base] if args.synthetic else [])) - {0}):
        t = time.monotonic()
        ensure_state(n)
        print(f"devnet state with {n} borrowers ready ({time.monotonic() - t:.1f}s)", file=sys.stderr)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus {platform.python_implementation()} "
                   f"{platform.python_version()}",
        "move": f"{MOVE[0] / MOVE[1] - 1:+.1%} then back", "loadavg_start": os.getloadavg()[0],
        "cold": {}, "cycles": {}, "synthetic": None}
    for n in colds:
        for mode in ("local", "chain"):
            node, _dep, load_s = devnet(n, f"cold-{mode}")
            try:
                r = child("cold", url=node.url, mode=mode)
            finally:
                node.stop()
            r["anvil_load_s"] = load_s
            r["borrowers"] = n
            result["cold"][f"{n}-{mode}"] = r
            print(f"cold start {n} {mode}: {r['total_s']:.2f}s", file=sys.stderr)
    for n in sizes:
        node, dep_path, _ = devnet(n, f"cycles-{n}")
        try:
            r = child("cycles", url=node.url, dep_path=dep_path, blocks=args.blocks, assets=assets, moves=args.moves)
            r["summary"] = summarize_cycles(r["rows"])
            result["cycles"][str(n)] = r
            print(f"cycles at {n}: done", file=sys.stderr)
            if args.synthetic and n == base:
                s = child("synthetic", url=node.url, dep_path=dep_path, target=args.synthetic,
                          blocks=args.blocks, assets=assets, moves=args.moves)
                s["summary"] = summarize_cycles(s["rows"])
                result["synthetic"] = s
                print(f"synthetic {args.synthetic}: done", file=sys.stderr)
        finally:
            node.stop()
    if args.synthetic and base not in sizes:
        node, dep_path, _ = devnet(base, "synthetic")
        try:
            s = child("synthetic", url=node.url, dep_path=dep_path, target=args.synthetic,
                      blocks=args.blocks, assets=assets, moves=args.moves)
            s["summary"] = summarize_cycles(s["rows"])
            result["synthetic"] = s
        finally:
            node.stop()
    parts = [*result["cold"].values(), *result["cycles"].values()] + ([result["synthetic"]] if result["synthetic"] else [])
    result["failed_requests"] = sum(p["failed"] for p in parts)
    result["wall_s"] = time.monotonic() - t_all
    result["loadavg_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_table(result)
    return 0


def print_table(r: dict[str, Any]) -> None:
    print(f"bench/scale.py  ({r['machine']}; load average {r['loadavg_start']:.1f} at start, {r['loadavg_end']:.1f} "
          f"at end; Aave V3 only, dry-run; price move {r['move']})")
    if r["cold"]:
        print("\n1. cold start, REAL borrowers: Keeper.start() + read_head() + the first full cycle (seconds)")
        print(f"  {'borrowers':>9} {'health':<6} {'total':>6} {'start':>6} {'backfill':>8} {'acct reads':>10} "
              f"{'refresh':>7} {'rest':>5} {'POSTs':>6} {'calls':>6} {'sub-calls':>9} {'MB sent':>7} {'RSS MB':>6} "
              f"{'peak MB':>7} {'disagree':>8}")
        for c in r["cold"].values():
            reads = f"{c['account_reads_s']:.2f}" if c["mode"] == "local" else "-"
            q = c["requests_total"]
            print(f"  {c['borrowers']:>9,} {c['mode']:<6} {c['total_s']:>6.2f} {c['start_s']:>6.2f} "
                  f"{c['backfill_s']:>8.2f} {reads:>10} {c['refresh_s']:>7.2f} {c['rest_of_cycle_s']:>5.2f} "
                  f"{q['posts']:>6,} {q['calls']:>6,} {q['subcalls']:>9,} {q['bytes_out'] / 2**20:>7.1f} "
                  f"{c['rss_after_mb']:>6.0f} {c['peak_rss_mb']:>7.0f} {c['disagreements']:>8}")
        print("  local: the account reads run concurrently with the first getUserAccountData check of every account,\n"
              "  both inside refresh. Goal: total <= 10 s at 10,000.")
    for n, c in r["cycles"].items():
        print(f"\n2. per-block cycle, {int(n):,} REAL borrowers ({c['tracked']:,} tracked; near threshold "
              f"{c['near']:,}; exposed per reserve {c['exposed']}; disagreements {c['disagreements']})")
        _cycle_table(c["summary"])
    s = r["synthetic"]
    if s:
        grow = list(s["rss_mb"].values())
        per = (grow[2] - grow[1]) * 1024 / max(1, s["clone"]["added"])
        print(f"\n3. {s['model']:,} accounts = {s['real']:,} real + {s['clone']['added']:,} SYNTHETIC (cloned into "
              f"the local model only; full_check_blocks = {s['full_check_blocks']:,}); health = local")
        print("  RSS MB: " + ", ".join(f"{k} {v:.0f}" for k, v in s["rss_mb"].items())
              + f"; peak {s['peak_rss_mb']:.0f} (goal <= 300); {per:.2f} kB per synthetic account")
        print(f"  pure compute, local.account_data for all {s['model']:,} (model order): "
              + ", ".join(f"{x:.3f}" for x in s["compute_all_s"]) + f" s = {s['compute_per_account_us']:.2f} µs/account")
        print(f"  one full garbage collection (gc.collect()) with {s['gc_tracked_objects']:,} tracked objects: "
              f"{s['full_gc_s']:.3f} s")
        print(f"  adding them took {s['add_s']:.1f} s ({s['clone']['redrawn']:,} draws below HF 1.02 redrawn, "
              f"{s['clone']['collateral_dropped']:,} with a collateral dropped from the bitmap)")
        print(f"  exposed per reserve {s['exposed']}; near threshold {s['near']:,}")
        _cycle_table(s["summary"])
        rd = s["reads"]
        print(f"  synthetic accounts read from the node: {rd['synthetic_users_read']} (accounts read in all: "
              f"{rd['users_read']:,}); synthetic accounts still in the model: {s['synthetic_in_model_after']:,}; "
              f"disagreements: {s['disagreements']}")
    print("\n  cycle s: median (max); gc s: median time in the cyclic garbage collector during the cycle, full: "
          "generation-2 collections in all those cycles;\n  µs/acct: refresh s / recomputed. POSTs, calls, "
          "sub-calls: HTTP requests, JSON-RPC calls, Multicall3 sub-calls in the cycle (read_head, 1 POST, excluded).")
    print(f"\nfailed requests (HTTP errors + JSON-RPC error objects), all parts: {r['failed_requests']}"
          f"   wall time {r['wall_s']:.0f} s")


def _cycle_table(summary: list[dict[str, Any]]) -> None:
    print(f"  {'block':<10} {'health':<6} {'cycle s':>15} {'refresh s':>9} {'gc s':>6} {'full':>4} {'exposed':>8} "
          f"{'recomputed':>10} {'µs/acct':>7} {'POSTs':>5} {'calls':>5} {'sub-calls':>9} {'KB sent':>8}")
    for s in summary:
        exp = f"{s['exposed']:,.0f}" if "exposed" in s else "-"
        rec = f"{s['recomputed']:,.0f}" if "recomputed" in s else "all"
        ref = f"{s['refresh_s']:.3f}" if "refresh_s" in s else "-"
        per = (f"{s['refresh_s'] / s['recomputed'] * 1e6:.1f}" if s.get("recomputed", 0) >= 1000 else "-")
        cyc = f"{s['s']:.3f} ({s['max_s']:.3f})"
        print(f"  {s['kind']:<10} {s['mode']:<6} {cyc:>15} {ref:>9} {s['gc_s']:>6.3f} {s['gc_full']:>4} {exp:>8} "
              f"{rec:>10} {per:>7} {s['posts']:>5.0f} {s['calls']:>5.0f} {s['subcalls']:>9,.0f} "
              f"{s['bytes_out'] / 1024:>8.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
