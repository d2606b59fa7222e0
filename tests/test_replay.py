"""`keeper replay` (backtest), tested on history made on the devnet and replayed on a fork of
the devnet at the block before it.

The history, from block A (the devnet's head when the test starts):
- block A+1 (M1): WETH -12% (a pending setAnswer, mined together with) a competitor's
  liquidation of one account it made liquidatable (`raced_user`): same block as the move;
- A+2, A+3: empty blocks;
- A+4: another competitor liquidates a second account made liquidatable in M1 (`late_user`);
- M2 = A+5: WETH another -8% (keeper.devnet.prices.set_price, its own block, plus whatever
  blocks the devnet's extensions add after a price move);
- M2's last block + 3 (after two empty blocks): a third competitor liquidates an account only
  M2 made liquidatable (`late2`).

The per-block keeper on the fork sees a move in the block it is mined in and its liquidations
land in the next block. So, precisely:
- `raced_user`: `raced`, the keeper's liquidation on the fork in M1+1, blocks_ahead = -1;
- `late_user`: `ours`, the keeper in M1+1 = A+2, blocks_ahead = (A+4) - (A+2) = 2;
- `late2`: `ours`, the keeper in M2+1 (the setAnswer's block + 1), blocks_ahead = its block - (M2+1).
That is the per-block keeper (--mempool off). With the mempool replayed (the default), the
keeper reacts to each pending update and lands in the move's own block: `raced_user` is
`raced` with blocks_ahead 0 (same block: a tie goes to the competitor), `late_user` `ours` by 3,
`late2` `ours` by its block - M2.
"""

from __future__ import annotations

import tomllib

import pytest

from keeper import abi
from keeper.devnet.deploy import DEPLOYER
from keeper.devnet.prices import _aggregator, get_price, set_price

from .conftest import DEVNET_CONFIG, KEEPER_KEY, N_BORROWERS, Chain, only_env, rpc

AAVE = "aave-v3-devnet"
SET_ANSWER = abi.Function("setAnswer", ["int256"], [])
RIVALS = ["0x000000000000000000000000000000000000c0DE", "0x000000000000000000000000000000000000c0dF",
          "0x000000000000000000000000000000000000C0e0"]
GWEI = 10**9


@pytest.fixture
def chain(tmp_path):
    """A devnet of its own (from the cached state) for each history: a fork reads the state at
    the history's first block, which the session's devnet, after many tests' snapshots and
    reverts, does not always keep (anvil answers BlockOutOfRangeError)."""
    from keeper.devnet import start_devnet

    node, dep = start_devnet(port=0, n_borrowers=N_BORROWERS, log_path=tmp_path / "anvil.log")
    try:
        yield Chain(node.url, dep)
    finally:
        node.stop()


def _health(chain, users: list[str]) -> dict[str, int]:
    fn = abi.load("AavePool").fn("getUserAccountData")
    return {u: chain.view(chain.dep.pool, fn, u)[5] for u in users}


def liquidatable_at(chain, price: int) -> list[str]:
    """The borrowers with health < 1 if WETH were at `price` (tried under a snapshot)."""
    snap = chain.call("evm_snapshot")
    try:
        chain.send_as(DEPLOYER, _aggregator(chain.dep, "WETH"), SET_ANSWER.encode(price), gas=200_000)
        return sorted(u for u, hf in _health(chain, list(chain.dep.borrowers)).items() if hf < 10**18)
    finally:
        chain.call("evm_revert", [snap])


def positions(chain, user: str) -> tuple[str, str]:
    """(collateral, debt) token addresses of an Aave borrower: WETH first when it is collateral."""
    fn = abi.load("AaveProtocolDataProvider").fn("getUserReserveData")
    coll, debt = [], []
    for sym in ("WETH", "WBTC", "USDC", "USDT", "LINK"):
        tok = chain.dep.tokens.get(sym)
        if tok is None:
            continue
        d = chain.view(chain.dep.data_provider, fn, tok, user)
        if d[0] > 0:
            coll.append(tok)
        if d[2] > 0 or d[1] > 0:
            debt.append(tok)
    assert coll and debt, user
    return coll[0], debt[0]


def mine(chain, n: int = 1) -> None:
    for _ in range(n):
        chain.call("evm_mine")


