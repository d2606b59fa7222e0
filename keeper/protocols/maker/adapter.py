"""Maker/Sky Liquidation 2.0 adapter: bark unsafe vaults, bid in falling-price Clipper
auctions (with the keeper's Vat DAI or as a flash-take through the keeper's TakeCallee), and
redo stale auctions.

Per block: one request (Multicall3 chunks in one JSON-RPC batch) for Hole/Dirt, every ilk's
Vat/Dog/Spotter/Clipper parameters, the Clipper's active list, the keeper's Vat DAI and
`can`, and every tracked urn; one more for `sales`/`getStatus` of active auctions (only
when there are some); flash-takes are priced on the shared pool book (keeper.pricing.book,
loaded once per block for every adapter). Vaults are discovered from the Vat's `frob`
LogNote logs (backfilled in chunks, then block by block); Kick/Take/Redo/Yank logs of the
Clippers are followed in the same eth_getLogs.

Takes are sized for profit (keeper.sizing over take's `amt`, within the Clipper's rules:
a partial take must leave at least `chost` of tab):
- flash (TakeCallee): the slice is sold along the book's best route in the same
  transaction; profit = what the route pays - owe - gas. A lot whose whole sale would cost
  more than it earns is taken in its most profitable part now, the rest in later blocks.
- inventory (the keeper's Vat DAI): the gem stays in the keeper's Vat, it is never sold, so
  it is valued at the auction's oracle price (the ilk's feed price, spot * mat, the price
  the Clipper itself starts from), marked `held`; realized is measured the same way.
Both routes require the collateral to be worth at least `min_margin_pct` more than it costs
after gas.

Units: on-chain amounts in wad/ray/rad exactly as dss (math.py); money in USD e8, DAI at
`dai_usd` (default $1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ... import abi, sizing
from ...config import (Section, address, block_number, boolean, decimal, gas_fits, gas_units, label,
                       non_empty_list, show, subset_of)
from ...errors import BadResponseError, ConfigError
from ...missed import ChainLiquidation
from ...multicall import Call
from ...types import Head, Opportunity, TxPlan
from ..base import BaseAdapter, Skip, breaking_price, has_code, log_chunks, note_break, require_code
from . import math as mm
from .math import RAD, RAY, WAD


VAT = abi.load("MakerVat")
DOG = abi.load("MakerDog")
CLIP = abi.load("MakerClipper")
SPOT = abi.load("MakerSpotter")
CALC = abi.load("MakerAbacus")
JOIN = abi.load("MakerGemJoin")
CALLEE = abi.load("MakerTakeCallee")
ERC20 = abi.load("ERC20")

F_VAT_ILKS = VAT.fn("ilks")
F_URNS = VAT.fn("urns")
F_VAT_DAI = VAT.fn("dai")
F_CAN = VAT.fn("can")
F_HOPE = VAT.fn("hope")
F_LIVE = VAT.fn("live")
F_DOG_VAT = DOG.fn("vat")
F_DOG_ILKS = DOG.fn("ilks")
F_HOLE = DOG.fn("Hole")
F_DIRT = DOG.fn("Dirt")
F_BARK = DOG.fn("bark")
F_SPOT_ILKS = SPOT.fn("ilks")
F_PAR = SPOT.fn("par")
F_C_ILK, F_C_VAT, F_C_DOG, F_C_CALC, F_C_SPOT = (CLIP.fn(n) for n in ("ilk", "vat", "dog", "calc", "spotter"))
F_C_KICKS, F_C_LIST, F_C_SALES, F_C_STATUS = (CLIP.fn(n) for n in ("kicks", "list", "sales", "getStatus"))
F_C_TIP, F_C_CHIP, F_C_CHOST, F_C_TAIL, F_C_CUSP, F_C_BUF, F_C_STOPPED = (
    CLIP.fn(n) for n in ("tip", "chip", "chost", "tail", "cusp", "buf", "stopped"))
F_TAKE = CLIP.fn("take")
F_REDO = CLIP.fn("redo")
F_TAU, F_CUT, F_STEP = CALC.fn("tau"), CALC.fn("cut"), CALC.fn("step")
F_J_ILK, F_J_GEM, F_J_DEC, F_J_VAT = JOIN.fn("ilk"), JOIN.fn("gem"), JOIN.fn("dec"), JOIN.fn("vat")
F_OWNER, F_CE_VAT, F_CE_JOIN, F_CE_DAI, F_CE_ROUTER = (
    CALLEE.fn(n) for n in ("owner", "vat", "daiJoin", "dai", "router"))
F_FLASH = CALLEE.fn("flashTake")
F_SYMBOL = ERC20.fn("symbol")
EV_BARK = DOG.event("Bark")
EV_KICK, EV_TAKE, EV_REDO, EV_YANK = (CLIP.event(n) for n in ("Kick", "Take", "Redo", "Yank"))
EV_FLASH = CALLEE.event("FlashTake")
# Vat LogNote: anonymous; topic0 = the 4-byte selector left-aligned, then ilk, urn, v
FROB_TOPIC = "0x" + VAT.fn("frob").selector.hex() + "00" * 28
# vat.move(src, dst, rad) note: a Clipper's take moves `owe` from its msg.sender (the taker) to
# the vow just before its Take event, which names no taker
MOVE_TOPIC = "0x" + VAT.fn("move").selector.hex() + "00" * 28
CLIP_TOPICS = [EV_KICK.topic0, EV_TAKE.topic0, EV_REDO.topic0, EV_YANK.topic0]
NATIVE_SYMBOLS = ("WETH", "ETH")
HOP_GAS = 120_000  # expected gas of each swap hop after the first (simulation measures the real figure)
ZERO = "0x" + "00" * 20


# -- configuration ----------------------------------------------------------------------
@dataclass(frozen=True)
class IlkConfig:
    name: str
    clipper: str
    gem_join: str | None  # needed for the flash-take route


@dataclass(frozen=True)
class MakerConfig:
    kind: str
    name: str
    dog: str
    ilks: tuple[IlkConfig, ...]
    take_callee: str | None
    dai_join: str | None
    start_block: int
    min_margin_bps: int
    dai_usd_e8: int
    bark: bool
    take: bool
    redo: bool
    gas_bark: int
    gas_take: int
    gas_flash_take: int
    gas_redo: int
    gas_limit: int
    routes: tuple[str, ...] = ("inventory", "flash")
    path: str = "protocols[?]"
    enabled: bool = True


def _name(where: str, v: Any) -> str:
    s = label(where, v)
    if len(s.encode()) > 32:
        raise ConfigError(f"{where}: an ilk name is at most 32 bytes, got {show(s)}")
    return s


def parse_config(s: Section) -> MakerConfig:
    raw_ilks = s.get("ilks", lambda w, v: non_empty_list(w, v, "{ name, clipper, gem_join } tables"))
    ilks = []
    for i, t in enumerate(raw_ilks):
        sec = Section(t, f"{s.path}.ilks[{i}]")
        ilks.append(IlkConfig(name=sec.get("name", _name), clipper=sec.get("clipper", address),
                              gem_join=sec.get("gem_join", address, None)))
        sec.done()
    names = [i.name for i in ilks]
    if len(set(names)) != len(names):
        raise ConfigError(f"{s.path}.ilks: an ilk is listed twice")
    margin = s.get("min_margin_pct", decimal(minimum=0, maximum=100), Decimal("2"))
    cfg = MakerConfig(
        kind="maker",
        name=s.get("name", label),
        dog=s.get("dog", address),
        ilks=tuple(ilks),
        take_callee=s.get("take_callee", address, None),
        dai_join=s.get("dai_join", address, None),
        start_block=s.get("start_block", block_number, 0),
        min_margin_bps=int(margin * 100),
        dai_usd_e8=int(s.get("dai_usd", decimal(positive=True, maximum=10), Decimal(1)) * 10**8),
        bark=s.get("bark", boolean, True),
        take=s.get("take", boolean, True),
        redo=s.get("redo", boolean, True),
        gas_bark=s.get("gas_bark", gas_units, 350_000),
        gas_take=s.get("gas_take", gas_units, 180_000),
        gas_flash_take=s.get("gas_flash_take", gas_units, 420_000),
        gas_redo=s.get("gas_redo", gas_units, 120_000),
        gas_limit=s.get("gas_limit", gas_units, 1_500_000),
        routes=s.get("routes", subset_of("inventory", "flash"), ("inventory", "flash")),
        path=s.path,
        enabled=s.get("enabled", boolean, True),
    )
    for key in ("gas_bark", "gas_take", "gas_flash_take", "gas_redo"):
        gas_fits(s.path, getattr(cfg, key), key, cfg.gas_limit, "gas_limit")
    return cfg


# -- state ------------------------------------------------------------------------------
@dataclass(slots=True)
class Ilk:
    name: str
    id: bytes
    clipper: str
    gem_join: str | None
    gem: str = ""
    gem_symbol: str = "?"
    gem_dec: int = 18
    calc: str = ""
    curve: mm.Curve = field(default_factory=lambda: mm.Curve("unknown"))
    pip: str = ""
    # Vat
    Art: int = 0
    rate: int = 0
    spot: int = 0
    line: int = 0
    dust: int = 0
    # Spotter / Dog / Clipper
    mat: int = 0
    chop: int = 0
    hole: int = 0
    dirt: int = 0
    tip: int = 0
    chip: int = 0
    chost: int = 0
    tail: int = 0
    cusp: int = 0
    buf: int = 0
    stopped: int = 0
    active: tuple[int, ...] = ()
    can: bool = False  # the keeper has vat.hope'd this Clipper

    @property
    def conv(self) -> int:
        """wad of Vat gem per token base unit."""
        return 10 ** (18 - self.gem_dec)

    @property
    def feed_price(self) -> int:
        """The collateral's feed price [ray], as the Spotter last saw it: spot * mat."""
        return self.spot * self.mat // RAY


