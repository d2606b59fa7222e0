"""Devnet extension: Morpho Blue on real bytecode, its markets, borrowers and the keeper's
MorphoLiquidator.

Deployed from anvil account 8 (MORPHO_DEPLOYER, extensions.ACCOUNTS["morpho"]) in a fixed
order, so the addresses are the same on every build and independent of the other extensions:

  - Morpho Blue: `src/Morpho.sol` of npm `@morpho-org/morpho-blue` 1.0.0, compiled here with
    solc 0.8.19 exactly (npm alias `solc0819`; Morpho's pragma is `=0.8.19`), owner account 8;
  - the rate model: the package's own `src/mocks/IrmMock.sol` (borrow APR = utilization, as a
    per-second rate `utilization / 365 days`): interest accrues, and the rate is a pure function
    of the market's stored totals, so the keeper computes it exactly;
  - one oracle per market, `contracts/morpho/MorphoChainlinkOracle.sol` (written here, in the
    shape of morpho-blue-oracles' ChainlinkOracle): price = collateral USD feed / loan USD feed,
    in Morpho's 1e36 scale with the tokens' decimals. The feeds are the devnet's
    SettableAggregators (the Aave oracle's sources), so `keeper devnet shock` moves Morpho too;
  - MARKETS: WETH/USDC and WBTC/USDC at LLTV 86%, LINK/WETH at 94.5% (LINK comes from the
    venues extension, which runs before this one); a 10% fee on WETH/USDC (fee recipient
    account 8), so fee shares accrue as on mainnet;
  - account 8 supplies SUPPLY_USD of the loan token to each market;
  - BORROWERS_PER_MARKET borrowers per market (deterministic addresses), each supplying
    collateral and borrowing at a loan-to-value between LTV_MIN_PCT and LTV_MAX_PCT of the
    LLTV (golden-ratio spread, as the Aave seed): a -12% WETH move makes the upper part of
    WETH/USDC liquidatable (and the top one underwater: seizing all its collateral leaves bad
    debt), WBTC/USDC does not move, LINK/WETH gets healthier;
  - the keeper's MorphoLiquidator (contracts/morpho/MorphoLiquidator.sol, solc 0.8.24), deployed
    by account 8 with owner = the keeper (KEEPER): no approvals are needed, it uses no inventory.

Returned (stored in Deployment.extras["morpho"])::

    {"deployer", "morpho", "irm", "liquidator", "fee_recipient",
     "oracles": {"WETH/USDC": addr, ...},
     "markets": [{"label", "id", "loan_token", "collateral_token", "oracle", "irm", "lltv", "fee"}, ...],
     "borrowers": [addr, ...], "deploy_block": int}
"""

from __future__ import annotations

from eth_abi import encode as abi_encode
from eth_utils import keccak

from .artifacts import CONTRACTS_DIR, REPO_ROOT
from .deploy import KEEPER, MAX_UINT256, Deployment, _Deployer
from .jsonrpc import JsonRpc, checksum, encode_call

