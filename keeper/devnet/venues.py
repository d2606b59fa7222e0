"""Devnet extension: more swap venues and odd tokens, for swap routing and token-quirk tests.

Deployed from anvil account 7 (VENUES_DEPLOYER) in a fixed order, so the addresses are the
same on every build and independent of the other extensions; only the Aave admin calls come
from account 0 (the pool admin), the depositor's supplies from account 2 and the keeper's
approvals from account 1:

  - USDT: contracts/devnet/TetherLike.sol, 6 decimals, mainnet USDT's quirks (`transfer`,
    `transferFrom`, `approve` return nothing; `approve` from a non-zero allowance to a
    non-zero value reverts);
  - LINK: Aave's MintableERC20, 18 decimals;
  - SettableAggregator feeds USDT/USD ($1) and LINK/USD ($15), owned by account 0 (like the
    base feeds) so prices.set_price/shock can move them;
  - Aave V3 reserves for both on the devnet market (risk in RISK, borrowing and flash loans
    on, reserve factor and liquidation protocol fee as the base reserves, AaveOracle sources
    set); the depositor (account 2) supplies DEPOSITOR_USD of each; the keeper (account 1)
    gets KEEPER_USDT_RAW USDT and approves the Pool for USDT and LINK (max);
  - Uniswap V2 (npm @uniswap/v2-core 1.0.1): a factory and the pairs in V2_PAIRS at the
    oracle prices (tokens transferred to the pair, `mint`);
  - Uniswap V3 pools on the base factory (full range, as deploy.py): V3_POOLS, appended to
    Deployment.uniswap_pools. The LINK/WETH V3 pool is shallow, so V2 quotes LINK better.
    There is NO LINK/USDC or LINK/USDT pool on either venue: LINK -> USDC takes two hops
    (LINK -> WETH -> USDC).

The new tokens are registered in the Deployment (tokens, decimals, aggregators, a_tokens,
variable_debt_tokens) so the rest of the tooling sees them. Returned (stored in
Deployment.extras["venues"])::

    {"deployer": addr, "uniswap_v2_factory": addr,
     "v2_pairs": [{"token0": addr, "token1": addr, "address": addr}, ...],
     "v3_pools": [{"token0", "token1", "fee", "address"}, ...],
     "tether": USDT addr, "link": LINK addr, "deploy_block": int}

`after_shock(url, dep, symbol)` arbitrages every V2 pair holding `symbol` back to the oracle
prices' ratio (a real `swap` on the pair from account 0, which mints what it sells), as
prices.move_pools_to_oracle does for the V3 pools, and resets account 0's USDT allowance
to the SwapRouter to zero so that prices.move_pools_to_oracle's `approve` works on USDT.
"""

from __future__ import annotations

import math

from .artifacts import CONTRACTS_DIR, link
from .deploy import (
    BASE_UNIT,
    DEPLOYER,
    DEPOSITOR,
    KEEPER,
    LIQUIDATION_PROTOCOL_FEE_BPS,
    MAX_TICK,
    MAX_UINT256,
    RESERVE_FACTOR_BPS,
    TICK_SPACING,
    TREASURY,
    Deployment,
    UniPool,
    _Deployer,
    sqrt_price_x96,
    usd_to_raw,
)
from .jsonrpc import JsonRpc, checksum, encode_call

VENUES_DEPLOYER = "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955"  # anvil account 7 (extensions.ACCOUNTS["venues"])
TETHER_SOL = CONTRACTS_DIR / "devnet" / "TetherLike.sol"

