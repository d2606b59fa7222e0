"""Liquidation 2.0 integer rules (keeper/protocols/maker/math.py) against dss's own arithmetic."""

from keeper.protocols.maker import math as mm
from keeper.protocols.maker.math import RAD, RAY, WAD


def test_unsafe_uses_the_vats_units():
    ink, spot, rate = 10 * WAD, 2000 * RAY, 102 * RAY // 100
    art = ink * spot // rate  # exactly at the limit: safe
    assert not mm.is_unsafe(ink, art, spot, rate)
    assert mm.is_unsafe(ink, art + 1, spot, rate)
    assert not mm.is_unsafe(ink, art + 1, 0, rate)  # spot 0: the Dog refuses


def test_bark_whole_vault_with_room():
    s = mm.bark_size(ink=10 * WAD, art=20_000 * WAD, rate=RAY, dust=5_000 * RAD, chop=113 * WAD // 100,
                     Hole=10**9 * RAD, Dirt=0, hole=10**8 * RAD, dirt=0)
    assert s == mm.BarkSize(dink=10 * WAD, dart=20_000 * WAD, due=20_000 * RAD, tab=22_600 * RAD)
    assert mm.incentive(300 * RAD, WAD // 1000, s.tab) == 300 * RAD + 22_600 * RAD // 1000


def test_bark_partial_and_dust_rules():
    kw = dict(ink=10 * WAD, art=20_000 * WAD, rate=RAY, dust=5_000 * RAD, chop=113 * WAD // 100, Hole=10**9 * RAD, Dirt=0)
    # room for 11,300 DAI of tab: 10,000 of debt, 10,000 left (not dusty) -> partial
    s = mm.bark_size(**kw, hole=11_300 * RAD, dirt=0)
    assert s.dart == 10_000 * WAD and s.dink == 5 * WAD and s.tab == 11_300 * RAD
    # room for 17,515 DAI: 15,500 of debt would leave 4,500 < dust -> the whole vault
    s = mm.bark_size(**kw, hole=17_515 * RAD, dirt=0)
    assert s.dart == 20_000 * WAD
    # room for 4,520 DAI: a 4,000 DAI auction would be dusty
    assert mm.bark_size(**kw, hole=4_520 * RAD, dirt=0) == "Dog/dusty-auction-from-partial-liquidation"
    assert mm.bark_size(**kw, hole=100 * RAD, dirt=100 * RAD) == "Dog/liquidation-limit-hit"


def test_take_sizes_like_the_clipper():
    chost = 5_650 * RAD
    price = 2_000 * RAY
    # the whole lot costs more than tab: pay tab, get tab / price
    t = mm.take_size(lot=20 * WAD, tab=30_000 * RAD, amt=20 * WAD, price=price, chost=chost)
    assert t.owe == 30_000 * RAD and t.slice == 15 * WAD and t.tab_left == 0 and t.lot_left == 5 * WAD
    # a partial take leaving less than chost is cut to leave exactly chost
    t = mm.take_size(lot=20 * WAD, tab=30_000 * RAD, amt=13 * WAD, price=price, chost=chost)
    assert t.tab_left == chost and t.owe == 30_000 * RAD - chost
    # a partial take leaving more than chost is as asked
    t = mm.take_size(lot=20 * WAD, tab=30_000 * RAD, amt=5 * WAD, price=price, chost=chost)
    assert t.owe == 10_000 * RAD and t.tab_left == 20_000 * RAD
    # tab <= chost: only the whole lot
    assert mm.take_size(lot=20 * WAD, tab=5_000 * RAD, amt=1 * WAD, price=price, chost=chost) == "Clipper/no-partial-purchase"


def test_price_curves_and_time_to_a_limit():
    top = 3_600 * RAY
    lin = mm.Curve("linear", tau=3_600)
    assert lin.price(top, 0) == top and lin.price(top, 1_800) == top // 2 and lin.price(top, 3_600) == 0
    t = lin.seconds_until(top, 2_000 * RAY)
    assert lin.price(top, t) <= 2_000 * RAY < lin.price(top, t - 1)
    step = mm.Curve("stairstep", cut=99 * RAY // 100, step=90)
    assert step.price(top, 89) == top and step.price(top, 90) == top * 99 // 100
    assert mm.rpow(99 * RAY // 100, 2) == 9801 * RAY // 10000
    t = step.seconds_until(top, 3_000 * RAY)
    assert t % 90 == 0 and step.price(top, t) <= 3_000 * RAY < step.price(top, t - 90)
    assert mm.needs_redo(dur=1_801, price=top, top=top, tail=1_800, cusp=4 * RAY // 10)
    assert mm.needs_redo(dur=10, price=top * 39 // 100, top=top, tail=1_800, cusp=4 * RAY // 10)
    assert not mm.needs_redo(dur=10, price=top // 2, top=top, tail=1_800, cusp=4 * RAY // 10)


def test_limit_keeps_the_margin_after_gas():
    # 10 ETH sell for 24,000 DAI, gas costs 10 DAI, margin 2%: pay at most (24,000 - 10) / 1.02 / 10
    limit = mm.limit_price(24_000 * WAD, 10 * WAD, 10 * WAD, 200)
    assert limit == 23_990 * WAD * RAY * 10_000 // (10 * WAD * 10_200)
    assert 10 * WAD * limit * 102 // 100 <= (24_000 - 10) * RAD
    assert mm.limit_price(5 * WAD, 10 * WAD, WAD, 200) == 0
