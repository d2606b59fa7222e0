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
DEMO_STORE = REPO / ".devnet" / "demo-store.sqlite"  # what `keeper report` reads after a demo
MAX_GAP_PPM = 1_000  # expected and realized profit must agree within 0.1%
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
        outcomes, keeper = asyncio.run(_run_keeper(node.url))
        print("[4/4] summary", flush=True)
        confirmed, worst_ppm = _summary(outcomes, keeper)
    finally:  # also on Ctrl-C, SIGTERM, SIGHUP (keeper.cli turns those into exceptions)
        node.stop()
        print(f"devnet stopped; total {time.monotonic() - t0:.1f}s", flush=True)
    if worst_ppm > MAX_GAP_PPM:
        print(f"expected and realized differ by more than {MAX_GAP_PPM / 10_000}% for some action", flush=True)
        return 1
    return 0 if confirmed else 1


async def _run_keeper(url: str) -> tuple[list[Outcome], Any]:
    """The keeper live on the devnet, which mines like a real chain: automine off, one block
    after each cycle, so every transaction a cycle sends lands in the same next block (and
    the ones after the first meet the pools the ones before them moved)."""
    from .app import Keeper
    from .config import load_config

    env = dict(os.environ)
    env["KEEPER_RPC_URL"] = url
    journal = REPO / ".devnet" / "demo-journal.jsonl"  # a fresh chain each demo: a fresh journal
    journal.unlink(missing_ok=True)
    env["KEEPER_KEEPER__JOURNAL"] = str(journal)
    for stale in DEMO_STORE.parent.glob(DEMO_STORE.name + "*"):  # and its -wal / -shm files
        stale.unlink()
    env["KEEPER_KEEPER__STORE_PATH"] = str(DEMO_STORE)
    env.setdefault("KEEPER_KEEPER__RECEIPT_TIMEOUT_S", "0.2")  # the receipts come with the next cycle
    env.setdefault("KEEPER_PRIVATE_KEY", DEVNET_KEEPER_KEY)
    cfg = load_config(REPO / "config" / "devnet.toml", environ=env)
    os.environ.setdefault("KEEPER_PRIVATE_KEY", DEVNET_KEEPER_KEY)
    keeper = Keeper(cfg, dry_run=False, log=logmod.get())
    try:
        await keeper.start()
        await keeper.rpc.call("evm_setAutomine", [False])
        idle = 0
        for _ in range(MAX_ROUNDS):
            head = await keeper.read_head()
            outs = await keeper.cycle(head)
            step = cfg.chain.block_time_s  # the next block comes when the keeper priced it for
            if any(o.status in ("confirmed", "failed") for o in outs) or keeper.executor.in_flight:
                idle = 0
            else:
                idle += 1
                if idle >= 25:
                    break
                step = AUCTION_STEP_S  # nothing to do right now: let the auction clocks run
            await keeper.rpc.call("evm_setNextBlockTimestamp", [head.timestamp + step])
            await keeper.rpc.call("evm_mine", [])
        return list(keeper.executor.outcomes), keeper
    finally:
        await keeper.close()


def _summary(outcomes: list[Outcome], keeper: Any) -> tuple[int, int]:
    """One line per confirmed action: expected (the keeper's estimate when it sent, after gas)
    and realized (what its receipt shows it earned, minus the gas it paid). Returns
    (confirmed, largest gap between them in parts per million of the expected profit)."""
    confirmed = [o for o in outcomes if o.status == "confirmed"]
    print(f"{'protocol':<16} {'account / auction':<44} {'what':<64} {'expected $':>11} {'realized $':>11}")
    total_exp = total_real = 0
    worst_ppm = 0
    for o in confirmed:
        adapter = keeper.adapters.get(o.opp.protocol)
        what = adapter.describe(o.opp) if adapter is not None else o.opp.plan.description
        realized = keeper.realized_profit_usd_e8(o)
        total_exp += o.expected_profit_usd_e8
        shown = "?"
        if realized is not None:
            total_real += realized
            shown = f"{realized / 1e8:,.2f}"
            if o.expected_profit_usd_e8:
                worst_ppm = max(worst_ppm, abs(realized - o.expected_profit_usd_e8) * 1_000_000
                                // abs(o.expected_profit_usd_e8))
        print(f"{o.opp.protocol:<16} {o.opp.account[:44]:<44} {what[:64]:<64} "
              f"{o.expected_profit_usd_e8 / 1e8:>11,.2f} {shown:>11}")
    skipped = sum(1 for o in outcomes if o.status == "skipped")
    failed = sum(1 for o in outcomes if o.status == "failed")
    print(f"{len(confirmed)} actions confirmed, {failed} failed, {skipped} skipped; expected ${total_exp / 1e8:,.2f}, "
          f"realized ${total_real / 1e8:,.2f}; largest gap {worst_ppm / 10_000:.4f}% of the expected profit"
          "\nexpected: the keeper's estimate before sending (swaps quoted exactly on the pools as its own earlier"
          " sends leave them), after gas"
          "\nrealized: from the receipts (profit paid to the keeper, rewards, held collateral at the oracle price),"
          " minus the gas paid"
          f"\neverything seen and done is in {DEMO_STORE.relative_to(REPO)}:"
          f" keeper report --config config/devnet.toml --store {DEMO_STORE.relative_to(REPO)}")
    return len(confirmed), worst_ppm
