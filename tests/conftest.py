"""One devnet per test session (loaded from the cached chain state), snapshot/revert per test."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

REPO = Path(__file__).resolve().parent.parent
DEVNET_CONFIG = REPO / "config" / "devnet.toml"
N_BORROWERS = 40
# anvil's public test account #1: the devnet keeper (local chain only)
KEEPER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
KEEPER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


class Chain:
    """Test-side handle on the devnet: raw calls, balances, price moves, impersonated sends."""

    def __init__(self, url: str, dep: Any):
        self.url = url
        self.dep = dep

    def call(self, method: str, params: list[Any] | None = None) -> Any:
        return rpc(self.url, method, params)

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def nonce(self, addr: str) -> int:
        return int(self.call("eth_getTransactionCount", [addr, "latest"]), 16)

    def view(self, to: str, fn: Any, *args: Any, block: str = "latest") -> Any:
        data = self.call("eth_call", [{"to": to, "data": "0x" + fn.encode(*args).hex()}, block])
        return fn.decode(bytes.fromhex(data[2:]))

    def balance(self, symbol: str, who: str) -> int:
        from keeper import abi

        return self.view(self.dep.tokens[symbol], abi.load("ERC20").fn("balanceOf"), who)[0]

    def shock(self, symbol: str, pct: float | int) -> tuple[int, int]:
        from keeper.devnet import shock

        return shock(self.url, self.dep, symbol, pct)

    def open_position(self, borrower: str, supply: dict[str, int], borrow: tuple[str, int]) -> None:
        """A new Aave V3 borrower: mint and supply each collateral (base units), borrow one asset."""
        from keeper import abi

        erc20, pool = abi.load("ERC20"), abi.load("AavePool")
        self.call("anvil_setBalance", [borrower, hex(10**20)])
        for sym, amount in supply.items():
            tok = self.dep.tokens[sym]
            self.send_as(borrower, tok, erc20.fn("mint(uint256)").encode(amount))
            self.send_as(borrower, tok, erc20.fn("approve").encode(self.dep.pool, amount))
            self.send_as(borrower, self.dep.pool, pool.fn("supply").encode(tok, amount, borrower, 0))
        sym, amount = borrow
        self.send_as(borrower, self.dep.pool, pool.fn("borrow").encode(self.dep.tokens[sym], amount, 2, 0, borrower))

    def rival_liquidates(self, rival: str, collateral: str, debt: str, user: str) -> None:
        """A competitor (fresh address) mints the debt asset, approves the pool and calls
        liquidationCall for everything allowed, with a 100 gwei tip: sent, not awaited (with
        automine off it waits in the pool and lands before the keeper's cheaper sends)."""
        from keeper import abi

        erc20, pool, gwei = abi.load("ERC20"), abi.load("AavePool"), 10**9
        self.call("anvil_setBalance", [rival, hex(10**21)])
        self.call("anvil_impersonateAccount", [rival])
        for i, data in enumerate((erc20.fn("mint(uint256)").encode(10**30),
                                  erc20.fn("approve").encode(self.dep.pool, 2**256 - 1),
                                  pool.fn("liquidationCall").encode(collateral, debt, user, 2**256 - 1, False))):
            self.call("eth_sendTransaction", [{"from": rival, "to": debt if i < 2 else self.dep.pool,
                                               "data": "0x" + data.hex(), "gas": hex(1_500_000), "nonce": hex(i),
                                               "maxFeePerGas": hex(500 * gwei), "maxPriorityFeePerGas": hex(100 * gwei)}])

    def send_as_pending(self, sender: str, to: str, data: bytes) -> str:
        """Send without waiting (for chains with automine off)."""
        self.call("anvil_impersonateAccount", [sender])
        return self.call("eth_sendTransaction", [{"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(100_000)}])

    def send_as(self, sender: str, to: str | None, data: bytes | str, gas: int = 2_000_000) -> dict[str, Any]:
        """Send from any account (impersonated), wait for the receipt, assert success. to=None
        deploys."""
        self.call("anvil_impersonateAccount", [sender])
        tx = {"from": sender, "data": data if isinstance(data, str) else "0x" + data.hex(), "gas": hex(gas)}
        if to:
            tx["to"] = to
        h = self.call("eth_sendTransaction", [tx])
        rc = None
        for _ in range(200):
            rc = self.call("eth_getTransactionReceipt", [h])
            if rc:
                break
            time.sleep(0.01)
        assert rc and rc["status"] == "0x1", rc
        return rc


def _stop_session_on_signals() -> dict[int, Any]:
    """SIGTERM / SIGHUP to the test session end it the way Ctrl-C does: a KeyboardInterrupt
    (it goes through asyncio and `except Exception`, where pytest.exit would not) unwinds
    the running test, pytest tears the session fixtures down, so the devnet's anvil is
    stopped, and exits with pytest's "interrupted" code 2. (If the session is killed
    outright, anvil still goes: it gets SIGTERM from the kernel when its parent dies, see
    keeper/devnet/anvil.py.) Main thread only; returns the previous handlers."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: Any) -> None:
        for sig in previous:  # a second signal ends the session at once
            signal.signal(sig, signal.SIG_DFL)
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, handler)
    return previous


@pytest.fixture(scope="session")
def devnet():
    import signal

    from keeper.devnet import start_devnet

    previous = _stop_session_on_signals()
    try:
        node, dep = start_devnet(port=0, n_borrowers=N_BORROWERS, log_path=REPO / ".devnet" / f"test-anvil-{os.getpid()}.log")
        try:
            yield node, dep
        finally:
            node.stop()
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h if h is not None else signal.SIG_DFL)


@pytest.fixture
def chain(devnet):
    node, dep = devnet
    snap = rpc(node.url, "evm_snapshot")
    try:
        yield Chain(node.url, dep)
    finally:
        rpc(node.url, "evm_revert", [snap])
        rpc(node.url, "evm_setAutomine", [True])
        # anvil keeps its fee state across a revert: put the next base fee back where the block says
        base = rpc(node.url, "eth_getBlockByNumber", ["latest", False])["baseFeePerGas"]
        rpc(node.url, "anvil_setNextBlockBaseFeePerGas", [base])


def only_env(name: str) -> dict[str, str]:
    """Environment overrides that leave only the named [[protocols]] entry of devnet.toml on."""
    import tomllib

    names = [p["name"] for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"]]
    return {f"KEEPER_PROTOCOLS__{i}__ENABLED": "true" if n == name else "false" for i, n in enumerate(names)}


def keeper_env(chain: Chain, **extra: str) -> dict[str, str]:
    return {"KEEPER_RPC_URL": chain.url, "KEEPER_PRIVATE_KEY": KEEPER_KEY, **extra}


@pytest_asyncio.fixture(loop_scope="session")
async def make_keeper(chain, monkeypatch, tmp_path):
    """Build and start an in-process keeper on the devnet; closed after the test."""
    from keeper.app import Keeper
    from keeper.config import load_config

    made: list[Keeper] = []
    monkeypatch.setenv("KEEPER_PRIVATE_KEY", KEEPER_KEY)

    async def make(dry_run: bool = False, routes: str = '["inventory"]', only: str | None = None, **env: str) -> Keeper:
        """routes: the Aave tests use the keeper's own inventory unless they ask for flash loans.
        only: run just this [[protocols]] entry of config/devnet.toml (the others disabled)."""
        import tomllib

        names = [p["name"] for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"]]
        if "aave-v3-devnet" in names:
            env.setdefault(f"KEEPER_PROTOCOLS__{names.index('aave-v3-devnet')}__ROUTES", routes)
        if only is not None:
            for i, n in enumerate(names):
                env.setdefault(f"KEEPER_PROTOCOLS__{i}__ENABLED", "true" if n == only else "false")
        env.setdefault("KEEPER_KEEPER__JOURNAL", str(tmp_path / f"journal-{len(made)}.jsonl"))
        cfg = load_config(DEVNET_CONFIG, environ=keeper_env(chain, **env))
        k = Keeper(cfg, dry_run=dry_run)
        made.append(k)
        await k.start()
        return k

    yield make
    for k in made:
        await k.close()


@pytest.fixture
def steady_clock(chain):
    """Blocks 12 s apart unless a step says otherwise: a seed replays the same chain."""
    chain.call("anvil_setBlockTimestampInterval", [12])
    try:
        yield
    finally:
        chain.call("anvil_removeBlockTimestampInterval")


@pytest.fixture(autouse=True)
def _fresh_logging():
    """A test that runs the CLI configures logging globally (level, renderer); reset it so the
    next test's capture_logs sees every event."""
    import structlog

    structlog.reset_defaults()
    yield
    structlog.reset_defaults()
