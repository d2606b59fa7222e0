"""Aave V3 views: how the keeper reads a simulation, a receipt and a position back, and
what it shows of them (scan, the status page, logs)."""

from __future__ import annotations

from typing import Any, Callable

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
