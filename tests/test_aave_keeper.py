"""The keeper against real Aave V3 bytecode on the devnet."""

from __future__ import annotations

from collections import defaultdict

import pytest
from structlog.testing import capture_logs

from keeper import abi

from .conftest import KEEPER

AAVE = "aave-v3-devnet"
pytestmark = pytest.mark.asyncio(loop_scope="session")
POOL = abi.load("AavePool")
LIQ = POOL.event("LiquidationCall")


def liquidation_events(chain, from_block: int) -> list[dict]:
    logs = chain.call("eth_getLogs", [{"address": chain.dep.pool, "fromBlock": hex(from_block), "toBlock": "latest",
                                       "topics": [LIQ.topic0]}])
    return [LIQ.decode(lg) for lg in logs]


async def test_keeper_liquidates_after_a_price_drop_and_is_paid_exactly_what_the_protocol_pays(chain, make_keeper):
    chain.shock("WETH", -12)
    before = {s: chain.balance(s, KEEPER) for s in chain.dep.tokens}
    start = chain.block_number()
    keeper = await make_keeper(only=AAVE)
    head = await keeper.read_head()
    outs = await keeper.cycle(head)
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert len(confirmed) >= 3, [(o.status, o.reason) for o in outs]
    events = liquidation_events(chain, start + 1)
    assert len(events) == len(confirmed)
    # the keeper's contract liquidates, sells the collateral back in the same transaction and
    # returns what it took from the keeper with the profit: the keeper's balances move by exactly
    # the profits its Liquidated events report, in the debt assets, and hold no collateral
    liquidator = chain.dep.extras["flash_liquidator"]
    expected_delta: dict[str, int] = defaultdict(int)
    for ev in events:
        assert ev["liquidator"].lower() == liquidator.lower() and ev["receiveAToken"] is False
    for o in confirmed:
        expected_delta[o.opp.detail.debt_asset.lower()] += o.realized["profit"]
    for sym, addr in chain.dep.tokens.items():
        assert chain.balance(sym, KEEPER) - before[sym] == expected_delta[addr.lower()], sym
    # and the keeper predicted those amounts: to the wei when it asked for an exact amount
    for o in confirmed:
        d, r = o.opp.detail, o.realized
        assert r["collateral_asset"] == d.collateral_asset and r["debt_asset"] == d.debt_asset
        if d.debt_requested == d.debt_to_cover:  # an exact partial liquidation: to the wei
            assert r["debt_repaid"] == d.debt_to_cover
            assert r["collateral_received"] == d.collateral_to_liquidator
        else:  # all the collateral was taken: the balances grew by a block of interest
            assert d.debt_to_cover <= r["debt_repaid"] <= d.debt_to_cover * 1_000_001 // 1_000_000
            assert d.collateral_to_liquidator <= r["collateral_received"] <= d.collateral_to_liquidator * 1_000_001 // 1_000_000
        assert o.expected_profit_usd_e8 > 0


async def test_close_factor_is_half_above_095_and_full_below(chain, make_keeper):
    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE)
    head = await keeper.read_head()
    outs = await keeper.cycle(head)
    factors = {o.opp.detail.close_factor_bps for o in outs if o.status == "confirmed"}
    assert factors == {5000, 10000}, "the seeded devnet should give both kinds after a -12% WETH shock"
    for o in outs:
        if o.status != "confirmed":
            continue
        d = o.opp.detail
        hf = d.health_factor_wad
        assert hf < 10**18
        assert d.close_factor_bps == (5000 if hf > 95 * 10**16 else 10000)


async def test_dry_run_logs_each_opportunity_and_sends_nothing(chain, make_keeper):
    chain.shock("WETH", -12)
    nonce, block = chain.nonce(KEEPER), chain.block_number()
    keeper = await make_keeper(only=AAVE, dry_run=True)
    with capture_logs() as logs:
        head = await keeper.read_head()
        outs = await keeper.cycle(head)
    events = [e["event"] for e in logs]
    assert events.count("opportunity") >= 3
    assert events.count("dry_run_send") == sum(o.status == "dry_run" for o in outs) >= 3
    assert "liquidation_sent" not in events
    assert chain.nonce(KEEPER) == nonce and chain.block_number() == block
    assert all(e.get("block") == head.number for e in logs if e["event"] == "opportunity")


async def test_healthy_accounts_are_never_touched(chain, make_keeper):
    nonce = chain.nonce(KEEPER)
    keeper = await make_keeper(only=AAVE)
    head = await keeper.read_head()
    outs = await keeper.cycle(head)
    assert outs == [] and chain.nonce(KEEPER) == nonce
    adapter = keeper.adapters["aave-v3-devnet"]
    assert len(adapter.health) >= 30 and all(h.health_factor_wad >= 10**18 for h in adapter.health.values())

    chain.shock("WETH", -12)
    start = chain.block_number()
    head = await keeper.read_head()
    await keeper.cycle(head)
    unhealthy = {a for a, h in adapter.health.items() if h.health_factor_wad < 10**18}
    touched = {ev["user"].lower() for ev in liquidation_events(chain, start + 1)}
    assert touched and touched <= {a.lower() for a in unhealthy}


