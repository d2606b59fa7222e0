"""`keeper stress`: a price path applied on a fork, the real keeper liquidating live at each
step, with or without the liquidations' own price impact feeding back into the oracle.

    keeper stress --config FILE --asset WETH --path -5,-5,-10 [--impact on|off]
                  [--fork-url URL] [--json] [--png FILE]

Covered: Aave V3, Morpho Blue, Maker/Sky Liquidation 2.0 (kind "maker": Dog/Clipper) and
Synthetix-v3-style perps (kind "synthetix_perps"). Any other kind is listed in `not_covered`.

1. Fork the source (--fork-url, default the config's chain.rpc_url) at its head
   (keeper/fork.py ForkAnvil, automine on) and start the real keeper on it, live, with no
   store, a temporary journal, no HTTP server. Its key: keeper.private_key_env (on a devnet
   fork, chain id 31337, anvil's public test account #1 when that variable is unset); its
   address gets 10,000 ETH on the fork.
2. The asset's feeds: the price source of every Aave reserve whose symbol is --asset, the
   base feed of every Morpho market (ChainlinkOracle shape) whose collateral is that token,
   and the `src()` of the pip (AggregatorPip shape) of every Maker ilk whose gem is that token.
   A feed is set with `setAnswer(int256)` sent from its `owner()`, impersonated (the devnet's
   SettableAggregator). A feed that is not settable that way gets the project's
   SettableAggregator code in its place (anvil_setCode, owner slot set to the stress account):
   latestAnswer/latestRoundData keep working, at the answers the path sets.
   Every Maker ilk whose pip reads a moved feed (pip.src()) sees it: the Spotter is poked for
   it (Spotter.poke(ilk), permissionless, sent by the stress account) after every feed update
   (each step, and each impact update). Every perps market whose getPriceFeed(id) is a moved
   feed moves by itself (its indexPrice reads the feed); both lists are in the report
   (`maker_ilks`, `perps_markets`).
3. The market: every Uniswap V3 pool (swap.router's factory, swap.fee_tiers) and Uniswap V2
   pair (swap.uniswap_v2_factory) of the asset against another Aave reserve (at its feed) or
   against a Maker adapter's DAI (at $1). At the start of each step the feeds are set to the
   step's price (old answer * (100 + pct) / 100) and every such pool is arbitraged to the
   feeds' ratio (the market moved): a stress account gets the tokens it sells by writing its
   balance slot (found by probing) and swaps through the router (V3, with the target as
   sqrtPriceLimitX96) or the pair (V2). The deepest pool is the one holding most of the asset;
   its price (pool ratio x the other token's price) is the step's pool price.
4. Then the keeper runs cycle after cycle until a cycle confirms nothing (at most --cycles per
   step, default 50; a step cut short is flagged `capped`). Its liquidation routes sell the
   seized collateral in the same transaction, so the pools move. With --impact on, after each
   cycle that sent something the asset's feeds are set to the deepest pool's price (and the
   Spotter poked): liquidations can cause more liquidations.
   Time: Maker auctions start above the market and fall with time, perps liquidations are
   capped per window. When a cycle confirms nothing while a Clipper has active auctions or
   the perps market has flagged accounts, fork time is advanced (evm_increaseTime + evm_mine)
   and the keeper runs again: by the seconds until the first auction reaches the keeper's
   limit (the Maker adapter's own figure, plus one block; 60 s for an auction already under
   the limit but not taken, its price keeps falling), until an auction needs `redo` (tail),
   or until a full perps window frees capacity, else by 60 s; at least chain.block_time_s.
   Per step the time advanced is bounded by the longest `tail` of the Clippers that had
   active auctions (at least 10 perps windows when accounts are flagged), at most 2 hours
   (`time_advanced_s`, `time_advances`).
5. Per step, read from the fork (all in the step's blocks, by anyone):
   - Aave / Morpho: the liquidations (LiquidationCall, Liquidate events), the collateral seized
     in the asset, the part of it sold (seized minus what the keeper's address and liquidator
     contracts still hold of it), its USD value at the feed's answer of each liquidation's
     block, the pool price before and after, the bad debt created (Aave: the debt of accounts
     liquidated in the step left with zero collateral, getUserAccountData; Morpho:
     badDebtAssets of the Liquidate events). These keep their field names (`seized_raw`,
     `sold_raw`, `sold_usd_e8`, `bad_debt_aave_usd_e8`, `bad_debt_morpho_usd_e8`).
   - Maker (`maker`): barks (Dog Bark events), takes (Clipper Take events) and redos; the gem
     sold by the auctions (each take's slice = owe / price, exact in dss; in the asset's raw
     units for ilks whose gem is the asset, `gem_sold_raw`; every ilk in USD at its pip's feed
     answer of the take's block, or spot * mat for a pip without a feed, `gem_sold_usd_e8`),
     the DAI raised (sum of owe, rad); the uncovered tab: a take that leaves lot = 0 with
     tab > 0 ends the auction with that tab not covered (the Maker bad debt reported,
     `uncovered_tab_rad`; the tab includes the liquidation penalty, so `uncovered_debt_rad` is
     its debt part, max(0, tab left - (tab at kick - Bark's due)), for auctions barked during
     the run, else counted in `uncovered_debt_unknown`); auctions still open at the end of
     the step, with their remaining tab and lot (`open_auctions`, `open_tab_rad`; not counted
     as bad debt: they may still be covered later). DAI counts as $1: USD e8 = rad // 10**37.
   - Perps (`perps`): accounts flagged (AccountFlaggedForLiquidation), liquidation attempts
     (AccountLiquidationAttempt), positions closed (PositionLiquidated: size and its notional
     at the market's indexPrice of the block), the shortfall the insurance fund takes: the
     negative part of each flag's availableMargin (snxUSD wad, $1: USD e8 = wad // 10**10),
     and PerpsMarket.insuranceFund() before the step's price move and after its last cycle.
   - Totals per step over every covered protocol: `positions_liquidated` (Aave and Morpho
     liquidations + Maker barks + perps accounts flagged; per protocol kind in
     `positions_liquidated_by`), `volume_usd_e8` (Aave/Morpho sold + Maker gem sold + perps
     notional closed), `bad_debt_usd_e8` (Aave + Morpho + Maker uncovered tab + perps
     shortfall, each also on its own; `bad_debt_accounts` lists the lending accounts, the
     uncovered auctions as "ILK#id" and the perps account ids) and the keeper's PnL (the
     executor's realized profit of each confirmed or failed send). `totals` sums them (Maker's
     open auctions: those of the last step); `series` holds them cumulated per step.

The fork is always stopped. Integers for amounts (raw units: wad, ray, rad; USD e8).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from eth_utils import keccak

from . import abi
from .errors import ConfigError, KeeperError
from .fork import RUN_DIR, ForkAnvil, _local, fund, source_head
from .redact import redact_url

MAX_CYCLES = 50  # keeper cycles per step at most (the devnet's test cascade needs 38)
MAX_STEPS = 50
DEV_CHAIN_ID = 31337
# anvil's public test account #1: the devnet keeper (local chains only)
DEVNET_KEEPER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
MOVER = "0x5757e55757E55757e55757E55757e55757e55757"  # the stress account: moves markets and feeds
ZERO = "0x" + "00" * 20
LIQ_AAVE = abi.load("AavePool").event("LiquidationCall")
COVERED = ("aave_v3", "morpho_blue", "maker", "synthetix_perps")
# Maker / perps events read per step
EV_BARK = abi.load("MakerDog").event("Bark")
_CLIP = abi.load("MakerClipper")
EV_TAKE, EV_KICK, EV_REDO = _CLIP.event("Take"), _CLIP.event("Kick"), _CLIP.event("Redo")
_PERPS = abi.load("PerpsMarket")
EV_FLAGGED = _PERPS.event("AccountFlaggedForLiquidation")
EV_ATTEMPT = _PERPS.event("AccountLiquidationAttempt")
EV_POSITION = _PERPS.event("PositionLiquidated")
WAD, RAY, RAD = 10**18, 10**27, 10**45
RAD_PER_USD_E8 = 10**37  # DAI counted at $1: USD e8 = rad // 10**37
WAD_PER_USD_E8 = 10**10  # snxUSD counted at $1: USD e8 = wad // 10**10
DAI_USD_E8 = 10**8
# fork time advanced while Maker auctions or flagged perps accounts wait (see the docstring)
TIME_STEP_S = 60
MAX_ADVANCE_S = 7_200
PERPS_WINDOWS = 10


def parse_path(text: str) -> list[Fraction]:
    """--path "-5,-5,-10": percent moves, each above -100."""
    out = []
    for part in text.replace(" ", "").split(","):
        try:
            v = Fraction(part)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"not a percentage: {part!r}") from None
        if v <= -100 or v > 1000:
            raise ValueError(f"{part}% is out of range (above -100, at most 1000)")
        out.append(v)
    if not out or len(out) > MAX_STEPS:
        raise ValueError(f"1 to {MAX_STEPS} steps")
    return out


# --- raw chain access (the fork) ---------------------------------------------------------------

def _word(v: int) -> str:
    return "0x" + v.to_bytes(32, "big").hex()


def _enc(sig: str, *args: Any) -> str:
    from .devnet.jsonrpc import encode_call

    return encode_call(sig, *args)


def _call(url: str, to: str, data: str, block: str = "latest") -> bytes | None:
    try:
        out = _local(url, "eth_call", [{"to": to, "data": data}, block])
    except KeeperError:
        return None
    return bytes.fromhex(out[2:])


def _uint(url: str, to: str, sig: str, *args: Any, block: str = "latest") -> int | None:
    out = _call(url, to, _enc(sig, *args), block)
    return int.from_bytes(out[:32], "big") if out and len(out) >= 32 else None


def _addr(url: str, to: str, sig: str, *args: Any) -> str | None:
    v = _uint(url, to, sig, *args)
    return abi.to_checksum("0x" + v.to_bytes(32, "big")[12:].hex()) if v else None


def _answer(url: str, feed: str, block: str = "latest") -> int:
    v = _uint(url, feed, "latestAnswer()", block=block)
    if v is None or not 0 < v < 2**255:
        raise KeeperError(f"stress: feed {feed} has no positive latestAnswer")
    return v


def _send(url: str, sender: str, to: str | None, data: str, what: str, gas: int = 2_000_000) -> dict[str, Any]:
    tx = {"from": sender, "data": data, "gas": hex(gas)}
    if to:
        tx["to"] = to
    h = _local(url, "eth_sendTransaction", [tx])
    rc = None
    for _ in range(600):
        rc = _local(url, "eth_getTransactionReceipt", [h])
        if rc:
            break
        time.sleep(0.02)
    if not rc or rc.get("status") != "0x1":
        raise KeeperError(f"stress: {what} failed on the fork ({h})")
    return rc


def give(url: str, token: str, who: str, amount: int) -> None:
    """Set `who`'s balance of `token` to `amount` by writing its balance slot (a Solidity or
    Vyper mapping in one of the first 20 slots, found by probing; restored when wrong)."""
    pad = bytes.fromhex(who[2:].lower().rjust(64, "0"))
    for slot in range(20):
        s = slot.to_bytes(32, "big")
        for key in (keccak(pad + s), keccak(s + pad)):
            k = "0x" + key.hex()
            old = _local(url, "eth_getStorageAt", [token, k, "latest"])
            _local(url, "anvil_setStorageAt", [token, k, _word(amount)])
            if _uint(url, token, "balanceOf(address)", who) == amount:
                return
            _local(url, "anvil_setStorageAt", [token, k, _word(int(old, 16))])
    raise KeeperError(f"stress: cannot find the balance slot of token {token}")


# --- feeds -------------------------------------------------------------------------------------

def set_feed(url: str, feed: str, answer: int) -> str:
    """Set the feed's answer; returns how ('owner' or 'stub')."""
    owner = _addr(url, feed, "owner()")
    data = _enc("setAnswer(int256)", answer)
    if owner:
        fund(url, owner)
        try:
            _send(url, owner, feed, data, f"setAnswer on {feed}", gas=200_000)
            if _answer(url, feed) == answer:
                return "owner"
        except KeeperError:
            pass
    _install_stub(url, feed)
    _send(url, MOVER, feed, data, f"setAnswer on the stub at {feed}", gas=200_000)
    return "stub"


