"""`keeper stress` (keeper/stress/) covering Maker (dss Dog/Clipper) and perps on forks of the
devnet: a WETH down path in two steps (-10%, then -35%) after seeding a Maker vault that is safe
after the first step and far under water after the second (its auction cannot cover its tab)
and a 7x perps long that goes deeply negative (a shortfall for the insurance fund). The keeper
barks, waits for the falling auction prices (the stress loop advances fork time) and takes;
it flags and liquidates the perps accounts window by window. Every reported number is
recomputed from the fork's events, balances and feeds before the fork is stopped, and the
devnet itself is left as it was."""

from __future__ import annotations

import asyncio
import json

from keeper import abi
from keeper.devnet.jsonrpc import encode_call
from keeper.devnet.prices import get_price

from .conftest import DEVNET_CONFIG, KEEPER_KEY, only_env, rpc

MAKER, PERPS = "maker-devnet", "perps-devnet"
WAD, RAY, RAD = 10**18, 10**27, 10**45
VAT = abi.load("MakerVat")
DOG = abi.load("MakerDog")
CLIP = abi.load("MakerClipper")
SPOT = abi.load("MakerSpotter")
MARKET = abi.load("PerpsMarket")
AGG = abi.load("ChainlinkAggregator")
TAKE, KICK = CLIP.event("Take"), CLIP.event("Kick")
BARK = DOG.event("Bark")
FLAGGED = MARKET.event("AccountFlaggedForLiquidation")
ATTEMPT = MARKET.event("AccountLiquidationAttempt")
CLOSED = MARKET.event("PositionLiquidated")
PATH = "-10,-35"
DEEP_VAULT = abi.to_checksum("0x" + "d33b" * 10)  # the Maker vault whose auction ends uncovered
DEEP_USD, DEEP_RATIO_BP = 400_000, 11_500  # $400k of WETH at collateralization 1.15 x mat
TRADER = abi.to_checksum("0x" + "7e7e" * 10)  # the 7x perps long
TRADER_ACCOUNT, TRADER_COLLATERAL, TRADER_LEVERAGE = 5_001, 20_000 * WAD, 7
ETH_MARKET = 100


def _env(monkeypatch) -> dict[str, str]:
    import os

    env = {**only_env(MAKER), "KEEPER_PRIVATE_KEY": KEEPER_KEY}
    env.update({k: "true" for k, v in only_env(PERPS).items() if v == "true"})
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return dict(os.environ)


def seed(chain) -> dict:
    """The deep vault (ETH-A) and the 7x perps long, opened at today's prices."""
    from .test_maker_keeper import open_vault

    ink, art = open_vault(chain, "ETH-A", DEEP_VAULT, DEEP_USD, DEEP_RATIO_BP)
    p = chain.dep.extras["perps"]
    market, usd = p["market"], p["usd_token"]
    chain.call("anvil_setBalance", [TRADER, hex(10**20)])
    chain.send_as(TRADER, usd, encode_call("mint(address,uint256)", TRADER, TRADER_COLLATERAL))
    chain.send_as(TRADER, usd, encode_call("approve(address,uint256)", market, TRADER_COLLATERAL))
    chain.send_as(TRADER, market, encode_call("createAccount(uint128)", TRADER_ACCOUNT))
    chain.send_as(TRADER, market, encode_call("modifyCollateral(uint128,uint128,int256)", TRADER_ACCOUNT, 0,
                                              TRADER_COLLATERAL))
    price = chain.view(market, MARKET.fn("indexPrice"), ETH_MARKET)[0]
    size = TRADER_COLLATERAL * TRADER_LEVERAGE * WAD // price
    req = (ETH_MARKET, TRADER_ACCOUNT, size, 0, 2**256 - 1, b"\0" * 32, "0x" + "00" * 20)
    chain.send_as(TRADER, market, encode_call("commitOrder((uint128,uint128,int128,uint128,uint256,bytes32,address))", req))
    chain.send_as(TRADER, market, encode_call("settleOrder(uint128)", TRADER_ACCOUNT))
    assert chain.view(market, MARKET.fn("getOpenPositionSize"), TRADER_ACCOUNT, ETH_MARKET)[0] == size
    return {"ink": ink, "art": art, "size": size}


