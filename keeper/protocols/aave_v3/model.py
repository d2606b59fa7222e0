"""What the adapter knows of a reserve and an account, and what sizing passes around (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import math as am


@dataclass(slots=True)
class Reserve:
    asset: str
    symbol: str
    id: int
    decimals: int
    a_token: str
    stable_debt: str
    variable_debt: str
    price_source: str
    configuration: int = 0
    price: int = 0  # oracle base currency units; 0 while the price is unavailable
    price_age_s: int | None = None
    price_problem: str | None = None  # None: price read this block; else reverted | zero | negative | bad_answer
    grace_until: int = 0  # v3.1+: getLiquidationGracePeriod; liquidations need block.timestamp > it

    @property
    def unit(self) -> int:
        return 10**self.decimals

    @property
    def liquidation_threshold_bps(self) -> int:
        return (self.configuration >> 16) & 0xFFFF

    @property
    def liquidation_bonus_bps(self) -> int:
        return (self.configuration >> 32) & 0xFFFF

    @property
    def active(self) -> bool:
        return bool((self.configuration >> 56) & 1)

    @property
    def paused(self) -> bool:
        return bool((self.configuration >> 60) & 1)

    @property
    def protocol_fee_bps(self) -> int:
        return (self.configuration >> 152) & 0xFFFF

    @property
    def emode_category(self) -> int:
        return (self.configuration >> 168) & 0xFF


@dataclass(frozen=True, slots=True)
class AccountHealth:
    collateral_base: int
    debt_base: int
    liquidation_threshold_bps: int
    health_factor_wad: int


@dataclass(frozen=True, slots=True)
class AaveLiquidation:
    """The chosen pair and size for one account, with its value breakdown (usd_e8)."""

    user: str
    collateral_asset: str
    collateral_symbol: str
    debt_asset: str
    debt_symbol: str
    debt_requested: int  # debtToCover passed to liquidationCall (2**256-1: all the rules allow)
    debt_to_cover: int  # what the protocol will take (debt base units)
    collateral_to_liquidator: int  # collateral base units
    protocol_fee: int  # collateral base units
    health_factor_wad: int
    close_factor_bps: int
    bonus_usd_e8: int
    protocol_fee_usd_e8: int
    swap_cost_usd_e8: int
    swap_fee_tier: int
    swap_out: int  # debt base units from selling the collateral back
    route: str = "inventory"  # inventory | flash
    flash_amount: int = 0  # debt base units borrowed
    flash_premium: int = 0  # debt base units paid to the pool for the loan
    flash_premium_usd_e8: int = 0
    swap_route: str = ""  # e.g. "LINK >v2> WETH >v3 0.05%> USDC"
    max_size: bool = True  # False: a profitable slice smaller than the rules allow

    def log_fields(self) -> dict[str, Any]:
        return {
            "collateral": self.collateral_symbol,
            "debt": self.debt_symbol,
            "debt_to_cover": self.debt_to_cover,
            "collateral_received": self.collateral_to_liquidator,
            "protocol_fee": self.protocol_fee,
            "health_factor": round(self.health_factor_wad / 1e18, 6),
            "bonus_usd": self.bonus_usd_e8 / 1e8,
            "protocol_fee_usd": self.protocol_fee_usd_e8 / 1e8,
            "swap_cost_usd": self.swap_cost_usd_e8 / 1e8,
            "swap_fee_tier": self.swap_fee_tier,
            "swap_route": self.swap_route,
            "slice": not self.max_size,
            "route": self.route,
            **({"flash_premium_usd": self.flash_premium_usd_e8 / 1e8} if self.route == "flash" else {}),
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    """One account, collateral/debt pair and route, with everything sizing needs (no I/O)."""

    user: str
    c: Reserve
    d: Reserve
    coll: am.Side
    debt: am.Side
    hf: int
    total_debt: int
    bonus: int
    route: str  # inventory | flash
    limit: int  # the largest debt to cover the rules (and for the inventory route, the balance) allow
    capped: bool = False  # the inventory, not the rules, sets the limit
    fee_clamp: tuple[int, int] | None = None  # (user's scaled aToken balance, liquidity index ray)


@dataclass(frozen=True, slots=True)
class Valued:
    amount: int  # debt asked to cover
    requested: int  # debtToCover passed (2**256-1: all the rules allow)
    liq: am.Liquidation
    route: Any  # keeper.pricing.book.Route
    upfront: int  # debt base units flash-borrowed or pulled from the keeper's balance
    premium: int  # flash-loan premium, debt base units
    profit_debt_units: int  # swap proceeds - debt repaid - premium
    profit_usd_e8: int


def _unpriced(reserves: list[Reserve]) -> dict[str, str]:
    """The skip detail naming the assets whose price is unavailable and why."""
    return {"asset": ",".join(r.symbol for r in reserves), "problem": ",".join(r.price_problem or "" for r in reserves)}
