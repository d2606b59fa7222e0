"""Pool states as immutable values, and exact-input swaps against them.

`V3Pool` holds what the Uniswap V3 swap loop reads: slot0's price and tick, the in-range
liquidity, the tick spacing, the tick-bitmap words that were loaded and liquidityNet of every
initialized tick in those words. `v3_exact_in` runs UniswapV3Pool.swap's loop for an exact
input with the price limit the SwapRouter and QuoterV2 use when given 0
(MIN_SQRT_RATIO + 1 / MAX_SQRT_RATIO - 1). It never guesses: a swap that needs a bitmap word
that was not loaded answers None, as does one the pool would revert, one that would only
partly fill (the price limit reached), and one that moves nothing.

`V2Pair` holds the reserves; `v2_amount_out` is UniswapV2Library.getAmountOut.

`swap_exact_in(state, token_in, amount_in)` is the one entry point for either venue: it
returns a `Swap` (amount out and the state after) or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Union

from .v3math import (
    MAX_SQRT_RATIO,
    MAX_TICK,
    MAX_UINT128,
    MAX_UINT256,
    MIN_SQRT_RATIO,
    MIN_TICK,
    Revert,
    add_delta,
    compute_swap_step,
    get_sqrt_ratio_at_tick,
    tick_at_sqrt_ratio,
)

V2_FEE = 3000  # hundredths of a bip, for Route display and Hop.fee
MAX_STEPS = 100_000  # swap-loop steps: far above any real swap, a guard against a malformed state
MAX_UINT112 = (1 << 112) - 1
_INT256_LIMIT = 1 << 255


@dataclass(frozen=True, slots=True)
class V3Pool:
    address: str  # checksummed
    token0: str  # checksummed; token0 < token1 as addresses
    token1: str
    fee: int  # hundredths of a bip
    tick_spacing: int
    sqrt_price_x96: int
    tick: int
    liquidity: int
    words: Mapping[int, int]  # loaded tick-bitmap words: wordPos -> 256 bits (never mutated)
    ticks: Mapping[int, int]  # initialized tick -> liquidityNet, for every set bit of `words`

    def covers(self, word_pos: int) -> bool:
        return word_pos in self.words


@dataclass(frozen=True, slots=True)
class V2Pair:
    address: str
    token0: str
    token1: str
    reserve0: int
    reserve1: int
    fee: int = V2_FEE


PoolState = Union[V3Pool, V2Pair]


@dataclass(frozen=True, slots=True)
class Swap:
    amount_out: int
    after: PoolState  # the pool's state once the swap is done
    ticks_crossed: int = 0  # initialized ticks crossed (V3)


# ---- V3 ----------------------------------------------------------------------------------


def v3_exact_in(pool: V3Pool, zero_for_one: bool, amount_in: int) -> tuple[int, int, int, int, int] | None:
    """UniswapV3Pool.swap for `amount_in` exact input ->
    (amount_out, sqrtPriceX96 after, tick after, liquidity after, initialized ticks crossed),
    or None (word not loaded, revert, partial fill)."""
    if amount_in <= 0 or amount_in >= _INT256_LIMIT:  # router: amountIn.toInt256(); pool: 'AS'
        return None
    if pool.tick_spacing <= 0:
        return None
    sqrt_p = pool.sqrt_price_x96
    limit = MIN_SQRT_RATIO + 1 if zero_for_one else MAX_SQRT_RATIO - 1
    if zero_for_one:  # the pool's 'SPL' check
        if not limit < sqrt_p:
            return None
    elif not limit > sqrt_p:
        return None
    tick = pool.tick
    liquidity = pool.liquidity
    fee = pool.fee
    spacing = pool.tick_spacing
    words = pool.words
    remaining = amount_in
    out = 0
    crossed = 0
    steps = 0
    try:
        while remaining != 0 and sqrt_p != limit:
            steps += 1
            if steps > MAX_STEPS:
                return None
            start = sqrt_p
            # TickBitmap.nextInitializedTickWithinOneWord (floor division = the compressed-- rule)
            compressed = tick // spacing
            if zero_for_one:
                word = words.get(compressed >> 8)
                if word is None:
                    return None
                bit = compressed & 0xFF
                masked = word & ((2 << bit) - 1)
                if masked:
                    initialized = True
                    tick_next = (compressed - (bit - (masked.bit_length() - 1))) * spacing
                else:
                    initialized = False
                    tick_next = (compressed - bit) * spacing
            else:
                c1 = compressed + 1
                word = words.get(c1 >> 8)
                if word is None:
                    return None
                bit = c1 & 0xFF
                masked = word & (MAX_UINT256 ^ ((1 << bit) - 1))
                if masked:
                    initialized = True
                    tick_next = (c1 + ((masked & -masked).bit_length() - 1 - bit)) * spacing
                else:
                    initialized = False
                    tick_next = (c1 + (255 - bit)) * spacing
            if tick_next < MIN_TICK:
                tick_next = MIN_TICK
            elif tick_next > MAX_TICK:
                tick_next = MAX_TICK
            sqrt_next = get_sqrt_ratio_at_tick(tick_next)

            target = limit if (sqrt_next < limit if zero_for_one else sqrt_next > limit) else sqrt_next
            sqrt_p, step_in, step_out, step_fee = compute_swap_step(sqrt_p, target, liquidity, remaining, fee)
            remaining -= step_in + step_fee
            out += step_out

            if sqrt_p == sqrt_next:
                if initialized:
                    net = pool.ticks.get(tick_next)
                    if net is None:  # a set bit whose tick was not loaded: do not guess
                        return None
                    liquidity = add_delta(liquidity, -net if zero_for_one else net)
                    crossed += 1
                tick = tick_next - 1 if zero_for_one else tick_next
            elif sqrt_p != start:
                tick = tick_at_sqrt_ratio(sqrt_p)
    except Revert:
        return None
    if remaining != 0:  # stopped at the price limit: a partial fill, not this amount's price
        return None
    if out <= 0:
        return None
    return out, sqrt_p, tick, liquidity, crossed


def v3_swap(pool: V3Pool, token_in: str, amount_in: int) -> Swap | None:
    t = token_in.lower()
    if t == pool.token0.lower():
        zfo = True
    elif t == pool.token1.lower():
        zfo = False
    else:
        raise ValueError(f"{token_in} is not a token of pool {pool.address}")
    r = v3_exact_in(pool, zfo, amount_in)
    if r is None:
        return None
    out, sqrt_p, tick, liquidity, crossed = r
    after = V3Pool(pool.address, pool.token0, pool.token1, pool.fee, pool.tick_spacing,
                   sqrt_p, tick, liquidity, pool.words, pool.ticks)
    return Swap(out, after, crossed)


# ---- V2 ----------------------------------------------------------------------------------


def v2_amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """UniswapV2Library.getAmountOut (0.3% fee); raises ValueError where it would revert."""
    if amount_in <= 0:
        raise ValueError("UniswapV2Library: INSUFFICIENT_INPUT_AMOUNT")
    if reserve_in <= 0 or reserve_out <= 0:
        raise ValueError("UniswapV2Library: INSUFFICIENT_LIQUIDITY")
    with_fee = amount_in * 997
    return with_fee * reserve_out // (reserve_in * 1000 + with_fee)


def v2_swap(pair: V2Pair, token_in: str, amount_in: int) -> Swap | None:
    t = token_in.lower()
    if t == pair.token0.lower():
        r_in, r_out = pair.reserve0, pair.reserve1
        zfo = True
    elif t == pair.token1.lower():
        r_in, r_out = pair.reserve1, pair.reserve0
        zfo = False
    else:
        raise ValueError(f"{token_in} is not a token of pair {pair.address}")
    if amount_in <= 0 or r_in <= 0 or r_out <= 0:
        return None
    out = v2_amount_out(amount_in, r_in, r_out)
    new_in = r_in + amount_in
    if out <= 0 or new_in > MAX_UINT112:  # the pair's 'UniswapV2: OVERFLOW'
        return None
    new_out = r_out - out
    after = V2Pair(pair.address, pair.token0, pair.token1,
                   new_in if zfo else new_out, new_out if zfo else new_in, pair.fee)
    return Swap(out, after, 0)


# ---- either ------------------------------------------------------------------------------


def swap_exact_in(state: PoolState, token_in: str, amount_in: int) -> Swap | None:
    """Exact-input swap of `amount_in` of `token_in` at `state`: the amount out, exact to the
    wei, and the state after; None when it cannot be priced (see the module doc)."""
    if isinstance(state, V3Pool):
        return v3_swap(state, token_in, amount_in)
    return v2_swap(state, token_in, amount_in)


def word_range(tick: int, spacing: int, window_pct: int) -> tuple[int, int]:
    """Bitmap word positions [lo, hi] covering prices within +-window_pct % of `tick`."""
    import math

    up = math.ceil(math.log1p(window_pct / 100) / math.log(1.0001))
    lo_tick = MIN_TICK if window_pct >= 100 else tick + math.floor(math.log1p(-window_pct / 100) / math.log(1.0001))
    hi_tick = min(MAX_TICK, tick + up)
    lo_tick = max(MIN_TICK, lo_tick)
    return (lo_tick // spacing) >> 8, (hi_tick // spacing) >> 8


__all__ = [
    "MAX_UINT128",
    "PoolState",
    "Swap",
    "V2Pair",
    "V2_FEE",
    "V3Pool",
    "swap_exact_in",
    "v2_amount_out",
    "v2_swap",
    "v3_exact_in",
    "v3_swap",
    "word_range",
]
