"""The Aave V3 contract functions and events the adapter uses, and how it reads one price."""

from __future__ import annotations

from ... import abi

POOL = abi.load("AavePool")
ORACLE = abi.load("AaveOracle")
PROVIDER = abi.load("AavePoolAddressesProvider")
ERC20 = abi.load("ERC20")
AGG = abi.load("ChainlinkAggregator")

F_ACCOUNT = POOL.fn("getUserAccountData")
F_USER_CONFIG = POOL.fn("getUserConfiguration")
F_USER_EMODE = POOL.fn("getUserEMode")
F_CONFIGURATION = POOL.fn("getConfiguration")
F_RESERVE_DATA = POOL.fn("getReserveData")
F_RESERVES = POOL.fn("getReservesList")
F_EMODE = POOL.fn("getEModeCategoryData")
F_LIQUIDATE = POOL.fn("liquidationCall")
F_FLASH_PREMIUM = POOL.fn("FLASHLOAN_PREMIUM_TOTAL")
F_FLASH = abi.load("FlashLiquidator").fn("liquidate")
F_INVENTORY = abi.load("FlashLiquidator").fn("liquidateWithInventory")
EV_FLASH = abi.load("FlashLiquidator").event("Liquidated")
F_PRICE = ORACLE.fn("getAssetPrice")
F_SOURCE = ORACLE.fn("getSourceOfAsset")
F_BASE_UNIT = ORACLE.fn("BASE_CURRENCY_UNIT")
F_BALANCE = ERC20.fn("balanceOf")
F_SCALED = abi.Function("scaledBalanceOf", ["address"], ["uint256"])  # AToken
F_INCOME = POOL.fn("getReserveNormalizedIncome")
F_SYMBOL = ERC20.fn("symbol")
F_DECIMALS = ERC20.fn("decimals")
F_ROUND = AGG.fn("latestRoundData")
EV_BORROW = POOL.event("Borrow")
EV_LIQUIDATION = POOL.event("LiquidationCall")
BORROW_TOPIC = EV_BORROW.topic0
EV_BALANCE_TRANSFER = abi.Event({"name": "BalanceTransfer", "inputs": [  # AToken: scaled balances move
    {"name": "from", "type": "address", "indexed": True}, {"name": "to", "type": "address", "indexed": True},
    {"name": "value", "type": "uint256", "indexed": False}, {"name": "index", "type": "uint256", "indexed": False}]})
# Pool events that change an account's position, and the topic that names the account: the
# local health model re-reads those accounts (keeper/protocols/aave_v3/local.py)
POSITION_TOPICS: dict[str, tuple[int, ...]] = {
    EV_BORROW.topic0: (2,),  # onBehalfOf
    POOL.event("Supply").topic0: (2,),  # onBehalfOf
    POOL.event("MintUnbacked").topic0: (2,),  # onBehalfOf
    POOL.event("Repay").topic0: (2,),
    POOL.event("Withdraw").topic0: (2,),
    EV_LIQUIDATION.topic0: (3,),
    POOL.event("ReserveUsedAsCollateralEnabled").topic0: (2,),
    POOL.event("ReserveUsedAsCollateralDisabled").topic0: (2,),
    POOL.event("UserEModeSet").topic0: (1,),
    POOL.event("SwapBorrowRateMode").topic0: (2,),
    POOL.event("RebalanceStableBorrowRate").topic0: (2,),
    EV_BALANCE_TRANSFER.topic0: (1, 2),  # from, to (emitted by the aTokens)
}
NATIVE_SYMBOLS = ("WETH", "ETH")
MAX_UINT = 2**256 - 1
HOP_GAS = 120_000  # expected gas of each swap hop after the first (simulation measures the real figure)
INT256_MAX = 2**255 - 1

def read_price(ok: bool, data: bytes) -> tuple[int, str | None]:
    """One getAssetPrice sub-call's answer: (price in oracle base units, None) or (0, what
    went wrong): reverted, bad_answer (not one word), zero, negative (above int256 max: the
    oracle cast a negative answer, or garbage)."""
    if not ok:
        return 0, "reverted"
    if len(data) != 32:
        return 0, "bad_answer"
    price = int.from_bytes(data, "big")
    if price == 0:
        return 0, "zero"
    if price > INT256_MAX:
        return 0, "negative"
    return price, None



def _decode_symbol(data: bytes) -> str:
    try:
        return ERC20.fn("symbol").decode_one(data)
    except Exception:
        return data[:32].rstrip(b"\0").decode("utf-8", "replace") or "?"