MORPHO_DEPLOYER = "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f"  # anvil account 8 (extensions.ACCOUNTS["morpho"])
MORPHO_PACKAGE = "@morpho-org/morpho-blue"
MORPHO_SOURCES = ("src/Morpho.sol", "src/mocks/IrmMock.sol")
SOLC_PACKAGE = "solc0819"  # npm alias of solc@0.8.19 in package.json
SOLC_VERSION = "0.8.19"
WAD = 10**18
LLTV_86 = 860_000_000_000_000_000
LLTV_945 = 945_000_000_000_000_000
# (collateral, loan, lltv, fee wad)
MARKETS: list[tuple[str, str, int, int]] = [
    ("WETH", "USDC", LLTV_86, WAD // 10),
    ("WBTC", "USDC", LLTV_86, 0),
    ("LINK", "WETH", LLTV_945, 0),
]
SUPPLY_USD = 2_000_000  # loan token supplied to each market by account 8 (utilization ~25-40%)
BORROWERS_PER_MARKET = 10
LTV_MIN_PCT = 80.0  # of the LLTV
LTV_MAX_PCT = 98.5
SIZE_MIN_USD = 5_000
SIZE_MAX_USD = 200_000
BORROWER_SALT = b"keeper-devnet-morpho-borrower"
BORROWER_ETH_WEI = 10 * 10**18
MARKET_PARAMS = "(address,address,address,address,uint256)"


def borrower_address(i: int) -> str:
    return checksum("0x" + keccak(BORROWER_SALT + i.to_bytes(4, "big"))[-20:].hex())


def market_id(loan: str, collateral: str, oracle: str, irm: str, lltv: int) -> str:
    """Morpho's Id: keccak256(abi.encode(MarketParams))."""
    return "0x" + keccak(abi_encode(["address", "address", "address", "address", "uint256"],
                                    [loan, collateral, oracle, irm, lltv])).hex()


def compile_morpho() -> dict[str, dict]:
    """Morpho and IrmMock from the npm package, with solc 0.8.19 exactly (cached by source hash)."""
    from ..solidity import compile_sources, solc_version

    if solc_version(SOLC_PACKAGE) != SOLC_VERSION:
        raise RuntimeError(f"node_modules/{SOLC_PACKAGE} is solc {solc_version(SOLC_PACKAGE)}, Morpho Blue needs "
                           f"{SOLC_VERSION} exactly (package.json: \"{SOLC_PACKAGE}\": \"npm:solc@{SOLC_VERSION}\")")
    pkg = REPO_ROOT / "node_modules" / MORPHO_PACKAGE
    if not (pkg / MORPHO_SOURCES[0]).is_file():
        raise RuntimeError(f"{pkg / MORPHO_SOURCES[0]} not found: run `npm ci` (package.json pins {MORPHO_PACKAGE})")
    sources = {f"{MORPHO_PACKAGE}/{p}": (pkg / p).read_text() for p in MORPHO_SOURCES}
    return compile_sources(sources, solc=SOLC_PACKAGE)


def compile_own() -> dict[str, dict]:
    """The contracts written here: the oracle and the keeper's MorphoLiquidator (solc 0.8.24)."""
    from ..solidity import compile_files

    return compile_files([CONTRACTS_DIR / "morpho" / "MorphoChainlinkOracle.sol",
                          CONTRACTS_DIR / "morpho" / "MorphoLiquidator.sol"])


def deploy_extension(url: str, dep: Deployment) -> dict:
    with JsonRpc(url) as rpc:
        nonce = int(rpc.call("eth_getTransactionCount", [MORPHO_DEPLOYER, "latest"]), 16)
        if nonce != 0:
            raise RuntimeError(f"morpho deployer {MORPHO_DEPLOYER} has nonce {nonce}: needs a fresh account")
        return _deploy(rpc, dep)


def _answer(rpc: JsonRpc, feed: str) -> int:
    (a,) = rpc.view(feed, "latestAnswer()", [], ["int256"])
    return a


def _deploy(rpc: JsonRpc, dep: Deployment) -> dict:
    m = _Deployer(rpc, sender=MORPHO_DEPLOYER)
    blue = compile_morpho()
    own = compile_own()
    for sym in {s for c, lo, *_ in MARKETS for s in (c, lo)}:
        if sym not in dep.tokens or sym not in dep.aggregators:
            raise RuntimeError(f"morpho extension: the devnet has no {sym} token/feed (the venues extension adds LINK)")

    morpho = m.create("Morpho Blue", blue["Morpho"]["bytecode"], ["address"], [MORPHO_DEPLOYER])
    irm = m.create("IrmMock", blue["IrmMock"]["bytecode"])
    m.tx(morpho, "enableIrm(address)", irm)
    for lltv in sorted({lltv for *_, lltv, _fee in MARKETS}):
        m.tx(morpho, "enableLltv(uint256)", lltv)
    m.tx(morpho, "setFeeRecipient(address)", MORPHO_DEPLOYER)

    oracles: dict[str, str] = {}
    markets: list[dict] = []
    for coll, loan, lltv, fee in MARKETS:
        label = f"{coll}/{loan}"
        oracle = m.create(f"oracle {label}", own["MorphoChainlinkOracle"]["bytecode"],
                          ["address", "address", "uint256", "uint256"],
                          [dep.aggregators[coll], dep.aggregators[loan], dep.decimals[coll], dep.decimals[loan]])
        oracles[label] = oracle
        params = (dep.tokens[loan], dep.tokens[coll], oracle, irm, lltv)
        m.tx(morpho, f"createMarket({MARKET_PARAMS})", params, what=f"createMarket {label}")
        if fee:
            m.tx(morpho, f"setFee({MARKET_PARAMS},uint256)", params, fee, what=f"setFee {label}")
        markets.append({"label": label, "id": market_id(*params), "loan_token": params[0], "collateral_token": params[1],
                        "oracle": oracle, "irm": irm, "lltv": lltv, "fee": fee})

    # liquidity: account 8 supplies each market's loan token
    for mk in markets:
        loan_sym = dep.symbol_of(mk["loan_token"])
        amount = SUPPLY_USD * 10**8 * 10 ** dep.decimals[loan_sym] // _answer(rpc, dep.aggregators[loan_sym])
        m.tx(mk["loan_token"], "mint(uint256)", amount, what=f"mint {loan_sym} to supply")
        m.tx(mk["loan_token"], "approve(address,uint256)", morpho, MAX_UINT256, what=f"approve {loan_sym}")
        m.tx(morpho, f"supply({MARKET_PARAMS},uint256,uint256,address,bytes)", _params(mk), amount, 0,
             MORPHO_DEPLOYER, b"", what=f"supply {mk['label']}")

    borrowers = _seed_borrowers(rpc, dep, morpho, markets)

    liquidator = m.create("MorphoLiquidator", own["MorphoLiquidator"]["bytecode"], ["address", "address", "address"],
                          [morpho, dep.uniswap_router, KEEPER])
    return {"deployer": MORPHO_DEPLOYER, "morpho": morpho, "irm": irm, "liquidator": liquidator,
            "fee_recipient": MORPHO_DEPLOYER, "oracles": oracles, "markets": markets, "borrowers": borrowers,
            "deploy_block": int(rpc.call("eth_blockNumber"), 16)}


def _params(mk: dict) -> tuple:
    return (mk["loan_token"], mk["collateral_token"], mk["oracle"], mk["irm"], mk["lltv"])


def plan(n_markets: int = len(MARKETS), per_market: int = BORROWERS_PER_MARKET) -> list[tuple[int, int, int, int]]:
    """(borrower index, market index, collateral size in whole USD, LTV in ppm of the LLTV):
    deterministic; within a market the LTVs follow the golden-ratio sequence over
    [LTV_MIN_PCT, LTV_MAX_PCT], so the highest sits at the top of the range."""
    out = []
    lo, hi = int(LTV_MIN_PCT * 10_000), int(LTV_MAX_PCT * 10_000)
    for k in range(n_markets):
        for j in range(per_market):
            i = k * per_market + j
            frac = 1_000_000 if j == 0 else (j * 618_034) % 1_000_000  # the first one at the top
            h = int.from_bytes(keccak(b"keeper-devnet-morpho-size" + i.to_bytes(4, "big"))[:8], "big")
            out.append((i, k, SIZE_MIN_USD + h % (SIZE_MAX_USD - SIZE_MIN_USD + 1), lo + (hi - lo) * frac // 1_000_000))
    return out


def _seed_borrowers(rpc: JsonRpc, dep: Deployment, morpho: str, markets: list[dict]) -> list[str]:
    borrowers = []
    for i, k, size_usd, ltv_ppm in plan(len(markets)):
        mk = markets[k]
        who = borrower_address(i)
        coll_sym = dep.symbol_of(mk["collateral_token"])
        collateral = size_usd * 10**8 * 10 ** dep.decimals[coll_sym] // _answer(rpc, dep.aggregators[coll_sym])
        (price,) = rpc.view(mk["oracle"], "price()", [], ["uint256"])
        max_borrow = collateral * price // 10**36 * mk["lltv"] // WAD
        assets = max_borrow * ltv_ppm // 1_000_000
        rpc.call("anvil_setBalance", [who, hex(BORROWER_ETH_WEI)])
        rpc.call("anvil_impersonateAccount", [who])
        try:
            def send(to: str, sig: str, *args, what: str) -> None:
                rpc.send({"from": who, "to": to, "data": encode_call(sig, *args)}, what=f"morpho borrower #{i} {what}")

            send(mk["collateral_token"], "mint(uint256)", collateral, what=f"mint {coll_sym}")
            send(mk["collateral_token"], "approve(address,uint256)", morpho, collateral, what=f"approve {coll_sym}")
            send(morpho, f"supplyCollateral({MARKET_PARAMS},uint256,address,bytes)", _params(mk), collateral, who, b"",
                 what=f"supplyCollateral {mk['label']}")
            send(morpho, f"borrow({MARKET_PARAMS},uint256,uint256,address,address)", _params(mk), assets, 0, who, who,
                 what=f"borrow {mk['label']}")
        finally:
            rpc.call("anvil_stopImpersonatingAccount", [who])
        borrowers.append(who)
    return borrowers


__all__ = ["deploy_extension", "borrower_address", "market_id", "compile_morpho", "compile_own"]
