"""Morpho Blue's arithmetic (keeper/protocols/morpho_blue/math.py) on known values and its own
invariants; the devnet tests check it against the real bytecode."""

from __future__ import annotations

import random

import pytest

from keeper.protocols.morpho_blue import math as mm

WAD = mm.WAD


def test_liquidation_incentive_factor_is_morphos_formula_capped_at_115():
    assert mm.liquidation_incentive_factor(86 * 10**16) == WAD * WAD // (WAD - 3 * 10**17 * 14 * 10**16 // WAD)
    assert mm.liquidation_incentive_factor(86 * 10**16) == 1_043_841_336_116_910_229  # 1 / 0.958
    assert mm.liquidation_incentive_factor(945 * 10**15) == 1_016_776_817_488_561_260  # 1 / 0.9835
    assert mm.liquidation_incentive_factor(0) == mm.MAX_LIQUIDATION_INCENTIVE_FACTOR
    assert mm.liquidation_incentive_factor(385 * 10**15) == mm.MAX_LIQUIDATION_INCENTIVE_FACTOR


def test_shares_round_in_the_protocols_favour():
    ta, ts = 1_000_003, 999_999 * 10**6
    for a in (1, 7, 12345, 10**9):
        assert mm.to_shares_up(a, ta, ts) >= mm.to_shares_down(a, ta, ts)
        assert mm.to_assets_up(mm.to_shares_down(a, ta, ts), ta, ts) <= a + 1
    assert mm.to_shares_down(1, 0, 0) == 10**6  # VIRTUAL_SHARES / VIRTUAL_ASSETS


def test_interest_accrues_with_the_taylor_expansion_and_fee_shares():
    m = mm.MarketState(2_000_000 * 10**6, 2_000_000 * 10**12, 500_000 * 10**6, 500_000 * 10**12, 1_000, WAD // 10)
    rate = mm.irm_mock_rate(m)
    assert rate == (WAD // 4) // mm.SECONDS_PER_YEAR  # utilization 25% -> 25% APR
    a = mm.accrue_interest(m, rate, 1_000 + mm.SECONDS_PER_YEAR)
    x = rate * mm.SECONDS_PER_YEAR
    assert a.interest == m.total_borrow_assets * (x + x * x // (2 * WAD) + x * x // (2 * WAD) * x // (3 * WAD)) // WAD
    assert a.market.total_borrow_assets == m.total_borrow_assets + a.interest
    assert a.market.total_supply_assets == m.total_supply_assets + a.interest
    fee = a.interest // 10
    assert a.fee_shares == fee * (m.total_supply_shares + 10**6) // (a.market.total_supply_assets - fee + 1)
    assert mm.accrue_interest(m, rate, 1_000).market == m


@pytest.mark.parametrize("seed", range(20))
def test_liquidation_by_seizure_and_by_shares_agree_and_bad_debt_empties_the_position(seed):
    rng = random.Random(seed)
    lltv = rng.choice((86 * 10**16, 945 * 10**15, 77 * 10**16))
    tba = rng.randint(10**9, 10**15)
    m = mm.MarketState(tba * 3, tba * 3 * 10**6, tba, tba * 10**6 * rng.randint(90, 100) // 100, 0, 0)
    price = 3_000 * 10**36 * 10**6 // 10**18  # WETH (18) in USDC (6)
    collateral = rng.randint(10**16, 10**21)
    value = collateral * price // 10**36
    shares = mm.to_shares_down(value * rng.randint(870, 990) // 1000, m.total_borrow_assets, m.total_borrow_shares)
    shares = min(shares, m.total_borrow_shares)
    top = mm.max_seizable(m, shares, collateral, price, lltv)
    try:
        full = mm.liquidate(m, shares, collateral, price, lltv, repaid_shares=shares)
    except mm.Overflow:  # closing by shares would seize more than there is: underwater
        assert top == collateral
    else:
        assert full.borrow_shares_after == 0 and full.seized_assets <= collateral
        again = mm.liquidate(m, shares, collateral, price, lltv, seized_assets=full.seized_assets)
        assert again.repaid_shares <= shares and again.seized_assets == full.seized_assets
    if top == collateral:  # underwater: all the collateral goes, the rest is written off
        liq = mm.liquidate(m, shares, collateral, price, lltv, seized_assets=collateral)
        assert liq.collateral_after == 0 and liq.borrow_shares_after == 0
        assert liq.bad_debt_shares == shares - liq.repaid_shares > 0
        assert liq.market_after.total_borrow_shares == m.total_borrow_shares - shares
    else:
        with pytest.raises(mm.Overflow):
            mm.liquidate(m, shares, collateral, price, lltv, seized_assets=top + 1)
    with pytest.raises(ValueError):
        mm.liquidate(m, shares, collateral, price, lltv)


def test_health_is_morphos_is_healthy():
    m = mm.MarketState(10**12, 10**18, 10**12, 10**18, 0, 0)
    price = 10**36  # 1:1
    lltv = 86 * 10**16
    shares = mm.to_shares_down(86 * 10**6, m.total_borrow_assets, m.total_borrow_shares)
    assert mm.is_healthy(shares, 100 * 10**6, m, price, lltv)
    assert not mm.is_healthy(shares + 10**7, 100 * 10**6, m, price, lltv)
    assert mm.is_healthy(0, 0, m, price, lltv)
    liq = mm.liquidation_price(shares, 100 * 10**6, m, lltv)
    assert mm.is_healthy(shares, 100 * 10**6, m, liq, lltv) and not mm.is_healthy(shares, 100 * 10**6, m, liq - 10**30, lltv)
