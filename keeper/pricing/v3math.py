"""Uniswap V3 core math in Python integers, line for line with the Solidity (v3-core 1.0).

FullMath, UnsafeMath, LiquidityMath, TickMath, SqrtPriceMath and SwapMath as the pool runs
them: the same rounding up/down, the same unchecked (wrapping) arithmetic where Solidity 0.7
has it, the same casts. Every Solidity `require` that fails raises `Revert`, so a caller can
tell "the contract would revert" from a result.

Inputs are assumed to be in their Solidity types' ranges (uint160 prices, uint128 liquidity,
int24 ticks); the functions check what the Solidity checks and no more.

`tick_at_sqrt_ratio` is the fast form of `get_tick_at_sqrt_ratio` used by the swap loop: the
greatest tick whose `get_sqrt_ratio_at_tick` is <= the ratio, which is what the Solidity
computes (its own invariant, fuzzed in v3-core's TickMathEchidnaTest); both are here and
tests/test_swap_book.py checks they agree.
"""

from __future__ import annotations

import math
from functools import lru_cache

__all__ = [
    "MAX_SQRT_RATIO",
    "MAX_TICK",
    "MAX_UINT128",
    "MAX_UINT160",
    "MAX_UINT256",
    "MIN_SQRT_RATIO",
    "MIN_TICK",
    "Q96",
    "Revert",
    "add_delta",
    "compute_swap_step",
    "div_rounding_up",
    "get_amount0_delta",
    "get_amount1_delta",
    "get_next_sqrt_price_from_amount0_rounding_up",
    "get_next_sqrt_price_from_amount1_rounding_down",
    "get_next_sqrt_price_from_input",
    "get_next_sqrt_price_from_output",
    "get_sqrt_ratio_at_tick",
    "get_tick_at_sqrt_ratio",
    "mul_div",
    "mul_div_rounding_up",
    "tick_at_sqrt_ratio",
]

MAX_UINT256 = (1 << 256) - 1
MAX_UINT160 = (1 << 160) - 1
MAX_UINT128 = (1 << 128) - 1
_MOD256 = 1 << 256
Q96 = 1 << 96
RESOLUTION = 96

MIN_TICK = -887272
MAX_TICK = 887272
MIN_SQRT_RATIO = 4295128739
MAX_SQRT_RATIO = 1461446703485210103287273052203988822378723970342


class Revert(ArithmeticError):
    """A Solidity `require` (or checked cast / checked add) that fails: the call reverts."""


# ---- FullMath / UnsafeMath / LiquidityMath ---------------------------------------------------


def mul_div(a: int, b: int, denominator: int) -> int:
    """floor(a*b/denominator) with a full 512-bit product; reverts on denominator == 0 or a
    result that does not fit in uint256 (FullMath.mulDiv: `require(denominator > prod1)`)."""
    if denominator == 0:
        raise Revert("mulDiv: zero denominator")
    r = a * b // denominator
    if r > MAX_UINT256:
        raise Revert("mulDiv: overflow")
    return r


def mul_div_rounding_up(a: int, b: int, denominator: int) -> int:
    r = mul_div(a, b, denominator)
    if a * b % denominator:
        if r >= MAX_UINT256:
            raise Revert("mulDivRoundingUp: overflow")
        r += 1
    return r


def div_rounding_up(x: int, y: int) -> int:
    """UnsafeMath.divRoundingUp, assembly semantics: division by zero gives 0."""
    if y == 0:
        return 0
    q, r = divmod(x, y)
    return q + 1 if r else q


def add_delta(x: int, y: int) -> int:
    """LiquidityMath.addDelta(uint128 x, int128 y): reverts 'LS' / 'LA' on under/overflow."""
    z = x + y
    if y < 0:
        if z < 0:
            raise Revert("LS")
    elif z > MAX_UINT128:
        raise Revert("LA")
    return z


# ---- TickMath -----------------------------------------------------------------------------

_TICK_FACTORS = (
    (0x2, 0xfff97272373d413259a46990580e213a),
    (0x4, 0xfff2e50f5f656932ef12357cf3c7fdcc),
    (0x8, 0xffe5caca7e10e4e61c3624eaa0941cd0),
    (0x10, 0xffcb9843d60f6159c9db58835c926644),
    (0x20, 0xff973b41fa98c081472e6896dfb254c0),
    (0x40, 0xff2ea16466c96a3843ec78b326b52861),
    (0x80, 0xfe5dee046a99a2a811c461f1969c3053),
    (0x100, 0xfcbe86c7900a88aedcffc83b479aa3a4),
    (0x200, 0xf987a7253ac413176f2b074cf7815e54),
    (0x400, 0xf3392b0822b70005940c7a398e4b70f3),
    (0x800, 0xe7159475a2c29b7443b29c7fa6e889d9),
    (0x1000, 0xd097f3bdfd2022b8845ad8f792aa5825),
    (0x2000, 0xa9f746462d870fdf8a65dc1f90e061e5),
    (0x4000, 0x70d869a156d2a1b890bb3df62baf32f7),
    (0x8000, 0x31be135f97d08fd981231505542fcfa6),
    (0x10000, 0x9aa508b5b7a84e1c677de54f3e99bc9),
    (0x20000, 0x5d6af8dedb81196699c329225ee604),
    (0x40000, 0x2216e584f5fa1ea926041bedfe98),
    (0x80000, 0x48a170391f7dc42444e8fa2),
)


