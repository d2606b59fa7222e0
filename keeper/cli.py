"""Command line: keeper run | scan | risk | stress | replay | report | fork | deploy-liquidator | demo | devnet up/down/shock/status.

A user mistake (bad config, unreachable RPC, missing key, a bad argument, a busy port)
prints one line starting with "error:" and exits non-zero; it never prints a traceback:

- exit 2: a usage or configuration mistake (bad argument, unknown --log-level, missing or
  invalid config file, port in use);
- exit 3: the RPC node is unreachable or keeps failing;
- exit 1: any other error; an unexpected exception (a bug) prints
  `error: unexpected <Class>: <message>` and logs the full traceback (`unexpected_error`,
  on the log stream: stdout for `run`, stderr for the other commands);
- exit 141 (128 + SIGPIPE): stdout was closed early (`keeper scan | head -1`), quietly.

Signals: SIGINT, SIGTERM and SIGHUP stop any command cleanly: the keeper closes its
connections and any anvil the command started is stopped (anvil also gets SIGTERM from
the kernel if this process is killed outright, see keeper/devnet/anvil.py). `run` and
`devnet up` exit 0 (stopping is how they end); the commands that were cut short (`demo`,
`scan`, `deploy-liquidator`, `devnet shock`) exit 128 + the signal number (130, 143, 129).
A second signal while stopping ends the process at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import threading
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Sequence

from . import log as logmod
from . import redact
from .errors import ConfigError, KeeperError, TransientError, RpcError

REPO = Path(__file__).resolve().parent.parent
DEVNET_CONFIG = REPO / "config" / "devnet.toml"


MAX_BORROWERS = 5000  # a devnet seeds ~80 borrowers/s; anvil refuses a batch above ~4,650 accounts
MAX_SHOCK_PCT = Decimal(10000)
EXIT_SIGPIPE = 128 + 13
# devnet assets (keeper/devnet/deploy.py TOKENS), listed here so a mistake is caught before
# anything starts; tests check the two lists agree
DEVNET_ASSETS = ("WETH", "WBTC", "USDC", "USDT", "LINK")  # keeper/devnet/deploy.py TOKENS + venues.NEW_TOKENS


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line: `error: <what> (see 'keeper ... --help')`, exit 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {_one_line(message)} (see '{self.prog} --help')\n")


def _pct(text: str) -> Decimal:
    try:
        v = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (a percentage, e.g. -12)") from None
    if not v.is_finite():
        raise argparse.ArgumentTypeError(f"must be a finite percentage, not {text!r}")
    if v <= -100:
        raise argparse.ArgumentTypeError(f"a price cannot fall by 100% or more (got {text}); use a value above -100")
    if v > MAX_SHOCK_PCT:
        raise argparse.ArgumentTypeError(f"at most +{MAX_SHOCK_PCT}% (got {text})")
    return v


def _int_in(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi} (got {v})")
        return v

    return parse


def _asset(text: str) -> str:
    sym = text.strip().upper()
    if sym not in DEVNET_ASSETS:
        raise argparse.ArgumentTypeError(f"unknown devnet asset {text!r} (known: {', '.join(DEVNET_ASSETS)})")
    return sym


def _since(text: str) -> int:
    from .report import since_arg

    return since_arg(text)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="keeper", description="DeFi liquidation keeper",
                epilog="exit codes: 0 done (or run/devnet up stopped by a signal), 1 error, 2 usage or config "
                       "mistake, 3 RPC unreachable, 141 stdout closed early, 128+N stopped by signal N")
    p.add_argument("--log-level", type=str.lower, choices=logmod.LEVELS,
                   default=os.environ.get("KEEPER_LOG_LEVEL", "info"),
                   help="debug, info, warning, error or critical (default: $KEEPER_LOG_LEVEL or info)")
    p.add_argument("--json-logs", action="store_true", default=None, help="force JSON log lines")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="command",
                           help="run, scan, risk, stress, replay, report, fork, deploy-liquidator, demo or devnet")

    r = sub.add_parser("run", help="follow the chain and liquidate (or, with --dry-run, log what it would do)")
    r.add_argument("--config", required=True)
    r.add_argument("--dry-run", action="store_true", help="simulate and log; never send, never load the key")
    r.add_argument("--once", action="store_true", help="run one cycle on the latest block and exit")

    s = sub.add_parser("scan", help="print tracked positions ranked by health factor")
    s.add_argument("--config", required=True)
    s.add_argument("--json", action="store_true")
    s.add_argument("--limit", type=int, default=30,
                   help="show the N positions with the lowest health (default 30; 0 or less: all of them)")

    from .risk import png_path

    rk = sub.add_parser("risk", help="liquidation price of every position, debt liquidatable per step of price drop")
    rk.add_argument("--config", required=True)
    rk.add_argument("--json", action="store_true", help="one JSON document (positions and per-asset curves)")
    rk.add_argument("--png", type=png_path, default=None, metavar="FILE", help="write the per-asset curve as a PNG chart")
    rk.add_argument("--limit", type=int, default=30, help="table rows (default 30; 0 or less: all); not for --json")

    rp = sub.add_parser("report", help="PnL, success and capture rates, misses, actions and skips from the store")
    rp.add_argument("--config", required=True)
    rp.add_argument("--store", default=None, metavar="PATH",
                    help="the SQLite store to read (default: keeper.store_path, else beside the journal)")
    rp.add_argument("--since", type=_since, default=None, metavar="WHEN",
                    help="from a UTC date or time (2026-11-01, 2026-11-01T12:00) or a span back from now "
                         "(24h, 7d); default: everything")
    fmt = rp.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON document")
    fmt.add_argument("--csv", action="store_true", help="the actions as CSV")

    dl = sub.add_parser("deploy-liquidator", help="deploy the keeper's own contracts (Aave FlashLiquidator, "
                        "MorphoLiquidator, Maker TakeCallee) from the keeper's key")
    dl.add_argument("--config", required=True)
    dl.add_argument("--protocol", action="append", metavar="NAME",
                    help="only this [[protocols]] entry (repeatable; default: every enabled one that needs a contract)")

    d = sub.add_parser("demo", help="devnet up, seed, price shock, liquidate live, summary, shut down")
    d.add_argument("--borrowers", type=_int_in(1, MAX_BORROWERS), default=40)
    d.add_argument("--asset", type=_asset, default="WETH", help=f"one of {', '.join(DEVNET_ASSETS)}")
    d.add_argument("--pct", type=_pct, default=Decimal("-12"), help="price move in percent, above -100")
    d.add_argument("--port", type=_int_in(0, 65535), default=0, help="anvil's port (0: a free one)")

    dv = sub.add_parser("devnet", help="the local chain with real Aave V3 and Uniswap V3")
    dsub = dv.add_subparsers(dest="devnet_cmd", required=True, metavar="command", help="up, down, shock or status")
    up = dsub.add_parser("up", help="start the devnet (Ctrl-C or SIGTERM stops it)")
    up.add_argument("--port", type=_int_in(0, 65535), default=8545)
    up.add_argument("--borrowers", type=_int_in(1, MAX_BORROWERS), default=40)
    up.add_argument("--detach", action="store_true", help="run in the background; stop with 'keeper devnet down'")
    dsub.add_parser("down", help="stop a detached devnet")
    sh = dsub.add_parser("shock", help="move an oracle price by a percentage")
    sh.add_argument("--asset", type=_asset, required=True, help=f"one of {', '.join(DEVNET_ASSETS)}")
    sh.add_argument("--pct", type=_pct, required=True, help="price move in percent, above -100")
    sh.add_argument("--rpc", default=None)
    dsub.add_parser("status", help="is a detached devnet running, and where")
    from . import fork as fork_cmd

    fk = sub.add_parser("fork", help="anvil forking a chain at a block, to run the keeper against ('fork down' stops it)")
    fork_cmd.add_arguments(fk, _int_in)

    st = sub.add_parser("stress", help="apply a price path on a fork with the keeper live: liquidations, "
                                       "volume sold, price impact, bad debt and keeper PnL per step")
    st._negative_number_matcher = re.compile(r"^-\.?\d")  # --path -5,-5,-10 is a value
    st.add_argument("--config", required=True)
    st.add_argument("--asset", required=True, type=str.upper, help="the collateral symbol to move (e.g. WETH)")
    st.add_argument("--path", required=True, metavar="P1,P2,...", help="price moves in percent per step, e.g. -5,-5,-10")
    st.add_argument("--impact", choices=["on", "off"], default="off",
                    help="on: after each keeper cycle the oracle follows the deepest pool's price (default off)")
    st.add_argument("--fork-url", default=None, metavar="URL", help="the chain to fork (default: the config's chain.rpc_url)")
    st.add_argument("--cycles", type=_int_in(1, 500), default=50, help="keeper cycles per step at most (default 50)")
    st.add_argument("--json", action="store_true", help="one JSON document")
    st.add_argument("--png", type=png_path, default=None, metavar="FILE", help="write a PNG chart of the steps")

    rl = sub.add_parser("replay", help="backtest: replay a block range's oracle updates on a fork with the keeper live")
    rl.add_argument("--config", required=True)
    rl.add_argument("--source-rpc", required=True, metavar="URL", help="the chain to replay (an archive node for old blocks)")
    rl.add_argument("--from-block", type=_int_in(0, 10**12), required=True, metavar="A", help="fork the source here")
    rl.add_argument("--to-block", type=_int_in(0, 10**12), required=True, metavar="B", help="replay up to this block")
    rl.add_argument("--mempool", choices=["on", "off"], default="on",
                    help="on: the keeper sees each oracle update while pending and can land in its block; off: per block")
    rl.add_argument("--json", action="store_true", help="one JSON document")
    rl.add_argument("--port", type=_int_in(0, 65535), default=0, help="the fork's port (default 0: a free one)")
    return p


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM / SIGHUP so every `finally` (node.stop(),
    keeper.close()) runs; a KeyboardInterrupt so asyncio treats it like Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def _install_stop_handlers() -> dict[int, Any]:
    """SIGTERM/SIGHUP raise Stopped (SIGINT already raises KeyboardInterrupt). Only possible
    in the main thread; returns the previous handlers to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: Any) -> None:
        for sig in STOP_SIGNALS:  # a second signal while cleaning up ends the process at once
            signal.signal(sig, signal.SIG_DFL)
        raise Stopped(signum)

    previous = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, handler)
    return previous