def _call(url: str, to: str, fn, *args, block: str = "latest"):
    out = rpc(url, "eth_call", [{"to": to, "data": "0x" + fn.encode(*args).hex()}, block])
    return fn.decode(bytes.fromhex(out[2:]))


def _logs(url: str, address: str, topic0: str, a: int, b: int) -> list[dict]:
    return rpc(url, "eth_getLogs", [{"address": address, "fromBlock": hex(a), "toBlock": hex(b), "topics": [topic0]}])


def check_against_fork(chain, url: str, doc: dict, seeded: dict) -> None:
    """Every Maker and perps number of the report, recomputed from the fork."""
    mk, pp = chain.dep.extras["maker"], chain.dep.extras["perps"]
    weth_feed = chain.dep.aggregators["WETH"]
    eth_a = mk["ilks"]["ETH-A"]
    ilk_id = b"ETH-A".ljust(32, b"\0")
    market = pp["market"]
    assert doc["covered"] == [MAKER, PERPS] and doc["not_covered"] == []
    assert doc["feeds"] == [weth_feed]  # found through the ETH-A pip's src(): no Aave/Morpho in this config
    assert [k["ilk"] for k in doc["maker_ilks"] if k["moved"]] == ["ETH-A"]
    assert [(x["id"], x["feed"]) for x in doc["perps_markets"]] == [(ETH_MARKET, weth_feed)]

    # the auctions replayed from the fork's own Kick / Take logs: lot and tab after each event
    first = doc["fork_block"] + 1
    last = doc["steps"][-1]["to_block"]
    state: dict[int, dict] = {}
    slices: list[tuple[int, int, int]] = []  # (block, auction, slice [wad]) from lot differences
    owed: dict[int, int] = {}
    logs = _logs(url, eth_a["clipper"], KICK.topic0, first, last) + _logs(url, eth_a["clipper"], TAKE.topic0, first, last)
    logs.sort(key=lambda lg: (int(lg["blockNumber"], 16), int(lg["logIndex"], 16)))
    dues = {BARK.decode(lg)["id"]: BARK.decode(lg)["due"] for lg in _logs(url, mk["dog"], BARK.topic0, first, last)}
    for lg in logs:
        blk = int(lg["blockNumber"], 16)
        if lg["topics"][0] == KICK.topic0:
            e = KICK.decode(lg)
            state[e["id"]] = {"tab": e["tab"], "lot": e["lot"], "kick_tab": e["tab"], "usr": e["usr"]}
            continue
        e = TAKE.decode(lg)
        st = state[e["id"]]
        slices.append((blk, e["id"], st["lot"] - e["lot"]))
        owed[e["id"]] = owed.get(e["id"], 0) + e["owe"]
        assert st["tab"] - e["owe"] == e["tab"]
        st["tab"], st["lot"] = e["tab"], e["lot"]

    fund_prev = None
    deep_uncovered = 0
    for s in doc["steps"]:
        a, b = s["liquidations_from_block"], s["to_block"]
        m, p = s["maker"], s["perps"]
        assert s["bad_debt_aave_usd_e8"] == s["bad_debt_morpho_usd_e8"] == 0 and s["liquidations"] == []
        # Maker: barks, takes, gem sold (from lot differences), uncovered tab, open auctions
        barks = [BARK.decode(lg) for lg in _logs(url, mk["dog"], BARK.topic0, a, b)]
        takes = [(lg, TAKE.decode(lg)) for lg in _logs(url, eth_a["clipper"], TAKE.topic0, a, b)]
        assert m["barks"] == len(barks) == s["positions_liquidated_by"]["maker"]
        assert m["takes"] == len(takes)
        sold = [(blk, w) for blk, _, w in slices if a <= blk <= b]
        assert m["gem_sold_raw"] == sum(w for _, w in sold)  # WETH: 18 decimals, 1 wad = 1 raw unit
        usd = 0
        for blk, w in sold:
            (answer,) = _call(url, weth_feed, AGG.fn("latestAnswer"), block=hex(blk))
            usd += w * answer // WAD
        assert m["gem_sold_usd_e8"] == usd
        assert m["dai_raised_rad"] == sum(e["owe"] for _, e in takes)
        uncovered = [(e["id"], e["tab"]) for _, e in takes if e["lot"] == 0 and e["tab"] > 0]
        assert m["uncovered_tab_rad"] == sum(t for _, t in uncovered)
        assert m["uncovered_usd_e8"] == s["bad_debt_maker_usd_e8"] == sum(t for _, t in uncovered) // 10**37
        for i, t in uncovered:  # an uncovered auction raised its kick tab minus what is left uncovered
            assert owed[i] + t == state[i]["kick_tab"]
            if state[i]["usr"].lower() == DEEP_VAULT.lower():
                deep_uncovered += t
        # the debt part: the Bark's due minus everything the auction raised
        assert m["uncovered_debt_unknown"] == 0
        assert m["uncovered_debt_rad"] == sum(max(0, dues[i] - owed[i]) for i, _ in uncovered)
        assert sorted((u["auction"], u["debt_rad"]) for u in m["uncovered_auctions"]) == sorted(
            (i, max(0, dues[i] - owed[i])) for i, _ in uncovered)
        (ids,) = _call(url, eth_a["clipper"], CLIP.fn("list"), block=hex(b))
        assert sorted(o["id"] for o in m["open_auctions"]) == sorted(ids)
        assert m["open_tab_rad"] == sum(_call(url, eth_a["clipper"], CLIP.fn("sales"), i, block=hex(b))[1] for i in ids)
        # the Spotter saw the step's price: Vat spot = answer (wad) / par / mat
        (answer,) = _call(url, weth_feed, AGG.fn("latestAnswer"), block=hex(b))
        assert answer == s["oracle_after"] == s["oracle_set"]
        spot = _call(url, mk["vat"], VAT.fn("ilks"), ilk_id, block=hex(b))[2]
        mat = _call(url, mk["spotter"], SPOT.fn("ilks"), ilk_id, block=hex(b))[1]
        par = _call(url, mk["spotter"], SPOT.fn("par"), block=hex(b))[0]
        assert spot == answer * 10**10 * 10**9 * RAY // par * RAY // mat
        # perps: flags, shortfall, closes, insurance fund
        flags = [FLAGGED.decode(lg) for lg in _logs(url, market, FLAGGED.topic0, a, b)]
        attempts = [ATTEMPT.decode(lg) for lg in _logs(url, market, ATTEMPT.topic0, a, b)]
        closes = [(lg, CLOSED.decode(lg)) for lg in _logs(url, market, CLOSED.topic0, a, b)]
        assert p["accounts_flagged"] == len(flags) == s["positions_liquidated_by"]["synthetix_perps"]
        assert p["attempts"] == len(attempts) and p["positions_closed"] == len(closes)
        shortfall = sum(-f["availableMargin"] for f in flags if f["availableMargin"] < 0)
        assert p["shortfall_wad"] == shortfall and p["shortfall_usd_e8"] == s["bad_debt_perps_usd_e8"] == shortfall // 10**10
        assert p["shortfall_accounts"] == sorted(f["accountId"] for f in flags if f["availableMargin"] < 0)
        notional = 0
        for lg, e in closes:
            (price,) = _call(url, market, MARKET.fn("indexPrice"), e["marketId"], block=lg["blockNumber"])
            notional += e["amountLiquidated"] * price // 10**28
        assert p["notional_closed_usd_e8"] == notional
        (before,) = _call(url, market, MARKET.fn("insuranceFund"), block=hex(s["from_block"] - 1))
        (after,) = _call(url, market, MARKET.fn("insuranceFund"), block=hex(b))
        assert (p["insurance_fund_before_wad"], p["insurance_fund_after_wad"]) == (before, after)
        # the fund took every flagged account's margin (negative: the shortfall) and paid the rewards
        assert after - before == sum(f["availableMargin"] for f in flags) - sum(x["reward"] for x in attempts)
        assert fund_prev is None or before == fund_prev
        fund_prev = after
        (index,) = _call(url, market, MARKET.fn("indexPrice"), ETH_MARKET, block=hex(b))
        assert index == answer * 10**10  # the perps market moved with the feed by itself
        # totals of the step
        assert s["positions_liquidated"] == len(barks) + len(flags)
        assert s["bad_debt_usd_e8"] == m["uncovered_usd_e8"] + p["shortfall_usd_e8"]
        assert s["volume_usd_e8"] == m["gem_sold_usd_e8"] + p["notional_closed_usd_e8"]
        t0 = int(rpc(url, "eth_getBlockByNumber", [hex(s["from_block"] - 1), False])["timestamp"], 16)
        t1 = int(rpc(url, "eth_getBlockByNumber", [hex(b), False])["timestamp"], 16)
        assert t1 - t0 >= s["time_advanced_s"]
    assert deep_uncovered > 0  # the seeded deep vault's auction ended uncovered
    assert sum(u["tab_rad"] for s in doc["steps"] for u in s["maker"]["uncovered_auctions"]
               if u["urn"] == DEEP_VAULT) == deep_uncovered
    # the 7x long went negative: its shortfall is in the report
    flags = [FLAGGED.decode(lg) for lg in _logs(url, market, FLAGGED.topic0, first, last)]
    mine = [f for f in flags if f["accountId"] == TRADER_ACCOUNT]
    assert len(mine) == 1 and mine[0]["availableMargin"] < 0
    assert any(TRADER_ACCOUNT in s["perps"]["shortfall_accounts"] for s in doc["steps"])
    closed = [CLOSED.decode(lg) for lg in _logs(url, market, CLOSED.topic0, first, last)]
    assert sum(e["amountLiquidated"] for e in closed if e["accountId"] == TRADER_ACCOUNT) == seeded["size"]


