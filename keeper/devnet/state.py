"""Cached devnet chain state: build once (deploy + seed + fund keeper), then load in < 1 s."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from . import extensions
from .liquidator import deploy_flash_liquidator
from .anvil import Anvil
from .artifacts import CONTRACTS_DIR, REPO_ROOT
from .deploy import DEPLOYMENT_JSON, KEEPER, Deployment, deploy
from .jsonrpc import JsonRpc
from .seed import fund_keeper, seed_borrowers

DEFAULT_CACHE_DIR = REPO_ROOT / ".devnet" / "cache"
DEFAULT_BORROWERS = 200
_DEVNET_DIR = Path(__file__).resolve().parent


def state_key(n_borrowers: int) -> str:
    """sha256 over the devnet sources, contracts/*.sol, package-lock.json and n_borrowers."""
    h = hashlib.sha256()
    # anvil.py only runs the process (its flags do not change the chain state it builds)
    files = sorted(f for f in _DEVNET_DIR.glob("*.py") if f.name != "anvil.py") + [REPO_ROOT / "keeper" / "solidity.py"]
    files += sorted(CONTRACTS_DIR.rglob("*.sol"))
    lock = REPO_ROOT / "package-lock.json"
    if lock.is_file():
        files.append(lock)
    for f in files:
        h.update(str(f.relative_to(REPO_ROOT)).encode() + b"\0")
        h.update(f.read_bytes() + b"\0")
    h.update(f"n_borrowers={n_borrowers}".encode())
    return h.hexdigest()[:16]


def state_paths(n_borrowers: int, cache_dir: Path | None = None) -> tuple[Path, Path]:
    cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    key = state_key(n_borrowers)
    return cache_dir / f"state-{key}.json", cache_dir / f"deployment-{key}.json"


@contextmanager
def _lock(cache_dir: Path):
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_state(n_borrowers: int, cache_dir: Path | None = None, *, verbose: bool = False) -> Path:
    """Path of an anvil state file holding the full devnet with `n_borrowers` seeded borrowers.

    Builds it if missing: anvil on a free port with --dump-state, deploy, seed, fund the
    keeper, SIGTERM (anvil writes the dump), atomic rename into the cache."""
    if n_borrowers < 0:
        raise ValueError("n_borrowers must be >= 0")
    cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    state, dep_path = state_paths(n_borrowers, cache_dir)
    if state.is_file() and dep_path.is_file():
        return state
    with _lock(cache_dir):
        if state.is_file() and dep_path.is_file():  # built by another process meanwhile
            return state
        t0 = time.monotonic()
        tmp = cache_dir / f".tmp-{state.name}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        node = Anvil(port=0, state_dump=tmp, log_path=cache_dir / f"build-{state.stem}.log")
        node.start()
        try:
            dep = deploy(node.url, write_to=None)
            seed_borrowers(node.url, dep, n_borrowers)
            fund_keeper(node.url, dep, KEEPER)
            dep.extras["flash_liquidator"] = deploy_flash_liquidator(node.url, dep)
            extensions.deploy_all(node.url, dep)
        except BaseException:
            node.stop()
            tmp.unlink(missing_ok=True)
            raise
        node.stop(timeout_s=300)
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise RuntimeError(f"anvil did not write its state dump to {tmp} (log {node.log_path})")
        _compact_dump(tmp, dep, cache_dir)
        dep.save(dep_path)
        os.replace(tmp, state)
        _prune_stale(cache_dir, n_borrowers, keep=state)
        if verbose:
            print(f"devnet state built in {time.monotonic() - t0:.1f}s: {state}")
        return state


def _prune_stale(cache_dir: Path, n_borrowers: int, keep: Path) -> None:
    """Delete states for the same n_borrowers built from older sources (their key differs)."""
    for dep_file in cache_dir.glob("deployment-*.json"):
        key = dep_file.stem.removeprefix("deployment-")
        if f"state-{key}.json" == keep.name:
            continue
        try:
            if len(json.loads(dep_file.read_text()).get("borrowers", [])) != n_borrowers:
                continue
        except (OSError, ValueError):
            continue
        for f in (cache_dir / f"state-{key}.json", dep_file, cache_dir / f"build-state-{key}.log"):
            f.unlink(missing_ok=True)


def _compact_dump(path: Path, dep: Deployment, cache_dir: Path) -> None:
    """Shrink anvil's dump (~5x for 2000 borrowers) so it loads faster.

    Anvil stores a full call trace per mined transaction; only the receipts (logs) matter for
    eth_getLogs / receipts, so each trace is cut down to its root call. The compacted file is
    test-loaded; if anvil rejects it (dump format changed), the original dump is kept."""
    try:
        data = json.loads(path.read_text())
        txs = data.get("transactions")
        if not isinstance(txs, list):
            return
        for tx in txs:
            info = tx.get("info") if isinstance(tx, dict) else None
            traces = info.get("traces") if isinstance(info, dict) else None
            if isinstance(traces, list) and traces and isinstance(traces[0], dict):
                root = dict(traces[0])
                root["children"] = []
                root["logs"] = []
                root["ordering"] = []
                info["traces"] = [root]
    except (OSError, ValueError, TypeError, AttributeError):
        return
    small = path.with_name(path.name + ".compact")
    small.write_text(json.dumps(data, separators=(",", ":")))
    probe = Anvil(port=0, state_load=small, log_path=cache_dir / "probe.log")
    try:
        probe.start()
        with JsonRpc(probe.url) as rpc:
            ok = rpc.call("eth_getCode", [dep.pool, "latest"]) not in ("0x", None)
            if dep.deploy_block:
                ok = ok and bool(
                    rpc.call("eth_getLogs", [{"fromBlock": "0x0", "toBlock": hex(dep.deploy_block), "address": dep.provider}])
                )
    except RuntimeError:
        ok = False
    finally:
        probe.stop()
    if ok:
        os.replace(small, path)
    else:
        small.unlink(missing_ok=True)


def start_devnet(
    port: int = 8545,
    n_borrowers: int = DEFAULT_BORROWERS,
    log_path: Path | None = None,
    cache_dir: Path | None = None,
    extra_args: tuple[str, ...] = (),
    *,
    die_with_parent: bool = True,
) -> tuple[Anvil, Deployment]:
    """Start anvil from the cached state (built first if missing). port=0 picks a free port.
    die_with_parent=False: anvil outlives this process (see Anvil).

    Also writes the deployment to .devnet/deployment.json. The caller stops the node."""
    state = ensure_state(n_borrowers, cache_dir)
    _, dep_path = state_paths(n_borrowers, cache_dir)
    dep = Deployment.load(dep_path)
    node = Anvil(
        port=port,
        state_load=state,
        log_path=log_path or (REPO_ROOT / ".devnet" / "anvil.log"),
        extra_args=extra_args,
        die_with_parent=die_with_parent,
    )
    node.start()
    try:
        dep.save(DEPLOYMENT_JSON)
    except OSError:
        pass  # read-only checkout: the returned Deployment is what matters
    return node, dep


def load_deployment(
    path: Path | None = None, n_borrowers: int | None = None, cache_dir: Path | None = None
) -> Deployment:
    """The devnet Deployment: from `path`; else for the cached state of `n_borrowers`; else
    from .devnet/deployment.json; else the newest deployment-*.json in the cache.
    (Contract addresses are the same in all of them; only `borrowers` differs.)"""
    if path is not None:
        return Deployment.load(Path(path))
    if n_borrowers is not None:
        _, dep_path = state_paths(n_borrowers, cache_dir)
        if not dep_path.is_file():
            raise RuntimeError(f"no cached devnet for n_borrowers={n_borrowers} ({dep_path}); call ensure_state first")
        return Deployment.load(dep_path)
    if DEPLOYMENT_JSON.is_file():
        return Deployment.load(DEPLOYMENT_JSON)
    cache_dir = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    found = sorted(cache_dir.glob("deployment-*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    if found:
        return Deployment.load(found[0])
    raise RuntimeError(
        f"no devnet deployment found ({DEPLOYMENT_JSON} or {cache_dir}/deployment-*.json); "
        "run ensure_state()/start_devnet() first"
    )
