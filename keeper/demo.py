"""`keeper demo`: devnet up, seeded borrowers, a price shock, the keeper liquidating live,
a summary table, shut down. Everything on the local chain; nothing leaves this machine."""

from __future__ import annotations

import asyncio
import os
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import log as logmod
from .types import Outcome

REPO = Path(__file__).resolve().parent.parent
# anvil's well-known test account #1: the devnet keeper. Public, for the local chain only.
DEVNET_KEEPER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
MAX_ROUNDS = 80
AUCTION_STEP_S = 60  # seconds the demo lets pass when nothing is actionable (auction clocks)


def demo(n_borrowers: int, asset: str, pct: Decimal, port: int) -> int:
    """The CLI checks the arguments (keeper.cli: --borrowers 1..5000, --asset one of the devnet
    tokens, --pct above -100 and at most +10000, --port 0..65535); a busy port raises
    keeper.devnet.anvil.PortInUseError. Interrupted by a signal, it still stops its anvil."""
    from .devnet import ensure_state, shock, start_devnet

    t0 = time.monotonic()
    print(f"[1/4] devnet: real Aave V3 + Uniswap V3 on anvil, {n_borrowers} seeded borrowers "
          "(the first run deploys and caches the chain state)", flush=True)
    ensure_state(n_borrowers)
    node, dep = start_devnet(port=port, n_borrowers=n_borrowers, log_path=REPO / ".devnet" / "demo-anvil.log")
    try:
        print(f"      ready on {node.url} ({time.monotonic() - t0:.1f}s)", flush=True)
        old, new = shock(node.url, dep, asset, pct)
        print(f"[2/4] price shock: {asset} {old / 1e8:,.2f} -> {new / 1e8:,.2f} USD ({pct:+}%)", flush=True)
        print("[3/4] keeper running live (log lines on stderr)", flush=True)
        outcomes, adapter, others = asyncio.run(_run_keeper(node.url))
        print("[4/4] summary", flush=True)
        _summary(outcomes, adapter, others)
    finally:  # also on Ctrl-C, SIGTERM, SIGHUP (keeper.cli turns those into exceptions)
        node.stop()
        print(f"devnet stopped; total {time.monotonic() - t0:.1f}s", flush=True)
    confirmed = [o for o in outcomes if o.status == "confirmed"]
    return 0 if confirmed else 1


async def _run_keeper(url: str) -> tuple[list[Outcome], Any, dict[str, Any]]:
    from .app import Keeper
    from .config import load_config

    env = dict(os.environ)
    env["KEEPER_RPC_URL"] = url
    journal = REPO / ".devnet" / "demo-journal.jsonl"  # a fresh chain each demo: a fresh journal
    journal.unlink(missing_ok=True)
    env["KEEPER_KEEPER__JOURNAL"] = str(journal)
    env.setdefault("KEEPER_PRIVATE_KEY", DEVNET_KEEPER_KEY)
    cfg = load_config(REPO / "config" / "devnet.toml", environ=env)
    os.environ.setdefault("KEEPER_PRIVATE_KEY", DEVNET_KEEPER_KEY)
    keeper = Keeper(cfg, dry_run=False, log=logmod.get())
    try:
        await keeper.start()
        idle = 0
        for _ in range(MAX_ROUNDS):
            head = await keeper.read_head()
            outs = await keeper.cycle(head)
            if any(o.status == "confirmed" for o in outs):
                idle = 0
                await keeper.rpc.call("evm_mine", [])
                continue
            idle += 1
            if idle >= 25:
                break
            # nothing to do right now: let the auction clocks run (Dutch auctions fall with time)
            await keeper.rpc.call("evm_increaseTime", [AUCTION_STEP_S])
            await keeper.rpc.call("evm_mine", [])
        adapter = next(a for a in keeper.adapters.values() if a.kind == "aave_v3")
        others = {name: a for name, a in keeper.adapters.items() if a.kind != "aave_v3"}
        return list(keeper.executor.outcomes), adapter, others
    finally:
        await keeper.close()


def _fmt(amount: int, decimals: int) -> str:
    return f"{Decimal(amount) / Decimal(10**decimals):,.6f}".rstrip("0").rstrip(".")


def _summary(outcomes: list[Outcome], adapter: Any, others: dict[str, Any]) -> None:
    confirmed = [o for o in outcomes if o.status == "confirmed" and o.opp.kind == "aave_v3"]
    print("Aave V3 liquidations")
    print(f"{'account':<42} {'debt repaid':>22} {'collateral seized':>24} {'expected $':>11} {'realized $':>11}")
    print(f"{'':<42} {'':>22} {'':>24} {'(swap back)':>11} {'(oracle)':>11}")
    total_exp = total_real = 0
    for o in confirmed:
        r = o.realized
        d, c = adapter.reserve(r["debt_asset"]), adapter.reserve(r["collateral_asset"])
        # realized: collateral received minus debt repaid at the oracle prices, minus gas at the ETH price
        value = (r["collateral_received"] * c.price // c.unit - r["debt_repaid"] * d.price // d.unit) * 10**8 // adapter.base_unit
        gas_usd_e8 = o.gas_cost_wei * (adapter.native_price_usd_e8() or 0) // 10**18
        realized = value - gas_usd_e8
        total_exp += o.expected_profit_usd_e8
        total_real += realized
        print(f"{o.opp.account:<42} {_fmt(r['debt_repaid'], d.decimals) + ' ' + d.symbol:>22} "
              f"{_fmt(r['collateral_received'], c.decimals) + ' ' + c.symbol:>24} "
              f"{o.expected_profit_usd_e8 / 1e8:>11,.2f} {realized / 1e8:>11,.2f}")
    rest = [o for o in outcomes if o.status == "confirmed" and o.opp.kind != "aave_v3"]
    if rest:
        print("\nauctions and perps")
        for o in rest:
            a = others.get(o.opp.protocol)
            what = a.describe(o.opp) if a is not None and hasattr(a, "describe") else o.opp.plan.description
            print(f"  {o.opp.protocol:<14} {what}  expected ${o.expected_profit_usd_e8 / 1e8:,.2f}")
    skipped = sum(1 for o in outcomes if o.status == "skipped")
    failed = sum(1 for o in outcomes if o.status == "failed")
    print(f"{len(confirmed) + len(rest)} actions confirmed, {failed} failed, {skipped} skipped; Aave "
          f"expected ${total_exp / 1e8:,.2f}, realized ${total_real / 1e8:,.2f} "
          "\nexpected: the keeper's estimate before sending, selling the collateral back on Uniswap V3 at a real quote, after gas"
          "\nrealized: from the LiquidationCall events, collateral at the oracle price - debt repaid - gas paid")
