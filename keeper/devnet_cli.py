"""`keeper devnet up|down|shock|status`: the embedded local chain.

`devnet up` in the foreground stops anvil on Ctrl-C, SIGTERM or SIGHUP and exits 0; its
anvil also dies with it if it is killed outright (parent-death signal, keeper/devnet/anvil.py).
`devnet up --detach` starts anvil without that tie, so it outlives the command until
`keeper devnet down`.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from .errors import ConfigError, KeeperError


class DevnetStopped(KeeperError):
    """The foreground devnet's anvil went away without being asked to."""


REPO = Path(__file__).resolve().parent.parent
RUN_FILE = REPO / ".devnet" / "devnet.json"


def dispatch(args: Any) -> int:
    return {"up": up, "down": down, "shock": shock, "status": status}[args.devnet_cmd](args)


def _read_run() -> dict[str, Any] | None:
    try:
        info = json.loads(RUN_FILE.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(info["pid"], 0)
    except (OSError, KeyError, TypeError):
        RUN_FILE.unlink(missing_ok=True)  # stale: the process is gone
        return None
    return info


def wait_for_signal(node: Any, ready: str = "Ctrl-C stops it") -> bool:
    """Print `ready` once the handlers are in place, then block until SIGINT, SIGTERM or
    SIGHUP (True) or until the node's process exits on its own (False); the previous signal
    handlers are put back. (`keeper devnet up` and `keeper fork` in the foreground.)"""
    stop = {"flag": False}

    def _handler(signum: int, frame: Any) -> None:
        stop["flag"] = True

    previous: dict[int, Any] = {}
    try:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                previous[sig] = signal.signal(sig, _handler)
        print(ready, flush=True)  # only now: a signal from here on stops it cleanly
        while not stop["flag"] and node.running:
            time.sleep(0.2)
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    return stop["flag"]


def up(args: Any) -> int:
    from .devnet import start_devnet

    if _read_run():
        raise ConfigError(f"a devnet is already running ({RUN_FILE}); stop it with 'keeper devnet down'")
    t0 = time.monotonic()
    log_path = REPO / ".devnet" / f"anvil-{args.port}.log"
    node, dep = start_devnet(port=args.port, n_borrowers=args.borrowers, log_path=log_path,
                             die_with_parent=not args.detach)  # a detached anvil outlives this command
    try:
        took = time.monotonic() - t0
        print(f"devnet ready on {node.url} in {took:.2f}s: Aave V3 pool {dep.pool}, "
              f"{args.borrowers} borrowers, keeper {dep.keeper}")
        print(f"tokens: {', '.join(f'{s} {a}' for s, a in dep.tokens.items())}", flush=True)
        if args.detach:
            RUN_FILE.parent.mkdir(parents=True, exist_ok=True)
            RUN_FILE.write_text(json.dumps({"pid": node.proc.pid, "port": node.port, "url": node.url,
                                            "borrowers": args.borrowers}))
            node.proc = None  # leave it running; 'keeper devnet down' stops it
            print("detached; stop it with: keeper devnet down", flush=True)
            return 0
        stopped = wait_for_signal(node)
    finally:
        node.stop()  # a no-op once detached
    if not stopped:
        raise DevnetStopped(f"anvil on {node.url} exited on its own (log {log_path})")
    print("devnet stopped", flush=True)
    return 0


def down(args: Any) -> int:
    info = _read_run()
    if not info:
        print("no devnet running")
        return 0
    pid = info["pid"]
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
    RUN_FILE.unlink(missing_ok=True)
    print(f"devnet on port {info['port']} stopped")
    return 0


def status(args: Any) -> int:
    info = _read_run()
    print(json.dumps(info) if info else "no devnet running")
    return 0


def shock(args: Any) -> int:
    from .devnet import load_deployment
    from .devnet import shock as do_shock

    info = _read_run()
    url = args.rpc or (info["url"] if info else "http://127.0.0.1:8545")
    try:
        dep = load_deployment()
    except RuntimeError as e:
        raise ConfigError(f"no devnet deployment here: {e}") from None
    if args.asset not in dep.tokens:
        raise ConfigError(f"--asset: unknown devnet asset {args.asset!r} (one of {', '.join(dep.tokens)})")
    try:
        old, new = do_shock(url, dep, args.asset, args.pct)
    except OSError as e:
        raise ConfigError(f"--rpc: cannot reach the devnet at {url}: {e}") from None
    print(f"{args.asset}: {old / 1e8:,.2f} -> {new / 1e8:,.2f} USD ({args.pct:+}%)")
    return 0
