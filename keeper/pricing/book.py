"""The swap book: every known pool's state at one block, quoted and changed offline.

`SwapVenues` finds the Uniswap V3 pools (every configured fee tier) and Uniswap V2 pairs among
the watched tokens and the connectors, and loads their state at a block into a `Book` with at
most two batched Multicall rounds. A `Book` then prices exact-input swaps to the wei (the same
integer math as the contracts, keeper/pricing/v3math.py) over direct pools and 2-hop paths
through a connector, and `apply` plays the keeper's own swaps into the pool states so the next
quote in the same block sees its impact.

Nothing is guessed: a V3 swap that needs a tick-bitmap word or a tick's liquidityNet that was
not loaded (beyond +-tick_window_pct of the price) prices as None.

Loading: discovery (only when the watched set has grown) asks the factories for every pair x
fee tier, then reads tickSpacing and slot0 of the pools it newly found, so the state load knows
which bitmap words to ask for. The state load is then round 1: slot0, liquidity and the bitmap
words around the last known tick (the window plus one word each side); V2 getReserves; and
round 2: ticks(t).liquidityNet for the initialized ticks within the window around the fresh
tick. Round 2 is skipped when there is no such tick.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable, Sequence


from .. import abi
from ..multicall import Call
from .pools import V2_FEE, PoolState, Swap, V2Pair, V3Pool, swap_exact_in, v2_amount_out, v3_exact_in
from .v3math import MAX_TICK, MIN_TICK

__all__ = ["V2", "V3", "Book", "Hop", "Route", "SwapVenues", "quote_hop", "tick_window"]

V3 = 1  # Uniswap V3 pool (executed through the SwapRouter exactInputSingle)
V2 = 2  # Uniswap V2 pair (executed by transferring in and calling pair.swap)

_ROUTE_TYPE = ["(uint8,address,address,address,uint24)[]"]


def _addr_word(a: str) -> bytes:
    raw = bytes.fromhex(a[2:])
    if len(raw) != 20:
        raise ValueError(f"not an address: {a!r}")
    return b"\0" * 12 + raw
_ZERO = "0x" + "00" * 20


@dataclass(frozen=True, slots=True)
class Hop:
    venue: int  # V3 | V2
    pool: str  # pool / pair address (checksummed)
    token_in: str
    token_out: str
    fee: int  # V3: fee tier in hundredths of a bip (500 = 0.05%); V2: 3000


def _fee_text(fee: int) -> str:
    return f"{(Decimal(fee) / 10_000).normalize():f}%"


@dataclass(frozen=True, slots=True)
class Route:
    hops: tuple[Hop, ...]  # empty when token_in == token_out
    amount_in: int  # token_in base units
    amount_out: int  # token_out base units, exact

    def encode(self) -> bytes:
        """abi.encode((uint8,address,address,address,uint24)[]) of the hops; b"" without hops."""
        if not self.hops:
            return b""
        # by hand (eth_abi gives the same bytes, 20 times slower): the array's offset, its
        # length, then each hop as five words
        out = [(32).to_bytes(32, "big"), len(self.hops).to_bytes(32, "big")]
        for h in self.hops:
            if not 0 <= h.venue < 256 or not 0 <= h.fee < 1 << 24:
                raise ValueError(f"bad hop: venue {h.venue}, fee {h.fee}")
            out += [h.venue.to_bytes(32, "big"), _addr_word(h.pool), _addr_word(h.token_in), _addr_word(h.token_out),
                    h.fee.to_bytes(32, "big")]
        return b"".join(out)

    @property
    def fee_tier(self) -> int:
        return self.hops[0].fee if self.hops else 0

    def describe(self, symbol: Callable[[str], str] = lambda a: a[:8]) -> str:
        """e.g. "LINK >v2> WETH >v3 0.05%> USDC"."""
        if not self.hops:
            return "no swap"
        parts = [symbol(self.hops[0].token_in)]
        for h in self.hops:
            parts.append(">v2>" if h.venue == V2 else f">v3 {_fee_text(h.fee)}>")
            parts.append(symbol(h.token_out))
        return " ".join(parts)


def quote_hop(state: PoolState, token_in: str, amount_in: int) -> Swap | None:
    """Price one exact-input swap at a given pool state (pure): Swap(amount_out, after, ticks_crossed)
    or None. Same as keeper.pricing.pools.swap_exact_in."""
    return swap_exact_in(state, token_in, amount_in)


def _key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _hop(state: PoolState, token_in_lower: str) -> Hop:
    if token_in_lower == state.token0.lower():
        t_in, t_out = state.token0, state.token1
    else:
        t_in, t_out = state.token1, state.token0
    if isinstance(state, V3Pool):
        return Hop(V3, state.address, t_in, t_out, state.fee)
    return Hop(V2, state.address, t_in, t_out, V2_FEE)


class Book:
    """Every known pool's state at one block; quotes and applies exact-input swaps offline."""

    __slots__ = ("block", "_states", "_by_pair", "_connectors", "_quotes")

    def __init__(self, block: int, states: Iterable[PoolState], connectors: Sequence[str] = ()):
        self.block = block
        self._states: dict[str, PoolState] = {}
        by_pair: dict[tuple[str, str], list[str]] = {}
        for s in states:
            a = s.address.lower()
            self._states[a] = s
            by_pair.setdefault(_key(s.token0.lower(), s.token1.lower()), []).append(a)
        # which pools trade a pair never changes within a Book or its copies: shared, immutable
        self._by_pair: dict[tuple[str, str], tuple[str, ...]] = {k: tuple(v) for k, v in by_pair.items()}
        self._connectors: tuple[str, ...] = tuple(dict.fromkeys(c.lower() for c in connectors))
        # quotes already computed on these states (a size search asks the same sizes for each
        # route of one account); emptied when apply() changes the states
        self._quotes: dict[tuple[str, str, int], Route | None] = {}

    # ---- reading ---------------------------------------------------------------------------

    def pools(self) -> int:
        """How many pool states it holds."""
        return len(self._states)

    def state(self, pool: str) -> PoolState | None:
        """The current (possibly applied) state of one pool, by address."""
        return self._states.get(pool.lower())

    def states(self) -> list[PoolState]:
        return list(self._states.values())

    def copy(self) -> "Book":
        b = Book.__new__(Book)
        b.block = self.block
        b._states = dict(self._states)
        b._by_pair = self._by_pair
        b._connectors = self._connectors
        b._quotes = {}
        return b

    # ---- quoting ---------------------------------------------------------------------------

    def _out(self, addr: str, t_in: str, amount: int) -> int:
        """Amount out of one pool (0 when it cannot price it); no state is built."""
        s = self._states[addr]
        if type(s) is V3Pool:
            r = v3_exact_in(s, t_in == s.token0.lower(), amount)
            return r[0] if r is not None else 0
        if t_in == s.token0.lower():
            r_in, r_out = s.reserve0, s.reserve1
        else:
            r_in, r_out = s.reserve1, s.reserve0
        if r_in <= 0 or r_out <= 0 or r_in + amount >= 1 << 112:
            return 0
        return v2_amount_out(amount, r_in, r_out)

    def _best(self, pools: tuple[str, ...], t_in: str, amount: int) -> tuple[int, str | None]:
        best, where = 0, None
        for addr in pools:
            out = self._out(addr, t_in, amount)
            if out > best:
                best, where = out, addr
        return best, where

    def quote(self, token_in: str, token_out: str, amount_in: int) -> Route | None:
        """Best route by amount_out: every direct pool (all V3 fee tiers, the V2 pair) and every
        2-hop path through a connector token (mixing venues allowed). None when no path can
        price it (no pool, zero out, or a swap that would leave the ticks loaded)."""
        if amount_in <= 0:
            return None
        key = (token_in, token_out, amount_in)
        if key in self._quotes:
            return self._quotes[key]
        route = self._quote(token_in, token_out, amount_in)
        if len(self._quotes) > 200_000:
            self._quotes.clear()
        self._quotes[key] = route
        return route

    def _quote(self, token_in: str, token_out: str, amount_in: int) -> Route | None:
        a, b = token_in.lower(), token_out.lower()
        if a == b:
            return Route((), amount_in, amount_in)
        by_pair = self._by_pair
        best_out, p1 = self._best(by_pair.get(_key(a, b), ()), a, amount_in)
        path: tuple[str, ...] = (p1,) if p1 is not None else ()
        for c in self._connectors:
            if c == a or c == b:
                continue
            firsts = by_pair.get(_key(a, c))
            seconds = by_pair.get(_key(c, b)) if firsts else None
            if not seconds:
                continue
            # amount out is non-decreasing in amount in, so the best 2-hop path through c takes
            # the best first leg; a larger middle amount can still leave the loaded ticks, so
            # fall back to the next first leg then
            legs = sorted(((m, addr) for addr in firsts if (m := self._out(addr, a, amount_in)) > 0), reverse=True)
            for mid, addr1 in legs:
                out, addr2 = self._best(seconds, c, mid)
                if addr2 is not None:
                    if out > best_out:
                        best_out, path = out, (addr1, addr2)
                    break
        if not path:
            return None
        hops = []
        t = a
        for addr in path:
            h = _hop(self._states[addr], t)
            hops.append(h)
            t = h.token_out.lower()
        return Route(tuple(hops), amount_in, best_out)

    def _run(self, hops: Sequence[Hop], amount_in: int) -> tuple[int, dict[str, PoolState]] | None:
        amount = amount_in
        after: dict[str, PoolState] = {}
        for h in hops:
            addr = h.pool.lower()
            st = after.get(addr) or self._states.get(addr)
            if st is None:
                raise ValueError(f"pool {h.pool} is not in the book")
            if _key(h.token_in.lower(), h.token_out.lower()) != _key(st.token0.lower(), st.token1.lower()):
                raise ValueError(f"hop {h.token_in}->{h.token_out} does not match pool {h.pool}")
            s = swap_exact_in(st, h.token_in, amount)
            if s is None:
                return None
            after[addr] = s.after
            amount = s.amount_out
        return amount, after

    def quote_hops(self, hops: Sequence[Hop], amount_in: int) -> Route | None:
        """Price a given path (e.g. a route's hops at another size); None when it cannot."""
        if amount_in <= 0:
            return None
        if not hops:
            return Route((), amount_in, amount_in)
        r = self._run(hops, amount_in)
        if r is None:
            return None
        return Route(tuple(hops), amount_in, r[0])

    def apply(self, route: Route) -> None:
        """Change the pool states as executing `route` would (for the keeper's own impact
        within one block). Raises ValueError if the route no longer prices the same (stale)."""
        if not route.hops:
            return
        self._quotes = {}
        r = self._run(route.hops, route.amount_in)
        if r is None:
            raise ValueError(f"stale route: {route.describe()} no longer prices at block {self.block}")
        out, after = r
        if out != route.amount_out:
            raise ValueError(f"stale route: {route.describe()} now pays {out}, not {route.amount_out}")
        self._states.update(after)