@dataclass(slots=True)
class Urn:
    ilk: str
    urn: str
    calldata: bytes
    ink: int = 0
    art: int = 0


@dataclass(slots=True)
class Auction:
    ilk: str
    id: int
    tab: int
    lot: int
    usr: str
    tic: int
    top: int
    price: int
    needs_redo: bool
    limit: int | None = None  # the keeper's limit [ray] at this block (None: not computed)
    limit_in_s: int | None = None  # seconds until the price reaches the limit

    @property
    def account(self) -> str:
        return f"{self.ilk}#{self.id}"


@dataclass(frozen=True, slots=True)
class MakerBark:
    ilk: str
    urn: str
    ink: int  # [wad]
    art: int  # [wad]
    dink: int  # [wad]
    dart: int  # [wad]
    tab: int  # [rad]
    coin: int  # keeper incentive [rad]
    ratio: float  # collateralization / mat
    action: str = "bark"

    def log_fields(self) -> dict[str, Any]:
        return {"action_kind": "bark", "ilk": self.ilk, "urn": self.urn, "lot": self.dink / WAD,
                "tab_dai": self.tab / RAD, "incentive_dai": self.coin / RAD,
                "collateralization_over_mat": round(self.ratio, 6)}


@dataclass(frozen=True, slots=True)
class MakerTake:
    ilk: str
    id: int
    route: str  # "inventory" (the keeper's Vat DAI) | "flash" (TakeCallee)
    gem_symbol: str
    price: int  # current auction price [ray]
    limit: int  # the keeper's limit for this slice = take's max [ray]
    amt: int  # take's amt [wad]
    slice: int  # expected collateral [wad]
    owe: int  # expected DAI paid [rad]
    proceeds: int  # DAI [wad] the slice is worth: flash, what its swap route pays; held, slice at `mark`
    fee_tier: int  # flash: the first hop's fee tier (0: held, no swap)
    min_profit: int  # flash route: on-chain minimum profit [wad]
    gas_dai: int  # gas priced in DAI [wad], inside the limit
    lot: int = 0  # the auction's lot when sized [wad]: slice < lot is a partial take
    tab: int = 0  # the auction's tab when sized [rad]
    held: bool = False  # inventory: the gem is kept, valued at `mark` (never sold)
    mark: int = 0  # held: the oracle price [ray] the gem is valued at (the ilk's feed price)
    swap_route: str = ""  # flash: the route, e.g. "WETH >v3 0.3%> DAI"
    max_size: bool = False  # the largest take the Clipper and the capital allow

    @property
    def partial(self) -> bool:
        """The auction goes on after this take (some lot and some tab are left)."""
        return self.slice < self.lot and self.owe < self.tab

    def log_fields(self) -> dict[str, Any]:
        out = {"action_kind": "take", "route": self.route, "ilk": self.ilk, "auction": self.id,
               "price": self.price / RAY, "limit": self.limit / RAY, "slice": self.slice / WAD,
               "lot": self.lot / WAD, "partial": self.partial, "owe_dai": self.owe / RAD}
        if self.held:
            out.update(held=True, mark_price=self.mark / RAY, held_value_dai=self.proceeds / WAD)
        else:
            out.update(proceeds_dai=self.proceeds / WAD, swap_fee_tier=self.fee_tier, swap_route=self.swap_route)
        return out


@dataclass(frozen=True, slots=True)
class _FlashCtx:
    """What sizing a flash-take needs besides the pool book: the auction and the ilk at the
    block it was read (so `resize` re-sizes without I/O)."""

    block: int
    account: str
    ilk: str
    id: int
    lot: int  # [wad]
    tab: int  # [rad]
    price: int  # [ray]
    chost: int  # [rad]
    conv: int  # wad per token base unit
    gem: str
    gem_symbol: str
    gem_join: str
    clipper: str
    wei_per_gas: int  # conservative gas price [wei]
    native_usd_e8: int


@dataclass(frozen=True, slots=True)
class _FlashSize:
    amt: int  # [wad]
    size: mm.TakeSize
    tokens: int  # gem base units sold
    route: Any  # keeper.pricing.book.Route
    owe_wad: int  # DAI joined to pay owe [wad]
    gas_units: int
    gas_dai: int  # [wad]
    limit: int  # the most this slice may cost per unit [ray]
    profit: int  # route out - owe - gas [DAI wad]


@dataclass(frozen=True, slots=True)
class MakerRedo:
    ilk: str
    id: int
    tab: int
    lot: int
    coin: int

    def log_fields(self) -> dict[str, Any]:
        return {"action_kind": "redo", "ilk": self.ilk, "auction": self.id, "tab_dai": self.tab / RAD,
                "incentive_dai": self.coin / RAD}


class _Tx:
    """What one transaction's logs have shown so far: Vat moves (src, dst, rad) not yet matched
    to a Take, and Kicks by (clipper, id) not yet matched to a Bark."""

    __slots__ = ("hash", "moves", "kicks")

    def __init__(self, h: str):
        self.hash = h
        self.moves: list[tuple[str, str, int]] = []
        self.kicks: dict[tuple[str, int], dict[str, Any]] = {}


class _TxLiquidations:
    """The records found in one chunk of logs, and the transaction being read (the logs of a
    transaction are contiguous and in one block, so in one chunk)."""

    def __init__(self) -> None:
        self.records: list[ChainLiquidation] = []
        self.cur = _Tx("")

    def tx(self, h: str) -> _Tx:
        if h != self.cur.hash:
            self.cur = _Tx(h)
        return self.cur

    def add(self, c: ChainLiquidation) -> None:
        self.records.append(c)


def _ilk_name(b: bytes) -> str:
    return b.rstrip(b"\0").decode("utf-8", "replace")


def _addr(word_hex: str) -> str:
    return abi.to_checksum("0x" + word_hex[-40:])


