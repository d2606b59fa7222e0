"""Morpho Blue's arithmetic in integers, exactly as `Morpho.sol` of @morpho-org/morpho-blue 1.0.0
and its libraries (MathLib, SharesMathLib, UtilsLib, ConstantsLib) compute it. Pure: no I/O.

Rounding follows the contract function by function: `_isHealthy` rounds the debt up and the
borrowing power down (in the protocol's favour); `liquidate` rounds the shares repaid for a
given seizure up and the seizure for given shares down; `_accrueInterest` rounds interest and
fee shares down.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ...sizing import last_true

WAD = 10**18
ORACLE_PRICE_SCALE = 10**36
LIQUIDATION_CURSOR = 3 * 10**17  # 0.3e18
MAX_LIQUIDATION_INCENTIVE_FACTOR = 115 * 10**16  # 1.15e18
MAX_FEE = 25 * 10**16
VIRTUAL_SHARES = 10**6
VIRTUAL_ASSETS = 1
SECONDS_PER_YEAR = 365 * 24 * 3600  # IrmMock's `365 days`
UINT128_MAX = 2**128 - 1


# -- MathLib ----------------------------------------------------------------------------
def mul_div_down(x: int, y: int, d: int) -> int:
    return x * y // d


def mul_div_up(x: int, y: int, d: int) -> int:
    return (x * y + (d - 1)) // d


def w_mul_down(x: int, y: int) -> int:
    return x * y // WAD


def w_div_down(x: int, y: int) -> int:
    return x * WAD // y


def w_div_up(x: int, y: int) -> int:
    return (x * WAD + (y - 1)) // y


def w_taylor_compounded(x: int, n: int) -> int:
    """e^(x n) - 1 to the third term, as MathLib.wTaylorCompounded."""
    first = x * n
    second = first * first // (2 * WAD)
    third = second * first // (3 * WAD)
    return first + second + third


# -- SharesMathLib ----------------------------------------------------------------------
def to_shares_down(assets: int, total_assets: int, total_shares: int) -> int:
    return mul_div_down(assets, total_shares + VIRTUAL_SHARES, total_assets + VIRTUAL_ASSETS)


def to_shares_up(assets: int, total_assets: int, total_shares: int) -> int:
    return mul_div_up(assets, total_shares + VIRTUAL_SHARES, total_assets + VIRTUAL_ASSETS)


def to_assets_down(shares: int, total_assets: int, total_shares: int) -> int:
    return mul_div_down(shares, total_assets + VIRTUAL_ASSETS, total_shares + VIRTUAL_SHARES)


def to_assets_up(shares: int, total_assets: int, total_shares: int) -> int:
    return mul_div_up(shares, total_assets + VIRTUAL_ASSETS, total_shares + VIRTUAL_SHARES)


def zero_floor_sub(x: int, y: int) -> int:
    return x - y if x > y else 0


class Overflow(ArithmeticError):
    """A value the contract would refuse (toUint128) or an underflow (checked arithmetic)."""


def _u128(x: int) -> int:
    if x < 0 or x > UINT128_MAX:
        raise Overflow("max uint128 exceeded")
    return x


# -- state ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MarketState:
    """`Morpho.market(id)` as stored."""

    total_supply_assets: int
    total_supply_shares: int
    total_borrow_assets: int
    total_borrow_shares: int
    last_update: int
    fee: int


@dataclass(frozen=True, slots=True)
class Accrued:
    market: MarketState
    interest: int
    fee_shares: int


def irm_mock_rate(m: MarketState) -> int:
    """The borrow rate (per second, WAD) of the package's IrmMock: utilization / 365 days."""
    if m.total_supply_assets == 0:
        return 0
    return w_div_down(m.total_borrow_assets, m.total_supply_assets) // SECONDS_PER_YEAR


def accrue_interest(m: MarketState, borrow_rate: int, timestamp: int, has_irm: bool = True) -> Accrued:
    """Morpho._accrueInterest at `timestamp`, with the rate the IRM answers for the stored
    market (`borrowRate(marketParams, market[id])`, evaluated before the accrual)."""
    elapsed = timestamp - m.last_update
    if elapsed < 0:
        raise Overflow("timestamp before the market's last update")
    if elapsed == 0:
        return Accrued(m, 0, 0)
    if not has_irm:
        return Accrued(replace(m, last_update=timestamp), 0, 0)
    interest = w_mul_down(m.total_borrow_assets, w_taylor_compounded(borrow_rate, elapsed))
    tba = _u128(m.total_borrow_assets + _u128(interest))
    tsa = _u128(m.total_supply_assets + _u128(interest))
    tss = m.total_supply_shares
    fee_shares = 0
    if m.fee != 0:
        fee_amount = w_mul_down(interest, m.fee)
        fee_shares = to_shares_down(fee_amount, tsa - fee_amount, tss)
        tss = _u128(tss + _u128(fee_shares))
    return Accrued(MarketState(tsa, tss, tba, m.total_borrow_shares, timestamp, m.fee), interest, fee_shares)


# -- health -----------------------------------------------------------------------------
def borrowed_assets(borrow_shares: int, m: MarketState) -> int:
    return to_assets_up(borrow_shares, m.total_borrow_assets, m.total_borrow_shares)


def max_borrow(collateral: int, price: int, lltv: int) -> int:
    """collateral.mulDivDown(price, ORACLE_PRICE_SCALE).wMulDown(lltv), as _isHealthy."""
    return w_mul_down(mul_div_down(collateral, price, ORACLE_PRICE_SCALE), lltv)


