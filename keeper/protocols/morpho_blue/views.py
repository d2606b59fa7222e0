"""Morpho Blue views: how the keeper reads a simulation, a receipt and a position back, and
what it shows of them (scan, the status page, logs)."""

from __future__ import annotations

from typing import Any

from ..base import breaking_price, note_break
from ... import abi
from ...types import Opportunity
from . import math as mm
from .calls import EV_LIQUIDATE, EV_LIQUIDATED
from .config import MorphoBlueConfig
from .model import Market, Position


class Views:
    """Mixed into the adapter: read-back and display, no I/O."""

    cfg: MorphoBlueConfig
    name: str
    markets: dict[str, Market]
    positions_by: dict[tuple[str, str], Position]
    last_opportunities: list[Any]
    next_ts: int

    # -- simulation measurement -------------------------------------------------------
    def measure_tokens(self, opp: Opportunity) -> tuple[str, ...]:
        d = opp.detail
        return (d.collateral_token, d.loan_token)

    def measured_profit_usd_e8(self, opp: Opportunity, deltas: dict[str, int], return_data: bytes) -> int | None:
        """The keeper's simulated balance change: the profit in the loan token (any collateral
        left with the keeper, none expected, at the quoted rate), at the price it was ranked at."""
        d = opp.detail
        units = deltas.get(d.loan_token, 0)
        if d.seized_assets:
            units += deltas.get(d.collateral_token, 0) * d.swap_out // d.seized_assets
        return _usd(units, d.loan_usd_e8, d.loan_decimals)

    def realized_gross_usd_e8(self, opp: Opportunity, realized: dict[str, Any]) -> int | None:
        """The profit the MorphoLiquidator paid the keeper (its MorphoLiquidated event), at the
        loan token price the opportunity was ranked at."""
        if "profit" not in realized:
            return None
        d = opp.detail
        return _usd(realized["profit"], d.loan_usd_e8, d.loan_decimals)

    def parse_outcome(self, receipt: dict[str, Any]) -> dict[str, Any]:
        """The keeper's MorphoLiquidated (profit) and Morpho's Liquidate (the protocol's numbers,
        bad debt included)."""
        out: dict[str, Any] = {}
        for lg in receipt.get("logs", []):
            topics = lg.get("topics") or []
            if not topics:
                continue
            if (self.cfg.liquidator and topics[0] == EV_LIQUIDATED.topic0
                    and lg["address"].lower() == self.cfg.liquidator.lower()):
                out["profit"] = EV_LIQUIDATED.decode(lg)["profit"]
            elif topics[0] == EV_LIQUIDATE.topic0 and lg["address"].lower() == self.cfg.morpho.lower():
                ev = EV_LIQUIDATE.decode(lg)
                out.update({"market_id": "0x" + ev["id"].hex(), "borrower": abi.to_checksum(ev["borrower"]),
                            "repaid_assets": ev["repaidAssets"], "repaid_shares": ev["repaidShares"],
                            "seized_assets": ev["seizedAssets"], "bad_debt_assets": ev["badDebtAssets"],
                            "bad_debt_shares": ev["badDebtShares"]})
        return out

    def describe(self, opp: Opportunity) -> str:
        d = opp.detail
        bad = f", bad debt {d.bad_debt_assets / 10**d.loan_decimals:,.4f}" if d.bad_debt_shares else ""
        return (f"repay {d.repaid_assets / 10**d.loan_decimals:,.4f} {d.loan_symbol} for {d.collateral_symbol} "
                f"({d.market_label}{bad})")

    def symbol(self, token: str) -> str:
        t = token.lower()
        for m in self.markets.values():
            if m.loan_token.lower() == t:
                return m.loan_symbol
            if m.collateral_token.lower() == t:
                return m.collateral_symbol
        return token[:10]

    def positions(self) -> list[dict[str, Any]]:
        """One row per open borrow: market, LTV against the LLTV, the liquidation price, at
        the next block's time (interest accrued)."""
        best = {o.account: o for o in self.last_opportunities}
        rows = []
        for (mid, who), p in self.positions_by.items():
            m = self.markets.get(mid)
            if m is None or m.state is None or p.borrow_shares == 0 or m.price <= 0:
                continue
            st = m.accrued(max(self.next_ts, m.state.last_update))
            borrowed = mm.borrowed_assets(p.borrow_shares, st)
            coll_value = mm.mul_div_down(p.collateral, m.price, mm.ORACLE_PRICE_SCALE)  # in loan units
            hf = mm.health_factor_wad(p.borrow_shares, p.collateral, st, m.price, m.lltv) / 1e18
            ltv = borrowed / coll_value if coll_value else float("inf")
            liq = mm.liquidation_price(p.borrow_shares, p.collateral, st, m.lltv)
            # the oracle price in loan token per whole collateral token
            scale = 10**m.collateral_decimals / 10**m.loan_decimals / 1e36
            liq_h = liq * scale if liq is not None else None
            price_h = m.price * scale
            coll_usd = m.loan_usd_e8_of(coll_value) / 1e8
            debt_usd = m.loan_usd_e8_of(borrowed) / 1e8
            to_liq = (f", liquidatable below {liq_h:,.6g} {m.loan_symbol}/{m.collateral_symbol}"
                      f" (now {price_h:,.6g})" if hf >= 1 and liq_h else ", liquidatable now")
            rows.append({"protocol": self.name, "account": who, "market": m.label, "market_id": mid,
                         "collateral_usd": coll_usd, "debt_usd": debt_usd, "health_factor": hf,
                         "ltv": ltv, "lltv": m.lltv / 1e18, "liquidation_price": liq_h,
                         "liquidation_move_pct": 100 * (1 / hf - 1) if hf > 0 else None,
                         "summary": f"{m.label}: LTV {100 * ltv:.2f}% vs LLTV {m.lltv / 1e16:g}%{to_liq}",
                         "opportunity": best.get(who)})
        rows.sort(key=lambda r: r["health_factor"])
        return rows


