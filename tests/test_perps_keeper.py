"""The keeper against the devnet's perps market (Synthetix v3 perps interface, keeper/devnet/perps.py)."""

from __future__ import annotations

import tomllib

import pytest
from structlog.testing import capture_logs

from keeper import abi
from keeper.devnet import set_price
from keeper.protocols.perps import math as pm

from .conftest import DEVNET_CONFIG, KEEPER

pytestmark = pytest.mark.asyncio(loop_scope="session")
MARKET = abi.load("PerpsMarket")
ERC20 = abi.load("ERC20")
EV = {name: MARKET.event(name) for name in
      ("AccountLiquidationAttempt", "AccountFlaggedForLiquidation", "PositionLiquidated")}
ETH, BTC = 100, 200
FEED = {ETH: "WETH", BTC: "WBTC"}


def _indices() -> tuple[int, list[int]]:
    protocols = tomllib.loads(DEVNET_CONFIG.read_text())["protocols"]
    mine = [i for i, p in enumerate(protocols) if p["kind"] == "synthetix_perps"]
    assert len(mine) == 1
    return mine[0], [i for i in range(len(protocols)) if i != mine[0]]


PERPS_INDEX, OTHERS = _indices()
ONLY_PERPS = {f"KEEPER_PROTOCOLS__{i}__ENABLED": "false" for i in OTHERS}


def perps(chain) -> dict:
    return chain.dep.extras["perps"]


def can_liquidate(chain, account: int) -> bool:
    return chain.view(perps(chain)["market"], MARKET.fn("canLiquidate"), account)[0] == 1


def events(chain, name: str, from_block: int) -> list[dict]:
    ev = EV[name]
    logs = chain.call("eth_getLogs", [{"address": perps(chain)["market"], "fromBlock": hex(from_block),
                                       "toBlock": "latest", "topics": [ev.topic0]}])
    return [ev.decode(lg) for lg in logs]


def move(chain, market: int, pct: int) -> int:
    """Move the feed by pct percent from its current answer (oracle only); returns the new answer."""
    old = chain.view(chain.dep.aggregators[FEED[market]], abi.load("ChainlinkAggregator").fn("latestAnswer"))[0]
    new = old * (100 + pct) // 100
    set_price(chain.url, chain.dep, FEED[market], new)
    return new


def usd_balance(chain, who: str) -> int:
    return chain.view(perps(chain)["usd_token"], ERC20.fn("balanceOf"), who)[0]


async def perps_keeper(make_keeper, dry_run: bool = False):
    keeper = await make_keeper(dry_run=dry_run, **ONLY_PERPS)
    assert list(keeper.adapters) == ["perps-devnet"]
    return keeper, keeper.adapters["perps-devnet"]


async def test_keeper_liquidates_every_account_that_can_be_liquidated_and_is_paid_within_the_bounds(chain, make_keeper):
    ids = [a["id"] for a in perps(chain)["accounts"]]
    assert not any(can_liquidate(chain, a) for a in ids), "every seeded account starts healthy"
    move(chain, ETH, -20)
    move(chain, BTC, +20)
    eligible = {a for a in ids if can_liquidate(chain, a)}
    assert len(eligible) >= 5  # ETH longs 5x/6x + the large one, BTC shorts 5x/6x
    start = chain.block_number()
    before = usd_balance(chain, KEEPER)
    keeper, adapter = await perps_keeper(make_keeper)
    head = await keeper.read_head()
    outs = await keeper.cycle(head)
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert {int(o.opp.account) for o in confirmed} == eligible, [(o.opp.account, o.status, o.reason) for o in outs]
    flagged = events(chain, "AccountFlaggedForLiquidation", start + 1)
    attempts = events(chain, "AccountLiquidationAttempt", start + 1)
    assert {e["accountId"] for e in flagged} == eligible == {e["accountId"] for e in attempts}
    g = adapter.guards
    paid = {e["accountId"]: e["flagReward"] for e in flagged}
    for o in confirmed:
        d = o.opp.detail
        assert o.realized["reward"] == d.reward == paid[int(o.opp.account)]  # predicted to the wei
        assert pm.min_cap(g, g.flag_cost) <= d.reward <= d.reward_max <= g.max_keeper_reward_usd
    assert usd_balance(chain, KEEPER) - before == sum(e["reward"] for e in attempts)
    # nothing else was touched, and scan rows say who was liquidatable
    assert all(not can_liquidate(chain, a) for a in set(ids) - eligible)


async def test_liquidation_price_is_where_can_liquidate_flips(chain, make_keeper):
    keeper, adapter = await perps_keeper(make_keeper, dry_run=True)
    head = await keeper.read_head()
    await adapter.sync(head)
    await adapter.refresh(head)
    # the model reproduces the protocol's margins to the wei for every account
    for st in adapter.state.values():
        assert st.model_margin == st.available_margin and st.model_maintenance == st.required_maintenance, st.id
    by_label = {a["label"]: a["id"] for a in perps(chain)["accounts"]}
    cases = [(by_label["ETH long 6x"], ETH), (by_label["ETH short 5x"], ETH), (by_label["BTC long 4x"], BTC),
             (by_label["BTC short 6x"], BTC), (by_label["cross long ETH + short BTC"], ETH),
             (by_label["cross long ETH + short BTC"], BTC)]
    for account, market in cases:
        st = adapter.state[account]
        liq = st.liquidation_prices[market]
        assert liq is not None and liq % 10**10 == 0
        long = next(q for q in st.positions if q.market_id == market).size > 0
        answer = liq // 10**10
        original = adapter.markets[[m.id for m in adapter.markets].index(market)].price // 10**10
        set_price(chain.url, chain.dep, FEED[market], answer)
        assert can_liquidate(chain, account), (account, market, answer)
        set_price(chain.url, chain.dep, FEED[market], answer + (1 if long else -1))  # one feed step short of it
        assert not can_liquidate(chain, account), (account, market, answer)
        set_price(chain.url, chain.dep, FEED[market], original)


