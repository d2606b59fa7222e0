"""Ranking and selection: pure functions over plain data, no I/O.

Every opportunity from every protocol enters one list, is charged its gas at the current
fee, and is ranked by net profit (USD, 8 decimals); ties go to the riskier account.
Selection drops what is below the profit floor, what is already in flight, and what the
keeper's remaining inventory cannot pay for. With an `Impact` it also prices the keeper's own
market impact: walking the ranked list in the order the transactions will execute, each
opportunity that swaps is sized again against the pool book holding the swaps of the ones
selected before it, and its swaps are then applied to the book. So every transaction sent in
a block is profitable in the order it executes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from .types import Opportunity, Priced

WEI_PER_ETH = 10**18


def gas_cost_usd_e8(gas_units: int, gas_price_wei: int, native_usd_e8: int) -> int:
    """Gas cost in USD e8, rounded up: never understate a cost."""
    return -(-gas_units * gas_price_wei * native_usd_e8 // WEI_PER_ETH)


def price(opp: Opportunity, gas_price_wei: int, native_usd_e8: int, gas_units: int | None = None) -> Priced:
    gas = gas_cost_usd_e8(opp.gas_units if gas_units is None else gas_units, gas_price_wei, native_usd_e8)
    return Priced(opp=opp, gas_cost_usd_e8=gas, net_profit_usd_e8=opp.gross_profit_usd_e8 - gas)


def rank(opps: Iterable[Opportunity], gas_price_wei: int, native_usd_e8: int) -> list[Priced]:
    priced = [price(o, gas_price_wei, native_usd_e8) for o in opps]
    priced.sort(key=lambda p: (p.net_profit_usd_e8, p.opp.risk_e18), reverse=True)
    return priced


@dataclass(frozen=True)
class Impact:
    """What select() needs to price the keeper's own swaps: the pool book at the cycle's
    block (a copy: select() applies the chosen swaps to it), the adapters' pure re-sizing
    (opportunity, book) -> opportunity | None, and the gas price to re-price with."""

    book: Any  # keeper.pricing.book.Book
    resize: Callable[[Opportunity, Any], Opportunity | None]
    gas_price_wei: int
    native_usd_e8: int


def select(
    ranked: Iterable[Priced],
    min_profit_usd_e8: int,
    in_flight: set[str] | frozenset[str] = frozenset(),
    inventory: Mapping[str, int] | None = None,
    impact: Impact | None = None,
) -> tuple[list[Priced], list[tuple[Priced, str]]]:
    """Walk the ranked list; return (to act on, [(skipped, reason)]).

    `inventory` maps token -> base units available (None: unlimited, e.g. dry-run without
    an address); each selected opportunity's spend is taken from it in rank order.
    `impact`: re-size each swapping opportunity after the swaps selected before it.
    """
    chosen: list[Priced] = []
    skipped: list[tuple[Priced, str]] = []
    left = dict(inventory) if inventory is not None else None
    seen: set[str] = set()
    for p in ranked:
        key = p.opp.key
        if key in in_flight:
            skipped.append((p, "in_flight"))
            continue
        if key in seen:
            skipped.append((p, "better_route_chosen"))
            continue
        if impact is not None and p.opp.routes:
            resized = impact.resize(p.opp, impact.book)
            if resized is None:
                skipped.append((p, "unprofitable_after_own_impact"))
                continue
            if resized is not p.opp:
                p = price(resized, impact.gas_price_wei, impact.native_usd_e8)
        if p.net_profit_usd_e8 < min_profit_usd_e8 or p.net_profit_usd_e8 <= 0:
            skipped.append((p, "below_min_profit"))
            continue
        if left is not None and any(left.get(t, 0) < amt for t, amt in p.opp.spend):
            skipped.append((p, "inventory_allocated"))
            continue
        if impact is not None and p.opp.routes:
            trial = impact.book.copy()
            try:
                for route in p.opp.routes:
                    trial.apply(route)
            except ValueError:  # priced on a pool state the swaps before it have changed
                skipped.append((p, "unprofitable_after_own_impact"))
                continue
            impact = Impact(trial, impact.resize, impact.gas_price_wei, impact.native_usd_e8)
        if left is not None:
            for t, amt in p.opp.spend:
                left[t] -= amt
        seen.add(key)
        chosen.append(p)
    return chosen, skipped
