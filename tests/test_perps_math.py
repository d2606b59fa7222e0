"""Synthetix v3 perps margin rules (keeper/protocols/perps/math.py): pure, no chain."""

from __future__ import annotations

from keeper.protocols.perps import math as pm

WAD = pm.WAD
ETH = pm.MarketParams(100, 3 * WAD, 2 * 10**16, 5 * 10**17, 5 * 10**14, 20 * WAD, 1_000_000 * WAD,
                      2 * 10**14, 8 * 10**14, 4 * 10**15, 25)
BTC = pm.MarketParams(200, 3 * WAD, 2 * 10**16, 5 * 10**17, 5 * 10**14, 20 * WAD, 50_000 * WAD,
                      2 * 10**14, 8 * 10**14, 4 * 10**15, 25)
PARAMS = {100: ETH, 200: BTC}
G = pm.Guards(2 * WAD, 10**17, 500 * WAD, 2 * 10**16, flag_cost=3 * WAD, liquidate_cost=2 * WAD)


def test_signed_decimal_math_truncates_toward_zero_like_solidity():
    assert pm.mul_signed(-3, WAD // 2) == -1  # -1.5 wei -> -1, not -2
    assert pm.mul_signed(3, WAD // 2) == 1
    assert pm.pnl(-10 * WAD, 2_900 * WAD, 3_000 * WAD) == 1_000 * WAD


def test_keeper_reward_is_bounded_by_cost_plus_minimum_and_by_the_margin_scaled_maximum():
    # min cap: max(cost + 2, cost * 1.1); max cap: min(margin * 2%, 500)
    assert pm.keeper_reward(G, 0, 3 * WAD, 10_000 * WAD) == 5 * WAD
    assert pm.keeper_reward(G, 30 * WAD, 3 * WAD, 10_000 * WAD) == 33 * WAD
    assert pm.keeper_reward(G, 300 * WAD, 3 * WAD, 10_000 * WAD) == 200 * WAD  # 2% of $10k
    assert pm.keeper_reward(G, 10**6 * WAD, 3 * WAD, 0) == 500 * WAD  # flagged: the absolute max
    assert pm.keeper_reward(G, 0, 100 * WAD, 10**6 * WAD) == 110 * WAD  # 10% profit on a large cost
    assert pm.continuation_reward(G) == 4 * WAD


def test_window_capacity_and_number_of_windows():
    assert ETH.max_liquidation_in_window == 100 * WAD and BTC.max_liquidation_in_window == 5 * WAD
    assert pm.windows(ETH, 350 * WAD) == 4 and pm.windows(ETH, -100 * WAD) == 1 and pm.windows(ETH, 100 * WAD + 1) == 2


def test_maintenance_margin_of_one_position():
    im, mm, flag = pm.position_margins(ETH, 10 * WAD, 3_000 * WAD)
    # impact 10/1e6 * 3 = 3e-5; imr 0.02003; mmr 0.010015; notional 30,000
    assert im == 30_000 * 2003 * 10**13 + 20 * WAD
    assert mm == 30_000 * 10015 * 10**12 + 20 * WAD
    assert flag == 15 * WAD


def _brute_force(positions, prices, collateral, market, long):
    """Walk the 8-decimal grid from the model's answer: the last liquidatable price."""
    p = dict(prices)

    def bad(x):
        p[market] = x
        return pm.is_liquidatable(PARAMS, positions, p, collateral, G)

    liq = pm.liquidation_price(PARAMS, positions, prices, collateral, G, market)
    assert bad(liq) and not bad(liq + (pm.FEED_STEP if long else -pm.FEED_STEP))
    return liq


def test_liquidation_price_is_the_last_liquidatable_step_for_longs_and_shorts():
    prices = {100: 3_000 * WAD, 200: 60_000 * WAD}
    long = [pm.Position(100, 46 * WAD, 3_000 * WAD)]
    short = [pm.Position(200, -2_450_000_000_000_000_000, 60_000 * WAD)]
    cross = [pm.Position(100, 13_333_333_333_333_333_333, 3_000 * WAD), pm.Position(200, -666_666_666_666_666_666, 60_000 * WAD)]
    l1 = _brute_force(long, prices, 23_000 * WAD, 100, True)
    assert 2_500 * WAD < l1 < 2_560 * WAD
    l2 = _brute_force(short, prices, 24_500 * WAD, 200, False)
    assert 69_000 * WAD < l2 < 69_500 * WAD
    assert _brute_force(cross, prices, 10_000 * WAD, 100, True) < 3_000 * WAD
    assert _brute_force(cross, prices, 10_000 * WAD, 200, False) > 60_000 * WAD
    # a fully collateralised long has no liquidation price
    assert pm.liquidation_price(PARAMS, [pm.Position(100, WAD, 3_000 * WAD)], prices, 10_000 * WAD, G, 100) is None


def test_liquidation_price_when_already_liquidatable_is_still_the_boundary():
    prices = {100: 2_000 * WAD}
    pos = [pm.Position(100, 46 * WAD, 3_000 * WAD)]
    liq = _brute_force(pos, prices, 23_000 * WAD, 100, True)
    assert liq > 2_000 * WAD


def test_flagged_accounts_share_the_window_capacity_in_list_order():
    positions = {1: [pm.Position(100, 250 * WAD, 0)], 2: [pm.Position(100, -30 * WAD, 0)],
                 3: [pm.Position(200, 2 * WAD, 0)]}
    n, reward, progress = pm.plan_flagged([1, 2, 3], positions, {100: 100 * WAD, 200: 5 * WAD}, G, 10)
    assert (n, progress, reward) == (3, [1, 3], 2 * pm.continuation_reward(G))
    n, reward, progress = pm.plan_flagged([1, 2], positions, {100: 0, 200: 5 * WAD}, G, 10)
    assert (n, reward, progress) == (0, 0, [])
