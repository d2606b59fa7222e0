"""Benchmark: accounts per second for a full health refresh of every tracked Aave V3 borrower.

Same run, same chain, same accounts:
  keeper    the keeper's full read from the node (health = "chain" every block; the local
            model's check every full_check_blocks): AaveV3 adapter refresh() = getUserAccountData for every
            account (plus prices, reserve configs, inventory) in Multicall3 aggregate3 chunks
            sent as JSON-RPC batches over aiohttp (the default chain.max_batch_calls,
            max_request_bytes and max_concurrent_requests: config/devnet.toml sets none);
  baseline  web3.py AsyncWeb3, one pool.functions.getUserAccountData(user).call() per account,
            awaited one after another (how most open-source bots do it);
  baseline-gather  the same web3.py calls, all in flight at once with asyncio.gather.

Usage: python bench/refresh.py [--borrowers 2000] [--rounds 5]
The first run deploys and seeds the devnet with that many borrowers (about a minute for
2,000) and caches the chain state; later runs load it in well under a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


async def measure(url: str, dep, rounds: int) -> dict:
    from web3 import AsyncWeb3
    from web3.providers import AsyncHTTPProvider

    from keeper import abi
    from keeper import log as logmod
    from keeper.config import load_config
    from keeper.app import Keeper

    logmod.setup("warning", json_lines=True, stream=sys.stderr)
    cfg = load_config(REPO / "config" / "devnet.toml", environ={"KEEPER_RPC_URL": url})
    keeper = Keeper(cfg, dry_run=True)
    await keeper.start()
    head = await keeper.read_head()
    adapter = next(iter(keeper.adapters.values()))
    await adapter.sync(head)
    accounts = sorted(adapter.accounts)
    n = len(accounts)

    keeper_times = []
    for _ in range(rounds):
        t = time.perf_counter()
        await adapter.refresh(head)
        keeper_times.append(time.perf_counter() - t)
    tracked_with_debt = len(adapter.health)

    w3 = AsyncWeb3(AsyncHTTPProvider(url))
    pool = w3.eth.contract(address=adapter.pool, abi=json.loads((abi.ABI_DIR / "AavePool.json").read_text()))
    base_times, gather_times = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        hf = []
        for a in accounts:
            hf.append((await pool.functions.getUserAccountData(a).call(block_identifier=head.number))[5])
        base_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        await asyncio.gather(*(pool.functions.getUserAccountData(a).call(block_identifier=head.number)
                                     for a in accounts))
        gather_times.append(time.perf_counter() - t)
    # both ways must read the same health factors
    assert [adapter.health[a].health_factor_wad for a in accounts if a in adapter.health] == \
        [h for a, h in zip(accounts, hf) if a in adapter.health]
    await w3.provider.disconnect()
    await keeper.close()
    k, b, g = statistics.median(keeper_times), statistics.median(base_times), statistics.median(gather_times)
    return {
        "accounts": n, "with_debt": tracked_with_debt, "rounds": rounds,
        "keeper_s": k, "baseline_s": b, "baseline_gather_s": g,
        "keeper_accounts_per_s": n / k, "baseline_accounts_per_s": n / b, "baseline_gather_accounts_per_s": n / g,
        "speedup_vs_baseline": b / k, "speedup_vs_gather": g / k,
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--borrowers", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from keeper.devnet import ensure_state, start_devnet

    t = time.monotonic()
    ensure_state(args.borrowers)
    node, dep = start_devnet(port=0, n_borrowers=args.borrowers, log_path=REPO / ".devnet" / "bench-anvil.log")
    print(f"devnet with {args.borrowers} borrowers ready in {time.monotonic() - t:.1f}s", file=sys.stderr)
    try:
        r = asyncio.run(measure(node.url, dep, args.rounds))
    finally:
        node.stop()
    if args.json:
        print(json.dumps(r, indent=1))
    else:
        print(f"full health refresh of {r['accounts']} accounts, median of {r['rounds']} rounds ({r['machine']})")
        print(f"  {'method':<52} {'seconds':>9} {'accounts/s':>12}")
        print(f"  {'keeper: Multicall3 batches over raw JSON-RPC':<52} {r['keeper_s']:>9.3f} {r['keeper_accounts_per_s']:>12,.0f}")
        print(f"  {'baseline: web3.py call() per account, sequential':<52} {r['baseline_s']:>9.3f} {r['baseline_accounts_per_s']:>12,.0f}")
        print(f"  {'baseline: web3.py call() per account, gathered':<52} {r['baseline_gather_s']:>9.3f} {r['baseline_gather_accounts_per_s']:>12,.0f}")
        print(f"  keeper is {r['speedup_vs_baseline']:.0f}x the sequential baseline, {r['speedup_vs_gather']:.0f}x the gathered one")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
