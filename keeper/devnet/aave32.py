"""Devnet extension "aave32": a second Aave V3 market, aave-v3-origin v3.2.0 real bytecode.

The bytecode is the compiled aave-v3-origin v3.2.0 (POOL_REVISION 5) shipped as Foundry JSON in
the PyPI wheel web3-ethereum-defi 1.2 (aave32_artifacts.py: read from the zip as data, never
imported or installed). It stands beside the @aave/core-v3 1.19.3 market of deploy.py, on the
SAME tokens (WETH, WBTC, USDC), the SAME price feeds (so `keeper devnet shock` moves both
markets) and the same Uniswap pools.

deploy_extension(url, dep) deploys everything from anvil account 9 only (extensions.ACCOUNTS),
so its addresses never depend on another extension:
  PoolAddressesProvider, ACLManager (account 9 pool, risk and emergency admin), the libraries
  (SupplyLogic, BorrowLogic, LiquidationLogic, EModeLogic, BridgeLogic, PoolLogic,
  ConfiguratorLogic; FlashLoanLogic linked to BorrowLogic), PoolInstance (linked), its
  PoolConfiguratorInstance, AaveOracle (v3.2 build) on the devnet's SettableAggregators,
  AaveProtocolDataProvider, ATokenInstance / VariableDebtTokenInstance implementations, the
  DefaultReserveInterestRateStrategyV2; reserves WETH, WBTC, USDC (the first market's risk
  parameters, 10% liquidation protocol fee); eMode category 1 "majors" as v3.2 configures it:
  collateral bitmap {WETH, WBTC}, borrowable bitmap {USDC, WETH}, LTV 85%, threshold 88%,
  bonus 103% (the reserves' own eMode bits stay 0: v3.2 does not use them);
  account 9 supplies liquidity; seeded borrowers (BORROWERS), eMode ones included;
  and the keeper's own FlashLiquidator for this pool (contracts/FlashLiquidator.sol), deployed
  by the keeper account at the fixed nonce KEEPER_NONCE (so it owns it and its address does
  not depend on what else the keeper did), approved for the keeper's inventory tokens.

A liquidation grace period is set per reserve in a test with set_grace_period(url, extras,
symbol, seconds): PoolConfigurator.setReservePause(asset, false, seconds) from account 9 (the
emergency admin); liquidations on that reserve revert until block.timestamp > now + seconds
(at most MAX_GRACE_PERIOD = 4 h).

Returned (Deployment.extras["aave32"]): provider, pool, pool_configurator, oracle,
data_provider, acl_manager, interest_rate_strategy, libraries, a_tokens, variable_debt_tokens,
tokens (symbol -> underlying), emode (category -> ltv, threshold, bonus, collateral,
borrowable), borrowers [{address, label, emode, supply, borrow}], flash_liquidator,
deployer, revision, release, deploy_block, seeded_block.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak

from . import aave32_artifacts as art
from .deploy import BASE_UNIT, KEEPER, MAX_UINT256, Deployment, _Deployer, usd_to_raw
from .jsonrpc import JsonRpc, checksum, encode_call

DEPLOYER32 = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"  # anvil account 9 (extensions.ACCOUNTS["aave32"])
KEEPER_NONCE = 4_000  # the keeper's nonce when it deploys its FlashLiquidator for this pool
SYMBOLS = ("WETH", "WBTC", "USDC")
# symbol -> (ltv bps, liquidation threshold bps, liquidation bonus bps): as the 1.19.3 market
RISK = {"WETH": (8000, 8250, 10500), "WBTC": (7300, 7800, 10650), "USDC": (7700, 8000, 10450)}
LIQUIDATION_PROTOCOL_FEE_BPS = 1000
RESERVE_FACTOR_BPS = 1000
FLASHLOAN_PREMIUM_TOTAL_BPS = 5
# DefaultReserveInterestRateStrategyV2 rate data, bps: optimal usage, base, slope 1, slope 2
RATE_DATA = (8000, 0, 400, 7500)
EMODE_ID = 1
EMODE = {"label": "majors", "ltv": 8500, "liquidation_threshold": 8800, "liquidation_bonus": 10300,
         "collateral": ("WETH", "WBTC"), "borrowable": ("USDC", "WETH")}
LIQUIDITY_USD = 20_000_000  # account 9 supplies this much of each asset
BORROWER_SALT = b"keeper-devnet-aave32-borrower"
# (label, eMode category, {collateral symbol: USD}, borrowed symbol, health factor in bps)
BORROWERS: list[tuple[str, int, dict[str, int], str, int]] = [
    ("WETH->USDC", 0, {"WETH": 60_000}, "USDC", 10_500),
    ("WBTC->USDC", 0, {"WBTC": 80_000}, "USDC", 11_000),
    ("eMode WETH->USDC", EMODE_ID, {"WETH": 50_000}, "USDC", 10_400),
    ("eMode WETH+WBTC->USDC", EMODE_ID, {"WETH": 40_000, "WBTC": 30_000}, "USDC", 10_800),
    ("eMode WETH->USDC safe", EMODE_ID, {"WETH": 30_000}, "USDC", 13_000),
    ("USDC->WETH", 0, {"USDC": 50_000}, "WETH", 12_000),
    ("WBTC->USDC safe", 0, {"WBTC": 40_000}, "USDC", 15_000),
    ("eMode WBTC->WETH", EMODE_ID, {"WBTC": 45_000}, "WETH", 10_600),
]


def borrower_address(i: int) -> str:
    return checksum("0x" + keccak(BORROWER_SALT + i.to_bytes(4, "big"))[-20:].hex())


def deploy_extension(url: str, dep: Deployment) -> dict[str, Any]:
    with JsonRpc(url) as rpc:
        out = _deploy(rpc, dep)
        out["flash_liquidator"] = _keeper_liquidator(rpc, dep, out["pool"])
        out["borrowers"] = _seed(rpc, dep, out)
        out["seeded_block"] = int(rpc.call("eth_blockNumber"), 16)
    return out


def _deploy(rpc: JsonRpc, dep: Deployment) -> dict[str, Any]:
    d = _Deployer(rpc, DEPLOYER32)
    a9 = DEPLOYER32
    provider = d.create("v3.2 PoolAddressesProvider", art.link("PoolAddressesProvider", {}), ["string", "address"],
                        ["Keeper Devnet Market v3.2", a9])
    d.tx(provider, "setACLAdmin(address)", a9)
    acl = d.create("v3.2 ACLManager", art.link("ACLManager", {}), ["address"], [provider])
    d.tx(provider, "setACLManager(address)", acl)
    d.tx(acl, "addPoolAdmin(address)", a9)
    d.tx(acl, "addRiskAdmin(address)", a9)
    d.tx(acl, "addEmergencyAdmin(address)", a9)

    libs: dict[str, str] = {}
    for lib in ("SupplyLogic", "BorrowLogic", "LiquidationLogic", "EModeLogic", "BridgeLogic", "PoolLogic",
                "ConfiguratorLogic"):
        libs[lib] = d.create(f"v3.2 {lib}", art.link(lib, {}))
    libs["FlashLoanLogic"] = d.create("v3.2 FlashLoanLogic", art.link("FlashLoanLogic", {"BorrowLogic": libs["BorrowLogic"]}))
    pool_impl = d.create("v3.2 PoolInstance", art.link("PoolInstance", libs), ["address"], [provider])
    d.tx(provider, "setPoolImpl(address)", pool_impl)
    pool = d.view_addr(provider, "getPool()")
    conf_impl = d.create("v3.2 PoolConfiguratorInstance", art.link("PoolConfiguratorInstance", libs))
    d.tx(provider, "setPoolConfiguratorImpl(address)", conf_impl)
    configurator = d.view_addr(provider, "getPoolConfigurator()")

    tokens = {s: dep.tokens[s] for s in SYMBOLS}
    oracle = d.create(
        "v3.2 AaveOracle", art.link("AaveOracle", {}),
        ["address", "address[]", "address[]", "address", "address", "uint256"],
        [provider, [tokens[s] for s in SYMBOLS], [dep.aggregators[s] for s in SYMBOLS], "0x" + "00" * 20,
         "0x" + "00" * 20, BASE_UNIT])
    d.tx(provider, "setPriceOracle(address)", oracle)
    data_provider = d.create("v3.2 AaveProtocolDataProvider", art.link("AaveProtocolDataProvider", {}), ["address"], [provider])
    d.tx(provider, "setPoolDataProvider(address)", data_provider)

    a_impl = d.create("v3.2 ATokenInstance", art.link("ATokenInstance", {}), ["address"], [pool])
    v_impl = d.create("v3.2 VariableDebtTokenInstance", art.link("VariableDebtTokenInstance", {}), ["address"], [pool])
    strategy = d.create("v3.2 DefaultReserveInterestRateStrategyV2", art.link("DefaultReserveInterestRateStrategyV2", {}),
                        ["address"], [provider])
    rate_data = abi_encode(["(uint16,uint32,uint32,uint32)"], [RATE_DATA])
    zero = "0x" + "00" * 20
    inputs = [(a_impl, v_impl, True, strategy, tokens[s], dep.treasury, zero,
               f"Aave v3.2 Devnet {s}", f"a32Dev{s}", f"Aave v3.2 Devnet Variable Debt {s}", f"variableDebt32Dev{s}",
               b"", rate_data) for s in SYMBOLS]
    d.tx(configurator, "initReserves((address,address,bool,address,address,address,address,string,string,string,string,bytes,bytes)[])",
         inputs)
    for s in SYMBOLS:
        ltv, lt, bonus = RISK[s]
        d.tx(configurator, "configureReserveAsCollateral(address,uint256,uint256,uint256)", tokens[s], ltv, lt, bonus,
             what=f"v3.2 configureReserveAsCollateral {s}")
        d.tx(configurator, "setReserveBorrowing(address,bool)", tokens[s], True)
        d.tx(configurator, "setReserveFlashLoaning(address,bool)", tokens[s], True)
        d.tx(configurator, "setReserveFactor(address,uint256)", tokens[s], RESERVE_FACTOR_BPS)
        d.tx(configurator, "setLiquidationProtocolFee(address,uint256)", tokens[s], LIQUIDATION_PROTOCOL_FEE_BPS)
    d.tx(configurator, "updateFlashloanPremiumTotal(uint128)", FLASHLOAN_PREMIUM_TOTAL_BPS)
    d.tx(configurator, "setEModeCategory(uint8,uint16,uint16,uint16,string)", EMODE_ID, EMODE["ltv"],
         EMODE["liquidation_threshold"], EMODE["liquidation_bonus"], EMODE["label"])
    for s in EMODE["collateral"]:
        d.tx(configurator, "setAssetCollateralInEMode(address,uint8,bool)", tokens[s], EMODE_ID, True)
    for s in EMODE["borrowable"]:
        d.tx(configurator, "setAssetBorrowableInEMode(address,uint8,bool)", tokens[s], EMODE_ID, True)

    a_tokens, v_tokens = {}, {}
    for s in SYMBOLS:
        a, _st, v = rpc.view(data_provider, "getReserveTokensAddresses(address)", [tokens[s]], ["address"] * 3)
        a_tokens[s], v_tokens[s] = checksum(a), checksum(v)
    (revision,) = rpc.view(pool, "POOL_REVISION()", [], ["uint256"])
    return {
        "release": f"aave-v3-origin {art.AAVE_ORIGIN_TAG}", "revision": revision, "deployer": a9,
        "provider": provider, "pool": pool, "pool_configurator": configurator, "oracle": oracle,
        "data_provider": data_provider, "acl_manager": acl, "interest_rate_strategy": strategy,
        "libraries": libs, "tokens": tokens, "a_tokens": a_tokens, "variable_debt_tokens": v_tokens,
        "emode": {str(EMODE_ID): {k: (list(v) if isinstance(v, tuple) else v) for k, v in EMODE.items()}},
        "deploy_block": int(rpc.call("eth_blockNumber"), 16),
    }


def _keeper_liquidator(rpc: JsonRpc, dep: Deployment, pool: str) -> str:
    """The keeper's FlashLiquidator bound to this pool, deployed by the keeper at KEEPER_NONCE."""
    from ..solidity import compile_files
    from .artifacts import CONTRACTS_DIR
    from .seed import KEEPER_INVENTORY_RAW

    nonce = int(rpc.call("eth_getTransactionCount", [KEEPER, "latest"]), 16)
    if nonce > KEEPER_NONCE:
        raise RuntimeError(f"keeper nonce {nonce} is past the v3.2 FlashLiquidator deploy nonce {KEEPER_NONCE}")
    rpc.call("anvil_setNonce", [KEEPER, hex(KEEPER_NONCE)])
    code = compile_files([Path(CONTRACTS_DIR) / "FlashLiquidator.sol"])["FlashLiquidator"]["bytecode"]
    data = code.removeprefix("0x") + abi_encode(["address", "address"], [pool, dep.uniswap_router]).hex()
    rc = rpc.send({"from": KEEPER, "data": "0x" + data}, what="deploy the keeper's v3.2 FlashLiquidator")
    liquidator = checksum(rc["contractAddress"])
    for sym in KEEPER_INVENTORY_RAW:
        rpc.send({"from": KEEPER, "to": dep.tokens[sym], "data": encode_call("approve(address,uint256)", liquidator, MAX_UINT256)},
                 what=f"keeper approve {sym} to its v3.2 FlashLiquidator")
    return liquidator


