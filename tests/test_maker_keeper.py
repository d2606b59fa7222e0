"""The keeper against the devnet's Maker/Sky Liquidation 2.0 system (contracts/dss/): bark,
take at the limit, flash-take, partial takes, redo, competing keepers, dry-run, bad config."""

from __future__ import annotations

import tomllib
from decimal import Decimal

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from keeper import abi, strategy
from keeper.protocols.maker import math as mm
from keeper.protocols.maker.math import RAD, RAY, WAD

from .conftest import DEVNET_CONFIG, KEEPER, KEEPER_KEY

pytestmark = pytest.mark.asyncio(loop_scope="session")
NAME = "maker-devnet"
VAT = abi.load("MakerVat")
DOG = abi.load("MakerDog")
CLIP = abi.load("MakerClipper")
ERC20 = abi.load("ERC20")
QUOTER = abi.load("UniswapV3QuoterV2")
SPOT = abi.load("MakerSpotter")
MAKER_DEPLOYER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"  # anvil account 5: the dss wards
OTHER = "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"  # anvil account 7: an outside barker
KEEPER_B = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"  # anvil account 3
KEEPER_B_KEY = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6"


def ext(chain) -> dict:
    return chain.dep.extras["maker"]


def ilk_id(name: str) -> bytes:
    return name.encode().ljust(32, b"\0")


def vat_dai(chain, who: str) -> int:
    return chain.view(ext(chain)["vat"], VAT.fn("dai"), who)[0]


def vat_gem(chain, ilk: str, who: str) -> int:
    return chain.view(ext(chain)["vat"], VAT.fn("gem"), ilk_id(ilk), who)[0]


def jump(chain, seconds: int) -> None:
    chain.call("evm_increaseTime", [seconds])
    chain.call("evm_mine")


def clip_events(chain, ilk: str, event: str, from_block: int) -> list[dict]:
    ev = CLIP.event(event)
    logs = chain.call("eth_getLogs", [{"address": ext(chain)["ilks"][ilk]["clipper"], "fromBlock": hex(from_block),
                                       "toBlock": "latest", "topics": [ev.topic0]}])
    return [ev.decode(lg) for lg in logs]


def unsafe_urns(chain, ilk: str) -> list[str]:
    e = ext(chain)
    _, rate, spot, _, _ = chain.view(e["vat"], VAT.fn("ilks"), ilk_id(ilk))
    out = []
    for v in e["vaults"]:
        if v["ilk"] != ilk:
            continue
        ink, art = chain.view(e["vat"], VAT.fn("urns"), ilk_id(ilk), v["urn"])
        if mm.is_unsafe(ink, art, spot, rate):
            out.append(v["urn"])
    return out


def bark_all(chain, ilk: str) -> list[int]:
    """Bark every unsafe urn of `ilk` from an outside account; returns the auction ids."""
    start = chain.block_number()
    for urn in unsafe_urns(chain, ilk):
        chain.send_as(OTHER, ext(chain)["dog"], DOG.fn("bark").encode(ilk_id(ilk), urn, OTHER))
    return [k["id"] for k in clip_events(chain, ilk, "Kick", start + 1)]


def set_vat_dai(chain, who: str, rad: int) -> None:
    """Give `who` exactly `rad` of Vat dai (suck from the wards' account, or move the excess away)."""
    cur = vat_dai(chain, who)
    e = ext(chain)
    if cur > rad:
        chain.send_as(who, e["vat"], VAT.fn("move").encode(who, e["vow"], cur - rad))
    elif cur < rad:
        chain.send_as(MAKER_DEPLOYER, e["vat"], VAT.fn("suck").encode(e["vow"], who, rad - cur))
    assert vat_dai(chain, who) == rad


def feed_price(chain, ilk: str) -> int:
    """The ilk's oracle price [ray] as the Spotter last saw it (spot * mat), what a held take is valued at."""
    e = ext(chain)
    spot = chain.view(e["vat"], VAT.fn("ilks"), ilk_id(ilk))[2]
    mat = chain.view(e["spotter"], SPOT.fn("ilks"), ilk_id(ilk))[1]
    return spot * mat // RAY


