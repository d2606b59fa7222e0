"""Perps views for `keeper risk` (keeper/risk.py): where every open position of every tracked
margin account breaks, in the market's price feed units.

Adapter.liquidation_prices(ts, feeds) (the adapter's method calls `liquidation_prices` below)
gives one row per account and open market. Pure: no I/O; it uses the state the adapter's last
refresh read (Adapter.refresh: positions, collateral, the protocol's own margins, the markets'
index prices and configurations, the keeper reward guards).
"""

from __future__ import annotations

from typing import Any

from . import math as pm
from ..base import note_break

USD_E8_PER_WAD = 10**10  # snxUSD wad -> USD e8, at $1


def liquidation_prices(adapter: Any, ts: int, feeds: dict[int, tuple[str, int, int, str]] | None = None
                       ) -> list[dict[str, Any]]:
    """For every open position of every tracked account not yet flagged: the answer of its
    market's price feed (every other market's price held) at which the account becomes
    eligible for liquidation as the contract decides it (requiredMaintenanceMargin >
    availableMargin, math.py's exact integer model). A long breaks as the price falls
    (direction "down": the highest such answer, so one feed step above it is safe), a short
    as it rises (direction "up": the lowest such answer, one step below it is safe).

    feeds: market id -> (feed address, scale, answer, asset), read by the caller: the
    market's index price is answer * scale (scale = 10**(18 - feed decimals)); the search then
    runs on that feed's grid and liquidation_price / price are feed answers (price_units
    "feed"). A market left out of feeds is searched on the adapter's price_step_wad grid and
    reported as its wad index price (price_units "index_wad"), asset = the market symbol.

    Row fields (money in USD e8, snxUSD at $1):
      debt_usd_e8                 the position's notional now (|size| * index price): what
                                  a liquidation of the account takes over in that market
      debt_at_liquidation_usd_e8  that notional at the liquidation price
      loss_usd_e8                 the shortfall the insurance fund would take when the account
                                  is flagged at that price: max(0, -availableMargin) (the fund
                                  receives the whole available margin, negative or not)
      bonus_usd_e8                the keeper's flag reward at that price (math.flag_payout:
                                  keeperReward of the positions' flag rewards, bounded by the
                                  guards); later_rewards_usd_e8 what the liquidateFlagged calls
                                  that close the rest over later windows pay, if it takes more
      collateral_usd_e8           the account's available margin now (collateral + PnL)
    Accounts that are liquidatable now get status "liquidatable_now" and liquidation_price =
    the current answer (distance 0), as the other protocols' rows. "safe": no positive price
    makes the account liquidatable (a long whose collateral covers the position to price 1).

    What the model does not see (funding, interest, markets not watched) enters as the
    constant offsets that make it equal the protocol's own margins at the block read; `ts` is
    not used (nothing in the model moves with time)."""
    feeds = feeds or {}
    g = adapter.guards
    prices = {m.id: m.price for m in adapter.markets}
    params = {m.id: m.params for m in adapter.markets}
    symbols = {m.id: m.symbol for m in adapter.markets}
    if any(p is None for p in params.values()):
        return []
    out: list[dict[str, Any]] = []
    for a, st in sorted(adapter.state.items()):
        if st.flagged or not st.positions:
            continue
        am_off = st.available_margin - st.model_margin
        mm_off = st.required_maintenance - st.model_maintenance
        now_bad = st.required_maintenance > st.available_margin
        for q in st.positions:
            mid = q.market_id
            feed, scale, answer, asset = feeds.get(mid, ("", 0, 0, ""))
            if feed and scale > 0 and answer * scale == prices[mid]:
                units, step, to_units = "feed", scale, scale  # index price = answer * scale
            else:  # no feed read, or it does not give the index price: wad index prices
                feed, asset, answer = "", symbols[mid], prices[mid]
                units, step, to_units = "index_wad", adapter.cfg.price_step_wad, 1
            long = q.size > 0
            row: dict[str, Any] = {
                "protocol": adapter.name, "account": str(a), "market_id": mid, "market": symbols[mid],
                "asset": asset, "assets": [asset], "feed": feed or None, "price": answer, "price_units": units,
                "direction": "down" if long else "up", "side": "long" if long else "short", "size": q.size,
                "health_factor": (st.available_margin / st.required_maintenance if st.required_maintenance > 0
                                  else float("inf")),
                "debt_usd_e8": abs(q.size) * prices[mid] // pm.WAD // USD_E8_PER_WAD,
                "collateral_usd_e8": _usd_e8(st.available_margin)}
            if now_bad:
                status, lp_wad = "liquidatable_now", prices[mid]
            else:
                lp_wad = pm.liquidation_price(params, st.positions, prices, st.collateral, g, mid, step=step,
                                              am_offset=am_off, mm_offset=mm_off)
                status = "safe" if lp_wad is None else "at_risk"
            if not note_break(row, status, None if lp_wad is None else lp_wad // to_units, answer):
                row["debt_at_liquidation_usd_e8"] = 0
                out.append(row)
                continue
            at = {**prices, mid: lp_wad}
            am = pm.available_margin(st.collateral, st.positions, at) + am_off
            flag = pm.flag_payout(params, st.positions, at, st.collateral, g)
            n_windows = max(pm.windows(params[p.market_id], p.size) for p in st.positions)
            row.update(debt_at_liquidation_usd_e8=abs(q.size) * lp_wad // pm.WAD // USD_E8_PER_WAD,
                       loss_usd_e8=_usd_e8(max(0, -am)), bonus_usd_e8=_usd_e8(flag),
                       later_rewards_usd_e8=_usd_e8((n_windows - 1) * pm.continuation_reward(g)))
            out.append(row)
    return out


def _usd_e8(wad: int) -> int:
    """snxUSD wad -> USD e8 (truncated toward zero)."""
    return wad // USD_E8_PER_WAD if wad >= 0 else -(-wad // USD_E8_PER_WAD)
