"""Morpho Blue liquidations in the oracle update's own block: the keeper follows the feeds its
markets' oracles read, turns a pending feed answer into the market's next oracle price (the
oracle's formula, checked against its price() every block), and sends the liquidations it
opens right behind the update.

On the devnet: automine off, a WETH feed update sent to the mempool, the keeper reacts, then
the block is mined; the Morpho liquidations must be in that block, after the update, and
succeed; the ones Morpho's own health check found liquidatable after the update are all of
them."""

from __future__ import annotations

import asyncio

import pytest

from keeper import abi
from keeper.devnet.deploy import DEPLOYER
from keeper.devnet.prices import _aggregator, get_price
from keeper.protocols.morpho_blue.calls import EV_LIQUIDATE

from .test_morpho_keeper import MORPHO, all_positions, chain_says_unhealthy, empty_keeper_loan_tokens, extras
from .test_same_block import SET_ANSWER, _until, mine_behind

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_morpho_liquidations_land_in_the_oracle_updates_own_block(chain, make_keeper):
    empty_keeper_loan_tokens(chain)  # no capital: the callback route only
    keeper = await make_keeper(only=MORPHO, KEEPER_CHAIN__POLL_INTERVAL_S="0.2")
    run = asyncio.create_task(keeper.run())
    try:
        adapter = keeper.adapters[MORPHO]
        # the markets' oracles are reproduced from their feeds, and those feeds are watched
        assert await _until(lambda: keeper.cycles >= 1 and keeper.pending is not None
                            and keeper.pending.mode == "filter" and adapter.oracle_sources()
                            and all(s.lower() in keeper._watched for s in adapter.oracle_sources()))
        assert all(m.oracle_exact for m in adapter.markets.values())
        assert not adapter.last_opportunities  # nothing liquidatable before the move
        chain.call("evm_setAutomine", [False])
        agg = _aggregator(chain.dep, "WETH")
        update = chain.send_as_pending(DEPLOYER, agg, SET_ANSWER.encode(get_price(chain.url, chain.dep, "WETH") * 88 // 100))

        _block, ours = await mine_behind(chain, update)
        liquidated = set()
        for h in ours:
            rc = chain.call("eth_getTransactionReceipt", [h])
            assert rc["status"] == "0x1", rc
            for lg in rc["logs"]:
                if lg["topics"][0] == EV_LIQUIDATE.topic0:
                    liquidated.add((lg["topics"][1].lower(), abi.to_checksum("0x" + lg["topics"][3][-40:])))
        assert len(liquidated) == len(ours)
        # every borrower Morpho's own check would have let be liquidated at the new price (one
        # action per borrower and block) got one in the update's block
        by_id = {m["id"].lower(): m for m in extras(chain)["markets"]}
        before = {(mid.lower(), who) for mid, who in all_positions(chain)}
        still = {k for k in before if chain_says_unhealthy(chain, by_id[k[0]], k[1])}
        borrowers_hit = {who for _, who in liquidated}
        assert not {who for _, who in still} - borrowers_hit, (still, liquidated)
        assert keeper.reactions >= 1
    finally:
        chain.call("evm_setAutomine", [True])
        keeper.stop()
        await asyncio.wait_for(run, 15)
