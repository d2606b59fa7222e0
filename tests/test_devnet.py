"""Devnet: real Aave V3 + Uniswap V3 on anvil, loaded from the cached state."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode

from keeper.devnet import KEEPER, MULTICALL3, shock, start_devnet
from keeper.devnet.jsonrpc import JsonRpc, encode_call, selector
from keeper.devnet.seed import PROFILES

REPO = Path(__file__).resolve().parents[1]
N_BORROWERS = 40
WAD = 10**18


@pytest.fixture(scope="module")
def devnet(tmp_path_factory):
    log = tmp_path_factory.mktemp("devnet") / "anvil.log"
    node, dep = start_devnet(port=0, n_borrowers=N_BORROWERS, log_path=log)
    rpc = JsonRpc(node.url)
    try:
        yield node, dep, rpc
    finally:
        rpc.close()
        node.stop()
    assert not node.running


def account_data(rpc: JsonRpc, dep, users: list[str]) -> dict[str, tuple[int, ...]]:
    calls = [
        ("eth_call", [{"to": dep.pool, "data": encode_call("getUserAccountData(address)", u)}, "latest"])
        for u in users
    ]
    out = rpc.batch(calls)
    return {u: abi_decode(["uint256"] * 6, bytes.fromhex(r[2:])) for u, r in zip(users, out)}


def test_code_deployed(devnet):
    _node, dep, rpc = devnet
    for addr in [dep.pool, dep.provider, dep.oracle, MULTICALL3, dep.uniswap_quoter_v2, *dep.tokens.values()]:
        assert len(rpc.call("eth_getCode", [addr, "latest"])) > 2, addr
    assert int(rpc.call("eth_chainId"), 16) == 31337


def test_reserves_and_oracle(devnet):
    _node, dep, rpc = devnet
    (reserves,) = rpc.view(dep.pool, "getReservesList()", [], ["address[]"])
    assert {r.lower() for r in reserves} == {t.lower() for t in dep.tokens.values()}
    (price,) = rpc.view(dep.oracle, "getAssetPrice(address)", [dep.tokens["WETH"]], ["uint256"])
    assert price == 3000 * 10**8
    (pool,) = rpc.view(dep.provider, "getPool()", [], ["address"])
    assert pool.lower() == dep.pool.lower()


def test_multicall3(devnet):
    _node, dep, rpc = devnet
    calls = [
        (MULTICALL3, False, selector("getBlockNumber()")),
        (dep.tokens["USDC"], False, selector("decimals()")),
        (dep.pool, True, b"\xde\xad\xbe\xef"),  # fails, allowed
    ]
    data = encode_call("aggregate3((address,bool,bytes)[])", calls)
    raw = rpc.eth_call(MULTICALL3, data)
    (results,) = abi_decode(["(bool,bytes)[]"], raw)
    assert results[0][0] and int.from_bytes(results[0][1], "big") == int(rpc.call("eth_blockNumber"), 16)
    assert results[1] == (True, abi_encode(["uint8"], [6]))
    assert results[2][0] is False


def test_borrowers_seeded(devnet):
    _node, dep, rpc = devnet
    assert len(dep.borrowers) == N_BORROWERS
    data = account_data(rpc, dep, dep.borrowers)
    with_debt = [d for d in data.values() if d[1] > 0]
    assert len(with_debt) >= 30
    for _coll, _debt, _avail, _lt, _ltv, hf in with_debt:
        assert WAD < hf < 17 * WAD // 10


def test_keeper_funded(devnet):
    _node, dep, rpc = devnet
    (bal,) = rpc.view(dep.tokens["USDC"], "balanceOf(address)", [KEEPER], ["uint256"])
    assert bal == 2_000_000 * 10**6
    (allowance,) = rpc.view(dep.tokens["WETH"], "allowance(address,address)", [KEEPER, dep.pool], ["uint256"])
    assert allowance == 2**256 - 1


def test_quoter_weth_usdc(devnet):
    _node, dep, rpc = devnet
    params = (dep.tokens["WETH"], dep.tokens["USDC"], 10**18, 500, 0)
    raw = rpc.eth_call(
        dep.uniswap_quoter_v2, encode_call("quoteExactInputSingle((address,address,uint256,uint24,uint160))", params)
    )
    amount_out, _sqrt_after, _ticks, _gas = abi_decode(["uint256", "uint160", "uint32", "uint256"], raw)
    expected = 3000 * 10**6
    assert abs(amount_out - expected) * 100 < expected, amount_out


def test_shock_makes_borrowers_liquidatable(devnet):
    node, dep, rpc = devnet
    snap = rpc.call("evm_snapshot")
    try:
        old, new = shock(node.url, dep, "WETH", -12)
        assert (old, new) == (3000 * 10**8, 2640 * 10**8)
        (price,) = rpc.view(dep.oracle, "getAssetPrice(address)", [dep.tokens["WETH"]], ["uint256"])
        assert price == new
        data = account_data(rpc, dep, dep.borrowers)
        hfs = [d[5] for d in data.values() if d[1] > 0]
        assert sum(hf < WAD for hf in hfs) >= 2
        weth_idx = [i for i, (coll, _debt) in enumerate(PROFILES) if any(s == "WETH" for s, _ in coll)]
        weth_borrowers = [b for i, b in enumerate(dep.borrowers) if i % len(PROFILES) in weth_idx]
        assert any(data[b][5] <= 95 * WAD // 100 for b in weth_borrowers)
        assert any(95 * WAD // 100 < data[b][5] < WAD for b in weth_borrowers)
    finally:
        assert rpc.call("evm_revert", [snap]) is True


def test_addresses_match_config(devnet):
    _node, dep, _rpc = devnet
    cfg = tomllib.loads((REPO / "config" / "devnet.toml").read_text())
    assert cfg["chain"]["chain_id"] == dep.chain_id
    assert cfg["chain"]["multicall3"] == dep.multicall3
    assert cfg["keeper"]["address"] == dep.keeper
    assert cfg["swap"]["quoter_v2"] == dep.uniswap_quoter_v2
    (aave,) = [p for p in cfg["protocols"] if p["name"] == "aave-v3-devnet"]  # aave-v3.2-devnet: test_aave32_market.py
    assert aave["pool_addresses_provider"] == dep.provider


def test_solidity_compile_error_is_clear():
    from keeper.solidity import compile_sources

    with pytest.raises(RuntimeError, match="DeclarationError|Undeclared identifier"):
        compile_sources({"Bad.sol": "pragma solidity 0.8.24; contract Bad { function f() public { x = 1; } }"})


# ---- venues extension (keeper/devnet/venues.py): USDT-like and LINK reserves, Uniswap V2 ----

ZERO_ADDR = "0x" + "00" * 20


def venues(dep) -> dict:
    return dep.extras["venues"]


def test_venues_registered_in_deployment(devnet):
    _node, dep, rpc = devnet
    v = venues(dep)
    assert v["tether"] == dep.tokens["USDT"] and v["link"] == dep.tokens["LINK"]
    assert (dep.decimals["USDT"], dep.decimals["LINK"]) == (6, 18)
    for sym in ("USDT", "LINK"):
        for addr in (dep.tokens[sym], dep.aggregators[sym], dep.a_tokens[sym], dep.variable_debt_tokens[sym]):
            assert len(rpc.call("eth_getCode", [addr, "latest"])) > 2, (sym, addr)
    pools = {(p.token0.lower(), p.token1.lower(), p.fee): p.address for p in dep.uniswap_pools}
    for p in v["v3_pools"]:
        assert pools[(p["token0"].lower(), p["token1"].lower(), p["fee"])] == p["address"]
    (n_pairs,) = rpc.view(v["uniswap_v2_factory"], "allPairsLength()", [], ["uint256"])
    assert n_pairs == len(v["v2_pairs"]) == 2


def test_venues_reserves_risk_params(devnet):
    from keeper.devnet.deploy import LIQUIDATION_PROTOCOL_FEE_BPS, RESERVE_FACTOR_BPS
    from keeper.devnet.venues import DEPOSITOR_USD, RISK

    _node, dep, rpc = devnet
    (reserves,) = rpc.view(dep.pool, "getReservesList()", [], ["address[]"])
    assert {dep.tokens["USDT"].lower(), dep.tokens["LINK"].lower()} <= {r.lower() for r in reserves}
    for sym, price in (("USDT", 10**8), ("LINK", 15 * 10**8)):
        tok = dep.tokens[sym]
        (p,) = rpc.view(dep.oracle, "getAssetPrice(address)", [tok], ["uint256"])
        assert p == price
        (src,) = rpc.view(dep.oracle, "getSourceOfAsset(address)", [tok], ["address"])
        assert src.lower() == dep.aggregators[sym].lower()
        dec, ltv, lt, bonus, rf, coll, borrow, _stable, active, frozen = rpc.view(
            dep.data_provider, "getReserveConfigurationData(address)", [tok], ["uint256"] * 5 + ["bool"] * 5
        )
        assert (dec, ltv, lt, bonus, rf) == (dep.decimals[sym], *RISK[sym], RESERVE_FACTOR_BPS)
        assert coll and borrow and active and not frozen
        (flash,) = rpc.view(dep.data_provider, "getFlashLoanEnabled(address)", [tok], ["bool"])
        (fee,) = rpc.view(dep.data_provider, "getLiquidationProtocolFee(address)", [tok], ["uint256"])
        assert flash and fee == LIQUIDATION_PROTOCOL_FEE_BPS
        a, _s, vdebt = rpc.view(dep.data_provider, "getReserveTokensAddresses(address)", [tok], ["address"] * 3)
        assert (a.lower(), vdebt.lower()) == (dep.a_tokens[sym].lower(), dep.variable_debt_tokens[sym].lower())
        (supplied,) = rpc.view(a, "balanceOf(address)", [dep.depositor], ["uint256"])
        assert supplied * price // 10 ** dep.decimals[sym] >= DEPOSITOR_USD * 10**8 * 999 // 1000
    (usdt,) = rpc.view(dep.tokens["USDT"], "balanceOf(address)", [KEEPER], ["uint256"])
    assert usdt == 2_000_000 * 10**6


def test_venues_usdt_and_link_can_be_borrowed(devnet):
    _node, dep, rpc = devnet
    borrower = "0x000000000000000000000000000000000000bEEF"
    snap = rpc.call("evm_snapshot")
    try:
        rpc.call("anvil_setBalance", [borrower, hex(10**19)])
        rpc.call("anvil_impersonateAccount", [borrower])
        weth = dep.tokens["WETH"]

        def send(to, sig, *args):
            rpc.send({"from": borrower, "to": to, "data": encode_call(sig, *args), "gas": hex(1_000_000)}, what=sig)

        send(weth, "mint(uint256)", 10 * WAD)
        send(weth, "approve(address,uint256)", dep.pool, 10 * WAD)
        send(dep.pool, "supply(address,uint256,address,uint16)", weth, 10 * WAD, borrower, 0)
        send(dep.pool, "borrow(address,uint256,uint256,uint16,address)", dep.tokens["USDT"], 5_000 * 10**6, 2, 0, borrower)
        send(dep.pool, "borrow(address,uint256,uint256,uint16,address)", dep.tokens["LINK"], 100 * WAD, 2, 0, borrower)
        (usdt,) = rpc.view(dep.tokens["USDT"], "balanceOf(address)", [borrower], ["uint256"])
        (debt,) = rpc.view(dep.variable_debt_tokens["LINK"], "balanceOf(address)", [borrower], ["uint256"])
        assert usdt == 5_000 * 10**6 and debt >= 100 * WAD
    finally:
        rpc.call("anvil_stopImpersonatingAccount", [borrower])
        assert rpc.call("evm_revert", [snap]) is True


def test_usdt_behaves_like_mainnet_usdt(devnet):
    _node, dep, rpc = devnet
    usdt = dep.tokens["USDT"]
    assert rpc.view(usdt, "symbol()", [], ["string"]) == ("USDT",)
    assert rpc.view(usdt, "decimals()", [], ["uint8"]) == (6,)
    spender = dep.depositor
    snap = rpc.call("evm_snapshot")
    try:
        # no return data from transfer / approve / transferFrom (a bool-decoding caller fails)
        for data in (encode_call("transfer(address,uint256)", spender, 10**6),
                     encode_call("approve(address,uint256)", spender, 10**6)):
            assert rpc.call("eth_call", [{"from": KEEPER, "to": usdt, "data": data}, "latest"]) == "0x"
        # the keeper's max allowance to the Pool: non-zero -> non-zero reverts, -> 0 works, then 0 -> x
        (allowed,) = rpc.view(usdt, "allowance(address,address)", [KEEPER, dep.pool], ["uint256"])
        assert allowed == 2**256 - 1
        with pytest.raises(RuntimeError, match="revert"):
            rpc.send({"from": KEEPER, "to": usdt, "data": encode_call("approve(address,uint256)", dep.pool, 5),
                      "gas": hex(100_000)}, what="approve non-zero -> non-zero")
        for amount in (0, 5):
            r = rpc.send({"from": KEEPER, "to": usdt, "data": encode_call("approve(address,uint256)", dep.pool, amount)},
                         what=f"approve {amount}")
            assert r["logs"], "Approval event"
        rpc.send({"from": KEEPER, "to": usdt, "data": encode_call("approve(address,uint256)", spender, 10**6)}, what="approve")
        out = rpc.call("eth_call", [{"from": spender, "to": usdt,
                                     "data": encode_call("transferFrom(address,address,uint256)", KEEPER, spender, 10**6)},
                                    "latest"])
        assert out == "0x"
        # a max allowance is not used up (mainnet semantics): the Pool's stays max after a supply
        rpc.send({"from": KEEPER, "to": usdt, "data": encode_call("approve(address,uint256)", dep.pool, 0)}, what="reset")
        rpc.send({"from": KEEPER, "to": usdt, "data": encode_call("approve(address,uint256)", dep.pool, 2**256 - 1)},
                 what="approve max")
        rpc.send({"from": KEEPER, "to": dep.pool,
                  "data": encode_call("supply(address,uint256,address,uint16)", usdt, 10**6, KEEPER, 0)}, what="supply")
        assert rpc.view(usdt, "allowance(address,address)", [KEEPER, dep.pool], ["uint256"]) == (2**256 - 1,)
    finally:
        assert rpc.call("evm_revert", [snap]) is True


def _usd(rpc, dep, sym: str, raw: int) -> int:
    (p,) = rpc.view(dep.oracle, "getAssetPrice(address)", [dep.tokens[sym]], ["uint256"])
    return raw * p // 10 ** dep.decimals[sym]


def test_v2_pairs_hold_reserves_at_oracle_prices(devnet):
    _node, dep, rpc = devnet
    v = venues(dep)
    pairs = {frozenset((dep.symbol_of(p["token0"]), dep.symbol_of(p["token1"]))): p for p in v["v2_pairs"]}
    assert set(pairs) == {frozenset(("LINK", "WETH")), frozenset(("USDT", "WETH"))}
    for p in v["v2_pairs"]:
        assert int(p["token0"], 16) < int(p["token1"], 16)
        (addr,) = rpc.view(v["uniswap_v2_factory"], "getPair(address,address)", [p["token1"], p["token0"]], ["address"])
        assert addr.lower() == p["address"].lower()
        assert rpc.view(p["address"], "token0()", [], ["address"])[0].lower() == p["token0"].lower()
        r0, r1, _ts = rpc.view(p["address"], "getReserves()", [], ["uint112", "uint112", "uint32"])
        usd0 = _usd(rpc, dep, dep.symbol_of(p["token0"]), r0)
        usd1 = _usd(rpc, dep, dep.symbol_of(p["token1"]), r1)
        target = 10_000_000 * 10**8
        assert abs(usd0 - target) <= 10**8 and abs(usd1 - target) <= 10**8, (usd0, usd1)


def _v2_out(rpc, pair: dict, token_in: str, amount_in: int) -> int:
    r0, r1, _ts = rpc.view(pair["address"], "getReserves()", [], ["uint112", "uint112", "uint32"])
    r_in, r_out = (r0, r1) if token_in.lower() == pair["token0"].lower() else (r1, r0)
    return amount_in * 997 * r_out // (r_in * 1000 + amount_in * 997)


def _v3_quote(rpc, dep, token_in: str, token_out: str, amount_in: int, fee: int) -> int:
    raw = rpc.eth_call(dep.uniswap_quoter_v2, encode_call(
        "quoteExactInputSingle((address,address,uint256,uint24,uint160))", (token_in, token_out, amount_in, fee, 0)))
    return abi_decode(["uint256", "uint160", "uint32", "uint256"], raw)[0]


def test_no_link_usdc_or_link_usdt_pool_anywhere(devnet):
    _node, dep, rpc = devnet
    v = venues(dep)
    link = dep.tokens["LINK"]
    for other in ("USDC", "USDT"):
        tok = dep.tokens[other]
        (pair,) = rpc.view(v["uniswap_v2_factory"], "getPair(address,address)", [link, tok], ["address"])
        assert int(pair, 16) == 0, other
        for fee in (100, 500, 3000, 10000):
            (pool,) = rpc.view(dep.uniswap_factory, "getPool(address,address,uint24)", [link, tok, fee], ["address"])
            assert int(pool, 16) == 0, (other, fee)
        assert not any({p.token0.lower(), p.token1.lower()} == {link.lower(), tok.lower()} for p in dep.uniswap_pools)
    # LINK -> USDC takes two hops: LINK -> WETH (V3 0.3%) -> USDC (V3 0.05%)
    path = bytes.fromhex(link[2:]) + (3000).to_bytes(3, "big") + bytes.fromhex(dep.tokens["WETH"][2:]) \
        + (500).to_bytes(3, "big") + bytes.fromhex(dep.tokens["USDC"][2:])
    raw = rpc.eth_call(dep.uniswap_quoter_v2, encode_call("quoteExactInput(bytes,uint256)", path, 100 * WAD))
    (out,) = abi_decode(["uint256"], raw[:32])
    assert 1_480 * 10**6 < out < 1_500 * 10**6, out  # 100 LINK at $15, two fees


def test_v2_is_the_better_venue_for_link(devnet):
    _node, dep, rpc = devnet
    (pair,) = [p for p in venues(dep)["v2_pairs"] if dep.tokens["LINK"] in (p["token0"], p["token1"])]
    link, weth = dep.tokens["LINK"], dep.tokens["WETH"]
    amount = 10_000 * WAD  # $150k
    v2 = _v2_out(rpc, pair, link, amount)
    v3 = _v3_quote(rpc, dep, link, weth, amount, 3000)
    assert v2 > v3 > 0, (v2, v3)
    assert v2 > 49 * WAD  # $150k of LINK at $3,000/WETH: ~50 WETH less fee and a little slippage
    # USDT/USDC V3 0.05%, full range with $10M a side: constant-product output, 0.05% fee
    x = 100_000 * 10**6
    out = _v3_quote(rpc, dep, dep.tokens["USDT"], dep.tokens["USDC"], x, 500)
    side = 10_000_000 * 10**6
    expected = x * 9995 * side // (side * 10000 + x * 9995)  # ~98,961 USDC
    assert abs(out - expected) * 10**4 < expected, (out, expected)


def test_shock_link_moves_oracle_and_both_venues(devnet):
    from fractions import Fraction

    from keeper.devnet.deploy import sqrt_price_x96

    node, dep, rpc = devnet
    snap = rpc.call("evm_snapshot")
    try:
        old, new = shock(node.url, dep, "LINK", -20)
        assert (old, new) == (15 * 10**8, 12 * 10**8)
        (price,) = rpc.view(dep.oracle, "getAssetPrice(address)", [dep.tokens["LINK"]], ["uint256"])
        assert price == new
        link, weth = dep.tokens["LINK"].lower(), dep.tokens["WETH"].lower()
        for p in dep.uniswap_pools:  # V3 LINK/WETH moved by prices.move_pools_to_oracle
            if link in (p.token0.lower(), p.token1.lower()):
                s0, s1 = dep.symbol_of(p.token0), dep.symbol_of(p.token1)
                prices = {"LINK": new, "WETH": 3000 * 10**8}
                target = sqrt_price_x96(prices[s0], dep.decimals[s0], prices[s1], dep.decimals[s1])
                (current,) = rpc.view(p.address, "slot0()", [], ["uint160"])
                assert current == target
        for p in venues(dep)["v2_pairs"]:  # V2 pairs moved by venues.after_shock
            r0, r1, _ts = rpc.view(p["address"], "getReserves()", [], ["uint112", "uint112", "uint32"])
            s0, s1 = dep.symbol_of(p["token0"]), dep.symbol_of(p["token1"])
            (p0,) = rpc.view(dep.oracle, "getAssetPrice(address)", [p["token0"]], ["uint256"])
            (p1,) = rpc.view(dep.oracle, "getAssetPrice(address)", [p["token1"]], ["uint256"])
            want = Fraction(p0 * 10 ** dep.decimals[s1], p1 * 10 ** dep.decimals[s0])
            assert abs(Fraction(r1, r0) / want - 1) < Fraction(1, 10**6), (s0, s1)
            if link in (p["token0"].lower(), p["token1"].lower()):
                assert weth in (p["token0"].lower(), p["token1"].lower())
        # USDC and USDT shocks (USDT sold into the V3 USDT/USDC pool, twice: USDT's approve rule)
        for sym, pct in (("USDT", 5), ("USDT", -3), ("USDC", 4), ("USDT", 6)):
            shock(node.url, dep, sym, pct)
    finally:
        assert rpc.call("evm_revert", [snap]) is True


def test_aave_liquidation_with_usdt_debt_and_link_collateral(devnet):
    """Aave's own transfers (GPv2SafeERC20) cope with USDT's missing return values: a LINK-backed
    USDT borrower goes under after LINK -20% and the keeper liquidates from its USDT inventory."""
    node, dep, rpc = devnet
    user = "0x000000000000000000000000000000000000cAFE"
    link, usdt = dep.tokens["LINK"], dep.tokens["USDT"]
    snap = rpc.call("evm_snapshot")
    try:
        rpc.call("anvil_setBalance", [user, hex(10**19)])
        rpc.call("anvil_impersonateAccount", [user])

        def send(who, to, sig, *args):
            return rpc.send({"from": who, "to": to, "data": encode_call(sig, *args), "gas": hex(1_500_000)}, what=sig)

        send(user, link, "mint(uint256)", 1_000 * WAD)  # $15,000
        send(user, link, "approve(address,uint256)", dep.pool, 1_000 * WAD)
        send(user, dep.pool, "supply(address,uint256,address,uint16)", link, 1_000 * WAD, user, 0)
        send(user, dep.pool, "borrow(address,uint256,uint256,uint16,address)", usdt, 10_000 * 10**6, 2, 0, user)
        shock(node.url, dep, "LINK", -20)  # HF 15,000 x 0.8 x 0.75 / 10,000 = 0.9: close factor 100%
        (hf,) = account_data(rpc, dep, [user])[user][5:]
        assert 89 * WAD // 100 < hf < 91 * WAD // 100
        before = {t: rpc.view(t, "balanceOf(address)", [KEEPER], ["uint256"])[0] for t in (link, usdt)}
        send(KEEPER, dep.pool, "liquidationCall(address,address,address,uint256,bool)", link, usdt, user, 2**256 - 1, False)
        after = {t: rpc.view(t, "balanceOf(address)", [KEEPER], ["uint256"])[0] for t in (link, usdt)}
        repaid = before[usdt] - after[usdt]
        assert 10_000 * 10**6 <= repaid < 10_001 * 10**6  # all of the debt (plus a few seconds of interest)
        # collateral = repaid x $1 / $12 x 1.07, less the 10% protocol fee on the 7% bonus part
        seized = repaid * 10**12 * 107 // 100 // 12
        expected = seized - (seized - seized * 100 // 107) // 10
        assert abs((after[link] - before[link]) - expected) * 10**6 < expected, (after[link] - before[link], expected)
        (_coll, debt, *_rest) = account_data(rpc, dep, [user])[user]
        assert debt == 0
    finally:
        rpc.call("anvil_stopImpersonatingAccount", [user])
        assert rpc.call("evm_revert", [snap]) is True
