"""Every liquidation on chain, as the adapters' event following reports it (drain_liquidations):
Maker barks and takes, perps liquidations, by a competitor and by the keeper itself, each once,
in block/log order, with who liquidated."""

from __future__ import annotations

import pytest

from keeper import abi
from keeper.protocols.maker.math import RAD

from .conftest import KEEPER
from .test_maker_keeper import (CLIP, DOG, OTHER, VAT, clip_events, cycle, ext, ilk_id, jump, make_maker,
                                maker, of, set_vat_dai, unsafe_urns)
from .test_perps_keeper import BTC, ETH, MARKET, can_liquidate, events, move, perps, perps_keeper

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["make_maker"]  # the fixture, imported for this module's tests


def _logs(chain, address: str, topic0: str, from_block: int) -> list[dict]:
    return chain.call("eth_getLogs", [{"address": address, "fromBlock": hex(from_block), "toBlock": "latest",
                                       "topics": [topic0]}])


def drained(keeper) -> list:
    """What the keeper classified from the adapters' event following since the last call
    (the app drains the adapters every cycle)."""
    out = [liq for liq, _klass, _why in keeper.classified]
    keeper.classified.clear()
    return out


async def _synced(keeper, adapter) -> list:
    await adapter.sync(await keeper.read_head())
    return adapter.drain_liquidations()