class Adapter(BaseAdapter):
    kind = "maker"
    cfg: MakerConfig

    def __init__(self, cfg: MakerConfig, **deps: Any):
        super().__init__(cfg, **deps)
        self.vat = ""
        self.spotter = ""
        self.dai = ""
        self.dai_join = ""
        self.ilks: dict[str, Ilk] = {}
        self.urns: dict[tuple[str, str], Urn] = {}
        self.auctions: dict[tuple[str, int], Auction] = {}
        self.Hole = 0
        self.Dirt = 0
        self.vat_dai = 0  # the keeper's Vat DAI [rad]
        self.events: list[dict[str, Any]] = []  # recent Kick/Take/Redo/Yank, newest last
        # "profit": takes sized for the largest net profit; "max": the largest take the Clipper
        # and the capital allow (a baseline); set from keeper.sizing where the keeper is assembled
        self.sizing = "profit"
        self._flash_ctx: dict[str, _FlashCtx] = {}  # auction account -> what resize() needs (this block)
        self._symbols: dict[str, str] = {}  # token (lower) -> symbol, for route descriptions
        self._liquidations: list[ChainLiquidation] = []  # barks and takes seen by sync, not yet drained

    @property
    def accounts(self) -> set[tuple[str, str]]:
        return set(self.urns)

    @property
    def dai_key(self) -> str:
        """Inventory key of the keeper's internal DAI (amounts in rad)."""
        return f"{self.vat.lower()}:dai"

    # -- start-up ---------------------------------------------------------------------
    async def start(self) -> None:
        p = self.cfg.path
        await require_code(self.rpc, self.cfg.dog, f"{p}.dog")
        (ok, d), (ok2, d2) = await self.mc.run([Call(self.cfg.dog, F_DOG_VAT.encode()), Call(self.cfg.dog, F_HOLE.encode())])
        if not (ok and len(d) == 32 and ok2 and len(d2) == 32):
            raise ConfigError(f"{p}.dog: {self.cfg.dog} is not a Liquidation 2.0 Dog (no vat()/Hole())")
        self.vat = abi.to_checksum(F_DOG_VAT.decode_one(d))
        for i, ic in enumerate(self.cfg.ilks):
            self.ilks[ic.name] = await self._load_ilk(i, ic)
        if self.cfg.take_callee:
            await self._check_callee()
        elif self.cfg.dai_join:
            (ok, d), = await self.mc.run([Call(self.cfg.dai_join, F_CE_DAI.encode())])
            if not ok or len(d) != 32:
                raise ConfigError(f"{self.cfg.path}.dai_join: {self.cfg.dai_join} is not a DaiJoin (no dai())")
            self.dai_join, self.dai = self.cfg.dai_join, abi.to_checksum(F_CE_DAI.decode_one(d))
        await self.refresh_params()
        await self._watch_tokens()
        self.log.info("maker_ready", vat=self.vat, dog=self.cfg.dog, ilks={n: k.clipper for n, k in self.ilks.items()},
                      take_callee=self.cfg.take_callee, min_margin_pct=self.cfg.min_margin_bps / 100)

    async def _watch_tokens(self) -> None:
        """Register the gems and DAI with the shared pool book (flash-takes sell gem for DAI),
        and learn the symbols a route may pass through (for the logs)."""
        gems = [k.gem for k in self.ilks.values() if k.gem]
        for k in self.ilks.values():
            if k.gem:
                self._symbols[k.gem.lower()] = k.gem_symbol
        if self.dai:
            self._symbols[self.dai.lower()] = "DAI"
        if self.swaps is None or not self.dai or not gems:
            return
        self.swaps.watch(gems + [self.dai])
        others = [c for c in getattr(self.swaps, "connectors", ()) if c.lower() not in self._symbols]
        if others:
            res = await self.mc.run([Call(c, F_SYMBOL.encode()) for c in others])
            for c, (ok, d) in zip(others, res):
                try:
                    self._symbols[c.lower()] = F_SYMBOL.decode_one(d) if ok else c[:8]
                except Exception:
                    self._symbols[c.lower()] = c[:8]

    def symbol(self, token: str) -> str:
        return self._symbols.get(token.lower(), token[:8])

    async def _load_ilk(self, i: int, ic: IlkConfig) -> Ilk:
        where = f"{self.cfg.path}.ilks[{i}]"
        ilk = Ilk(name=ic.name, id=ic.name.encode().ljust(32, b"\0"), clipper=ic.clipper, gem_join=ic.gem_join)
        (ok, d), = await self.mc.run([Call(self.vat, F_VAT_ILKS.encode(ilk.id))])
        if not ok or len(d) != 160:
            raise ConfigError(f"{where}: the Dog's vat() {self.vat} is not a Maker Vat")
        if F_VAT_ILKS.decode(d)[1] == 0:
            raise ConfigError(f"{where}.name: ilk {ic.name!r} does not exist in the Vat {self.vat} (rate is 0)")
        if not await has_code(self.rpc, ic.clipper):
            raise ConfigError(f"{where}.clipper: no contract at {ic.clipper} on this chain")
        fns = (F_C_ILK, F_C_VAT, F_C_DOG, F_C_CALC, F_C_SPOT, F_C_KICKS)
        res = await self.mc.run([Call(ic.clipper, f.encode()) for f in fns] + [Call(self.cfg.dog, F_DOG_ILKS.encode(ilk.id))])
        if not all(ok and len(d) == 32 for ok, d in res[:6]):
            raise ConfigError(f"{where}.clipper: {ic.clipper} is not a Clipper (no ilk()/vat()/dog()/calc()/kicks())")
        c_ilk = F_C_ILK.decode_one(res[0][1])
        if c_ilk != ilk.id:
            raise ConfigError(f"{where}.clipper: {ic.clipper} is the Clipper of {_ilk_name(c_ilk)!r}, not {ic.name!r}")
        c_vat, c_dog = abi.to_checksum(F_C_VAT.decode_one(res[1][1])), abi.to_checksum(F_C_DOG.decode_one(res[2][1]))
        if c_vat != self.vat or c_dog != self.cfg.dog:
            raise ConfigError(f"{where}.clipper: {ic.clipper} belongs to vat {c_vat} / dog {c_dog}, "
                              f"not the configured dog {self.cfg.dog} (vat {self.vat})")
        ok, d = res[6]
        dog_clip = abi.to_checksum(F_DOG_ILKS.decode(d)[0]) if ok else ZERO
        if dog_clip != ic.clipper:
            raise ConfigError(f"{where}.clipper: the Dog liquidates {ic.name!r} through {dog_clip}, not {ic.clipper}")
        ilk.calc = abi.to_checksum(F_C_CALC.decode_one(res[3][1]))
        spotter = abi.to_checksum(F_C_SPOT.decode_one(res[4][1]))
        self.spotter = spotter
        res = await self.mc.run([Call(ilk.calc, F_TAU.encode()), Call(ilk.calc, F_CUT.encode()),
                                 Call(ilk.calc, F_STEP.encode()), Call(spotter, F_SPOT_ILKS.encode(ilk.id))])
        (ok_t, t), (ok_c, c), (ok_s, s), (ok_p, pd) = res
        if ok_t and len(t) == 32:
            ilk.curve = mm.Curve("linear", tau=F_TAU.decode_one(t))
        elif ok_c and ok_s and len(c) == 32 and len(s) == 32:
            ilk.curve = mm.Curve("stairstep", cut=F_CUT.decode_one(c), step=F_STEP.decode_one(s))
        else:
            self.log.warning("unknown_price_curve", ilk=ic.name, calc=ilk.calc)
        if ok_p and len(pd) == 64:
            ilk.pip = abi.to_checksum(F_SPOT_ILKS.decode(pd)[0])
        if ic.gem_join:
            res = await self.mc.run([Call(ic.gem_join, f.encode()) for f in (F_J_ILK, F_J_GEM, F_J_DEC, F_J_VAT)])
            if not all(ok and len(d) == 32 for ok, d in res):
                raise ConfigError(f"{where}.gem_join: {ic.gem_join} is not a GemJoin (no ilk()/gem()/dec()/vat())")
            if F_J_ILK.decode_one(res[0][1]) != ilk.id:
                raise ConfigError(f"{where}.gem_join: {ic.gem_join} joins {_ilk_name(F_J_ILK.decode_one(res[0][1]))!r}, not {ic.name!r}")
            ilk.gem = abi.to_checksum(F_J_GEM.decode_one(res[1][1]))
            ilk.gem_dec = F_J_DEC.decode_one(res[2][1])
            (ok, sym), = await self.mc.run([Call(ilk.gem, F_SYMBOL.encode())])
            if ok:
                try:
                    ilk.gem_symbol = F_SYMBOL.decode_one(sym)
                except Exception:
                    ilk.gem_symbol = ic.name.split("-")[0]
        else:
            ilk.gem_symbol = ic.name.split("-")[0]
        return ilk

    async def _check_callee(self) -> None:
        where = f"{self.cfg.path}.take_callee"
        addr = self.cfg.take_callee
        if not await has_code(self.rpc, addr):
            raise ConfigError(f"{where}: no contract at {addr} on this chain (deploy the TakeCallee first)")
        fns = (F_OWNER, F_CE_VAT, F_CE_JOIN, F_CE_DAI, F_CE_ROUTER)
        res = await self.mc.run([Call(addr, f.encode()) for f in fns])
        if not all(ok and len(d) == 32 for ok, d in res):
            raise ConfigError(f"{where}: {addr} is not a TakeCallee (no owner()/vat()/daiJoin()/dai()/router())")
        owner, vat, join, dai, _router = (abi.to_checksum(f.decode_one(d)) for f, (_, d) in zip(fns, res))
        if vat != self.vat:
            raise ConfigError(f"{where}: {addr} pays into vat {vat}, not {self.vat}")
        if self.keeper and owner != abi.to_checksum(self.keeper):
            raise ConfigError(f"{where}: {addr} is owned by {owner}, not the keeper {self.keeper}")
        missing = [k.name for k in self.ilks.values() if not k.gem_join]
        if missing:
            raise ConfigError(f"{self.cfg.path}.ilks: gem_join is needed for the flash-take route (missing for {missing[0]!r})")
        self.dai_join, self.dai = join, dai

    # -- discovery --------------------------------------------------------------------
    async def sync(self, head: Head) -> int:
        """frob notes of the Vat (new urns), the Clippers' auction events, and for the record
        of every liquidation on chain (drain_liquidations) the Dog's Bark events and the Vat's
        move notes (who paid each take): one eth_getLogs per chunk."""
        before = len(self.urns)
        by_clip = {k.clipper.lower(): k for k in self.ilks.values()}
        addresses = [self.vat] + [k.clipper for k in self.ilks.values()] + [self.cfg.dog]
        topics = [[FROB_TOPIC] + CLIP_TOPICS + [EV_BARK.topic0, MOVE_TOPIC]]
        async for last, logs in log_chunks(self.rpc, addresses, topics, self.synced_to + 1,
                                           head.number, self.chunk_blocks, self.log):
            found = _TxLiquidations()
            for lg in logs:
                try:
                    self._on_log(lg, by_clip)
                    self._on_liquidation_log(lg, by_clip, found)
                except (KeyError, IndexError, TypeError, ValueError):
                    raise BadResponseError("eth_getLogs: malformed Vat/Clipper/Dog log") from None
            self._liquidations += found.records  # only whole chunks: a failed chunk is read again
            self.synced_to = last
        return len(self.urns) - before

    def drain_liquidations(self) -> list[ChainLiquidation]:
        """Every bark and take of the watched ilks seen on chain by sync since the last drain,
        in block/log order (the keeper's own included)."""
        out = sorted(self._liquidations, key=lambda c: (c.block, c.log_index))
        self._liquidations = []
        return out

    def price_update_targets(self) -> set[str]:
        """The Spotter (poke: the Vat's spot follows the pip) and the ilks' pips (an OSM's
        poke); keeper replay also follows a pip's src() feed."""
        return {a for a in (self.spotter, *(k.pip for k in self.ilks.values())) if a and int(a, 16)}

    def liquidation_log_filter(self) -> tuple[list[str], list[str]]:
        return ([self.vat] + [k.clipper for k in self.ilks.values()] + [self.cfg.dog],
                [MOVE_TOPIC, EV_KICK.topic0, EV_BARK.topic0, EV_TAKE.topic0])

    def liquidations_from_logs(self, logs: list[dict[str, Any]]) -> list[ChainLiquidation]:
        by_clip = {k.clipper.lower(): k for k in self.ilks.values()}
        found = _TxLiquidations()
        for lg in logs:
            self._on_liquidation_log(lg, by_clip, found)
        return found.records

    def liquidator_addresses(self) -> set[str]:
        """The keeper's own contracts that appear as a liquidator (lowercase): the TakeCallee,
        the payer of flash-takes. (The keeper's address itself barks and takes with Vat DAI.)"""
        return {self.cfg.take_callee.lower()} if self.cfg.take_callee else set()

    def _on_liquidation_log(self, lg: dict[str, Any], by_clip: dict[str, Ilk], found: _TxLiquidations) -> None:
        """Barks and takes as ChainLiquidation records. Within one transaction the logs come in
        execution order: a Clipper's Kick before the Dog's Bark that caused it; the Vat's
        move note of `owe` from the taker (the Clipper's msg.sender) before the Take."""
        topics = lg["topics"]
        if not topics:
            return
        src, t0 = lg["address"].lower(), topics[0]
        tx = found.tx(lg["transactionHash"])
        if t0 == MOVE_TOPIC and src == self.vat.lower():
            tx.moves.append((_addr(topics[1]).lower(), _addr(topics[2]).lower(), int(topics[3], 16)))
        elif t0 == EV_KICK.topic0 and src in by_clip:
            ev = EV_KICK.decode(lg)
            tx.kicks[(src, ev["id"])] = ev
        elif t0 == EV_BARK.topic0 and src == self.cfg.dog.lower():
            ev = EV_BARK.decode(lg)
            clip = ev["clip"].lower()
            k = by_clip.get(clip)
            if k is None:
                return  # an ilk this adapter does not watch
            kick = tx.kicks.pop((clip, ev["id"]), None)
            detail: dict[str, Any] = {
                "ilk": k.name, "urn": abi.to_checksum(ev["urn"]), "auction": f"{k.name}#{ev['id']}", "id": ev["id"],
                "clipper": k.clipper, "ink": ev["ink"], "art": ev["art"], "due": ev["due"]}
            if kick is not None:
                detail.update(tab=kick["tab"], lot=kick["lot"], top=kick["top"], coin=kick["coin"],
                              kpr=abi.to_checksum(kick["kpr"]))
            found.add(ChainLiquidation(
                protocol=self.name, kind="bark", account=abi.to_checksum(ev["urn"]),
                liquidator=kick["kpr"].lower() if kick is not None else "", block=int(lg["blockNumber"], 16),
                tx_hash=lg["transactionHash"], log_index=int(lg["logIndex"], 16), detail=detail,
                value_usd_e8=self._dai_rad_to_usd_e8(kick["coin"]) if kick is not None else None))
        elif t0 == EV_TAKE.topic0 and src in by_clip:
            k = by_clip[src]
            ev = EV_TAKE.decode(lg)
            owe, price = ev["owe"], ev["price"]
            # the Clipper's vat.move(msg.sender, vow, owe) is the last Vat move before its Take
            payer = None
            for i in range(len(tx.moves) - 1, -1, -1):
                if tx.moves[i][2] == owe:
                    payer = tx.moves.pop(i)
                    break
            slice_ = owe // price if price else 0
            mark = k.feed_price  # the oracle price as last read (the mark the keeper values held takes at)
            detail = {"ilk": k.name, "id": ev["id"], "clipper": k.clipper, "usr": abi.to_checksum(ev["usr"]),
                      "max": ev["max"], "price": price, "owe": owe, "slice": slice_, "tab_left": ev["tab"],
                      "lot_left": ev["lot"], "mark": mark}
            if payer is None:
                detail["needs_sender"] = True
            else:
                detail["vow"] = abi.to_checksum(payer[1])
            found.add(ChainLiquidation(
                protocol=self.name, kind="take", account=f"{k.name}#{ev['id']}",
                liquidator=payer[0] if payer is not None else "", block=int(lg["blockNumber"], 16),
                tx_hash=lg["transactionHash"], log_index=int(lg["logIndex"], 16), detail=detail,
                value_usd_e8=self._dai_rad_to_usd_e8(slice_ * mark - owe) if mark > 0 else None))

    def _on_log(self, lg: dict[str, Any], by_clip: dict[str, Ilk]) -> None:
        topics = lg["topics"]
        src = lg["address"].lower()
        if topics[0] == FROB_TOPIC and src == self.vat.lower():
            name = _ilk_name(bytes.fromhex(topics[1][2:]))
            if name in self.ilks:
                urn = _addr(topics[2])
                key = (name, urn)
                if key not in self.urns:
                    self.urns[key] = Urn(name, urn, F_URNS.encode(self.ilks[name].id, urn))
            return
        ilk = by_clip.get(src)
        if ilk is None:
            return
        for ev, kind in ((EV_KICK, "kick"), (EV_TAKE, "take"), (EV_REDO, "redo"), (EV_YANK, "yank")):
            if topics[0] == ev.topic0:
                d = ev.decode(lg)
                d.update(kind=kind, ilk=ilk.name, block=int(lg["blockNumber"], 16))
                self.events.append(d)
                del self.events[:-200]
                self.log.debug("auction_event", **{k: v for k, v in d.items() if isinstance(v, (int, str))})
                return

    # -- refresh ----------------------------------------------------------------------
    def _param_calls(self) -> list[Call]:
        calls = [Call(self.cfg.dog, F_HOLE.encode()), Call(self.cfg.dog, F_DIRT.encode())]
        for k in self.ilks.values():
            c = k.clipper
            calls += [Call(self.vat, F_VAT_ILKS.encode(k.id)), Call(self.cfg.dog, F_DOG_ILKS.encode(k.id)),
                      Call(self.spotter, F_SPOT_ILKS.encode(k.id)), Call(c, F_C_LIST.encode()),
                      Call(c, F_C_TIP.encode()), Call(c, F_C_CHIP.encode()), Call(c, F_C_CHOST.encode()),
                      Call(c, F_C_TAIL.encode()), Call(c, F_C_CUSP.encode()), Call(c, F_C_BUF.encode()),
                      Call(c, F_C_STOPPED.encode())]
            if k.curve.kind == "linear":
                calls.append(Call(k.calc, F_TAU.encode()))
            elif k.curve.kind == "stairstep":
                calls += [Call(k.calc, F_CUT.encode()), Call(k.calc, F_STEP.encode())]
            if self.keeper:
                calls.append(Call(self.vat, F_CAN.encode(self.keeper, c)))
        if self.keeper:
            calls.append(Call(self.vat, F_VAT_DAI.encode(self.keeper)))
        return calls

    def _apply_params(self, res: list[tuple[bool, bytes]]) -> int:
        def u(i: int, f: abi.Function) -> int:
            ok, d = res[i]
            if not ok or len(d) < 32:
                raise BadResponseError(f"{f.name}() failed")
            return f.decode(d)[0]

        self.Hole, self.Dirt = u(0, F_HOLE), u(1, F_DIRT)
        i = 2
        for k in self.ilks.values():
            ok, d = res[i]
            if not ok:
                raise BadResponseError(f"vat.ilks({k.name}) failed")
            k.Art, k.rate, k.spot, k.line, k.dust = F_VAT_ILKS.decode(d)
            ok, d = res[i + 1]
            _clip, k.chop, k.hole, k.dirt = F_DOG_ILKS.decode(d) if ok else (ZERO, 0, 0, 0)
            ok, d = res[i + 2]
            k.mat = F_SPOT_ILKS.decode(d)[1] if ok and len(d) == 64 else 0
            ok, d = res[i + 3]
            k.active = tuple(F_C_LIST.decode_one(d)) if ok else ()
            k.tip, k.chip, k.chost = u(i + 4, F_C_TIP), u(i + 5, F_C_CHIP), u(i + 6, F_C_CHOST)
            k.tail, k.cusp, k.buf, k.stopped = u(i + 7, F_C_TAIL), u(i + 8, F_C_CUSP), u(i + 9, F_C_BUF), u(i + 10, F_C_STOPPED)
            i += 11
            if k.curve.kind == "linear":
                k.curve = mm.Curve("linear", tau=u(i, F_TAU))
                i += 1
            elif k.curve.kind == "stairstep":
                k.curve = mm.Curve("stairstep", cut=u(i, F_CUT), step=u(i + 1, F_STEP))
                i += 2
            if self.keeper:
                k.can = u(i, F_CAN) == 1
                i += 1
        if self.keeper:
            self.vat_dai = u(i, F_VAT_DAI)
            i += 1
            self.inventory = {self.dai_key: self.vat_dai}
        return i

    async def refresh_params(self, block: int | str = "latest") -> None:
        self._apply_params(await self.mc.run(self._param_calls(), block))

    async def refresh(self, head: Head) -> list[Urn]:
        """One batched read of parameters, auctions list, keeper DAI and every urn. Returns
        the unsafe urns."""
        urns = list(self.urns.values())
        res = await self.mc.run(self._param_calls() + [Call(self.vat, u.calldata) for u in urns], head.number)
        i = self._apply_params(res)
        unsafe = []
        for u, (ok, d) in zip(urns, res[i:]):
            if not ok or len(d) != 64:
                continue
            u.ink, u.art = F_URNS.decode(d)
            k = self.ilks[u.ilk]
            if mm.is_unsafe(u.ink, u.art, k.spot, k.rate):
                unsafe.append(u)
        await self._refresh_auctions(head)
        return unsafe

    async def _refresh_auctions(self, head: Head) -> None:
        ids = [(k, i) for k in self.ilks.values() for i in k.active]
        auctions: dict[tuple[str, int], Auction] = {}
        if ids:
            calls = []
            for k, i in ids:
                calls += [Call(k.clipper, F_C_SALES.encode(i)), Call(k.clipper, F_C_STATUS.encode(i))]
            res = await self.mc.run(calls, head.number)
            for n, (k, i) in enumerate(ids):
                (ok, s), (ok2, st) = res[2 * n], res[2 * n + 1]
                if not (ok and ok2):
                    continue
                _pos, tab, lot, usr, tic, top = F_C_SALES.decode(s)
                redo, price, _lot, _tab = F_C_STATUS.decode(st)
                if usr == ZERO or int(usr, 16) == 0:
                    continue
                # a take lands in the next block: price it at that block's expected time (the
                # price only falls with time, and `max` caps what a take pays if it lands sooner)
                later = k.curve.price(top, head.timestamp + self.block_time_s - tic) if not redo else None
                if later is not None and 0 < later < price:
                    price = later
                auctions[(k.name, i)] = Auction(k.name, i, tab, lot, abi.to_checksum(usr), tic, top, price, bool(redo))
        self.auctions = auctions

    # -- opportunities ----------------------------------------------------------------
    @staticmethod
    def _wei_per_gas(head: Head) -> int:
        """Gas price the limits are computed with: conservatively 2 x base fee + 1 gwei."""
        return 2 * head.base_fee_wei + 10**9

    def _gas_dai(self, gas_units: int, wei_per_gas: int, native_usd_e8: int) -> int:
        """Gas in DAI [wad], at `wei_per_gas` and the ETH feed."""
        return gas_units * wei_per_gas * native_usd_e8 // self.cfg.dai_usd_e8

    def _gas_dai_wad(self, head: Head, gas_units: int) -> int:
        return self._gas_dai(gas_units, self._wei_per_gas(head), self.native_price_usd_e8() or 0)

    def _dai_rad_to_usd_e8(self, rad: int) -> int:
        return rad * self.cfg.dai_usd_e8 // RAD

    def _dai_wad_to_usd_e8(self, wad: int) -> int:
        return wad * self.cfg.dai_usd_e8 // WAD

    async def opportunities(self, head: Head) -> list[Opportunity]:
        unsafe = await self.refresh(head)
        self.last_skips = []
        opps: list[Opportunity] = []
        if self.cfg.bark:
            opps += self._barks(head, unsafe)
        if self.cfg.redo:
            opps += self._redos(head)
        if self.cfg.take:
            opps += await self._takes(head)
        self.last_opportunities = opps
        return opps

    def _barks(self, head: Head, unsafe: list[Urn]) -> list[Opportunity]:
        out = []
        Dirt = self.Dirt
        dirt = {k.name: k.dirt for k in self.ilks.values()}
        kpr = self.keeper or ZERO
        # the riskiest first: they take the room under Hole / hole first
        unsafe.sort(key=lambda u: mm.collateralization_over_mat(u.ink, u.art, self.ilks[u.ilk].spot, self.ilks[u.ilk].rate))
        for u in unsafe:
            k = self.ilks[u.ilk]
            ratio = mm.collateralization_over_mat(u.ink, u.art, k.spot, k.rate)
            if k.stopped >= 1:
                self.last_skips.append(Skip(u.urn, "clipper_stopped", {"ilk": k.name, "stopped": k.stopped}))
                continue
            size = mm.bark_size(u.ink, u.art, k.rate, k.dust, k.chop, self.Hole, Dirt, k.hole, dirt[k.name])
            if isinstance(size, str):
                self.last_skips.append(Skip(u.urn, "bark_impossible", {"ilk": k.name, "revert": size}))
                continue
            Dirt += size.tab
            dirt[k.name] += size.tab
            coin = mm.incentive(k.tip, k.chip, size.tab)
            detail = MakerBark(k.name, u.urn, u.ink, u.art, size.dink, size.dart, size.tab, coin, ratio)
            plan = TxPlan(to=self.cfg.dog, data=F_BARK.encode(k.id, u.urn, kpr), gas_limit=self.cfg.gas_limit,
                          description=f"bark {k.name} {u.urn}")
            out.append(Opportunity(
                protocol=self.name, kind=self.kind, account=u.urn, block=head.number,
                gross_profit_usd_e8=self._dai_rad_to_usd_e8(coin), gas_units=self.cfg.gas_bark, plan=plan,
                detail=detail, risk_e18=max(0, WAD - int(ratio * WAD))))
        return out

    def _redos(self, head: Head) -> list[Opportunity]:
        out = []
        kpr = self.keeper or ZERO
        for a in self.auctions.values():
            if not a.needs_redo:
                continue
            k = self.ilks[a.ilk]
            if k.stopped >= 2:
                self.last_skips.append(Skip(a.account, "clipper_stopped", {"stopped": k.stopped}))
                continue
            coin = mm.redo_incentive(k.tip, k.chip, a.tab, a.lot, k.feed_price, k.chost)
            if coin == 0:
                self.last_skips.append(Skip(a.account, "redo_pays_nothing", {"tab_dai": a.tab / RAD}))
                continue
            plan = TxPlan(to=k.clipper, data=F_REDO.encode(a.id, kpr), gas_limit=self.cfg.gas_limit,
                          description=f"redo {a.account}")
            out.append(Opportunity(
                protocol=self.name, kind=self.kind, account=a.account, block=head.number,
                gross_profit_usd_e8=self._dai_rad_to_usd_e8(coin), gas_units=self.cfg.gas_redo, plan=plan,
                detail=MakerRedo(a.ilk, a.id, a.tab, a.lot, coin)))
        return out

    async def _takes(self, head: Head) -> list[Opportunity]:
        self._flash_ctx = {}
        live = [a for a in self.auctions.values() if not a.needs_redo and a.price > 0 and self.ilks[a.ilk].stopped < 3]
        if not live:
            return []
        flash = bool(self.cfg.take_callee) and "flash" in self.cfg.routes and bool(self.dai)
        book = await self.swaps.book(head.number) if flash and self.swaps is not None else None
        out: list[Opportunity] = []
        for a in live:
            k = self.ilks[a.ilk]
            limits: list[int] = []
            if self.keeper and "inventory" in self.cfg.routes:
                inv, limit = self._inventory_take(head, a, k)
                limits.append(limit)
                out += inv
            if flash and k.gem and k.gem_join:
                ctx = _FlashCtx(head.number, a.account, k.name, a.id, a.lot, a.tab, a.price, k.chost, k.conv, k.gem,
                                k.gem_symbol, k.gem_join, k.clipper, self._wei_per_gas(head),
                                self.native_price_usd_e8() or 0)
                opp, limit = self._flash_take(ctx, book) if book is not None else (None, None)
                if limit is None:
                    self.last_skips.append(Skip(a.account, "no_swap_route", {
                        "route": "flash", "gem": k.gem_symbol, **({} if book is not None else {"why": "no swap venue configured"})}))
                else:
                    limits.append(limit)
                if opp is not None:
                    self._flash_ctx[a.account] = ctx
                    out.append(opp)
            a.limit = max(limits, default=0) or None
            if a.limit:
                until = k.curve.seconds_until(a.top, a.limit)
                a.limit_in_s = None if until is None else max(0, until - (head.timestamp - a.tic))
            else:
                a.limit_in_s = None
        return out

    # -- take sizing (pure: no I/O) ---------------------------------------------------
    def _search(self, evaluate: Any, lo: int, hi: int, whole: int) -> sizing.Best | None:
        """The best take for `evaluate(amt) -> (profit, value) | None` over amt in [lo, hi]
        and the whole lot; with sizing = "max", the largest that is allowed."""
        if self.sizing == "max":
            for amt in (whole, hi):
                r = evaluate(amt)
                if r is not None:
                    return sizing.Best(amt, r[0], r[1], 1)
            return None
        return sizing.maximize(evaluate, lo, hi, extra=(whole,))

    def _inventory_take(self, head: Head, a: Auction, k: Ilk) -> tuple[list[Opportunity], int]:
        """The take paid with the keeper's Vat DAI: the gem stays in the keeper's Vat (it is
        never sold), so it is valued at the auction's oracle price (the ilk's feed price,
        spot * mat: what the Clipper itself prices the collateral at), not at a swap quote.
        Profit = slice x mark - owe - gas, which only grows with the size: the largest take
        the Vat DAI and the chost rule allow. Returns (opportunities, this route's limit)."""
        mark = k.feed_price
        if mark <= 0:
            self.last_skips.append(Skip(a.account, "no_oracle_price", {"route": "inventory", "ilk": k.name}))
            return [], 0
        gas_dai = self._gas_dai_wad(head, self.cfg.gas_take)
        gas_rad = gas_dai * RAY
        margin = self.cfg.min_margin_bps
        capital = self.vat_dai
        full = mm.full_slice(a.lot, a.tab, a.price)
        limit_all = mm.limit_price(full * mark // RAY, gas_dai, full, margin)  # with unlimited DAI
        if a.price > limit_all:
            return [], limit_all  # not yet: the price is still above what the collateral is worth

        def evaluate(amt: int) -> tuple[int, mm.TakeSize] | None:
            size = mm.take_size(a.lot, a.tab, amt, a.price, k.chost)
            if isinstance(size, str) or size.slice == 0 or size.owe > capital:
                return None
            value = size.slice * mark  # [rad]
            if (value - gas_rad) * 10_000 < size.owe * (10_000 + margin):
                return None
            return value - size.owe - gas_rad, size

        hi = min(a.lot, capital // a.price, a.tab // a.price + 1)
        best = self._search(evaluate, max(1, hi >> 12), hi, a.lot) if hi > 0 else None
        if best is None:
            why = mm.take_size(a.lot, a.tab, max(hi, 1), a.price, k.chost)
            self.last_skips.append(Skip(a.account, "no_inventory", {
                "route": "inventory", "vat_dai": capital / RAD, "why": why if isinstance(why, str) else ""}))
            return [], limit_all
        size: mm.TakeSize = best.value  # type: ignore[assignment]
        amt = best.size
        value = size.slice * mark // RAY  # [wad]
        # the most this slice may cost per unit [ray], from the exact value (>= price: it paid the margin)
        limit = (size.slice * mark - gas_rad) * 10_000 // (size.slice * (10_000 + margin))
        pre = () if k.can else (TxPlan(to=self.vat, data=F_HOPE.encode(k.clipper), gas_limit=100_000,
                                       description=f"vat.hope({k.name} Clipper {k.clipper})"),)
        detail = MakerTake(k.name, a.id, "inventory", k.gem_symbol, a.price, limit, amt, size.slice, size.owe, value,
                           0, 0, gas_dai, lot=a.lot, tab=a.tab, held=True, mark=mark,
                           max_size=size.lot_left == 0 or size.tab_left == 0 or amt >= capital // a.price)
        plan = TxPlan(to=k.clipper, data=F_TAKE.encode(a.id, amt, limit, self.keeper, b""),
                      gas_limit=self.cfg.gas_limit, prerequisites=pre,
                      description=f"take {a.account} with Vat DAI (held)")
        opp = Opportunity(
            protocol=self.name, kind=self.kind, account=a.account, block=head.number,
            gross_profit_usd_e8=self._dai_rad_to_usd_e8(size.slice * mark - size.owe),
            gas_units=self.cfg.gas_take, plan=plan, spend=((self.dai_key, size.owe),), detail=detail)
        return [opp], limit_all

    def _flash_size(self, c: _FlashCtx, book: Any, amt: int) -> _FlashSize | None:
        """A flash-take of `amt` [wad] priced on `book`, or None when the Clipper refuses it
        or no route can sell the slice. A partial `amt` is rounded down to whole token units
        (the TakeCallee exits whole units)."""
        if amt < c.lot:
            amt -= amt % c.conv
        if amt <= 0:
            return None
        size = mm.take_size(c.lot, c.tab, amt, c.price, c.chost)
        if isinstance(size, str) or size.slice == 0:
            return None
        tokens = size.slice // c.conv
        if tokens == 0:
            return None
        route = book.quote(c.gem, self.dai, tokens)
        if route is None or route.amount_out <= 0:
            return None
        gas_units = self.cfg.gas_flash_take + HOP_GAS * max(0, len(route.hops) - 1)
        gas_dai = self._gas_dai(gas_units, c.wei_per_gas, c.native_usd_e8)
        owe_wad = mm.rad_to_wad_up(size.owe)
        limit = mm.limit_price(route.amount_out, gas_dai, size.slice, self.cfg.min_margin_bps)
        return _FlashSize(amt, size, tokens, route, owe_wad, gas_units, gas_dai, limit,
                          route.amount_out - owe_wad - gas_dai)

    def _flash_take(self, c: _FlashCtx, book: Any) -> tuple[Opportunity | None, int | None]:
        """The most profitable flash-take of auction `c` on `book` (the gem sold along the
        book's best route in the same transaction), and this route's limit: the highest price
        at which some size pays the margin after gas (None: no route prices the gem).

        Two searches over take's amt, both within the Clipper's rules: first the size whose
        own limit is highest (gas amortized against slippage); if the auction price is above
        it, no size pays yet. Otherwise the largest net profit among the sizes that pay the
        margin (these form one interval around the first size, which is passed as a seed)."""
        hi = min(c.lot, c.tab // c.price + 1)
        lo = max(c.conv, hi >> 12)
        seen: dict[int, _FlashSize | None] = {}

        def at(amt: int) -> _FlashSize | None:
            if amt not in seen:
                seen[amt] = self._flash_size(c, book, amt)
            return seen[amt]

        def by_limit(amt: int) -> tuple[int, _FlashSize] | None:
            f = at(amt)
            return None if f is None else (f.limit, f)

        margin = self.cfg.min_margin_bps

        def by_profit(amt: int) -> tuple[int, _FlashSize] | None:
            f = at(amt)
            if f is None or (f.route.amount_out - f.gas_dai) * 10_000 < f.owe_wad * (10_000 + margin):
                return None
            return f.profit, f

        if self.sizing == "max":  # the whole lot, or nothing
            whole = at(c.lot)
            if whole is None:
                return None, None
            return (None if by_profit(c.lot) is None else self._flash_opportunity(c, whole)), whole.limit
        peak = sizing.maximize(by_limit, lo, hi, extra=(c.lot,))
        if peak is None:
            return None, None
        if c.price > peak.profit:
            return None, peak.profit  # not yet: no size pays the margin at this price
        best = sizing.maximize(by_profit, lo, hi, extra=(c.lot, peak.size))
        if best is None:
            return None, peak.profit
        return self._flash_opportunity(c, best.value), peak.profit  # type: ignore[arg-type]

    def _flash_opportunity(self, c: _FlashCtx, f: _FlashSize) -> Opportunity:
        min_profit = f.owe_wad * self.cfg.min_margin_bps // 10_000
        route = f.route
        detail = MakerTake(c.ilk, c.id, "flash", c.gem_symbol, c.price, f.limit, f.amt, f.size.slice, f.size.owe,
                           route.amount_out, route.fee_tier, min_profit, f.gas_dai, lot=c.lot, tab=c.tab,
                           swap_route=route.describe(self.symbol),
                           max_size=f.size.lot_left == 0 or f.size.tab_left == 0)
        plan = TxPlan(to=self.cfg.take_callee or ZERO,
                      data=F_FLASH.encode(c.clipper, c.gem_join, c.id, f.amt, f.limit, route.encode(), min_profit),
                      gas_limit=self.cfg.gas_limit, description=f"flash-take {c.account}")
        return Opportunity(
            protocol=self.name, kind=self.kind, account=c.account, block=c.block,
            gross_profit_usd_e8=self._dai_wad_to_usd_e8(route.amount_out - f.owe_wad),
            gas_units=f.gas_units, plan=plan, detail=detail, routes=(route,))

    def resize(self, opp: Opportunity, book: Any) -> Opportunity | None:
        """A flash-take sized and priced again on `book` (which holds the swaps ranked before
        it in this block), from what was cached when it was first sized: no I/O. None when no
        size pays any more. Barks, redos and held (inventory) takes do not swap: unchanged."""
        d = opp.detail
        if not isinstance(d, MakerTake) or d.route != "flash":
            return opp
        c = self._flash_ctx.get(opp.account)
        if c is None or c.block != opp.block:
            return opp
        again, _limit = self._flash_take(c, book)
        return again

    # -- views and outcomes -----------------------------------------------------------
    def explain_revert(self, reason: str) -> str:
        return reason

    def measure_tokens(self, opp: Opportunity) -> tuple[str, ...]:
        """ERC20 balances of the keeper the simulation should measure: the DAI a flash-take
        sends to the owner (other actions pay in Vat dai / Vat gem, which are not ERC20)."""
        d = opp.detail
        return (self.dai,) if isinstance(d, MakerTake) and d.route == "flash" and self.dai else ()

    def measured_profit_usd_e8(self, opp: Opportunity, deltas: dict[str, int], return_data: bytes) -> int | None:
        d = opp.detail
        if isinstance(d, MakerTake) and d.route == "flash" and self.dai in deltas:
            return self._dai_wad_to_usd_e8(deltas[self.dai])
        return None

    def parse_outcome(self, receipt: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        dog = self.cfg.dog.lower()
        clips = {k.clipper.lower(): k.name for k in self.ilks.values()}
        for lg in receipt.get("logs", []):
            topics = lg.get("topics") or []
            if not topics:
                continue
            src = lg.get("address", "").lower()
            t0 = topics[0]
            if src == dog and t0 == EV_BARK.topic0:
                ev = EV_BARK.decode(lg)
                out.update(action="bark", ilk=_ilk_name(ev["ilk"]), urn=abi.to_checksum(ev["urn"]), ink=ev["ink"],
                           art=ev["art"], due=ev["due"], auction=ev["id"])
            elif src in clips and t0 == EV_KICK.topic0:
                ev = EV_KICK.decode(lg)
                out.update(ilk=clips[src], auction=ev["id"], top=ev["top"], tab=ev["tab"], lot=ev["lot"], coin=ev["coin"])
            elif src in clips and t0 == EV_TAKE.topic0:
                ev = EV_TAKE.decode(lg)
                out.update(action=out.get("action", "take"), ilk=clips[src], auction=ev["id"], max=ev["max"],
                           price=ev["price"], owe=ev["owe"], tab_left=ev["tab"], lot_left=ev["lot"])
            elif src in clips and t0 == EV_REDO.topic0:
                ev = EV_REDO.decode(lg)
                out.update(action="redo", ilk=clips[src], auction=ev["id"], top=ev["top"], tab=ev["tab"], lot=ev["lot"],
                           coin=ev["coin"])
            elif self.cfg.take_callee and src == self.cfg.take_callee.lower() and t0 == EV_FLASH.topic0:
                ev = EV_FLASH.decode(lg)
                out.update(action="flash_take", slice=ev["slice"], dai_out=ev["daiOut"], profit_dai=ev["profit"])
        return out

    def realized_gross_usd_e8(self, opp: Opportunity, realized: dict[str, Any]) -> int | None:
        """What a confirmed action really paid before gas, in the terms of its expected gross:
        bark and redo, the incentive of the Kick/Redo event; a flash-take, the FlashTake
        event's profit (what the swap paid - the DAI joined for owe); a held (inventory) take,
        the slice the Take event implies (owe / price, as the Clipper computed it) valued at
        the same oracle mark the take was sized with, minus owe."""
        d = opp.detail
        if isinstance(d, (MakerBark, MakerRedo)):
            coin = realized.get("coin")
            return None if coin is None else self._dai_rad_to_usd_e8(coin)
        if isinstance(d, MakerTake):
            if d.route == "flash":
                profit = realized.get("profit_dai")
                return None if profit is None else self._dai_wad_to_usd_e8(profit)
            owe, price = realized.get("owe"), realized.get("price")
            if owe is None or not price:
                return None
            return self._dai_rad_to_usd_e8((owe // price) * d.mark - owe)
        return None

    def describe(self, opp: Opportunity) -> str:
        d = opp.detail
        if isinstance(d, MakerBark):
            return f"bark {d.ilk} {d.urn}: tab {d.tab / RAD:,.2f} DAI, incentive {d.coin / RAD:,.2f} DAI"
        if isinstance(d, MakerTake):
            how = (f"with Vat DAI, held (valued at the oracle {d.mark / RAY:,.2f})" if d.held
                   else f"flash (TakeCallee), sold {d.swap_route} for {d.proceeds / WAD:,.2f} DAI")
            part = f" of {d.lot / WAD:,.6f}" if d.partial else ""
            return (f"take {d.slice / WAD:,.6f}{part} {d.gem_symbol} of {d.ilk}#{d.id} at {d.price / RAY:,.2f} "
                    f"(limit {d.limit / RAY:,.2f}) for {d.owe / RAD:,.2f} DAI {how}")
        if isinstance(d, MakerRedo):
            return f"redo {d.ilk}#{d.id}: incentive {d.coin / RAD:,.2f} DAI"
        return opp.plan.description

    def can_price_native(self) -> bool:
        return any(k.gem_symbol.upper() in NATIVE_SYMBOLS or k.name.upper().startswith("ETH-") for k in self.ilks.values())

    def native_price_usd_e8(self) -> int | None:
        for k in self.ilks.values():
            if k.gem_symbol.upper() in NATIVE_SYMBOLS or k.name.upper().startswith("ETH-"):
                if k.feed_price > 0:
                    return k.feed_price * self.cfg.dai_usd_e8 // RAY
        return None

    def positions(self) -> list[dict[str, Any]]:
        best: dict[str, Opportunity] = {}
        for o in self.last_opportunities:
            cur = best.get(o.account)
            if cur is None or o.gross_profit_usd_e8 - o.gas_units > cur.gross_profit_usd_e8 - cur.gas_units:
                best[o.account] = o
        rows = []
        for u in self.urns.values():
            if u.art == 0:
                continue
            k = self.ilks[u.ilk]
            ratio = mm.collateralization_over_mat(u.ink, u.art, k.spot, k.rate)
            rows.append({"protocol": self.name, "account": u.urn, "ilk": u.ilk, "health_factor": ratio,
                         "summary": f"{u.ilk} vault {u.ink / WAD:,.4f} {k.gem_symbol}, debt {u.art * k.rate / RAD:,.0f} DAI",
                         "opportunity": best.get(u.urn)})
        for a in self.auctions.values():
            k = self.ilks[a.ilk]
            if a.needs_redo:
                hf, summary = 0.0, f"stale auction: needs redo (lot {a.lot / WAD:,.4f} {k.gem_symbol}, tab {a.tab / RAD:,.0f} DAI)"
            elif a.limit:
                hf = a.price / a.limit
                when = "now" if a.price <= a.limit else (
                    f"in {a.limit_in_s // 60}m{a.limit_in_s % 60:02d}s" if a.limit_in_s is not None else "never")
                summary = f"price {a.price / RAY:,.2f} limit {a.limit / RAY:,.2f} DAI/{k.gem_symbol}, reached {when}"
            else:
                hf, summary = 999.0, f"price {a.price / RAY:,.2f} DAI/{k.gem_symbol}, no limit (no quote)"
            rows.append({"protocol": self.name, "account": a.account, "ilk": a.ilk, "health_factor": hf,
                         "summary": summary, "opportunity": best.get(a.account)})
        rows.sort(key=lambda r: r["health_factor"])
        return rows


# -- risk (keeper risk) -----------------------------------------------------------------
def _risk_liquidation_prices(self: Any, ts: int, pips: dict[str, tuple[str, int, int, int]]) -> list[dict[str, Any]]:
    """Adapter.liquidation_prices (below)."""
    out: list[dict[str, Any]] = []
    for u in self.urns.values():
        k = self.ilks.get(u.ilk)
        pip = pips.get(u.ilk)
        if k is None or pip is None or u.art == 0 or k.rate == 0 or k.mat == 0:
            continue
        feed, scale, a0, par = pip
        if par == 0 or a0 <= 0:
            continue
        mat = k.mat

        def val_of(a: int, scale: int = scale) -> int:
            return a * scale  # the pip's peek() [wad]

        def spot_at(a: int, par: int = par, mat: int = mat) -> int:
            # Spotter.poke: rdiv(rdiv(val * 1e9, par), mat)
            return (val_of(a) * 10**9 * RAY // par) * RAY // mat

        def unsafe(a: int, u: Urn = u, k: Ilk = k) -> bool:
            return mm.is_unsafe(u.ink, u.art, spot_at(a), k.rate)

        def coll_rad(a: int, par: int = par, u: Urn = u) -> int:
            return u.ink * (val_of(a) * 10**9 * RAY // par)  # DAI [rad]

        debt = u.art * k.rate
        row: dict[str, Any] = {
            "protocol": self.name, "account": u.urn, "ilk": k.name, "asset": k.gem_symbol,
            "assets": [k.gem_symbol], "feed": feed or None, "price": a0,
            "price_units": "feed" if feed else "pip_wad",
            "health_factor": mm.collateralization_over_mat(u.ink, u.art, k.spot, k.rate),
            "spot_stale": spot_at(a0) != k.spot,
            "debt_usd_e8": self._dai_rad_to_usd_e8(debt), "collateral_usd_e8": self._dai_rad_to_usd_e8(coll_rad(a0))}
        status, lp = breaking_price(unsafe, a0, mm.is_unsafe(u.ink, u.art, k.spot, k.rate) or unsafe(a0))
        if not note_break(row, status, lp, a0):
            out.append(row)
            continue
        row["loss_usd_e8"] = self._dai_rad_to_usd_e8(max(0, debt - coll_rad(lp)))
        size = mm.bark_size(u.ink, u.art, k.rate, k.dust, k.chop, self.Hole, self.Dirt, k.hole, k.dirt)
        if isinstance(size, str):
            row.update(debt_at_liquidation_usd_e8=self._dai_rad_to_usd_e8(debt), bonus_usd_e8=0, bark_revert=size)
        else:
            row.update(debt_at_liquidation_usd_e8=self._dai_rad_to_usd_e8(size.due),
                       bonus_usd_e8=self._dai_rad_to_usd_e8(mm.incentive(k.tip, k.chip, size.tab)))
        out.append(row)
    return out


def liquidation_prices(self: Any, ts: int, pips: dict[str, tuple[str, int, int, int]] | None = None
                       ) -> list[dict[str, Any]]:
    """For every vault with debt: the highest answer of its ilk's price feed (others held)
    at which, once the Spotter is poked (spot = rdiv(rdiv(val * 1e9, par), mat), val the
    pip's peek() = answer * scale), Dog.bark's test ink * spot < art * rate holds: barkable
    at `liquidation_price`, not one step above it (integer bisection, exact). rate as read
    (the keeper models no Jug drip, so `ts` changes nothing). pips: ilk name -> (feed, scale,
    feed answer, Spotter par), read by the caller; for a pip of the AggregatorPip shape
    (src(), scale()) the feed is its src aggregator, otherwise feed "" and scale 1: the
    bisection is over the pip's wad value itself. Ilks left out of pips are left out. At the
    liquidation price: the debt the bark confiscates, the loss potential (debt above the
    collateral's value) and the keeper's bark incentive (tip + chip * tab) at the current
    Hole/Dirt room. Pure: no I/O."""
    return _risk_liquidation_prices(self, ts, pips or {})


Adapter.liquidation_prices = liquidation_prices  # type: ignore[attr-defined]
