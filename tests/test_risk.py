"""`keeper risk` (keeper/risk.py): the reported liquidation prices, checked against the real
bytecode on the devnet. For randomized positions, the feed set (keeper/devnet/prices.py
set_price) to exactly the reported liquidation price makes the position liquidatable
(Aave getUserAccountData HF < 1; Morpho's liquidate gets past its health check; a Maker
vault, the Spotter poked, fails vat ink * spot >= art * rate and Dog.bark gets past
"Dog/not-unsafe") and one
step of the feed above it does not. Time is pinned: the risk rows are computed for block
time T and the chain is asked with the eth_call block override {"time": T}."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from keeper import abi, risk
from keeper.devnet.prices import set_price

from .conftest import DEVNET_CONFIG, REPO, only_env
from .test_cli import clean_env
from .test_maker_keeper import DOG, OTHER, VAT
from .test_maker_keeper import ext as maker_ext
from .test_maker_keeper import ilk_id
from .test_morpho_keeper import BLUE, SINK, extras, market, open_position as morpho_open, params

ASYNC = pytest.mark.asyncio(loop_scope="session")
POOL = abi.load("AavePool")
WAD = 10**18


def call_at(chain, to: str, data: bytes, ts: int, sender: str | None = None) -> str:
    tx = {"to": to, "data": "0x" + data.hex(), **({"from": sender} if sender else {})}
    return chain.call("eth_call", [tx, "latest", None, {"time": hex(ts)}])


def aave_hf(chain, user: str, ts: int) -> int:
    out = call_at(chain, chain.dep.pool, POOL.fn("getUserAccountData").encode(user), ts)
    return POOL.fn("getUserAccountData").decode(bytes.fromhex(out[2:]))[5]


def morpho_unhealthy(chain, m: dict, who: str, ts: int) -> bool:
    try:
        call_at(chain, extras(chain)["morpho"], BLUE.fn("liquidate").encode(params(m), who, 0, 1, b""), ts, SINK)
    except RuntimeError as e:
        return "position is healthy" not in str(e)
    return True


def maker_barkable(chain, ilk: str, urn: str, ts: int) -> bool:
    """vat.urns against vat.ilks (Dog.bark's test), and Dog.bark itself gets past it."""
    e = maker_ext(chain)
    _, rate, spot, _, _ = chain.view(e["vat"], VAT.fn("ilks"), ilk_id(ilk))
    ink, art = chain.view(e["vat"], VAT.fn("urns"), ilk_id(ilk), urn)
    unsafe = spot > 0 and ink * spot < art * rate
    try:
        call_at(chain, e["dog"], DOG.fn("bark").encode(ilk_id(ilk), urn, OTHER), ts, OTHER)
        bark = True
    except RuntimeError as err:
        bark = "Dog/not-unsafe" not in str(err)
    assert bark == unsafe
    return unsafe


def at_price(chain, symbol: str, answer: int, check):
    """check() after the feed of `symbol` is set to `answer`; the chain put back after."""
    snap = chain.call("evm_snapshot")
    try:
        set_price(chain.url, chain.dep, symbol, answer)
        return check()
    finally:
        chain.call("evm_revert", [snap])
        # anvil keeps its fee state across a revert (conftest.chain): the next base fee as the block says,
        # or the fees ratchet up check after check until a send is priced out
        base = chain.call("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"]
        chain.call("anvil_setNextBlockBaseFeePerGas", [base])


async def rows_at(keeper, ts: int) -> list[dict]:
    head = await keeper.read_head()
    await keeper.gather(head)
    return await risk.collect(keeper, head, ts)


@ASYNC
async def test_aave_liquidation_prices_are_exact_to_one_feed_step(chain, make_keeper):
    rnd = random.Random(1313)
    users = []
    for i in range(4):
        who = "0x" + rnd.getrandbits(160).to_bytes(20, "big").hex()
        who = abi.to_checksum(who)
        colls = rnd.sample(["WETH", "WBTC", "LINK"], rnd.choice([1, 2]))
        supply = {}
        value_e8 = 0
        for sym in colls:
            usd = rnd.randint(20_000, 200_000)
            (p,) = chain.view(chain.dep.aggregators[sym], abi.load("ChainlinkAggregator").fn("latestAnswer"))
            supply[sym] = usd * 10**8 * 10 ** chain.dep.decimals[sym] // p
            value_e8 += usd * 10**8
        borrow_usd = value_e8 * rnd.randint(45, 65) // 100 // 10**8  # below the LTVs, HF ~1.1-1.6
        chain.open_position(who, supply, ("USDC", borrow_usd * 10**6))
        users.append((who, colls))
    keeper = await make_keeper(dry_run=True, only="aave-v3-devnet")
    ts = int(chain.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16) + 600
    rows = [r for r in await rows_at(keeper, ts) if r["protocol"] == "aave-v3-devnet"]
    checked = 0
    for who, colls in users:
        for sym in colls:
            row = next(r for r in rows if r["account"].lower() == who.lower() and sym in r["assets"])
            assert row["price_units"] == "feed" and row["feed"].lower() == chain.dep.aggregators[sym].lower()
            if row["status"] != "at_risk":
                assert row["status"] == "safe" and len(colls) > 1  # the other collateral alone covers the debt
                continue
            lp = row["liquidation_price"]
            assert 0 < lp < row["price"] and row["distance_pct"] < 0
            assert at_price(chain, sym, lp, lambda: aave_hf(chain, who, ts)) < WAD
            assert at_price(chain, sym, lp + 1, lambda: aave_hf(chain, who, ts)) >= WAD
            assert row["bonus_usd_e8"] > 0 and row["debt_at_liquidation_usd_e8"] > 0
            checked += 1
    assert checked >= 3


@ASYNC
async def test_morpho_liquidation_prices_are_exact_to_one_feed_step(chain, make_keeper):
    rnd = random.Random(1314)
    picks = []
    for i, label in enumerate(["WETH/USDC", "WBTC/USDC", "LINK/WETH"]):
        m = market(chain, label)
        coll_sym, loan_sym = chain.dep.symbol_of(m["collateral_token"]), chain.dep.symbol_of(m["loan_token"])
        who = abi.to_checksum("0x" + rnd.getrandbits(160).to_bytes(20, "big").hex())
        agg = abi.load("ChainlinkAggregator").fn("latestAnswer")
        (pc,), (pl,) = chain.view(chain.dep.aggregators[coll_sym], agg), chain.view(chain.dep.aggregators[loan_sym], agg)
        usd = rnd.randint(10_000, 100_000)
        coll = usd * 10**8 * 10 ** chain.dep.decimals[coll_sym] // pc
        borrow = usd * rnd.randint(50, 80) // 100 * 10**8 * 10 ** chain.dep.decimals[loan_sym] // pl
        morpho_open(chain, m, who, coll, borrow)
        picks.append((m, who, coll_sym))
    keeper = await make_keeper(dry_run=True, only="morpho-devnet")
    ts = int(chain.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16) + 600
    rows = [r for r in await rows_at(keeper, ts) if r["protocol"] == "morpho-devnet"]
    for m, who, sym in picks:
        row = next(r for r in rows if r["account"].lower() == who.lower() and r["market_id"] == m["id"])
        assert row["status"] == "at_risk" and row["price_units"] == "feed"
        assert row["feed"].lower() == chain.dep.aggregators[sym].lower()
        lp = row["liquidation_price"]
        assert 0 < lp < row["price"]
        assert at_price(chain, sym, lp, lambda: morpho_unhealthy(chain, m, who, ts))
        assert not at_price(chain, sym, lp + 1, lambda: morpho_unhealthy(chain, m, who, ts))
        assert row["bonus_usd_e8"] > 0


def test_curve_counts_positions_at_or_above_each_drop():
    rows = [{"asset": "WETH", "price": 1000, "liquidation_price": 900, "debt_usd_e8": 5, "bonus_usd_e8": 1},
            {"asset": "WETH", "price": 1000, "liquidation_price": 1000, "debt_usd_e8": 7, "bonus_usd_e8": 2},
            {"asset": "WETH", "price": 1000, "liquidation_price": None, "debt_usd_e8": 9}]
    c = risk.curve(rows, range(1, 21))["WETH"]
    assert [(p["drop_pct"], p["positions"], p["debt_usd_e8"], p["bonus_usd_e8"]) for p in (c[0], c[9], c[10], c[20])] == \
        [(0, 1, 7, 2), (9, 1, 7, 2), (10, 2, 12, 3), (20, 2, 12, 3)]
    data = risk.png({"assets": {"WETH": c}})
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and b"IEND" in data


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "keeper", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)