def rival(chain, who: str, user: str) -> int:
    """A competitor's liquidation of `user`, its three transactions in one block; returns it."""
    coll, debt = positions(chain, user)
    chain.call("evm_setAutomine", [False])
    try:
        chain.rival_liquidates(who, coll, debt, user)
        mine(chain)
    finally:
        chain.call("evm_setAutomine", [True])
    return chain.block_number()


def env_for(chain) -> dict[str, str]:
    names = [p["name"] for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"]]
    return {"KEEPER_PRIVATE_KEY": KEEPER_KEY, **only_env(AAVE),
            f"KEEPER_PROTOCOLS__{names.index(AAVE)}__ROUTES": '["inventory"]'}


@pytest.mark.asyncio(loop_scope="session")
async def test_replay_of_devnet_history_reports_raced_and_ours(chain, monkeypatch):
    from keeper.devnet import free_port
    from keeper.replay import render, replay

    liq = abi.load("AavePool").event("LiquidationCall")
    a = chain.block_number()
    p0 = get_price(chain.url, chain.dep, "WETH")
    p1, p2 = p0 * 88 // 100, p0 * 88 // 100 * 92 // 100
    first = liquidatable_at(chain, p1)
    second = [u for u in liquidatable_at(chain, p2) if u not in first]
    assert len(first) >= 2 and second, (first, second)
    raced_user, late_user, late2 = first[0], first[1], second[0]

    # M1: the move and the competitor in the same block (the move's tip is higher: it goes first)
    chain.call("evm_setAutomine", [False])
    try:
        chain.call("anvil_impersonateAccount", [DEPLOYER])
        chain.call("eth_sendTransaction", [{"from": DEPLOYER, "to": _aggregator(chain.dep, "WETH"),
                                            "data": "0x" + SET_ANSWER.encode(p1).hex(), "gas": hex(200_000),
                                            "maxFeePerGas": hex(1000 * GWEI), "maxPriorityFeePerGas": hex(200 * GWEI)}])
        chain.rival_liquidates(RIVALS[0], *positions(chain, raced_user), raced_user)
        mine(chain)
    finally:
        chain.call("evm_setAutomine", [True])
    m1 = chain.block_number()
    assert m1 == a + 1
    mine(chain, 2)
    late_block = rival(chain, RIVALS[1], late_user)
    assert late_block == a + 4
    m2 = set_price(chain.url, chain.dep, "WETH", p2)
    m2_end = chain.block_number()
    mine(chain, 2)
    late2_block = rival(chain, RIVALS[2], late2)
    assert late2_block == m2_end + 3
    mine(chain)
    b = chain.block_number()
    on_source = [liq.decode(lg) for lg in rpc(chain.url, "eth_getLogs", [{
        "address": chain.dep.pool, "fromBlock": hex(a + 1), "toBlock": hex(b), "topics": [liq.topic0]}])]
    assert [(e["user"].lower(), e["liquidator"].lower()) for e in on_source] == [
        (u.lower(), r.lower()) for u, r in zip((raced_user, late_user, late2), RIVALS)]
    source_head = chain.call("eth_getBlockByNumber", ["latest", False])

    monkeypatch.setenv("KEEPER_PRIVATE_KEY", KEEPER_KEY)  # the keeper signs with the config's key variable
    port = free_port()
    rep = await replay(DEVNET_CONFIG, chain.url, a, b, environ=env_for(chain), port=port, mempool=False)
    print(render(rep))

    # the fork is gone, the source untouched
    with pytest.raises(OSError):
        rpc(f"http://127.0.0.1:{port}", "eth_chainId")
    assert chain.call("eth_getBlockByNumber", ["latest", False])["hash"] == source_head["hash"]

    assert rep["misaligned_blocks"] == [] and rep["oracle_updates_failed"] == []
    assert rep["oracle_updates_replayed"] == 2  # the two setAnswer transactions
    rows = {r["account"].lower(): r for r in rep["liquidations"]}
    assert len(rep["liquidations"]) == 3
    r = rows[raced_user.lower()]
    assert (r["class"], r["block"], r["our_block"], r["blocks_ahead"]) == ("raced", m1, m1 + 1, -1), r
    assert r["competitor"].lower() == RIVALS[0].lower()
    r = rows[late_user.lower()]
    assert (r["class"], r["block"], r["our_block"], r["blocks_ahead"]) == ("ours", late_block, m1 + 1, 2), r
    r = rows[late2.lower()]
    assert (r["class"], r["block"], r["our_block"], r["blocks_ahead"]) == ("ours", late2_block, m2 + 1, late2_block - m2 - 1), r
    assert late2_block - m2 - 1 >= 2  # the devnet's extensions add their own blocks after the move
    t = rep["totals"]
    assert (t["ours"], t["raced"], t["filtered"], t["unseen"], t["source_liquidations"]) == (2, 1, 0, 0, 3)
    assert t["competitor_value_usd"] > 0 and 0 < t["ours_value_usd"] < t["competitor_value_usd"]
    assert t["keeper_value_usd"] >= t["ours_value_usd"]
    assert rep["not_covered"] == []
    assert (rep["mempool"], rep["reactions"]) == (False, 0)

    # the same history with the mempool replayed: the keeper sees each update while pending and
    # lands right behind it, in the move's own block
    rep = await replay(DEVNET_CONFIG, chain.url, a, b, environ=env_for(chain), port=free_port(), mempool=True)
    print(render(rep))
    assert rep["mempool"] and rep["reactions"] == 2  # it sent behind both updates
    assert rep["misaligned_blocks"] == [] and rep["oracle_updates_failed"] == []
    rows = {r["account"].lower(): r for r in rep["liquidations"]}
    r = rows[raced_user.lower()]  # same block as the competitor: a tie, the competitor's
    assert (r["class"], r["block"], r["our_block"], r["blocks_ahead"]) == ("raced", m1, m1, 0), r
    r = rows[late_user.lower()]
    assert (r["class"], r["block"], r["our_block"], r["blocks_ahead"]) == ("ours", late_block, m1, 3), r
    r = rows[late2.lower()]
    assert (r["class"], r["block"], r["our_block"], r["blocks_ahead"]) == ("ours", late2_block, m2, late2_block - m2), r
    assert chain.call("eth_getBlockByNumber", ["latest", False])["hash"] == source_head["hash"]


def test_replay_command_prints_the_table_and_json_of_a_quiet_range(chain, monkeypatch, capsys):
    import json

    from keeper.cli import main

    for k, v in env_for(chain).items():
        monkeypatch.setenv(k, v)
    a = chain.block_number()
    mine(chain, 2)
    args = ["replay", "--config", str(DEVNET_CONFIG), "--source-rpc", chain.url, "--from-block", str(a),
            "--to-block", str(a + 2)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"blocks {a}..{a + 2}" in out and "0 liquidations on the source" in out
    assert main(args + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"]["source_liquidations"] == 0 and doc["liquidations"] == [] and doc["misaligned_blocks"] == []


@pytest.mark.parametrize("span, says", [((5, 3), "--from-block 5 is after --to-block 3"),
                                        ((0, 10**9), "at most")])
def test_bad_replay_ranges_are_one_error_line_and_exit_2(chain, span, says, capsys):
    from keeper.cli import main

    code = main(["replay", "--config", str(DEVNET_CONFIG), "--source-rpc", chain.url,
                 "--from-block", str(span[0]), "--to-block", str(span[1])])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and says in err[0], err


@pytest.mark.asyncio(loop_scope="session")
async def test_replay_covers_maker_barks_and_perps_liquidations(chain, monkeypatch):
    """History: WETH -20% (the feed, then the Spotter poked: both replayed, the Spotter poke
    as a price update of Maker), three empty blocks, then a competitor barks an unsafe ETH-A
    vault and liquidates a perps account it made eligible. The keeper on the fork (Maker and
    perps only) barked and liquidated them right after the move: both `ours`."""
    from keeper.devnet import free_port
    from keeper.replay import render, replay

    from .test_maker_keeper import DOG, ilk_id, unsafe_urns
    from .test_maker_keeper import ext as maker_ext
    from .test_perps_keeper import MARKET, can_liquidate, perps

    a = chain.block_number()
    set_price(chain.url, chain.dep, "WETH", get_price(chain.url, chain.dep, "WETH") * 80 // 100)
    moved = chain.block_number()  # the feed, then the devnet's Spotter poke and pool arbitrage
    mine(chain, 3)
    urns = unsafe_urns(chain, "ETH-A")
    accounts = [x["id"] for x in perps(chain)["accounts"] if can_liquidate(chain, x["id"])]
    assert urns and accounts, (urns, accounts)
    chain.call("anvil_setBalance", [RIVALS[0], hex(10**20)])
    chain.send_as(RIVALS[0], maker_ext(chain)["dog"], DOG.fn("bark").encode(ilk_id("ETH-A"), urns[0], RIVALS[0]))
    bark_block = chain.block_number()
    chain.send_as(RIVALS[0], perps(chain)["market"], MARKET.fn("liquidate").encode(accounts[0]))
    perps_block = chain.block_number()
    mine(chain)
    b = chain.block_number()

    names = [p["name"] for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"]]
    env = {"KEEPER_PRIVATE_KEY": KEEPER_KEY, **{f"KEEPER_PROTOCOLS__{i}__ENABLED": "true" if n in (
        "maker-devnet", "perps-devnet") else "false" for i, n in enumerate(names)}}
    monkeypatch.setenv("KEEPER_PRIVATE_KEY", KEEPER_KEY)
    rep = await replay(DEVNET_CONFIG, chain.url, a, b, environ=env, port=free_port())
    print(render(rep))
    assert rep["not_covered"] == [] and rep["oracle_updates_failed"] == [] and rep["misaligned_blocks"] == []
    assert rep["oracle_updates_replayed"] >= 2  # the feed and the Spotter poke
    rows = {(r["protocol"], r["account"].lower()): r for r in rep["liquidations"]}
    bark = rows[("maker-devnet", urns[0].lower())]
    assert (bark["class"], bark["block"], bark["competitor"].lower()) == ("ours", bark_block, RIVALS[0].lower()), bark
    assert a < bark["our_block"] <= moved < bark_block and bark["blocks_ahead"] == bark_block - bark["our_block"]
    liq = rows[("perps-devnet", str(accounts[0]))]
    assert (liq["class"], liq["block"]) == ("ours", perps_block), liq
    assert a < liq["our_block"] < perps_block
    assert len(rep["liquidations"]) == 2  # the competitor's bark and perps liquidation, nothing else on the source


@pytest.mark.asyncio(loop_scope="session")
async def test_replay_follows_the_source_pools_with_its_swaps(chain, monkeypatch):
    """History: WETH +1% with the devnet's pools arbitraged to it (swaps in the pools the
    keeper prices with). Replayed, those swaps are sent again on the fork in the
    source's order, so at the last block every pool of the keeper's book is exactly as on the
    source (the keeper has nothing to liquidate on a rise)."""
    from keeper.devnet import free_port
    from keeper.replay import render, replay

    a = chain.block_number()
    chain.shock("WETH", 1)  # one move: a fork of the devnet reaches back only so many blocks
    b = chain.block_number()
    slot0, reserves = abi.Function("slot0", [], []), abi.Function("getReserves", [], [])
    states: dict[str, tuple[abi.Function, str, str]] = {}

    def check(url: str, rep: dict) -> None:
        for pool in rep["pools"]:
            for fn in (slot0, reserves):
                try:
                    src = chain.call("eth_call", [{"to": pool, "data": "0x" + fn.selector.hex()}, hex(b)])
                except RuntimeError:
                    continue  # not that kind of pool
                states[pool] = (fn, src, rpc(url, "eth_call", [{"to": pool, "data": "0x" + fn.selector.hex()}, "latest"]))

    monkeypatch.setenv("KEEPER_PRIVATE_KEY", KEEPER_KEY)
    rep = await replay(DEVNET_CONFIG, chain.url, a, b, environ=env_for(chain), port=free_port(), on_fork=check)
    print(render(rep))
    assert rep["liquidations"] == [] and rep["extra"] == []
    pools = rep["pools"]
    assert rep["market_txs_replayed"] >= 2 and rep["market_txs_failed"] == [] and len(pools) >= 4
    assert len(states) == len(pools)
    moved = [p for p, (fn, src, _) in states.items()
             if src != rpc(chain.url, "eth_call", [{"to": p, "data": "0x" + fn.selector.hex()}, hex(a)])]
    assert moved, "the history moved no pool"
    assert all(src == fork for _, src, fork in states.values()), states