def quote_dai(chain, gem: str, amount: int) -> int:
    """What `amount` of the gem sells for on the devnet's DAI pool (QuoterV2, 0.3%)."""
    fn = QUOTER.fn("quoteExactInputSingle")
    return chain.view(chain.dep.uniswap_quoter_v2, fn, (gem, ext(chain)["dai"], amount, 3000, 0))[0]


@pytest_asyncio.fixture(loop_scope="session")
async def make_maker(chain, tmp_path, monkeypatch):
    """An in-process keeper running only the Maker adapter (enabled), from config/devnet.toml."""
    from keeper.app import Keeper
    from keeper.config import parse_config

    made: list = []

    async def make(dry_run: bool = False, *, address: str = KEEPER, key: str = KEEPER_KEY, aave: bool = False,
                   **maker_overrides) -> Keeper:
        data = tomllib.loads(DEVNET_CONFIG.read_text(), parse_float=Decimal)
        maker = next(p for p in data["protocols"] if p["kind"] == "maker")
        maker["enabled"] = True
        for k, v in maker_overrides.items():
            if v is None:
                maker.pop(k, None)
            else:
                maker[k] = v
        protocols = [maker]
        if aave:
            a = next(p for p in data["protocols"] if p["kind"] == "aave_v3")
            a["routes"] = ["inventory"]
            protocols.insert(0, a)
        data["protocols"] = protocols
        data["chain"]["rpc_url"] = chain.url
        data["keeper"]["address"] = address
        env_name = f"MAKER_TEST_KEY_{len(made)}"
        monkeypatch.setenv(env_name, key)
        data["keeper"]["private_key_env"] = env_name
        data["keeper"]["journal"] = str(tmp_path / f"journal-{len(made)}.jsonl")
        k = Keeper(parse_config(data), dry_run=dry_run)
        made.append(k)
        await k.start()
        return k

    yield make
    for k in made:
        await k.close()


async def cycle(keeper):
    return await keeper.cycle(await keeper.read_head())


def maker(keeper):
    return keeper.adapters[NAME]


def of(outs, action: str, status: str = "confirmed") -> list:
    return [o for o in outs if o.status == status and o.realized.get("action", "").endswith(action)]