def test_risk_cli_json_and_png_on_the_devnet(chain, tmp_path):
    env = clean_env(chain.url)
    env.update({k: "true" for k in only_env("aave-v3-devnet")})  # every protocol on, as devnet.toml has them
    out = tmp_path / "risk.png"
    p = _cli("risk", "--config", str(DEVNET_CONFIG), "--json", "--png", str(out), env=env)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    protocols = {r["protocol"] for r in doc["positions"]}
    assert {"aave-v3-devnet", "morpho-devnet"} <= protocols
    for r in doc["positions"]:
        assert {"account", "asset", "price", "liquidation_price", "status", "debt_usd_e8", "bonus_usd_e8"} <= set(r)
    assert "WETH" in doc["assets"] and doc["assets"]["WETH"][-1]["drop_pct"] == 50
    weth = doc["assets"]["WETH"]
    assert all(a["debt_usd_e8"] <= b["debt_usd_e8"] for a, b in zip(weth, weth[1:]))
    assert weth[-1]["debt_usd_e8"] > 0 and weth[-1]["bonus_usd_e8"] > 0
    assert out.read_bytes().startswith(b"\x89PNG")
    t = _cli("risk", "--config", str(DEVNET_CONFIG), env=env)
    assert t.returncode == 0 and "by price drop" in t.stdout, t.stderr


