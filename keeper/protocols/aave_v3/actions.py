"""Aave V3 actions: the routes the keeper can take, each candidate's most profitable size
(keeper.sizing over the debt repaid, the swap back quoted on the pool book) and the call
that carries it out through the keeper's liquidator contract. Pure: no I/O."""

from __future__ import annotations

from typing import Any, Callable

from ... import sizing
from ...types import Approval, Opportunity, TxPlan
from ..base import Resizing
from . import math as am
from .calls import F_FLASH, F_INVENTORY, HOP_GAS, MAX_UINT
from .config import AaveV3Config
from .model import AaveLiquidation, Candidate, Reserve, Valued


class Actions(Resizing):
    """Mixed into the adapter: sizing and encoding over what refresh() read."""

    cfg: AaveV3Config
    keeper: str | None
    sizing: str
    base_unit: int
    flash_premium_bps: int
    _candidates: dict[tuple[str, ...], tuple[int, Candidate]]

    symbol: Callable[[str], str]  # Views.symbol

    @property
    def flash_enabled(self) -> bool:
        return "flash" in self.cfg.routes and bool(self.cfg.flash_liquidator) and self.keeper is not None

    @property
    def routes(self) -> tuple[str, ...]:
        """The routes this keeper can take: both go through the keeper's liquidator contract,
        which sells the seized collateral in the same transaction (the inventory route repays
        from the keeper's balance and gets it back with the profit; the flash route borrows)."""
        out: tuple[str, ...] = ()
        if "inventory" in self.cfg.routes and self.cfg.flash_liquidator:
            out += ("inventory",)
        if self.flash_enabled:
            out += ("flash",)
        return out


    # -- sizing (pure: no I/O) --------------------------------------------------------
    def _size(self, block: int, k: Candidate, book: Any) -> Opportunity | str:
        """The candidate's most profitable size (keeper.sizing over the debt repaid, quoted on
        `book`), or with sizing = "max" the largest the rules and inventory allow; a skip
        reason when no size pays."""
        if book is None:
            return "no_swap_route"

        def evaluate(amount: int) -> tuple[int, Valued] | None:
            v = self._value(k, amount, book)
            return None if v is None else (v.profit_usd_e8, v)

        if self.sizing == "max":
            found = evaluate(k.limit)
            if found is None:
                return self._why_not(k, k.limit, book)
            valued = found[1]
        else:
            lo = max(1, k.limit >> 12)
            best = sizing.maximize(evaluate, lo, k.limit, extra=(k.limit,))
            if best is None:
                return self._why_not(k, k.limit, book)
            valued = best.value  # type: ignore[assignment]
        if valued.profit_debt_units <= 0:
            return "below_min_profit"
        return self._opportunity(block, k, valued)

    def _why_not(self, k: Candidate, amount: int, book: Any) -> str:
        liq = am.collateral_for_debt(amount, k.debt, k.coll, k.bonus, k.c.protocol_fee_bps)
        if liq.debt_to_cover <= 0 or liq.collateral_to_liquidator <= 0 or am.leaves_dust(
                self.cfg.rules, liq, k.debt, k.coll):
            return "no_inventory" if k.capped else "dust_or_zero_size"
        return "no_swap_route"

    def _value(self, k: Candidate, amount: int, book: Any) -> Valued | None:
        """Liquidating `amount` of the debt: what the protocol takes and gives (exact), the
        best swap back on `book`, and the profit in debt base units and USD e8."""
        liq = am.collateral_for_debt(amount, k.debt, k.coll, k.bonus, k.c.protocol_fee_bps)
        if liq.debt_to_cover <= 0 or liq.collateral_to_liquidator <= 0:
            return None
        if am.leaves_dust(self.cfg.rules, liq, k.debt, k.coll):
            return None
        if k.fee_clamp is not None:  # the protocol fee is cut to what is left when all is seized
            liq = am.clamp_protocol_fee(liq, *k.fee_clamp)
        requested = amount
        if requested >= k.debt.balance and self.cfg.rules == "v3.3" and not k.capped:
            # v3.3 refuses to leave dust: a full close asks for "all allowed" so the interest
            # accrued by the next block is repaid too. (v3.0 can revert with an arithmetic
            # underflow when burning the exact full debt, by one wei of rayDiv rounding; there
            # the exact amount read is asked for.)
            requested = MAX_UINT
        # what the contract takes up front (flash loan or pulled from inventory): a full close
        # or all the collateral grows with the interest accrued by the next block, so 0.01%
        # headroom (returned with the profit), never more than was asked for
        upfront = liq.debt_to_cover
        if requested != liq.debt_to_cover:
            upfront = min(requested, liq.debt_to_cover + liq.debt_to_cover // 10_000 + 1)
            if k.route == "inventory" and k.capped:
                upfront = min(upfront, k.limit)
        premium = am.percent_mul(upfront, self.flash_premium_bps) if k.route == "flash" else 0
        route = book.quote(k.c.asset, k.d.asset, liq.collateral_to_liquidator)
        if route is None or route.amount_out <= 0:
            return None
        profit = route.amount_out - liq.debt_to_cover - premium
        sign = 1 if profit >= 0 else -1
        return Valued(amount=amount, requested=requested, liq=liq, route=route, upfront=upfront, premium=premium,
                      profit_debt_units=profit, profit_usd_e8=sign * self._to_usd_e8(k.debt.to_base(abs(profit))))

    def _opportunity(self, block: int, k: Candidate, v: Valued) -> Opportunity:
        c, d, liq, route = k.c, k.d, v.liq, v.route
        debt_value = k.debt.to_base(liq.debt_to_cover)
        received_value = k.coll.to_base(liq.collateral_to_liquidator)
        detail = AaveLiquidation(
            user=k.user, collateral_asset=c.asset, collateral_symbol=c.symbol, debt_asset=d.asset,
            debt_symbol=d.symbol, debt_requested=v.requested, debt_to_cover=liq.debt_to_cover,
            collateral_to_liquidator=liq.collateral_to_liquidator, protocol_fee=liq.protocol_fee,
            health_factor_wad=k.hf, close_factor_bps=am.close_factor_bps(k.hf),
            bonus_usd_e8=self._to_usd_e8(k.coll.to_base(liq.collateral_taken) - debt_value),
            protocol_fee_usd_e8=self._to_usd_e8(k.coll.to_base(liq.protocol_fee)),
            swap_cost_usd_e8=self._to_usd_e8(received_value - k.debt.to_base(route.amount_out)),
            swap_fee_tier=route.fee_tier, swap_out=route.amount_out, route=k.route,
            flash_amount=v.upfront if k.route == "flash" else 0, flash_premium=v.premium,
            flash_premium_usd_e8=self._to_usd_e8(k.debt.to_base(v.premium)),
            swap_route=route.describe(self.symbol), max_size=v.amount == k.limit)
        min_profit = v.profit_debt_units * self.cfg.flash_min_profit_share_bps // 10_000
        hops = len(route.hops)
        if k.route == "inventory":
            plan = TxPlan(
                to=self.cfg.flash_liquidator,
                data=F_INVENTORY.encode(c.asset, d.asset, k.user, v.requested, v.upfront, route.encode(), min_profit),
                gas_limit=self.cfg.gas_limit,
                approvals=(Approval(d.asset, self.cfg.flash_liquidator, v.upfront),),
                description=f"liquidation {c.symbol}/{d.symbol} {k.user} from inventory",
            )
            spend: tuple[tuple[str, int], ...] = ((d.asset, v.upfront),)
            gas = self.cfg.gas_estimate
        else:
            plan = TxPlan(
                to=self.cfg.flash_liquidator,
                data=F_FLASH.encode(c.asset, d.asset, k.user, v.requested, v.upfront, route.encode(), min_profit),
                gas_limit=self.cfg.flash_gas_limit,
                description=f"flash liquidation {c.symbol}/{d.symbol} {k.user}",
            )
            spend = ()
            gas = self.cfg.flash_gas_estimate
        return Opportunity(
            protocol=self.name, kind=self.kind, account=k.user, block=block,
            gross_profit_usd_e8=v.profit_usd_e8, gas_units=gas + HOP_GAS * max(0, hops - 1), plan=plan,
            spend=spend, detail=detail, risk_e18=10**18 - min(k.hf, 10**18), routes=(route,) if hops else ())

    def _record_key(self, opp: Opportunity) -> tuple[Any, ...]:
        return (opp.account, opp.detail.route)  # one sizing record per account and route

    def _bonus_and_prices(self, pos: dict[str, Any], c: Reserve, d: Reserve) -> tuple[int, int, int]:
        bonus, c_price, d_price = c.liquidation_bonus_bps, c.price, d.price
        emode = pos.get("emode")
        if emode:
            cat_bonus, cat_price = emode
            if c.emode_category == pos["emode_id"]:
                bonus = cat_bonus
                if cat_price:
                    c_price = cat_price
            if cat_price:
                d_price = cat_price
        return bonus, c_price, d_price

    def _to_usd_e8(self, base: int) -> int:
        return base * 10**8 // self.base_unit
