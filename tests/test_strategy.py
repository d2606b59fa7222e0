"""Ranking and selection across protocols: pure, no chain."""

from keeper import strategy
from keeper.types import Opportunity, TxPlan

PLAN = TxPlan(to="0x" + "11" * 20, data=b"", gas_limit=500_000)


def opp(account: str, gross_usd: int, gas: int = 300_000, spend=(), risk=0, protocol="aave") -> Opportunity:
    return Opportunity(protocol=protocol, kind="aave_v3", account=account, block=1,
                       gross_profit_usd_e8=gross_usd * 10**8, gas_units=gas, plan=PLAN, spend=spend, risk_e18=risk)


def test_gas_cost_in_usd_rounds_up():
    # 300k gas at 10 gwei = 0.003 ETH; at $3,000 = $9
    assert strategy.gas_cost_usd_e8(300_000, 10 * 10**9, 3_000 * 10**8) == 9 * 10**8
    assert strategy.gas_cost_usd_e8(1, 1, 1) == 1  # a fraction of a unit still costs a unit


def test_rank_orders_by_net_profit_after_gas_then_risk():
    a = opp("0xa", 100, gas=3_000_000)  # $90 of gas at 10 gwei, $3,000 ETH -> net 10
    b = opp("0xb", 50)  # net 41
    c = opp("0xc", 50, risk=5)  # same net, riskier: first
    ranked = strategy.rank([a, b, c], 10 * 10**9, 3_000 * 10**8)
    assert [p.opp.account for p in ranked] == ["0xc", "0xb", "0xa"]
    assert ranked[-1].net_profit_usd_e8 == 10 * 10**8


def test_select_drops_unprofitable_in_flight_and_unaffordable():
    usdc = "0x" + "22" * 20
    ranked = strategy.rank([
        opp("0xa", 100, spend=((usdc, 700),)),
        opp("0xb", 90, spend=((usdc, 700),)),  # inventory already used by 0xa
        opp("0xc", 80),
        opp("0xd", 1),  # $1 gross, $9 gas
    ], 10 * 10**9, 3_000 * 10**8)
    chosen, skipped = strategy.select(ranked, min_profit_usd_e8=10**8, in_flight={"aave:0xc"}, inventory={usdc: 1000})
    assert [p.opp.account for p in chosen] == ["0xa"]
    assert {(p.opp.account, r) for p, r in skipped} == {
        ("0xb", "inventory_allocated"), ("0xc", "in_flight"), ("0xd", "below_min_profit")}


def test_opportunities_from_different_protocols_share_one_ranking():
    ranked = strategy.rank([opp("0xa", 20, protocol="aave"), opp("0xa", 30, protocol="auctions")], 0, 3_000 * 10**8)
    chosen, _ = strategy.select(ranked, 0)
    assert [p.opp.protocol for p in chosen] == ["auctions", "aave"]
