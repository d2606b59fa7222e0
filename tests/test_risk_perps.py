"""`keeper risk` on perps (keeper/protocols/perps/views.py, keeper/risk.py), checked against the
devnet's PerpsMarket bytecode. For randomized margin accounts (longs and shorts, several
leverages, both markets, some with a position in each): the market's feed set (keeper/devnet/
prices.py set_price) to exactly the reported liquidation price makes the account eligible
(canLiquidate, and liquidate() gets past NotEligibleForLiquidation); one feed step on the safe
side (one above for a long, one below for a short) does not. Time is pinned with the eth_call
block override {"time": T}, as tests/test_risk.py does. Also: the rise curve (pure) and
`keeper risk --json` on the devnet."""

from __future__ import annotations

import json
import random

import pytest
from eth_utils import keccak

from keeper import abi, risk
from keeper.devnet.prices import set_price

from .conftest import DEVNET_CONFIG, only_env
from .test_cli import clean_env
from .test_risk import _cli, at_price, call_at

ASYNC = pytest.mark.asyncio(loop_scope="session")
MARKET = abi.load("PerpsMarket")
ERC20 = abi.load("ERC20")
AGG = abi.load("ChainlinkAggregator").fn("latestAnswer")
WAD = 10**18
ETH, BTC = 100, 200
FEED = {ETH: "WETH", BTC: "WBTC"}
NOT_ELIGIBLE = "0x" + keccak(text="NotEligibleForLiquidation(uint128)")[:4].hex()
LIQUIDATOR = "0x000000000000000000000000000000000000bEEF"
ACCEPT_ANY_BUY = 2**256 - 1
MINT = abi.Function("mint", ["address", "uint256"], [])  # PerpsUSD.mint: anyone may mint on the devnet


def perps(chain) -> dict:
    return chain.dep.extras["perps"]


def send(chain, owner: str, to: str, data: bytes) -> None:
    chain.send_as(owner, to, data, gas=600_000)


def open_account(chain, account_id: int, owner: str, collateral: int, sizes: dict[int, int]) -> None:
    """A new margin account: snxUSD minted and deposited, then one settled order per market."""
    e = perps(chain)
    chain.call("anvil_setBalance", [owner, hex(10 * WAD)])
    send(chain, owner, e["usd_token"], MINT.encode(owner, collateral))
    send(chain, owner, e["usd_token"], ERC20.fn("approve").encode(e["market"], collateral))
    send(chain, owner, e["market"], MARKET.fn("createAccount(uint128)").encode(account_id))
    send(chain, owner, e["market"], MARKET.fn("modifyCollateral").encode(account_id, 0, collateral))
    for m, size in sizes.items():
        req = (m, account_id, size, 0, ACCEPT_ANY_BUY if size > 0 else 0, b"\0" * 32, "0x" + "00" * 20)
        send(chain, owner, e["market"], MARKET.fn("commitOrder").encode(req))
        send(chain, owner, e["market"], MARKET.fn("settleOrder").encode(account_id))


def eligible(chain, account: int, ts: int) -> bool:
    """The contract's own eligibility at block time ts: canLiquidate, and liquidate() either
    passes or reverts for another reason than NotEligibleForLiquidation (they must agree)."""
    market = perps(chain)["market"]
    out = call_at(chain, market, MARKET.fn("canLiquidate").encode(account), ts)
    can = MARKET.fn("canLiquidate").decode(bytes.fromhex(out[2:]))[0]
    try:
        call_at(chain, market, MARKET.fn("liquidate").encode(account), ts, LIQUIDATOR)
        passes = True
    except RuntimeError as err:
        passes = NOT_ELIGIBLE[2:] not in str(err).lower()
    assert bool(can) == passes, (account, can, passes)
    return bool(can)


async def perps_rows(keeper, ts: int) -> list[dict]:
    head = await keeper.read_head()
    await keeper.gather(head)
    return [r for r in await risk.collect(keeper, head, ts) if r["protocol"] == "perps-devnet"]