# -- Maker ----------------------------------------------------------------------------------------
async def test_maker_competitor_barks_and_takes_are_reported_once_in_order(chain, make_maker):
    e = ext(chain)
    keeper = await make_maker(bark=False, take=False, redo=False)  # a keeper that only watches
    a = maker(keeper)
    assert a.liquidator_addresses() == {e["take_callee"].lower()}
    await cycle(keeper)
    drained(keeper)  # whatever the devnet's history holds
    assert drained(keeper) == []
    chain.shock("WETH", -20)
    urns = unsafe_urns(chain, "ETH-A")
    assert len(urns) >= 2
    start = chain.block_number() + 1
    for urn in urns:  # OTHER barks, naming itself kpr
        chain.send_as(OTHER, e["dog"], DOG.fn("bark").encode(ilk_id("ETH-A"), urn, OTHER))
    kicks = clip_events(chain, "ETH-A", "Kick", start)
    assert len(kicks) == len(urns)
    # OTHER takes: a partial take of the first auction, the whole of the second
    clip = e["ilks"]["ETH-A"]["clipper"]
    set_vat_dai(chain, OTHER, 10**9 * RAD)
    chain.send_as(OTHER, e["vat"], VAT.fn("hope").encode(clip))
    jump(chain, 600)
    first, second = kicks[0]["id"], kicks[1]["id"]
    _pos, tab, lot, _usr, _tic, _top = chain.view(clip, CLIP.fn("sales"), first)
    chost = chain.view(clip, CLIP.fn("chost"))[0]
    _redo, price, _lot, _tab = chain.view(clip, CLIP.fn("getStatus"), first)
    part = min(lot // 3, (tab - chost) // price // 2)
    assert part > 0
    chain.send_as(OTHER, clip, CLIP.fn("take").encode(first, part, 2**200, OTHER, b""))
    chain.send_as(OTHER, clip, CLIP.fn("take").encode(second, 2**200, 2**200, OTHER, b""))
    takes = clip_events(chain, "ETH-A", "Take", start)
    assert len(takes) == 2

    got = await _synced(keeper, a)
    assert [c.kind for c in got] == ["bark"] * len(urns) + ["take", "take"]
    assert all(c.protocol == "maker-devnet" and c.liquidator == OTHER.lower() for c in got)
    assert [(c.block, c.log_index) for c in got] == sorted((c.block, c.log_index) for c in got)
    barks_on_chain = _logs(chain, e["dog"], DOG.event("Bark").topic0, start)
    assert [(c.tx_hash, c.log_index) for c in got[:len(urns)]] == [
        (lg["transactionHash"], int(lg["logIndex"], 16)) for lg in barks_on_chain]
    for c, k, urn in zip(got, kicks, urns):
        assert c.account == abi.to_checksum(urn) == c.detail["urn"]  # the urn, as the keeper names it
        assert c.detail["auction"] == f"ETH-A#{k['id']}" and c.detail["coin"] == k["coin"] and c.detail["tab"] == k["tab"]
        assert c.value_usd_e8 == k["coin"] * 10**8 // RAD  # the incentive, DAI at $1
    # a take's value: the slice at the oracle price the adapter last read (its held-take mark), less owe
    mark = a.ilks["ETH-A"].feed_price
    assert mark > 0
    for c, t in zip(got[len(urns):], takes):
        assert c.account == f"ETH-A#{t['id']}"
        assert c.detail["owe"] == t["owe"] and c.detail["price"] == t["price"] and "needs_sender" not in c.detail
        assert c.detail["slice"] == t["owe"] // t["price"] and c.detail["vow"].lower() == e["vow"].lower()
        assert c.detail["mark"] == mark and c.value_usd_e8 == (t["owe"] // t["price"] * mark - t["owe"]) * 10**8 // RAD
    assert got[len(urns)].detail["tab_left"] > 0 and got[-1].detail["tab_left"] == 0  # partial, then the whole tab
    # drained: each once, and a block with nothing new adds nothing
    assert drained(keeper) == []
    chain.call("evm_mine")
    assert await _synced(keeper, a) == []
    # the keeper's own sync path saw the same auction events as before (unchanged)
    assert [x["kind"] for x in a.events[-(len(urns) + 2):]] == ["kick"] * len(urns) + ["take", "take"]


async def test_maker_the_keepers_own_barks_and_flash_takes_name_it_and_its_take_callee(chain, make_maker):
    e = ext(chain)
    chain.shock("WETH", -20)
    urns = set(unsafe_urns(chain, "ETH-A"))
    set_vat_dai(chain, KEEPER, 0)  # no Vat DAI: the takes are flash-takes through the TakeCallee
    keeper = await make_maker()
    a = maker(keeper)
    outs = await cycle(keeper)  # backfills the history, then barks
    drained(keeper)
    assert {o.realized["urn"] for o in of(outs, "bark")} == urns
    assert await cycle(keeper) == []  # sees its barks (and the auctions: all above the limit)
    got = drained(keeper)
    assert [c.kind for c in got] == ["bark"] * len(urns)
    assert {c.account for c in got} == {abi.to_checksum(u) for u in urns}
    assert all(c.liquidator == KEEPER.lower() for c in got)
    jump(chain, max(x.limit_in_s for x in a.auctions.values()) + 120)
    outs = await cycle(keeper)
    flash = of(outs, "flash_take")
    assert flash
    got = await _synced(keeper, a)
    takes = [c for c in got if c.kind == "take"]
    assert len(takes) == len(flash) and len(got) == len(takes)
    assert {c.liquidator for c in takes} == {e["take_callee"].lower()} == a.liquidator_addresses()
    assert {c.account for c in takes} == {o.opp.account for o in flash}
    assert drained(keeper) == []


async def test_maker_a_take_with_the_keepers_vat_dai_names_the_keeper(chain, make_maker):
    e = ext(chain)
    chain.shock("WETH", -20)
    urn = unsafe_urns(chain, "ETH-A")[0]
    chain.send_as(OTHER, e["dog"], DOG.fn("bark").encode(ilk_id("ETH-A"), urn, OTHER))
    keeper = await make_maker(routes=["inventory"], bark=False)
    a = maker(keeper)
    await cycle(keeper)
    got = drained(keeper)
    assert got[-1].kind == "bark" and got[-1].liquidator == OTHER.lower() and got[-1].account == abi.to_checksum(urn)
    set_vat_dai(chain, KEEPER, 10**7 * RAD)
    jump(chain, max(x.limit_in_s for x in a.auctions.values()) + 60)
    taken = of(await cycle(keeper), "take")
    assert taken
    got = await _synced(keeper, a)
    assert [(c.kind, c.liquidator, c.account) for c in got] == [("take", KEEPER.lower(), o.opp.account) for o in taken]
    assert got[0].detail["owe"] == taken[0].realized["owe"]


# -- perps ----------------------------------------------------------------------------------------
async def test_perps_competitor_liquidations_are_reported_once_in_order(chain, make_keeper):
    p = perps(chain)
    keeper, adapter = await perps_keeper(make_keeper, dry_run=True)
    assert adapter.usd_token and adapter.usd_token.lower() == p["usd_token"].lower()
    assert adapter.liquidator_addresses() == set()
    await keeper.cycle(await keeper.read_head())
    drained(keeper)
    move(chain, ETH, -20)
    move(chain, BTC, +20)
    ids = [x["id"] for x in p["accounts"]]
    eligible = [x for x in ids if can_liquidate(chain, x)]
    assert len(eligible) >= 5
    start = chain.block_number() + 1
    for x in eligible:
        chain.send_as(OTHER, p["market"], MARKET.fn("liquidate").encode(x))
    flagged = chain.view(p["market"], MARKET.fn("flaggedAccounts"))[0]
    if flagged:  # what is left of a large account after the window's capacity, by OTHER too
        chain.call("evm_increaseTime", [3600])
        chain.call("evm_mine")
        chain.send_as(OTHER, p["market"], MARKET.fn("liquidateFlagged").encode(10))
    attempts = _logs(chain, p["market"], MARKET.event("AccountLiquidationAttempt").topic0, start)
    decoded = [MARKET.event("AccountLiquidationAttempt").decode(lg) for lg in attempts]
    closed = {(lg["transactionHash"], MARKET.event("PositionLiquidated").decode(lg)["accountId"])
              for lg in _logs(chain, p["market"], MARKET.event("PositionLiquidated").topic0, start)}
    real = [(lg, ev) for lg, ev in zip(attempts, decoded)
            if ev["reward"] > 0 or (lg["transactionHash"], ev["accountId"]) in closed]
    got = await _synced(keeper, adapter)
    assert [(c.tx_hash, c.log_index) for c in got] == [(lg["transactionHash"], int(lg["logIndex"], 16)) for lg, _ in real]
    assert all(c.kind == "liquidation" and c.protocol == "perps-devnet" for c in got)
    assert all(c.liquidator == OTHER.lower() for c in got if c.detail["reward"] > 0)
    assert [int(c.account) for c in got[:len(eligible)]] == eligible
    assert len(got) > len(eligible) if flagged else len(got) == len(eligible)  # liquidateFlagged's progress
    assert all(c.detail["positions"] for c in got[len(eligible):])
    flags = {ev["accountId"]: ev["flagReward"] for ev in events(chain, "AccountFlaggedForLiquidation", start)}
    for c, (_lg, ev) in zip(got, real):
        assert c.account == str(ev["accountId"]) and c.detail["reward"] == ev["reward"]
        assert c.value_usd_e8 == ev["reward"] // 10**10
        assert c.detail["full"] == ev["fullLiquidation"]
    for c in got[:len(eligible)]:
        assert c.detail["flagged"] and c.detail["flag_reward"] == flags[int(c.account)] == c.detail["reward"]
    assert drained(keeper) == []
    chain.call("evm_mine")
    assert await _synced(keeper, adapter) == []


async def test_perps_the_keepers_own_liquidations_name_the_keeper(chain, make_keeper):
    move(chain, ETH, -20)
    move(chain, BTC, +20)
    keeper, adapter = await perps_keeper(make_keeper)
    outs = await keeper.cycle(await keeper.read_head())
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert confirmed
    drained(keeper)  # the history up to the keeper's sends
    got = await _synced(keeper, adapter)
    assert {c.account for c in got} == {o.opp.account for o in confirmed}
    assert all(c.liquidator == KEEPER.lower() and "needs_sender" not in c.detail for c in got)
    assert sum(c.detail["reward"] for c in got) == sum(o.realized["reward"] for o in confirmed)
    assert all(c.value_usd_e8 == c.detail["reward"] // 10**10 for c in got)
    assert drained(keeper) == []