# symbol -> (name, decimals, initial price USD 8 decimals); USDT's name/symbol/decimals are
# fixed in TetherLike.sol
NEW_TOKENS: dict[str, tuple[str, int, int]] = {
    "USDT": ("Tether USD", 6, 1 * BASE_UNIT),
    "LINK": ("ChainLink Token", 18, 15 * BASE_UNIT),
}
# symbol -> (ltv bps, liquidation threshold bps, liquidation bonus bps)
RISK: dict[str, tuple[int, int, int]] = {
    "LINK": (7000, 7500, 10700),
    "USDT": (7500, 7800, 10450),
}
DEPOSITOR_USD = 5_000_000  # supplied to Aave by account 2, per new token
KEEPER_USDT_RAW = 2_000_000 * 10**6
# (symbolA, symbolB, USD per side)
V2_PAIRS: list[tuple[str, str, int]] = [
    ("LINK", "WETH", 10_000_000),
    ("USDT", "WETH", 10_000_000),
]
# (symbolA, symbolB, fee, USD per side): full range on the base Uniswap V3 factory
V3_POOLS: list[tuple[str, str, int, int]] = [
    ("USDT", "USDC", 500, 10_000_000),
    ("LINK", "WETH", 3000, 500_000),  # shallow: V2's LINK/WETH is the better venue by quote
]
EIP1967_IMPL_SLOT = "0x360894a13ba1a3210667c828492db98dca3e2076cc3735a920a3ca505d382bbc"
ZERO = "0x" + "00" * 20


def _impl_of(rpc: JsonRpc, proxy: str) -> str:
    """Implementation behind an Aave token proxy (EIP-1967 slot; `implementation()` is admin-only)."""
    word = rpc.call("eth_getStorageAt", [proxy, EIP1967_IMPL_SLOT, "latest"])
    return checksum("0x" + word[-40:])


def deploy_extension(url: str, dep: Deployment) -> dict:
    with JsonRpc(url) as rpc:
        nonce = int(rpc.call("eth_getTransactionCount", [VENUES_DEPLOYER, "latest"]), 16)
        if nonce != 0:
            raise RuntimeError(f"venues deployer {VENUES_DEPLOYER} has nonce {nonce}: needs a fresh account")
        return _deploy(rpc, dep)