@lru_cache(maxsize=1 << 16)
def get_sqrt_ratio_at_tick(tick: int) -> int:
    """TickMath.getSqrtRatioAtTick: sqrt(1.0001^tick) * 2^96 as uint160, rounded up."""
    abs_tick = -tick if tick < 0 else tick
    if abs_tick > MAX_TICK:
        raise Revert("T")
    ratio = 0xfffcb933bd6fad37aa2d162d1a594001 if abs_tick & 0x1 else 0x100000000000000000000000000000000
    for bit, factor in _TICK_FACTORS:
        if abs_tick & bit:
            ratio = (ratio * factor) >> 128
    if tick > 0:
        ratio = MAX_UINT256 // ratio
    return (ratio >> 32) + (1 if ratio & 0xFFFFFFFF else 0)


def get_tick_at_sqrt_ratio(sqrt_price_x96: int) -> int:
    """TickMath.getTickAtSqrtRatio, a literal port of the assembly (log2 by repeated squaring)."""
    if not (MIN_SQRT_RATIO <= sqrt_price_x96 < MAX_SQRT_RATIO):
        raise Revert("R")
    ratio = sqrt_price_x96 << 32
    msb = ratio.bit_length() - 1  # the assembly's binary search computes exactly this
    r = ratio >> (msb - 127) if msb >= 128 else ratio << (127 - msb)
    log_2 = (msb - 128) << 64
    for shift in range(63, 49, -1):
        r = (r * r) >> 127
        f = r >> 128
        log_2 |= f << shift
        r >>= f
    log_sqrt10001 = log_2 * 255738958999603826347141  # 128.128 number
    tick_low = _int24((log_sqrt10001 - 3402992956809132418596140100660247210) >> 128)
    tick_hi = _int24((log_sqrt10001 + 291339464771989622907027621153398088495) >> 128)
    if tick_low == tick_hi:
        return tick_low
    return tick_hi if get_sqrt_ratio_at_tick(tick_hi) <= sqrt_price_x96 else tick_low


def _int24(x: int) -> int:
    x &= 0xFFFFFF
    return x - (1 << 24) if x & 0x800000 else x


_LOG_Q96 = 96 * math.log(2)
_TWO_OVER_LOG_10001 = 2 / math.log(1.0001)


def tick_at_sqrt_ratio(sqrt_price_x96: int) -> int:
    """Same result as get_tick_at_sqrt_ratio, faster: a float estimate corrected against the
    exact (cached) get_sqrt_ratio_at_tick, i.e. the greatest tick t with ratio(t) <= price."""
    if not (MIN_SQRT_RATIO <= sqrt_price_x96 < MAX_SQRT_RATIO):
        raise Revert("R")
    t = math.floor((math.log(sqrt_price_x96) - _LOG_Q96) * _TWO_OVER_LOG_10001)
    if t > MAX_TICK:
        t = MAX_TICK
    elif t < MIN_TICK:
        t = MIN_TICK
    while get_sqrt_ratio_at_tick(t) > sqrt_price_x96:
        t -= 1
    while t < MAX_TICK and get_sqrt_ratio_at_tick(t + 1) <= sqrt_price_x96:
        t += 1
    return t


# ---- SqrtPriceMath ------------------------------------------------------------------------


def get_next_sqrt_price_from_amount0_rounding_up(sqrt_px96: int, liquidity: int, amount: int, add: bool) -> int:
    if amount == 0:
        return sqrt_px96
    numerator1 = liquidity << RESOLUTION
    product = (amount * sqrt_px96) & MAX_UINT256  # unchecked multiply, then the overflow test
    no_overflow = product // amount == sqrt_px96
    if add:
        if no_overflow:
            denominator = (numerator1 + product) & MAX_UINT256
            if denominator >= numerator1:
                return mul_div_rounding_up(numerator1, sqrt_px96, denominator) & MAX_UINT160  # uint160() cast
        d = numerator1 // sqrt_px96 + amount  # LowGasSafeMath.add
        if d > MAX_UINT256:
            raise Revert("add overflow")
        return div_rounding_up(numerator1, d) & MAX_UINT160
    if not (no_overflow and numerator1 > product):
        raise Revert("amount0 out of range")
    r = mul_div_rounding_up(numerator1, sqrt_px96, numerator1 - product)
    if r > MAX_UINT160:  # SafeCast.toUint160
        raise Revert("toUint160")
    return r