def _usd(units: int, usd_e8: int, decimals: int) -> int | None:
    if usd_e8 <= 0:
        return None
    sign = 1 if units >= 0 else -1
    return sign * (abs(units) * usd_e8 // 10**decimals)


def _risk_liquidation_prices(self: Any, ts: int, oracles: dict[str, tuple[int, str, int, int]]) -> list[dict[str, Any]]:
    """Views.liquidation_prices (below)."""
    out: list[dict[str, Any]] = []
    accrued: dict[str, mm.MarketState] = {}
    for (mid, who), p in self.positions_by.items():
        m = self.markets.get(mid)
        if m is None or m.state is None or p.borrow_shares == 0 or m.price <= 0:
            continue
        st = accrued.get(mid)
        if st is None:
            st = accrued[mid] = m.accrued(max(ts, m.state.last_update))
        borrowed = mm.borrowed_assets(p.borrow_shares, st)
        ora = oracles.get(mid)
        if ora is not None and ora[0] * ora[3] // ora[2] != m.price:
            ora = None  # the oracle is not SCALE_FACTOR * base / quote as read: oracle price only
        if ora is not None:
            scale, feed, quote, a0 = ora

            def price_at(a: int) -> int:
                return scale * a // quote
        else:
            feed, a0 = "", m.price

            def price_at(a: int) -> int:
                return a

        def unhealthy(a: int) -> bool:
            return not mm.is_healthy(p.borrow_shares, p.collateral, st, price_at(a), m.lltv)

        row: dict[str, Any] = {
            "protocol": self.name, "account": who, "market": m.label, "market_id": mid,
            "asset": m.collateral_symbol, "assets": [m.collateral_symbol], "feed": feed or None, "price": a0,
            "price_units": "feed" if feed else "oracle_1e36",
            "health_factor": mm.health_factor_wad(p.borrow_shares, p.collateral, st, m.price, m.lltv) / 1e18,
            "debt_usd_e8": m.loan_usd_e8_of(borrowed),
            "collateral_usd_e8": m.loan_usd_e8_of(mm.mul_div_down(p.collateral, m.price, mm.ORACLE_PRICE_SCALE))}
        status, lp = breaking_price(unhealthy, a0, unhealthy(a0))
        if not note_break(row, status, lp, a0):
            out.append(row)
            continue
        pl = price_at(lp)
        row["debt_at_liquidation_usd_e8"] = m.loan_usd_e8_of(borrowed)
        row["loss_usd_e8"] = m.loan_usd_e8_of(max(0, borrowed - mm.mul_div_down(p.collateral, pl, mm.ORACLE_PRICE_SCALE)))
        bonus = 0
        if pl > 0:
            seize = mm.max_seizable(st, p.borrow_shares, p.collateral, pl, m.lltv)
            if seize > 0:
                liq = mm.liquidate(st, p.borrow_shares, p.collateral, pl, m.lltv, seized_assets=seize)
                bonus = m.loan_usd_e8_of(mm.mul_div_down(liq.seized_assets, pl, mm.ORACLE_PRICE_SCALE) - liq.repaid_assets)
                row["bad_debt_usd_e8"] = m.loan_usd_e8_of(liq.bad_debt_assets)
        row["bonus_usd_e8"] = bonus
        out.append(row)
    return out


def liquidation_prices(self: Any, ts: int, oracles: dict[str, tuple[int, str, int, int]] | None = None
                       ) -> list[dict[str, Any]]:
    """For every open borrow: the highest answer of the market's collateral feed (the
    oracle's BASE_FEED_1, others held) at which Morpho._isHealthy fails at block time `ts`
    (interest accrued, exact): not healthy at `liquidation_price`, healthy one step above.
    oracles: market id -> (SCALE_FACTOR, base feed, quote feed answer, base feed answer),
    read by the caller, for oracles of the ChainlinkOracle shape price = SCALE_FACTOR *
    base / quote (checked against the price read); otherwise the bisection is over the
    oracle price itself (1e36 scale). At the liquidation price: the debt, the loss
    potential (debt above the collateral's value), the bonus of seizing all Morpho allows
    (seized value minus repaid assets) and the bad debt that would realize. Pure: no I/O."""
    return _risk_liquidation_prices(self, ts, oracles or {})


Views.liquidation_prices = liquidation_prices  # type: ignore[attr-defined]