def _deploy(rpc: JsonRpc, dep: Deployment) -> dict:
    from ..solidity import compile_files
    from .artifacts import solidity_contracts

    v = _Deployer(rpc, sender=VENUES_DEPLOYER)
    admin = _Deployer(rpc, sender=DEPLOYER)
    own = solidity_contracts()
    tether_code = compile_files([TETHER_SOL])["TetherLike"]["bytecode"]

    # --- tokens and feeds (account 7); feeds handed to account 0 like the base feeds
    usdt = v.create("USDT (TetherLike)", tether_code)
    link_name, link_dec, _ = NEW_TOKENS["LINK"]
    link_tok = v.create("LINK", link("MintableERC20", {}), ["string", "string", "uint8"], [link_name, "LINK", link_dec])
    tokens = {"USDT": usdt, "LINK": link_tok}
    aggregators: dict[str, str] = {}
    for sym, (_name, _dec, price) in NEW_TOKENS.items():
        aggregators[sym] = v.create(
            f"{sym}/USD aggregator", own["SettableAggregator"]["bytecode"], ["int256", "string"], [price, f"{sym} / USD"]
        )
        v.tx(aggregators[sym], "transferOwnership(address)", DEPLOYER, what=f"{sym} feed to account 0")
    factory_v2 = v.create("UniswapV2Factory", link("UniswapV2Factory", {}), ["address"], [VENUES_DEPLOYER])

    all_tokens = {**dep.tokens, **tokens}
    decimals = {**dep.decimals, **{s: NEW_TOKENS[s][1] for s in tokens}}
    prices = {s: NEW_TOKENS[s][2] for s in tokens}
    for s in dep.tokens:
        (prices[s],) = rpc.view(dep.oracle, "getAssetPrice(address)", [dep.tokens[s]], ["uint256"])

    # --- Aave reserves (account 0 is the pool admin); implementations as the base reserves'
    syms = list(tokens)
    a_base, s_base, v_base = rpc.view(
        dep.data_provider, "getReserveTokensAddresses(address)", [dep.tokens["WETH"]], ["address"] * 3
    )
    a_impl, s_impl, v_impl = (_impl_of(rpc, checksum(x)) for x in (a_base, s_base, v_base))
    admin.tx(dep.oracle, "setAssetSources(address[],address[])", [tokens[s] for s in syms],
             [aggregators[s] for s in syms], what="AaveOracle setAssetSources USDT, LINK")
    init_inputs = [
        (
            a_impl, s_impl, v_impl, decimals[s], dep.interest_rate_strategy, tokens[s], TREASURY, ZERO,
            f"Aave Devnet {s}", f"aDev{s}", f"Aave Devnet Variable Debt {s}", f"variableDebtDev{s}",
            f"Aave Devnet Stable Debt {s}", f"stableDebtDev{s}", b"",
        )
        for s in syms
    ]
    admin.tx(
        dep.pool_configurator,
        "initReserves((address,address,address,uint8,address,address,address,address,string,string,string,string,string,string,bytes)[])",
        init_inputs,
        what="initReserves USDT, LINK",
    )
    for s in syms:
        ltv, lt, bonus = RISK[s]
        cfg = dep.pool_configurator
        admin.tx(cfg, "configureReserveAsCollateral(address,uint256,uint256,uint256)", tokens[s], ltv, lt, bonus,
                 what=f"configureReserveAsCollateral {s}")
        admin.tx(cfg, "setReserveBorrowing(address,bool)", tokens[s], True, what=f"setReserveBorrowing {s}")
        admin.tx(cfg, "setReserveFlashLoaning(address,bool)", tokens[s], True, what=f"setReserveFlashLoaning {s}")
        admin.tx(cfg, "setReserveFactor(address,uint256)", tokens[s], RESERVE_FACTOR_BPS, what=f"setReserveFactor {s}")
        admin.tx(cfg, "setLiquidationProtocolFee(address,uint256)", tokens[s], LIQUIDATION_PROTOCOL_FEE_BPS,
                 what=f"setLiquidationProtocolFee {s}")
    a_tokens: dict[str, str] = {}
    v_tokens: dict[str, str] = {}
    for s in syms:
        a, _st, vt = rpc.view(dep.data_provider, "getReserveTokensAddresses(address)", [tokens[s]], ["address"] * 3)
        a_tokens[s], v_tokens[s] = checksum(a), checksum(vt)

    # --- liquidity for Aave: the depositor supplies; the keeper gets USDT inventory
    for s in syms:
        amount = usd_to_raw(DEPOSITOR_USD * BASE_UNIT, prices[s], decimals[s])
        for sig, args, what in (
            ("mint(uint256)", (amount,), "mint"),
            ("approve(address,uint256)", (dep.pool, MAX_UINT256), "approve Pool"),
        ):
            rpc.send({"from": DEPOSITOR, "to": tokens[s], "data": encode_call(sig, *args)}, what=f"depositor {what} {s}")
        rpc.send({"from": DEPOSITOR, "to": dep.pool,
                  "data": encode_call("supply(address,uint256,address,uint16)", tokens[s], amount, DEPOSITOR, 0)},
                 what=f"depositor supply {s}")
    rpc.send({"from": KEEPER, "to": usdt, "data": encode_call("mint(uint256)", KEEPER_USDT_RAW)}, what="keeper mint USDT")
    for s in syms:
        rpc.send({"from": KEEPER, "to": tokens[s], "data": encode_call("approve(address,uint256)", dep.pool, MAX_UINT256)},
                 what=f"keeper approve {s} to Pool")

    # --- Uniswap V3 pools (base factory, full range), liquidity from account 7
    npm = dep.uniswap_position_manager
    need: dict[str, int] = {}
    for a_sym, b_sym, _fee, usd in V3_POOLS:
        for s in (a_sym, b_sym):
            need[s] = need.get(s, 0) + usd_to_raw(usd * BASE_UNIT, prices[s], decimals[s])
    for s in sorted(need):
        v.tx(all_tokens[s], "mint(uint256)", need[s], what=f"mint {s} for V3 liquidity")
        v.tx(all_tokens[s], "approve(address,uint256)", npm, need[s], what=f"approve {s} to position manager")
    v3_pools: list[UniPool] = []
    for a_sym, b_sym, fee, usd in V3_POOLS:
        s0, s1 = sorted((a_sym, b_sym), key=lambda s: int(all_tokens[s], 16))
        t0, t1 = all_tokens[s0], all_tokens[s1]
        v.tx(npm, "createAndInitializePoolIfNecessary(address,address,uint24,uint160)", t0, t1, fee,
             sqrt_price_x96(prices[s0], decimals[s0], prices[s1], decimals[s1]), what=f"create V3 pool {s0}/{s1} {fee}")
        tick_hi = MAX_TICK // TICK_SPACING[fee] * TICK_SPACING[fee]
        amount0 = usd_to_raw(usd * BASE_UNIT, prices[s0], decimals[s0])
        amount1 = usd_to_raw(usd * BASE_UNIT, prices[s1], decimals[s1])
        v.tx(npm, "mint((address,address,uint24,int24,int24,uint256,uint256,uint256,uint256,address,uint256))",
             (t0, t1, fee, -tick_hi, tick_hi, amount0, amount1, 0, 0, VENUES_DEPLOYER, 2**63),
             what=f"mint V3 liquidity {s0}/{s1} {fee}")
        addr = v.view_addr(dep.uniswap_factory, "getPool(address,address,uint24)", t0, t1, fee)
        v3_pools.append(UniPool(token0=t0, token1=t1, fee=fee, address=addr))

    # --- Uniswap V2 pairs at the oracle prices, liquidity from account 7
    v2_pairs: list[dict] = []
    for a_sym, b_sym, usd in V2_PAIRS:
        s0, s1 = sorted((a_sym, b_sym), key=lambda s: int(all_tokens[s], 16))
        t0, t1 = all_tokens[s0], all_tokens[s1]
        v.tx(factory_v2, "createPair(address,address)", t0, t1, what=f"create V2 pair {s0}/{s1}")
        pair = v.view_addr(factory_v2, "getPair(address,address)", t0, t1)
        for s, t in ((s0, t0), (s1, t1)):
            amount = usd_to_raw(usd * BASE_UNIT, prices[s], decimals[s])
            v.tx(t, "mint(uint256)", amount, what=f"mint {s} for V2 {s0}/{s1}")
            v.tx(t, "transfer(address,uint256)", pair, amount, what=f"{s} to V2 pair {s0}/{s1}")
        v.tx(pair, "mint(address)", VENUES_DEPLOYER, what=f"mint V2 liquidity {s0}/{s1}")
        v2_pairs.append({"token0": t0, "token1": t1, "address": pair})

    # --- register in the Deployment
    dep.tokens.update(tokens)
    dep.decimals.update({s: decimals[s] for s in syms})
    dep.aggregators.update(aggregators)
    dep.a_tokens.update(a_tokens)
    dep.variable_debt_tokens.update(v_tokens)
    dep.uniswap_pools.extend(v3_pools)
    return {
        "deployer": VENUES_DEPLOYER,
        "uniswap_v2_factory": factory_v2,
        "v2_pairs": v2_pairs,
        "v3_pools": [{"token0": p.token0, "token1": p.token1, "fee": p.fee, "address": p.address} for p in v3_pools],
        "tether": usdt,
        "link": link_tok,
        "deploy_block": int(rpc.call("eth_blockNumber"), 16),
    }