def test_maker_and_perps_under_a_weth_path_match_the_fork(chain, monkeypatch):
    from keeper import stress

    seeded = seed(chain)
    env = _env(monkeypatch)
    mk, pp = chain.dep.extras["maker"], chain.dep.extras["perps"]
    devnet_weth = get_price(chain.url, chain.dep, "WETH")
    devnet_head = chain.block_number()
    devnet_fund = chain.view(pp["market"], MARKET.fn("insuranceFund"))[0]
    devnet_urn = chain.view(mk["vat"], VAT.fn("urns"), b"ETH-A".ljust(32, b"\0"), DEEP_VAULT)
    seen: dict[str, str] = {}

    def check(url: str, doc: dict) -> None:
        seen["url"] = url
        check_against_fork(chain, url, doc, seeded)

    doc = asyncio.run(stress.stress(DEVNET_CONFIG, "WETH", stress.parse_path(PATH), impact=False, fork_url=chain.url,
                                    environ=env, on_fork=check))
    print(stress.table(doc))
    assert "url" in seen
    s1, s2 = doc["steps"]
    t = doc["totals"]
    # step 1 (-10%): the lowest seeded vaults are barked and taken, no perps account falls
    assert s1["maker"]["barks"] >= 1 and s1["maker"]["takes"] >= 1 and s1["perps"]["accounts_flagged"] == 0
    # step 2 (-35% more): auctions end uncovered, perps longs go negative
    assert s2["maker"]["uncovered_tab_rad"] > 0 and s2["perps"]["shortfall_wad"] > 0
    assert all(s["time_advanced_s"] > 0 and not s["capped"] for s in doc["steps"])  # the keeper waited for the prices
    assert t["maker"]["open_auctions"] == 0  # every auction was taken within the step
    assert t["bad_debt_usd_e8"] == t["bad_debt_maker_usd_e8"] + t["bad_debt_perps_usd_e8"] > 0
    assert t["maker"]["uncovered_usd_e8"] == t["bad_debt_maker_usd_e8"]
    assert t["perps"]["insurance_fund_before_wad"] == devnet_fund
    assert t["keeper_pnl_usd_e8"] > 0 and t["failed"] == 0
    assert doc["series"]["bad_debt_usd_e8"][-1] == t["bad_debt_usd_e8"]
    table = stress.table(doc)
    assert "maker: " in table and "perps: " in table and "not covered" not in table
    # the devnet itself is untouched
    assert get_price(chain.url, chain.dep, "WETH") == devnet_weth
    assert chain.block_number() == devnet_head
    assert chain.view(pp["market"], MARKET.fn("insuranceFund"))[0] == devnet_fund
    assert chain.view(mk["vat"], VAT.fn("urns"), b"ETH-A".ljust(32, b"\0"), DEEP_VAULT) == devnet_urn
    assert chain.view(mk["ilks"]["ETH-A"]["clipper"], CLIP.fn("count"))[0] == 0


