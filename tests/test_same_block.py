"""Liquidations in the oracle update's own block: the keeper sees the update while it is
pending, re-prices the exposed accounts at the pending answer (the local health model), and
sends the liquidations to land right behind it, in the same block.

On the devnet: automine off, the update sent to the mempool, the keeper reacts, then the
block is mined; the liquidations must be in that block, after the update, and succeed."""

from __future__ import annotations

import asyncio
import time

from keeper import abi
from keeper.devnet.deploy import DEPLOYER
from keeper.devnet.prices import _aggregator, get_price

AAVE = "aave-v3-devnet"
SET_ANSWER = abi.Function("setAnswer", ["int256"], [])
LIQUIDATION_TOPIC = abi.load("AavePool").event("LiquidationCall").topic0


async def _until(cond, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(0.02)
    return bool(cond())


async def mine_behind(chain, update: str) -> tuple[dict, list[str]]:
    """Waits for the keeper's sends behind the pending `update`, mines the block, and checks
    the update is first in it and every send the keeper made is in it; returns (block, ours)."""
    from tests.conftest import KEEPER

    def ours_in_pool() -> list[str]:
        content = chain.call("txpool_content").get("pending", {})
        return [tx["hash"] for sender, txs in content.items() if sender.lower() == KEEPER.lower()
                for tx in txs.values()]

    assert await _until(lambda: len(ours_in_pool()) > 0), "the keeper sent nothing behind the update"
    await asyncio.sleep(0.3)  # let the batch send every liquidation it chose
    sent = ours_in_pool()
    chain.call("evm_mine")
    block = chain.call("eth_getBlockByNumber", ["latest", False])
    hashes = block["transactions"]
    assert hashes[0] == update, "the oracle update is first in its block"
    ours = [h for h in hashes if h in sent]
    assert ours and len(ours) == len(sent), (hashes, sent)
    return block, ours


async def test_liquidations_land_in_the_oracle_updates_own_block(chain, make_keeper):
    keeper = await make_keeper(only=AAVE, KEEPER_CHAIN__POLL_INTERVAL_S="0.2")
    run = asyncio.create_task(keeper.run())
    try:
        assert await _until(lambda: keeper.cycles >= 1 and keeper.pending is not None and keeper.pending.mode == "filter")
        adapter = keeper.adapters[AAVE]
        assert adapter.model and not adapter.last_opportunities  # nothing liquidatable before the move
        chain.call("evm_setAutomine", [False])
        agg = _aggregator(chain.dep, "WETH")
        new_price = get_price(chain.url, chain.dep, "WETH") * 88 // 100
        update = chain.send_as_pending(DEPLOYER, agg, SET_ANSWER.encode(new_price))

        block, ours = await mine_behind(chain, update)
        liquidated = []
        for h in ours:
            rc = chain.call("eth_getTransactionReceipt", [h])
            assert rc["status"] == "0x1", rc
            assert int(rc["blockNumber"], 16) == int(block["number"], 16)
            liquidated += ["0x" + lg["topics"][3][-40:] for lg in rc["logs"] if lg["topics"][0] == LIQUIDATION_TOPIC]
        assert len(liquidated) == len(ours)
        assert keeper.reactions >= 1
    finally:
        chain.call("evm_setAutomine", [True])
        keeper.stop()
        await asyncio.wait_for(run, 15)
