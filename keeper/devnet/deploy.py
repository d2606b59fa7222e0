"""Deploy real Aave V3 and Uniswap V3 bytecode (npm artifacts) to a fresh anvil chain.

Everything is sent from anvil account 0 with eth_sendTransaction in a fixed order, so the
addresses are the same on every run against a fresh chain.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eth_abi import encode as abi_encode

from .artifacts import REPO_ROOT, link, solidity_contracts
from .jsonrpc import JsonRpc, checksum, encode_call

DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil account 0
KEEPER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil account 1
DEPOSITOR = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"  # anvil account 2
TREASURY = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"  # anvil account 9
MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
CHAIN_ID = 31337
DEVNET_DIR = REPO_ROOT / ".devnet"
DEPLOYMENT_JSON = DEVNET_DIR / "deployment.json"

RAY = 10**27
MAX_UINT256 = 2**256 - 1
BASE_UNIT = 10**8  # Aave oracle base currency: USD with 8 decimals

# symbol -> (name, decimals, initial price in USD with 8 decimals)
TOKENS: list[tuple[str, str, int, int]] = [
    ("WETH", "Wrapped Ether", 18, 3_000 * BASE_UNIT),
    ("WBTC", "Wrapped BTC", 8, 60_000 * BASE_UNIT),
    ("USDC", "USD Coin", 6, 1 * BASE_UNIT),
]
# symbol -> (ltv bps, liquidation threshold bps, liquidation bonus bps)
RISK: dict[str, tuple[int, int, int]] = {
    "WETH": (8000, 8250, 10500),
    "WBTC": (7300, 7800, 10650),
    "USDC": (7700, 8000, 10450),
}
LIQUIDATION_PROTOCOL_FEE_BPS = 1000
RESERVE_FACTOR_BPS = 1000
FLASHLOAN_PREMIUM_TOTAL_BPS = 5

# (symbolA, symbolB, fee): full-range pools at oracle prices
UNI_POOLS: list[tuple[str, str, int]] = [
    ("WETH", "USDC", 500),
    ("WETH", "USDC", 3000),
    ("WBTC", "USDC", 3000),
    ("WETH", "WBTC", 3000),
]
UNI_POOL_SIDE_USD = 25_000_000  # per side: ~$50M depth per pool
TICK_SPACING = {100: 1, 500: 10, 3000: 60, 10000: 200}
MAX_TICK = 887272


@dataclass
class UniPool:
    token0: str
    token1: str
    fee: int
    address: str


@dataclass
class Deployment:
    chain_id: int
    deployer: str
    keeper: str
    depositor: str
    treasury: str
    # Aave V3
    provider: str
    pool: str
    pool_configurator: str
    oracle: str
    data_provider: str
    acl_manager: str
    interest_rate_strategy: str
    tokens: dict[str, str]
    decimals: dict[str, int]
    aggregators: dict[str, str]
    a_tokens: dict[str, str]
    variable_debt_tokens: dict[str, str]
    # Uniswap V3
    uniswap_factory: str
    uniswap_router: str
    uniswap_position_manager: str
    uniswap_quoter_v2: str
    uniswap_pools: list[UniPool]
    multicall3: str = MULTICALL3
    deploy_block: int = 0
    borrowers: list[str] = field(default_factory=list)
    seeded_block: int = 0
    # systems deployed by devnet extensions (keeper/devnet/extensions.py): {name: {...addresses}}
    extras: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Deployment":
        d = dict(d)
        d["uniswap_pools"] = [UniPool(**p) for p in d.get("uniswap_pools", [])]
        return cls(**d)

    def save(self, path: Path) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> "Deployment":
        return cls.from_json(json.loads(Path(path).read_text()))

    def symbol_of(self, token: str) -> str:
        for s, a in self.tokens.items():
            if a.lower() == token.lower():
                return s
        raise KeyError(token)


def write_json_atomic(path: Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# ---- helpers ----------------------------------------------------------------------------


class _Deployer:
    def __init__(self, rpc: JsonRpc, sender: str = DEPLOYER):
        self.rpc = rpc
        self.sender = sender

    def create(self, what: str, bytecode: str, ctor_types: list[str] = (), ctor_args: list = ()) -> str:
        data = bytecode
        if ctor_types:
            data += abi_encode(list(ctor_types), list(ctor_args)).hex()
        r = self.rpc.send({"from": self.sender, "data": data}, what=f"deploy {what}")
        addr = r.get("contractAddress")
        if not addr:
            raise RuntimeError(f"deploy {what}: receipt has no contractAddress")
        return checksum(addr)

    def tx(self, to: str, signature: str, *args, what: str | None = None, value: int = 0) -> dict:
        tx = {"from": self.sender, "to": to, "data": encode_call(signature, *args)}
        if value:
            tx["value"] = hex(value)
        return self.rpc.send(tx, what=what or signature.split("(")[0])

    def view_addr(self, to: str, signature: str, *args) -> str:
        (a,) = self.rpc.view(to, signature, args, ["address"])
        return checksum(a)


def sqrt_price_x96(price0_8dec: int, dec0: int, price1_8dec: int, dec1: int) -> int:
    """sqrt(raw token1 per raw token0) * 2**96, exact integer arithmetic.

    One raw unit of token0 is worth price0/10**dec0 USD = price0*10**dec1/(price1*10**dec0)
    raw units of token1."""
    num = price0_8dec * 10**dec1 << 192
    den = price1_8dec * 10**dec0
    return math.isqrt(num // den)


def usd_to_raw(usd_8dec: int, price_8dec: int, decimals: int) -> int:
    """Amount in raw token units worth `usd_8dec` (USD with 8 decimals) at `price_8dec`."""
    return usd_8dec * 10**decimals // price_8dec


# ---- main entry -------------------------------------------------------------------------


def deploy(url: str, *, write_to: Path | None = DEPLOYMENT_JSON) -> Deployment:
    """Deploy tokens, price feeds, Aave V3, Uniswap V3 and Multicall3 to the chain at `url`.

    The chain must be fresh (account 0 at nonce 0) for the addresses to be the canonical
    devnet ones. Writes the Deployment as JSON to `write_to` unless it is None."""
    with JsonRpc(url) as rpc:
        return _deploy(rpc, write_to)


def _deploy(rpc: JsonRpc, write_to: Path | None) -> Deployment:
    chain_id = int(rpc.call("eth_chainId"), 16)
    nonce = int(rpc.call("eth_getTransactionCount", [DEPLOYER, "latest"]), 16)
    if nonce != 0:
        raise RuntimeError(
            f"deployer {DEPLOYER} has nonce {nonce}: deploy needs a fresh chain for deterministic addresses"
        )
    d = _Deployer(rpc)
    own = solidity_contracts()

    # --- tokens and price feeds
    tokens: dict[str, str] = {}
    decimals: dict[str, int] = {}
    prices: dict[str, int] = {}
    for sym, name, dec, price in TOKENS:
        tokens[sym] = d.create(sym, link("MintableERC20", {}), ["string", "string", "uint8"], [name, sym, dec])
        decimals[sym] = dec
        prices[sym] = price
    aggregators: dict[str, str] = {}
    for sym, _name, _dec, price in TOKENS:
        aggregators[sym] = d.create(
            f"{sym}/USD aggregator", own["SettableAggregator"]["bytecode"], ["int256", "string"], [price, f"{sym} / USD"]
        )

    # --- Aave V3 core
    provider = d.create("PoolAddressesProvider", link("PoolAddressesProvider", {}), ["string", "address"], ["Keeper Devnet Market", DEPLOYER])
    d.tx(provider, "setACLAdmin(address)", DEPLOYER)
    acl = d.create("ACLManager", link("ACLManager", {}), ["address"], [provider])
    d.tx(provider, "setACLManager(address)", acl)
    d.tx(acl, "addPoolAdmin(address)", DEPLOYER)
    d.tx(acl, "addRiskAdmin(address)", DEPLOYER)
    d.tx(acl, "addEmergencyAdmin(address)", DEPLOYER)

    libs: dict[str, str] = {}
    for lib in ("SupplyLogic", "BorrowLogic", "LiquidationLogic", "EModeLogic", "BridgeLogic", "PoolLogic", "ConfiguratorLogic"):
        libs[lib] = d.create(lib, link(lib, {}))
    libs["FlashLoanLogic"] = d.create("FlashLoanLogic", link("FlashLoanLogic", {"BorrowLogic": libs["BorrowLogic"]}))

    pool_impl = d.create("Pool", link("Pool", libs), ["address"], [provider])
    d.tx(provider, "setPoolImpl(address)", pool_impl)
    pool = d.view_addr(provider, "getPool()")
    configurator_impl = d.create("PoolConfigurator", link("PoolConfigurator", libs))
    d.tx(provider, "setPoolConfiguratorImpl(address)", configurator_impl)
    configurator = d.view_addr(provider, "getPoolConfigurator()")

    syms = [s for s, *_ in TOKENS]
    oracle = d.create(
        "AaveOracle",
        link("AaveOracle", {}),
        ["address", "address[]", "address[]", "address", "address", "uint256"],
        [provider, [tokens[s] for s in syms], [aggregators[s] for s in syms], "0x" + "00" * 20, "0x" + "00" * 20, BASE_UNIT],
    )
    d.tx(provider, "setPriceOracle(address)", oracle)
    data_provider = d.create("AaveProtocolDataProvider", link("AaveProtocolDataProvider", {}), ["address"], [provider])
    d.tx(provider, "setPoolDataProvider(address)", data_provider)

    a_impl = d.create("AToken impl", link("AToken", {}), ["address"], [pool])
    s_impl = d.create("StableDebtToken impl", link("StableDebtToken", {}), ["address"], [pool])
    v_impl = d.create("VariableDebtToken impl", link("VariableDebtToken", {}), ["address"], [pool])
    strategy = d.create(
        "DefaultReserveInterestRateStrategy",
        link("DefaultReserveInterestRateStrategy", {}),
        ["address"] + ["uint256"] * 9,
        [
            provider,
            RAY * 80 // 100,  # optimal usage ratio 80%
            0,  # base variable borrow rate
            RAY * 4 // 100,  # variable slope 1: 4%
            RAY * 75 // 100,  # variable slope 2: 75%
            RAY * 2 // 100,  # stable slope 1
            RAY * 75 // 100,  # stable slope 2
            RAY * 2 // 100,  # base stable rate offset
            RAY * 8 // 100,  # stable rate excess offset
            RAY * 20 // 100,  # optimal stable to total debt ratio
        ],
    )
    init_inputs = [
        (
            a_impl, s_impl, v_impl, decimals[s], strategy, tokens[s], TREASURY, "0x" + "00" * 20,
            f"Aave Devnet {s}", f"aDev{s}", f"Aave Devnet Variable Debt {s}", f"variableDebtDev{s}",
            f"Aave Devnet Stable Debt {s}", f"stableDebtDev{s}", b"",
        )
        for s in syms
    ]
    d.tx(
        configurator,
        "initReserves((address,address,address,uint8,address,address,address,address,string,string,string,string,string,string,bytes)[])",
        init_inputs,
    )
    for s in syms:
        ltv, lt, bonus = RISK[s]
        d.tx(configurator, "configureReserveAsCollateral(address,uint256,uint256,uint256)", tokens[s], ltv, lt, bonus, what=f"configureReserveAsCollateral {s}")
        d.tx(configurator, "setReserveBorrowing(address,bool)", tokens[s], True)
        d.tx(configurator, "setReserveFlashLoaning(address,bool)", tokens[s], True)
        d.tx(configurator, "setReserveFactor(address,uint256)", tokens[s], RESERVE_FACTOR_BPS)
        d.tx(configurator, "setLiquidationProtocolFee(address,uint256)", tokens[s], LIQUIDATION_PROTOCOL_FEE_BPS)
        d.tx(configurator, "setSupplyCap(address,uint256)", tokens[s], 0)
    d.tx(configurator, "updateFlashloanPremiumTotal(uint128)", FLASHLOAN_PREMIUM_TOTAL_BPS)

    a_tokens: dict[str, str] = {}
    v_tokens: dict[str, str] = {}
    for s in syms:
        a, _st, v = rpc.view(data_provider, "getReserveTokensAddresses(address)", [tokens[s]], ["address"] * 3)
        a_tokens[s] = checksum(a)
        v_tokens[s] = checksum(v)

    # --- Uniswap V3
    weth = tokens["WETH"]
    factory = d.create("UniswapV3Factory", link("UniswapV3Factory", {}))
    router = d.create("SwapRouter", link("SwapRouter", {}), ["address", "address"], [factory, weth])
    npm = d.create(
        "NonfungiblePositionManager", link("NonfungiblePositionManager", {}), ["address", "address", "address"], [factory, weth, "0x" + "00" * 20]
    )
    quoter = d.create("QuoterV2", link("QuoterV2", {}), ["address", "address"], [factory, weth])

    # liquidity: account 0 mints itself the tokens, approves the position manager
    need: dict[str, int] = {s: 0 for s in syms}
    for a_sym, b_sym, _fee in UNI_POOLS:
        for s in (a_sym, b_sym):
            need[s] += usd_to_raw(UNI_POOL_SIDE_USD * BASE_UNIT, prices[s], decimals[s]) * 2  # 2x headroom
    for s in syms:
        d.tx(tokens[s], "mint(uint256)", need[s], what=f"mint {s} for liquidity")
        d.tx(tokens[s], "approve(address,uint256)", npm, MAX_UINT256, what=f"approve {s} to position manager")

    pools: list[UniPool] = []
    for a_sym, b_sym, fee in UNI_POOLS:
        s0, s1 = sorted((a_sym, b_sym), key=lambda s: int(tokens[s], 16))
        t0, t1 = tokens[s0], tokens[s1]
        sqrt_p = sqrt_price_x96(prices[s0], decimals[s0], prices[s1], decimals[s1])
        d.tx(npm, "createAndInitializePoolIfNecessary(address,address,uint24,uint160)", t0, t1, fee, sqrt_p, what=f"create pool {s0}/{s1} {fee}")
        spacing = TICK_SPACING[fee]
        tick_hi = MAX_TICK // spacing * spacing
        amount0 = usd_to_raw(UNI_POOL_SIDE_USD * BASE_UNIT, prices[s0], decimals[s0])
        amount1 = usd_to_raw(UNI_POOL_SIDE_USD * BASE_UNIT, prices[s1], decimals[s1])
        d.tx(
            npm,
            "mint((address,address,uint24,int24,int24,uint256,uint256,uint256,uint256,address,uint256))",
            (t0, t1, fee, -tick_hi, tick_hi, amount0, amount1, 0, 0, DEPLOYER, 2**63),
            what=f"mint liquidity {s0}/{s1} {fee}",
        )
        addr = d.view_addr(factory, "getPool(address,address,uint24)", t0, t1, fee)
        pools.append(UniPool(token0=t0, token1=t1, fee=fee, address=addr))

    # --- Multicall3 at its canonical address (runtime code only)
    rpc.call("anvil_setCode", [MULTICALL3, own["Multicall3"]["deployedBytecode"]])

    dep = Deployment(
        chain_id=chain_id,
        deployer=DEPLOYER,
        keeper=KEEPER,
        depositor=DEPOSITOR,
        treasury=TREASURY,
        provider=provider,
        pool=pool,
        pool_configurator=configurator,
        oracle=oracle,
        data_provider=data_provider,
        acl_manager=acl,
        interest_rate_strategy=strategy,
        tokens=tokens,
        decimals=decimals,
        aggregators=aggregators,
        a_tokens=a_tokens,
        variable_debt_tokens=v_tokens,
        uniswap_factory=factory,
        uniswap_router=router,
        uniswap_position_manager=npm,
        uniswap_quoter_v2=quoter,
        uniswap_pools=pools,
        multicall3=MULTICALL3,
        deploy_block=int(rpc.call("eth_blockNumber"), 16),
    )
    if write_to is not None:
        dep.save(write_to)
    return dep
