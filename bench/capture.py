"""Captured profit: the keeper (sizing = "profit": each liquidation sized for the largest net
profit, its own market impact within a block priced in) against a naive max-size keeper
(sizing = "max": the largest size the rules allow, each quoted alone), on the same snapshot.

The devnet gets a mix of borrowers on top of the seeded ones: whales whose full-size
liquidation would sell more collateral than the pools can take at a profit, and a crowd of
mid-size accounts that all sell into the same pools. The price of WETH and WBTC is shocked
(the pools follow the oracle). Each keeper then runs live for the same number of blocks with
automine off (every cycle's transactions land in one block); between blocks an arbitrageur
brings the pools back to the oracle price, as the market would. Reported: liquidations,
realized profit after gas (from the receipts), sends that failed or were refused by
simulation.

Usage: python bench/capture.py [--blocks 6] [--whales 3] [--crowd 24]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil test account 1
WAD = 10**18


def rpc(url: str, method: str, params: list | tuple = ()) -> object:
    req = urllib.request.Request(url, json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                                  "params": list(params)}).encode(),
                                 {"Content-Type": "application/json"})
    reply = json.loads(urllib.request.urlopen(req).read())
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def open_position(url: str, dep, who: str, supply: dict[str, int], borrow: tuple[str, int]) -> None:
    from keeper.devnet.jsonrpc import JsonRpc, encode_call

    rpc(url, "anvil_setBalance", [who, hex(10**20)])
    rpc(url, "anvil_impersonateAccount", [who])
    with JsonRpc(url) as r:
        for sym, amount in supply.items():
            tok = dep.tokens[sym]
            r.send({"from": who, "to": tok, "data": encode_call("mint(uint256)", amount)}, what="mint")
            r.send({"from": who, "to": tok, "data": encode_call("approve(address,uint256)", dep.pool, amount)},
                   what="approve")
            r.send({"from": who, "to": dep.pool, "data": encode_call("supply(address,uint256,address,uint16)", tok,
                                                                      amount, who, 0)}, what="supply")
        sym, amount = borrow
        r.send({"from": who, "to": dep.pool, "gas": hex(2_000_000),
                "data": encode_call("borrow(address,uint256,uint256,uint16,address)", dep.tokens[sym], amount, 2, 0,
                                    who)}, what="borrow")


def seed_mix(url: str, dep, whales: int, crowd: int) -> None:
    """Whales (WETH and WBTC collateral, USDC debt, near the LTV) and a crowd of mid-size
    WETH/USDC accounts: all become liquidatable with the shock below."""
    for i in range(whales):
        who = "0x" + f"{0xB1A1E000 + i:040x}"
        if i % 2 == 0:
            open_position(url, dep, who, {"WETH": (4_000 + 1_000 * i) * WAD}, ("USDC", (9_400_000 + 2_350_000 * i) * 10**6))
        else:
            open_position(url, dep, who, {"WBTC": (150 + 50 * i) * 10**8}, ("USDC", (6_500_000 + 2_150_000 * i) * 10**6))
    for i in range(crowd):
        who = "0x" + f"{0xC0D0E000 + i:040x}"
        weth = 60 + 7 * i
        open_position(url, dep, who, {"WETH": weth * WAD}, ("USDC", weth * 2_350 * 10**6))


async def run_keeper(url: str, sizing: str, blocks: int, journal: str, dep) -> dict:
    from keeper import log as logmod
    from keeper.app import Keeper
    from keeper.config import load_config
    from keeper.devnet.prices import move_pools_to_oracle

    logmod.setup("error", json_lines=True, stream=sys.stderr)
    os.environ["KEEPER_PRIVATE_KEY"] = KEY
    import tomllib

    names = [p["name"] for p in tomllib.loads((REPO / "config" / "devnet.toml").read_text())["protocols"]]
    env = {"KEEPER_RPC_URL": url, "KEEPER_PRIVATE_KEY": KEY, "KEEPER_KEEPER__JOURNAL": journal,
           "KEEPER_KEEPER__SIZING": sizing, "KEEPER_KEEPER__RECEIPT_TIMEOUT_S": "0.2"}
    env.update({f"KEEPER_PROTOCOLS__{i}__ENABLED": "true" if n == "aave-v3-devnet" else "false"
                for i, n in enumerate(names)})
    k = Keeper(load_config(REPO / "config" / "devnet.toml", environ=env), dry_run=False)
    await k.start()
    t0 = time.monotonic()
    try:
        rpc(url, "evm_setAutomine", [False])
        for _ in range(blocks + 1):  # the last cycle only collects the receipts of the one before
            await k.cycle(await k.read_head())
            rpc(url, "evm_mine", [])
            for sym in ("WETH", "WBTC"):  # the market brings the pools back between blocks
                rpc(url, "evm_setAutomine", [True])
                move_pools_to_oracle(url, dep, sym)
                rpc(url, "evm_setAutomine", [False])
        outs = list(k.executor.outcomes)
        confirmed = [o for o in outs if o.status == "confirmed"]
        realized = [k.realized_profit_usd_e8(o) or 0 for o in confirmed]
        return {
            "liquidations": len(confirmed),
            "realized_usd": sum(realized) / 1e8,
            "expected_usd": sum(o.expected_profit_usd_e8 for o in confirmed) / 1e8,
            "failed": sum(1 for o in outs if o.status == "failed"),
            "refused_in_simulation": sum(1 for o in outs if o.reason in ("simulation_reverted", "unprofitable_after_gas")),
            "losing": sum(1 for r in realized if r <= 0),
            "seconds": time.monotonic() - t0,
        }
    finally:
        rpc(url, "evm_setAutomine", [True])
        await k.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--whales", type=int, default=3)
    ap.add_argument("--crowd", type=int, default=24)
    ap.add_argument("--shock", type=int, default=-15, help="percent move of WETH and WBTC (default -15)")
    args = ap.parse_args()
    from keeper.devnet import shock, start_devnet

    node, dep = start_devnet(port=0, n_borrowers=200, log_path=REPO / ".devnet" / "bench-capture.log")
    try:
        seed_mix(node.url, dep, args.whales, args.crowd)
        for sym in ("WETH", "WBTC"):
            shock(node.url, dep, sym, args.shock)
        snap = rpc(node.url, "evm_snapshot")
        with tempfile.TemporaryDirectory() as tmp:
            naive = asyncio.run(run_keeper(node.url, "max", args.blocks, f"{tmp}/a.jsonl", dep))
            rpc(node.url, "evm_revert", [snap])
            ours = asyncio.run(run_keeper(node.url, "profit", args.blocks, f"{tmp}/b.jsonl", dep))
    finally:
        node.stop()
    print(f"same snapshot: 200 seeded borrowers + {args.whales} whales + {args.crowd} mid-size accounts, "
          f"WETH and WBTC {args.shock:+}%, {args.blocks} blocks, pools restored to the oracle between blocks")
    print(f"{'':<34} {'naive max-size':>16} {'keeper':>16}")
    rows = [("liquidations confirmed", "liquidations", "{:,}"), ("realized profit after gas, $", "realized_usd", "{:,.2f}"),
            ("expected profit, $", "expected_usd", "{:,.2f}"), ("losing liquidations", "losing", "{:,}"),
            ("failed on chain", "failed", "{:,}"), ("refused by simulation", "refused_in_simulation", "{:,}"),
            ("wall time, s", "seconds", "{:,.1f}")]
    for label, key, fmt in rows:
        print(f"{label:<34} {fmt.format(naive[key]):>16} {fmt.format(ours[key]):>16}")
    if naive["realized_usd"] > 0:
        print(f"captured: {ours['realized_usd'] / naive['realized_usd']:.2f}x the naive keeper")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