@ASYNC
async def test_perps_liquidation_prices_are_exact_to_one_feed_step(chain, make_keeper):
    rnd = random.Random(4242)
    prices = {m: chain.view(chain.dep.aggregators[FEED[m]], AGG)[0] * 10**10 for m in (ETH, BTC)}
    opened: dict[int, dict[int, int]] = {}
    for i in range(12):
        account_id = 7001 + i
        owner = abi.to_checksum("0x" + rnd.getrandbits(160).to_bytes(20, "big").hex())
        collateral = rnd.randint(5_000, 60_000) * WAD
        lev = rnd.choice([2, 3, 5, 8, 12, 20])
        markets = [ETH, BTC] if i % 4 == 3 else [rnd.choice([ETH, BTC])]  # every 4th: a position in each
        sizes = {}
        for m in markets:
            notional = collateral * lev // len(markets)
            sign = rnd.choice([1, -1]) if i >= 2 else (1 if i == 0 else -1)  # at least one long and one short
            sizes[m] = sign * (notional * WAD // prices[m])
        open_account(chain, account_id, owner, collateral, sizes)
        opened[account_id] = sizes
    keeper = await make_keeper(dry_run=True, only="perps-devnet")
    ts = int(chain.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16) + 600
    rows = await perps_rows(keeper, ts)
    assert "perps-devnet" not in risk.not_covered(keeper)
    seen = {(int(r["account"]), r["market_id"]) for r in rows}
    assert {(a, m) for a, s in opened.items() for m in s} <= seen
    sides = set()
    for account, sizes in opened.items():
        assert not eligible(chain, account, ts)
        for m, size in sizes.items():
            row = next(r for r in rows if int(r["account"]) == account and r["market_id"] == m)
            long = size > 0
            sym = FEED[m]
            assert row["status"] == "at_risk", row
            assert row["price_units"] == "feed" and row["feed"].lower() == chain.dep.aggregators[sym].lower()
            assert row["asset"] == sym and row["side"] == ("long" if long else "short")
            assert row["direction"] == ("down" if long else "up")
            assert row["price"] * 10**10 == prices[m]
            lp = row["liquidation_price"]
            if long:
                assert 0 < lp < row["price"] and row["distance_pct"] < 0
            else:
                assert lp > row["price"] and row["distance_pct"] > 0
            safe = lp + 1 if long else lp - 1
            assert at_price(chain, sym, lp, lambda: eligible(chain, account, ts)), (account, m, lp)
            assert not at_price(chain, sym, safe, lambda: eligible(chain, account, ts)), (account, m, lp)
            # the row's money at that price: notional, flag reward within the guards, loss only below zero margin
            assert row["debt_usd_e8"] == abs(size) * prices[m] // WAD // 10**10
            assert row["debt_at_liquidation_usd_e8"] == abs(size) * lp * 10**10 // WAD // 10**10
            assert 0 < row["bonus_usd_e8"] <= 500 * 10**8 and row["loss_usd_e8"] >= 0
            sides.add((m, long))
    assert {(ETH, True), (BTC, True)} & sides and {(ETH, False), (BTC, False)} & sides
    assert len(sides) >= 3
    # asset: the name another protocol gives the same feed wins over the feed's description
    adapter = keeper.adapters["perps-devnet"]
    head = await keeper.read_head()
    eth_feed = chain.dep.aggregators["WETH"]
    feeds = await risk._perps_feeds(adapter, head.number, {eth_feed.lower(): "XETH"})
    assert feeds[ETH] == (abi.to_checksum(eth_feed), 10**10, prices[ETH] // 10**10, "XETH")
    assert feeds[BTC][3] == "WBTC"  # "WBTC / USD"
    # the shorts are in the rise curve, the longs in the drop curve, never the other way round
    doc = risk.document(0, rows, risk.DEFAULT_STEPS, [])
    for asset in ("WETH", "WBTC"):
        for key, curves, up in (("drop_pct", doc["assets"], False), ("rise_pct", doc["assets_rise"], True)):
            mine = [r for r in rows if r["asset"] == asset and (r["direction"] == "up") == up]
            if not mine:
                assert asset not in curves
                continue
            last = curves[asset][-1]
            assert last[key] == 50
            k = 50
            hit = [r for r in mine if (r["liquidation_price"] * 100 <= r["price"] * (100 + k) if up
                                       else r["liquidation_price"] * 100 >= r["price"] * (100 - k))]
            assert last["positions"] == len(hit)
            assert last["debt_usd_e8"] == sum(r["debt_at_liquidation_usd_e8"] for r in hit)


def test_rise_curve_counts_up_rows_at_or_below_each_rise_and_the_drop_curve_leaves_them_out():
    rows = [{"asset": "WETH", "price": 1000, "liquidation_price": 900, "debt_usd_e8": 5, "bonus_usd_e8": 1},
            {"asset": "WETH", "price": 1000, "liquidation_price": 1100, "debt_usd_e8": 7, "bonus_usd_e8": 2,
             "direction": "up", "distance_pct": 10.0},
            {"asset": "WETH", "price": 1000, "liquidation_price": 1000, "debt_usd_e8": 3,
             "debt_at_liquidation_usd_e8": 4, "bonus_usd_e8": 1, "direction": "up", "distance_pct": 0.0},
            {"asset": "WETH", "price": 1000, "liquidation_price": 1101, "debt_usd_e8": 11, "bonus_usd_e8": 3,
             "direction": "up", "distance_pct": 10.1},
            {"asset": "WBTC", "price": 1000, "liquidation_price": 1200, "debt_usd_e8": 9, "bonus_usd_e8": 2,
             "direction": "up", "distance_pct": 20.0},
            {"asset": "WETH", "price": 1000, "liquidation_price": None, "debt_usd_e8": 9, "direction": "up"},
            {"asset": "WETH", "price": 1000, "liquidation_price": 950, "debt_usd_e8": 2, "bonus_usd_e8": 1,
             "direction": "down"}]
    rows = [{"protocol": "p", "account": str(i), **r} for i, r in enumerate(rows)]
    up = risk.rise_curve(rows, range(1, 21))
    assert set(up) == {"WETH", "WBTC"}
    w = up["WETH"]
    assert [(p["rise_pct"], p["positions"], p["debt_usd_e8"], p["bonus_usd_e8"]) for p in (w[0], w[9], w[10], w[11])] == \
        [(0, 1, 4, 1), (9, 1, 4, 1), (10, 2, 11, 3), (11, 3, 22, 6)]
    assert [(p["rise_pct"], p["positions"]) for p in up["WBTC"]][19:21] == [(19, 0), (20, 1)]
    down = risk.curve(rows, range(1, 21))
    assert set(down) == {"WETH"}  # the up rows (and WBTC, which only has one) are not in the drop curve
    assert [(p["drop_pct"], p["positions"], p["debt_usd_e8"]) for p in (down["WETH"][0], down["WETH"][5], down["WETH"][10])] == \
        [(0, 0, 0), (5, 1, 2), (10, 2, 7)]
    doc = risk.document(7, rows, range(1, 21), [])
    assert doc["assets"] == down and doc["assets_rise"] == up
    # nearest first by |distance|: the rise rows sort among the others, not ahead of them all
    assert [r.get("distance_pct") for r in doc["positions"]][:3] == [0.0, 10.0, 10.1]
    text = risk.table(doc)
    assert "WETH: debt liquidatable and keeper bonus by price drop" in text
    assert "WETH: debt liquidatable and keeper bonus by price rise" in text
    assert "WBTC: debt liquidatable and keeper bonus by price rise" in text
    assert "+10" in text and "+20" in text


def test_risk_cli_json_lists_perps_rows_on_the_devnet(chain):
    env = clean_env(chain.url)
    env.update({k: "true" for k in only_env("aave-v3-devnet")})  # every protocol on, as devnet.toml has them
    p = _cli("risk", "--config", str(DEVNET_CONFIG), "--json", env=env)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert "perps-devnet" not in doc["not_covered"]
    rows = [r for r in doc["positions"] if r["protocol"] == "perps-devnet"]
    seeded = {(a["id"], int(m)) for a in perps(chain)["accounts"] for m in a["positions"]}
    assert {(int(r["account"]), r["market_id"]) for r in rows} == seeded
    for r in rows:
        assert r["asset"] == FEED[r["market_id"]] and r["price_units"] == "feed"
        assert r["status"] == "at_risk" and r["direction"] == ("down" if r["side"] == "long" else "up")
        assert (r["distance_pct"] > 0) == (r["direction"] == "up")
        assert {"liquidation_price", "debt_usd_e8", "debt_at_liquidation_usd_e8", "loss_usd_e8", "bonus_usd_e8"} <= set(r)
    # the seeded shorts (5x/6x at about +16-18%) are on the rise side, and only there
    rise = doc["assets_rise"]["WETH"]
    assert rise[-1]["rise_pct"] == 50 and rise[20]["positions"] >= 2
    assert all(a["positions"] <= b["positions"] for a, b in zip(rise, rise[1:]))
    weth_down = [r for r in doc["positions"] if r["asset"] == "WETH" and r.get("liquidation_price") is not None
                 and r.get("direction") != "up"]
    last = doc["assets"]["WETH"][-1]
    assert last["positions"] == sum(1 for r in weth_down if r["liquidation_price"] * 2 >= r["price"])
    t = _cli("risk", "--config", str(DEVNET_CONFIG), "--limit", "0", env=env)
    assert t.returncode == 0 and "by price rise" in t.stdout and "perps-devnet" in t.stdout, t.stderr


@ASYNC
async def test_accounts_liquidatable_now_are_at_the_current_answer_and_at_zero_rise(chain, make_keeper):
    ids = [a["id"] for a in perps(chain)["accounts"]]
    (old,) = chain.view(chain.dep.aggregators["WETH"], AGG)
    set_price(chain.url, chain.dep, "WETH", old * 120 // 100)  # the ETH shorts at 5x/6x become eligible
    ts = int(chain.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16) + 12
    now = {a for a in ids if eligible(chain, a, ts)}
    assert now
    keeper = await make_keeper(dry_run=True, only="perps-devnet")
    rows = await perps_rows(keeper, ts)
    hot = [r for r in rows if r["status"] == "liquidatable_now"]
    assert {int(r["account"]) for r in hot} == now
    assert all(r["liquidation_price"] == r["price"] == old * 120 // 100 and r["distance_pct"] == 0
               for r in hot if r["market_id"] == ETH)
    doc = risk.document(0, rows, risk.DEFAULT_STEPS, [])
    up_now = [r for r in hot if r["direction"] == "up" and r["asset"] == "WETH"]
    assert doc["assets_rise"]["WETH"][0]["positions"] == len(up_now) > 0
    assert doc["positions"][0]["status"] == "liquidatable_now"  # nearest first
