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
    (aave,) = [p for p in cfg["protocols"] if p["kind"] == "aave_v3"]
    assert aave["pool_addresses_provider"] == dep.provider


def test_solidity_compile_error_is_clear():
    from keeper.solidity import compile_sources

    with pytest.raises(RuntimeError, match="DeclarationError|Undeclared identifier"):
        compile_sources({"Bad.sol": "pragma solidity 0.8.24; contract Bad { function f() public { x = 1; } }"})
