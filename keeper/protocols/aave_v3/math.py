"""Aave V3 liquidation arithmetic, integer for integer as LiquidationLogic.sol computes it.

Pure functions over raw units: token amounts in the token's base units, prices in the
oracle's base currency units (8 decimals for USD markets), percentages in basis points,
health factor in wad. Rounding follows PercentageMath (half up) and integer division.

Two rule sets:
- "v3.0" (@aave/core-v3 up to 1.19, deployed on the devnet): close factor 50% of the
  user's debt in the reserve, 100% when HF ≤ 0.95.
- "v3.3": 100% of the reserve debt unless the reserve's collateral and debt are both
  ≥ $2,000 and HF > 0.95, then at most 50% of the user's *total* debt; and the dust rule:
  liquidate all debt, or all collateral, or leave ≥ $1,000 of each.
"""

from __future__ import annotations

from dataclasses import dataclass

PERCENTAGE_FACTOR = 10_000
HALF_PERCENTAGE_FACTOR = 5_000
WAD = 10**18
RAY = 10**27
HEALTH_FACTOR_LIQUIDATION_THRESHOLD = WAD
CLOSE_FACTOR_HF_THRESHOLD = 95 * 10**16  # 0.95 wad
DEFAULT_LIQUIDATION_CLOSE_FACTOR = 5_000
MAX_LIQUIDATION_CLOSE_FACTOR = 10_000
MIN_BASE_MAX_CLOSE_FACTOR_THRESHOLD = 2_000 * 10**8  # v3.3, base currency units
MIN_LEFTOVER_BASE = MIN_BASE_MAX_CLOSE_FACTOR_THRESHOLD // 2
RULES = ("v3.0", "v3.3")


def percent_mul(value: int, percentage_bps: int) -> int:
    return (value * percentage_bps + HALF_PERCENTAGE_FACTOR) // PERCENTAGE_FACTOR


def percent_div(value: int, percentage_bps: int) -> int:
    return (value * PERCENTAGE_FACTOR + percentage_bps // 2) // percentage_bps


def ray_mul(a: int, b: int) -> int:
    return (a * b + RAY // 2) // RAY


def is_liquidatable(health_factor_wad: int, total_debt_base: int) -> bool:
    return total_debt_base > 0 and health_factor_wad < HEALTH_FACTOR_LIQUIDATION_THRESHOLD


def close_factor_bps(health_factor_wad: int) -> int:
    return DEFAULT_LIQUIDATION_CLOSE_FACTOR if health_factor_wad > CLOSE_FACTOR_HF_THRESHOLD else MAX_LIQUIDATION_CLOSE_FACTOR


@dataclass(frozen=True, slots=True)
class Side:
    """One reserve as seen in one liquidation: its price, unit and the user's balance."""

    price: int  # oracle base currency units per whole token
    unit: int  # 10 ** decimals
    balance: int  # user's collateral (aToken) or debt balance, token base units

    def to_base(self, amount: int) -> int:
        return amount * self.price // self.unit


def max_liquidatable_debt(
    rules: str,
    health_factor_wad: int,
    debt: Side,
    collateral: Side,
    total_debt_base: int,
) -> int:
    """How much of the debt reserve one liquidation may repay (debt base units)."""
    if rules == "v3.0":
        return percent_mul(debt.balance, close_factor_bps(health_factor_wad))
    if rules == "v3.3":
        limit = debt.balance
        if (
            collateral.to_base(collateral.balance) >= MIN_BASE_MAX_CLOSE_FACTOR_THRESHOLD
            and debt.to_base(debt.balance) >= MIN_BASE_MAX_CLOSE_FACTOR_THRESHOLD
            and health_factor_wad > CLOSE_FACTOR_HF_THRESHOLD
        ):
            default_base = percent_mul(total_debt_base, DEFAULT_LIQUIDATION_CLOSE_FACTOR)
            if debt.to_base(debt.balance) > default_base:
                limit = default_base * debt.unit // debt.price
        return limit
    raise ValueError(f"unknown Aave rules {rules!r}; expected one of {RULES}")


@dataclass(frozen=True, slots=True)
class Liquidation:
    debt_to_cover: int  # debt token base units the liquidator pays
    collateral_to_liquidator: int  # collateral base units the liquidator receives
    protocol_fee: int  # collateral base units sent to the treasury
    collateral_taken: int  # collateral_to_liquidator + protocol_fee, leaves the user


def collateral_for_debt(
    debt_to_cover: int,
    debt: Side,
    collateral: Side,
    bonus_bps: int,
    protocol_fee_bps: int,
) -> Liquidation:
    """_calculateAvailableCollateralToLiquidate: collateral seized for `debt_to_cover`."""
    base_collateral = (debt.price * debt_to_cover * collateral.unit) // (collateral.price * debt.unit)
    max_collateral = percent_mul(base_collateral, bonus_bps)
    if max_collateral > collateral.balance:
        collateral_amount = collateral.balance
        debt_needed = percent_div(
            (collateral.price * collateral_amount * debt.unit) // (debt.price * collateral.unit), bonus_bps
        )
    else:
        collateral_amount = max_collateral
        debt_needed = debt_to_cover
    fee = 0
    if protocol_fee_bps:
        bonus_collateral = collateral_amount - percent_div(collateral_amount, bonus_bps)
        fee = percent_mul(bonus_collateral, protocol_fee_bps)
    return Liquidation(
        debt_to_cover=debt_needed,
        collateral_to_liquidator=collateral_amount - fee,
        protocol_fee=fee,
        collateral_taken=collateral_amount,
    )


def leaves_dust(rules: str, liq: Liquidation, debt: Side, collateral: Side) -> bool:
    """v3.3 MUST_NOT_LEAVE_DUST: partial on both sides must leave ≥ MIN_LEFTOVER_BASE of each."""
    if rules != "v3.3":
        return False
    if liq.debt_to_cover >= debt.balance or liq.collateral_taken >= collateral.balance:
        return False
    debt_left = debt.to_base(debt.balance - liq.debt_to_cover)
    coll_left = collateral.to_base(collateral.balance - liq.collateral_taken)
    return debt_left < MIN_LEFTOVER_BASE or coll_left < MIN_LEFTOVER_BASE


def size_liquidation(
    rules: str,
    health_factor_wad: int,
    debt: Side,
    collateral: Side,
    total_debt_base: int,
    bonus_bps: int,
    protocol_fee_bps: int,
    inventory: int | None = None,
) -> Liquidation | None:
    """The largest liquidation the rules allow (and the inventory pays for), or None.

    `inventory` caps the debt the keeper can repay from its own balance (None: no cap,
    e.g. a flash loan). Under v3.3, a size that would leave dust is not allowed; if the
    cap makes it leave dust, there is no valid liquidation with this inventory.
    """
    if debt.balance <= 0 or collateral.balance <= 0 or debt.price <= 0 or collateral.price <= 0:
        return None
    limit = max_liquidatable_debt(rules, health_factor_wad, debt, collateral, total_debt_base)
    if inventory is not None:
        limit = min(limit, inventory)
    if limit <= 0:
        return None
    liq = collateral_for_debt(limit, debt, collateral, bonus_bps, protocol_fee_bps)
    if liq.debt_to_cover <= 0 or liq.collateral_to_liquidator <= 0:
        return None
    if leaves_dust(rules, liq, debt, collateral):
        return None
    return liq