def get_next_sqrt_price_from_amount1_rounding_down(sqrt_px96: int, liquidity: int, amount: int, add: bool) -> int:
    if add:
        if amount <= MAX_UINT160:
            quotient = (amount << RESOLUTION) // liquidity
        else:
            quotient = mul_div(amount, Q96, liquidity)
        r = sqrt_px96 + quotient  # LowGasSafeMath.add then SafeCast.toUint160
        if r > MAX_UINT160:
            raise Revert("toUint160")
        return r
    if amount <= MAX_UINT160:
        quotient = div_rounding_up(amount << RESOLUTION, liquidity)
    else:
        quotient = mul_div_rounding_up(amount, Q96, liquidity)
    if not sqrt_px96 > quotient:
        raise Revert("amount1 out of range")
    return sqrt_px96 - quotient


def get_next_sqrt_price_from_input(sqrt_px96: int, liquidity: int, amount_in: int, zero_for_one: bool) -> int:
    if sqrt_px96 <= 0 or liquidity <= 0:
        raise Revert("price or liquidity zero")
    if zero_for_one:
        return get_next_sqrt_price_from_amount0_rounding_up(sqrt_px96, liquidity, amount_in, True)
    return get_next_sqrt_price_from_amount1_rounding_down(sqrt_px96, liquidity, amount_in, True)


def get_next_sqrt_price_from_output(sqrt_px96: int, liquidity: int, amount_out: int, zero_for_one: bool) -> int:
    if sqrt_px96 <= 0 or liquidity <= 0:
        raise Revert("price or liquidity zero")
    if zero_for_one:
        return get_next_sqrt_price_from_amount1_rounding_down(sqrt_px96, liquidity, amount_out, False)
    return get_next_sqrt_price_from_amount0_rounding_up(sqrt_px96, liquidity, amount_out, False)


def get_amount0_delta(sqrt_a: int, sqrt_b: int, liquidity: int, round_up: bool) -> int:
    if sqrt_a > sqrt_b:
        sqrt_a, sqrt_b = sqrt_b, sqrt_a
    numerator1 = liquidity << RESOLUTION
    numerator2 = sqrt_b - sqrt_a
    if sqrt_a <= 0:
        raise Revert("sqrtRatioA zero")
    if round_up:
        return div_rounding_up(mul_div_rounding_up(numerator1, numerator2, sqrt_b), sqrt_a)
    return mul_div(numerator1, numerator2, sqrt_b) // sqrt_a


def get_amount1_delta(sqrt_a: int, sqrt_b: int, liquidity: int, round_up: bool) -> int:
    if sqrt_a > sqrt_b:
        sqrt_a, sqrt_b = sqrt_b, sqrt_a
    if round_up:
        return mul_div_rounding_up(liquidity, sqrt_b - sqrt_a, Q96)
    return mul_div(liquidity, sqrt_b - sqrt_a, Q96)


# ---- SwapMath -----------------------------------------------------------------------------


def compute_swap_step(
    sqrt_current: int, sqrt_target: int, liquidity: int, amount_remaining: int, fee_pips: int
) -> tuple[int, int, int, int]:
    """SwapMath.computeSwapStep -> (sqrtRatioNextX96, amountIn, amountOut, feeAmount).
    amount_remaining >= 0 is exact input, < 0 exact output (int256)."""
    zero_for_one = sqrt_current >= sqrt_target
    exact_in = amount_remaining >= 0
    amount_in = amount_out = 0
    if exact_in:
        less_fee = mul_div(amount_remaining, 1_000_000 - fee_pips, 1_000_000)
        amount_in = (get_amount0_delta(sqrt_target, sqrt_current, liquidity, True) if zero_for_one
                     else get_amount1_delta(sqrt_current, sqrt_target, liquidity, True))
        if less_fee >= amount_in:
            sqrt_next = sqrt_target
        else:
            sqrt_next = get_next_sqrt_price_from_input(sqrt_current, liquidity, less_fee, zero_for_one)
    else:
        amount_out = (get_amount1_delta(sqrt_target, sqrt_current, liquidity, False) if zero_for_one
                      else get_amount0_delta(sqrt_current, sqrt_target, liquidity, False))
        if -amount_remaining >= amount_out:
            sqrt_next = sqrt_target
        else:
            sqrt_next = get_next_sqrt_price_from_output(sqrt_current, liquidity, -amount_remaining, zero_for_one)

    hit = sqrt_target == sqrt_next
    if zero_for_one:
        if not (hit and exact_in):
            amount_in = get_amount0_delta(sqrt_next, sqrt_current, liquidity, True)
        if not (hit and not exact_in):
            amount_out = get_amount1_delta(sqrt_next, sqrt_current, liquidity, False)
    else:
        if not (hit and exact_in):
            amount_in = get_amount1_delta(sqrt_current, sqrt_next, liquidity, True)
        if not (hit and not exact_in):
            amount_out = get_amount0_delta(sqrt_current, sqrt_next, liquidity, False)

    if not exact_in and amount_out > -amount_remaining:
        amount_out = -amount_remaining
    if exact_in and sqrt_next != sqrt_target:
        fee_amount = (amount_remaining - amount_in) % _MOD256  # unchecked uint256 subtraction
    else:
        fee_amount = mul_div_rounding_up(amount_in, fee_pips, 1_000_000 - fee_pips)
    return sqrt_next, amount_in, amount_out, fee_amount