async def test_account_too_large_for_one_window_is_closed_over_successive_windows(chain, make_keeper):
    large = next(a for a in perps(chain)["accounts"] if a["label"].startswith("large"))
    size = large["positions"][str(ETH)]
    window = perps(chain)["markets"][str(ETH)]["window_seconds"]
    per_window = perps(chain)["markets"][str(ETH)]["max_liquidation_in_window"]
    assert size > 3 * per_window
    move(chain, ETH, -20)
    start = chain.block_number()
    keeper, adapter = await perps_keeper(make_keeper)
    outs = await keeper.cycle(await keeper.read_head())
    assert large["id"] in {int(o.opp.account) for o in outs if o.status == "confirmed"}
    # same window: nothing left to close, nothing is sent
    nonce = chain.nonce(KEEPER)
    chain.call("evm_mine")
    outs = await keeper.cycle(await keeper.read_head())
    assert outs == [] and chain.nonce(KEEPER) == nonce
    assert {s.reason for s in adapter.last_skips} == {"liquidation_capacity_exhausted"}
    rounds = 0
    while perps_flagged(chain):
        rounds += 1
        assert rounds <= 6
        chain.call("evm_increaseTime", [window + 1])
        chain.call("evm_mine")
        outs = await keeper.cycle(await keeper.read_head())
        assert [o.status for o in outs] == ["confirmed"] and outs[0].opp.account == "flagged"
        assert outs[0].realized["reward"] == outs[0].opp.detail.reward
    closed = [e for e in events(chain, "PositionLiquidated", start + 1) if e["accountId"] == large["id"]]
    assert sum(e["amountLiquidated"] for e in closed) == size and closed[-1]["currentPositionSize"] == 0
    assert len(closed) >= 4 and all(e["amountLiquidated"] <= per_window for e in closed)
    assert chain.view(perps(chain)["market"], MARKET.fn("getOpenPositionSize"), large["id"], ETH)[0] == 0


def perps_flagged(chain) -> list[int]:
    return list(chain.view(perps(chain)["market"], MARKET.fn("flaggedAccounts"))[0])


async def test_shorts_on_a_rise_and_longs_on_a_fall(chain, make_keeper):
    accounts = {a["id"]: a for a in perps(chain)["accounts"] if set(a["positions"]) == {str(ETH)}}
    shorts = {i for i, a in accounts.items() if a["positions"][str(ETH)] < 0}
    keeper, adapter = await perps_keeper(make_keeper)
    move(chain, ETH, +20)
    eligible = {i for i in accounts if can_liquidate(chain, i)}
    assert eligible and eligible <= shorts
    start = chain.block_number()
    outs = await keeper.cycle(await keeper.read_head())
    hit = {int(o.opp.account) for o in outs if o.status == "confirmed"}
    assert hit == eligible == _flag_ids(chain, start)
    move(chain, ETH, -34)  # 3,600 -> 2,376: below the longs' 5x/6x liquidation prices
    chain.call("evm_increaseTime", [30])
    start = chain.block_number()
    outs = await keeper.cycle(await keeper.read_head())
    hit_longs = {int(o.opp.account) for o in outs if o.status == "confirmed" and o.opp.account != "flagged"}
    assert hit_longs == _flag_ids(chain, start) and hit_longs & set(accounts)
    assert all(accounts[i]["positions"][str(ETH)] > 0 for i in hit_longs & set(accounts))


def _flag_ids(chain, start: int) -> set[int]:
    return {e["accountId"] for e in events(chain, "AccountFlaggedForLiquidation", start + 1)}


async def test_dry_run_logs_what_it_would_liquidate_and_sends_nothing(chain, make_keeper):
    move(chain, ETH, -20)
    nonce, block = chain.nonce(KEEPER), chain.block_number()
    keeper, adapter = await perps_keeper(make_keeper, dry_run=True)
    with capture_logs() as logs:
        outs = await keeper.cycle(await keeper.read_head())
    sends = [e for e in logs if e["event"] == "dry_run_send" and e.get("protocol") == "perps-devnet"]
    opps = [e for e in logs if e["event"] == "opportunity" and e.get("protocol") == "perps-devnet"]
    assert len(sends) == len(opps) == len(outs) >= 3 and all(o.status == "dry_run" for o in outs)
    assert all(e["action"] == "liquidate" and e["reward_usd"] > 0 for e in opps)
    assert "liquidation_sent" not in {e["event"] for e in logs}
    assert chain.nonce(KEEPER) == nonce and chain.block_number() == block
    rows = adapter.positions()
    below = [r for r in rows if r["health_factor"] < 1]
    assert below and all(r["opportunity"] is not None for r in below)
    assert all(r["opportunity"] is None for r in rows if r["health_factor"] >= 1)
    assert all("liq " in r["summary"] and "lev " in r["summary"] for r in rows)
