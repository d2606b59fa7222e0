"""Synthetix v3 perps margin rules, in integers exactly as the contracts compute them.

Units: sizes, prices, margins and rewards are wad (1e18); USD amounts are snxUSD wad. Every
multiplication follows DecimalMath (x * y / 1e18, truncated; for signed values truncated
toward zero, as Solidity's `/` does).

Per position (PerpsMarketConfiguration.calculateRequiredMargins):
    impactOnSkew      = |size| / skewScale
    initialMarginRatio = impactOnSkew * initialMarginRatioD18 + minimumInitialMarginRatioD18
    maintenanceRatio  = initialMarginRatio * maintenanceMarginScalarD18
    notional          = |size| * price
    initialMargin     = notional * initialMarginRatio + minimumPositionMargin
    maintenanceMargin = notional * maintenanceRatio + minimumPositionMargin
    flagReward        = notional * flagRewardRatioD18
    windows           = ceil(|size| / maxLiquidationInWindow)
Per account (PerpsAccount.getAccountRequiredMargins / isEligibleForLiquidation):
    possibleReward    = keeperReward(sum flagReward, flagCost, collateral)
                        + (max windows - 1) * keeperReward(0, liquidateCost, 0)
    requiredMaintenance = sum maintenanceMargin + possibleReward
    availableMargin   = collateral + sum size * (price - entryPrice)
    liquidatable      <=> requiredMaintenance > availableMargin
GlobalPerpsMarketConfiguration.keeperReward(r, cost, margin) = min(max(minCap, r + cost), maxCap)
    minCap = max(cost + minKeeperRewardUsd, cost * (1 + minKeeperProfitRatioD18))
    maxCap = margin == 0 ? maxKeeperRewardUsd : min(margin * maxKeeperScalingRatioD18, maxKeeperRewardUsd)
PerpsMarketConfiguration.maxLiquidationAmountInWindow (size units per window)
    = (makerFee + takerFee) * skewScale * maxLiquidationLimitAccumulationMultiplier * maxSecondsInLiquidationWindow

The liquidation price of one position is the feed price (on the feed's grid, `step` wad;
1e10 for an 8-decimal Chainlink feed) at which the account becomes liquidatable with every
other price held: the highest liquidatable price for a long, the lowest for a short.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Mapping

from ...sizing import last_true

WAD = 10**18
FEED_STEP = 10**10  # one unit of an 8-decimal feed, in wad
MAX_PRICE = 10**36


def mul(x: int, y: int) -> int:
    """DecimalMath.mulDecimal for uint."""
    return x * y // WAD


def mul_signed(x: int, y: int) -> int:
    """DecimalMath.mulDecimal for int256: Solidity division truncates toward zero."""
    p = x * y
    q = abs(p) // WAD
    return q if p >= 0 else -q


def div(x: int, y: int) -> int:
    """DecimalMath.divDecimal for uint."""
    return x * WAD // y


@dataclass(frozen=True, slots=True)
class MarketParams:
    market_id: int
    initial_margin_ratio: int
    minimum_initial_margin_ratio: int
    maintenance_margin_scalar: int
    flag_reward_ratio: int
    minimum_position_margin: int
    skew_scale: int
    maker_fee: int
    taker_fee: int
    max_liquidation_limit_accumulation_multiplier: int
    max_seconds_in_liquidation_window: int

    @property
    def max_liquidation_in_window(self) -> int:
        per_second = mul(mul(self.maker_fee + self.taker_fee, self.skew_scale),
                         self.max_liquidation_limit_accumulation_multiplier)
        return per_second * self.max_seconds_in_liquidation_window


@dataclass(frozen=True, slots=True)
class Guards:
    min_keeper_reward_usd: int
    min_keeper_profit_ratio: int
    max_keeper_reward_usd: int
    max_keeper_scaling_ratio: int
    flag_cost: int = 0  # keeper cost of the flagging liquidation (USD wad)
    liquidate_cost: int = 0  # keeper cost of each later liquidation (USD wad)


@dataclass(frozen=True, slots=True)
class Position:
    market_id: int
    size: int  # signed wad
    entry_price: int  # wad: the price of the last settlement


def min_cap(g: Guards, cost: int) -> int:
    return max(cost + g.min_keeper_reward_usd, mul(cost, g.min_keeper_profit_ratio + WAD))


def max_cap(g: Guards, margin: int) -> int:
    return g.max_keeper_reward_usd if margin == 0 else min(mul(margin, g.max_keeper_scaling_ratio), g.max_keeper_reward_usd)


def keeper_reward(g: Guards, rewards: int, cost: int, margin: int) -> int:
    return min(max(min_cap(g, cost), rewards + cost), max_cap(g, margin))


def continuation_reward(g: Guards) -> int:
    """What each later liquidation of a flagged account pays (when it closes something)."""
    return keeper_reward(g, 0, g.liquidate_cost, 0)


def position_margins(p: MarketParams, size: int, price: int) -> tuple[int, int, int]:
    """(initial margin, maintenance margin, flag reward) of one position, wad."""
    size_abs = abs(size)
    impact = 0 if p.skew_scale == 0 else div(size_abs, p.skew_scale)
    imr = mul(impact, p.initial_margin_ratio) + p.minimum_initial_margin_ratio
    mmr = mul(imr, p.maintenance_margin_scalar)
    notional = mul(size_abs, price)
    return (mul(notional, imr) + p.minimum_position_margin, mul(notional, mmr) + p.minimum_position_margin,
            mul(notional, p.flag_reward_ratio))


def windows(p: MarketParams, size: int) -> int:
    w = p.max_liquidation_in_window
    return 1 if w == 0 else -(-abs(size) // w)


def pnl(size: int, price: int, entry_price: int) -> int:
    return mul_signed(size, price - entry_price)


def available_margin(collateral: int, positions: list[Position], prices: Mapping[int, int]) -> int:
    return collateral + sum(pnl(q.size, prices[q.market_id], q.entry_price) for q in positions)


def required_margins(params: Mapping[int, MarketParams], positions: list[Position], prices: Mapping[int, int],
                     collateral: int, g: Guards) -> tuple[int, int, int]:
    """(requiredInitialMargin, requiredMaintenanceMargin, maxLiquidationReward), as getRequiredMargins."""
    if not positions:
        return 0, 0, 0
    im = mm = flag = 0
    n_windows = 0
    for q in positions:
        p = params[q.market_id]
        a, b, f = position_margins(p, q.size, prices[q.market_id])
        im += a
        mm += b
        flag += f
        n_windows = max(n_windows, windows(p, q.size))
    possible = keeper_reward(g, flag, g.flag_cost, collateral)
    if n_windows > 1:
        possible += (n_windows - 1) * continuation_reward(g)
    return im + possible, mm + possible, possible


def flag_payout(params: Mapping[int, MarketParams], positions: list[Position], prices: Mapping[int, int],
                collateral: int, g: Guards) -> int:
    """What `liquidate(accountId)` pays the keeper for flagging an eligible account."""
    flag = sum(position_margins(params[q.market_id], q.size, prices[q.market_id])[2] for q in positions)
    return keeper_reward(g, flag, g.flag_cost, collateral)


def margin_gap(params: Mapping[int, MarketParams], positions: list[Position], prices: Mapping[int, int],
               collateral: int, g: Guards, am_offset: int = 0, mm_offset: int = 0) -> int:
    """availableMargin - requiredMaintenanceMargin: liquidatable when < 0."""
    am = available_margin(collateral, positions, prices) + am_offset
    _, mm, _ = required_margins(params, positions, prices, collateral, g)
    return am - (mm + mm_offset)


def is_liquidatable(params: Mapping[int, MarketParams], positions: list[Position], prices: Mapping[int, int],
                    collateral: int, g: Guards) -> bool:
    return bool(positions) and margin_gap(params, positions, prices, collateral, g) < 0


def liquidation_price(params: Mapping[int, MarketParams], positions: list[Position], prices: Mapping[int, int],
                      collateral: int, g: Guards, market_id: int, *, step: int = FEED_STEP,
                      am_offset: int = 0, mm_offset: int = 0) -> int | None:
    """The feed price (a multiple of `step`, wad) of `market_id` at which the account is
    liquidatable, every other price held: the highest such price for a long, the lowest for a
    short. None if there is none (a long that stays solvent down to the smallest price)."""
    pos = next((q for q in positions if q.market_id == market_id), None)
    if pos is None or pos.size == 0:
        return None
    others = dict(prices)

    def bad(price: int) -> bool:
        others[market_id] = price
        return margin_gap(params, positions, others, collateral, g, am_offset, mm_offset) < 0

    def gap(price: int) -> int:
        others[market_id] = price
        return margin_gap(params, positions, others, collateral, g, am_offset, mm_offset)

    guess = _secant_root(gap, prices[market_id], step)
    c = max(step, guess // step * step)
    if pos.size > 0:  # bad at and below L
        if bad(c):
            a, d = c, step
            b = c + d
            while bad(b):
                a = b
                d *= 2
                b = c + d
                if b > MAX_PRICE:
                    return None
        else:
            b, d = c, step
            a = c - d
            while a >= step and not bad(a):
                b = a
                d *= 2
                a = c - d
            if a < step:
                if not bad(step):
                    return None
                a = step
        # a bad, b good (both on the step grid): the highest bad price
        return last_true(lambda i: bad(i * step), a // step, b // step) * step
    # short: bad at and above L
    if bad(c):
        b, d = c, step
        a = c - d
        while a >= step and bad(a):
            b = a
            d *= 2
            a = c - d
        if a < step:
            return step
    else:
        a, d = c, step
        b = c + d
        while not bad(b):
            a = b
            d *= 2
            b = c + d
            if b > MAX_PRICE:
                return None
    # a good, b bad (both on the step grid): the lowest bad price
    return (last_true(lambda i: not bad(i * step), a // step, b // step) + 1) * step


def _secant_root(gap: Callable[[int], int], p0: int, step: int) -> int:
    """A first guess of where the piecewise-linear gap crosses zero (a few secant steps)."""
    x0, x1 = Fraction(p0), Fraction(p0 * 9 // 10 or step)
    g0, g1 = gap(int(x0)), gap(int(x1))
    for _ in range(6):
        if g1 == g0:
            break
        x2 = x1 - g1 * (x1 - x0) / (g1 - g0)
        if x2 <= 0:
            x2 = Fraction(step)
        if x2 > MAX_PRICE:
            x2 = Fraction(MAX_PRICE)
        x0, g0 = x1, g1
        x1 = x2
        g1 = gap(int(x1))
        if abs(x1 - x0) < step:
            break
    return int(x1)


def plan_flagged(flagged: list[int], positions: Mapping[int, list[Position]], capacity: Mapping[int, int],
                 g: Guards, max_accounts: int) -> tuple[int, int, list[int]]:
    """What `liquidateFlagged(n)` would do, walking the flagged list in the contract's order
    with the markets' current window capacities: returns (n, total reward, accounts that make
    progress). n is the shortest prefix that includes every account that makes progress."""
    caps = dict(capacity)
    n = reward = 0
    progress: list[int] = []
    each = continuation_reward(g)
    for i, acct in enumerate(flagged[:max_accounts]):
        done = 0
        for q in positions.get(acct, []):
            amt = min(abs(q.size), caps.get(q.market_id, 0))
            caps[q.market_id] = caps.get(q.market_id, 0) - amt
            done += amt
        if done > 0:
            n = i + 1
            reward += each
            progress.append(acct)
    return n, reward, progress