def _prices(rpc: JsonRpc, oracle: str, tokens: dict[str, str]) -> dict[str, int]:
    return {s: rpc.view(oracle, "getAssetPrice(address)", [a], ["uint256"])[0] for s, a in tokens.items()}


def open_position(rpc: JsonRpc, pool: str, tokens: dict[str, str], who: str, supply: dict[str, int],
                  borrow: tuple[str, int], emode: int = 0) -> None:
    """`who` (impersonated) mints and supplies each collateral (raw units), enters eMode
    category `emode` if not 0, and borrows (variable) one asset."""
    rpc.call("anvil_setBalance", [who, hex(10**20)])
    rpc.call("anvil_impersonateAccount", [who])
    gas = hex(1_500_000)
    try:
        for s, amount in supply.items():
            rpc.send({"from": who, "to": tokens[s], "data": encode_call("mint(uint256)", amount), "gas": gas}, what=f"mint {s}")
            rpc.send({"from": who, "to": tokens[s], "data": encode_call("approve(address,uint256)", pool, MAX_UINT256), "gas": gas},
                     what=f"approve {s}")
            rpc.send({"from": who, "to": pool, "gas": gas,
                      "data": encode_call("supply(address,uint256,address,uint16)", tokens[s], amount, who, 0)},
                     what=f"v3.2 supply {s}")
        if emode:
            rpc.send({"from": who, "to": pool, "data": encode_call("setUserEMode(uint8)", emode), "gas": gas},
                     what=f"v3.2 setUserEMode {emode}")
        s, amount = borrow
        rpc.send({"from": who, "to": pool, "gas": gas,
                  "data": encode_call("borrow(address,uint256,uint256,uint16,address)", tokens[s], amount, 2, 0, who)},
                 what=f"v3.2 borrow {s}")
    finally:
        rpc.call("anvil_stopImpersonatingAccount", [who])


