"""`keeper stress`: what the stress moves and reads: the asset's pools (moved to a price), its feeds, and the Maker ilks and perps markets that follow them."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any


from .. import abi
from ..errors import ConfigError
from ..risk import not_covered
from .chain import DAI_USD_E8, MOVER, RAY, WAD, _addr, _answer, _call, _enc, _send, _uint, give, set_feed


# --- pools -------------------------------------------------------------------------------------

class Pool:
    def __init__(self, kind: str, address: str, asset: str, other: str, fee: int, other_feed: str | None,
                 dec_a: int, dec_o: int, other_usd_e8: int | None = None):
        """other_feed: the other token's feed; or None and a fixed price other_usd_e8 (DAI at $1)."""
        self.kind, self.address, self.asset, self.other, self.fee = kind, address, asset, other, fee
        self.other_feed, self.dec_a, self.dec_o, self.other_usd_e8 = other_feed, dec_a, dec_o, other_usd_e8
        self.asset_is_0 = int(asset, 16) < int(other, 16)

    def other_usd(self, url: str) -> int:
        return _answer(url, self.other_feed) if self.other_feed else int(self.other_usd_e8 or 0)

    def describe(self) -> str:
        return f"{self.kind} {self.address}" + (f" fee {self.fee}" if self.kind == "v3" else "")

    def ratio(self, url: str) -> Fraction:
        """Raw units of `other` per raw unit of the asset."""
        if self.kind == "v3":
            sp = _uint(url, self.address, "slot0()") or 0
            p10 = Fraction(sp * sp, 1 << 192)  # token1 per token0
        else:
            out = _call(url, self.address, _enc("getReserves()"))
            r0, r1 = int.from_bytes(out[:32], "big"), int.from_bytes(out[32:64], "big")
            p10 = Fraction(r1, r0) if r0 else Fraction(0)
        if self.asset_is_0:
            return p10
        return 1 / p10 if p10 else Fraction(0)

    def usd_e8(self, url: str) -> int:
        """The asset's price in this pool, in USD e8 (x the other token's feed)."""
        return int(self.ratio(url) * 10**self.dec_a * self.other_usd(url) / 10**self.dec_o)

    def depth(self, url: str) -> int:
        return _uint(url, self.asset, "balanceOf(address)", self.address) or 0

    def move_to(self, url: str, asset_usd_e8: int, router: str) -> None:
        """Arbitrage the pool to asset_usd_e8 / the other token's feed (the stress account
        swaps; it gets what it sells by writing its balance)."""
        other_usd = self.other_usd(url)
        # target raw other per raw asset
        target = Fraction(asset_usd_e8 * 10**self.dec_o, other_usd * 10**self.dec_a)
        t10 = target if self.asset_is_0 else 1 / target  # token1 per token0
        t0, t1 = (self.asset, self.other) if self.asset_is_0 else (self.other, self.asset)
        if self.kind == "v3":
            goal = math.isqrt(t10.numerator * (1 << 192) // t10.denominator)
            cur = _uint(url, self.address, "slot0()") or 0
            if goal == cur or cur == 0:
                return
            zero_for_one = goal < cur
            tin, tout = (t0, t1) if zero_for_one else (t1, t0)
            amount = 2**200
            give(url, tin, MOVER, amount)
            _send(url, MOVER, tin, _enc("approve(address,uint256)", router, amount), "approve the router", 200_000)
            _send(url, MOVER, router,
                  _enc("exactInputSingle((address,address,uint24,address,uint256,uint256,uint256,uint160))",
                       (tin, tout, self.fee, MOVER, 2**255, 2**128, 0, goal)),
                  f"move {self.describe()}", 3_000_000)
            return
        out = _call(url, self.address, _enc("getReserves()"))
        r0, r1 = int.from_bytes(out[:32], "big"), int.from_bytes(out[32:64], "big")
        if not r0 or not r1 or Fraction(r1, r0) == t10:
            return
        k = r0 * r1
        sell0 = Fraction(r1, r0) > t10  # token0 too dear: sell token0, else token1
        tin, r_in, r_out = (t0, r0, r1) if sell0 else (t1, r1, r0)
        new_in = math.isqrt(k * t10.denominator // t10.numerator if sell0 else k * t10.numerator // t10.denominator)
        amt = (new_in - r_in) * 1000 // 997
        if amt <= 0:
            return
        give(url, tin, MOVER, amt)
        _send(url, MOVER, tin, _enc("transfer(address,uint256)", self.address, amt), "pay the pair", 200_000)
        got = amt * 997 * r_out // (r_in * 1000 + amt * 997)
        o0, o1 = (0, got) if sell0 else (got, 0)
        _send(url, MOVER, self.address, _enc("swap(uint256,uint256,address,bytes)", o0, o1, MOVER, b""),
              f"move {self.describe()}", 500_000)


# --- what the keeper runs ----------------------------------------------------------------------

class MakerIlk:
    """One ilk of a Maker adapter as stress reads it: its Clipper, pip and the pip's feed."""

    def __init__(self, url: str, ad: Any, k: Any):
        self.protocol, self.name, self.id, self.clipper = ad.name, k.name, k.id, abi.to_checksum(k.clipper)
        self.spotter, self.pip = abi.to_checksum(ad.spotter), abi.to_checksum(k.pip) if k.pip else ""
        self.vat, self.dog = abi.to_checksum(ad.vat), abi.to_checksum(ad.cfg.dog)
        self.gem, self.gem_dec, self.gem_symbol = k.gem, k.gem_dec, k.gem_symbol
        src = _addr(url, self.pip, "src()") if self.pip else None  # AggregatorPip shape
        # a feed only if it answers latestAnswer() (a mainnet OSM's src is a Median, not a feed)
        self.src = src if src and _uint(url, src, "latestAnswer()") is not None else None
        self.src_dec = (_uint(url, self.src, "decimals()") or 8) if self.src else 8
        self.moved = False  # its pip reads a feed the path sets

    def describe(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "ilk": self.name, "clipper": self.clipper, "pip": self.pip,
                "feed": self.src, "gem": self.gem, "moved": self.moved}

    def gem_usd_e8(self, url: str, wad: int, block: str) -> int:
        """USD e8 of `wad` of Vat gem: at the pip's feed answer of `block`; a pip without
        src() at the Spotter's price of that block (spot * mat, DAI at $1)."""
        if self.src:
            return wad * _answer(url, self.src, block) * 10**8 // (WAD * 10**self.src_dec)
        out = _call(url, self.vat, _enc("ilks(bytes32)", self.id), block)
        spot = int.from_bytes(out[64:96], "big") if out and len(out) >= 96 else 0
        out = _call(url, self.spotter, _enc("ilks(bytes32)", self.id), block)
        mat = int.from_bytes(out[32:64], "big") if out and len(out) >= 64 else 0
        return wad * (spot * mat // RAY) * 10**8 // (WAD * RAY)


class PerpsMkt:
    def __init__(self, ad: Any, market_id: int, symbol: str, feed: str | None):
        self.protocol, self.market, self.id = ad.name, abi.to_checksum(ad.market), market_id
        self.symbol, self.feed = symbol, feed

    def describe(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "market": self.market, "id": self.id, "symbol": self.symbol, "feed": self.feed}


class Market:
    """The asset's token, feeds and pools as the keeper's adapters see them on the fork."""

    def __init__(self, keeper: Any, url: str, asset: str, perps_feeds: dict[str, dict[int, str]]):
        """perps_feeds: perps adapter name -> market id -> its price feed (risk.perps_price_feeds)."""
        self.url = url
        self.symbol = asset.upper()
        self.aave = [a for a in keeper.adapters.values() if a.kind == "aave_v3"]
        self.morpho = [a for a in keeper.adapters.values() if a.kind == "morpho_blue"]
        self.maker = [a for a in keeper.adapters.values() if a.kind == "maker"]
        self.perps = [a for a in keeper.adapters.values() if a.kind == "synthetix_perps"]
        self.not_covered = not_covered(keeper)
        token, dec, feeds = None, 18, []
        reserves: dict[str, tuple[int, str]] = {}  # token -> (decimals, feed)
        for a in self.aave:
            for r in a.reserves:
                if r.price_source and int(r.price_source, 16):
                    reserves.setdefault(r.asset.lower(), (r.decimals, abi.to_checksum(r.price_source)))
                if r.symbol.upper() == self.symbol:
                    token, dec = abi.to_checksum(r.asset), r.decimals
                    if r.price_source and int(r.price_source, 16) and r.price_source.lower() not in {f.lower() for f in feeds}:
                        feeds.append(abi.to_checksum(r.price_source))
        for a in self.morpho:
            for m in a.markets.values():
                if m.collateral_symbol.upper() == self.symbol or (token and m.collateral_token.lower() == token.lower()):
                    token, dec = token or abi.to_checksum(m.collateral_token), m.collateral_decimals
                    base = _addr(url, m.oracle, "BASE_FEED_1()")
                    if base and base.lower() not in {f.lower() for f in feeds}:
                        feeds.append(base)
        self.ilks = [MakerIlk(url, a, k) for a in self.maker for k in a.ilks.values()]
        for k in self.ilks:
            if k.gem and (k.gem_symbol.upper() == self.symbol or (token and k.gem.lower() == token.lower())):
                token, dec = token or abi.to_checksum(k.gem), dec if token else k.gem_dec
                if k.src and k.src.lower() not in {f.lower() for f in feeds}:
                    feeds.append(k.src)
        if token is None or not feeds:
            raise ConfigError(f"--asset {asset}: no Aave reserve, Morpho collateral or Maker ilk gem of that symbol "
                              "with a price feed in the config's protocols")
        moved = {f.lower() for f in feeds}
        for k in self.ilks:
            k.moved = bool(k.src) and k.src.lower() in moved
        self.perps_markets = []
        for a in self.perps:
            for pm in a.markets:
                feed = perps_feeds.get(a.name, {}).get(pm.id)
                if feed and feed.lower() in moved:
                    self.perps_markets.append(PerpsMkt(a, pm.id, pm.symbol, feed))
        self.token, self.decimals, self.feeds, self.reserves = token, dec, feeds, reserves
        # tokens priced without a feed: each Maker adapter's DAI at $1
        self.fixed: dict[str, tuple[int, int]] = {a.dai.lower(): (18, DAI_USD_E8) for a in self.maker if a.dai}
        self.holders = [keeper.executor.address] + sorted(keeper.adapters_addresses())

    def discover_pools(self, cfg: Any) -> list[Pool]:
        url, pools = self.url, []
        factory = _addr(url, cfg.swap.router, "factory()") if cfg.swap.router else None
        v2 = getattr(cfg.swap, "uniswap_v2_factory", None)
        others: dict[str, tuple[int, str | None, int | None]] = {t: (d, f, None) for t, (d, f) in self.reserves.items()}
        for t, (d, usd) in self.fixed.items():
            others.setdefault(t, (d, None, usd))
        for other, (dec_o, feed, usd) in sorted(others.items()):
            if other == self.token.lower():
                continue
            other = abi.to_checksum(other)
            if factory:
                for fee in cfg.swap.fee_tiers:
                    p = _addr(url, factory, "getPool(address,address,uint24)", self.token, other, fee)
                    if p:
                        pools.append(Pool("v3", p, self.token, other, fee, feed, self.decimals, dec_o, usd))
            if v2:
                p = _addr(url, v2, "getPair(address,address)", self.token, other)
                if p:
                    pools.append(Pool("v2", p, self.token, other, 3000, feed, self.decimals, dec_o, usd))
        return pools

    def price(self) -> int:
        return _answer(self.url, self.feeds[0])

    def set_price(self, answer: int) -> list[str]:
        how = [set_feed(self.url, f, answer) for f in self.feeds]
        self.poke()
        return how

    def poke(self) -> None:
        """Spotter.poke(ilk) for every Maker ilk whose pip reads a moved feed (permissionless)."""
        for k in self.ilks:
            if k.moved:
                _send(self.url, MOVER, k.spotter, _enc("poke(bytes32)", k.id), f"poke the Spotter for {k.name}", 300_000)

    def held(self) -> int:
        return sum(_uint(self.url, self.token, "balanceOf(address)", h) or 0 for h in self.holders)

    def usd_of(self, token: str, amount: int, block: str = "latest") -> int | None:
        r = self.reserves.get(token.lower())
        if r is not None:
            return amount * _answer(self.url, r[1], block) // 10 ** r[0]
        f = self.fixed.get(token.lower())
        return None if f is None else amount * f[1] // 10 ** f[0]


