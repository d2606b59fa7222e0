"""Devnet extension: a perps market with the Synthetix v3 perps interface (contracts/perps/).

deploy_extension(url, dep) deploys, from anvil account 6 ONLY (addresses independent of the
other extensions), the snxUSD-like token and the PerpsMarket, configures the ETH (100) and
BTC (200) markets on the devnet's WETH / WBTC Chainlink-style feeds, funds the insurance
fund, and seeds margin accounts at a range of leverages on both sides of each market, two
cross-margin accounts and one account too large to liquidate in one window.

Every seeded account is healthy at the seeded prices and stays healthy after a ±12% move of
either feed (so the Aave demo's `shock --asset WETH --pct -12` moves the ETH market without
liquidating perps accounts); the 5x and 6x accounts become liquidatable at about ±18% / ±16%,
the 4x ones at about ±23%.

Amounts: snxUSD and sizes are wad (1e18); prices from the feeds have 8 decimals and the
market scales them to wad. Returned (stored in Deployment.extras["perps"]; JSON, so market
ids are string keys)::

    {"market": addr, "usd_token": addr, "deployer": addr, "deploy_block": int,
     "markets": {"100": {"symbol": "ETH", "feed": addr, "max_liquidation_in_window": wad,
                         "window_seconds": int}, "200": {...}},
     "accounts": [{"id": int, "owner": addr, "collateral": wad, "leverage": str,
                   "positions": {"100": size_wad, ...}, "label": str}, ...],
     "seeded_block": int}
"""

from __future__ import annotations

from typing import Any

from eth_utils import keccak

from .deploy import Deployment, _Deployer
from .jsonrpc import JsonRpc, checksum, encode_call

PERPS_DEPLOYER = "0x976EA74026E726554dB657fA54763abd0C3a0aa9"  # anvil account 6 (extensions.ACCOUNTS["perps"])
WAD = 10**18
ETH_MARKET, BTC_MARKET = 100, 200
INSURANCE_FUND = 5_000_000 * WAD
TRADER_SALT = b"keeper-devnet-perps-trader"
ACCEPT_ANY_BUY = 2**256 - 1

# market id -> (name, symbol, feed symbol, skewScale, maker fee, taker fee, multiplier, window seconds)
MARKETS = {
    ETH_MARKET: ("Ether", "ETH", "WETH", 1_000_000 * WAD, 2 * 10**14, 8 * 10**14, 4 * 10**15, 25),  # 100 ETH / window
    BTC_MARKET: ("Bitcoin", "BTC", "WBTC", 50_000 * WAD, 2 * 10**14, 8 * 10**14, 4 * 10**15, 25),  # 5 BTC / window
}
# (initialMarginRatioD18, minimumInitialMarginRatioD18, maintenanceMarginScalarD18, flagRewardRatioD18, minimumPositionMargin)
LIQUIDATION_PARAMS = (3 * WAD, 2 * 10**16, 5 * 10**17, 5 * 10**14, 20 * WAD)
# (minKeeperRewardUsd, minKeeperProfitRatioD18, maxKeeperRewardUsd, maxKeeperScalingRatioD18)
REWARD_GUARDS = (2 * WAD, 10**17, 500 * WAD, 2 * 10**16)
KEEPER_COSTS = (3 * WAD, 2 * WAD)  # (flag, liquidate), USD wad

LEVERAGES = ("1.5", "2", "3", "4", "5", "6")


def _plans() -> list[dict[str, Any]]:
    """(label, collateral USD, {market: signed notional USD}) for every seeded account."""
    plans = []
    for m, sym in ((ETH_MARKET, "ETH"), (BTC_MARKET, "BTC")):
        for side, sign in (("long", 1), ("short", -1)):
            for j, lev in enumerate(LEVERAGES):
                collateral = 8_000 + 3_000 * j + (1_000 if side == "short" else 0) + (500 if m == BTC_MARKET else 0)
                notional = collateral * int(float(lev) * 10) // 10
                plans.append({"label": f"{sym} {side} {lev}x", "collateral": collateral, "leverage": lev,
                              "notional": {m: sign * notional}})
    plans.append({"label": "cross long ETH + long BTC", "collateral": 15_000, "leverage": "4",
                  "notional": {ETH_MARKET: 30_000, BTC_MARKET: 30_000}})
    plans.append({"label": "cross long ETH + short BTC", "collateral": 10_000, "leverage": "8 gross (hedged)",
                  "notional": {ETH_MARKET: 40_000, BTC_MARKET: -40_000}})
    plans.append({"label": "large ETH long 5x (350 ETH: 4 windows)", "collateral": 210_000, "leverage": "5",
                  "notional": {ETH_MARKET: 1_050_000}})
    return plans


def trader_address(i: int) -> str:
    return checksum("0x" + keccak(TRADER_SALT + i.to_bytes(4, "big"))[-20:].hex())