async def test_multi_collateral_account_gets_the_best_paying_pair(chain, make_keeper):
    # 10 WETH ($30k, bonus 5%) and 0.5 WBTC ($30k, bonus 6.5%) against 45,000 USDC
    user = "0x000000000000000000000000000000000000bEEF"
    chain.open_position(user, {"WETH": 10 * 10**18, "WBTC": 5 * 10**7}, ("USDC", 45_000 * 10**6))
    chain.shock("WETH", -12)
    chain.shock("WBTC", -12)
    keeper = await make_keeper(only=AAVE, dry_run=True)
    head = await keeper.read_head()
    adapter = keeper.adapters["aave-v3-devnet"]
    await adapter.sync(head)
    opps = {o.account: o for o in await adapter.opportunities(head) if o.detail.route == "inventory"}
    candidates = [c for c in adapter.last_candidates[user] if len(c[0]) == 2]  # own-inventory route
    assert {pair for pair, _ in candidates} == {("WETH", "USDC"), ("WBTC", "USDC")}
    chosen = opps[user]
    assert (chosen.detail.collateral_symbol, chosen.detail.debt_symbol) == ("WBTC", "USDC")
    assert chosen.gross_profit_usd_e8 == max(g for _, g in candidates)


async def test_inventory_caps_the_repayment_and_nothing_is_sent_without_it(chain, make_keeper):
    chain.shock("WETH", -12)
    erc20 = abi.load("ERC20")
    usdc = chain.dep.tokens["USDC"]
    keep = 500 * 10**6
    bal = chain.balance("USDC", KEEPER)
    chain.send_as(KEEPER, usdc, erc20.fn("transfer").encode(chain.dep.depositor, bal - keep))
    keeper = await make_keeper(only=AAVE)
    head = await keeper.read_head()
    outs = await keeper.cycle(head)
    usdc_opps = [o for o in outs if o.opp.detail.debt_symbol == "USDC"]
    assert usdc_opps
    assert sum(o.realized.get("debt_repaid", 0) for o in usdc_opps if o.status == "confirmed") <= keep
    assert all(o.opp.detail.debt_to_cover <= keep for o in usdc_opps)


async def test_unprofitable_liquidations_are_refused(chain, make_keeper):
    chain.shock("WETH", -12)
    nonce = chain.nonce(KEEPER)
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__MIN_PROFIT_USD="1000000000")
    with capture_logs() as logs:
        head = await keeper.read_head()
        outs = await keeper.cycle(head)
    assert outs == [] and chain.nonce(KEEPER) == nonce
    reasons = {e.get("reason") for e in logs if e["event"] == "skipped"}
    assert "below_min_profit" in reasons


async def test_liquidating_until_no_position_is_left_below_one(chain, make_keeper):
    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE)
    for _ in range(8):
        head = await keeper.read_head()
        outs = await keeper.cycle(head)
        if not any(o.status == "confirmed" for o in outs):
            break
        chain.call("evm_mine")
    head = await keeper.read_head()
    await keeper.adapters["aave-v3-devnet"].refresh(head)
    left = [a for a, h in keeper.adapters["aave-v3-devnet"].health.items() if h.health_factor_wad < 10**18]
    # what is left below 1 is not worth the gas (the keeper said so)
    for a in left:
        opps = [o for o in keeper.adapters["aave-v3-devnet"].last_opportunities if o.account == a]
        assert all(o.gross_profit_usd_e8 < 10**8 for o in opps)


async def test_a_zero_oracle_price_is_logged_and_the_keeper_goes_on(chain, make_keeper):
    from keeper.devnet.deploy import DEPLOYER

    keeper = await make_keeper(only=AAVE)
    agg = chain.dep.aggregators["WETH"]
    chain.send_as(DEPLOYER, agg, abi.Function("setAnswer", ["int256"], []).encode(0))
    nonce = chain.nonce(KEEPER)
    with capture_logs() as logs:
        outs = await keeper.cycle(await keeper.read_head())
    assert outs == [] and chain.nonce(KEEPER) == nonce
    # the AaveOracle has no fallback: a zero answer makes getAssetPrice(WETH) revert; only WETH is unavailable
    assert not [e for e in logs if e["event"] == "protocol_error"]
    warnings = [e for e in logs if e["event"] == "price_unavailable"]
    assert [(e["protocol"], e["asset"], e["problem"]) for e in warnings] == [("aave-v3-devnet", "WETH", "reverted")]
    assert {e["asset"] for e in logs if e.get("reason") == "price_unavailable"} == {"WETH"}
    # the price comes back: the same keeper carries on and liquidates
    chain.send_as(DEPLOYER, agg, abi.Function("setAnswer", ["int256"], []).encode(2_640 * 10**8))
    outs = await keeper.cycle(await keeper.read_head())
    assert any(o.status == "confirmed" for o in outs)


async def test_simulation_stops_a_liquidation_the_chain_would_revert(chain, make_keeper):
    from keeper import strategy
    from keeper.devnet import set_price

    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE)
    head = await keeper.read_head()
    opps = await keeper.gather(head)
    native = await keeper.native_usd_e8()
    assert opps
    set_price(chain.url, chain.dep, "WETH", 3_000 * 10**8)  # the price recovers before the send
    nonce = chain.nonce(KEEPER)
    with capture_logs() as logs:
        outs = await keeper.executor.execute_all(strategy.rank(opps, head.base_fee_wei, native), head, native)
    assert outs and all(o.status == "skipped" and o.reason == "simulation_reverted" for o in outs)
    assert chain.nonce(KEEPER) == nonce
    reverts = {e["revert"] for e in logs if e.get("reason") == "simulation_reverted"}
    assert reverts == {"45 (HEALTH_FACTOR_NOT_BELOW_THRESHOLD)"}
