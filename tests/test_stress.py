"""`keeper stress` (keeper/stress/) on forks of the devnet: a seeded ladder of large LINK-backed
Aave positions, one price step; with --impact on the keeper's own sales move the LINK pools,
the oracle follows, and more positions fall (a cascade) than with --impact off. The reported
numbers are checked against the fork's events and balances before the fork is stopped."""

from __future__ import annotations

import asyncio
import json
from fractions import Fraction

import pytest

from keeper import abi
from keeper.devnet.prices import get_price, set_price

from .conftest import DEVNET_CONFIG, KEEPER_KEY, only_env, rpc

AAVE = "aave-v3-devnet"
MORPHO = "morpho-devnet"
LIQ = abi.load("AavePool").event("LiquidationCall")
POOL = abi.load("AavePool")
ERC20 = abi.load("ERC20")
AGG = abi.load("ChainlinkAggregator")
# Aave: (LINK collateral, liquidation price as a fraction of today's), liquidatable after -3%,
# -6.5%, -10%, ... of LINK: only the first on a -5% path unless the liquidations move the price
LADDER = [(60_000, Fraction(970 - 35 * i, 1000)) for i in range(8)]
# Morpho LINK/WETH (LLTV 94.5%, incentive 1.0168): liquidatable after -7% .. -15%; a gap of
# about 4% past that before the liquidation leaves bad debt
MORPHO_LADDER = [(5_000, Fraction(93 - 2 * i, 100)) for i in range(5)]
LINK_LT = Fraction(75, 100)


def _addr(i: int) -> str:
    return abi.to_checksum("0x" + f"{0x57e55000 + i:040x}")