def _price_wad(rpc: JsonRpc, feed: str) -> int:
    (answer,) = rpc.view(feed, "latestAnswer()", [], ["int256"])
    return answer * 10**10


def deploy_extension(url: str, dep: Deployment) -> dict:
    with JsonRpc(url) as rpc:
        nonce = int(rpc.call("eth_getTransactionCount", [PERPS_DEPLOYER, "latest"]), 16)
        if nonce != 0:
            raise RuntimeError(f"perps deployer {PERPS_DEPLOYER} has nonce {nonce}: needs a fresh account")
        from ..solidity import compile_files
        from .artifacts import CONTRACTS_DIR

        out = compile_files(sorted((CONTRACTS_DIR / "perps").glob("*.sol")))
        d = _Deployer(rpc, sender=PERPS_DEPLOYER)
        usd = d.create("PerpsUSD", out["PerpsUSD"]["bytecode"])
        market = d.create("PerpsMarket", out["PerpsMarket"]["bytecode"], ["address"], [usd])
        markets: dict[str, Any] = {}
        for m, (name, sym, feed_sym, skew_scale, maker, taker, mult, window) in MARKETS.items():
            feed = dep.aggregators[feed_sym]
            d.tx(market, "createMarket(uint128,string,string,address)", m, name, sym, feed)
            d.tx(market, "setLiquidationParameters(uint128,uint256,uint256,uint256,uint256,uint256)", m, *LIQUIDATION_PARAMS)
            d.tx(market, "setFundingParameters(uint128,uint256,uint256)", m, skew_scale, 0)
            d.tx(market, "setOrderFees(uint128,uint256,uint256)", m, maker, taker)
            d.tx(market, "setMaxLiquidationParameters(uint128,uint256,uint256,uint256,address)", m, mult, window, 0,
                 "0x" + "00" * 20)
            (_, max_in_window, _) = rpc.view(market, "liquidationCapacity(uint128)", [m], ["uint256", "uint256", "uint256"])
            markets[str(m)] = {"symbol": sym, "feed": feed, "max_liquidation_in_window": max_in_window,
                               "window_seconds": window}
        d.tx(market, "setKeeperRewardGuards(uint256,uint256,uint256,uint256)", *REWARD_GUARDS)
        d.tx(market, "setKeeperCosts(uint256,uint256)", *KEEPER_COSTS)
        d.tx(usd, "mint(address,uint256)", PERPS_DEPLOYER, INSURANCE_FUND)
        d.tx(usd, "approve(address,uint256)", market, INSURANCE_FUND)
        d.tx(market, "depositInsuranceFund(uint256)", INSURANCE_FUND)
        deploy_block = int(rpc.call("eth_blockNumber"), 16)

        prices = {m: _price_wad(rpc, dep.aggregators[MARKETS[m][2]]) for m in MARKETS}
        accounts = []
        rpc.call("anvil_autoImpersonateAccount", [True])
        try:
            for i, plan in enumerate(_plans()):
                accounts.append(_seed_account(rpc, market, usd, i, plan, prices))
        finally:
            rpc.call("anvil_autoImpersonateAccount", [False])
        return {"market": market, "usd_token": usd, "deployer": PERPS_DEPLOYER, "deploy_block": deploy_block,
                "markets": markets, "accounts": accounts, "seeded_block": int(rpc.call("eth_blockNumber"), 16)}


def _seed_account(rpc: JsonRpc, market: str, usd: str, i: int, plan: dict, prices: dict[int, int]) -> dict:
    owner = trader_address(i)
    account_id = 1001 + i
    rpc.call("anvil_setBalance", [owner, hex(10 * WAD)])
    collateral = plan["collateral"] * WAD

    def send(to: str, data: str, what: str, gas: int = 400_000) -> None:
        rpc.send({"from": owner, "to": to, "data": data, "gas": hex(gas)}, what=f"perps account {account_id}: {what}")

    send(usd, encode_call("mint(address,uint256)", owner, collateral), "mint snxUSD")
    send(usd, encode_call("approve(address,uint256)", market, collateral), "approve")
    send(market, encode_call("createAccount(uint128)", account_id), "createAccount")
    send(market, encode_call("modifyCollateral(uint128,uint128,int256)", account_id, 0, collateral), "modifyCollateral")
    positions = {}
    for m, notional_usd in plan["notional"].items():
        size = notional_usd * WAD * WAD // prices[m]
        acceptable = ACCEPT_ANY_BUY if size > 0 else 0
        req = (m, account_id, size, 0, acceptable, b"\0" * 32, "0x" + "00" * 20)
        send(market, encode_call("commitOrder((uint128,uint128,int128,uint128,uint256,bytes32,address))", req),
             f"commitOrder {m}")
        send(market, encode_call("settleOrder(uint128)", account_id), f"settleOrder {m}")
        positions[str(m)] = size
    return {"id": account_id, "owner": owner, "collateral": collateral, "leverage": plan["leverage"],
            "positions": positions, "label": plan["label"]}
