"""Command line: keeper run | scan | demo | devnet up/down/shock/status.

A user mistake (bad config, unreachable RPC, missing key) prints one line starting with
"error:" and exits 2; it never prints a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any, Sequence

from . import log as logmod
from .errors import ConfigError, KeeperError, TransientError, RpcError

REPO = Path(__file__).resolve().parent.parent
DEVNET_CONFIG = REPO / "config" / "devnet.toml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keeper", description="DeFi liquidation keeper")
    p.add_argument("--log-level", default=os.environ.get("KEEPER_LOG_LEVEL", "info"))
    p.add_argument("--json-logs", action="store_true", default=None, help="force JSON log lines")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="follow the chain and liquidate (or, with --dry-run, log what it would do)")
    r.add_argument("--config", required=True)
    r.add_argument("--dry-run", action="store_true", help="simulate and log; never send, never load the key")
    r.add_argument("--once", action="store_true", help="run one cycle on the latest block and exit")

    s = sub.add_parser("scan", help="print tracked positions ranked by health factor")
    s.add_argument("--config", required=True)
    s.add_argument("--json", action="store_true")
    s.add_argument("--limit", type=int, default=30)

    dl = sub.add_parser("deploy-liquidator", help="deploy the flash-loan liquidator contract from the keeper's key")
    dl.add_argument("--config", required=True)

    d = sub.add_parser("demo", help="devnet up, seed, price shock, liquidate live, summary, shut down")
    d.add_argument("--borrowers", type=int, default=40)
    d.add_argument("--asset", default="WETH")
    d.add_argument("--pct", type=Decimal, default=Decimal("-12"))
    d.add_argument("--port", type=int, default=0)

    dv = sub.add_parser("devnet", help="the local chain with real Aave V3 and Uniswap V3")
    dsub = dv.add_subparsers(dest="devnet_cmd", required=True)
    up = dsub.add_parser("up", help="start the devnet (Ctrl-C stops it)")
    up.add_argument("--port", type=int, default=8545)
    up.add_argument("--borrowers", type=int, default=40)
    up.add_argument("--detach", action="store_true", help="run in the background; stop with 'keeper devnet down'")
    dsub.add_parser("down", help="stop a detached devnet")
    sh = dsub.add_parser("shock", help="move an oracle price by a percentage")
    sh.add_argument("--asset", required=True)
    sh.add_argument("--pct", type=Decimal, required=True)
    sh.add_argument("--rpc", default=None)
    dsub.add_parser("status", help="is a detached devnet running, and where")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    stream = sys.stderr if args.cmd in ("scan", "demo") else sys.stdout
    logmod.setup(args.log_level, json_lines=args.json_logs, stream=stream)
    try:
        if args.cmd == "run":
            return asyncio.run(_run(args))
        if args.cmd == "scan":
            return asyncio.run(_scan(args))
        if args.cmd == "deploy-liquidator":
            from .config import load_config
            from .deploy_liquidator import deploy_liquidator

            addr = asyncio.run(deploy_liquidator(load_config(args.config)))
            print(f"FlashLiquidator deployed at {addr}\nadd to the aave_v3 [[protocols]] entry:\n"
                  f'flash_liquidator = "{addr}"')
            return 0
        if args.cmd == "demo":
            from .demo import demo

            return demo(args.borrowers, args.asset, args.pct, args.port)
        if args.cmd == "devnet":
            from . import devnet_cli

            return devnet_cli.dispatch(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TransientError, RpcError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeeperError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


async def _run(args: argparse.Namespace) -> int:
    from .app import Keeper
    from .config import load_config

    cfg = load_config(args.config)
    keeper = Keeper(cfg, dry_run=args.dry_run)
    try:
        keeper.install_signal_handlers()
        await keeper.start()
        await keeper.run(once=args.once)
    finally:
        await keeper.close()
    return 0


async def _scan(args: argparse.Namespace) -> int:
    """Every adapter's positions in one table, lowest health first. Rows are dicts with at
    least protocol, account, health_factor (float; for auctions and perps the adapter's own
    measure, < 1 means actionable), summary (str) and opportunity (Opportunity | None)."""
    from . import strategy
    from .app import Keeper
    from .config import load_config

    cfg = load_config(args.config)
    keeper = Keeper(cfg, dry_run=True)
    try:
        await keeper.start()
        head = await keeper.read_head()
        opps = await keeper.gather(head)
        native = await keeper.native_usd_e8()
        rows: list[dict[str, Any]] = []
        for a in keeper.adapters.values():
            rows.extend(a.positions())
        rows.sort(key=lambda r: r["health_factor"])
        priced = {p.opp.key: p for p in strategy.rank(opps, head.base_fee_wei + cfg.keeper.priority_fee_wei, native or 0)}
        out = []
        for r in rows[: args.limit] if args.limit > 0 else rows:
            r = dict(r)
            o = r.pop("opportunity", None)
            best = None
            if o is not None:
                adapter = keeper.adapters[o.protocol]
                p = priced.get(o.key)
                best = {**(o.detail.log_fields() if hasattr(o.detail, "log_fields") else {}),
                        "action": adapter.describe(o) if hasattr(adapter, "describe") else o.plan.description,
                        "gross_profit_usd": o.gross_profit_usd_e8 / 1e8,
                        "net_profit_usd": p.net_profit_usd_e8 / 1e8 if p else None}
            out.append({**r, "best_opportunity": best})
        if args.json:
            print(json.dumps({"block": head.number, "positions": out, "tracked": len(rows)}, indent=1, default=str))
        else:
            print(f"block {head.number}: {len(rows)} positions (lowest health first)")
            print(f"{'protocol':<16} {'account':<42} {'health':>8}  {'position':<40} best opportunity")
            for r in out:
                b = r["best_opportunity"]
                best = f"{b['action']} net ${b['net_profit_usd']:,.2f}" if b else "-"
                print(f"{r['protocol']:<16} {str(r['account']):<42} {r['health_factor']:>8.4f}  {r['summary']:<40} {best}")
    finally:
        await keeper.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
