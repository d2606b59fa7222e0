"""Swap quotes for sizing: the keeper's pool book (one load per block, then exact offline swaps)
against the on-chain Uniswap V3 QuoterV2, the way the keeper quoted before (every request
through Multicall3, 40 quotes per eth_call, all in one JSON-RPC batch), in the same run on
the same devnet. The amounts are compared to the wei.

A size search prices dozens of sizes per opportunity; with the book they cost microseconds
each after one load, with QuoterV2 each is ~100k gas of EVM work on the node.

Usage: python bench/quotes.py [--sizes 400]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


async def run(url: str, dep, n_sizes: int) -> None:
    import structlog

    from keeper import abi, log as logmod
    from keeper.multicall import Call, Multicall
    from keeper.pricing.book import SwapVenues
    from keeper.rpc import Rpc

    logmod.setup("error", json_lines=True, stream=sys.stderr)
    t = dep.tokens
    rpc = Rpc((url,), timeout_s=120)
    mc = Multicall(rpc, dep.multicall3)
    try:
        block = int(await rpc.call("eth_blockNumber"), 16)
        pairs = [("WETH", "USDC", 10**18), ("WBTC", "USDC", 10**8), ("WETH", "WBTC", 10**18), ("USDC", "WETH", 10**6)]
        reqs = [(t[a], t[b], unit * (k + 1) * 1_000 // n_sizes) for a, b, unit in pairs for k in range(n_sizes // 4)]
        venues = SwapVenues(mc, v3_factory=dep.uniswap_factory, fee_tiers=(500, 3000, 10000), v2_factory=None,
                            connectors=(), log=structlog.get_logger())
        venues.watch(t[s] for s in ("WETH", "WBTC", "USDC"))
        await venues.book(block)  # pool discovery: once per run, not per block
        await rpc.call("evm_mine")
        t0 = time.perf_counter()
        book = await venues.book(block + 1)  # one block's load (discovery already done)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        ours = []
        for a, b, amount in reqs:
            r = book.quote(a, b, amount)
            ours.append(r.amount_out if r else 0)
        t_quote = time.perf_counter() - t0

        fn = abi.load("UniswapV3QuoterV2").fn("quoteExactInputSingle")
        calls = [Call(dep.uniswap_quoter_v2, fn.encode((a, b, amount, fee, 0)))
                 for a, b, amount in reqs for fee in (500, 3000, 10000)]
        t0 = time.perf_counter()
        res = []
        chunks = [calls[i:i + 40] for i in range(0, len(calls), 40)]
        for part in await asyncio.gather(*(mc.run(c, block + 1) for c in chunks)):
            res += part
        t_chain = time.perf_counter() - t0
        theirs = []
        for i in range(len(reqs)):
            best = 0
            for ok, data in res[3 * i:3 * i + 3]:
                if ok and len(data) >= 128:
                    best = max(best, fn.decode(data)[0])
            theirs.append(best)
        same = sum(x == y for x, y in zip(ours, theirs))
        print(f"{len(reqs)} quotes (4 pairs, sizes up to 1,000 units), devnet pools at block {block + 1}")
        print(f"{'method':<58} {'ms':>9}")
        print(f"{'keeper: pool book, one block load':<58} {t_load * 1e3:>9.1f}")
        print(f"{'keeper: pool book, all quotes offline':<58} {t_quote * 1e3:>9.1f}")
        print(f"{'keeper: total':<58} {(t_load + t_quote) * 1e3:>9.1f}")
        print(f"{'baseline: QuoterV2 x 3 fee tiers via Multicall3, concurrent':<58} {t_chain * 1e3:>9.1f}")
        print(f"identical to the wei: {same} of {len(reqs)}; "
              f"{t_chain / (t_load + t_quote):.0f}x faster")
    finally:
        await rpc.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, default=400)
    args = ap.parse_args()
    from keeper.devnet import start_devnet

    node, dep = start_devnet(port=0, n_borrowers=40, log_path=REPO / ".devnet" / "bench-quotes.log")
    try:
        asyncio.run(run(node.url, dep, args.sizes))
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