@pytest.mark.parametrize("args", [["risk"], ["risk", "--config", str(DEVNET_CONFIG), "--png", "/no/such/dir/x.png"],
                                  ["risk", "--config", str(DEVNET_CONFIG), "--bogus"],
                                  ["risk", "--config", "/no/such/config.toml"]])
def test_risk_cli_mistakes_are_one_line_exit_2(args):
    p = _cli(*args, env=clean_env("http://127.0.0.1:9"))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")


@ASYNC
async def test_maker_liquidation_prices_are_exact_to_one_feed_step(chain, make_keeper):
    e = maker_ext(chain)
    keeper = await make_keeper(dry_run=True, only="maker-devnet")
    ts = int(chain.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16) + 600
    rows = {r["account"].lower(): r for r in await rows_at(keeper, ts) if r["protocol"] == "maker-devnet"}
    picks = []
    for ilk in sorted(e["ilks"]):
        picks += [v for v in e["vaults"] if v["ilk"] == ilk and v["urn"].lower() in rows][:2]
    assert len(picks) >= 4
    for v in picks:
        row, ilk = rows[v["urn"].lower()], v["ilk"]
        sym = e["ilks"][ilk]["gem_symbol"]
        assert row["status"] == "at_risk" and row["price_units"] == "feed" and not row["spot_stale"]
        assert row["feed"].lower() == chain.dep.aggregators[sym].lower() and row["asset"] == sym
        lp = row["liquidation_price"]
        assert 0 < lp < row["price"] and row["distance_pct"] < 0
        assert at_price(chain, sym, lp, lambda: maker_barkable(chain, ilk, v["urn"], ts))
        assert not at_price(chain, sym, lp + 1, lambda: maker_barkable(chain, ilk, v["urn"], ts))
        assert row["bonus_usd_e8"] > 0 and row["debt_at_liquidation_usd_e8"] > 0
    assert "maker-devnet" not in risk.not_covered(keeper)
