"""Morpho Blue actions: each liquidatable position's most profitable size (keeper.sizing over
the collateral seized, the sale quoted on the shared pool book) and the call that carries it
out through the keeper's MorphoLiquidator (no capital: the collateral is sold and the loan
token repaid inside Morpho's onMorphoLiquidate callback). Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ... import sizing
from ...types import Opportunity, TxPlan
from ..base import Resizing
from . import math as mm
from .calls import F_LIQUIDATE, HOP_GAS
from .config import MorphoBlueConfig
from .model import Candidate, MorphoLiquidation


@dataclass(frozen=True, slots=True)
class Valued:
    mode: str
    arg: int  # seizedAssets or repaidShares, as passed
    liq: mm.Liquidation
    route: Any  # keeper.pricing.book.Route
    profit: int  # loan token base units
    profit_usd_e8: int


class Actions(Resizing):
    """Mixed into the adapter: sizing and encoding over what the refresh read."""

    cfg: MorphoBlueConfig
    name: str
    kind: str
    keeper: str | None
    sizing: str
    _candidates: dict[tuple[str, ...], tuple[int, Candidate]]
    symbol: Callable[[str], str]

    @property
    def can_liquidate(self) -> bool:
        return bool(self.cfg.liquidator) and self.keeper is not None

    def _value(self, k: Candidate, book: Any, *, seized: int = 0, shares: int = 0) -> Valued | None:
        """Liquidating by `seized` collateral (or `shares` borrow shares): what Morpho takes
        and gives (exact), the best sale of the seized collateral on `book`, the profit."""
        m = k.market
        try:
            liq = mm.liquidate(k.state, k.borrow_shares, k.collateral, k.price, m.lltv,
                               seized_assets=seized, repaid_shares=shares)
        except (mm.Overflow, ValueError):
            return None
        if liq.seized_assets <= 0 or liq.repaid_shares <= 0:
            return None
        route = book.quote(m.collateral_token, m.loan_token, liq.seized_assets)
        if route is None or route.amount_out <= 0:
            return None
        profit = route.amount_out - liq.repaid_assets
        return Valued("seized_assets" if seized else "repaid_shares", seized or shares, liq, route, profit,
                      m.loan_usd_e8_of(profit))

    def _size(self, block: int, k: Candidate, book: Any) -> Opportunity | str:
        """The most profitable liquidation of the position: the size search over seizedAssets
        in [1, max seizable] (all the collateral when the position is underwater: the rest of
        the debt is then written off as bad debt), and, when the position is not underwater,
        closing it entirely with repaidShares = all its borrow shares. sizing = "max": the
        largest only."""
        if book is None:
            return "no_swap_route"
        if k.max_seize <= 0:
            return "dust_or_zero_size"
        options: list[Valued] = []
        if not k.underwater:
            full = self._value(k, book, shares=k.borrow_shares)
            if full is not None:
                options.append(full)
        if self.sizing == "max":
            if not options:
                v = self._value(k, book, seized=k.max_seize)
                if v is not None:
                    options.append(v)
        else:
            def evaluate(x: int) -> tuple[int, Valued] | None:
                v = self._value(k, book, seized=x)
                return None if v is None else (v.profit, v)

            best = sizing.maximize(evaluate, max(1, k.max_seize >> 12), k.max_seize, extra=(k.max_seize,))
            if best is not None:
                options.append(best.value)  # type: ignore[arg-type]
        if not options:
            return "no_swap_route"
        v = max(options, key=lambda o: o.profit)
        if v.profit <= 0:
            return "below_min_profit"
        if k.market.loan_usd_e8 <= 0:
            return "price_unavailable"
        return self._opportunity(block, k, v)

    def _opportunity(self, block: int, k: Candidate, v: Valued) -> Opportunity:
        m, liq, route = k.market, v.liq, v.route
        min_profit = v.profit * self.cfg.min_profit_share_bps // 10_000
        seized_arg, shares_arg = (v.arg, 0) if v.mode == "seized_assets" else (0, v.arg)
        detail = MorphoLiquidation(
            market_id=m.id, market_label=m.label, borrower=k.borrower, loan_token=m.loan_token,
            collateral_token=m.collateral_token, loan_symbol=m.loan_symbol, collateral_symbol=m.collateral_symbol,
            mode=v.mode, seized_assets_arg=seized_arg, repaid_shares_arg=shares_arg,
            seized_assets=liq.seized_assets, repaid_shares=liq.repaid_shares, repaid_assets=liq.repaid_assets,
            bad_debt_shares=liq.bad_debt_shares, bad_debt_assets=liq.bad_debt_assets, swap_out=route.amount_out,
            profit=v.profit, min_profit=min_profit, loan_usd_e8=m.loan_usd_e8, loan_decimals=m.loan_decimals,
            health_factor_wad=k.health_factor_wad, incentive_factor_wad=mm.liquidation_incentive_factor(m.lltv),
            swap_route=route.describe(self.symbol))
        plan = TxPlan(
            to=self.cfg.liquidator or "",
            data=F_LIQUIDATE.encode(m.params, k.borrower, seized_arg, shares_arg, route.encode(), min_profit),
            gas_limit=self.cfg.gas_limit,
            description=f"morpho liquidation {m.label} {k.borrower} through the callback",
        )
        hops = len(route.hops)
        return Opportunity(
            protocol=self.name, kind=self.kind, account=k.borrower, block=block,
            gross_profit_usd_e8=v.profit_usd_e8, gas_units=self.cfg.gas_estimate + HOP_GAS * max(0, hops - 1),
            plan=plan, detail=detail, risk_e18=10**18 - min(k.health_factor_wad, 10**18),
            routes=(route,) if hops else ())

    def _record_key(self, opp: Opportunity) -> tuple[Any, ...]:
        return (opp.account,)  # one sizing record per borrower (its best market)
