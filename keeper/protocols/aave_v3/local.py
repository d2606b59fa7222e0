"""Aave V3 account health computed off-chain, integer for integer as the deployed bytecode
(@aave/core-v3 1.19.3) computes `Pool.getUserAccountData`. Pure: no I/O (chainstate.py reads).

Followed line by line (GenericLogic.calculateUserAccountData, _getUserBalanceInBaseCurrency,
_getUserDebtInBaseCurrency; ReserveLogic.getNormalizedIncome/getNormalizedDebt; MathUtils;
WadRayMath and PercentageMath, half-up; StableDebtToken.balanceOf; EModeLogic):

- an empty user configuration gives (0, 0, 0, 0, 0, 2**256-1);
- every reserve the bitmap marks (collateral or borrowing) is priced: the user's eMode
  category price (oracle.getAssetPrice(category.priceSource), when the source is set and the
  answer is not 0) for reserves of that category, else oracle.getAssetPrice(asset);
- collateral counts only when the collateral bit is set AND the reserve's own liquidation
  threshold is non-zero: scaledBalanceOf.rayMul(normalizedIncome) * price / unit (floor);
  its LTV and threshold are the category's for reserves in the user's category;
  hasZeroLtvCollateral when the reserve's own LTV is 0 (then nothing goes to the LTV sum);
- debt, when the borrowing bit is set: (scaled variable debt.rayMul(normalizedDebt) +
  stable balanceOf) * price / unit (floor: v3.0 does not round debt up);
- avg LTV and threshold are the weighted sums divided (floor) by total collateral;
  HF = totalCollateral.percentMul(avgThreshold).wadDiv(totalDebt), 2**256-1 without debt;
  availableBorrows = max(0, totalCollateral.percentMul(avgLtv) - totalDebt).
- the indexes at `ts`: the stored index when ts == lastUpdateTimestamp, else the linear
  (income) or 3-term compounded (debt) interest since then, rayMul the stored index. The same
  (compounded) for a user's stable debt since its own last update, at its own stable rate.

Where later Aave versions differ (aave-v3-origin 3.5, checked at commit 00cec22): HF is
`sum(collateral_i * lt_i).wadDiv(debt) / 1e4` (no floor on the average first), debt is
rounded up (rayMulCeil, mulDivCeil), collateral rounded down (rayMulFloor), availableBorrows
uses percentMulFloor, there is no stable debt, and eMode (since 3.2) is a collateral bitmap
of the category with no price source. This module implements 1.19.3 and aave-v3-origin
3.2.0, whose GenericLogic is 1.19.3's with two changes it follows: a reserve counts in the
user's eMode category when its bit is set in the category's collateral bitmap
(EModeCategory.collateral_bitmap, not None from 3.2 on), and there is no category price and
no stable debt (the stable maps stay empty). versions.py says which pools it serves; for
the others the adapter reads health from the chain.

Times are the Solidity `block.timestamp` of the block the health is wanted for. Reserve
states read at block N stay exact at any later ts as long as no transaction touched the
reserve (its indexes, rates and lastUpdateTimestamp change only then), and account states
as long as no transaction touched the account; prices are whatever the oracle answers.
The chain reverts where Solidity would underflow (ts before a last update); this raises
ValueError for a ts before the last update of any reserve the account uses. A reserve id,
price or eMode category that is missing raises KeyError: the caller lacks what the chain
would read (an unreadable price makes getUserAccountData revert).

Speed (2-core Xeon dev box, Python 3.11, timeit, 18-decimal and 6/8-decimal reserves;
ReserveState memoizes its two indexes for the last ts asked, so only the first account at a
new ts pays for them, ~4.5 µs per reserve): account_data ≈ 1.7 µs for one collateral and
one debt reserve, ≈ 2.2 µs for two collaterals and one debt, ≈ 3.5 µs in an eMode category
with a price source, two collaterals, two debts one of them partly stable; 100,000 such
accounts mixed ≈ 0.28 s. balances ≈ 0.7-2.2 µs. Building an AccountState ≈ 2 µs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, NamedTuple

WAD = 10**18
HALF_WAD = WAD // 2
RAY = 10**27
HALF_RAY = RAY // 2
PERCENTAGE_FACTOR = 10_000
HALF_PERCENTAGE_FACTOR = 5_000
SECONDS_PER_YEAR = 365 * 86400
_SPY2 = SECONDS_PER_YEAR * SECONDS_PER_YEAR
MAX_UINT = 2**256 - 1


def linear_interest(rate_ray: int, last_update: int, ts: int) -> int:
    """MathUtils.calculateLinearInterest at block.timestamp = ts."""
    if ts < last_update:
        raise ValueError(f"timestamp {ts} before the last update {last_update}")
    return RAY + rate_ray * (ts - last_update) // SECONDS_PER_YEAR


def compounded_interest(rate_ray: int, last_update: int, ts: int) -> int:
    """MathUtils.calculateCompoundedInterest: the 3-term binomial approximation."""
    exp = ts - last_update
    if exp <= 0:
        if exp < 0:
            raise ValueError(f"timestamp {ts} before the last update {last_update}")
        return RAY
    exp_minus_one = exp - 1
    exp_minus_two = exp - 2 if exp > 2 else 0
    base_power_two = ((rate_ray * rate_ray + HALF_RAY) // RAY) // _SPY2
    base_power_three = ((base_power_two * rate_ray + HALF_RAY) // RAY) // SECONDS_PER_YEAR
    second_term = exp * exp_minus_one * base_power_two // 2
    third_term = exp * exp_minus_one * exp_minus_two * base_power_three // 6
    return RAY + rate_ray * exp // SECONDS_PER_YEAR + second_term + third_term


@dataclass(frozen=True, slots=True)
class ReserveState:
    """One reserve as Pool.getReserveData answers it at some block (plus the token
    addresses the reads need). ltv, liquidation_threshold, decimals and emode_category are
    decoded from `configuration` (ReserveConfiguration.getParams), and unit is
    10**decimals of the configuration, as GenericLogic takes it."""

    id: int
    asset: str
    configuration: int
    liquidity_index_ray: int
    variable_borrow_index_ray: int
    current_liquidity_rate_ray: int
    current_variable_borrow_rate_ray: int
    current_stable_borrow_rate_ray: int
    last_update_timestamp: int
    a_token: str = ""
    stable_debt: str = ""
    variable_debt: str = ""
    ltv: int = field(init=False, repr=False)
    liquidation_threshold: int = field(init=False, repr=False)
    decimals: int = field(init=False, repr=False)
    unit: int = field(init=False, repr=False)
    emode_category: int = field(init=False, repr=False)
    # (ts, normalized income, normalized debt) of the last ts asked for
    _memo: tuple[int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        c = self.configuration
        s = object.__setattr__
        s(self, "ltv", c & 0xFFFF)
        s(self, "liquidation_threshold", (c >> 16) & 0xFFFF)
        s(self, "decimals", (c >> 48) & 0xFF)
        s(self, "unit", 10 ** ((c >> 48) & 0xFF))
        s(self, "emode_category", (c >> 168) & 0xFF)
        s(self, "_memo", (-1, 0, 0))

    def indexes(self, ts: int) -> tuple[int, int]:
        """(normalized income, normalized variable debt) at ts, memoized for the last ts."""
        m = self._memo
        if m[0] != ts:
            m = self._index_memo(ts)
        return m[1], m[2]

    def _index_memo(self, ts: int) -> tuple[int, int, int]:
        m = (ts, normalized_income(self, ts), normalized_debt(self, ts))
        object.__setattr__(self, "_memo", m)
        return m


def normalized_income(r: ReserveState, ts: int) -> int:
    """ReserveLogic.getNormalizedIncome (= Pool.getReserveNormalizedIncome) at ts."""
    if ts == r.last_update_timestamp:
        return r.liquidity_index_ray
    return (linear_interest(r.current_liquidity_rate_ray, r.last_update_timestamp, ts) * r.liquidity_index_ray
            + HALF_RAY) // RAY


def normalized_debt(r: ReserveState, ts: int) -> int:
    """ReserveLogic.getNormalizedDebt (= Pool.getReserveNormalizedVariableDebt) at ts."""
    if ts == r.last_update_timestamp:
        return r.variable_borrow_index_ray
    return (compounded_interest(r.current_variable_borrow_rate_ray, r.last_update_timestamp, ts)
            * r.variable_borrow_index_ray + HALF_RAY) // RAY


def stable_balance(principal: int, rate_ray: int, last_updated: int, ts: int) -> int:
    """StableDebtToken.balanceOf at ts: principal.rayMul(compounded(rate, user's last update))."""
    if principal == 0:
        return 0
    return (principal * compounded_interest(rate_ray, last_updated, ts) + HALF_RAY) // RAY


@dataclass(frozen=True, slots=True)
class EModeCategory:
    """Pool.getEModeCategoryData (the label left out)."""

    ltv: int
    liquidation_threshold: int
    liquidation_bonus: int
    price_source: str  # address; the zero address: the assets' own prices
    # v3.2+: getEModeCategoryCollateralBitmap (bit i: reserve id i counts as the category's
    # collateral); None before v3.2, where a reserve is in the category its configuration names
    collateral_bitmap: int | None = None
    has_price_source: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "has_price_source", bool(self.price_source) and int(self.price_source, 16) != 0)


@dataclass(frozen=True, slots=True)
class AccountState:
    """What getUserAccountData reads of one user, at some block.

    config: getUserConfiguration bitmap (bit 2i: borrowing reserve i, bit 2i+1: using it as
    collateral). collateral: reserve id -> AToken.scaledBalanceOf (read where the collateral
    bit is set). variable_debt: id -> VariableDebtToken.scaledBalanceOf and stable_debt:
    id -> (principalBalanceOf, getUserStableRate, getUserLastUpdated), read where the
    borrowing bit is set (a missing id counts as 0). `used` and `exposure` are derived from
    config: (id, collateral bit, borrowing bit) per used reserve, and the set of those ids."""

    config: int
    emode_category: int = 0
    collateral: Mapping[int, int] = field(default_factory=dict)
    variable_debt: Mapping[int, int] = field(default_factory=dict)
    stable_debt: Mapping[int, tuple[int, int, int]] = field(default_factory=dict)
    used: tuple[tuple[int, bool, bool], ...] = field(init=False, repr=False, compare=False)
    exposure: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shared = _BY_BITMAP.get(self.config)
        if shared is None:  # accounts with the same bitmap share these (memory at 100,000 accounts)
            used = used_reserves(self.config)
            shared = (used, frozenset(i for i, _, _ in used))
            if len(_BY_BITMAP) < 65_536:
                _BY_BITMAP[self.config] = shared
        object.__setattr__(self, "used", shared[0])
        object.__setattr__(self, "exposure", shared[1])


_BY_BITMAP: dict[int, tuple[tuple[tuple[int, bool, bool], ...], frozenset[int]]] = {}
NO_STABLE_DEBT: Mapping[int, tuple[int, int, int]] = MappingProxyType({})  # shared: most accounts have none


def used_reserves(config: int) -> tuple[tuple[int, bool, bool], ...]:
    """(reserve id, using as collateral, borrowing) for each reserve the bitmap marks."""
    out = []
    i = 0
    while config:
        pair = config & 3
        if pair:
            out.append((i, bool(pair & 2), bool(pair & 1)))
        config >>= 2
        i += 1
    return tuple(out)


def exposure(acct: AccountState) -> frozenset[int]:
    """The reserve ids whose price or indexes this account's health depends on (collateral
    used and borrowed; reserves marked collateral whose threshold is 0 included, since
    governance may change the threshold and the chain prices them anyway). An account in an
    eMode category with a price source also depends on that source's price: see
    acct.emode_category."""
    return acct.exposure


class AccountData(NamedTuple):
    """Pool.getUserAccountData's answer (availableBorrowsBase included)."""

    total_collateral_base: int
    total_debt_base: int
    avg_ltv_bps: int
    avg_liquidation_threshold_bps: int
    health_factor_wad: int
    available_borrows_base: int
    has_zero_ltv_collateral: bool = False

    def as_chain_tuple(self) -> tuple[int, int, int, int, int, int]:
        """In getUserAccountData's order: (totalCollateralBase, totalDebtBase,
        availableBorrowsBase, currentLiquidationThreshold, ltv, healthFactor)."""
        return (self.total_collateral_base, self.total_debt_base, self.available_borrows_base,
                self.avg_liquidation_threshold_bps, self.avg_ltv_bps, self.health_factor_wad)


EMPTY = AccountData(0, 0, 0, 0, MAX_UINT, 0, False)


def account_data(
    acct: AccountState,
    reserves_by_id: Mapping[int, ReserveState],
    prices_by_id: Mapping[int, int],
    emode_categories: Mapping[int, EModeCategory],
    emode_prices: Mapping[int, int],
    ts: int,
) -> AccountData:
    """getUserAccountData of `acct` in a block with timestamp ts.

    prices_by_id: reserve id -> AaveOracle.getAssetPrice(asset) (base currency units);
    emode_categories: category id -> getEModeCategoryData; emode_prices: category id ->
    AaveOracle.getAssetPrice(category.price_source) (needed only for categories with a
    price source). KeyError when something the chain would read is missing."""
    used = acct.used
    if not used:
        return EMPTY
    cat_id = acct.emode_category
    e_ltv = e_lt = e_price = 0
    bitmap = None
    if cat_id:
        cat = emode_categories[cat_id]
        e_ltv, e_lt = cat.ltv, cat.liquidation_threshold
        bitmap = cat.collateral_bitmap
        if cat.has_price_source:
            e_price = emode_prices[cat_id]
    coll_c = acct.collateral
    var_d = acct.variable_debt
    stab_d = acct.stable_debt
    total_coll = total_debt = ltv_sum = lt_sum = 0
    zero_ltv = False
    for rid, is_coll, is_borrow in used:
        r = reserves_by_id[rid]
        in_cat = cat_id != 0 and (r.emode_category == cat_id if bitmap is None else (bitmap >> rid) & 1 == 1)
        price = e_price if e_price and in_cat else prices_by_id[rid]
        memo = r._memo
        if memo[0] != ts:
            memo = r._index_memo(ts)
        lt = r.liquidation_threshold
        if lt and is_coll:
            bal = (coll_c.get(rid, 0) * memo[1] + HALF_RAY) // RAY * price // r.unit
            total_coll += bal
            if r.ltv:
                ltv_sum += bal * (e_ltv if in_cat else r.ltv)
            else:
                zero_ltv = True
            lt_sum += bal * (e_lt if in_cat else lt)
        if is_borrow:
            debt = var_d.get(rid, 0)
            if debt:
                debt = (debt * memo[2] + HALF_RAY) // RAY
            if stab_d:
                s = stab_d.get(rid)
                if s is not None and s[0]:
                    debt += stable_balance(s[0], s[1], s[2], ts)
            total_debt += price * debt // r.unit
    if total_coll:
        avg_ltv = ltv_sum // total_coll
        avg_lt = lt_sum // total_coll
    else:
        avg_ltv = avg_lt = 0
    if total_debt:
        hf = (((total_coll * avg_lt + HALF_PERCENTAGE_FACTOR) // PERCENTAGE_FACTOR) * WAD + total_debt // 2) // total_debt
    else:
        hf = MAX_UINT
    avail = (total_coll * avg_ltv + HALF_PERCENTAGE_FACTOR) // PERCENTAGE_FACTOR
    avail = avail - total_debt if avail > total_debt else 0
    return AccountData(total_coll, total_debt, avg_ltv, avg_lt, hf, avail, zero_ltv)


def balances(acct: AccountState, reserves_by_id: Mapping[int, ReserveState], ts: int) -> dict[int, tuple[int, int]]:
    """Reserve id -> (collateral, debt) in token base units at ts, for every reserve the
    account uses: collateral = AToken.balanceOf (scaled.rayMul(income), 0 where the
    collateral bit is off), debt = VariableDebtToken.balanceOf + StableDebtToken.balanceOf
    (0 where the borrowing bit is off): what LiquidationLogic reads for the pair."""
    out: dict[int, tuple[int, int]] = {}
    for rid, is_coll, is_borrow in acct.used:
        r = reserves_by_id[rid]
        coll = debt = 0
        if is_coll:
            scaled = acct.collateral.get(rid, 0)
            if scaled:
                coll = (scaled * r.indexes(ts)[0] + HALF_RAY) // RAY
        if is_borrow:
            scaled = acct.variable_debt.get(rid, 0)
            if scaled:
                debt = (scaled * r.indexes(ts)[1] + HALF_RAY) // RAY
            s = acct.stable_debt.get(rid)
            if s is not None:
                debt += stable_balance(s[0], s[1], s[2], ts)
        out[rid] = (coll, debt)
    return out