def seed_ladder(chain) -> list[str]:
    """Borrowers with LINK collateral and USDC debt whose liquidation prices step down the
    LADDER. They are opened at a higher LINK price (Aave's LTV is below the threshold), then
    the feed is put back (the pools never moved)."""
    dep = chain.dep
    usdc = dep.tokens["USDC"]
    supplier = _addr(99)
    chain.call("anvil_setBalance", [supplier, hex(10**20)])
    big = 50_000_000 * 10**6
    chain.send_as(supplier, usdc, ERC20.fn("mint(uint256)").encode(big))
    chain.send_as(supplier, usdc, ERC20.fn("approve").encode(dep.pool, big))
    chain.send_as(supplier, dep.pool, POOL.fn("supply").encode(usdc, big, supplier, 0))
    price = get_price(chain.url, dep, "LINK")
    set_price(chain.url, dep, "LINK", price * 2)  # room under the LTV to open them
    users = []
    for i, (qty, r) in enumerate(LADDER):
        who = _addr(i)
        # debt such that the position is liquidatable below r * price: debt = LT * qty * r * price
        debt_usd_e8 = int(LINK_LT * qty * r * price)
        chain.open_position(who, {"LINK": qty * 10**18}, ("USDC", debt_usd_e8 // 100))
        users.append(who)
    set_price(chain.url, dep, "LINK", price)
    # Morpho LINK/WETH: a lender, then borrowers at LLTV * r of their collateral's value
    from .test_morpho_keeper import BLUE, extras, market, open_position, params

    m = market(chain, "LINK/WETH")
    morpho, weth = extras(chain)["morpho"], dep.tokens["WETH"]
    lots = 5_000 * 10**18
    chain.send_as(supplier, weth, ERC20.fn("mint(uint256)").encode(lots))
    chain.send_as(supplier, weth, ERC20.fn("approve").encode(morpho, lots))
    chain.send_as(supplier, morpho, BLUE.fn("supply").encode(params(m), lots, 0, supplier, b""))
    weth_price = get_price(chain.url, dep, "WETH")
    for i, (qty, r) in enumerate(MORPHO_LADDER):
        who = _addr(50 + i)
        debt = int(Fraction(m["lltv"], 10**18) * qty * 10**18 * price * r / weth_price)
        open_position(chain, m, who, qty * 10**18, debt)
        users.append(who)
    return users


def _stress_env(monkeypatch) -> dict[str, str]:
    import os

    env = {**only_env(AAVE), "KEEPER_PRIVATE_KEY": KEEPER_KEY}
    env.update({k: "true" for k, v in only_env(MORPHO).items() if v == "true"})
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return dict(os.environ)


def check_against_fork(chain, url: str, doc: dict) -> None:
    """Every reported number, recomputed from the fork's events, balances and feeds."""
    from keeper.protocols.morpho_blue.calls import EV_LIQUIDATE

    from .test_morpho_keeper import extras

    dep = chain.dep
    link, weth = dep.tokens["LINK"], dep.tokens["WETH"]
    keeper_side = {a.lower() for a in (abi.to_checksum("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),)}
    for s in doc["steps"]:
        logs = rpc(url, "eth_getLogs", [{"address": dep.pool, "fromBlock": hex(s["liquidations_from_block"]),
                                         "toBlock": hex(s["to_block"]), "topics": [LIQ.topic0]}])
        events = [LIQ.decode(lg) for lg in logs]
        mlogs = rpc(url, "eth_getLogs", [{"address": extras(chain)["morpho"], "fromBlock": hex(s["liquidations_from_block"]),
                                          "toBlock": hex(s["to_block"]), "topics": [EV_LIQUIDATE.topic0]}])
        m_link = {m["id"].lower() for m in extras(chain)["markets"] if m["collateral_token"].lower() == link.lower()}
        mevents = [(lg, EV_LIQUIDATE.decode(lg)) for lg in mlogs]
        assert s["positions_liquidated"] == len(events) + len(mevents)
        assert s["seized_raw"] == sum(e["liquidatedCollateralAmount"] for e in events
                                      if e["collateralAsset"].lower() == link.lower()) + \
            sum(e["seizedAssets"] for lg, e in mevents if lg["topics"][1].lower() in m_link)
        liquidators = {e["liquidator"].lower() for e in events} | {e["caller"].lower() for _, e in mevents}
        morpho_bad = 0
        for lg, e in mevents:  # LINK/WETH: bad debt in WETH, at the WETH feed of its block
            (w,) = AGG.fn("latestAnswer").decode(bytes.fromhex(rpc(url, "eth_call", [
                {"to": dep.aggregators["WETH"], "data": "0x" + AGG.fn("latestAnswer").encode().hex()}, lg["blockNumber"]])[2:]))
            morpho_bad += e["badDebtAssets"] * w // 10**18
        assert s["bad_debt_morpho_usd_e8"] == morpho_bad
        assert liquidators <= {x.lower() for x in doc["holders"]}  # the keeper's own contracts did them all
        # the oracle and the deepest pool (the V2 LINK/WETH pair) at the step's last block
        at = hex(s["to_block"])
        (link_answer,) = AGG.fn("latestAnswer").decode(bytes.fromhex(rpc(url, "eth_call", [
            {"to": dep.aggregators["LINK"], "data": "0x" + AGG.fn("latestAnswer").encode().hex()}, at])[2:]))
        assert s["oracle_after"] == link_answer
        pair = doc["deepest_pool"].split()[1]
        raw = bytes.fromhex(rpc(url, "eth_call", [{"to": pair, "data": "0x0902f1ac"}, at])[2:])
        r0, r1 = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big")
        (weth_answer,) = AGG.fn("latestAnswer").decode(bytes.fromhex(rpc(url, "eth_call", [
            {"to": dep.aggregators["WETH"], "data": "0x" + AGG.fn("latestAnswer").encode().hex()}, at])[2:]))
        r_link, r_weth = (r0, r1) if int(link, 16) < int(weth, 16) else (r1, r0)
        assert s["pool_price_after_usd_e8"] == r_weth * weth_answer // r_link  # both 18 decimals
        # bad debt: the liquidated accounts left with debt and no collateral
        bad = 0
        for u in {e["user"] for e in events}:
            out = rpc(url, "eth_call", [{"to": dep.pool, "data": "0x" + POOL.fn("getUserAccountData").encode(u).hex()}, at])
            coll, debt = POOL.fn("getUserAccountData").decode(bytes.fromhex(out[2:]))[:2]
            if coll == 0:
                bad += debt
        assert s["bad_debt_aave_usd_e8"] == bad
        assert s["bad_debt_usd_e8"] == bad + morpho_bad
    # everything seized was sold: the keeper and its contracts hold no more LINK than before
    assert all(s["sold_raw"] == s["seized_raw"] for s in doc["steps"])
    assert keeper_side <= {x.lower() for x in doc["holders"]}


def test_impact_on_cascades_liquidates_more_and_the_numbers_match_the_fork(chain, monkeypatch, tmp_path, capsys):
    from keeper import stress
    from keeper.cli import main

    seed_ladder(chain)
    env = _stress_env(monkeypatch)
    devnet_link = get_price(chain.url, chain.dep, "LINK")
    devnet_head = chain.block_number()
    seen: dict[str, str] = {}

    def check(url: str, doc: dict) -> None:
        seen["url"] = url
        check_against_fork(chain, url, doc)

    on = asyncio.run(stress.stress(DEVNET_CONFIG, "LINK", stress.parse_path("-5"), impact=True, fork_url=chain.url,
                                   environ=env, on_fork=check, max_cycles=40))
    assert "url" in seen
    with pytest.raises(OSError):  # the fork is stopped
        rpc(seen["url"], "eth_chainId")

    # the same path with impact off, through the command line (JSON and PNG)
    png = tmp_path / "stress.png"
    capsys.readouterr()
    code = main(["stress", "--config", str(DEVNET_CONFIG), "--asset", "LINK", "--path", "-5", "--impact", "off",
                 "--fork-url", chain.url, "--json", "--png", str(png)])
    out = capsys.readouterr().out
    assert code == 0, out
    off = json.loads(out)
    print(stress.table(on))
    print(stress.table(off))
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    t_on, t_off = on["totals"], off["totals"]
    assert t_off["positions_liquidated"] >= 1
    assert t_on["positions_liquidated"] > t_off["positions_liquidated"], (t_on, t_off)
    assert t_on["bad_debt_usd_e8"] >= t_off["bad_debt_usd_e8"]
    assert t_on["bad_debt_usd_e8"] > 0  # the cascade gapped past some positions
    assert not on["steps"][0]["capped"] and not off["steps"][0]["capped"]  # both ran until nothing was left
    assert t_on["sold_raw"] > t_off["sold_raw"]
    # impact off: the oracle stays on the path; on: it followed the pool down
    assert off["steps"][0]["oracle_after"] == off["steps"][0]["oracle_set"] == devnet_link * 95 // 100
    assert on["steps"][0]["oracle_after"] < on["steps"][0]["oracle_set"]
    assert on["steps"][0]["pool_price_after_usd_e8"] < on["steps"][0]["pool_price_before_usd_e8"]
    # the devnet itself is untouched
    assert get_price(chain.url, chain.dep, "LINK") == devnet_link
    assert chain.block_number() == devnet_head


def test_bad_paths_are_one_error_line_and_exit_2(capsys):
    from keeper.cli import main

    for path, says in (("-5,x", "not a percentage"), ("-100", "out of range"), ("", "not a percentage")):
        assert main(["stress", "--config", str(DEVNET_CONFIG), "--asset", "LINK", "--path", path]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --path") and says in err[0], err


def test_parse_path_accepts_negative_lists():
    from keeper.stress import parse_path

    assert parse_path("-5,-5,-10") == [-5, -5, -10]
    assert parse_path("-2.5, 3") == [Fraction(-5, 2), 3]
    from keeper.cli import _parser

    args = _parser().parse_args(["stress", "--config", "c", "--asset", "weth", "--path", "-5,-5,-10"])
    assert (args.asset, args.path, args.impact) == ("WETH", "-5,-5,-10", "off")


def test_a_feed_that_is_not_settable_gets_the_stub_and_balances_are_written(chain):
    """set_feed on a feed whose owner cannot set it (here: code with no owner()/setAnswer)
    installs the SettableAggregator stub in place; give() finds a token's balance slot."""
    from keeper import stress

    feed = chain.dep.aggregators["WBTC"]
    multicall = "0xcA11bde05977b3631167028862bE2a173976CA11"
    chain.call("anvil_setCode", [feed, chain.call("eth_getCode", [multicall, "latest"])])
    assert stress.set_feed(chain.url, feed, 12_345 * 10**8) == "stub"
    assert stress._answer(chain.url, feed) == 12_345 * 10**8
    (_, answer, *_rest) = chain.view(feed, AGG.fn("latestRoundData"))
    assert answer == 12_345 * 10**8
    assert stress.set_feed(chain.url, chain.dep.aggregators["LINK"], 14 * 10**8) == "owner"  # the devnet's own
    who = _addr(77)
    for sym in ("USDC", "LINK", "WETH"):
        stress.give(chain.url, chain.dep.tokens[sym], who, 10**30 + 7)
        assert chain.balance(sym, who) == 10**30 + 7
