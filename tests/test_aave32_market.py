"""The second Aave market on the devnet: aave-v3-origin v3.2.0 bytecode (keeper/devnet/aave32.py),
and the adapter applying that version's rules (keeper/protocols/aave_v3/versions.py)."""

from __future__ import annotations

import pytest

from keeper import abi
from keeper.devnet import aave32, aave32_artifacts
from keeper.protocols.aave_v3 import math as am, versions

from .conftest import KEEPER

V32 = "aave-v3.2-devnet"
ASYNC = pytest.mark.asyncio(loop_scope="session")
POOL = abi.load("AavePool")
LIQ = POOL.event("LiquidationCall")
F_ACCOUNT = POOL.fn("getUserAccountData")
F_PRICE = abi.load("AaveOracle").fn("getAssetPrice")
F_CONFIG = POOL.fn("getConfiguration")

# keccak256 of the sources in aave-dao/aave-v3-origin at tag v3.2.0 (7c6023e): the artifacts'
# metadata names exactly these
V320_SOURCES = {
    "src/contracts/protocol/pool/Pool.sol": "0x443ee851f8a6932021819995f7449f281617f54ee77eb12bcb27b8595ab6b056",
    "src/contracts/protocol/libraries/logic/LiquidationLogic.sol":
        "0x3f234296a23845dad5c5940fc33eede8321eedbd2c1e2df2221d02c124d339e8",
    "src/contracts/protocol/libraries/logic/GenericLogic.sol":
        "0x8bb20dbfa839be67362b2515b60484019e011791eae7c7c166802e5c6400d9ff",
    "src/contracts/instances/PoolInstance.sol": "0x7c39b010eb284b1a435308295520422e7dcb4bbb58e13872e5d7d67402cbe411",
}


def x32(chain) -> dict:
    return chain.dep.extras["aave32"]


def liquidations(chain, pool: str, from_block: int) -> list[dict]:
    logs = chain.call("eth_getLogs", [{"address": pool, "fromBlock": hex(from_block), "toBlock": "latest",
                                       "topics": [LIQ.topic0]}])
    return [{**LIQ.decode(lg), "block": int(lg["blockNumber"], 16)} for lg in logs]


def test_version_is_classified_from_what_the_pool_answers():
    assert versions.classify(1, False, False, False).name == "v3.0"
    v31 = versions.classify(4, False, True, False)
    assert (v31.name, v31.emode, v31.grace_period, v31.local_model) == ("v3.1", "reserve", True, False)
    v32 = versions.classify(5, True, True, False)
    assert (v32.name, v32.rules, v32.emode, v32.stable_debt, v32.local_model) == ("v3.2", "v3.0", "bitmap", False, True)
    v33 = versions.classify(6, True, True, True)
    assert (v33.name, v33.rules, v33.local_model) == ("v3.3+", "v3.3", False)


def test_artifacts_are_aave_v3_origin_3_2_0_revision_5(chain):
    hashes = aave32_artifacts.source_hashes("PoolInstance")
    for path, h in V320_SOURCES.items():
        assert hashes[path] == h, path
    assert aave32_artifacts.source_hashes("LiquidationLogic")[
        "src/contracts/protocol/libraries/logic/LiquidationLogic.sol"] == V320_SOURCES[
        "src/contracts/protocol/libraries/logic/LiquidationLogic.sol"]
    names = {f["name"] for f in aave32_artifacts.artifact("PoolInstance")["abi"] if f["type"] == "function"}
    assert {"getEModeCategoryCollateralBitmap", "getLiquidationGracePeriod"} <= names
    assert "getReserveDeficit" not in names
    assert x32(chain)["revision"] == 5 and x32(chain)["release"] == "aave-v3-origin v3.2.0"
    # the deployed pool is that bytecode (runtime code of the implementation behind the proxy)
    impl = chain.call("eth_getStorageAt", [x32(chain)["pool"],
                                           "0x360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc", "latest"])
    code = chain.call("eth_getCode", ["0x" + impl[-40:], "latest"])
    assert len(code) > 2 * 20_000


@ASYNC
async def test_adapter_detects_each_market_version_and_applies_its_rules(chain, make_keeper):
    k = await make_keeper(dry_run=True)
    old, new = k.adapters["aave-v3-devnet"], k.adapters[V32]
    assert (old.version.name, old.version.revision, old.version.emode) == ("v3.0", 1, "reserve")
    assert (new.version.name, new.version.revision, new.version.emode) == ("v3.2", 5, "bitmap")
    assert new.version.grace_period and not new.version.stable_debt and new.version.local_model
    assert new.cfg.rules == "v3.0" and new.cfg.health == "local"  # 3.2.0's LiquidationLogic sizes as v3.0's
    tokens = x32(chain)["tokens"]
    reserve_ids = {r.symbol: r.id for r in new.reserves}
    assert new.emode_bitmaps == {1: (1 << reserve_ids["WETH"]) | (1 << reserve_ids["WBTC"])}
    assert {r.asset for r in new.reserves} == set(tokens.values())
    assert all(r.emode_category == 0 for r in new.reserves)  # v3.2 leaves the reserves' own eMode bits unset
    assert all(int(r.stable_debt, 16) == 0 for r in new.reserves)


