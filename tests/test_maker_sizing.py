"""Maker take sizing, offline (no chain): flash-takes sized for the largest net profit on a
pool book within the Clipper's rules, re-sized after the keeper's own swaps, "max" sizing as
a baseline; held (inventory) takes valued at the oracle price, and realized read the same way."""

from __future__ import annotations

import pytest
import structlog

from keeper.pricing.book import Book
from keeper.pricing.pools import V2Pair
from keeper.protocols.maker import adapter as ma
from keeper.protocols.maker import math as mm
from keeper.protocols.maker.math import RAD, RAY, WAD
from keeper.types import Head

GEM = "0x" + "11" * 20
DAI = "0x" + "22" * 20
PAIR = "0x" + "33" * 20
KEEPER = "0x" + "44" * 20
CALLEE = "0x" + "55" * 20
CLIPPER = "0x" + "66" * 20
JOIN = "0x" + "77" * 20
FEED = 2_000 * RAY  # the gem's oracle price, DAI per gem
CHOST = 5_650 * RAD
HEAD = Head(number=100, timestamp=10_000, base_fee_wei=10**9, hash="0x" + "00" * 32)


def make_adapter(**cfg_kw) -> ma.Adapter:
    kw = dict(kind="maker", name="maker-test", dog="0x" + "88" * 20, ilks=(), take_callee=CALLEE, dai_join=None,
              start_block=0, min_margin_bps=200, dai_usd_e8=10**8, bark=True, take=True, redo=True, gas_bark=350_000,
              gas_take=180_000, gas_flash_take=420_000, gas_redo=120_000, gas_limit=1_500_000)
    kw.update(cfg_kw)
    a = ma.Adapter(ma.MakerConfig(**kw), rpc=None, multicall=None, swaps=None, keeper_address=KEEPER,
                   log=structlog.get_logger())
    a.dai, a.vat = DAI, "0x" + "99" * 20
    a._symbols = {GEM: "WETH", DAI: "DAI"}
    mat = 145 * RAY // 100
    a.ilks["ETH-A"] = ma.Ilk(name="ETH-A", id=b"ETH-A".ljust(32, b"\0"), clipper=CLIPPER, gem_join=JOIN, gem=GEM,
                             gem_symbol="WETH", spot=FEED * RAY // mat, mat=mat, chost=CHOST, can=True)
    return a


def book(gem_reserve: int, dai_reserve: int) -> Book:
    """One constant-product pair (0.3%), token0 = the gem."""
    return Book(HEAD.number, [V2Pair(PAIR, GEM, DAI, gem_reserve, dai_reserve)])


def ctx(a: ma.Adapter, lot: int, tab: int, price: int) -> ma._FlashCtx:
    return ma._FlashCtx(HEAD.number, "ETH-A#1", "ETH-A", 1, lot, tab, price, CHOST, 1, GEM, "WETH", JOIN, CLIPPER,
                        a._wei_per_gas(HEAD), a.native_price_usd_e8())


def grid_best(a: ma.Adapter, c: ma._FlashCtx, bk: Book, n: int = 4_000) -> tuple[int, int]:
    """Brute force: (amt, net profit [DAI wad]) of the best of n sizes paying the margin."""
    best = (0, -(10**40))
    for i in range(1, n + 1):
        f = a._flash_size(c, bk, c.lot * i // n)
        if f is None or (f.route.amount_out - f.gas_dai) * 10_000 < f.owe_wad * 10_200:
            continue
        if f.profit > best[1]:
            best = (f.amt, f.profit)
    return best


def test_a_whale_lot_is_flash_taken_at_its_most_profitable_size():
    a = make_adapter()
    bk = book(10_000 * WAD, 20_000_000 * WAD)  # $20M of DAI against 10,000 of the gem
    lot, tab, price = 3_000 * WAD, 10**12 * RAD, 1_800 * RAY  # 90% of the pool price, tab not binding
    c = ctx(a, lot, tab, price)
    whole = a._flash_size(c, bk, lot)
    assert whole.profit < 0  # selling it all costs more than it earns
    opp, limit = a._flash_take(c, bk)
    d = opp.detail
    assert limit > price and d.partial and d.slice < lot // 5
    amt, profit = grid_best(a, c, bk)
    assert abs(d.amt - amt) <= amt // 100 and d.proceeds - mm.rad_to_wad_up(d.owe) - d.gas_dai >= profit - profit // 10_000
    # what the plan carries is what was priced: the route, the size, the limit, the minimum profit
    (route,) = opp.routes
    assert route.amount_in == d.slice and route.amount_out == d.proceeds and route.encode() in opp.plan.data
    assert d.price <= d.limit and d.swap_route == "WETH >v2> DAI"
    assert opp.gross_profit_usd_e8 == (d.proceeds - mm.rad_to_wad_up(d.owe)) * 10**8 // WAD


def test_a_partial_take_leaves_at_least_chost_or_takes_everything():
    a = make_adapter()
    bk = book(10_000 * WAD, 20_000_000 * WAD)
    price = 1_800 * RAY
    # the best size would leave about 1,000 DAI of tab, less than chost: the Clipper would cut it
    c0 = ctx(a, 3_000 * WAD, 10**12 * RAD, price)
    best_owe = a._flash_take(c0, bk)[0].detail.owe
    c = ctx(a, 3_000 * WAD, best_owe + 1_000 * RAD, price)
    opp, _ = a._flash_take(c, bk)
    d = opp.detail
    left = c.tab - d.owe
    assert left == 0 or left >= CHOST
    assert d.owe == mm.take_size(c.lot, c.tab, d.amt, price, CHOST).owe
    assert opp.detail.proceeds - mm.rad_to_wad_up(d.owe) > 0


def test_resize_prices_the_keepers_own_impact_and_gives_up_when_nothing_pays():
    a = make_adapter()
    bk = book(10_000 * WAD, 20_000_000 * WAD)
    head_opps = []
    for i, price in ((1, 1_800 * RAY), (2, 1_800 * RAY)):
        c = ma._FlashCtx(HEAD.number, f"ETH-A#{i}", "ETH-A", i, 3_000 * WAD, 10**12 * RAD, price, CHOST, 1, GEM, "WETH",
                         JOIN, CLIPPER, a._wei_per_gas(HEAD), a.native_price_usd_e8())
        opp, _ = a._flash_take(c, bk)
        a._flash_ctx[c.account] = c
        head_opps.append(opp)
    first, second = head_opps
    # against the untouched book, resize gives the same take
    same = a.resize(second, bk.copy())
    assert same.detail == second.detail and same.routes == second.routes
    # after the first take's sale the pool pays about the auction price at the margin: no size pays
    after = bk.copy()
    after.apply(first.routes[0])
    assert a.resize(second, after) is None
    # at a lower auction price some of it pays again, smaller than on the fresh book
    a._flash_ctx["ETH-A#2"] = ma._FlashCtx(HEAD.number, "ETH-A#2", "ETH-A", 2, 3_000 * WAD, 10**12 * RAD, 1_700 * RAY,
                                           CHOST, 1, GEM, "WETH", JOIN, CLIPPER, a._wei_per_gas(HEAD),
                                           a.native_price_usd_e8())
    fresh = a.resize(second, bk.copy())
    smaller = a.resize(second, after)
    assert smaller is not None and smaller.detail.slice < fresh.detail.slice
    assert smaller.routes[0].amount_out == after.quote(GEM, DAI, smaller.detail.slice).amount_out
    # barks, redos and held takes do not swap: unchanged
    bark = first.__class__(**{**{f: getattr(first, f) for f in first.__slots__}, "detail": None})
    assert a.resize(bark, after) is bark


def test_max_sizing_takes_the_whole_lot_or_nothing():
    a = make_adapter()
    a.sizing = "max"
    bk = book(10_000 * WAD, 20_000_000 * WAD)
    opp, _ = a._flash_take(ctx(a, 3_000 * WAD, 10**12 * RAD, 1_800 * RAY), bk)
    assert opp is None  # the whole lot sells at a loss
    opp, _ = a._flash_take(ctx(a, 30 * WAD, 10**12 * RAD, 1_800 * RAY), bk)
    assert opp.detail.slice == 30 * WAD and opp.detail.max_size


def auction(lot: int, tab: int, price: int) -> ma.Auction:
    return ma.Auction("ETH-A", 1, tab, lot, "0x" + "aa" * 20, tic=HEAD.timestamp - 600, top=FEED * 12 // 10,
                      price=price, needs_redo=False)


@pytest.mark.parametrize("capital_dai", [10**9, 50_000])
def test_a_held_take_is_valued_at_the_oracle_and_sized_by_the_vat_dai(capital_dai):
    a = make_adapter()
    a.vat_dai = capital_dai * RAD
    k = a.ilks["ETH-A"]
    au = auction(lot=100 * WAD, tab=190_000 * RAD, price=1_900 * RAY)
    (opp,), limit = a._inventory_take(HEAD, au, k)
    d = opp.detail
    mark = k.feed_price  # spot * mat: the oracle price as the Spotter last saw it (a ray of rounding)
    assert abs(mark - FEED) < 10 and d.held and d.mark == mark and d.fee_tier == 0 and not opp.routes and d.swap_route == ""
    assert limit > au.price and d.limit >= au.price
    if capital_dai > 190_000:
        assert d.owe == au.tab and d.slice == au.tab // au.price  # everything: the tab is covered
    else:
        assert d.owe <= a.vat_dai and au.tab - d.owe >= CHOST and d.partial
        assert d.slice == a.vat_dai // au.price  # the most the Vat DAI buys
    assert opp.spend == ((a.dai_key, d.owe),)
    assert opp.gross_profit_usd_e8 == (d.slice * mark - d.owe) * 10**8 // RAD
    assert d.log_fields()["held"] is True and "swap_fee_tier" not in d.log_fields()
    # realized: the Take event's owe / price is the slice, valued at the same mark
    realized = {"action": "take", "owe": d.owe, "price": au.price}
    assert a.realized_gross_usd_e8(opp, realized) == opp.gross_profit_usd_e8
    # the price fell a step before the take landed: more gem for the same DAI, more value
    lower = {"action": "take", "owe": d.owe, "price": au.price * 99 // 100}
    assert a.realized_gross_usd_e8(opp, lower) > opp.gross_profit_usd_e8


def test_no_held_take_above_what_the_collateral_is_worth_or_without_vat_dai():
    a = make_adapter()
    a.vat_dai = 10**9 * RAD
    k = a.ilks["ETH-A"]
    opps, limit = a._inventory_take(HEAD, auction(100 * WAD, 190_000 * RAD, 1_990 * RAY), k)
    assert opps == [] and 0 < limit < 1_990 * RAY  # 2,000 / 1.02: not yet
    a.vat_dai = 0
    a.last_skips = []
    opps, _ = a._inventory_take(HEAD, auction(100 * WAD, 190_000 * RAD, 1_900 * RAY), k)
    assert opps == [] and [s.reason for s in a.last_skips] == ["no_inventory"]


def test_realized_of_barks_redos_and_flash_takes():
    a = make_adapter()
    bark = ma.MakerBark("ETH-A", "0x" + "bb" * 20, 10 * WAD, 10 * WAD, 10 * WAD, 10 * WAD, 22_600 * RAD, 322 * RAD, 0.9)
    from keeper.types import Opportunity, TxPlan

    plan = TxPlan(to=CLIPPER, data=b"", gas_limit=1)
    o = Opportunity("maker-test", "maker", "x", 1, 322 * 10**8, 1, plan, detail=bark)
    assert a.realized_gross_usd_e8(o, {"action": "bark", "coin": 322 * RAD}) == 322 * 10**8
    assert a.realized_gross_usd_e8(o, {}) is None
    bk = book(10_000 * WAD, 20_000_000 * WAD)
    flash, _ = a._flash_take(ctx(a, 30 * WAD, 10**12 * RAD, 1_800 * RAY), bk)
    gross = flash.detail.proceeds - mm.rad_to_wad_up(flash.detail.owe)
    assert a.realized_gross_usd_e8(flash, {"action": "flash_take", "profit_dai": gross}) == flash.gross_profit_usd_e8
