"""The swap book prices exactly what the real Uniswap contracts pay, to the wei, on the devnet.

V3 quotes are checked against QuoterV2 (single hop and packed 2-hop paths) over fuzzed sizes,
with and without concentrated positions to cross; `apply` against swaps really executed
through the SwapRouter; V2 against a UniswapV2Factory/pair deployed from the npm artifacts
(the quoted amount is paid, one more wei fails the pair's K check).
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any

import pytest
import pytest_asyncio
import structlog
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode

from keeper import abi
from keeper.devnet.artifacts import link
from keeper.devnet.jsonrpc import JsonRpc, RpcError, encode_call
from keeper.multicall import Call, Multicall
from keeper.pricing.book import V2, V3, Book, Hop, Route, SwapVenues, quote_hop, tick_window
from keeper.pricing.pools import V2Pair, V3Pool, v2_amount_out
from keeper.pricing.v3math import (
    MAX_SQRT_RATIO,
    MAX_TICK,
    MIN_SQRT_RATIO,
    MIN_TICK,
    get_sqrt_ratio_at_tick,
    get_tick_at_sqrt_ratio,
    tick_at_sqrt_ratio,
)
from keeper.rpc import Rpc

DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil account 0: devnet deployer
FEES = (500, 3000, 10000)
MAX = 2**256 - 1
QUOTER = abi.load("UniswapV3QuoterV2")
Q_SINGLE = QUOTER.fn("quoteExactInputSingle")
Q_PATH = QUOTER.fn("quoteExactInput")
ERC20 = abi.load("ERC20")
PAIR = abi.load("UniswapV2Pair")
POOL = abi.load("UniswapV3Pool")
SPACING = {100: 1, 500: 10, 3000: 60, 10000: 200}


# ---- helpers -------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def mc(chain):
    rpc = Rpc(chain.url, timeout_s=60)
    try:
        yield Multicall(rpc, chunk=40)  # QuoterV2 calls cost 100k+ gas each: keep aggregate3 small
    finally:
        await rpc.close()


class CountingMulticall:
    def __init__(self, inner: Multicall):
        self.inner = inner
        self.runs = 0

    async def run(self, calls: Any, block: Any = "latest") -> list[tuple[bool, bytes]]:
        self.runs += 1
        await asyncio.sleep(0)
        return await self.inner.run(calls, block)


def make_venues(mc: Any, chain: Any, *, v2_factory: str | None = None, pct: int = 50) -> SwapVenues:
    t = chain.dep.tokens
    v = SwapVenues(mc, v3_factory=chain.dep.uniswap_factory, fee_tiers=FEES, v2_factory=v2_factory,
                   connectors=[t["WETH"], t["USDC"]], log=structlog.get_logger(), tick_window_pct=pct)
    v.watch(t.values())
    return v


def send(chain: Any, to: str | None, data: bytes | str, gas: int = 3_000_000) -> dict:
    """eth_sendTransaction from the deployer; asserts success; returns the receipt."""
    return chain.send_as(DEPLOYER, to, data, gas)


def fund(chain: Any, token: str, amount: int, spenders: list[str]) -> None:
    send(chain, token, ERC20.fn("mint(uint256)").encode(amount))
    for s in spenders:
        send(chain, token, ERC20.fn("approve").encode(s, MAX))


async def onchain_single(mc: Multicall, chain: Any, reqs: list[tuple[str, str, int, int]],
                         block: Any = "latest") -> list[tuple[int, int, int] | None]:
    """QuoterV2.quoteExactInputSingle for each (token_in, token_out, fee, amount):
    (amountOut, sqrtPriceX96After, initializedTicksCrossed) or None if it reverts."""
    q = chain.dep.uniswap_quoter_v2
    res = await mc.run([Call(q, Q_SINGLE.encode((tin, tout, amt, fee, 0))) for tin, tout, fee, amt in reqs], block)
    return [Q_SINGLE.decode(d)[:3] if ok and len(d) >= 128 else None for ok, d in res]


def packed_path(tokens: list[str], fees: list[int]) -> bytes:
    out = bytes.fromhex(tokens[0][2:])
    for fee, t in zip(fees, tokens[1:]):
        out += fee.to_bytes(3, "big") + bytes.fromhex(t[2:])
    return out


async def onchain_path(mc: Multicall, chain: Any, reqs: list[tuple[bytes, int]]) -> list[int | None]:
    q = chain.dep.uniswap_quoter_v2
    res = await mc.run([Call(q, Q_PATH.encode(path, amt)) for path, amt in reqs])
    return [abi_decode(Q_PATH.output_types, d)[0] if ok else None for ok, d in res]


def fuzz_amounts(rng: random.Random, reserve: int, n: int, top: float = 0.7, bottom: float = 1e-12) -> list[int]:
    """Tiny absolute amounts, then log-uniform from `bottom` to `top` x the pool's reserve
    (0.7: beyond the window)."""
    out = [rng.randrange(1, 1000) for _ in range(n // 10)]
    lo, hi = math.log(max(reserve, 10**6) * bottom), math.log(reserve * top)
    out += [int(math.exp(rng.uniform(lo, hi))) + 1 for _ in range(n - len(out))]
    return out


def pool_balance(chain: Any, token: str, pool: str) -> int:
    return chain.view(token, ERC20.fn("balanceOf"), pool)[0]


def slot0(chain: Any, pool: str) -> tuple[int, int]:
    raw = bytes.fromhex(chain.call("eth_call", [{"to": pool, "data": "0x" + POOL.fn("slot0").selector.hex()}, "latest"])[2:])
    return int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:64], "big", signed=True)


def mint_positions(chain: Any, pool: Any, offsets: list[tuple[int, int]], usd_each: int = 3_000_000) -> None:
    """Narrow concentrated positions around the pool's current tick (offsets in tick spacings),
    minted from account 0 through the NonfungiblePositionManager."""
    npm = chain.dep.uniswap_position_manager
    sp = SPACING[pool.fee]
    _, tick = slot0(chain, pool.address)
    base = tick // sp * sp
    dec = chain.dep.decimals
    sym = {a.lower(): s for s, a in chain.dep.tokens.items()}
    price = {"WETH": 3_000, "WBTC": 60_000, "USDC": 1, "USDT": 1, "LINK": 15}
    amounts = []
    for t in (pool.token0, pool.token1):
        s = sym[t.lower()]
        amt = usd_each * 10 ** dec[s] // price.get(s, 1)
        fund(chain, t, amt * len(offsets) * 2, [npm])
        amounts.append(amt)
    for lo, hi in offsets:
        data = encode_call(
            "mint((address,address,uint24,int24,int24,uint256,uint256,uint256,uint256,address,uint256))",
            (pool.token0, pool.token1, pool.fee, base + lo * sp, base + hi * sp, amounts[0], amounts[1], 0, 0,
             DEPLOYER, 2**63))
        send(chain, npm, data)


async def assert_book_matches_quoter(mc: Multicall, chain: Any, book: Book, pools: list[Any], n: int,
                                     seed: int, pct: int = 50, bottom: float = 1e-12) -> dict[str, int]:
    """Fuzzed single-hop quotes at every pool, both ways: book == QuoterV2 to the wei (amount
    and price after); a book None only where the swap really leaves the +-pct window."""
    rng = random.Random(seed)
    reqs, states = [], []
    for p in pools:
        st = book.state(p.address)
        assert isinstance(st, V3Pool)
        for tin, tout in ((p.token0, p.token1), (p.token1, p.token0)):
            for amt in fuzz_amounts(rng, pool_balance(chain, tin, p.address), n, bottom=bottom):
                reqs.append((tin, tout, p.fee, amt))
                states.append(st)
    chain_q = await onchain_single(mc, chain, reqs, book.block)
    stats = {"priced": 0, "none": 0, "crossing": 0}
    for (tin, _tout, _fee, amt), st, q in zip(reqs, states, chain_q):
        s = quote_hop(st, tin, amt)
        if s is None:
            stats["none"] += 1
            if q is not None and q[0] > 0:  # the chain prices it: it must leave the window
                lo, hi = tick_window(st.tick, pct)
                after = get_tick_at_sqrt_ratio(q[1])
                assert after < lo or after > hi, (st.address, tin, amt, q, st.tick)
            continue
        assert q is not None, (st.address, tin, amt)
        assert s.amount_out == q[0], (st.address, tin, amt, s.amount_out, q[0])
        assert s.after.sqrt_price_x96 == q[1], (st.address, tin, amt)
        stats["priced"] += 1
        stats["crossing"] += s.ticks_crossed > 0
    return stats


# ---- pure math -----------------------------------------------------------------------------


def test_fast_tick_from_price_agrees_with_the_literal_tickmath_port():
    rng = random.Random(7)
    prices = [rng.randrange(MIN_SQRT_RATIO, MAX_SQRT_RATIO) for _ in range(2000)]
    prices += [int(2 ** rng.uniform(32.01, 159.99)) for _ in range(4000)]
    for t in [MIN_TICK, MIN_TICK + 1, -887, -1, 0, 1, 12345, MAX_TICK - 1] + [rng.randrange(MIN_TICK, MAX_TICK) for _ in range(500)]:
        s = get_sqrt_ratio_at_tick(t)
        prices += [p for p in (s - 1, s, s + 1) if MIN_SQRT_RATIO <= p < MAX_SQRT_RATIO]
    for p in prices:
        assert tick_at_sqrt_ratio(p) == get_tick_at_sqrt_ratio(p), p
    assert get_sqrt_ratio_at_tick(MIN_TICK) == MIN_SQRT_RATIO and get_sqrt_ratio_at_tick(MAX_TICK) == MAX_SQRT_RATIO


def test_v2_hop_is_getamountout_and_route_encoding_is_the_abi_tuple_array():
    a, b = "0x" + "11" * 20, "0x" + "22" * 20
    pair = V2Pair("0x" + "33" * 20, a, b, 10**24, 3 * 10**27)
    s = quote_hop(pair, a, 10**18)
    assert s is not None and s.amount_out == 10**18 * 997 * 3 * 10**27 // (10**24 * 1000 + 10**18 * 997)
    assert (s.after.reserve0, s.after.reserve1) == (10**24 + 10**18, 3 * 10**27 - s.amount_out)
    assert quote_hop(pair, a, 0) is None
    hops = (Hop(V2, pair.address, a, b, 3000), Hop(V3, "0x" + "44" * 20, b, a, 500))
    r = Route(hops, 10**18, 5)
    assert r.encode() == abi_encode(["(uint8,address,address,address,uint24)[]"],
                                    [[(2, pair.address, a, b, 3000), (1, "0x" + "44" * 20, b, a, 500)]])
    assert Route((), 1, 1).encode() == b"" and Route((), 1, 1).fee_tier == 0 and r.fee_tier == 3000
    book = Book(1, [pair], [])
    assert book.quote(a, "0x" + "99" * 20, 10**18) is None  # no pool
    route = book.quote(a, b, 10**18)
    assert route == Route((Hop(V2, pair.address, a, b, 3000),), 10**18, s.amount_out)
    stale = book.copy()
    book.apply(route)
    assert book.state(pair.address) == s.after and stale.state(pair.address) == pair
    with pytest.raises(ValueError):
        book.apply(route)
    with pytest.raises(ValueError):
        book.apply(Route((Hop(V2, "0x" + "55" * 20, a, b, 3000),), 1, 1))  # not in the book
    names = {a: "LINK", b: "WETH"}
    assert r.describe(lambda t: names[t]) == "LINK >v2> WETH >v3 0.05%> LINK"
    assert Route((Hop(V3, a, a, b, 3000),), 1, 1).describe(lambda t: names[t]) == "LINK >v3 0.3%> WETH"


# ---- V3 against QuoterV2 -------------------------------------------------------------------


async def test_single_hop_quotes_equal_quoterv2_to_the_wei_in_every_pool_both_ways(chain, mc):
    book = await make_venues(mc, chain).book(chain.block_number())
    assert book.pools() == len(chain.dep.uniswap_pools)
    stats = await assert_book_matches_quoter(mc, chain, book, chain.dep.uniswap_pools, n=60, seed=1)
    assert stats["priced"] >= 0.6 * (stats["priced"] + stats["none"]), stats
    assert stats["none"] > 0, stats  # the fuzz reaches past the window, and the book does not guess


async def test_two_hop_quotes_equal_quoterv2_packed_paths_and_the_book_takes_the_best(chain, mc):
    t = chain.dep.tokens
    book = await make_venues(mc, chain).book(chain.block_number())
    by = {(p.fee, frozenset((p.token0.lower(), p.token1.lower()))): p for p in chain.dep.uniswap_pools}
    rng = random.Random(2)
    reqs, routes = [], []
    for src, mid, dst in (("WBTC", "WETH", "USDC"), ("USDC", "WETH", "WBTC"), ("WETH", "USDC", "WBTC")):
        for f1 in FEES:
            for f2 in FEES:
                p1 = by.get((f1, frozenset((t[src].lower(), t[mid].lower()))))
                p2 = by.get((f2, frozenset((t[mid].lower(), t[dst].lower()))))
                if not (p1 and p2):
                    continue
                hops = [Hop(V3, p1.address, t[src], t[mid], f1), Hop(V3, p2.address, t[mid], t[dst], f2)]
                for amt in fuzz_amounts(rng, pool_balance(chain, t[src], p1.address), 30, top=0.2):
                    r = book.quote_hops(hops, amt)
                    if r is not None:
                        reqs.append((packed_path([t[src], t[mid], t[dst]], [f1, f2]), amt))
                        routes.append(r)
    assert len(routes) > 60
    for r, q in zip(routes, await onchain_path(mc, chain, reqs)):
        assert r.amount_out == q, (r.describe(), r.amount_in, r.amount_out, q)

    # the best route: every direct pool and every 2-hop path through a connector, on chain
    for amt in (10**4, 3 * 10**6, 2 * 10**7, 10**8):  # WBTC
        best = book.quote(t["WBTC"], t["USDC"], amt)
        assert best is not None
        cands: list[tuple[bytes, int]] = []
        for f in FEES:
            if (f, frozenset((t["WBTC"].lower(), t["USDC"].lower()))) in by:
                cands.append((packed_path([t["WBTC"], t["USDC"]], [f]), amt))
            for f2 in FEES:
                if (f, frozenset((t["WBTC"].lower(), t["WETH"].lower()))) in by and \
                        (f2, frozenset((t["WETH"].lower(), t["USDC"].lower()))) in by:
                    cands.append((packed_path([t["WBTC"], t["WETH"], t["USDC"]], [f, f2]), amt))
        assert best.amount_out == max(q for q in await onchain_path(mc, chain, cands) if q is not None)
    assert book.quote(t["WETH"], t["WETH"], 5) == Route((), 5, 5)
    assert book.quote(t["WETH"], t["USDC"], 0) is None


async def test_quotes_that_cross_concentrated_positions_equal_quoterv2(chain, mc):
    t = chain.dep.tokens
    weth_usdc = {t["WETH"].lower(), t["USDC"].lower()}
    pools = [p for p in chain.dep.uniswap_pools if {p.token0.lower(), p.token1.lower()} == weth_usdc]
    assert {p.fee for p in pools} >= {500, 3000}  # tick spacings 10 and 60
    narrow = [(-20, -5), (-12, 3), (-2, 2), (0, 1), (1, 9), (4, 30), (-60, 60)]
    for p in pools:
        mint_positions(chain, p, narrow, usd_each=300_000)
    book = await make_venues(mc, chain).book(chain.block_number())
    stats = await assert_book_matches_quoter(mc, chain, book, pools, n=70, seed=3, bottom=1e-5)
    assert stats["crossing"] >= 70, stats  # many quotes really cross initialized ticks
    assert stats["priced"] >= 0.6 * (stats["priced"] + stats["none"]), stats


# ---- apply ---------------------------------------------------------------------------------


async def requote(mc: Multicall, chain: Any, book: Book, pool: Any,
                  fractions: tuple[float, ...] = (1e-12, 1e-7, 1e-4, 1e-2, 0.05)) -> None:
    """A fresh on-chain quote == the (applied) book's, both ways, sizes as fractions of the
    pool's balance of the token in; and the book holds the pool's price and tick."""
    st = book.state(pool.address)
    assert (st.sqrt_price_x96, st.tick) == slot0(chain, pool.address)
    reqs = [(a, b, pool.fee, int(pool_balance(chain, a, pool.address) * f) + 1)
            for a, b in ((pool.token0, pool.token1), (pool.token1, pool.token0)) for f in fractions]
    for (tin, _o, _f, amt), q in zip(reqs, await onchain_single(mc, chain, reqs)):
        s = quote_hop(st, tin, amt)
        assert q is not None
        if s is None:  # a dust size that buys nothing: None, not 0
            assert q[0] == 0, (tin, amt)
            continue
        assert (s.amount_out, s.after.sqrt_price_x96) == q[:2], (tin, amt)


async def test_applied_swaps_leave_the_book_where_the_chain_is(chain, mc):
    t, router = chain.dep.tokens, chain.dep.uniswap_router
    pool = next(p for p in chain.dep.uniswap_pools if p.fee == 500)
    mint_positions(chain, pool, [(-8, -1), (-3, 4), (2, 12), (-30, -10), (10, 40)])
    for tok in (pool.token0, pool.token1, t["WBTC"]):
        fund(chain, tok, 10**30, [router])
    book = await make_venues(mc, chain).book(chain.block_number())
    before = book.copy()

    crossed = 0
    for tin, tout in ((pool.token0, pool.token1), (pool.token0, pool.token1), (pool.token1, pool.token0)):
        amt = pool_balance(chain, tin, pool.address) // 10  # crosses the narrow positions
        hop = Hop(V3, pool.address, tin, tout, pool.fee)
        route = book.quote_hops([hop], amt)
        assert route is not None
        crossed += quote_hop(book.state(pool.address), tin, amt).ticks_crossed
        got = chain.balance(chain.dep.symbol_of(tout), DEPLOYER)
        send(chain, router, exact_input_single(tin, tout, pool.fee, amt))
        assert chain.balance(chain.dep.symbol_of(tout), DEPLOYER) - got == route.amount_out
        book.apply(route)
        await requote(mc, chain, book, pool)
        with pytest.raises(ValueError):
            book.apply(route)  # the same swap again pays less now: stale
    assert crossed >= 3
    assert before.state(pool.address) != book.state(pool.address)  # copies are independent

    # a 2-hop route executed as one exactInput, applied to both pools
    wbtc_pool = next(p for p in chain.dep.uniswap_pools
                     if {p.token0.lower(), p.token1.lower()} == {t["WBTC"].lower(), t["WETH"].lower()})
    hops = [Hop(V3, wbtc_pool.address, t["WBTC"], t["WETH"], wbtc_pool.fee),
            Hop(V3, pool.address, t["WETH"], t["USDC"], pool.fee)]
    route = book.quote_hops(hops, 3 * 10**8)
    assert route is not None
    got = chain.balance("USDC", DEPLOYER)
    path = packed_path([t["WBTC"], t["WETH"], t["USDC"]], [wbtc_pool.fee, pool.fee])
    send(chain, router, bytes.fromhex(encode_call("exactInput((bytes,address,uint256,uint256,uint256))",
                                                  (path, DEPLOYER, 2**63, 3 * 10**8, 0))[2:]))
    assert chain.balance("USDC", DEPLOYER) - got == route.amount_out
    book.apply(route)
    await requote(mc, chain, book, pool)
    await requote(mc, chain, book, wbtc_pool)


def exact_input_single(tin: str, tout: str, fee: int, amt: int) -> bytes:
    return bytes.fromhex(encode_call("exactInputSingle((address,address,uint24,address,uint256,uint256,uint256,uint160))",
                                     (tin, tout, fee, DEPLOYER, 2**63, amt, 0, 0))[2:])


# ---- V2 ------------------------------------------------------------------------------------


def deploy(chain: Any, bytecode: str, types: list[str], args: list[Any]) -> str:
    rc = send(chain, None, bytecode + abi_encode(types, args).hex(), gas=8_000_000)
    return abi.to_checksum(rc["contractAddress"])


def v2_pair(chain: Any, factory: str, a: str, b: str, amount_a: int, amount_b: int) -> str:
    send(chain, factory, abi.load("UniswapV2Factory").fn("createPair").encode(a, b), gas=5_000_000)
    pair = abi.to_checksum(chain.view(factory, abi.load("UniswapV2Factory").fn("getPair"), a, b)[0])
    for tok, amt in ((a, amount_a), (b, amount_b)):
        send(chain, tok, ERC20.fn("mint(uint256)").encode(amt))
        send(chain, tok, ERC20.fn("transfer").encode(pair, amt))
    send(chain, pair, PAIR.fn("mint").encode(DEPLOYER))
    return pair


def swap_on_pair(chain: Any, pair: str, token_in: str, amount_in: int, out: int) -> None:
    """Transfer in, then pair.swap asking for out + 1 (must fail the K check) and for out (must pay)."""
    t0 = chain.view(pair, PAIR.fn("token0"))[0]
    send(chain, token_in, ERC20.fn("mint(uint256)").encode(amount_in))
    send(chain, token_in, ERC20.fn("transfer").encode(pair, amount_in))
    zfo = token_in.lower() == t0.lower()

    def call(o: int) -> bytes:
        return PAIR.fn("swap").encode(0 if zfo else o, o if zfo else 0, DEPLOYER, b"")

    with JsonRpc(chain.url) as rpc, pytest.raises(RpcError, match="UniswapV2: K"):
        rpc.call("eth_call", [{"from": DEPLOYER, "to": pair, "data": "0x" + call(out + 1).hex()}, "latest"])
    send(chain, pair, call(out))


async def test_v2_quotes_are_exactly_what_the_pair_pays_and_mixed_routes_execute(chain, mc):
    t = chain.dep.tokens
    factory = deploy(chain, link("UniswapV2Factory", {}), ["address"], [DEPLOYER])
    # a V2 WETH/USDC pair priced a bit off the V3 pools, and a new token traded only on V2
    weth_usdc = v2_pair(chain, factory, t["WETH"], t["USDC"], 300 * 10**18, 990_000 * 10**6)
    tkn = deploy(chain, link("MintableERC20", {}), ["string", "string", "uint8"], ["Token", "TKN", 18])
    tkn_weth = v2_pair(chain, factory, tkn, t["WETH"], 200_000 * 10**18, 1_000 * 10**18)

    venues = make_venues(mc, chain, v2_factory=factory)
    venues.watch([tkn])
    book = await venues.book(chain.block_number())
    assert book.pools() == len(chain.dep.uniswap_pools) + 2
    assert isinstance(book.state(weth_usdc), V2Pair)

    rng = random.Random(4)
    for i in range(8):  # fuzzed sizes, both ways, each executed on the pair and applied
        tin, tout = (t["WETH"], t["USDC"]) if i % 2 else (t["USDC"], t["WETH"])
        st = book.state(weth_usdc)
        amt = int(pool_balance(chain, tin, weth_usdc) * 10 ** rng.uniform(-9, -2)) + 1
        s = quote_hop(st, tin, amt)
        r_in, r_out = (st.reserve0, st.reserve1) if tin.lower() == st.token0.lower() else (st.reserve1, st.reserve0)
        assert s is not None and s.amount_out == v2_amount_out(amt, r_in, r_out) > 0
        swap_on_pair(chain, weth_usdc, tin, amt, s.amount_out)
        book.apply(Route((Hop(V2, weth_usdc, tin, tout, 3000),), amt, s.amount_out))
        assert (book.state(weth_usdc).reserve0, book.state(weth_usdc).reserve1) == chain.view(weth_usdc, PAIR.fn("getReserves"))[:2]

    # the V2 pair wins where its price is better: 0.1 WETH sells for more USDC on V2 (~3300 vs 3000)
    best = book.quote(t["WETH"], t["USDC"], 10**17)
    assert best is not None and best.hops[0].venue == V2 and best.hops[0].pool == weth_usdc

    # TKN -> USDC goes TKN >v2> WETH >v2> USDC (the V2 pair pays more for WETH), executed pair by pair
    names = {a.lower(): s for s, a in t.items()} | {tkn.lower(): "TKN"}
    amt = 500 * 10**18
    route = book.quote(tkn, t["USDC"], amt)
    assert route is not None and route.describe(lambda a: names[a.lower()]) == "TKN >v2> WETH >v2> USDC"
    mid = quote_hop(book.state(tkn_weth), tkn, amt)
    usdc0 = chain.balance("USDC", DEPLOYER)
    swap_on_pair(chain, tkn_weth, tkn, amt, mid.amount_out)
    swap_on_pair(chain, weth_usdc, t["WETH"], mid.amount_out, route.amount_out)
    assert chain.balance("USDC", DEPLOYER) - usdc0 == route.amount_out
    book.apply(route)

    # a mixed route: TKN >v2> WETH >v3> WBTC (no V2 WETH/WBTC pair), the V3 leg through the router
    route = book.quote(tkn, t["WBTC"], amt)
    assert route is not None and [h.venue for h in route.hops] == [V2, V3]
    assert route.describe(lambda a: names[a.lower()]).startswith("TKN >v2> WETH >v3 ")
    mid = quote_hop(book.state(tkn_weth), tkn, amt)
    wbtc0 = chain.balance("WBTC", DEPLOYER)
    swap_on_pair(chain, tkn_weth, tkn, amt, mid.amount_out)
    fund(chain, t["WETH"], 0, [chain.dep.uniswap_router])
    send(chain, chain.dep.uniswap_router, exact_input_single(t["WETH"], t["WBTC"], route.hops[1].fee, mid.amount_out))
    assert chain.balance("WBTC", DEPLOYER) - wbtc0 == route.amount_out
    book.apply(route)
    for pair in (tkn_weth, weth_usdc):
        assert (book.state(pair).reserve0, book.state(pair).reserve1) == chain.view(pair, PAIR.fn("getReserves"))[:2]
    await requote(mc, chain, book, next(p for p in chain.dep.uniswap_pools if p.address == route.hops[1].pool))


# ---- loading -------------------------------------------------------------------------------


async def test_concurrent_books_for_one_block_share_one_load_and_discovery_runs_once(chain, mc):
    counting = CountingMulticall(mc)
    venues = make_venues(counting, chain)
    blk = chain.block_number()
    b1, b2 = await asyncio.gather(venues.book(blk), venues.book(blk))
    assert venues.loads == 1
    first = counting.runs  # discovery (getPool/getPair, then tickSpacing+slot0) and the load
    assert b1 is not b2 and b1.pools() == b2.pools() == len(chain.dep.uniswap_pools)
    await venues.book(blk)
    assert counting.runs == first and venues.loads == 1

    # one caller's apply does not show in another's book
    t = chain.dep.tokens
    r = b1.quote(t["WETH"], t["USDC"], 10**20)
    assert r is not None
    b1.apply(r)
    assert b2.quote(t["WETH"], t["USDC"], 10**20) == r

    chain.call("evm_mine")
    await venues.book(blk + 1)
    per_load = counting.runs - first
    assert venues.loads == 2 and per_load in (1, 2)  # at most 2 rounds, no discovery again
    assert first == 2 + per_load
    venues.watch([t["WETH"].lower()])  # already watched
    chain.call("evm_mine")
    await venues.book(blk + 2)
    assert counting.runs == first + 2 * per_load
    venues.watch(["0x" + "ab" * 20])  # a new token: one discovery run (no pool found), then the load
    chain.call("evm_mine")
    await venues.book(blk + 3)
    assert counting.runs == first + 3 * per_load + 1 and venues.loads == 4


async def test_the_tick_window_bounds_what_is_priced(chain, mc):
    """With a 5% window, ticks beyond it are not loaded and swaps reaching them price None;
    within it quotes are exact, across the positions that are loaded."""
    pool = next(p for p in chain.dep.uniswap_pools if p.fee == 500)
    mint_positions(chain, pool, [(-100, -60), (-20, -5), (-3, 3), (5, 30), (60, 100)])  # +-6..10% are outside
    book = await make_venues(mc, chain, pct=5).book(chain.block_number())
    st = book.state(pool.address)
    lo, hi = tick_window(st.tick, 5)
    assert st.ticks and all(lo <= k <= hi for k in st.ticks)
    assert len(st.ticks) == 6
    stats = await assert_book_matches_quoter(mc, chain, book, [pool], n=60, seed=5, pct=5)
    assert stats["none"] > 0 and stats["priced"] > 0 and stats["crossing"] > 0, stats
