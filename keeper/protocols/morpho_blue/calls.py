"""The Morpho Blue functions and events the adapter uses (keeper/abis/Morpho*.json), and the
keeper's MorphoLiquidator."""

from __future__ import annotations

from ... import abi

MORPHO = abi.load("MorphoBlue")
IRM = abi.load("MorphoIrm")
ORACLE = abi.load("MorphoChainlinkOracle")
LIQUIDATOR = abi.load("MorphoLiquidator")
AGG = abi.load("ChainlinkAggregator")
ERC20 = abi.load("ERC20")

F_MARKET = MORPHO.fn("market")  # (totalSupplyAssets, totalSupplyShares, totalBorrowAssets, totalBorrowShares, lastUpdate, fee)
F_POSITION = MORPHO.fn("position")  # (supplyShares, borrowShares, collateral)
F_PARAMS = MORPHO.fn("idToMarketParams")
F_PRICE = ORACLE.fn("price")
F_QUOTE_FEED = ORACLE.fn("QUOTE_FEED_1")
# MorphoChainlinkOracleV2's shape (the devnet's oracle has the _1 feeds and SCALE_FACTOR only:
# a call that fails reads as "not set")
F_SCALE = ORACLE.fn("SCALE_FACTOR")
F_ORACLE_ADDRESSES = tuple(abi.Function(n, [], ["address"]) for n in (
    "BASE_FEED_1", "BASE_FEED_2", "QUOTE_FEED_1", "QUOTE_FEED_2", "BASE_VAULT", "QUOTE_VAULT"))
F_RATE = IRM.fn("borrowRateView")
F_LIQUIDATE = LIQUIDATOR.fn("liquidate")
EV_LIQUIDATED = LIQUIDATOR.event("MorphoLiquidated")
F_ANSWER = AGG.fn("latestAnswer")
F_FEED_DECIMALS = AGG.fn("decimals")
F_SYMBOL = ERC20.fn("symbol")
F_DECIMALS = ERC20.fn("decimals")

_ID = {"name": "id", "type": "bytes32", "indexed": True}


def _ev(name: str, *inputs: tuple[str, str, bool]) -> abi.Event:
    return abi.Event({"name": name, "inputs": [_ID] + [{"name": n, "type": t, "indexed": i} for n, t, i in inputs]})


# EventsLib of Morpho Blue 1.0.0 (library events: not in the 0.8.19 contract ABI)
EV_CREATE_MARKET = abi.Event({"name": "CreateMarket", "inputs": [_ID, {
    "name": "marketParams", "type": "tuple", "indexed": False, "components": [
        {"name": "loanToken", "type": "address"}, {"name": "collateralToken", "type": "address"},
        {"name": "oracle", "type": "address"}, {"name": "irm", "type": "address"}, {"name": "lltv", "type": "uint256"}]}]})
EV_SUPPLY_COLLATERAL = _ev("SupplyCollateral", ("caller", "address", True), ("onBehalf", "address", True),
                           ("assets", "uint256", False))
EV_WITHDRAW_COLLATERAL = _ev("WithdrawCollateral", ("caller", "address", False), ("onBehalf", "address", True),
                             ("receiver", "address", True), ("assets", "uint256", False))
EV_BORROW = _ev("Borrow", ("caller", "address", False), ("onBehalf", "address", True), ("receiver", "address", True),
                ("assets", "uint256", False), ("shares", "uint256", False))
EV_REPAY = _ev("Repay", ("caller", "address", True), ("onBehalf", "address", True), ("assets", "uint256", False),
               ("shares", "uint256", False))
EV_LIQUIDATE = _ev("Liquidate", ("caller", "address", True), ("borrower", "address", True),
                   ("repaidAssets", "uint256", False), ("repaidShares", "uint256", False),
                   ("seizedAssets", "uint256", False), ("badDebtAssets", "uint256", False),
                   ("badDebtShares", "uint256", False))
EV_ACCRUE = _ev("AccrueInterest", ("prevBorrowRate", "uint256", False), ("interest", "uint256", False),
                ("feeShares", "uint256", False))

# topic0 -> the topic index naming the position's owner (topic 1 is the market id)
POSITION_TOPICS: dict[str, int] = {
    EV_SUPPLY_COLLATERAL.topic0: 3,
    EV_WITHDRAW_COLLATERAL.topic0: 2,
    EV_BORROW.topic0: 2,
    EV_REPAY.topic0: 3,
    EV_LIQUIDATE.topic0: 3,
}
NATIVE_SYMBOLS = ("WETH", "ETH")
HOP_GAS = 120_000  # expected gas of each swap hop after the first (simulation measures the real figure)