# ---- loading -------------------------------------------------------------------------------

_POOL = abi.load("UniswapV3Pool")
_V3F = abi.load("UniswapV3Factory")
_V2F = abi.load("UniswapV2Factory")
_PAIR = abi.load("UniswapV2Pair")
_SLOT0 = _POOL.fn("slot0").selector
_LIQUIDITY = _POOL.fn("liquidity").selector
_SPACING = _POOL.fn("tickSpacing").selector
_BITMAP = _POOL.fn("tickBitmap").selector
_TICKS = _POOL.fn("ticks").selector
_GET_POOL = _V3F.fn("getPool")
_GET_PAIR = _V2F.fn("getPair")
_RESERVES = _PAIR.fn("getReserves").selector
_M256 = (1 << 256) - 1


def _int_arg(selector: bytes, v: int) -> bytes:
    return selector + (v & _M256).to_bytes(32, "big")


def _word(data: bytes, i: int, signed: bool = False) -> int:
    return int.from_bytes(data[32 * i:32 * i + 32], "big", signed=signed)


def tick_window(tick: int, window_pct: int) -> tuple[int, int]:
    """Ticks [lo, hi] whose prices are within -window_pct % .. +window_pct % of `tick`'s."""
    log_base = math.log(1.0001)
    hi = tick + math.ceil(math.log1p(window_pct / 100) / log_base)
    lo = MIN_TICK if window_pct >= 100 else tick + math.floor(math.log1p(-window_pct / 100) / log_base)
    return max(MIN_TICK, lo), min(MAX_TICK, hi)