@ASYNC
async def test_local_health_equals_get_user_account_data_on_v32_with_emode_bitmaps(chain, make_keeper):
    k = await make_keeper(dry_run=True, only=V32)
    a = k.adapters[V32]
    for step in range(3):
        a.checked_at = None  # a full check: every account against getUserAccountData
        head = await k.read_head()
        await k.cycle(head)
        assert a.disagreements == 0
        borrowers = {b["address"] for b in x32(chain)["borrowers"]}
        assert borrowers <= set(a.health)
        for u in borrowers:
            chain_hd = chain.view(x32(chain)["pool"], F_ACCOUNT, u)
            assert (a.health[u].collateral_base, a.health[u].debt_base, a.health[u].health_factor_wad) == (
                chain_hd[0], chain_hd[1], chain_hd[5])
        emode_users = [b["address"] for b in x32(chain)["borrowers"] if b["emode"]]
        assert emode_users and all(a.model[u].emode_category == 1 for u in emode_users)
        chain.call("evm_increaseTime", [86_400 * (step + 1) * 30])  # interest accrues
        chain.call("evm_mine")
        chain.shock("WBTC", -3)


@ASYNC
async def test_emode_position_is_liquidated_with_the_category_bonus_to_the_wei(chain, make_keeper):
    x = x32(chain)
    chain.shock("WETH", -8)
    emode_user = next(b["address"] for b in x["borrowers"] if b["label"] == "eMode WETH->USDC")
    plain_user = next(b["address"] for b in x["borrowers"] if b["label"] == "WETH->USDC")
    start = chain.block_number()
    k = await make_keeper(only=V32)
    head = await k.read_head()
    outs = await k.cycle(head)
    confirmed = {o.opp.account: o for o in outs if o.status == "confirmed"}
    assert {emode_user, plain_user} <= set(confirmed), [(o.opp.account, o.status, o.reason) for o in outs]
    events = {e["user"].lower(): e for e in liquidations(chain, x["pool"], start + 1)}
    assert len(events) == len(confirmed)
    weth, usdc = x["tokens"]["WETH"], x["tokens"]["USDC"]
    for user, bonus in ((emode_user, x["emode"]["1"]["liquidation_bonus"]), (plain_user, aave32.RISK["WETH"][2])):
        ev, o = events[user.lower()], confirmed[user]
        assert ev["collateralAsset"].lower() == weth.lower() and ev["debtAsset"].lower() == usdc.lower()
        assert ev["liquidator"].lower() == x["flash_liquidator"].lower()
        # the protocol paid exactly the category's bonus (eMode) or the reserve's (not in eMode):
        # LiquidationLogic's arithmetic with the prices of the block it ran in
        blk = hex(ev["block"])
        c_price = chain.view(x["oracle"], F_PRICE, weth, block=blk)[0]
        d_price = chain.view(x["oracle"], F_PRICE, usdc, block=blk)[0]
        fee = (chain.view(x["pool"], F_CONFIG, weth, block=blk)[0][0] >> 152) & 0xFFFF
        liq = am.collateral_for_debt(ev["debtToCover"], am.Side(d_price, 10**6, 2**200), am.Side(c_price, 10**18, 2**200),
                                     bonus, fee)
        assert ev["liquidatedCollateralAmount"] == liq.collateral_to_liquidator
        # and the keeper predicted it: to the wei for an exact amount
        d, r = o.opp.detail, o.realized
        assert r["debt_repaid"] == ev["debtToCover"] and r["collateral_received"] == ev["liquidatedCollateralAmount"]
        assert d.debt_requested == d.debt_to_cover  # HF > 0.95: half the debt, an exact amount
        assert (r["debt_repaid"], r["collateral_received"]) == (d.debt_to_cover, d.collateral_to_liquidator)
        assert o.expected_profit_usd_e8 > 0
        if user == emode_user:  # the category's 3%, not WETH's own 5%: the bitmap decides, not the reserve's bits
            assert liq.collateral_to_liquidator < am.collateral_for_debt(
                ev["debtToCover"], am.Side(d_price, 10**6, 2**200), am.Side(c_price, 10**18, 2**200),
                aave32.RISK["WETH"][2], fee).collateral_to_liquidator


@ASYNC
async def test_reserve_in_grace_period_is_skipped_until_the_period_ends_then_liquidated(chain, make_keeper):
    from structlog.testing import capture_logs

    x = x32(chain)
    until = aave32.set_grace_period(chain.url, x, "WETH", 3_600)
    now = int(chain.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    assert until == now + 3_600
    chain.shock("WETH", -10)
    k = await make_keeper(only=V32)
    start, nonce = chain.block_number(), chain.nonce(KEEPER)
    with capture_logs() as logs:
        outs = await k.cycle(await k.read_head())
    assert [o for o in outs if o.status == "confirmed"] == []
    assert liquidations(chain, x["pool"], start) == []
    graced = [e for e in logs if e.get("event") == "skipped" and e.get("reason") == "grace_period"]
    assert graced and all("WETH" in e["asset"] and e["until"] == until for e in graced)
    assert chain.nonce(KEEPER) == nonce  # nothing sent
    # the period ends: block.timestamp > until
    chain.call("evm_setNextBlockTimestamp", [until + 1])
    chain.call("evm_mine")
    with capture_logs() as logs:
        outs = await k.cycle(await k.read_head())
    assert [o for o in outs if o.status == "confirmed"], [(o.opp.account, o.status, o.reason) for o in outs]
    assert not [e for e in logs if e.get("reason") == "grace_period"]
    assert liquidations(chain, x["pool"], start)


def test_config_names_the_v32_market_and_the_keepers_liquidator_for_it(chain):
    import tomllib

    from .conftest import DEVNET_CONFIG

    (entry,) = [p for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"] if p["name"] == V32]
    assert entry["kind"] == "aave_v3" and entry.get("enabled", True)
    assert entry["pool_addresses_provider"] == x32(chain)["provider"]
    assert entry["flash_liquidator"] == x32(chain)["flash_liquidator"]
    owner = chain.call("eth_call", [{"to": x32(chain)["flash_liquidator"], "data": "0x8da5cb5b"}, "latest"])
    assert int(owner, 16) == int(KEEPER, 16)  # the keeper owns it