def plan_amounts(prices: dict[str, int], decimals: dict[str, int], emode: int, coll_usd: dict[str, int],
                 debt_sym: str, hf_bps: int) -> tuple[dict[str, int], int]:
    """Raw supply amounts and the debt (raw) that gives health factor ≈ hf_bps / 1e4."""
    supply = {s: usd_to_raw(usd * BASE_UNIT, prices[s], decimals[s]) for s, usd in coll_usd.items()}
    weighted = 0  # collateral × threshold, USD with 8 decimals × bps
    for s, usd in coll_usd.items():
        lt = EMODE["liquidation_threshold"] if emode and s in EMODE["collateral"] else RISK[s][1]
        weighted += usd * BASE_UNIT * lt
    debt_usd_e8 = weighted // hf_bps
    return supply, usd_to_raw(debt_usd_e8, prices[debt_sym], decimals[debt_sym])


def _seed(rpc: JsonRpc, dep: Deployment, out: dict[str, Any]) -> list[dict[str, Any]]:
    pool, tokens = out["pool"], out["tokens"]
    prices = _prices(rpc, out["oracle"], tokens)
    liquidity = {s: usd_to_raw(LIQUIDITY_USD * BASE_UNIT, prices[s], dep.decimals[s]) for s in SYMBOLS}
    for s, amount in liquidity.items():
        for sig, args in (("mint(uint256)", (amount,)), ("approve(address,uint256)", (pool, MAX_UINT256))):
            rpc.send({"from": DEPLOYER32, "to": tokens[s], "data": encode_call(sig, *args)}, what=f"account 9 {sig} {s}")
        rpc.send({"from": DEPLOYER32, "to": pool,
                  "data": encode_call("supply(address,uint256,address,uint16)", tokens[s], amount, DEPLOYER32, 0)},
                 what=f"account 9 supply {s} to v3.2")
    seeded = []
    for i, (label, emode, coll_usd, debt_sym, hf_bps) in enumerate(BORROWERS):
        who = borrower_address(i)
        supply, debt = plan_amounts(prices, dep.decimals, emode, coll_usd, debt_sym, hf_bps)
        open_position(rpc, pool, tokens, who, supply, (debt_sym, debt), emode)
        seeded.append({"address": who, "label": label, "emode": emode, "supply": supply, "borrow": [debt_sym, debt]})
    return seeded


def set_grace_period(url: str, extras: dict[str, Any], symbol: str, seconds: int) -> int:
    """Start a liquidation grace period of `seconds` (≤ 4 h) on a reserve of the v3.2 market,
    as the emergency admin does when it unpauses (setReservePause(asset, false, seconds)).
    Returns getLiquidationGracePeriod(asset): liquidations need block.timestamp > it."""
    asset = extras["tokens"][symbol]
    with JsonRpc(url) as rpc:
        rpc.send({"from": extras["deployer"], "to": extras["pool_configurator"],
                  "data": encode_call("setReservePause(address,bool,uint40)", asset, False, seconds)},
                 what=f"v3.2 grace period {symbol}")
        (until,) = rpc.view(extras["pool"], "getLiquidationGracePeriod(address)", [asset], ["uint40"])
    return until