def test_every_devnet_protocol_through_the_command_line(chain, monkeypatch, capsys):
    """The whole devnet config (Aave, Aave 3.2, Morpho, Maker, perps): nothing is left out,
    the totals add up over the protocols, JSON and the table."""
    from keeper import stress
    from keeper.cli import main

    monkeypatch.setenv("KEEPER_PRIVATE_KEY", KEEPER_KEY)
    capsys.readouterr()
    code = main(["stress", "--config", str(DEVNET_CONFIG), "--asset", "WETH", "--path", "-30", "--fork-url", chain.url,
                 "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    doc = json.loads(out)
    print(stress.table(doc))
    assert doc["not_covered"] == []
    kinds = {"aave_v3", "morpho_blue", "maker", "synthetix_perps"}
    (s,) = doc["steps"]
    assert set(s["positions_liquidated_by"]) == kinds
    assert all(s["positions_liquidated_by"][k] > 0 for k in kinds), s["positions_liquidated_by"]
    assert s["positions_liquidated"] == sum(s["positions_liquidated_by"].values())
    assert s["bad_debt_usd_e8"] == sum(s[f"bad_debt_{k}_usd_e8"] for k in ("aave", "morpho", "maker", "perps"))
    assert s["volume_usd_e8"] == s["sold_usd_e8"] + s["maker"]["gem_sold_usd_e8"] + s["perps"]["notional_closed_usd_e8"]
    assert s["perps"]["shortfall_wad"] > 0


def test_auctions_still_open_at_the_end_of_a_step_are_reported_open_not_as_bad_debt(chain, monkeypatch):
    """Two keeper cycles only: the keeper barks, the auctions have not fallen to its limit yet
    when the step is cut short. They are reported open with their whole tab, which is not bad
    debt (it may still be covered)."""
    from keeper import stress

    env = _env(monkeypatch)
    mk = chain.dep.extras["maker"]
    clipper = mk["ilks"]["ETH-A"]["clipper"]
    seen: dict = {}

    def check(url: str, doc: dict) -> None:
        (s,) = doc["steps"]
        b = hex(s["to_block"])
        (ids,) = _call(url, clipper, CLIP.fn("list"), block=b)
        kicks = {KICK.decode(lg)["id"]: KICK.decode(lg) for lg in _logs(url, clipper, KICK.topic0, doc["fork_block"] + 1,
                                                                         s["to_block"])}
        seen["open"] = [(i, _call(url, clipper, CLIP.fn("sales"), i, block=b)[1:3]) for i in ids]
        seen["kicks"] = kicks

    doc = asyncio.run(stress.stress(DEVNET_CONFIG, "WETH", stress.parse_path("-30"), fork_url=chain.url, environ=env,
                                    on_fork=check, max_cycles=2))
    (s,) = doc["steps"]
    m = s["maker"]
    assert s["capped"] and m["barks"] >= 1 and m["takes"] == 0
    assert sorted((o["id"], (o["tab_rad"], o["lot_wad"])) for o in m["open_auctions"]) == sorted(
        (i, tuple(v)) for i, v in seen["open"])
    assert len(m["open_auctions"]) == m["barks"]
    assert all(o["tab_rad"] == seen["kicks"][o["id"]]["tab"] for o in m["open_auctions"])  # nothing raised yet
    assert m["open_tab_rad"] == sum(o["tab_rad"] for o in m["open_auctions"]) > 0
    assert m["open_tab_usd_e8"] == m["open_tab_rad"] // 10**37
    assert s["bad_debt_maker_usd_e8"] == 0 and m["uncovered_tab_rad"] == 0
    assert doc["totals"]["maker"]["open_auctions"] == len(m["open_auctions"])
    assert "open" in stress.table(doc)