# -- bark ---------------------------------------------------------------------------------------------
async def test_bark_every_unsafe_vault_and_earn_tip_plus_chip_times_tab_exactly(chain, make_maker):
    keeper = await make_maker()
    assert await cycle(keeper) == []  # all vaults safe before the shock
    assert len(maker(keeper).urns) == 24
    chain.shock("WETH", -20)
    unsafe = set(unsafe_urns(chain, "ETH-A"))
    assert len(unsafe) >= 2 and unsafe_urns(chain, "WBTC-A") == []
    before, start = vat_dai(chain, KEEPER), chain.block_number()
    outs = await cycle(keeper)
    barks = of(outs, "bark")
    assert {o.realized["urn"] for o in barks} == unsafe and len(outs) == len(barks)
    kicks = clip_events(chain, "ETH-A", "Kick", start + 1)
    assert len(kicks) == len(unsafe) and {k["kpr"].lower() for k in kicks} == {KEEPER.lower()}
    tip, chip = 300 * RAD, WAD // 1000
    paid = sum(tip + k["tab"] * chip // WAD for k in kicks)
    assert vat_dai(chain, KEEPER) - before == paid == sum(k["coin"] for k in kicks)
    # the keeper predicted each incentive to the wei, and each tab = due * chop
    a = maker(keeper)
    for o in barks:
        assert o.opp.detail.coin == o.realized["coin"] and o.opp.detail.tab == o.realized["tab"]
        assert a.realized_gross_usd_e8(o.opp, o.realized) == o.opp.gross_profit_usd_e8  # realized as expected
        assert o.realized["tab"] == o.realized["due"] * 113 * WAD // 100 // WAD
    assert unsafe_urns(chain, "ETH-A") == [] and await cycle(keeper) == []


async def test_bark_respects_the_room_under_hole(chain, make_maker):
    e = ext(chain)
    chain.shock("WETH", -20)
    urns = unsafe_urns(chain, "ETH-A")
    # room for a 20,000 DAI tab only: one partial bark, then the limit is hit
    chain.send_as(MAKER_DEPLOYER, e["dog"], DOG.fn("file(bytes32,bytes32,uint256)").encode(
        ilk_id("ETH-A"), b"hole".ljust(32, b"\0"), 20_000 * RAD))
    keeper = await make_maker()
    with capture_logs() as logs:
        outs = await cycle(keeper)
    barks = of(outs, "bark")
    assert len(barks) == 1
    d = barks[0].opp.detail
    assert d.dart < d.art and barks[0].realized["art"] == d.dart  # partial, as predicted
    _clip, _chop, hole, dirt = chain.view(e["dog"], DOG.fn("ilks"), ilk_id("ETH-A"))
    assert dirt <= hole and hole - dirt < 5_000 * RAD * 113 // 100
    reasons = [x for x in logs if x.get("reason") == "bark_impossible"]
    assert len(reasons) == len(urns) - 1
    # the keeper's reason is the one the Dog gives
    from keeper.devnet.jsonrpc import JsonRpc, RpcError

    with JsonRpc(chain.url) as rpc:
        for x in reasons:
            data = DOG.fn("bark").encode(ilk_id("ETH-A"), x["account"], KEEPER)
            with pytest.raises(RpcError) as err:
                rpc.call("eth_call", [{"from": KEEPER, "to": e["dog"], "data": "0x" + data.hex()}, "latest"])
            assert x["revert"] in str(err.value)
            assert x["revert"] in ("Dog/liquidation-limit-hit", "Dog/dusty-auction-from-partial-liquidation")


# -- take ---------------------------------------------------------------------------------------------
async def test_take_when_the_price_first_reaches_the_limit_and_not_before(chain, make_maker):
    chain.shock("WBTC", -20)
    ids = bark_all(chain, "WBTC-A")
    assert ids
    keeper = await make_maker(routes=["inventory"])
    a = maker(keeper)
    assert await cycle(keeper) == []
    auction = a.auctions[("WBTC-A", ids[0])]
    step = a.ilks["WBTC-A"].curve.step
    assert auction.limit and auction.price > auction.limit and auction.limit_in_s > 3 * step
    jump(chain, auction.limit_in_s - 3 * step)  # three steps before the limit
    start = chain.block_number()
    taken, steps = [], 0
    while not taken:
        with capture_logs() as logs:
            outs = await cycle(keeper)
        taken = of(outs, "take")
        if not taken:
            assert outs == [] and clip_events(chain, "WBTC-A", "Take", start) == []
            jump(chain, step)
            steps += 1
            assert steps <= 5
    assert steps >= 2  # nothing while the price was above the limit
    cut = a.ilks["WBTC-A"].curve.cut
    margin = 200  # bps, config/devnet.toml min_margin_pct
    mark = feed_price(chain, "WBTC-A")
    for o in taken:
        r = o.realized
        assert r["price"] <= r["max"] == o.opp.detail.limit  # take's max is the keeper's limit
        assert r["price"] * RAY // cut > r["max"]  # one step earlier it was above the limit
        # the keeper keeps what it bought (no swap): valued at the oracle price, it is worth
        # at least the margin more than it paid, and it is logged as held at that mark
        d = o.opp.detail
        bought = r["owe"] // r["price"]
        assert d.held and d.mark == mark and d.fee_tier == 0 and o.opp.routes == () and bought == d.slice
        assert bought * mark >= r["owe"] * (10_000 + margin) // 10_000
        # realized is measured with the same mark: the stairstep price did not move, so exactly
        assert a.realized_gross_usd_e8(o.opp, r) == o.opp.gross_profit_usd_e8 == (bought * mark - r["owe"]) * 10**8 // RAD
    assert vat_gem(chain, "WBTC-A", KEEPER) == sum(o.realized["owe"] // o.realized["price"] for o in taken)
    held = [x for x in logs if x["event"] == "liquidation_sent"]
    assert len(held) == len(taken) and all(x["held"] is True and x["mark_price"] == mark / RAY for x in held)
    assert all("swap_fee_tier" not in x and "proceeds_dai" not in x for x in held)


async def test_linear_auction_is_taken_within_one_step_of_the_limit(chain, make_maker):
    chain.shock("WETH", -20)
    ids = bark_all(chain, "ETH-A")
    keeper = await make_maker(routes=["inventory"])
    a = maker(keeper)
    await cycle(keeper)
    first = a.auctions[("ETH-A", ids[0])]
    dt = 30
    jump(chain, first.limit_in_s - 2 * dt)
    took = []
    for _ in range(6):
        outs = await cycle(keeper)
        took += of(outs, "take")
        if len(took) == len(ids):
            break
        jump(chain, dt)
    assert len(took) == len(ids)
    tau = a.ilks["ETH-A"].curve.tau
    tops = {k["id"]: k["top"] for k in clip_events(chain, "ETH-A", "Kick", 0)}
    for o in took:
        r = o.realized
        assert r["price"] <= r["max"] == o.opp.detail.limit
        # within one step: dt seconds (+ the block the take lands in) earlier the price was above the limit
        assert r["max"] - r["price"] < tops[r["auction"]] * (dt + 2) // tau


async def test_flash_take_with_zero_dai_leaves_the_profit_with_the_owner(chain, make_maker):
    e = ext(chain)
    chain.shock("WETH", -20)
    ids = bark_all(chain, "ETH-A")
    set_vat_dai(chain, KEEPER, 0)
    dai_before = chain.view(e["dai"], ERC20.fn("balanceOf"), KEEPER)[0]
    keeper = await make_maker()
    a = maker(keeper)
    await cycle(keeper)
    # well under every limit: each take's sale moves the pool for the next one
    jump(chain, max(x.limit_in_s for x in a.auctions.values()) + 120)
    with capture_logs() as logs:
        outs = await cycle(keeper)
    flash = of(outs, "flash_take")
    assert len(flash) == len(ids) and all(o.opp.detail.route == "flash" for o in flash)
    assert any(x.get("reason") == "no_inventory" and x.get("route") == "inventory" for x in logs)
    # each take is logged with the route its sale takes (fee tier of the first hop, the path)
    seen = [x for x in logs if x["event"] == "opportunity" and x.get("route") == "flash"]
    assert seen and all(x["swap_fee_tier"] == 3000 and x["swap_route"] == "WETH >v3 0.3%> DAI" for x in seen)
    profit = sum(o.realized["profit_dai"] for o in flash)
    gained = chain.view(e["dai"], ERC20.fn("balanceOf"), KEEPER)[0] - dai_before
    assert gained == profit > 0
    for o in flash:
        assert o.realized["profit_dai"] >= o.opp.detail.min_profit > 0
        # each sale priced on the book after the ones before it in the block: realized as expected
        assert o.opp.routes and o.opp.detail.swap_route == "WETH >v3 0.3%> DAI"
        # (priced for the next block's time, chain.block_time_s later: a take that lands at another
        # second pays the price of that second, never above its limit)
        if o.realized["price"] == o.opp.detail.price:
            assert_realized_matches(a, o)
        elif o.realized["price"] < o.opp.detail.price:
            assert a.realized_gross_usd_e8(o.opp, o.realized) > o.opp.gross_profit_usd_e8
        else:
            assert o.realized["price"] <= o.realized["max"] == o.opp.detail.limit
    assert vat_dai(chain, KEEPER) == 0  # no capital was used
    assert chain.view(e["dai"], ERC20.fn("balanceOf"), e["take_callee"])[0] == 0
    await cycle(keeper)
    assert all(("ETH-A", i) not in a.auctions for i in ids)


async def test_take_callee_refuses_outsiders(chain):
    e = ext(chain)
    callee = abi.load("MakerTakeCallee")
    data = callee.fn("flashTake").encode(e["ilks"]["ETH-A"]["clipper"], e["ilks"]["ETH-A"]["gem_join"], 1, 1, 1, b"", 0)
    from keeper.devnet.jsonrpc import JsonRpc, RpcError

    with JsonRpc(chain.url) as rpc:
        with pytest.raises(RpcError, match="TakeCallee/not-owner"):
            rpc.call("eth_call", [{"from": OTHER, "to": e["take_callee"], "data": "0x" + data.hex()}, "latest"])
        cc = callee.fn("clipperCall").encode(OTHER, 1, 1, b"")
        with pytest.raises(RpcError, match="TakeCallee/bad-caller"):
            rpc.call("eth_call", [{"from": e["ilks"]["ETH-A"]["clipper"], "to": e["take_callee"], "data": "0x" + cc.hex()},
                                  "latest"])


async def test_partial_take_leaves_at_least_chost_or_clears_the_lot(chain, make_maker):
    e = ext(chain)
    chain.shock("WETH", -20)
    ids = bark_all(chain, "ETH-A")
    chost = chain.view(e["ilks"]["ETH-A"]["clipper"], CLIP.fn("chost"))[0]
    assert chost == 5_000 * RAD * 113 // 100
    keeper = await make_maker(routes=["inventory"])
    a = maker(keeper)
    await cycle(keeper)
    big = max((a.auctions[("ETH-A", i)] for i in ids), key=lambda x: x.tab)
    jump(chain, big.limit_in_s + 1)
    # enough DAI for all but half of chost of the biggest tab: the take must stop at exactly chost
    set_vat_dai(chain, KEEPER, big.tab - chost // 2)
    outs = await cycle(keeper)
    takes = {o.realized["auction"]: o for o in of(outs, "take")}
    t = takes[big.id]
    assert t.realized["tab_left"] == chost and t.opp.detail.owe == big.tab - chost
    assert t.realized["lot_left"] > 0
    # what is left can only be bought whole: with the DAI back, the next take clears it
    set_vat_dai(chain, KEEPER, 10**6 * RAD)
    outs = await cycle(keeper)
    rest = [o for o in of(outs, "take") if o.realized["auction"] == big.id]
    assert rest and (rest[0].realized["lot_left"] == 0 or rest[0].realized["tab_left"] == 0)
    for ev in clip_events(chain, "ETH-A", "Take", 0):
        assert ev["tab"] >= chost or ev["tab"] == 0 or ev["lot"] == 0


async def test_stale_auction_gets_redo_and_the_incentive(chain, make_maker):
    chain.shock("WETH", -20)
    ids = bark_all(chain, "ETH-A")
    keeper = await make_maker(take=False)
    jump(chain, 1_801)  # past tail
    before = vat_dai(chain, KEEPER)
    start = chain.block_number()
    outs = await cycle(keeper)
    redos = of(outs, "redo")
    assert sorted(o.realized["auction"] for o in redos) == sorted(ids)
    events = clip_events(chain, "ETH-A", "Redo", start + 1)
    assert {ev["kpr"].lower() for ev in events} == {KEEPER.lower()}
    for o in redos:
        assert maker(keeper).realized_gross_usd_e8(o.opp, o.realized) == o.opp.gross_profit_usd_e8 > 0
    assert vat_dai(chain, KEEPER) - before == sum(300 * RAD + ev["tab"] * (WAD // 1000) // WAD for ev in events)
    a = maker(keeper)
    await cycle(keeper)
    assert all(not x.needs_redo for x in a.auctions.values())


# -- competition, dry-run, ranking --------------------------------------------------------------------
async def test_two_keepers_the_higher_limit_wins_and_the_other_sends_nothing(chain, make_maker):
    chain.shock("WETH", -20)
    ids = bark_all(chain, "ETH-A")
    set_vat_dai(chain, KEEPER_B, 10**6 * RAD)
    keeper_a = await make_maker(routes=["inventory"], min_margin_pct=1)
    keeper_b = await make_maker(routes=["inventory"], min_margin_pct=4, address=KEEPER_B, key=KEEPER_B_KEY,
                                take_callee=None, dai_join=ext(chain)["dai_join"])
    await cycle(keeper_a)
    await cycle(keeper_b)
    first = ("ETH-A", ids[0])
    la, lb = maker(keeper_a).auctions[first].limit, maker(keeper_b).auctions[first].limit
    assert la > lb
    nonce_b = chain.nonce(KEEPER_B)
    jump(chain, maker(keeper_a).auctions[first].limit_in_s - 30)
    won = []
    for _ in range(5):
        assert [o for o in await cycle(keeper_b) if o.status == "confirmed"] == []
        won += of(await cycle(keeper_a), "take")
        if ids[0] in {o.realized["auction"] for o in won}:
            break
        jump(chain, 30)
    assert ids[0] in {o.realized["auction"] for o in won}
    assert all(o.realized["price"] <= o.realized["max"] == o.opp.detail.limit for o in won)
    assert chain.nonce(KEEPER_B) == nonce_b  # B's lower limit was never reached: it sent nothing


async def test_a_late_keeper_is_stopped_by_simulation(chain, make_maker):
    chain.shock("WETH", -20)
    bark_all(chain, "ETH-A")
    set_vat_dai(chain, KEEPER_B, 10**6 * RAD)
    keeper_a = await make_maker(routes=["inventory"], min_margin_pct=1)
    keeper_b = await make_maker(routes=["inventory"], min_margin_pct=4, address=KEEPER_B, key=KEEPER_B_KEY,
                                take_callee=None, dai_join=ext(chain)["dai_join"])
    await cycle(keeper_b)
    jump(chain, max(x.limit_in_s for x in maker(keeper_b).auctions.values()) + 1)  # below both limits
    chain.send_as(KEEPER_B, ext(chain)["vat"], VAT.fn("hope").encode(ext(chain)["ilks"]["ETH-A"]["clipper"]))
    head = await keeper_b.read_head()
    opps = await keeper_b.gather(head)  # B sees the auctions...
    native = await keeper_b.native_usd_e8()
    assert opps
    assert of(await cycle(keeper_a), "take")  # ...but A takes them first
    nonce_b = chain.nonce(KEEPER_B)
    with capture_logs() as logs:
        outs = await keeper_b.executor.execute_all(strategy.rank(opps, head.base_fee_wei, native), head, native)
    assert outs and all(o.status == "skipped" and o.reason == "simulation_reverted" for o in outs)
    assert {x["revert"] for x in logs if x.get("reason") == "simulation_reverted"} == {"Clipper/not-running-auction"}
    assert chain.nonce(KEEPER_B) == nonce_b


async def test_dry_run_logs_the_bark_and_the_take_it_would_do_and_sends_nothing(chain, make_maker):
    chain.shock("WETH", -20)
    n_unsafe = len(unsafe_urns(chain, "ETH-A"))
    nonce, block = chain.nonce(KEEPER), chain.block_number()
    keeper = await make_maker(dry_run=True)
    with capture_logs() as logs:
        await cycle(keeper)
    sends = [x for x in logs if x["event"] == "dry_run_send"]
    assert len(sends) == n_unsafe and all(x["description"].startswith("bark ETH-A") for x in sends)
    assert chain.nonce(KEEPER) == nonce and chain.block_number() == block
    # auctions running (barked by someone else) and the price under the limit: the take is logged
    ids = bark_all(chain, "ETH-A")
    chain.send_as(KEEPER, ext(chain)["vat"], VAT.fn("hope").encode(ext(chain)["ilks"]["ETH-A"]["clipper"]))
    await cycle(keeper)
    jump(chain, max(x.limit_in_s for x in maker(keeper).auctions.values()) + 1)
    nonce, block = chain.nonce(KEEPER), chain.block_number()
    with capture_logs() as logs:
        await cycle(keeper)
    takes = [x for x in logs if x["event"] == "dry_run_send"]
    assert len(takes) == len(ids) and all(x["description"].startswith("take ETH-A#") for x in takes)
    assert "liquidation_sent" not in {x["event"] for x in logs}
    assert chain.nonce(KEEPER) == nonce and chain.block_number() == block


async def test_auctions_and_lending_are_ranked_in_one_list(chain, make_maker):
    chain.shock("WETH", -20)
    keeper = await make_maker(dry_run=True, aave=True)
    head = await keeper.read_head()
    opps = await keeper.gather(head)
    kinds = {o.kind for o in opps}
    assert kinds == {"aave_v3", "maker"}
    native = await keeper.native_usd_e8()
    ranked = strategy.rank(opps, head.base_fee_wei, native)
    nets = [p.net_profit_usd_e8 for p in ranked]
    assert nets == sorted(nets, reverse=True)
    rows = [r for a in keeper.adapters.values() for r in a.positions()]
    mrows = [r for r in rows if r["protocol"] == NAME]
    assert {"protocol", "account", "health_factor", "summary", "opportunity"} <= set(mrows[0])
    below = [r for r in mrows if r["health_factor"] < 1]
    assert below and all(r["opportunity"] is not None for r in below)


# -- sizing for profit ---------------------------------------------------------------------------------
WHALE = abi.to_checksum("0x" + "5a1e" * 10)  # a vault owner outside the seeded ones
JOIN = abi.load("MakerGemJoin")


def open_vault(chain, ilk: str, owner: str, usd: int, ratio_bp: int) -> tuple[int, int]:
    """A new vault of `ilk` holding `usd` of the gem at the oracle price, with debt at
    collateralization / mat = ratio_bp / 10,000. Returns (ink, art)."""
    e = ext(chain)
    info = e["ilks"][ilk]
    _, rate, spot, _, _ = chain.view(e["vat"], VAT.fn("ilks"), ilk_id(ilk))
    dec = chain.view(info["gem"], ERC20.fn("decimals"))[0]
    tokens = usd * RAD // feed_price(chain, ilk) // 10 ** (18 - dec)
    ink = tokens * 10 ** (18 - dec)
    art = ink * spot * 10_000 // (rate * ratio_bp)
    chain.call("anvil_setBalance", [owner, hex(10**20)])
    chain.send_as(owner, info["gem"], ERC20.fn("mint(uint256)").encode(tokens))
    chain.send_as(owner, info["gem"], ERC20.fn("approve").encode(info["gem_join"], tokens))
    chain.send_as(owner, info["gem_join"], JOIN.fn("join").encode(owner, tokens))
    chain.send_as(owner, e["vat"], VAT.fn("frob").encode(ilk_id(ilk), owner, owner, owner, ink, art))
    return ink, art


def latest_timestamp(chain) -> int:
    return int(chain.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)


def v3_path(route) -> bytes | None:
    """The Uniswap V3 path of a route made of V3 hops only (None when a hop is V2)."""
    from keeper.pricing.book import V3

    if any(h.venue != V3 for h in route.hops):
        return None
    out = bytes.fromhex(route.hops[0].token_in[2:])
    for h in route.hops:
        out += h.fee.to_bytes(3, "big") + bytes.fromhex(h.token_out[2:])
    return out


def assert_realized_matches(a, o, tol_ppm: int = 1_000) -> int:
    """The adapter's reading of the receipt agrees with what it expected (0.1% by default)."""
    realized = a.realized_gross_usd_e8(o.opp, o.realized)
    expected = o.opp.gross_profit_usd_e8
    assert realized is not None and abs(realized - expected) * 1_000_000 <= abs(expected) * tol_ppm, (realized, expected)
    return realized


async def test_a_lot_too_large_to_sell_whole_is_flash_taken_in_its_most_profitable_part(chain, make_maker):
    """A ~$16M WBTC vault against the ~$25M-a-side DAI/WBTC pool: at about 90% of the oracle
    price the whole lot would sell for less than it costs. The keeper flash-takes the size that
    earns the most (a fine grid on the same pool book agrees), nets a profit after gas, leaves
    the rest while it does not pay, and takes more of it in a later block as the price falls."""
    e = ext(chain)
    name = "WBTC-A"
    info = e["ilks"][name]
    gem, dai, clip = info["gem"], e["dai"], info["clipper"]
    conv = 10**10  # WBTC: 8 decimals
    open_vault(chain, name, WHALE, 16_000_000, 10_200)
    chain.shock("WBTC", -5)
    _, rate, spot, _, _ = chain.view(e["vat"], VAT.fn("ilks"), ilk_id(name))
    assert mm.is_unsafe(*chain.view(e["vat"], VAT.fn("urns"), ilk_id(name), WHALE), spot, rate)
    start = chain.block_number()
    chain.send_as(OTHER, e["dog"], DOG.fn("bark").encode(ilk_id(name), WHALE, OTHER))  # only this one
    (kick,) = clip_events(chain, name, "Kick", start + 1)
    aid = kick["id"]
    keeper = await make_maker(routes=["flash"], bark=False)
    a = maker(keeper)
    assert await cycle(keeper) == []  # at the top price nothing pays
    step = a.ilks[name].curve.step
    tic = chain.view(clip, CLIP.fn("sales"), aid)[4]
    jump(chain, 29 * step + step // 2 - (latest_timestamp(chain) - tic))  # mid-step: the price holds a while

    # what a fine grid on the keeper's own pool book says, at the block the keeper will see
    head = await keeper.read_head()
    book = await keeper.swaps.book(head.number)
    _redo, price, lot, tab = chain.view(clip, CLIP.fn("getStatus"), aid)
    chost = chain.view(clip, CLIP.fn("chost"))[0]
    feed = feed_price(chain, name)
    assert 0.85 < price / feed < 0.95

    def gross(amt: int) -> int | None:  # DAI wad, before gas (a constant)
        size = mm.take_size(lot, tab, amt, price, chost)
        if isinstance(size, str) or size.slice < conv:
            return None
        r = book.quote(gem, dai, size.slice // conv)
        return None if r is None else r.amount_out - mm.rad_to_wad_up(size.owe)

    assert gross(lot) < 0  # the whole lot sells at a loss
    coarse = [lot * i // 400 // conv * conv for i in range(1, 401)]
    best = max((x for x in coarse if gross(x) is not None), key=gross)
    fine = [max(conv, best - lot // 400 + lot * i // 40_000) // conv * conv for i in range(0, 201)]
    best = max((x for x in fine if gross(x) is not None), key=gross)
    best_gross = gross(best)
    assert best_gross > 0 and best < lot // 2
    # the book is exact: it prices that size as the on-chain QuoterV2 does
    size = mm.take_size(lot, tab, best, price, chost)
    route = book.quote(gem, dai, size.slice // conv)
    path = v3_path(route)
    if path is not None:
        assert chain.view(chain.dep.uniswap_quoter_v2, QUOTER.fn("quoteExactInput"), path, size.slice // conv)[0] \
            == route.amount_out

    outs = await cycle(keeper)
    (o,) = of(outs, "flash_take")
    d, r = o.opp.detail, o.realized
    assert d.route == "flash" and d.partial and not d.max_size and o.opp.routes and r["auction"] == aid
    assert r["lot_left"] > 0 and r["tab_left"] >= chost  # the rest stays in the auction
    assert abs(d.amt - best) <= best * 3 // 100  # the size the grid finds best, within a few %
    assert d.proceeds - mm.rad_to_wad_up(d.owe) >= best_gross - best_gross // 1_000
    native = a.native_price_usd_e8()
    realized = assert_realized_matches(a, o)
    assert realized - o.gas_cost_wei * native // 10**18 > 0  # net of gas
    assert r["profit_dai"] >= d.min_profit > 0

    # the route's pools now pay about the auction price at the margin; other routes (through
    # WETH) may still pay for more at this price, each take its own best size; then nothing does
    taken = [o]
    for _ in range(4):
        more = of(await cycle(keeper), "flash_take")
        if not more:
            break
        taken += more
        assert_realized_matches(a, more[0])
    else:
        raise AssertionError("the keeper kept taking at the same price")
    assert ("WBTC-A", aid) in a.auctions  # the rest waits for a lower price
    assert a.auctions[("WBTC-A", aid)].lot == chain.view(clip, CLIP.fn("sales"), aid)[2] > lot // 2
    # three steps (3%) lower, another profitable part
    jump(chain, 3 * step)
    (o2,) = of(await cycle(keeper), "flash_take")
    assert o2.realized["auction"] == aid
    realized = assert_realized_matches(a, o2)
    assert realized - o2.gas_cost_wei * native // 10**18 > 0
