"""Aave V3 liquidation arithmetic, checked against hand-computed values."""

from keeper.protocols.aave_v3 import math as am

E18 = 10**18
WETH = lambda bal: am.Side(price=3000 * 10**8, unit=E18, balance=bal)  # noqa: E731
USDC = lambda bal: am.Side(price=1 * 10**8, unit=10**6, balance=bal)  # noqa: E731


def test_percentage_math_rounds_half_up_like_solidity():
    assert am.percent_mul(3, 5000) == 2  # 1.5 -> 2
    assert am.percent_mul(1, 4999) == 0
    assert am.percent_div(1, 3) == 3333  # (10000 + 1) // 3
    assert am.percent_div(4_200_000, 10500) == 4_000_000


def test_close_factor_is_half_above_095_and_full_at_or_below():
    assert am.close_factor_bps(96 * 10**16) == 5000
    assert am.close_factor_bps(95 * 10**16 + 1) == 5000
    assert am.close_factor_bps(95 * 10**16) == 10000
    assert am.close_factor_bps(5 * 10**17) == 10000


def test_liquidation_pays_bonus_minus_protocol_fee_on_the_bonus_only():
    # 10 WETH collateral, 24,000 USDC debt, HF 0.97: half the debt may be repaid
    liq = am.size_liquidation("v3.0", 97 * 10**16, USDC(24_000 * 10**6), WETH(10 * E18),
                              total_debt_base=24_000 * 10**8, bonus_bps=10500, protocol_fee_bps=1000)
    assert liq.debt_to_cover == 12_000 * 10**6
    # 12,000 USDC buys 4 WETH; +5% bonus = 4.2 WETH taken; fee = 10% of the 0.2 bonus
    assert liq.collateral_taken == 42 * 10**17
    assert liq.protocol_fee == 2 * 10**16
    assert liq.collateral_to_liquidator == 418 * 10**16


def test_full_close_when_health_factor_at_or_below_095():
    liq = am.size_liquidation("v3.0", 95 * 10**16, USDC(24_000 * 10**6), WETH(10 * E18),
                              total_debt_base=24_000 * 10**8, bonus_bps=10500, protocol_fee_bps=0)
    assert liq.debt_to_cover == 24_000 * 10**6
    assert liq.collateral_to_liquidator == 84 * 10**17 and liq.protocol_fee == 0


def test_collateral_cap_reduces_the_debt_repaid():
    # 2 WETH ($6,000) against 24,000 USDC at HF 0.5: all collateral goes, debt repaid shrinks
    liq = am.size_liquidation("v3.0", 5 * 10**17, USDC(24_000 * 10**6), WETH(2 * E18),
                              total_debt_base=24_000 * 10**8, bonus_bps=10500, protocol_fee_bps=1000)
    assert liq.collateral_taken == 2 * E18
    # (6,000e6 * 10000 + 5250) // 10500 = 5,714,285,714 (USDC base units)
    assert liq.debt_to_cover == 5_714_285_714
    bonus = 2 * E18 - am.percent_div(2 * E18, 10500)
    assert liq.protocol_fee == am.percent_mul(bonus, 1000)
    assert liq.collateral_to_liquidator == 2 * E18 - liq.protocol_fee


def test_odd_decimals_use_integer_division_in_the_protocols_order():
    wbtc = am.Side(price=60_000 * 10**8, unit=10**8, balance=10**8)  # 1 WBTC, 8 decimals
    usdc = USDC(1_000 * 10**6 + 1)
    liq = am.collateral_for_debt(usdc.balance, usdc, wbtc, 10650, 1000)
    base = (10**8 * (1_000 * 10**6 + 1) * 10**8) // (60_000 * 10**8 * 10**6)
    assert base == 1_666_666  # WBTC base units, rounded down
    assert liq.collateral_taken == am.percent_mul(base, 10650)


def test_inventory_caps_the_repayment():
    liq = am.size_liquidation("v3.0", 97 * 10**16, USDC(24_000 * 10**6), WETH(10 * E18),
                              total_debt_base=24_000 * 10**8, bonus_bps=10500, protocol_fee_bps=1000,
                              inventory=3_000 * 10**6)
    assert liq.debt_to_cover == 3_000 * 10**6
    assert am.size_liquidation("v3.0", 97 * 10**16, USDC(24_000 * 10**6), WETH(10 * E18),
                               total_debt_base=24_000 * 10**8, bonus_bps=10500, protocol_fee_bps=1000,
                               inventory=0) is None


def test_v33_small_positions_may_be_closed_in_full():
    # reserve debt $1,500 < $2,000: the whole reserve debt is liquidatable even at HF 0.99
    limit = am.max_liquidatable_debt("v3.3", 99 * 10**16, USDC(1_500 * 10**6), WETH(E18), 1_500 * 10**8)
    assert limit == 1_500 * 10**6
    assert am.max_liquidatable_debt("v3.0", 99 * 10**16, USDC(1_500 * 10**6), WETH(E18), 1_500 * 10**8) == 750 * 10**6


def test_v33_close_factor_applies_to_total_debt_for_large_positions():
    # reserve debt $2,500 of $2,500 total, collateral $3,000, HF 0.99 -> at most 50% of total
    limit = am.max_liquidatable_debt("v3.3", 99 * 10**16, USDC(2_500 * 10**6), WETH(E18), 2_500 * 10**8)
    assert limit == 1_250 * 10**6


def test_v33_refuses_a_liquidation_that_leaves_dust():
    # HF 0.9: full debt allowed; an inventory of 1,500 leaves $600 of debt: below $1,000 -> dust
    args = dict(total_debt_base=2_100 * 10**8, bonus_bps=10500, protocol_fee_bps=1000)
    assert am.size_liquidation("v3.3", 9 * 10**17, USDC(2_100 * 10**6), WETH(E18), inventory=1_500 * 10**6, **args) is None
    full = am.size_liquidation("v3.3", 9 * 10**17, USDC(2_100 * 10**6), WETH(E18), **args)
    assert full is not None and full.debt_to_cover == 2_100 * 10**6
    # v3.0 has no dust rule
    assert am.size_liquidation("v3.0", 9 * 10**17, USDC(2_100 * 10**6), WETH(E18), inventory=1_500 * 10**6, **args)


def test_healthy_or_debt_free_accounts_are_not_liquidatable():
    assert not am.is_liquidatable(10**18, 1)
    assert not am.is_liquidatable(2**256 - 1, 0)
    assert am.is_liquidatable(10**18 - 1, 1)
