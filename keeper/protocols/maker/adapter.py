"""Maker/Sky Liquidation 2.0 adapter: bark unsafe vaults, bid in falling-price Clipper
auctions (with the keeper's Vat DAI or as a flash-take through the keeper's TakeCallee), and
redo stale auctions.

Per block: one request (Multicall3 chunks in one JSON-RPC batch) for Hole/Dirt, every ilk's
Vat/Dog/Spotter/Clipper parameters, the Clipper's active list, the keeper's Vat DAI and
`can`, and every tracked urn; one more for `sales`/`getStatus` of active auctions (only
when there are some), and one for Uniswap V3 quotes of the lots that could be bought (only
then). Vaults are discovered from the Vat's `frob` LogNote logs (backfilled in chunks,
then block by block); Kick/Take/Redo/Yank logs of the Clippers are followed in the same
eth_getLogs.

Units: on-chain amounts in wad/ray/rad exactly as dss (math.py); money in USD e8, DAI at
`dai_usd` (default $1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ... import abi
from ...config import (Section, address, block_number, boolean, decimal, gas_fits, gas_units, label,
                       non_empty_list, show, subset_of)
from ...errors import BadResponseError, ConfigError
from ...multicall import Call
from ...pricing.uniswap_v3 import QuoteRequest, UniswapV3Quoter
from ...types import Head, Opportunity, TxPlan
from ..base import BaseAdapter, Skip, has_code, log_chunks, require_code
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
CLIP_TOPICS = [EV_KICK.topic0, EV_TAKE.topic0, EV_REDO.topic0, EV_YANK.topic0]
NATIVE_SYMBOLS = ("WETH", "ETH")
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
    limit: int  # the keeper's limit = take's max [ray]
    amt: int  # take's amt [wad]
    slice: int  # expected collateral [wad]
    owe: int  # expected DAI paid [rad]
    proceeds: int  # DAI the slice sells for on Uniswap V3 [wad]
    fee_tier: int
    min_profit: int  # flash route: on-chain minimum profit [wad]
    gas_dai: int  # gas priced in DAI [wad], inside the limit

    def log_fields(self) -> dict[str, Any]:
        return {"action_kind": "take", "route": self.route, "ilk": self.ilk, "auction": self.id,
                "price": self.price / RAY, "limit": self.limit / RAY, "slice": self.slice / WAD,
                "owe_dai": self.owe / RAD, "proceeds_dai": self.proceeds / WAD, "swap_fee_tier": self.fee_tier}


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


def _ilk_name(b: bytes) -> str:
    return b.rstrip(b"\0").decode("utf-8", "replace")


def _addr(word_hex: str) -> str:
    return abi.to_checksum("0x" + word_hex[-40:])


class Adapter(BaseAdapter):
    kind = "maker"
    cfg: MakerConfig
    quoter: UniswapV3Quoter

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
        self.log.info("maker_ready", vat=self.vat, dog=self.cfg.dog, ilks={n: k.clipper for n, k in self.ilks.items()},
                      take_callee=self.cfg.take_callee, min_margin_pct=self.cfg.min_margin_bps / 100)

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
        """frob notes of the Vat (new urns) and the Clippers' auction events, in chunks."""
        before = len(self.urns)
        by_clip = {k.clipper.lower(): k for k in self.ilks.values()}
        addresses = [self.vat] + [k.clipper for k in self.ilks.values()]
        async for last, logs in log_chunks(self.rpc, addresses, [[FROB_TOPIC] + CLIP_TOPICS], self.synced_to + 1,
                                           head.number, self.chunk_blocks, self.log):
            for lg in logs:
                try:
                    self._on_log(lg, by_clip)
                except (KeyError, IndexError, TypeError, ValueError):
                    raise BadResponseError("eth_getLogs: malformed Vat/Clipper log") from None
            self.synced_to = last
        return len(self.urns) - before

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
                auctions[(k.name, i)] = Auction(k.name, i, tab, lot, abi.to_checksum(usr), tic, top, price, bool(redo))
        self.auctions = auctions

    # -- opportunities ----------------------------------------------------------------
    def _gas_dai_wad(self, head: Head, gas_units: int) -> int:
        """Gas in DAI [wad], priced conservatively at 2 x base fee + 1 gwei and the ETH feed."""
        native = self.native_price_usd_e8() or 0
        wei = gas_units * (2 * head.base_fee_wei + 10**9)
        return wei * native // self.cfg.dai_usd_e8

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
        live = [a for a in self.auctions.values() if not a.needs_redo and a.price > 0 and self.ilks[a.ilk].stopped < 3]
        if not live:
            return []
        reqs, sized = [], []
        for a in live:
            k = self.ilks[a.ilk]
            if not k.gem:
                self.last_skips.append(Skip(a.account, "no_gem_join", {"hint": "set gem_join to value the lot"}))
                continue
            s = mm.full_slice(a.lot, a.tab, a.price)
            tokens = s // k.conv
            if tokens == 0:
                continue
            if not self.dai:
                self.last_skips.append(Skip(a.account, "no_dai_token", {"hint": "set take_callee or dai_join"}))
                continue
            reqs.append(QuoteRequest(k.gem, self.dai, tokens))
            sized.append((a, s, tokens))
        if not reqs:
            return []
        quotes = await self.quoter.quote_many(reqs, head.number)
        out = []
        for (a, s, tokens), q in zip(sized, quotes):
            k = self.ilks[a.ilk]
            if q is None:
                self.last_skips.append(Skip(a.account, "no_swap_route", {"gem": k.gem_symbol}))
                continue
            gas_dai = self._gas_dai_wad(head, self.cfg.gas_flash_take if self.cfg.take_callee else self.cfg.gas_take)
            slice_wad = tokens * k.conv  # what actually gets sold
            limit = mm.limit_price(q.amount_out, gas_dai, slice_wad, self.cfg.min_margin_bps)
            a.limit = limit
            dur = head.timestamp - a.tic
            until = k.curve.seconds_until(a.top, limit) if limit > 0 else None
            a.limit_in_s = None if until is None else max(0, until - dur)
            if limit == 0 or a.price > limit:
                continue
            out += self._take_routes(head, a, k, limit, q.amount_out, s, q.fee_tier, gas_dai)
        return out

    def _take_routes(self, head: Head, a: Auction, k: Ilk, limit: int, proceeds_full: int, slice_full: int,
                     fee_tier: int, gas_dai: int) -> list[Opportunity]:
        out = []
        # 1) the keeper's own Vat DAI
        if self.keeper and "inventory" in self.cfg.routes:
            capital = self.vat_dai
            full = mm.take_size(a.lot, a.tab, a.lot, a.price, k.chost)
            amt = a.lot
            if isinstance(full, mm.TakeSize) and full.owe > capital:
                amt = capital // a.price
            size = mm.take_size(a.lot, a.tab, amt, a.price, k.chost) if amt > 0 else "no_inventory"
            if isinstance(size, str) or size.slice == 0 or size.owe > capital:
                self.last_skips.append(Skip(a.account, "no_inventory", {"route": "inventory", "vat_dai": capital / RAD,
                                                                         "why": size if isinstance(size, str) else ""}))
            else:
                proceeds = proceeds_full * size.slice // slice_full
                pre = () if k.can else (TxPlan(to=self.vat, data=F_HOPE.encode(k.clipper), gas_limit=100_000,
                                               description=f"vat.hope({k.name} Clipper {k.clipper})"),)
                detail = MakerTake(k.name, a.id, "inventory", k.gem_symbol, a.price, limit, amt, size.slice, size.owe,
                                   proceeds, fee_tier, 0, gas_dai)
                plan = TxPlan(to=k.clipper, data=F_TAKE.encode(a.id, amt, limit, self.keeper, b""),
                              gas_limit=self.cfg.gas_limit, prerequisites=pre,
                              description=f"take {a.account} with Vat DAI")
                out.append(Opportunity(
                    protocol=self.name, kind=self.kind, account=a.account, block=head.number,
                    gross_profit_usd_e8=self._dai_wad_to_usd_e8(proceeds) - self._dai_rad_to_usd_e8(size.owe),
                    gas_units=self.cfg.gas_take, plan=plan, spend=((self.dai_key, size.owe),), detail=detail))
        # 2) flash-take through the keeper's TakeCallee: no capital
        if self.cfg.take_callee and k.gem_join and "flash" in self.cfg.routes:
            size = mm.take_size(a.lot, a.tab, a.lot, a.price, k.chost)
            if isinstance(size, mm.TakeSize) and size.slice > 0:
                owe_wad = mm.rad_to_wad_up(size.owe)
                min_profit = owe_wad * self.cfg.min_margin_bps // 10_000
                path = bytes.fromhex(k.gem[2:]) + fee_tier.to_bytes(3, "big") + bytes.fromhex(self.dai[2:])
                detail = MakerTake(k.name, a.id, "flash", k.gem_symbol, a.price, limit, a.lot, size.slice, size.owe,
                                   proceeds_full, fee_tier, min_profit, gas_dai)
                plan = TxPlan(to=self.cfg.take_callee,
                              data=F_FLASH.encode(k.clipper, k.gem_join, a.id, a.lot, limit, path, min_profit),
                              gas_limit=self.cfg.gas_limit, description=f"flash-take {a.account}")
                out.append(Opportunity(
                    protocol=self.name, kind=self.kind, account=a.account, block=head.number,
                    gross_profit_usd_e8=self._dai_wad_to_usd_e8(proceeds_full - owe_wad),
                    gas_units=self.cfg.gas_flash_take, plan=plan, detail=detail))
        return out

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

    def describe(self, opp: Opportunity) -> str:
        d = opp.detail
        if isinstance(d, MakerBark):
            return f"bark {d.ilk} {d.urn}: tab {d.tab / RAD:,.2f} DAI, incentive {d.coin / RAD:,.2f} DAI"
        if isinstance(d, MakerTake):
            how = "with Vat DAI" if d.route == "inventory" else "flash (TakeCallee)"
            return (f"take {d.slice / WAD:,.6f} {d.gem_symbol} of {d.ilk}#{d.id} at {d.price / RAY:,.2f} "
                    f"(limit {d.limit / RAY:,.2f}) for {d.owe / RAD:,.2f} DAI {how}")
        if isinstance(d, MakerRedo):
            return f"redo {d.ilk}#{d.id}: incentive {d.coin / RAD:,.2f} DAI"
        return opp.plan.description

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