@dataclass(slots=True)
class _V3Meta:
    address: str
    token0: str
    token1: str
    fee: int
    spacing: int | None = None
    last_tick: int | None = None


@dataclass(slots=True)
class _V2Meta:
    address: str
    token0: str
    token1: str


class SwapVenues:
    """Finds the pools among the watched tokens and connectors, loads a Book per block."""

    KEEP_BLOCKS = 4  # memoized books

    def __init__(self, multicall: Any, *, v3_factory: str | None, fee_tiers: Sequence[int],
                 v2_factory: str | None, connectors: Sequence[str], log: Any,
                 tick_window_pct: int = 50):
        if tick_window_pct <= 0:
            raise ValueError("tick_window_pct must be positive")
        self.mc = multicall
        self.v3_factory = abi.to_checksum(v3_factory) if v3_factory else None
        self.fee_tiers = tuple(fee_tiers) if v3_factory else ()
        self.v2_factory = abi.to_checksum(v2_factory) if v2_factory else None
        self.connectors = tuple(abi.to_checksum(c) for c in connectors)
        self.log = log
        self.tick_window_pct = tick_window_pct
        self._tokens: dict[str, str] = {}  # lower -> checksummed: watched + connectors
        self._checked: set[tuple[str, str]] = set()  # pairs already looked up at the factories
        self._v3: dict[str, _V3Meta] = {}
        self._v2: dict[str, _V2Meta] = {}
        self._books: OrderedDict[int, asyncio.Future[Book]] = OrderedDict()
        self._discovery = asyncio.Lock()
        self.loads = 0  # state loads done (for tests and metrics)
        self.watch(self.connectors)

    @property
    def pools(self) -> list[str]:
        """Every pool and pair found so far (V3 pools, then V2 pairs; checksummed)."""
        return [m.address for m in self._v3.values()] + [m.address for m in self._v2.values()]

    def watch(self, tokens: Iterable[str]) -> None:
        """Tokens adapters may sell or buy; pools among watched tokens and connectors are found."""
        for t in tokens:
            low = t.lower()
            if low not in self._tokens:
                self._tokens[low] = abi.to_checksum(t)

    def _unchecked_pairs(self) -> list[tuple[str, str]]:
        toks = sorted(self._tokens)
        return [(a, b) for i, a in enumerate(toks) for b in toks[i + 1:] if (a, b) not in self._checked]

    async def book(self, block: int) -> Book:
        """Memoized per block: concurrent callers for the same block share ONE load. Each caller
        gets its own copy (cheap), so one caller's `apply` does not show in another's book."""
        fut = self._books.get(block)
        if fut is None:
            fut = asyncio.ensure_future(self._load(block))
            self._books[block] = fut
            while len(self._books) > self.KEEP_BLOCKS:
                self._books.popitem(last=False)
            fut.add_done_callback(lambda f, b=block: self._forget_failed(b, f))
        book = await asyncio.shield(fut)
        return book.copy()

    def prefetch(self, block: int) -> None:
        """Start loading the book of `block` without waiting for it, so it is ready (or on its
        way) when the first opportunity needs it; later book(block) calls share the load."""
        if block not in self._books:
            fut = asyncio.ensure_future(self.book(block))
            fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # failures: book() retries

    def _forget_failed(self, block: int, fut: asyncio.Future[Book]) -> None:
        if fut.cancelled() or fut.exception() is not None:  # exception() marks it retrieved
            if self._books.get(block) is fut:
                del self._books[block]

    # ---- discovery -----------------------------------------------------------------------------

    async def _discover(self, block: int) -> None:
        async with self._discovery:
            pairs = self._unchecked_pairs()
            if not pairs:
                return
            calls: list[Call] = []
            what: list[tuple[str, str, int]] = []  # (token0, token1, fee or 0 for V2)
            for a, b in pairs:
                t0, t1 = self._tokens[a], self._tokens[b]
                if self.v3_factory:
                    for fee in self.fee_tiers:
                        calls.append(Call(self.v3_factory, _GET_POOL.encode(t0, t1, fee)))
                        what.append((t0, t1, fee))
                if self.v2_factory:
                    calls.append(Call(self.v2_factory, _GET_PAIR.encode(t0, t1)))
                    what.append((t0, t1, 0))
            results = await self.mc.run(calls, block) if calls else []
            new_v3: list[_V3Meta] = []
            for (t0, t1, fee), (ok, data) in zip(what, results):
                if not ok or len(data) < 32:
                    continue
                addr = "0x" + data[12:32].hex()
                if addr == _ZERO:
                    continue
                addr = abi.to_checksum(addr)
                if fee:
                    m = _V3Meta(addr, t0, t1, fee)
                    self._v3[addr.lower()] = m
                    new_v3.append(m)
                else:
                    self._v2[addr.lower()] = _V2Meta(addr, t0, t1)
            if new_v3:  # the spacing (fixed) and a first tick, to know which bitmap words to load
                calls = []
                for m in new_v3:
                    calls += [Call(m.address, _SPACING), Call(m.address, _SLOT0)]
                res = await self.mc.run(calls, block)
                for i, m in enumerate(new_v3):
                    (ok1, d1), (ok2, d2) = res[2 * i], res[2 * i + 1]
                    if ok1 and len(d1) >= 32:
                        m.spacing = _word(d1, 0, True)
                    if ok2 and len(d2) >= 64:
                        m.last_tick = _word(d2, 1, True)
            self._checked.update(pairs)
            self.log.info("swap_venues_discovered", block=block, pairs=len(pairs), v3_pools=len(self._v3),
                          v2_pairs=len(self._v2))

    # ---- state ---------------------------------------------------------------------------------

    def _words_to_load(self, m: _V3Meta) -> range:
        """Bitmap words around the last known tick, covering the window plus one word each side
        (the price may have moved since)."""
        lo, hi = tick_window(m.last_tick or 0, self.tick_window_pct)
        sp = m.spacing or 1
        w_lo = max((lo // sp >> 8) - 1, MIN_TICK // sp >> 8)
        w_hi = min((hi // sp >> 8) + 1, MAX_TICK // sp >> 8)
        return range(w_lo, w_hi + 1)

    async def _load(self, block: int) -> Book:
        t0 = time.perf_counter()
        if self._unchecked_pairs():
            await self._discover(block)
        self.loads += 1
        v3 = [m for m in self._v3.values()]
        v2 = list(self._v2.values())
        # round 1: slot0, liquidity, tickSpacing (when still unknown), bitmap words; V2 reserves
        calls: list[Call] = []
        layout: list[tuple[_V3Meta, bool, range]] = []
        for m in v3:
            need_spacing = m.spacing is None
            words = self._words_to_load(m) if not need_spacing and m.last_tick is not None else range(0)
            calls.append(Call(m.address, _SLOT0))
            calls.append(Call(m.address, _LIQUIDITY))
            if need_spacing:
                calls.append(Call(m.address, _SPACING))
            calls.extend(Call(m.address, _int_arg(_BITMAP, w)) for w in words)
            layout.append((m, need_spacing, words))
        for p in v2:
            calls.append(Call(p.address, _RESERVES))
        res = await self.mc.run(calls, block) if calls else []

        i = 0
        loaded: list[tuple[_V3Meta, int, int, int, dict[int, int]]] = []  # meta, sqrtP, tick, L, words
        for m, need_spacing, words in layout:
            (ok_s, d_s), (ok_l, d_l) = res[i], res[i + 1]
            i += 2
            if need_spacing:
                ok_t, d_t = res[i]
                i += 1
                if ok_t and len(d_t) >= 32:
                    m.spacing = _word(d_t, 0, True)
            got: dict[int, int] = {}
            for w in words:
                ok_w, d_w = res[i]
                i += 1
                if ok_w and len(d_w) >= 32:
                    got[w] = _word(d_w, 0)
            if not (ok_s and ok_l and len(d_s) >= 64 and len(d_l) >= 32) or not m.spacing:
                continue
            sqrt_p = _word(d_s, 0)
            if sqrt_p == 0:  # not initialized
                continue
            tick = _word(d_s, 1, True)
            m.last_tick = tick
            loaded.append((m, sqrt_p, tick, _word(d_l, 0), got))
        states: list[PoolState] = []
        for p in v2:
            ok, d = res[i]
            i += 1
            if ok and len(d) >= 64:
                states.append(V2Pair(p.address, p.token0, p.token1, _word(d, 0), _word(d, 1)))

        # round 2: liquidityNet of the initialized ticks within the window around the fresh tick
        calls = []
        wanted: list[tuple[int, list[int]]] = []  # index into loaded, ticks
        short = 0
        for k, (m, _sqrt, tick, _liq, got) in enumerate(loaded):
            lo, hi = tick_window(tick, self.tick_window_pct)
            sp = m.spacing
            assert sp
            if (lo // sp >> 8) not in got or (hi // sp >> 8) not in got:
                short += 1  # moved since the last load: quotes beyond the loaded words price None
            ticks: list[int] = []
            for w, bits in got.items():
                while bits:
                    low = bits & -bits
                    bits ^= low
                    t = ((w << 8) + low.bit_length() - 1) * sp
                    if lo <= t <= hi:
                        ticks.append(t)
            calls.extend(Call(m.address, _int_arg(_TICKS, t)) for t in ticks)
            wanted.append((k, ticks))
        res = await self.mc.run(calls, block) if calls else []
        i = 0
        n_ticks = 0
        for k, ticks in wanted:
            m, sqrt_p, tick, liq, got = loaded[k]
            nets: dict[int, int] = {}
            for t in ticks:
                ok, d = res[i]
                i += 1
                if ok and len(d) >= 64:
                    nets[t] = _word(d, 1, True)
            n_ticks += len(nets)
            states.append(V3Pool(m.address, m.token0, m.token1, m.fee, m.spacing or 1, sqrt_p, tick, liq, got, nets))
        book = Book(block, states, self.connectors)
        self.log.debug("swap_book_loaded", block=block, pools=book.pools(), ticks=n_ticks, window_short=short,
                       ms=round((time.perf_counter() - t0) * 1000, 1))
        return book