# ---- following the oracle -----------------------------------------------------------------


def v2_swap_to_price(r_in: int, r_out: int, num: int, den: int) -> tuple[int, int]:
    """(amount_in, amount_out) of a Uniswap V2 swap (0.3% fee) that leaves the pair's reserves
    at r_out'/r_in' ~= num/den (the target price of the input token in raw output units),
    passing the pair's K check. (0, 0) when the input token is not overpriced.

    Final reserves x = r_in + in, y = r_out - out with y = x * num/den and the fee-adjusted
    invariant (997 x + 3 r_in) y = 1000 r_in r_out: 997 p x^2 + 3 r_in p x - 1000 r_in r_out = 0."""
    if r_in <= 0 or r_out <= 0 or num <= 0 or den <= 0 or r_out * den <= r_in * num:
        return 0, 0
    b = 3 * r_in * num
    disc = b * b + 4 * 997 * num * 1000 * r_in * r_out * den
    x = (math.isqrt(disc) - b) // (2 * 997 * num) + 1  # round the final input reserve up
    amount_in = x - r_in
    amount_out = r_out - (x * num + den - 1) // den  # final output reserve rounded up: out rounded down
    if amount_in <= 0 or amount_out <= 0:
        return 0, 0
    # the pair's check: (1000 x - 3 in) * 1000 (r_out - out) >= r_in r_out 1000^2
    while (1000 * x - 3 * amount_in) * (r_out - amount_out) < r_in * r_out * 1000:
        amount_out -= max(1, amount_out // 10**12)
    return amount_in, amount_out


def move_v2_pairs_to_oracle(url: str, dep: Deployment, symbol: str) -> None:
    """Swap in every V2 pair holding `symbol` until its reserves' ratio is the oracle prices'.
    Account 0 mints what it sells, transfers it to the pair and calls `swap` (real V2 code)."""
    ext = dep.extras.get("venues")
    if not ext or symbol not in dep.tokens:
        return
    token = dep.tokens[symbol].lower()
    with JsonRpc(url) as rpc:
        for p in ext["v2_pairs"]:
            if token not in (p["token0"].lower(), p["token1"].lower()):
                continue
            s0, s1 = dep.symbol_of(p["token0"]), dep.symbol_of(p["token1"])
            price = {}
            for s in (s0, s1):
                (price[s],) = rpc.view(dep.aggregators[s], "latestAnswer()", [], ["int256"])
            r0, r1, _ts = rpc.view(p["address"], "getReserves()", [], ["uint112", "uint112", "uint32"])
            # raw token1 per raw token0 at the oracle: p0 * 10**d1 / (p1 * 10**d0)
            num = price[s0] * 10 ** dep.decimals[s1]
            den = price[s1] * 10 ** dep.decimals[s0]
            amt_in, amt_out = v2_swap_to_price(r0, r1, num, den)  # token0 overpriced: sell token0
            zero_for_one = amt_in > 0
            if not zero_for_one:
                amt_in, amt_out = v2_swap_to_price(r1, r0, den, num)  # token1 overpriced: sell token1
                if amt_in == 0:
                    continue
            tin = p["token0"] if zero_for_one else p["token1"]
            out0, out1 = (0, amt_out) if zero_for_one else (amt_out, 0)
            rpc.send({"from": DEPLOYER, "to": tin, "data": encode_call("mint(address,uint256)", DEPLOYER, amt_in),
                      "gas": hex(200_000)}, what="mint for V2 arbitrage")
            rpc.send({"from": DEPLOYER, "to": tin, "data": encode_call("transfer(address,uint256)", p["address"], amt_in),
                      "gas": hex(200_000)}, what="transfer to V2 pair")
            rpc.send({"from": DEPLOYER, "to": p["address"], "gas": hex(300_000),
                      "data": encode_call("swap(uint256,uint256,address,bytes)", out0, out1, DEPLOYER, b"")},
                     what=f"arbitrage V2 {s0}/{s1}")


def _reset_usdt_router_allowance(url: str, dep: Deployment) -> None:
    """prices.move_pools_to_oracle approves the SwapRouter for exactly what it mints and the
    price-limited swap leaves the rest approved; USDT refuses the next non-zero approve, so
    set the leftover back to zero before the V3 pools are moved."""
    ext = dep.extras.get("venues")
    if not ext:
        return
    with JsonRpc(url) as rpc:
        (allowed,) = rpc.view(ext["tether"], "allowance(address,address)", [DEPLOYER, dep.uniswap_router], ["uint256"])
        if allowed:
            rpc.send({"from": DEPLOYER, "to": ext["tether"], "gas": hex(100_000),
                      "data": encode_call("approve(address,uint256)", dep.uniswap_router, 0)},
                     what="reset USDT allowance to the SwapRouter")


def after_shock(url: str, dep: Deployment, symbol: str) -> None:
    if not dep.extras.get("venues"):
        return
    _reset_usdt_router_allowance(url, dep)
    move_v2_pairs_to_oracle(url, dep, symbol)
