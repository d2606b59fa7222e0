"""Aave V3 views: how the keeper reads a simulation, a receipt and a position back, and
what it shows of them (scan, the status page, logs)."""

from __future__ import annotations

from typing import Any, Callable

from ..base import breaking_price, note_break
from ... import abi
from ...types import Opportunity
from .calls import EV_FLASH, EV_LIQUIDATION, NATIVE_SYMBOLS
from .config import AaveV3Config
from .errors import explain
from .model import AccountHealth, Reserve


class Views:
    """Mixed into the adapter: read-back and display, no I/O."""

    cfg: AaveV3Config
    name: str
    pool: str
    reserves: list[Reserve]
    health: dict[str, AccountHealth]
    last_opportunities: list[Any]

    _to_usd_e8: Callable[[int], int]  # Actions._to_usd_e8

    # -- simulation measurement -------------------------------------------------------
    def measure_tokens(self, opp: Opportunity) -> tuple[str, ...]:
        d = opp.detail
        return (d.debt_asset,) if d.collateral_asset == d.debt_asset else (d.collateral_asset, d.debt_asset)

    def measured_profit_usd_e8(self, opp: Opportunity, deltas: dict[str, int], return_data: bytes) -> int | None:
        """Profit from the simulated balance changes of the keeper: both routes pay the profit
        to the keeper in the debt asset (the inventory route returns what it pulled with it);
        any collateral left with the keeper (none expected) is valued at the quoted rate."""
        d = opp.detail
        r = self.reserve(d.debt_asset)
        if r is None or r.price <= 0:
            return None
        debt_units = deltas.get(d.debt_asset, 0)
        if d.collateral_asset != d.debt_asset and d.collateral_to_liquidator:
            debt_units += deltas.get(d.collateral_asset, 0) * d.swap_out // d.collateral_to_liquidator
        return self._debt_units_usd_e8(r, debt_units)

    def _debt_units_usd_e8(self, r: Reserve, units: int) -> int:
        sign = 1 if units >= 0 else -1
        return sign * self._to_usd_e8(abs(units) * r.price // r.unit)

    def realized_gross_usd_e8(self, opp: Opportunity, realized: dict[str, Any]) -> int | None:
        """The profit the keeper's contract paid out (its Liquidated event), at the debt
        asset's oracle price of the block the opportunity was priced on."""
        r = self.reserve(opp.detail.debt_asset)
        if r is None or r.price <= 0 or "profit" not in realized:
            return None
        return self._debt_units_usd_e8(r, realized["profit"])

    # -- views and outcomes -----------------------------------------------------------
    def explain_revert(self, reason: str) -> str:
        return explain(reason)

    def parse_outcome(self, receipt: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for lg in receipt.get("logs", []):
            if (self.cfg.flash_liquidator and lg.get("topics") and lg["topics"][0] == EV_FLASH.topic0
                    and lg["address"].lower() == self.cfg.flash_liquidator.lower()):
                out["profit"] = EV_FLASH.decode(lg)["profit"]  # debt base units sent to the owner
        for lg in receipt.get("logs", []):
            if lg.get("topics") and lg["topics"][0] == EV_LIQUIDATION.topic0 and lg["address"].lower() == self.pool.lower():
                ev = EV_LIQUIDATION.decode(lg)
                out.update({"debt_repaid": ev["debtToCover"], "collateral_received": ev["liquidatedCollateralAmount"],
                            "collateral_asset": abi.to_checksum(ev["collateralAsset"]),
                            "debt_asset": abi.to_checksum(ev["debtAsset"]), "user": abi.to_checksum(ev["user"])})
                return out
        return out

    def describe(self, opp: Opportunity) -> str:
        d = opp.detail
        r = self.reserve(d.debt_asset)
        amount = d.debt_to_cover / 10**r.decimals if r else d.debt_to_cover
        return f"repay {amount:,.4f} {d.debt_symbol} for {d.collateral_symbol}"

    def symbol(self, asset: str) -> str:
        for r in self.reserves:
            if r.asset.lower() == asset.lower():
                return r.symbol
        return asset

    def reserve(self, asset: str) -> Reserve | None:
        for r in self.reserves:
            if r.asset.lower() == asset.lower():
                return r
        return None

    def can_price_native(self) -> bool:
        return any(r.symbol.upper() in NATIVE_SYMBOLS for r in self.reserves)

    def native_price_usd_e8(self) -> int | None:
        for r in self.reserves:
            if r.symbol.upper() in NATIVE_SYMBOLS and r.price > 0 and r.price_problem is None:
                return self._to_usd_e8(r.price)
        return None

    def positions(self) -> list[dict[str, Any]]:
        best = {o.account: o for o in self.last_opportunities}
        rows = []
        for a, h in self.health.items():
            coll, debt = self._to_usd_e8(h.collateral_base) / 1e8, self._to_usd_e8(h.debt_base) / 1e8
            hf = h.health_factor_wad / 1e18
            # HF is linear in the collateral prices: all of them falling by 1 - 1/HF (debt held)
            # brings it to 1, e.g. HF 1.25 -> liquidatable 20% lower
            to_liq = f", liquidatable at collateral prices {100 * (1 / hf - 1):+.1f}%" if hf >= 1 else ", liquidatable now"
            rows.append({"protocol": self.name, "account": a, "collateral_usd": coll, "debt_usd": debt,
                         "health_factor": hf, "liquidation_move_pct": 100 * (1 / hf - 1) if hf > 0 else None,
                         "summary": f"collateral ${coll:,.0f} debt ${debt:,.0f}{to_liq}", "opportunity": best.get(a)})
        rows.sort(key=lambda r: r["health_factor"])
        return rows

    # -- risk (keeper risk) -------------------------------------------------------------
    def liquidation_prices(self, ts: int) -> list[dict[str, Any]]:
        """For every account of the local model and every price source (feed) that prices
        one of its collaterals: the highest answer of that source, others held, at which
        getUserAccountData (local.account_data at block time `ts`, exact) puts the account
        below HF 1, found by integer bisection over the answer (its smallest step is 1):
        liquidatable at `liquidation_price`, not at `liquidation_price + 1`. The AaveOracle
        returns its source's answer, so the answer is the reserve price in base units (the
        caller checks the two agree). Every reserve priced by the same source moves with it.
        At the liquidation price: the debt then liquidatable, the loss potential (debt above
        the collateral) and the bonus one liquidation pays (the largest debt reserve against
        this collateral, the close factor and bonus of the rules, protocol fee taken off).
        Accounts in an eMode category with its own price source keep that price fixed.
        Pure: no I/O; empty without the local model (health = "chain")."""
        from . import local
        from . import math as am

        rstates, model = getattr(self, "rstates", {}), getattr(self, "model", {})
        cats, emode_prices = getattr(self, "emode_cats", {}), getattr(self, "_emode_prices", {})
        by_id = {r.id: r for r in self.reserves}
        prices = {r.id: r.price for r in self.reserves if r.price_problem in (None, "zero")}
        out: list[dict[str, Any]] = []
        for user, st in model.items():
            if any(rid not in prices or rid not in rstates or rid not in by_id for rid in st.exposure):
                continue
            try:
                now = local.account_data(st, rstates, prices, cats, emode_prices, ts)
            except (KeyError, ValueError):
                continue
            if now.total_debt_base == 0:
                continue
            bals = local.balances(st, rstates, ts)
            colls = [by_id[rid] for rid, coll, _ in st.used
                     if coll and by_id[rid].liquidation_threshold_bps and bals.get(rid, (0, 0))[0] > 0]
            feeds: dict[str, list[Reserve]] = {}
            for c in colls:
                feeds.setdefault((c.price_source or c.asset).lower(), []).append(c)
            for feed, cs in feeds.items():
                moved = [r.id for r in self.reserves if (r.price_source or r.asset).lower() == feed]
                p0 = cs[0].price

                def data(p: int, moved: list[int] = moved) -> local.AccountData:
                    return local.account_data(st, rstates, {**prices, **{i: p for i in moved}}, cats, emode_prices, ts)

                def liquidatable(p: int) -> bool:
                    d = data(p)
                    return am.is_liquidatable(d.health_factor_wad, d.total_debt_base)

                row: dict[str, Any] = {
                    "protocol": self.name, "account": user, "asset": cs[0].symbol,
                    "assets": [c.symbol for c in cs], "feed": cs[0].price_source, "price": p0,
                    "price_decimals": len(str(self.base_unit)) - 1, "price_usd_e8": self._to_usd_e8(p0),
                    "health_factor": now.health_factor_wad / 1e18, "debt_usd_e8": self._to_usd_e8(now.total_debt_base),
                    "collateral_usd_e8": self._to_usd_e8(now.total_collateral_base)}
                status, lp = breaking_price(liquidatable, p0,
                                            am.is_liquidatable(now.health_factor_wad, now.total_debt_base))
                if not note_break(row, status, lp, p0):
                    row["liquidation_price_usd_e8"] = None
                    out.append(row)
                    continue
                row["liquidation_price_usd_e8"] = row["price_usd_e8"] if lp == p0 else self._to_usd_e8(lp)
                at = data(lp)
                row["debt_at_liquidation_usd_e8"] = self._to_usd_e8(at.total_debt_base)
                row["loss_usd_e8"] = self._to_usd_e8(max(0, at.total_debt_base - at.total_collateral_base))
                row["bonus_usd_e8"] = self._risk_bonus(st, cs, lp, moved, prices, bals, at, by_id, cats)
                out.append(row)
        return out

    def _risk_bonus(self, st: Any, cs: list[Reserve], lp: int, moved: list[int], prices: dict[int, int],
                    bals: dict[int, tuple[int, int]], at: Any, by_id: dict[int, Reserve], cats: dict[int, Any]) -> int:
        """The bonus (collateral value received minus debt repaid, USD e8) of the largest
        liquidation the rules allow at the liquidation price: the largest collateral priced
        by the moved source against the largest debt reserve."""
        from . import math as am

        p = {**prices, **{i: lp for i in moved}}
        debts = [(p[rid] * d // by_id[rid].unit, rid) for rid, (_, d) in bals.items() if d > 0]
        if not debts:
            return 0
        d_r = by_id[max(debts)[1]]
        c_r = max(cs, key=lambda c: bals[c.id][0] * p[c.id] // c.unit)
        cat = cats.get(st.emode_category) if st.emode_category else None
        bonus = c_r.liquidation_bonus_bps
        if cat is not None:
            in_cat = (c_r.emode_category == st.emode_category if cat.collateral_bitmap is None
                      else (cat.collateral_bitmap >> c_r.id) & 1 == 1)
            if in_cat:
                bonus = cat.liquidation_bonus
        coll = am.Side(price=p[c_r.id], unit=c_r.unit, balance=bals[c_r.id][0])
        debt = am.Side(price=p[d_r.id], unit=d_r.unit, balance=bals[d_r.id][1])
        liq = am.size_liquidation(self.cfg.rules, at.health_factor_wad, debt, coll, at.total_debt_base,
                                  bonus, c_r.protocol_fee_bps)
        if liq is None:
            return 0
        return self._to_usd_e8(coll.to_base(liq.collateral_to_liquidator) - debt.to_base(liq.debt_to_cover))
