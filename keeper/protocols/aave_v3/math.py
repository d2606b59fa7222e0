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

The protocol-fee clamp (`clamp_protocol_fee`, or `size_liquidation(..., user_scaled_balance=,
liquidity_index_ray=)`). executeLiquidationCall first burns (or, with receiveAToken, moves)
the liquidator's collateral, `collateral_to_liquidator.rayDiv(index)` scaled aTokens, then
sends the fee to the treasury; if `fee.rayDiv(index)` exceeds the user's scaled aToken
balance left by then, the fee becomes `scaledLeft.rayMul(index)`. It only bites when the
whole collateral balance is seized (the rounding of balanceOf = scaled.rayMul(index) and of
the two rayDiv's leaves one scaled unit short), and lowers the fee, usually by 1 wei; the
liquidator's part and the debt repaid do not change. Its inputs, which the adapter must
read beside the balances, at the same block, for the collateral reserve:

- `AToken(collateral).scaledBalanceOf(user)`  (the user's scaled collateral balance),
- `Pool.getReserveNormalizedIncome(collateral)`  (the liquidity index the tx will use:
  the collateral reserve's nextLiquidityIndex, the same number getNormalizedIncome gives
  once updateState ran in that block).

Exactness and the block the inputs are read at. Every input here is a function of the
block timestamp: balanceOf (collateral and debt) is scaled × index, and both indexes accrue
interest per second. The adapter reads at block N while its transaction executes at N+1
(or later), so the prediction is exact only if nothing touching the position or its two
reserves happens in between *and* the inputs are read at N+1's timestamp; read at N's, the
balances are the interest of Δt too low (the debt repaid and, when all collateral goes, the
collateral taken are a little larger on chain; the clamp may or may not trigger). A keeper
that knows the next timestamp (slot times on Ethereum: N's + 12 s) can read with an
`eth_call` block override `{"time": next_timestamp}`. tests/test_aave_fuzz.py pins it that
way: it reads at "latest" with the block override time T, then `evm_setNextBlockTimestamp(T)`
and sends liquidationCall, so the reads and the execution see the same indexes to the wei.
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
    """WadRayMath.rayMul: a × b / 1e27, rounded half up."""
    return (a * b + RAY // 2) // RAY


def ray_div(a: int, b: int) -> int:
    """WadRayMath.rayDiv: a × 1e27 / b, rounded half up (b // 2 added before the division)."""
    return (a * RAY + b // 2) // b


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
    user_scaled_balance: int | None = None,
    liquidity_index_ray: int | None = None,
) -> Liquidation | None:
    """The largest liquidation the rules allow (and the inventory pays for), or None.

    `inventory` caps the debt the keeper can repay from its own balance (None: no cap,
    e.g. a flash loan); passing the debtToCover of a liquidationCall there gives what that
    call does (max uint: all the rules allow). Under v3.3, a size that would leave dust is
    not allowed; if the cap makes it leave dust, there is no valid liquidation with this
    inventory. With `user_scaled_balance` and `liquidity_index_ray` (the collateral aToken's
    scaledBalanceOf(user) and the collateral reserve's normalized income) the protocol fee
    is clamped as the pool does (`clamp_protocol_fee`); without them it may be 1 wei high
    when the whole collateral is seized.
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
    if user_scaled_balance is not None and liquidity_index_ray is not None:
        liq = clamp_protocol_fee(liq, user_scaled_balance, liquidity_index_ray)
    return liq


def clamp_protocol_fee(liq: Liquidation, user_scaled_balance: int, liquidity_index_ray: int) -> Liquidation:
    """The protocol fee executeLiquidationCall really charges (v3.0 to v3.3 alike).

    After the liquidator's collateral left the user (burn or aToken transfer, both
    `collateral_to_liquidator.rayDiv(index)` scaled units), the fee is capped so its scaled
    amount fits in what remains: `min(fee, scaledLeft.rayMul(index))` when
    `fee.rayDiv(index) > scaledLeft`. collateral_to_liquidator and debt_to_cover are
    unchanged; collateral_taken becomes collateral_to_liquidator + the clamped fee.

    user_scaled_balance: AToken(collateral).scaledBalanceOf(user); liquidity_index_ray:
    Pool.getReserveNormalizedIncome(collateral); both at the block the liquidation executes.
    """
    if liq.protocol_fee == 0:  # the pool skips the fee transfer (and this check) entirely
        return liq
    if liquidity_index_ray <= 0:
        raise ValueError(f"liquidity index must be positive, got {liquidity_index_ray}")
    scaled_left = user_scaled_balance - ray_div(liq.collateral_to_liquidator, liquidity_index_ray)
    if scaled_left < 0:  # cannot happen with fee > 0 and collateral_taken <= balanceOf(user)
        raise ValueError(
            f"the liquidator's {liq.collateral_to_liquidator} exceed the user's scaled balance "
            f"{user_scaled_balance} at index {liquidity_index_ray}: the collateral burn would revert")
    if ray_div(liq.protocol_fee, liquidity_index_ray) <= scaled_left:
        return liq
    fee = ray_mul(scaled_left, liquidity_index_ray)
    return Liquidation(
        debt_to_cover=liq.debt_to_cover,
        collateral_to_liquidator=liq.collateral_to_liquidator,
        protocol_fee=fee,
        collateral_taken=liq.collateral_to_liquidator + fee,
    )