_STUB_CODE: dict[str, str] = {}


def _install_stub(url: str, feed: str) -> None:
    """The project's SettableAggregator (8 decimals) in place of the feed's code, owned by MOVER."""
    dec = _uint(url, feed, "decimals()")
    if dec not in (None, 8):
        raise KeeperError(f"stress: feed {feed} has {dec} decimals and is not settable (only 8-decimal feeds "
                          "can be replaced)")
    if url not in _STUB_CODE:
        from eth_abi import encode as abi_encode

        from .solidity import compile_files

        src = Path(__file__).resolve().parent.parent / "contracts" / "SettableAggregator.sol"
        art = compile_files([src])["SettableAggregator"]
        code = "0x" + art["bytecode"].removeprefix("0x") + abi_encode(["int256", "string"], [1, "stress"]).hex()
        fund(url, MOVER)
        rc = _send(url, MOVER, None, code, "deploy the feed stub", gas=3_000_000)
        _STUB_CODE[url] = _local(url, "eth_getCode", [rc["contractAddress"], "latest"])
    _local(url, "anvil_setCode", [feed, _STUB_CODE[url]])
    _local(url, "anvil_setStorageAt", [feed, _word(0), _word(int(MOVER, 16))])  # owner
    for slot in (3, 4):  # _roundId, _updatedAt: whatever the old contract kept there
        _local(url, "anvil_setStorageAt", [feed, _word(slot), _word(0)])


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
        if Fraction(r1, r0) > t10:  # token0 too dear: sell token0
            new0 = math.isqrt(k * t10.denominator // t10.numerator)
            amt = (new0 - r0) * 1000 // 997
            if amt <= 0:
                return
            give(url, t0, MOVER, amt)
            _send(url, MOVER, t0, _enc("transfer(address,uint256)", self.address, amt), "pay the pair", 200_000)
            o0, o1 = 0, amt * 997 * r1 // (r0 * 1000 + amt * 997)
        else:
            new1 = math.isqrt(k * t10.numerator // t10.denominator)
            amt = (new1 - r1) * 1000 // 997
            if amt <= 0:
                return
            give(url, t1, MOVER, amt)
            _send(url, MOVER, t1, _enc("transfer(address,uint256)", self.address, amt), "pay the pair", 200_000)
            o0, o1 = amt * 997 * r0 // (r1 * 1000 + amt * 997), 0
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

    def __init__(self, keeper: Any, url: str, asset: str):
        self.url = url
        self.symbol = asset.upper()
        self.aave = [a for a in keeper.adapters.values() if a.kind == "aave_v3"]
        self.morpho = [a for a in keeper.adapters.values() if a.kind == "morpho_blue"]
        self.maker = [a for a in keeper.adapters.values() if a.kind == "maker"]
        self.perps = [a for a in keeper.adapters.values() if a.kind == "synthetix_perps"]
        self.not_covered = sorted(n for n, a in keeper.adapters.items() if a.kind not in COVERED)
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
                feed = _addr(url, a.market, "getPriceFeed(uint128)", pm.id)
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


def _logs(url: str, address: str, topic0: str, a: int, b: int) -> list[dict[str, Any]]:
    if a > b:
        return []
    return _local(url, "eth_getLogs", [{"address": address, "fromBlock": hex(a), "toBlock": hex(b), "topics": [topic0]}])


def liquidations(m: Market, a: int, b: int) -> list[dict[str, Any]]:
    """Every Aave LiquidationCall and Morpho Liquidate in blocks a..b, normalized:
    protocol, account, block, tx, liquidator, collateral, seized, debt_token, bad_debt (raw)."""
    from .protocols.morpho_blue.calls import EV_LIQUIDATE

    out = []
    for ad in m.aave:
        for lg in _logs(m.url, ad.pool, LIQ_AAVE.topic0, a, b):
            e = LIQ_AAVE.decode(lg)
            out.append({"protocol": ad.name, "kind": "aave_v3", "account": abi.to_checksum(e["user"]),
                        "block": int(lg["blockNumber"], 16), "tx": lg["transactionHash"],
                        "liquidator": abi.to_checksum(e["liquidator"]), "collateral": abi.to_checksum(e["collateralAsset"]),
                        "seized": int(e["liquidatedCollateralAmount"]), "debt_token": abi.to_checksum(e["debtAsset"]),
                        "repaid": int(e["debtToCover"]), "bad_debt": 0})
    for ad in m.morpho:
        for lg in _logs(m.url, ad.cfg.morpho, EV_LIQUIDATE.topic0, a, b):
            e = EV_LIQUIDATE.decode(lg)
            mid = lg["topics"][1].lower()
            mk = ad.markets.get(mid)
            out.append({"protocol": ad.name, "kind": "morpho_blue", "account": abi.to_checksum(e["borrower"]),
                        "block": int(lg["blockNumber"], 16), "tx": lg["transactionHash"],
                        "liquidator": abi.to_checksum(e["caller"]),
                        "collateral": abi.to_checksum(mk.collateral_token) if mk else "",
                        "seized": int(e["seizedAssets"]), "debt_token": abi.to_checksum(mk.loan_token) if mk else "",
                        "repaid": int(e["repaidAssets"]), "bad_debt": int(e["badDebtAssets"])})
    out.sort(key=lambda x: (x["block"], x["tx"]))
    return out


def aave_bad_debt(m: Market, events: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """USD e8 of debt left on the Aave accounts of `events` that have no collateral now."""
    total, accounts = 0, []
    for ad in m.aave:
        users = sorted({e["account"] for e in events if e["protocol"] == ad.name})
        for u in users:
            out = _call(m.url, ad.pool, _enc("getUserAccountData(address)", u))
            coll, debt = int.from_bytes(out[:32], "big"), int.from_bytes(out[32:64], "big")
            if coll == 0 and debt > 0:
                total += debt
                accounts.append(u)
    return total, accounts


def _logs_any(url: str, address: str, topics: list[str], a: int, b: int) -> list[dict[str, Any]]:
    if a > b:
        return []
    return _local(url, "eth_getLogs", [{"address": address, "fromBlock": hex(a), "toBlock": hex(b), "topics": [topics]}])


def _int(url: str, to: str, sig: str, *args: Any, block: str = "latest") -> int | None:
    v = _uint(url, to, sig, *args, block=block)
    return None if v is None else (v - 2**256 if v >= 2**255 else v)


def _ilk_name(b: bytes) -> str:
    return b.rstrip(b"\0").decode("utf-8", "replace")


def open_auctions(m: Market, block: str = "latest") -> list[dict[str, Any]]:
    """Every active auction of every Maker ilk at `block`: tab [rad], lot [wad], price [ray]."""
    out = []
    for k in m.ilks:
        raw = _call(m.url, k.clipper, _enc("list()"), block)
        ids = _CLIP.fn("list").decode_one(raw) if raw else []
        for i in ids:
            st = _CLIP.fn("getStatus").decode(_call(m.url, k.clipper, _enc("getStatus(uint256)", i), block) or b"")
            needs_redo, price, lot, tab = st
            out.append({"protocol": k.protocol, "ilk": k.name, "id": int(i), "tab_rad": int(tab), "lot_wad": int(lot),
                        "price_ray": int(price), "needs_redo": bool(needs_redo), "tab_usd_e8": int(tab) // RAD_PER_USD_E8})
    return out


def maker_step(m: Market, a: int, b: int, seen: dict[tuple[str, int], dict[str, int]] | None = None) -> dict[str, Any]:
    """Barks, takes, redos of blocks a..b, the gem sold, the DAI raised, the uncovered tab and
    the auctions still open at b (module docstring). `seen` keeps, across the steps of a run,
    each auction's Bark `due` and Kick `tab` by (clipper, id): the uncovered tab's debt part."""
    url = m.url
    seen = {} if seen is None else seen
    by_ilk = {(k.dog.lower(), k.name): k for k in m.ilks}
    barks, takes, redos = [], [], []
    for dog in sorted({k.dog for k in m.ilks}):
        for lg in _logs(url, dog, EV_BARK.topic0, a, b):
            e = EV_BARK.decode(lg)
            name = _ilk_name(e["ilk"])
            k = by_ilk.get((dog.lower(), name))
            barks.append({"protocol": k.protocol if k else "", "ilk": name, "urn": abi.to_checksum(e["urn"]),
                          "auction": int(e["id"]), "ink_wad": int(e["ink"]), "art_wad": int(e["art"]),
                          "due_rad": int(e["due"]), "block": int(lg["blockNumber"], 16), "tx": lg["transactionHash"]})
            seen.setdefault((e["clip"].lower(), int(e["id"])), {})["due"] = int(e["due"])
    for k in m.ilks:
        for lg in _logs_any(url, k.clipper, [EV_TAKE.topic0, EV_REDO.topic0, EV_KICK.topic0], a, b):
            blk = int(lg["blockNumber"], 16)
            if lg["topics"][0] == EV_KICK.topic0:
                e = EV_KICK.decode(lg)
                seen.setdefault((k.clipper.lower(), int(e["id"])), {})["tab"] = int(e["tab"])
                continue
            if lg["topics"][0] == EV_REDO.topic0:
                e = EV_REDO.decode(lg)
                redos.append({"protocol": k.protocol, "ilk": k.name, "auction": int(e["id"]), "tab_rad": int(e["tab"]),
                              "lot_wad": int(e["lot"]), "block": blk, "tx": lg["transactionHash"]})
                continue
            e = EV_TAKE.decode(lg)
            price, owe, tab, lot = int(e["price"]), int(e["owe"]), int(e["tab"]), int(e["lot"])
            sl = owe // price if price else 0  # the slice bought: owe = slice * price, or slice = owe / price
            uncovered = tab if lot == 0 and tab > 0 else 0
            # the tab includes the penalty (tab at kick - due): the debt part left uncovered
            known = seen.get((k.clipper.lower(), int(e["id"])), {})
            debt = (max(0, tab - (known["tab"] - known["due"])) if "tab" in known and "due" in known else None) \
                if uncovered else 0
            takes.append({"protocol": k.protocol, "ilk": k.name, "auction": int(e["id"]),
                          "urn": abi.to_checksum(e["usr"]), "price_ray": price,
                          "owe_rad": owe, "slice_wad": sl, "tab_left_rad": tab, "lot_left_wad": lot,
                          "uncovered_rad": uncovered, "uncovered_debt_rad": debt,
                          "gem_usd_e8": k.gem_usd_e8(url, sl, hex(blk)),
                          "asset": k.gem.lower() == m.token.lower(), "gem_dec": k.gem_dec,
                          "block": blk, "tx": lg["transactionHash"]})
    barks.sort(key=lambda x: (x["block"], x["tx"]))
    takes.sort(key=lambda x: (x["block"], x["tx"]))
    opened = open_auctions(m, hex(b))
    uncovered_rad = sum(t["uncovered_rad"] for t in takes)
    dai_rad = sum(t["owe_rad"] for t in takes)
    return {
        "barks": len(barks), "takes": len(takes), "redos": len(redos),
        "gem_sold_raw": sum(t["slice_wad"] // 10 ** (18 - t["gem_dec"]) for t in takes if t["asset"]),
        "gem_sold_usd_e8": sum(t["gem_usd_e8"] for t in takes),
        "dai_raised_rad": dai_rad, "dai_raised_usd_e8": dai_rad // RAD_PER_USD_E8,
        "uncovered_tab_rad": uncovered_rad, "uncovered_usd_e8": uncovered_rad // RAD_PER_USD_E8,
        "uncovered_debt_rad": sum(t["uncovered_debt_rad"] or 0 for t in takes),
        "uncovered_debt_unknown": sum(1 for t in takes if t["uncovered_debt_rad"] is None),
        "uncovered_auctions": [{"protocol": t["protocol"], "ilk": t["ilk"], "auction": t["auction"], "urn": t["urn"],
                                "tab_rad": t["uncovered_rad"], "debt_rad": t["uncovered_debt_rad"],
                                "tab_usd_e8": t["uncovered_rad"] // RAD_PER_USD_E8} for t in takes if t["uncovered_rad"]],
        "open_auctions": opened, "open_tab_rad": sum(o["tab_rad"] for o in opened),
        "open_tab_usd_e8": sum(o["tab_rad"] for o in opened) // RAD_PER_USD_E8,
        "bark_events": barks, "take_events": takes, "redo_events": redos}


def insurance_funds(m: Market, block: str = "latest") -> dict[str, int]:
    """PerpsMarket.insuranceFund() [snxUSD wad, signed] of every perps adapter's market."""
    return {abi.to_checksum(a.market): _int(m.url, a.market, "insuranceFund()", block=block) or 0 for a in m.perps}


def perps_step(m: Market, a: int, b: int, fund_before: dict[str, int]) -> dict[str, Any]:
    """Flags, attempts, positions closed, shortfall of blocks a..b (module docstring)."""
    url = m.url
    flags, attempts, closed = [], [], []
    for ad in m.perps:
        for lg in _logs_any(url, ad.market, [EV_FLAGGED.topic0, EV_ATTEMPT.topic0, EV_POSITION.topic0], a, b):
            blk, t0 = int(lg["blockNumber"], 16), lg["topics"][0]
            base = {"protocol": ad.name, "block": blk, "tx": lg["transactionHash"]}
            if t0 == EV_FLAGGED.topic0:
                e = EV_FLAGGED.decode(lg)
                am = int(e["availableMargin"])
                flags.append({**base, "account": int(e["accountId"]), "available_margin_wad": am,
                              "required_maintenance_wad": int(e["requiredMaintenanceMargin"]),
                              "shortfall_wad": max(0, -am)})
            elif t0 == EV_ATTEMPT.topic0:
                e = EV_ATTEMPT.decode(lg)
                attempts.append({**base, "account": int(e["accountId"]), "reward_wad": int(e["reward"]),
                                 "full": bool(e["fullLiquidation"])})
            else:
                e = EV_POSITION.decode(lg)
                mid, amount = int(e["marketId"]), int(e["amountLiquidated"])
                price = _uint(url, ad.market, "indexPrice(uint128)", mid, block=hex(blk)) or 0
                closed.append({**base, "account": int(e["accountId"]), "market": mid, "amount_wad": amount,
                               "size_left_wad": int(e["currentPositionSize"]), "index_price_wad": price,
                               "notional_usd_e8": amount * price // (WAD * WAD_PER_USD_E8)})
    after = insurance_funds(m)
    shortfall = sum(f["shortfall_wad"] for f in flags)
    return {
        "accounts_flagged": len(flags), "attempts": len(attempts), "positions_closed": len(closed),
        "size_closed_wad": {str(mid): sum(c["amount_wad"] for c in closed if c["market"] == mid)
                            for mid in sorted({c["market"] for c in closed})},
        "notional_closed_usd_e8": sum(c["notional_usd_e8"] for c in closed),
        "rewards_wad": sum(x["reward_wad"] for x in attempts),
        "shortfall_wad": shortfall, "shortfall_usd_e8": shortfall // WAD_PER_USD_E8,
        "shortfall_accounts": sorted({f["account"] for f in flags if f["shortfall_wad"]}),
        "insurance_fund_before_wad": sum(fund_before.values()), "insurance_fund_after_wad": sum(after.values()),
        "insurance_fund_by_market": {k: {"before_wad": fund_before.get(k, 0), "after_wad": v} for k, v in after.items()},
        "flag_events": flags, "attempt_events": attempts, "position_events": closed}


def _waiting(m: Market, now: int, block_time: int) -> tuple[list[int], int] | None:
    """What waits for time: (candidate seconds to advance, the time budget it justifies), or
    None when no Maker auction is active and no perps account is flagged. Candidates: an
    auction reaching the keeper's limit (the adapter's limit_in_s, plus one block so the head
    itself is at the limit; an auction already under its limit but not taken: TIME_STEP_S, its
    price keeps falling), an auction needing redo (tail), a perps window freeing capacity."""
    cands: list[int] = []
    budget = 0
    for k in m.ilks:
        if not _uint(m.url, k.clipper, "count()"):
            continue
        tail = _uint(m.url, k.clipper, "tail()") or 0
        budget = max(budget, tail)
        raw = _call(m.url, k.clipper, _enc("list()"))
        for i in (_CLIP.fn("list").decode_one(raw) if raw else []):
            sale = _call(m.url, k.clipper, _enc("sales(uint256)", i)) or b""
            tic = int.from_bytes(sale[128:160], "big") if len(sale) >= 160 else 0
            if tic and tic + tail + 1 > now:
                cands.append(tic + tail + 1 - now)  # when it needs redo
    if budget:
        for ad in m.maker:  # the keeper's own figure: seconds until an auction reaches its limit
            for au in ad.auctions.values():
                if au.limit_in_s is not None:
                    cands.append(au.limit_in_s + block_time if au.limit_in_s > 0 else TIME_STEP_S)
    for ad in m.perps:
        raw = _call(m.url, ad.market, _enc("flaggedAccounts()"))
        if not raw or len(raw) < 64 or not int.from_bytes(raw[32:64], "big"):
            continue
        for pm in ad.markets:
            cap = _call(m.url, ad.market, _enc("liquidationCapacity(uint128)", pm.id)) or b""
            par = _call(m.url, ad.market, _enc("getMaxLiquidationParameters(uint128)", pm.id)) or b""
            if len(cap) < 96 or len(par) < 64:
                continue
            capacity, latest = int.from_bytes(cap[:32], "big"), int.from_bytes(cap[64:96], "big")
            window = int.from_bytes(par[32:64], "big")
            budget = max(budget, PERPS_WINDOWS * window)
            if capacity == 0:
                cands.append(max(1, latest + window - now))
        budget = max(budget, 1)
    if budget == 0:
        return None
    return cands, min(budget, MAX_ADVANCE_S)


async def _cycles(keeper: Any, m: Market, pool: Pool | None, impact: bool, max_cycles: int) -> dict[str, Any]:
    """The keeper, cycle after cycle, until a cycle confirms nothing and nothing waits for time
    (at most max_cycles). When a cycle confirms nothing while Maker auctions are active or perps
    accounts are flagged, fork time is advanced (module docstring) within the step's budget."""
    sent = confirmed = failed = cycles = 0
    pnl, unknown = 0, 0
    advanced = advances = budget = 0
    block_time = max(1, int(getattr(keeper.cfg.chain, "block_time_s", 1) or 1))
    capped = True  # the last cycle still liquidated (or waited): the step was cut short by max_cycles
    for _ in range(max_cycles):
        cycles += 1
        outs = await keeper.cycle(await keeper.read_head())
        done = [o for o in outs if o.status in ("confirmed", "failed")]
        sent += len(done)
        for o in done:
            confirmed += o.status == "confirmed"
            failed += o.status == "failed"
            v = keeper.realized_profit_usd_e8(o)
            if v is None:
                unknown += 1
            else:
                pnl += v
        if impact and pool is not None and done:
            p = pool.usd_e8(m.url)
            if p > 0 and p != m.price():
                m.set_price(p)
        if any(o.status == "confirmed" for o in outs):
            continue
        now = int(_local(m.url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
        wait = _waiting(m, now, block_time)
        if wait is not None:
            cands, b = wait
            budget = max(budget, b)
            dt = min(max(min(cands, default=TIME_STEP_S), block_time), budget - advanced)
            if dt > 0:
                _local(m.url, "evm_increaseTime", [dt])
                _local(m.url, "evm_mine")
                advanced += dt
                advances += 1
                continue
        capped = False
        break
    return {"cycles": cycles, "capped": capped, "sends": sent, "confirmed": confirmed, "failed": failed,
            "keeper_pnl_usd_e8": pnl, "pnl_unknown": unknown, "time_advanced_s": advanced,
            "time_advances": advances}


def _totals(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over the steps; Maker and perps parts when those protocols are configured."""
    t: dict[str, Any] = {k: sum(s[k] for s in steps) for k in
                         ("positions_liquidated", "seized_raw", "sold_raw", "sold_usd_e8", "volume_usd_e8",
                          "bad_debt_usd_e8", "bad_debt_aave_usd_e8", "bad_debt_morpho_usd_e8", "bad_debt_maker_usd_e8",
                          "bad_debt_perps_usd_e8", "keeper_pnl_usd_e8", "sends", "confirmed", "failed",
                          "time_advanced_s")}
    by: dict[str, int] = {}
    for s in steps:
        for k, v in s["positions_liquidated_by"].items():
            by[k] = by.get(k, 0) + v
    t["positions_liquidated_by"] = by
    mks = [s["maker"] for s in steps if s.get("maker")]
    if mks:
        t["maker"] = {k: sum(x[k] for x in mks) for k in
                      ("barks", "takes", "redos", "gem_sold_raw", "gem_sold_usd_e8", "dai_raised_rad",
                       "dai_raised_usd_e8", "uncovered_tab_rad", "uncovered_usd_e8", "uncovered_debt_rad",
                       "uncovered_debt_unknown")}
        t["maker"].update(open_auctions=len(mks[-1]["open_auctions"]), open_tab_rad=mks[-1]["open_tab_rad"],
                          open_tab_usd_e8=mks[-1]["open_tab_usd_e8"])
    pps = [s["perps"] for s in steps if s.get("perps")]
    if pps:
        t["perps"] = {k: sum(x[k] for x in pps) for k in
                      ("accounts_flagged", "attempts", "positions_closed", "notional_closed_usd_e8", "rewards_wad",
                       "shortfall_wad", "shortfall_usd_e8")}
        t["perps"].update(insurance_fund_before_wad=pps[0]["insurance_fund_before_wad"],
                          insurance_fund_after_wad=pps[-1]["insurance_fund_after_wad"])
    return t


def _series(steps: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Cumulative USD e8 after each step (a leading 0), for charts: volume, bad debt (all and
    per protocol kind), keeper PnL."""
    keys = ("volume_usd_e8", "bad_debt_usd_e8", "bad_debt_aave_usd_e8", "bad_debt_morpho_usd_e8",
            "bad_debt_maker_usd_e8", "bad_debt_perps_usd_e8", "keeper_pnl_usd_e8")
    out: dict[str, list[int]] = {"step": [0] + [s["step"] for s in steps]}
    for k in keys:
        acc, vals = 0, [0]
        for s in steps:
            acc += s[k]
            vals.append(acc)
        out[k] = vals
    return out


async def stress(config_path: str | Path, asset: str, path: list[Fraction], *, impact: bool = False,
                 fork_url: str | None = None, environ: dict[str, str] | None = None, port: int = 0,
                 max_cycles: int = MAX_CYCLES, log: Any = None,
                 on_fork: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the stress test; returns the report (module docstring). on_fork(url, report) is
    called before the fork is stopped (tests check the chain there). The fork is always stopped."""
    from .app import Keeper
    from .config import load_config, load_signer
    from .devnet.anvil import free_port

    env = dict(os.environ if environ is None else environ)
    base = load_config(config_path, environ=env)
    source = (fork_url or base.chain.rpc_url).strip()
    shown = redact_url(source)
    chain_id, head = source_head(source)
    if base.chain.chain_id is not None and base.chain.chain_id != chain_id:
        raise ConfigError(f"--config: chain.chain_id is {base.chain.chain_id} but {shown} is chain {chain_id}")
    if base.relay is not None:
        raise ConfigError("stress: remove the [relay] section (the fork's transactions would go to the real relays)")
    key_env = base.keeper.private_key_env
    if not env.get(key_env) and chain_id == DEV_CHAIN_ID:
        env[key_env] = DEVNET_KEEPER_KEY
    port = port or free_port()
    node = ForkAnvil(source, head, chain_id, port, RUN_DIR / f"stress-{port}.log")
    keeper = None
    tmp = tempfile.TemporaryDirectory(prefix="keeper-stress-")
    saved_key = os.environ.get(key_env)
    t0 = time.monotonic()
    ok = False
    try:
        node.start()
        url = node.url
        env.update({"KEEPER_RPC_URL": url, "KEEPER_WS_URL": "ws://" + url.removeprefix("http://"),
                    "KEEPER_KEEPER__JOURNAL": str(Path(tmp.name) / "journal.jsonl")})
        cfg = load_config(config_path, environ=env)
        fund(url, load_signer(cfg.keeper, env).address)
        fund(url, MOVER)
        os.environ[key_env] = env[key_env]  # the executor reads the key from the process environment
        keeper = Keeper(cfg, dry_run=False, log=log, record=False)
        await keeper.start()
        m = Market(keeper, url, asset)
        pools = m.discover_pools(cfg)
        deepest = max(pools, key=lambda p: p.depth(url)) if pools else None
        doc: dict[str, Any] = {
            "source": shown, "fork_block": head, "chain_id": chain_id, "asset": m.symbol, "token": m.token, "decimals": m.decimals,
            "path_pct": [float(p) for p in path], "impact": impact, "feeds": m.feeds,
            "pools": [p.describe() for p in pools], "deepest_pool": deepest.describe() if deepest else None,
            "covered": sorted(n for n, a in keeper.adapters.items() if a.kind in COVERED),
            "not_covered": m.not_covered, "maker_ilks": [k.describe() for k in m.ilks],
            "perps_markets": [x.describe() for x in m.perps_markets],
            "holders": m.holders, "fork": url, "max_cycles": max_cycles, "steps": []}
        how: set[str] = set()
        auctions_seen: dict[tuple[str, int], dict[str, int]] = {}
        for i, pct in enumerate(path, 1):
            from_block = int(_local(url, "eth_blockNumber"), 16) + 1
            fund_before = insurance_funds(m)
            old = m.price()
            new = int(old * (100 + pct) // 100)
            if new <= 0:
                raise ConfigError(f"--path: step {i} would make the price non-positive")
            how.update(m.set_price(new))
            for p in pools:
                p.move_to(url, new, cfg.swap.router)
            pool_before = deepest.usd_e8(url) if deepest else None
            held_before = m.held()
            liq_from = int(_local(url, "eth_blockNumber"), 16) + 1
            run = await _cycles(keeper, m, deepest, impact, max_cycles)
            to_block = int(_local(url, "eth_blockNumber"), 16)
            events = liquidations(m, liq_from, to_block)
            pool_after = deepest.usd_e8(url) if deepest else None
            seized = sum(e["seized"] for e in events if e["collateral"].lower() == m.token.lower())
            sold = seized - max(0, m.held() - held_before)
            sold_usd = sum(e["seized"] * _answer(url, m.feeds[0], hex(e["block"])) // 10**m.decimals
                           for e in events if e["collateral"].lower() == m.token.lower())
            if seized and sold != seized:
                sold_usd = sold_usd * sold // seized
            aave_bad, bad_accounts = aave_bad_debt(m, events)
            morpho_bad = 0
            for e in events:
                if e["bad_debt"]:
                    morpho_bad += m.usd_of(e["debt_token"], e["bad_debt"], hex(e["block"])) or 0
                    bad_accounts.append(e["account"])
            mk = maker_step(m, liq_from, to_block, auctions_seen) if m.maker else None
            pp = perps_step(m, liq_from, to_block, fund_before) if m.perps else None
            maker_bad = mk["uncovered_usd_e8"] if mk else 0
            perps_bad = pp["shortfall_usd_e8"] if pp else 0
            if mk:
                bad_accounts += [f"{u['ilk']}#{u['auction']}" for u in mk["uncovered_auctions"]]
            if pp:
                bad_accounts += [str(a) for a in pp["shortfall_accounts"]]
            by_kind = {k: sum(1 for e in events if e["kind"] == k) for k in ("aave_v3", "morpho_blue")
                       if (m.aave if k == "aave_v3" else m.morpho)}
            if mk:
                by_kind["maker"] = mk["barks"]
            if pp:
                by_kind["synthetix_perps"] = pp["accounts_flagged"]
            step = {
                "step": i, "pct": float(pct), "from_block": from_block, "liquidations_from_block": liq_from,
                "to_block": to_block, "oracle_before": old, "oracle_set": new, "oracle_after": m.price(),
                "pool_price_before_usd_e8": pool_before, "pool_price_after_usd_e8": pool_after,
                "impact_pct": (pool_after - pool_before) * 100 / pool_before if pool_before else None,
                "positions_liquidated": sum(by_kind.values()), "positions_liquidated_by": by_kind,
                "accounts": sorted({e["account"] for e in events}),
                "seized_raw": seized, "sold_raw": sold, "sold_usd_e8": sold_usd,
                "volume_usd_e8": sold_usd + (mk["gem_sold_usd_e8"] if mk else 0)
                + (pp["notional_closed_usd_e8"] if pp else 0),
                "bad_debt_usd_e8": aave_bad + morpho_bad + maker_bad + perps_bad, "bad_debt_aave_usd_e8": aave_bad,
                "bad_debt_morpho_usd_e8": morpho_bad, "bad_debt_maker_usd_e8": maker_bad,
                "bad_debt_perps_usd_e8": perps_bad, "bad_debt_accounts": sorted(set(bad_accounts)),
                **run, "maker": mk, "perps": pp, "liquidations": events}
            doc["steps"].append(step)
        doc["feed_set_by"] = sorted(how)
        doc["totals"] = _totals(doc["steps"])
        doc["series"] = _series(doc["steps"])
        doc["seconds"] = round(time.monotonic() - t0, 2)
        if on_fork is not None:
            on_fork(url, doc)
        ok = True
        return doc
    finally:
        try:
            if keeper is not None:
                await keeper.close()
        finally:
            node.stop()
            tmp.cleanup()
            if ok:  # the node's log is kept only when something went wrong
                node.log_path.unlink(missing_ok=True)
            if saved_key is None:
                os.environ.pop(key_env, None)
            else:
                os.environ[key_env] = saved_key


# --- output ------------------------------------------------------------------------------------

def _usd(e8: int | None) -> str:
    return "-" if e8 is None else f"${e8 / 1e8:,.2f}"


def _maker_line(x: dict[str, Any], asset: str, decimals: int) -> str:
    return (f"maker: {x['barks']} barks, {x['takes']} takes, {x['redos']} redos, gem sold "
            f"{x['gem_sold_raw'] / 10 ** decimals:,.4f} {asset} ({_usd(x['gem_sold_usd_e8'])} all ilks), DAI raised "
            f"{_usd(x['dai_raised_usd_e8'])}, uncovered tab {_usd(x['uncovered_usd_e8'])} "
            f"({len(x['uncovered_auctions'])} auctions; debt part {_usd(x['uncovered_debt_rad'] // RAD_PER_USD_E8)}"
            f"{', some unknown' if x['uncovered_debt_unknown'] else ''}), open {len(x['open_auctions'])} auctions "
            f"(tab {_usd(x['open_tab_usd_e8'])})")


def _perps_line(x: dict[str, Any]) -> str:
    return (f"perps: {x['accounts_flagged']} accounts flagged, {x['positions_closed']} position closes "
            f"({_usd(x['notional_closed_usd_e8'])} notional), shortfall {_usd(x['shortfall_usd_e8'])} "
            f"({len(x['shortfall_accounts'])} accounts), insurance fund "
            f"{_usd(x['insurance_fund_before_wad'] // WAD_PER_USD_E8)} -> "
            f"{_usd(x['insurance_fund_after_wad'] // WAD_PER_USD_E8)}")


def table(doc: dict[str, Any]) -> str:
    lines = [f"stress {doc['asset']} path {','.join(f'{p:g}' for p in doc['path_pct'])} impact "
             f"{'on' if doc['impact'] else 'off'}, fork of {doc['source']} at block {doc['fork_block']}",
             f"feeds {', '.join(doc['feeds'])}; deepest pool {doc['deepest_pool'] or '-'}"]
    moved = [f"{k['ilk']}" for k in doc.get("maker_ilks", []) if k["moved"]]
    if moved or doc.get("perps_markets"):
        pm = ", ".join(f"{x['symbol']} ({x['id']})" for x in doc.get("perps_markets", []))
        lines.append(f"also moved: Maker ilks {', '.join(moved) or '-'} (Spotter poked); perps markets {pm or '-'}")
    lines.append(f"{'step':>4} {'move %':>7} {'oracle':>14} {'pool before':>14} {'pool after':>14} {'impact %':>9} "
                 f"{'liqs':>5} {'sold':>16} {'volume USD':>16} {'bad debt':>14} {'keeper PnL':>14} {'cycles':>6}")
    for s in doc["steps"]:
        imp = "-" if s["impact_pct"] is None else f"{s['impact_pct']:.2f}"
        lines.append(f"{s['step']:>4} {s['pct']:>7g} {s['oracle_after'] / 1e8:>14,.4f} "
                     f"{_usd(s['pool_price_before_usd_e8']):>14} {_usd(s['pool_price_after_usd_e8']):>14} {imp:>9} "
                     f"{s['positions_liquidated']:>5} {s['sold_raw'] / 10 ** doc['decimals']:>16,.4f} "
                     f"{_usd(s['volume_usd_e8']):>16} {_usd(s['bad_debt_usd_e8']):>14} {_usd(s['keeper_pnl_usd_e8']):>14} "
                     f"{s['cycles']:>6}")
        by = ", ".join(f"{k} {v}" for k, v in s["positions_liquidated_by"].items())
        lines.append(f"     liquidated: {by or '-'}; bad debt: aave {_usd(s['bad_debt_aave_usd_e8'])}, morpho "
                     f"{_usd(s['bad_debt_morpho_usd_e8'])}, maker {_usd(s['bad_debt_maker_usd_e8'])}, perps "
                     f"{_usd(s['bad_debt_perps_usd_e8'])}"
                     + (f"; fork time +{s['time_advanced_s']} s" if s["time_advanced_s"] else ""))
        if s.get("maker"):
            lines.append("     " + _maker_line(s["maker"], doc["asset"], doc["decimals"]))
        if s.get("perps"):
            lines.append("     " + _perps_line(s["perps"]))
    t = doc["totals"]
    lines.append(f"total: {t['positions_liquidated']} liquidations, sold {t['sold_raw'] / 10 ** doc['decimals']:,.4f} "
                 f"{doc['asset']} ({_usd(t['sold_usd_e8'])}) on Aave/Morpho, volume {_usd(t['volume_usd_e8'])}, "
                 f"bad debt {_usd(t['bad_debt_usd_e8'])}, keeper PnL {_usd(t['keeper_pnl_usd_e8'])}, "
                 f"{t['failed']} failed sends")
    if t.get("maker"):
        x = t["maker"]
        lines.append(f"total maker: {x['barks']} barks, {x['takes']} takes, uncovered tab {_usd(x['uncovered_usd_e8'])}, "
                     f"{x['open_auctions']} auctions still open (tab {_usd(x['open_tab_usd_e8'])})")
    if t.get("perps"):
        x = t["perps"]
        lines.append(f"total perps: {x['accounts_flagged']} accounts flagged, shortfall {_usd(x['shortfall_usd_e8'])}, "
                     f"insurance fund {_usd(x['insurance_fund_before_wad'] // WAD_PER_USD_E8)} -> "
                     f"{_usd(x['insurance_fund_after_wad'] // WAD_PER_USD_E8)}")
    capped = [str(s["step"]) for s in doc["steps"] if s["capped"]]
    if capped:
        lines.append(f"cut short at {doc['max_cycles']} cycles (still liquidating) in step(s) "
                     f"{', '.join(capped)}: raise --cycles")
    if doc["not_covered"]:
        lines.append(f"not covered by stress: {', '.join(doc['not_covered'])}")
    return "\n".join(lines)


def png(doc: dict[str, Any]) -> bytes:
    """The chart (keeper/chart.py): x = the step of the path, y = cumulative USD after it:
    volume liquidated (sold, taken, closed), bad debt created, and the keeper's realized PnL."""
    from .chart import line_chart

    ser = doc.get("series") or _series(doc["steps"])
    xs = ser["step"]
    lines = [(name, [(x, v / 1e8) for x, v in zip(xs, ser[key])])
             for name, key in (("volume liquidated", "volume_usd_e8"), ("bad debt", "bad_debt_usd_e8"),
                               ("keeper PnL", "keeper_pnl_usd_e8"))]
    moves = ", ".join(f"{s_['pct']:+g}%" for s_ in doc["steps"])
    impact = "impact on" if doc.get("impact") else "impact off"
    return line_chart(lines, title=f"keeper stress: {doc.get('asset', '')} {moves} ({impact})",
                      x_label="after step (of the price path)", y_label="cumulative USD",
                      x_format=lambda v: f"{v:.0f}" if abs(v - round(v)) < 1e-9 else "")


async def main(args: Any) -> int:
    """keeper stress --config FILE --asset SYM --path P [--impact on|off] [--fork-url URL] [--json] [--png FILE]."""
    try:
        path = parse_path(args.path)
    except ValueError as e:
        raise ConfigError(f"--path: {e}") from None
    doc = await stress(args.config, args.asset, path, impact=args.impact == "on", fork_url=args.fork_url,
                       max_cycles=args.cycles)
    if args.png:
        with open(args.png, "wb") as f:
            f.write(png(doc))
        doc["png"] = str(args.png)
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
    else:
        print(table(doc))
        if args.png:
            print(f"\nchart: {args.png} (cumulative USD after each step: volume liquidated, bad debt, keeper PnL)")
    return 0
