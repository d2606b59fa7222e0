"""Load Hardhat artifacts from node_modules and link library placeholders."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO_ROOT / "node_modules"
CONTRACTS_DIR = REPO_ROOT / "contracts"

AAVE = "@aave/core-v3/artifacts/contracts"
UNI_CORE = "@uniswap/v3-core/artifacts/contracts"
UNI_PERIPHERY = "@uniswap/v3-periphery/artifacts/contracts"
UNI_V2 = "@uniswap/v2-core/build"

# name -> path below node_modules
ARTIFACTS: dict[str, str] = {
    "MintableERC20": f"{AAVE}/mocks/tokens/MintableERC20.sol/MintableERC20.json",
    "PoolAddressesProvider": f"{AAVE}/protocol/configuration/PoolAddressesProvider.sol/PoolAddressesProvider.json",
    "ACLManager": f"{AAVE}/protocol/configuration/ACLManager.sol/ACLManager.json",
    "SupplyLogic": f"{AAVE}/protocol/libraries/logic/SupplyLogic.sol/SupplyLogic.json",
    "BorrowLogic": f"{AAVE}/protocol/libraries/logic/BorrowLogic.sol/BorrowLogic.json",
    "LiquidationLogic": f"{AAVE}/protocol/libraries/logic/LiquidationLogic.sol/LiquidationLogic.json",
    "EModeLogic": f"{AAVE}/protocol/libraries/logic/EModeLogic.sol/EModeLogic.json",
    "BridgeLogic": f"{AAVE}/protocol/libraries/logic/BridgeLogic.sol/BridgeLogic.json",
    "PoolLogic": f"{AAVE}/protocol/libraries/logic/PoolLogic.sol/PoolLogic.json",
    "FlashLoanLogic": f"{AAVE}/protocol/libraries/logic/FlashLoanLogic.sol/FlashLoanLogic.json",
    "ConfiguratorLogic": f"{AAVE}/protocol/libraries/logic/ConfiguratorLogic.sol/ConfiguratorLogic.json",
    "Pool": f"{AAVE}/protocol/pool/Pool.sol/Pool.json",
    "PoolConfigurator": f"{AAVE}/protocol/pool/PoolConfigurator.sol/PoolConfigurator.json",
    "AaveOracle": f"{AAVE}/misc/AaveOracle.sol/AaveOracle.json",
    "AaveProtocolDataProvider": f"{AAVE}/misc/AaveProtocolDataProvider.sol/AaveProtocolDataProvider.json",
    "AToken": f"{AAVE}/protocol/tokenization/AToken.sol/AToken.json",
    "StableDebtToken": f"{AAVE}/protocol/tokenization/StableDebtToken.sol/StableDebtToken.json",
    "VariableDebtToken": f"{AAVE}/protocol/tokenization/VariableDebtToken.sol/VariableDebtToken.json",
    "DefaultReserveInterestRateStrategy": (
        f"{AAVE}/protocol/pool/DefaultReserveInterestRateStrategy.sol/DefaultReserveInterestRateStrategy.json"
    ),
    "UniswapV3Factory": f"{UNI_CORE}/UniswapV3Factory.sol/UniswapV3Factory.json",
    "UniswapV3Pool": f"{UNI_CORE}/UniswapV3Pool.sol/UniswapV3Pool.json",
    "SwapRouter": f"{UNI_PERIPHERY}/SwapRouter.sol/SwapRouter.json",
    "NonfungiblePositionManager": f"{UNI_PERIPHERY}/NonfungiblePositionManager.sol/NonfungiblePositionManager.json",
    "QuoterV2": f"{UNI_PERIPHERY}/lens/QuoterV2.sol/QuoterV2.json",
    # Uniswap V2 (npm @uniswap/v2-core 1.0.1 build output): factory and pair, no router needed
    "UniswapV2Factory": f"{UNI_V2}/UniswapV2Factory.json",
    "UniswapV2Pair": f"{UNI_V2}/UniswapV2Pair.json",
}


@cache
def artifact(name: str) -> dict:
    rel = ARTIFACTS.get(name)
    if rel is None:
        raise KeyError(f"unknown artifact {name!r}")
    path = NODE_MODULES / rel
    if not path.is_file():
        raise RuntimeError(f"artifact {name} not found at {path}; run `npm ci` in {REPO_ROOT}")
    return json.loads(path.read_text())


def link(name: str, libraries: dict[str, str]) -> str:
    """Creation bytecode of `name` (0x-hex) with library placeholders replaced.

    `libraries` maps library name -> deployed address. Offsets in linkReferences are byte
    offsets into the bytecode without the 0x prefix, so x2 for hex characters."""
    a = artifact(name)
    code = a["bytecode"][2:] if a["bytecode"].startswith("0x") else a["bytecode"]
    chars = list(code)
    for _source, libs in a.get("linkReferences", {}).items():
        for lib, refs in libs.items():
            if lib not in libraries:
                raise RuntimeError(f"{name} needs library {lib} linked (have {sorted(libraries)})")
            addr = libraries[lib].lower().removeprefix("0x")
            for ref in refs:
                start = ref["start"] * 2
                chars[start : start + ref["length"] * 2] = addr
    linked = "".join(chars)
    if "__" in linked:
        raise RuntimeError(f"{name} bytecode still has an unlinked placeholder after linking")
    return "0x" + linked


def solidity_contracts() -> dict[str, dict]:
    """Compile the project's own contracts/ (SettableAggregator, Multicall3); cached."""
    from keeper.solidity import compile_files

    return compile_files(sorted(CONTRACTS_DIR.glob("*.sol")))