def is_healthy(borrow_shares: int, collateral: int, m: MarketState, price: int, lltv: int) -> bool:
    """Morpho._isHealthy (with the market already accrued to the block's time)."""
    if borrow_shares == 0:
        return True
    return max_borrow(collateral, price, lltv) >= borrowed_assets(borrow_shares, m)


def health_factor_wad(borrow_shares: int, collateral: int, m: MarketState, price: int, lltv: int) -> int:
    """maxBorrow / borrowed in WAD (below 1e18 exactly when not healthy); 2**256-1 without debt."""
    borrowed = borrowed_assets(borrow_shares, m)
    if borrowed == 0:
        return 2**256 - 1
    return max_borrow(collateral, price, lltv) * WAD // borrowed


def liquidation_incentive_factor(lltv: int) -> int:
    """min(MAX_LIF, WAD.wDivDown(WAD - LIQUIDATION_CURSOR.wMulDown(WAD - lltv)))."""
    return min(MAX_LIQUIDATION_INCENTIVE_FACTOR, w_div_down(WAD, WAD - w_mul_down(LIQUIDATION_CURSOR, WAD - lltv)))


# -- liquidation ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Liquidation:
    """What Morpho.liquidate does, in its own numbers (the Liquidate event's fields)."""

    seized_assets: int  # collateral sent to the liquidator
    repaid_shares: int
    repaid_assets: int  # loan token pulled from the liquidator
    bad_debt_shares: int
    bad_debt_assets: int
    market_after: MarketState
    borrow_shares_after: int
    collateral_after: int


def liquidate(m: MarketState, borrow_shares: int, collateral: int, price: int, lltv: int,
              seized_assets: int = 0, repaid_shares: int = 0) -> Liquidation:
    """Morpho.liquidate on a market already accrued to the block's time (`m`) for a position
    (`borrow_shares`, `collateral`) at oracle `price`: exactly one of seized_assets /
    repaid_shares non-zero. Raises Overflow where the contract reverts (unhealthy check
    excluded: see is_healthy), e.g. repaying more shares than the position has or seizing
    more collateral than it holds."""
    if (seized_assets == 0) == (repaid_shares == 0):
        raise ValueError("inconsistent input: exactly one of seized_assets and repaid_shares must be non-zero")
    lif = liquidation_incentive_factor(lltv)
    if seized_assets > 0:
        quoted = mul_div_up(seized_assets, price, ORACLE_PRICE_SCALE)
        repaid_shares = to_shares_up(w_div_up(quoted, lif), m.total_borrow_assets, m.total_borrow_shares)
    else:
        seized_assets = mul_div_down(w_mul_down(to_assets_down(repaid_shares, m.total_borrow_assets,
                                                               m.total_borrow_shares), lif),
                                     ORACLE_PRICE_SCALE, price)
    repaid_assets = to_assets_up(repaid_shares, m.total_borrow_assets, m.total_borrow_shares)
    _u128(repaid_shares)
    _u128(seized_assets)
    shares_after = borrow_shares - repaid_shares
    if shares_after < 0:
        raise Overflow("repaid shares above the position's borrow shares")
    tbs = m.total_borrow_shares - repaid_shares
    if tbs < 0:
        raise Overflow("repaid shares above the market's borrow shares")
    tba = zero_floor_sub(m.total_borrow_assets, repaid_assets)
    coll_after = collateral - seized_assets
    if coll_after < 0:
        raise Overflow("seized more collateral than the position holds")
    tsa = m.total_supply_assets
    bad_shares = bad_assets = 0
    if coll_after == 0:
        bad_shares = shares_after
        bad_assets = min(tba, to_assets_up(bad_shares, tba, tbs))
        tba -= bad_assets
        tsa -= bad_assets
        if tsa < 0:
            raise Overflow("bad debt above the total supply")
        tbs -= bad_shares
        shares_after = 0
    after = MarketState(tsa, m.total_supply_shares, tba, tbs, m.last_update, m.fee)
    return Liquidation(seized_assets, repaid_shares, repaid_assets, bad_shares, bad_assets, after, shares_after,
                       coll_after)


def max_seizable(m: MarketState, borrow_shares: int, collateral: int, price: int, lltv: int) -> int:
    """The largest seizedAssets the contract accepts for this position: all the collateral,
    unless that needs more shares than the position has (then the largest seizure whose
    repaid shares, rounded up, still fit), found by bisection on the exact function."""
    def fits(s: int) -> bool:
        try:
            liquidate(m, borrow_shares, collateral, price, lltv, seized_assets=s)
            return True
        except Overflow:
            return False

    if collateral <= 0 or borrow_shares <= 0:
        return 0
    if fits(collateral):
        return collateral
    return last_true(fits, 0, collateral)  # fits(0) or 0, not fits(collateral)


def liquidation_price(borrow_shares: int, collateral: int, m: MarketState, lltv: int) -> int | None:
    """The oracle price (1e36 scale) below which the position is not healthy (None: no
    collateral or no debt): the smallest price with maxBorrow >= borrowed, approximately
    borrowed * 1e36 * 1e18 / (collateral * lltv)."""
    borrowed = borrowed_assets(borrow_shares, m)
    if borrowed == 0 or collateral == 0:
        return None
    return -(-borrowed * ORACLE_PRICE_SCALE * WAD // (collateral * lltv))
