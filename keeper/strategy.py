"""Ranking and selection: pure functions over plain data, no I/O.

Every opportunity from every protocol enters one list, is charged its gas at the current
fee, and is ranked by net profit (USD, 8 decimals); ties go to the riskier account.
Selection drops what is below the profit floor, what is already in flight, and what the
keeper's remaining inventory cannot pay for.
"""

from __future__ import annotations

from typing import Iterable, Mapping

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


def select(
    ranked: Iterable[Priced],
    min_profit_usd_e8: int,
    in_flight: set[str] | frozenset[str] = frozenset(),
    inventory: Mapping[str, int] | None = None,
) -> tuple[list[Priced], list[tuple[Priced, str]]]:
    """Walk the ranked list; return (to act on, [(skipped, reason)]).

    `inventory` maps token -> base units available (None: unlimited, e.g. dry-run without
    an address); each selected opportunity's spend is taken from it in rank order.
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
        if p.net_profit_usd_e8 < min_profit_usd_e8 or p.net_profit_usd_e8 <= 0:
            skipped.append((p, "below_min_profit"))
            continue
        if left is not None:
            short = [t for t, amt in p.opp.spend if left.get(t, 0) < amt]
            if short:
                skipped.append((p, "inventory_allocated"))
                continue
            for t, amt in p.opp.spend:
                left[t] -= amt
        seen.add(key)
        chosen.append(p)
    return chosen, skipped
