"""The executor contracts on the devnet: contracts/FlashLiquidator.sol (flash and inventory
liquidations along swap routes of Uniswap V3 and V2 hops), SafeToken.sol against a USDT-like
token, and the custom errors as abi.decode_revert reports them. Each test deploys a fresh
FlashLiquidator owned by the keeper account."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from keeper import abi
from keeper.devnet.jsonrpc import encode_call
from keeper.solidity import compile_files

from .conftest import KEEPER, REPO

FLASH = abi.load("FlashLiquidator")
ERC20 = abi.load("ERC20")
LIQUIDATED = FLASH.event("Liquidated")
ROUTE_TYPE = "(uint8,address,address,address,uint24)[]"
ZERO = "0x" + "00" * 20
STRANGER = "0x000000000000000000000000000000000000dEaD"
LP = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"  # anvil account 3: seeds the test's V2 pairs
USER = "0x000000000000000000000000000000000000bEEF"
GAS: dict[str, int] = {}  # entry point / route -> gas used (printed with -s)


# -- helpers ---------------------------------------------------------------------------
def enc(signature: str, *args: Any) -> bytes:
    return bytes.fromhex(encode_call(signature, *args)[2:])


def route(*hops: tuple) -> bytes:
    return abi_encode([ROUTE_TYPE], [list(hops)])


def v3(t_in: str, t_out: str, fee: int) -> tuple:
    return (1, ZERO, t_in, t_out, fee)


def v2(pair: str, t_in: str, t_out: str) -> tuple:
    return (2, pair, t_in, t_out, 0)


def send(chain, sender: str, to: str | None, data: bytes, gas: int = 3_000_000) -> dict:
    return chain.send_as(sender, to, data, gas)


def call(chain, sender: str, to: str | None, data: bytes) -> tuple[bool, bytes | str]:
    """eth_call: (True, return data) or (False, abi.decode_revert of the revert data)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_call",
                       "params": [{"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(5_000_000)},
                                  "latest"]}).encode()
    req = urllib.request.Request(chain.url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        reply = json.loads(resp.read())
    if "error" in reply:
        data_hex = reply["error"].get("data")
        assert isinstance(data_hex, str), reply["error"]
        return False, abi.decode_revert(bytes.fromhex(data_hex.removeprefix("0x")))
    return True, bytes.fromhex(reply["result"][2:])


def reverts(chain, sender: str, to: str, data: bytes) -> str:
    ok, out = call(chain, sender, to, data)
    assert not ok, "expected a revert"
    return out


def balance(chain, token: str, who: str) -> int:
    return chain.view(token, ERC20.fn("balanceOf"), who)[0]


def allowance(chain, token: str, owner: str, spender: str) -> int:
    return int.from_bytes(call(chain, owner, token, enc("allowance(address,address)", owner, spender))[1], "big")


def deploy(chain, sender: str, creation_code: str, types: list[str], args: list[Any]) -> str:
    code = bytes.fromhex(creation_code.removeprefix("0x")) + abi_encode(types, args)
    rc = send(chain, sender, None, code, gas=8_000_000)
    return to_checksum_address(rc["contractAddress"])


def deploy_liquidator(chain) -> str:
    art = compile_files([REPO / "contracts" / "FlashLiquidator.sol"])["FlashLiquidator"]
    return deploy(chain, KEEPER, art["bytecode"], ["address", "address"], [chain.dep.pool, chain.dep.uniswap_router])


def v2_pair(chain, factory: str, a: str, b: str, amount_a: int, amount_b: int) -> str:
    """A Uniswap V2 pair of the test's own factory, seeded by LP (tokens minted with mint(uint256))."""
    send(chain, LP, factory, enc("createPair(address,address)", a, b))
    ok, out = call(chain, LP, factory, enc("getPair(address,address)", a, b))
    pair = to_checksum_address(out[12:32])
    for token, amount in ((a, amount_a), (b, amount_b)):
        send(chain, LP, token, enc("mint(uint256)", amount))
        send(chain, LP, token, enc("transfer(address,uint256)", pair, amount))
    send(chain, LP, pair, enc("mint(address)", LP))
    return pair


def v2_factory(chain) -> str:
    from keeper.devnet.artifacts import artifact

    return deploy(chain, LP, artifact("UniswapV2Factory")["bytecode"], ["address"], [LP])


def weth_usdc_position(chain) -> None:
    """10 WETH against 24,000 USDC; WETH -12% (pools follow): HF about 0.91."""
    chain.open_position(USER, {"WETH": 10 * 10**18}, ("USDC", 24_000 * 10**6))
    chain.shock("WETH", -12)


def liquidated_profit(rc: dict, liq: str) -> int:
    evs = [LIQUIDATED.decode(lg) for lg in rc["logs"]
           if lg["address"].lower() == liq.lower() and lg["topics"][0] == LIQUIDATED.topic0]
    assert len(evs) == 1
    return evs[0]["profit"]


@pytest.fixture
def liq(chain):
    chain.call("anvil_setBalance", [LP, hex(10**21)])
    return deploy_liquidator(chain)


@pytest.fixture(scope="module", autouse=True)
def _print_gas():
    yield
    for k, v in sorted(GAS.items()):
        print(f"gas {k}: {v:,}")


def routes(chain, kind: str) -> bytes:
    t = chain.dep.tokens
    if kind == "v3":
        return route(v3(t["WETH"], t["USDC"], 500))
    if kind == "v3-v3":
        return route(v3(t["WETH"], t["WBTC"], 3000), v3(t["WBTC"], t["USDC"], 3000))
    factory = v2_factory(chain)
    if kind == "v2":  # at the shocked price, $2640
        return route(v2(v2_pair(chain, factory, t["WETH"], t["USDC"], 1_000 * 10**18, 2_640_000 * 10**6),
                        t["WETH"], t["USDC"]))
    if kind == "v3-v2":
        pair = v2_pair(chain, factory, t["WBTC"], t["USDC"], 40 * 10**8, 2_400_000 * 10**6)
        return route(v3(t["WETH"], t["WBTC"], 3000), v2(pair, t["WBTC"], t["USDC"]))
    raise AssertionError(kind)


# -- liquidations ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["v3", "v3-v3", "v2", "v3-v2"])
@pytest.mark.parametrize("mode", ["flash", "inventory"])
def test_liquidation_along_a_route_pays_the_owner_exactly_the_profit_event(chain, liq, mode, kind):
    t = chain.dep.tokens
    weth, usdc = t["WETH"], t["USDC"]
    weth_usdc_position(chain)
    r = routes(chain, kind)
    cover = 12_000 * 10**6
    if mode == "flash":
        data = FLASH.fn("liquidate").encode(weth, usdc, USER, cover, cover, r, 0)
    else:
        send(chain, KEEPER, usdc, enc("approve(address,uint256)", liq, cover))
        data = FLASH.fn("liquidateWithInventory").encode(weth, usdc, USER, cover, cover, r, 0)
    ok, ret = call(chain, KEEPER, liq, data)
    assert ok, ret
    predicted = abi_decode(["uint256"], ret)[0]
    before = {s: balance(chain, a, KEEPER) for s, a in t.items()}
    rc = send(chain, KEEPER, liq, data)
    GAS[f"{'liquidate' if mode == 'flash' else 'liquidateWithInventory'} {kind}"] = int(rc["gasUsed"], 16)
    profit = liquidated_profit(rc, liq)
    # 4.5% of $12,000 to the liquidator, less premium, pool fees and price impact (up to 2 hops)
    assert 300 * 10**6 < profit < 540 * 10**6, profit
    assert abs(profit - predicted) * 1000 < predicted  # the eth_call ran one block earlier
    after = {s: balance(chain, a, KEEPER) for s, a in t.items()}
    assert after["USDC"] - before["USDC"] == profit
    assert all(after[s] == before[s] for s in t if s != "USDC")  # no collateral left with the owner
    assert all(balance(chain, a, liq) == 0 for a in t.values())  # nothing left in the contract
    for spender in (chain.dep.pool, chain.dep.uniswap_router):  # no allowance left behind
        assert all(allowance(chain, a, liq, spender) == 0 for a in t.values())
    assert allowance(chain, usdc, KEEPER, liq) == 0


@pytest.mark.parametrize("mode", ["flash", "inventory"])
def test_a_minimum_above_what_the_swap_gives_reverts_with_the_exact_shortfall(chain, liq, mode):
    t = chain.dep.tokens
    weth, usdc = t["WETH"], t["USDC"]
    weth_usdc_position(chain)
    r = routes(chain, "v3-v3")
    cover = 12_000 * 10**6
    fn = FLASH.fn("liquidate" if mode == "flash" else "liquidateWithInventory")
    if mode == "inventory":
        send(chain, KEEPER, usdc, enc("approve(address,uint256)", liq, cover))
    ok, ret = call(chain, KEEPER, liq, fn.encode(weth, usdc, USER, cover, cover, r, 0))
    assert ok, ret
    profit = abi_decode(["uint256"], ret)[0]
    ok, ret = call(chain, KEEPER, liq, fn.encode(weth, usdc, USER, cover, cover, r, profit))
    assert ok and abi_decode(["uint256"], ret)[0] == profit  # exactly the profit passes
    why = reverts(chain, KEEPER, liq, fn.encode(weth, usdc, USER, cover, cover, r, profit + 1))
    # the route's minimum is what makes the profit: one unit more than the swap gives
    assert why.startswith("SwapOutputTooLow(out=")
    out = int(why.split("out=")[1].split(",")[0])
    assert why == f"SwapOutputTooLow(out={out}, minOut={out + 1})"


@pytest.mark.parametrize("mode", ["flash", "inventory"])
def test_same_asset_liquidation_needs_no_route_and_enforces_min_profit(chain, liq, mode):
    """USDC collateral for USDC debt: no swap; ProfitTooLow is the only minimum."""
    usdc = chain.dep.tokens["USDC"]
    chain.open_position(USER, {"WETH": 10 * 10**18, "USDC": 5_000 * 10**6}, ("USDC", 27_000 * 10**6))
    chain.shock("WETH", -12)  # HF about 0.955: close factor 50%
    cover = 2_000 * 10**6
    fn = FLASH.fn("liquidate" if mode == "flash" else "liquidateWithInventory")
    if mode == "inventory":
        send(chain, KEEPER, usdc, enc("approve(address,uint256)", liq, cover))
    ok, ret = call(chain, KEEPER, liq, fn.encode(usdc, usdc, USER, cover, cover, b"", 0))
    assert ok, ret
    profit = abi_decode(["uint256"], ret)[0]
    # 4.5% bonus to the liquidator (5% less the protocol's 10% of it) = 90 - 9; flash: less the 1 USDC premium
    assert profit == (80 if mode == "flash" else 81) * 10**6, profit
    assert reverts(chain, KEEPER, liq, fn.encode(usdc, usdc, USER, cover, cover, b"", profit + 1)) == \
        f"ProfitTooLow(profit={profit}, minProfit={profit + 1})"
    weth = chain.dep.tokens["WETH"]
    assert reverts(chain, KEEPER, liq, fn.encode(usdc, usdc, USER, cover, cover,
                                                 route(v3(usdc, weth, 500), v3(weth, usdc, 500)), 0)) == "BadRoute()"
    ok, ret = call(chain, KEEPER, liq, fn.encode(usdc, usdc, USER, cover, cover, route(), 0))  # empty array
    assert ok, ret
    before = balance(chain, usdc, KEEPER)
    rc = send(chain, KEEPER, liq, fn.encode(usdc, usdc, USER, cover, cover, b"", profit))
    GAS[f"{fn.name} same-asset"] = int(rc["gasUsed"], 16)
    assert balance(chain, usdc, KEEPER) - before == liquidated_profit(rc, liq) == profit


def test_bad_routes_revert_before_anything_is_swapped(chain, liq):
    t = chain.dep.tokens
    weth, wbtc, usdc = t["WETH"], t["WBTC"], t["USDC"]
    weth_usdc_position(chain)
    cover = 12_000 * 10**6
    send(chain, KEEPER, usdc, enc("approve(address,uint256)", liq, cover))
    bad = {
        "ends in the wrong token": route(v3(weth, wbtc, 3000)),
        "starts with another token": route(v3(wbtc, usdc, 3000)),
        "hops do not chain": route(v3(weth, wbtc, 3000), v3(weth, usdc, 500)),
        "unknown venue": route((3, ZERO, weth, usdc, 500)),
        "V2 without a pair": route((2, ZERO, weth, usdc, 0)),
        "no route for different assets": b"",
        "empty array for different assets": route(),
        "malformed bytes": b"\x01" * 100,
        "array length not the data's": (lambda b: b[:32] + (2).to_bytes(32, "big") + b[64:])(route(v3(weth, usdc, 500))),
        "trailing bytes": route(v3(weth, usdc, 500)) + b"\0" * 32,
        "fee out of range": route(v3(weth, usdc, 500)).replace((500).to_bytes(32, "big"), (2**24).to_bytes(32, "big")),
    }
    for what, r in bad.items():
        for fn in ("liquidate", "liquidateWithInventory"):
            why = reverts(chain, KEEPER, liq, FLASH.fn(fn).encode(weth, usdc, USER, cover, cover, r, 0))
            assert why == "BadRoute()", (what, fn, why)


def test_only_the_owner_and_only_the_pool_in_a_liquidation_of_its_own(chain, liq):
    t = chain.dep.tokens
    weth, usdc = t["WETH"], t["USDC"]
    chain.call("anvil_setBalance", [STRANGER, hex(10**20)])
    r = route(v3(weth, usdc, 500))
    for data in (FLASH.fn("liquidate").encode(weth, usdc, USER, 1, 1, r, 0),
                 FLASH.fn("liquidateWithInventory").encode(weth, usdc, USER, 1, 1, r, 0),
                 FLASH.fn("sweep").encode(usdc)):
        assert reverts(chain, STRANGER, liq, data) == "NotOwner()"
    assert reverts(chain, STRANGER, liq, FLASH.fn("executeOperation").encode(usdc, 1, 0, liq, b"")) == "NotPool()"
    # a flash loan someone else starts with this contract as the receiver
    fl = abi.load("AavePool").fn("flashLoanSimple").encode(liq, usdc, 10**6, b"", 0)
    assert reverts(chain, STRANGER, chain.dep.pool, fl) == "BadInitiator()"
    # the owner's sweep returns strays
    send(chain, LP, weth, enc("mint(uint256)", 10**18))
    send(chain, LP, weth, enc("transfer(address,uint256)", liq, 10**18))
    before = balance(chain, weth, KEEPER)
    send(chain, KEEPER, liq, FLASH.fn("sweep").encode(weth))
    assert balance(chain, weth, KEEPER) - before == 10**18 and balance(chain, weth, liq) == 0


def test_the_constructor_is_what_the_deploy_scripts_send(chain, liq):
    for name, want in (("owner", KEEPER), ("pool", chain.dep.pool), ("router", chain.dep.uniswap_router)):
        ok, out = call(chain, KEEPER, liq, FLASH.fn(name).encode())
        assert ok and to_checksum_address(out[12:32]) == to_checksum_address(want), name


# -- TakeCallee (Maker flash-take) along a route -----------------------------------------
@pytest.mark.parametrize("kind", ["v3", "v3-v3"])
def test_take_callee_flash_takes_along_a_route(chain, kind):
    from .test_maker_keeper import bark_all, jump

    e = chain.dep.extras.get("maker")
    if not e:
        pytest.skip("no Maker extension on this devnet")
    callee_abi = abi.load("MakerTakeCallee")
    ilk = e["ilks"]["ETH-A"]
    clip, weth, wbtc, dai = ilk["clipper"], ilk["gem"], chain.dep.tokens["WBTC"], e["dai"]
    chain.shock("WETH", -20)  # $2,400
    ids = bark_all(chain, "ETH-A")
    assert ids
    jump(chain, 900)  # LinearDecrease from 1.2 x $2,400 over an hour: about $2,160 now
    status = abi.load("MakerClipper").fn("getStatus")
    needs_redo, price, lot, _tab = chain.view(clip, status, ids[0])
    assert not needs_redo and price < 2_200 * 10**27
    r = route(v3(weth, dai, 3000)) if kind == "v3" else route(v3(weth, wbtc, 3000), v3(wbtc, dai, 3000))
    take = callee_abi.fn("flashTake")
    callee = e["take_callee"]
    assert reverts(chain, KEEPER, callee, take.encode(clip, ilk["gem_join"], ids[0], lot, price,
                                                       route(v3(weth, wbtc, 3000)), 0)) == "BadRoute()"
    why = reverts(chain, KEEPER, callee, take.encode(clip, ilk["gem_join"], ids[0], lot, price, r, 10**30))
    assert why.startswith("SwapOutputTooLow(out=")
    before = balance(chain, dai, KEEPER)
    rc = send(chain, KEEPER, callee, take.encode(clip, ilk["gem_join"], ids[0], lot, price, r, 10 * 10**18))
    GAS[f"TakeCallee.flashTake {kind}"] = int(rc["gasUsed"], 16)
    ev = callee_abi.event("FlashTake")
    evs = [ev.decode(lg) for lg in rc["logs"] if lg["topics"][0] == ev.topic0 and lg["address"].lower() == callee.lower()]
    assert len(evs) == 1 and evs[0]["id"] == ids[0]
    assert evs[0]["profit"] >= 10 * 10**18 and evs[0]["daiOut"] == evs[0]["profit"] + -(-evs[0]["owe"] // 10**27)
    assert balance(chain, dai, KEEPER) - before == evs[0]["profit"]
    assert balance(chain, dai, callee) == 0 and balance(chain, weth, callee) == 0 and balance(chain, wbtc, callee) == 0
    for spender in (e["dai_join"], chain.dep.uniswap_router):
        assert allowance(chain, dai, callee, spender) == 0 and allowance(chain, weth, callee, spender) == 0


# -- SafeToken against a USDT-like token ----------------------------------------------
TETHER = REPO / "contracts" / "devnet" / "TetherLike.sol"
PROBE = Path(__file__).resolve().parent / "contracts" / "SafeTokenProbe.sol"


@pytest.mark.skipif(not TETHER.is_file(), reason="contracts/devnet/TetherLike.sol not there yet")
def test_safe_token_moves_and_reapproves_a_token_without_return_values(chain):
    chain.call("anvil_setBalance", [LP, hex(10**21)])
    arts = compile_files([PROBE, TETHER])
    usdt = deploy(chain, LP, arts["TetherLike"]["bytecode"], [], [])
    probe = deploy(chain, LP, arts["SafeTokenProbe"]["bytecode"], ["address"], [chain.dep.uniswap_router])
    bad = deploy(chain, LP, arts["FalseToken"]["bytecode"], [], [])
    spender = chain.dep.pool
    # the plain approach fails on it: approve non-zero -> non-zero
    send(chain, LP, usdt, enc("approve(address,uint256)", spender, 5))
    assert not call(chain, LP, usdt, enc("approve(address,uint256)", spender, 7))[0]
    # forceApprove twice in a row (non-zero -> non-zero), then to zero
    send(chain, LP, probe, enc("approveTwice(address,address,uint256,uint256)", usdt, spender, 100, 200))
    assert allowance(chain, usdt, probe, spender) == 200
    send(chain, LP, probe, enc("approveTwice(address,address,uint256,uint256)", usdt, spender, 300, 0))
    assert allowance(chain, usdt, probe, spender) == 0
    # transfer / transferFrom without return values
    send(chain, LP, usdt, enc("mint(uint256)", 1_000 * 10**6))
    send(chain, LP, usdt, enc("approve(address,uint256)", probe, 0))
    send(chain, LP, usdt, enc("approve(address,uint256)", probe, 400 * 10**6))
    send(chain, LP, probe, enc("pull(address,address,uint256)", usdt, LP, 400 * 10**6))
    send(chain, LP, probe, enc("send(address,address,uint256)", usdt, USER, 150 * 10**6))
    assert balance(chain, usdt, probe) == 250 * 10**6 and balance(chain, usdt, USER) == 150 * 10**6
    # failures are TokenCallFailed(token): a revert, a `false`, no code at all
    assert reverts(chain, LP, probe, enc("send(address,address,uint256)", usdt, USER, 10**18)) == \
        f"TokenCallFailed(token={usdt})"
    assert reverts(chain, LP, probe, enc("send(address,address,uint256)", bad, USER, 1)) == \
        f"TokenCallFailed(token={bad})"
    assert reverts(chain, LP, probe, enc("send(address,address,uint256)", STRANGER, USER, 1)) == \
        f"TokenCallFailed(token={to_checksum_address(STRANGER)})"
    # a V2 hop USDT -> USDC and back through USDC -> USDT (the pair pays out USDT without a return value)
    usdc = chain.dep.tokens["USDC"]
    pair = v2_pair(chain, v2_factory(chain), usdt, usdc, 1_000_000 * 10**6, 1_000_000 * 10**6)
    swap = "swap(bytes,address,address,uint256,uint256)"
    ok, ret = call(chain, LP, probe, enc(swap, route(v2(pair, usdt, usdc)), usdt, usdc, 100 * 10**6, 0))
    assert ok, ret
    expect = 100 * 10**6 * 997 * 10**12 // (10**12 * 1000 + 100 * 10**6 * 997)  # getAmountOut
    assert abi_decode(["uint256"], ret)[0] == expect
    assert reverts(chain, LP, probe, enc(swap, route(v2(pair, usdt, usdc)), usdt, usdc, 100 * 10**6, expect + 1)) == \
        f"SwapOutputTooLow(out={expect}, minOut={expect + 1})"
    rc = send(chain, LP, probe, enc(swap, route(v2(pair, usdt, usdc), v2(pair, usdc, usdt)), usdt, usdt, 100 * 10**6, 0))
    GAS["SafeTokenProbe 2x V2 hop with USDT"] = int(rc["gasUsed"], 16)
    assert 99 * 10**6 < balance(chain, usdt, probe) - 150 * 10**6 < 100 * 10**6


# -- custom errors in logs -------------------------------------------------------------
def test_decode_revert_names_custom_errors_and_their_arguments():
    data = bytes.fromhex("88215f9c") + abi_encode(["uint256", "uint256"], [123, 456])
    assert keccak(text="ProfitTooLow(uint256,uint256)")[:4] == bytes.fromhex("88215f9c")
    assert abi.decode_revert(data) == "ProfitTooLow(profit=123, minProfit=456)"
    assert abi.decode_revert(keccak(text="BadRoute()")[:4]) == "BadRoute()"
    assert abi.decode_revert(keccak(text="TokenCallFailed(address)")[:4] + abi_encode(["address"], [KEEPER])) == \
        f"TokenCallFailed(token={KEEPER})"
    assert abi.decode_revert(keccak(text="NotEligibleForLiquidation(uint128)")[:4] + abi_encode(["uint128"], [7])) == \
        "NotEligibleForLiquidation(accountId=7)"
    # unknown selectors, Error(string) and panics as before
    assert abi.decode_revert(bytes.fromhex("deadbeef")) == "custom error 0xdeadbeef"
    assert abi.decode_revert(bytes.fromhex("08c379a0") + abi_encode(["string"], ["35"])) == "35"
    assert abi.decode_revert(bytes.fromhex("4e487b71") + abi_encode(["uint256"], [0x11])) == "panic 0x11"
    assert abi.decode_revert(b"") == "reverted without data"
    # a known selector with arguments that do not decode still names the error
    assert abi.decode_revert(bytes.fromhex("88215f9c")).startswith("ProfitTooLow(")