def _restore_handlers(previous: dict[int, Any]) -> None:
    for sig, h in previous.items():
        try:
            signal.signal(sig, h if h is not None else signal.SIG_DFL)
        except (ValueError, TypeError, OSError):
            pass


def _silence_stdout() -> None:
    """stdout's reader went away (`| head`): point fd 1 at /dev/null so the final flush at exit
    cannot raise again (the documented way: docs.python.org/3/library/signal.html#note-on-sigpipe)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            same = os.path.sameopenfile(sys.stdout.fileno(), sys.stderr.fileno())
        except (OSError, ValueError, AttributeError):
            same = False
        os.dup2(devnull, sys.stdout.fileno())
        if same:  # 2>&1 | head: stderr is the same broken pipe
            os.dup2(devnull, sys.stderr.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # captured streams (tests): nothing to redirect


def _err(msg: str) -> None:
    try:
        print(f"error: {msg}", file=sys.stderr)
    except (BrokenPipeError, ValueError, OSError):
        pass


def _safe(text: str) -> str:
    """For an error line: registered secrets and URL paths removed, key-shaped hex hidden."""
    return redact.hide_key_hex(redact.scrub(text))


def _one_line(text: str, limit: int = 300) -> str:
    text = _safe(text).strip()
    first = text.splitlines()[0] if text else ""
    if len(first) > limit:
        first = first[:limit] + "…"
    return first


def _unexpected(e: BaseException, log_stream: str, level: str) -> int:
    """A bug or something nobody planned for: the traceback goes to the log (scrubbed), the
    operator gets one line."""
    where = f"logged on {log_stream} as event=unexpected_error"
    try:
        logmod.get().error("unexpected_error", error=f"{e.__class__.__name__}: {e}", exc_info=e)
    except Exception:
        where = "not logged: the log stream failed too"
    if logmod.level_number(level) > logmod.level_number("error"):
        where = "not logged at this --log-level; rerun with --log-level error"
    _err(f"unexpected {e.__class__.__name__}: {_one_line(str(e)) or '(no message)'} (traceback {where})")
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.log_level not in logmod.LEVELS:  # from $KEEPER_LOG_LEVEL (argparse checks only the flag)
        parser.error(f"KEEPER_LOG_LEVEL: invalid choice: {args.log_level!r} (choose from {', '.join(logmod.LEVELS)})")
    stream = sys.stderr if args.cmd != "run" else sys.stdout
    logmod.setup(args.log_level, json_lines=args.json_logs, stream=stream)
    previous = _install_stop_handlers()
    try:
        return _dispatch(args)
    except KeeperError as e:  # exit 2: config mistake, 3: RPC trouble, 1: anything else
        _err(_safe(str(e)))
        return 2 if isinstance(e, ConfigError) else 3 if isinstance(e, (TransientError, RpcError)) else 1
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_SIGPIPE
    except KeyboardInterrupt as e:  # Ctrl-C, or Stopped (SIGTERM / SIGHUP): the finally blocks have run
        signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
        try:
            logmod.get().info("stopped", signal=signal.Signals(signum).name)
        except Exception:
            pass
        if args.cmd == "run" or (args.cmd == "devnet" and args.devnet_cmd == "up") or args.cmd == "fork":
            return 0
        return 128 + signum
    except Exception as e:
        return _unexpected(e, "stdout" if stream is sys.stdout else "stderr", args.log_level)
    finally:
        _restore_handlers(previous)


def _dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "run":
        return asyncio.run(_run(args))
    if args.cmd == "scan":
        return asyncio.run(_scan(args))
    if args.cmd == "risk":
        from .risk import main as risk

        return asyncio.run(risk(args))
    if args.cmd == "report":
        from .report import main as report

        return report(args)
    if args.cmd == "deploy-liquidator":
        from .config import load_config
        from .deploy_liquidator import deploy_liquidator

        from .liquidators import describe

        cfg = load_config(args.config)
        for target, addr in deploy_liquidator(cfg, args.protocol):
            print(describe(target, addr, cfg.keeper.address or "the keeper"), flush=True)
        return 0
    if args.cmd == "demo":
        from .demo import demo

        return demo(args.borrowers, args.asset, args.pct, args.port)
    if args.cmd == "replay":
        from .replay import main as replay

        return asyncio.run(replay(args))
    if args.cmd == "fork":
        from . import fork

        return fork.dispatch(args)
    if args.cmd == "stress":
        from .stress import main as stress

        return asyncio.run(stress(args))
    if args.cmd == "devnet":
        from . import devnet_cli

        return devnet_cli.dispatch(args)
    raise AssertionError(f"unknown command {args.cmd!r}")


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
    keeper = Keeper(cfg, dry_run=True, record=False)  # a view: nothing goes to the store
    try:
        await keeper.start()
        head = await keeper.read_head()
        opps = await keeper.gather(head)
        native = await keeper.native_usd_e8()
        rows: list[dict[str, Any]] = []
        for a in keeper.adapters.values():
            rows.extend(a.positions())
        rows.sort(key=lambda r: r["health_factor"])
        ranked = strategy.rank(opps, keeper.executor.fees(head)[0], native or 0)  # as run prices them
        best = route_choice(ranked, cfg.keeper.min_profit_usd_e8, keeper.inventory())
        out = []
        for r in rows[: args.limit] if args.limit > 0 else rows:
            r = dict(r)
            o = r.pop("opportunity", None)
            b = None
            if o is not None:
                p = best.get(o.key)
                o = p.opp if p is not None else o  # the route run would take, not the adapter's last one
                adapter = keeper.adapters[o.protocol]
                b = {**(o.detail.log_fields() if hasattr(o.detail, "log_fields") else {}),
                     "action": adapter.describe(o),
                     "route": getattr(o.detail, "route", None),
                     "gross_profit_usd": o.gross_profit_usd_e8 / 1e8,
                     "net_profit_usd": p.net_profit_usd_e8 / 1e8 if p else None}
            out.append({**r, "best_opportunity": b})
        if args.json:
            print(json.dumps({"block": head.number, "positions": out, "tracked": len(rows)}, indent=1, default=str))
        else:
            print(f"block {head.number}: {len(rows)} positions (lowest health first)")
            print(f"{'protocol':<16} {'account':<42} {'health':>8}  {'position':<40} {'route':<9} best opportunity")
            for r in out:
                b = r["best_opportunity"]
                route = best_txt = "-"
                if b:
                    net = b["net_profit_usd"]
                    best_txt = f"{b['action']} net {'?' if net is None else f'${net:,.2f}'}"
                    route = b.get("route") or "-"
                print(f"{r['protocol']:<16} {str(r['account']):<42} {r['health_factor']:>8.4f}  {r['summary']:<40} "
                      f"{route:<9} {best_txt}")
    finally:
        await keeper.close()
    return 0


def route_choice(ranked: Sequence[Any], min_profit_usd_e8: int, inventory: Any) -> dict[str, Any]:
    """For each opportunity key, the Priced that `run` would act on: the one
    strategy.select picks (rank order, the profit floor, the keeper's inventory used up in
    rank order across all keys), else the best-ranked one (what run tries first; it is then
    skipped, e.g. below_min_profit or inventory_allocated)."""
    from . import strategy

    chosen, _ = strategy.select(ranked, min_profit_usd_e8, frozenset(), inventory)
    best: dict[str, Any] = {p.opp.key: p for p in chosen}
    for p in ranked:
        best.setdefault(p.opp.key, p)
    return best


if __name__ == "__main__":
    raise SystemExit(main())
