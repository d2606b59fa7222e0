"""Aave V3 adapter: discovery from Borrow events, health in Multicall3 batches, sizing with
the protocol's own rules (math.py), swap-back quotes, and the liquidationCall encoding.

Per block this costs one HTTP request for every tracked account (getUserAccountData in
aggregate3 chunks, sent as one JSON-RPC batch together with prices, reserve
configurations and the keeper's inventory), plus, only when some account is
liquidatable, one request for those accounts' per-reserve balances and one for quotes.

Prices are read one asset per sub-call (`getAssetPrice`, failure allowed), so a price
source that reverts or answers zero makes only that asset unavailable: the pairs that use
it are skipped (`price_unavailable`), and so are the accounts whose getUserAccountData
reverts because Aave itself asks the oracle for that asset; everything else goes on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from decimal import Decimal

from ... import abi, sizing

from ...config import Section, address, boolean, decimal, integer, one_of, subset_of
from ...errors import BadResponseError, ConfigError
from ...multicall import Call
from ...types import Approval, ChainLiquidation, Head, Opportunity, TxPlan
from ..base import BaseAdapter, Skip, log_chunks, require_code
from . import math as am
from .errors import explain

POOL = abi.load("AavePool")
ORACLE = abi.load("AaveOracle")
PROVIDER = abi.load("AavePoolAddressesProvider")
ERC20 = abi.load("ERC20")
AGG = abi.load("ChainlinkAggregator")

F_ACCOUNT = POOL.fn("getUserAccountData")
F_USER_CONFIG = POOL.fn("getUserConfiguration")
F_USER_EMODE = POOL.fn("getUserEMode")
F_CONFIGURATION = POOL.fn("getConfiguration")
F_RESERVE_DATA = POOL.fn("getReserveData")
F_RESERVES = POOL.fn("getReservesList")
F_EMODE = POOL.fn("getEModeCategoryData")
F_LIQUIDATE = POOL.fn("liquidationCall")
F_FLASH_PREMIUM = POOL.fn("FLASHLOAN_PREMIUM_TOTAL")
F_FLASH = abi.load("FlashLiquidator").fn("liquidate")
F_INVENTORY = abi.load("FlashLiquidator").fn("liquidateWithInventory")
EV_FLASH = abi.load("FlashLiquidator").event("Liquidated")
F_PRICE = ORACLE.fn("getAssetPrice")
F_SOURCE = ORACLE.fn("getSourceOfAsset")
F_BASE_UNIT = ORACLE.fn("BASE_CURRENCY_UNIT")
F_BALANCE = ERC20.fn("balanceOf")
F_SCALED = abi.Function("scaledBalanceOf", ["address"], ["uint256"])  # AToken
F_INCOME = POOL.fn("getReserveNormalizedIncome")
F_SYMBOL = ERC20.fn("symbol")
F_DECIMALS = ERC20.fn("decimals")
F_ROUND = AGG.fn("latestRoundData")
EV_BORROW = POOL.event("Borrow")
EV_LIQUIDATION = POOL.event("LiquidationCall")
BORROW_TOPIC = EV_BORROW.topic0
NATIVE_SYMBOLS = ("WETH", "ETH")
MAX_UINT = 2**256 - 1
HOP_GAS = 120_000  # expected gas of each swap hop after the first (simulation measures the real figure)
INT256_MAX = 2**255 - 1


def read_price(ok: bool, data: bytes) -> tuple[int, str | None]:
    """One getAssetPrice sub-call's answer: (price in oracle base units, None) or (0, what
    went wrong): reverted, bad_answer (not one word), zero, negative (above int256 max: the
    oracle cast a negative answer, or garbage)."""
    if not ok:
        return 0, "reverted"
    if len(data) != 32:
        return 0, "bad_answer"
    price = int.from_bytes(data, "big")
    if price == 0:
        return 0, "zero"
    if price > INT256_MAX:
        return 0, "negative"
    return price, None


@dataclass(frozen=True)
class AaveV3Config:
    kind: str
    name: str
    pool_addresses_provider: str
    start_block: int
    rules: str
    gas_estimate: int  # the inventory route (liquidation + swap back through the keeper's contract)
    gas_limit: int
    max_price_age_s: int | None
    enabled: bool = True
    flash_liquidator: str | None = None
    flash_gas_estimate: int = 800_000
    flash_gas_limit: int = 2_000_000
    flash_min_profit_share_bps: int = 5_000
    routes: tuple[str, ...] = ("inventory", "flash")
    path: str = "protocols[?]"  # where this section is in the config, for error messages


def parse_config(s: Section) -> AaveV3Config:
    from ...config import block_number, gas_fits, gas_units, label

    cfg = AaveV3Config(
        kind="aave_v3",
        name=s.get("name", label),
        pool_addresses_provider=s.get("pool_addresses_provider", address),
        start_block=s.get("start_block", block_number, 0),
        rules=s.get("rules", one_of(*am.RULES), "v3.0"),
        gas_estimate=s.get("gas_estimate", gas_units, 650_000),
        gas_limit=s.get("gas_limit", gas_units, 2_000_000),
        max_price_age_s=s.get("max_price_age_s", integer(1, 10**8), None),
        enabled=s.get("enabled", boolean, True),
        flash_liquidator=s.get("flash_liquidator", address, None),
        flash_gas_estimate=s.get("flash_gas_estimate", gas_units, 800_000),
        flash_gas_limit=s.get("flash_gas_limit", gas_units, 2_000_000),
        # above 1 the on-chain check asks for more than the trade makes: only useful in tests
        flash_min_profit_share_bps=int(s.get("flash_min_profit_share", decimal(minimum=0, maximum=10), Decimal("0.5"))
                                       * 10_000),
        routes=s.get("routes", subset_of("inventory", "flash"), ("inventory", "flash")),
        path=s.path,
    )
    gas_fits(s.path, cfg.gas_estimate, "gas_estimate", cfg.gas_limit, "gas_limit")
    gas_fits(s.path, cfg.flash_gas_estimate, "flash_gas_estimate", cfg.flash_gas_limit, "flash_gas_limit")
    return cfg


@dataclass(slots=True)
class Reserve:
    asset: str
    symbol: str
    id: int
    decimals: int
    a_token: str
    stable_debt: str
    variable_debt: str
    price_source: str
    configuration: int = 0
    price: int = 0  # oracle base currency units; 0 while the price is unavailable
    price_age_s: int | None = None
    price_problem: str | None = None  # None: price read this block; else reverted | zero | negative | bad_answer

    @property
    def unit(self) -> int:
        return 10**self.decimals

    @property
    def liquidation_threshold_bps(self) -> int:
        return (self.configuration >> 16) & 0xFFFF

    @property
    def liquidation_bonus_bps(self) -> int:
        return (self.configuration >> 32) & 0xFFFF

    @property
    def active(self) -> bool:
        return bool((self.configuration >> 56) & 1)

    @property
    def paused(self) -> bool:
        return bool((self.configuration >> 60) & 1)

    @property
    def protocol_fee_bps(self) -> int:
        return (self.configuration >> 152) & 0xFFFF

    @property
    def emode_category(self) -> int:
        return (self.configuration >> 168) & 0xFF


@dataclass(frozen=True, slots=True)
class AccountHealth:
    collateral_base: int
    debt_base: int
    liquidation_threshold_bps: int
    health_factor_wad: int


@dataclass(frozen=True, slots=True)
class AaveLiquidation:
    """The chosen pair and size for one account, with its value breakdown (usd_e8)."""

    user: str
    collateral_asset: str
    collateral_symbol: str
    debt_asset: str
    debt_symbol: str
    debt_requested: int  # debtToCover passed to liquidationCall (2**256-1: all the rules allow)
    debt_to_cover: int  # what the protocol will take (debt base units)
    collateral_to_liquidator: int  # collateral base units
    protocol_fee: int  # collateral base units
    health_factor_wad: int
    close_factor_bps: int
    bonus_usd_e8: int
    protocol_fee_usd_e8: int
    swap_cost_usd_e8: int
    swap_fee_tier: int
    swap_out: int  # debt base units from selling the collateral back
    route: str = "inventory"  # inventory | flash
    flash_amount: int = 0  # debt base units borrowed
    flash_premium: int = 0  # debt base units paid to the pool for the loan
    flash_premium_usd_e8: int = 0
    swap_route: str = ""  # e.g. "LINK >v2> WETH >v3 0.05%> USDC"
    max_size: bool = True  # False: a profitable slice smaller than the rules allow

    def log_fields(self) -> dict[str, Any]:
        return {
            "collateral": self.collateral_symbol,
            "debt": self.debt_symbol,
            "debt_to_cover": self.debt_to_cover,
            "collateral_received": self.collateral_to_liquidator,
            "protocol_fee": self.protocol_fee,
            "health_factor": round(self.health_factor_wad / 1e18, 6),
            "bonus_usd": self.bonus_usd_e8 / 1e8,
            "protocol_fee_usd": self.protocol_fee_usd_e8 / 1e8,
            "swap_cost_usd": self.swap_cost_usd_e8 / 1e8,
            "swap_fee_tier": self.swap_fee_tier,
            "swap_route": self.swap_route,
            "slice": not self.max_size,
            "route": self.route,
            **({"flash_premium_usd": self.flash_premium_usd_e8 / 1e8} if self.route == "flash" else {}),
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    """One account, collateral/debt pair and route, with everything sizing needs (no I/O)."""

    user: str
    c: Reserve
    d: Reserve
    coll: am.Side
    debt: am.Side
    hf: int
    total_debt: int
    bonus: int
    route: str  # inventory | flash
    limit: int  # the largest debt to cover the rules (and for the inventory route, the balance) allow
    capped: bool = False  # the inventory, not the rules, sets the limit
    fee_clamp: tuple[int, int] | None = None  # (user's scaled aToken balance, liquidity index ray)


@dataclass(frozen=True, slots=True)
class Valued:
    amount: int  # debt asked to cover
    requested: int  # debtToCover passed (2**256-1: all the rules allow)
    liq: am.Liquidation
    route: Any  # keeper.pricing.book.Route
    upfront: int  # debt base units flash-borrowed or pulled from the keeper's balance
    premium: int  # flash-loan premium, debt base units
    profit_debt_units: int  # swap proceeds - debt repaid - premium
    profit_usd_e8: int


class Adapter(BaseAdapter):
    kind = "aave_v3"
    cfg: AaveV3Config

    def __init__(self, cfg: AaveV3Config, **deps: Any):
        super().__init__(cfg, **deps)
        self.pool = ""
        self.oracle = ""
        self.base_unit = 10**8
        self.reserves: list[Reserve] = []
        self.accounts: set[str] = set()
        self.health: dict[str, AccountHealth] = {}
        self.last_candidates: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        self.flash_premium_bps = 0
        self.live_from: int | None = None  # the head at the first sync
        self._chain_liquidations: list[ChainLiquidation] = []
        # (account, route) -> (block, the pair it was sized on): what resize() sizes again
        self._candidates: dict[tuple[str, str], tuple[int, Candidate]] = {}
        # accounts whose getUserAccountData failed in the last refresh -> (reason, detail)
        self.unreadable: dict[str, tuple[str, dict[str, Any]]] = {}

    # -- start-up ---------------------------------------------------------------------
    async def start(self) -> None:
        where = f"{self.cfg.path}.pool_addresses_provider"
        await require_code(self.rpc, self.cfg.pool_addresses_provider, where)
        res = await self.mc.run([
            Call(self.cfg.pool_addresses_provider, PROVIDER.fn("getPool").encode()),
            Call(self.cfg.pool_addresses_provider, PROVIDER.fn("getPriceOracle").encode()),
        ])
        if not all(ok and len(d) == 32 for ok, d in res):
            raise ConfigError(f"{where}: {self.cfg.pool_addresses_provider} is not an Aave V3 PoolAddressesProvider")
        self.pool = abi.to_checksum(PROVIDER.fn("getPool").decode_one(res[0][1]))
        self.oracle = abi.to_checksum(PROVIDER.fn("getPriceOracle").decode_one(res[1][1]))
        await self.load_reserves()
        if self.cfg.flash_liquidator:
            await require_code(self.rpc, self.cfg.flash_liquidator, f"{self.cfg.path}.flash_liquidator",
                               "deploy one with 'keeper deploy-liquidator'")
            self.flash_premium_bps = F_FLASH_PREMIUM.decode_one(await self.rpc.eth_call(self.pool, F_FLASH_PREMIUM.encode()))
        if self.swaps is not None:
            self.swaps.watch(r.asset for r in self.reserves)
        if "inventory" in self.cfg.routes and not self.cfg.flash_liquidator:
            self.log.warning("inventory_route_unavailable", reason="the inventory route sells what it seizes in the "
                             "same transaction through the keeper's liquidator contract; set flash_liquidator "
                             "(keeper deploy-liquidator)")
        self.log.info("aave_ready", flash_liquidator=self.cfg.flash_liquidator, pool=self.pool, oracle=self.oracle,
                      reserves=[r.symbol for r in self.reserves], rules=self.cfg.rules)

    async def load_reserves(self) -> None:
        (ok, data), (ok2, unit) = await self.mc.run([
            Call(self.pool, F_RESERVES.encode()),
            Call(self.oracle, F_BASE_UNIT.encode()),
        ])
        if not ok:
            raise ConfigError(f"{self.cfg.path}.pool_addresses_provider: the pool {self.pool} does not answer getReservesList()")
        assets = [abi.to_checksum(a) for a in F_RESERVES.decode_one(data)]
        if ok2 and len(unit) == 32:
            self.base_unit = F_BASE_UNIT.decode_one(unit)
        calls: list[Call] = []
        for a in assets:
            calls += [Call(self.pool, F_RESERVE_DATA.encode(a)), Call(a, F_SYMBOL.encode()),
                      Call(a, F_DECIMALS.encode()), Call(self.oracle, F_SOURCE.encode(a))]
        res = await self.mc.run(calls)
        reserves = []
        for i, a in enumerate(assets):
            (ok_d, rd), (ok_s, sym), (ok_dec, dec), (ok_src, src) = res[4 * i:4 * i + 4]
            if not ok_d:
                raise BadResponseError(f"getReserveData({a}) failed")
            d = F_RESERVE_DATA.decode_one(rd)
            symbol = _decode_symbol(sym) if ok_s else a[:10]
            decimals = F_DECIMALS.decode_one(dec) if ok_dec and len(dec) == 32 else (d[0][0] >> 48) & 0xFF
            if decimals > 36:
                self.log.warning("odd_decimals", asset=a, decimals=decimals)
            reserves.append(Reserve(
                asset=a, symbol=symbol, id=d[7], decimals=decimals,
                a_token=abi.to_checksum(d[8]), stable_debt=abi.to_checksum(d[9]),
                variable_debt=abi.to_checksum(d[10]),
                price_source=abi.to_checksum(F_SOURCE.decode_one(src)) if ok_src else "",
                configuration=d[0][0],
            ))
        self.reserves = reserves

    # -- discovery --------------------------------------------------------------------
    async def sync(self, head: Head) -> int:
        """Read Borrow and LiquidationCall events from the last synced block to head, in
        chunks (one eth_getLogs per chunk). Borrowers become tracked accounts; liquidations
        after the keeper started are kept for drain_liquidations(). Returns new accounts."""
        before = len(self.accounts)
        if self.live_from is None:
            self.live_from = head.number  # liquidations before the keeper ran are history
        async for last, logs in log_chunks(self.rpc, self.pool, [[BORROW_TOPIC, EV_LIQUIDATION.topic0]],
                                           self.synced_to + 1, head.number, self.chunk_blocks, self.log,
                                           what=f"{self.name} borrowers", found=lambda: len(self.accounts)):
            for lg in logs:
                try:
                    if lg["topics"][0] == BORROW_TOPIC:
                        self.accounts.add(abi.to_checksum("0x" + lg["topics"][2][-40:]))
                    elif int(lg["blockNumber"], 16) > self.live_from:
                        self._chain_liquidations.append(self._chain_liquidation(lg))
                except (KeyError, IndexError, TypeError, ValueError):
                    raise BadResponseError("eth_getLogs: malformed Borrow or LiquidationCall log") from None
            self.synced_to = last
        return len(self.accounts) - before

    def _chain_liquidation(self, lg: dict[str, Any]) -> ChainLiquidation:
        ev = EV_LIQUIDATION.decode(lg)
        c, d = self.reserve(ev["collateralAsset"]), self.reserve(ev["debtAsset"])
        value = None  # what the liquidator got for what it repaid, at the oracle prices now
        if c is not None and d is not None and c.price > 0 and d.price > 0:
            value = self._to_usd_e8(ev["liquidatedCollateralAmount"] * c.price // c.unit
                                    - ev["debtToCover"] * d.price // d.unit)
        return ChainLiquidation(
            protocol=self.name, kind="liquidation", account=abi.to_checksum(ev["user"]),
            liquidator=abi.to_checksum(ev["liquidator"]), block=int(lg["blockNumber"], 16),
            tx_hash=lg.get("transactionHash", ""), log_index=int(lg.get("logIndex", "0x0"), 16),
            detail={"collateral": c.symbol if c else ev["collateralAsset"], "debt": d.symbol if d else ev["debtAsset"],
                    "debt_repaid": ev["debtToCover"], "collateral_seized": ev["liquidatedCollateralAmount"]},
            value_usd_e8=value)

    def drain_liquidations(self) -> list[ChainLiquidation]:
        """The liquidations seen on chain since the last call, in block and log order."""
        out, self._chain_liquidations = self._chain_liquidations, []
        return out

    def liquidator_addresses(self) -> set[str]:
        """The keeper's own contracts that liquidate here (lowercase)."""
        return {self.cfg.flash_liquidator.lower()} if self.cfg.flash_liquidator else set()

    # -- refresh ----------------------------------------------------------------------
    def _block_calls(self, accounts: list[str]) -> list[Call]:
        # one price per sub-call: a failing source fails only its own asset
        calls = [Call(self.oracle, F_PRICE.encode(r.asset)) for r in self.reserves]
        calls += [Call(self.pool, F_CONFIGURATION.encode(r.asset)) for r in self.reserves]
        if self.cfg.max_price_age_s:
            calls += [Call(r.price_source, F_ROUND.encode()) for r in self.reserves]
        if self.keeper:
            calls += [Call(r.asset, F_BALANCE.encode(self.keeper)) for r in self.reserves]
        calls += [Call(self.pool, F_ACCOUNT.encode(a)) for a in accounts]
        return calls

    async def refresh(self, head: Head) -> list[str]:
        """One batched read of prices, reserve configurations, inventory and every account's
        health. Returns the liquidatable accounts.

        A price that reverts or is not positive marks only its asset unavailable (one
        `price_unavailable` warning per asset per block); an account whose
        getUserAccountData fails is left out of this block and recorded in `unreadable`."""
        accounts = sorted(self.accounts)
        res = await self.mc.run(self._block_calls(accounts), head.number)
        was_unavailable = {r.asset for r in self.reserves if r.price_problem}
        for r, (ok, data) in zip(self.reserves, res):
            r.price, r.price_problem = read_price(ok, data)
            if r.price_problem:
                self.log.warning("price_unavailable", block=head.number, asset=r.symbol, address=r.asset,
                                 problem=r.price_problem, source=r.price_source)
            elif r.asset in was_unavailable:
                self.log.info("price_restored", block=head.number, asset=r.symbol, price=r.price)
        i = len(self.reserves)
        for r in self.reserves:
            ok, data = res[i]
            if ok:
                r.configuration = F_CONFIGURATION.decode_one(data)[0]
            i += 1
        if self.cfg.max_price_age_s:
            for r in self.reserves:
                ok, data = res[i]
                r.price_age_s = head.timestamp - F_ROUND.decode(data)[3] if ok and len(data) >= 160 else None
                i += 1
        if self.keeper:
            inv = {}
            for r in self.reserves:
                ok, data = res[i]
                inv[r.asset] = F_BALANCE.decode_one(data) if ok and len(data) == 32 else 0
                i += 1
            self.inventory = inv
        liquidatable: list[str] = []
        health: dict[str, AccountHealth] = {}
        failed: list[str] = []
        for a, (ok, data) in zip(accounts, res[i:]):
            if not ok or len(data) != 192:
                failed.append(a)  # this account only: Aave's own price read reverted, or worse
                continue
            coll, debt, _avail, lt, _ltv, hf = F_ACCOUNT.decode(data)
            if debt == 0:
                self.accounts.discard(a)  # repaid: a new Borrow event brings it back
                continue
            health[a] = AccountHealth(coll, debt, lt, hf)
            if am.is_liquidatable(hf, debt):
                liquidatable.append(a)
        self.health = health
        self.unreadable = await self._why_unreadable(failed, head.number) if failed else {}
        return liquidatable

    async def _why_unreadable(self, users: list[str], block: int) -> dict[str, tuple[str, dict[str, Any]]]:
        """Why each account's getUserAccountData failed. Aave prices every reserve the account
        uses as collateral or borrows, so with an unavailable price the account's
        configuration bitmap (one more request, only in this degraded case) names the asset."""
        bad = [r for r in self.reserves if r.price_problem]
        if not bad:
            return {u: ("account_data_failed", {"call": "getUserAccountData"}) for u in users}
        res = await self.mc.run([Call(self.pool, F_USER_CONFIG.encode(u)) for u in users], block)
        out: dict[str, tuple[str, dict[str, Any]]] = {}
        for u, (ok, data) in zip(users, res):
            used = bad
            if ok and len(data) == 32:
                bitmap = int.from_bytes(data, "big")
                used = [r for r in bad if (bitmap >> (2 * r.id)) & 3]
            if used:
                out[u] = ("price_unavailable", _unpriced(used))
            else:  # e.g. an eMode price source that is not a reserve
                out[u] = ("account_data_failed", {"call": "getUserAccountData"})
        return out

    # -- opportunities ----------------------------------------------------------------
    async def opportunities(self, head: Head) -> list[Opportunity]:
        """Every liquidatable account's best pair, sized for each route the keeper has:
        its own inventory of the debt asset, and (with a flash_liquidator) a flash loan.
        Both routes of one account share the Opportunity key: the ranking keeps the one
        that nets more after gas."""
        liquidatable = await self.refresh(head)
        self.last_skips = [Skip(u, reason, detail) for u, (reason, detail) in self.unreadable.items()]
        self.last_candidates = {}
        self._candidates = {}
        if not liquidatable:
            self.last_opportunities = []
            return []
        bad_prices = {r.asset: r for r in self.reserves if r.price_problem}
        stale = {r.asset for r in self.reserves
                 if self.cfg.max_price_age_s and r.price_age_s is not None and r.price_age_s > self.cfg.max_price_age_s}
        positions = await self._positions(liquidatable, head.number)
        candidates: list[Candidate] = []
        for user in liquidatable:
            if user not in positions:
                self.last_skips.append(Skip(user, "account_data_failed", {"call": "getUserConfiguration"}))
        for user, pos in positions.items():
            if pos.get("emode_price_problem"):
                self.last_skips.append(Skip(user, "price_unavailable", {
                    "asset": f"eMode {pos['emode_id']} price source", "problem": pos["emode_price_problem"]}))
                continue
            hf = self.health[user].health_factor_wad
            total_debt = self.health[user].debt_base
            pairs = [(c, d) for c in self.reserves for d in self.reserves
                     if pos["collateral"].get(c.asset, 0) and pos["uses_as_collateral"](c.id)
                     and c.liquidation_threshold_bps and pos["debt"].get(d.asset, 0)]
            if not pairs:
                self.last_skips.append(Skip(user, "no_collateral_debt_pair"))
            for c, d in pairs:
                where = {"collateral": c.symbol, "debt": d.symbol}
                if not (c.active and d.active) or c.paused or d.paused:
                    self.last_skips.append(Skip(user, "reserve_paused_or_inactive", where))
                    continue
                unpriced = [bad_prices[a] for a in dict.fromkeys((c.asset, d.asset)) if a in bad_prices]
                if unpriced:
                    self.last_skips.append(Skip(user, "price_unavailable", {**where, **_unpriced(unpriced)}))
                    continue
                if {c.asset, d.asset} & stale:
                    self.last_skips.append(Skip(user, "stale_price", where))
                    continue
                bonus, c_price, d_price = self._bonus_and_prices(pos, c, d)
                coll = am.Side(price=c_price, unit=c.unit, balance=pos["collateral"][c.asset])
                debt = am.Side(price=d_price, unit=d.unit, balance=pos["debt"][d.asset])
                limit = am.max_liquidatable_debt(self.cfg.rules, hf, debt, coll, total_debt)
                for route in self.routes:
                    inv = None if route == "flash" or self.inventory is None else self.inventory.get(d.asset, 0)
                    cap = limit if inv is None else min(limit, inv)
                    if cap <= 0:
                        self.last_skips.append(Skip(user, "no_inventory" if inv == 0 else "dust_or_zero_size",
                                                    {**where, "route": route}))
                        continue
                    candidates.append(Candidate(user, c, d, coll, debt, hf, total_debt, bonus, route, cap,
                                                capped=inv is not None and inv < limit,
                                                fee_clamp=pos["fee_clamp"].get(c.asset)))
        if not candidates:
            self.last_opportunities = []
            return []
        book = await self.swaps.book(head.number) if self.swaps is not None else None
        best: dict[tuple[str, str], Opportunity] = {}
        for k in candidates:
            opp = self._size(head.number, k, book)
            where = {"collateral": k.c.symbol, "debt": k.d.symbol, "route": k.route}
            if isinstance(opp, str):
                self.last_skips.append(Skip(k.user, opp, where))
                continue
            self.last_candidates.setdefault(k.user, []).append(
                ((k.c.symbol, k.d.symbol), opp.gross_profit_usd_e8) if k.route == "inventory"
                else ((k.c.symbol, k.d.symbol, "flash"), opp.gross_profit_usd_e8))
            cur = best.get((k.user, k.route))
            if cur is None or opp.gross_profit_usd_e8 > cur.gross_profit_usd_e8:
                best[(k.user, k.route)] = opp
                self._candidates[(k.user, k.route)] = (head.number, k)
        self.last_opportunities = list(best.values())
        return self.last_opportunities

    @property
    def flash_enabled(self) -> bool:
        return "flash" in self.cfg.routes and bool(self.cfg.flash_liquidator) and self.keeper is not None

    @property
    def routes(self) -> tuple[str, ...]:
        """The routes this keeper can take: both go through the keeper's liquidator contract,
        which sells the seized collateral in the same transaction (the inventory route repays
        from the keeper's balance and gets it back with the profit; the flash route borrows)."""
        out: tuple[str, ...] = ()
        if "inventory" in self.cfg.routes and self.cfg.flash_liquidator:
            out += ("inventory",)
        if self.flash_enabled:
            out += ("flash",)
        return out

    # -- sizing (pure: no I/O) --------------------------------------------------------
    def _size(self, block: int, k: Candidate, book: Any) -> Opportunity | str:
        """The candidate's most profitable size (keeper.sizing over the debt repaid, quoted on
        `book`), or with sizing = "max" the largest the rules and inventory allow; a skip
        reason when no size pays."""
        if book is None:
            return "no_swap_route"

        def evaluate(amount: int) -> tuple[int, Valued] | None:
            v = self._value(k, amount, book)
            return None if v is None else (v.profit_usd_e8, v)

        if self.sizing == "max":
            found = evaluate(k.limit)
            if found is None:
                return self._why_not(k, k.limit, book)
            valued = found[1]
        else:
            lo = max(1, k.limit >> 12)
            best = sizing.maximize(evaluate, lo, k.limit, extra=(k.limit,))
            if best is None:
                return self._why_not(k, k.limit, book)
            valued = best.value  # type: ignore[assignment]
        if valued.profit_debt_units <= 0:
            return "below_min_profit"
        return self._opportunity(block, k, valued)

    def _why_not(self, k: Candidate, amount: int, book: Any) -> str:
        liq = am.collateral_for_debt(amount, k.debt, k.coll, k.bonus, k.c.protocol_fee_bps)
        if liq.debt_to_cover <= 0 or liq.collateral_to_liquidator <= 0 or am.leaves_dust(
                self.cfg.rules, liq, k.debt, k.coll):
            return "no_inventory" if k.capped else "dust_or_zero_size"
        return "no_swap_route"

    def _value(self, k: Candidate, amount: int, book: Any) -> Valued | None:
        """Liquidating `amount` of the debt: what the protocol takes and gives (exact), the
        best swap back on `book`, and the profit in debt base units and USD e8."""
        liq = am.collateral_for_debt(amount, k.debt, k.coll, k.bonus, k.c.protocol_fee_bps)
        if liq.debt_to_cover <= 0 or liq.collateral_to_liquidator <= 0:
            return None
        if am.leaves_dust(self.cfg.rules, liq, k.debt, k.coll):
            return None
        if k.fee_clamp is not None:  # the protocol fee is cut to what is left when all is seized
            liq = am.clamp_protocol_fee(liq, *k.fee_clamp)
        requested = amount
        if requested >= k.debt.balance and self.cfg.rules == "v3.3" and not k.capped:
            # v3.3 refuses to leave dust: a full close asks for "all allowed" so the interest
            # accrued by the next block is repaid too. (v3.0 can revert with an arithmetic
            # underflow when burning the exact full debt, by one wei of rayDiv rounding; there
            # the exact amount read is asked for.)
            requested = MAX_UINT
        # what the contract takes up front (flash loan or pulled from inventory): a full close
        # or all the collateral grows with the interest accrued by the next block, so 0.01%
        # headroom (returned with the profit), never more than was asked for
        upfront = liq.debt_to_cover
        if requested != liq.debt_to_cover:
            upfront = min(requested, liq.debt_to_cover + liq.debt_to_cover // 10_000 + 1)
            if k.route == "inventory" and k.capped:
                upfront = min(upfront, k.limit)
        premium = am.percent_mul(upfront, self.flash_premium_bps) if k.route == "flash" else 0
        route = book.quote(k.c.asset, k.d.asset, liq.collateral_to_liquidator)
        if route is None or route.amount_out <= 0:
            return None
        profit = route.amount_out - liq.debt_to_cover - premium
        sign = 1 if profit >= 0 else -1
        return Valued(amount=amount, requested=requested, liq=liq, route=route, upfront=upfront, premium=premium,
                      profit_debt_units=profit, profit_usd_e8=sign * self._to_usd_e8(k.debt.to_base(abs(profit))))

    def _opportunity(self, block: int, k: Candidate, v: Valued) -> Opportunity:
        c, d, liq, route = k.c, k.d, v.liq, v.route
        debt_value = k.debt.to_base(liq.debt_to_cover)
        received_value = k.coll.to_base(liq.collateral_to_liquidator)
        detail = AaveLiquidation(
            user=k.user, collateral_asset=c.asset, collateral_symbol=c.symbol, debt_asset=d.asset,
            debt_symbol=d.symbol, debt_requested=v.requested, debt_to_cover=liq.debt_to_cover,
            collateral_to_liquidator=liq.collateral_to_liquidator, protocol_fee=liq.protocol_fee,
            health_factor_wad=k.hf, close_factor_bps=am.close_factor_bps(k.hf),
            bonus_usd_e8=self._to_usd_e8(k.coll.to_base(liq.collateral_taken) - debt_value),
            protocol_fee_usd_e8=self._to_usd_e8(k.coll.to_base(liq.protocol_fee)),
            swap_cost_usd_e8=self._to_usd_e8(received_value - k.debt.to_base(route.amount_out)),
            swap_fee_tier=route.fee_tier, swap_out=route.amount_out, route=k.route,
            flash_amount=v.upfront if k.route == "flash" else 0, flash_premium=v.premium,
            flash_premium_usd_e8=self._to_usd_e8(k.debt.to_base(v.premium)),
            swap_route=route.describe(self.symbol), max_size=v.amount == k.limit)
        min_profit = v.profit_debt_units * self.cfg.flash_min_profit_share_bps // 10_000
        hops = len(route.hops)
        if k.route == "inventory":
            plan = TxPlan(
                to=self.cfg.flash_liquidator,
                data=F_INVENTORY.encode(c.asset, d.asset, k.user, v.requested, v.upfront, route.encode(), min_profit),
                gas_limit=self.cfg.gas_limit,
                approvals=(Approval(d.asset, self.cfg.flash_liquidator, v.upfront),),
                description=f"liquidation {c.symbol}/{d.symbol} {k.user} from inventory",
            )
            spend: tuple[tuple[str, int], ...] = ((d.asset, v.upfront),)
            gas = self.cfg.gas_estimate
        else:
            plan = TxPlan(
                to=self.cfg.flash_liquidator,
                data=F_FLASH.encode(c.asset, d.asset, k.user, v.requested, v.upfront, route.encode(), min_profit),
                gas_limit=self.cfg.flash_gas_limit,
                description=f"flash liquidation {c.symbol}/{d.symbol} {k.user}",
            )
            spend = ()
            gas = self.cfg.flash_gas_estimate
        return Opportunity(
            protocol=self.name, kind=self.kind, account=k.user, block=block,
            gross_profit_usd_e8=v.profit_usd_e8, gas_units=gas + HOP_GAS * max(0, hops - 1), plan=plan,
            spend=spend, detail=detail, risk_e18=10**18 - min(k.hf, 10**18), routes=(route,) if hops else ())

    def resize(self, opp: Opportunity, book: Any) -> Opportunity | None:
        """Sized again on `book` (the swaps ranked before it applied): no I/O."""
        found = self._candidates.get((opp.account, opp.detail.route))
        if found is None:
            return opp
        block, k = found
        again = self._size(block, k, book)
        return None if isinstance(again, str) else again

    def _bonus_and_prices(self, pos: dict[str, Any], c: Reserve, d: Reserve) -> tuple[int, int, int]:
        bonus, c_price, d_price = c.liquidation_bonus_bps, c.price, d.price
        emode = pos.get("emode")
        if emode:
            cat_bonus, cat_price = emode
            if c.emode_category == pos["emode_id"]:
                bonus = cat_bonus
                if cat_price:
                    c_price = cat_price
            if cat_price:
                d_price = cat_price
        return bonus, c_price, d_price

    def _to_usd_e8(self, base: int) -> int:
        return base * 10**8 // self.base_unit

    # -- simulation measurement -------------------------------------------------------
    def measure_tokens(self, opp: Opportunity) -> tuple[str, ...]:
        d = opp.detail
        return (d.debt_asset,) if d.collateral_asset == d.debt_asset else (d.collateral_asset, d.debt_asset)

    def measured_profit_usd_e8(self, opp: Opportunity, deltas: dict[str, int], return_data: bytes) -> int | None:
        """Profit from the simulated balance changes of the keeper: both routes pay the profit
        to the keeper in the debt asset (the inventory route returns what it pulled with it);
        any collateral left with the keeper (none expected) is valued at the quoted rate."""
        d = opp.detail
        r = self.reserve(d.debt_asset)
        if r is None or r.price <= 0:
            return None
        debt_units = deltas.get(d.debt_asset, 0)
        if d.collateral_asset != d.debt_asset and d.collateral_to_liquidator:
            debt_units += deltas.get(d.collateral_asset, 0) * d.swap_out // d.collateral_to_liquidator
        return self._debt_units_usd_e8(r, debt_units)

    def _debt_units_usd_e8(self, r: Reserve, units: int) -> int:
        sign = 1 if units >= 0 else -1
        return sign * self._to_usd_e8(abs(units) * r.price // r.unit)

    def realized_gross_usd_e8(self, opp: Opportunity, realized: dict[str, Any]) -> int | None:
        """The profit the keeper's contract paid out (its Liquidated event), at the debt
        asset's oracle price of the block the opportunity was priced on."""
        r = self.reserve(opp.detail.debt_asset)
        if r is None or r.price <= 0 or "profit" not in realized:
            return None
        return self._debt_units_usd_e8(r, realized["profit"])

    async def _positions(self, users: list[str], block: int) -> dict[str, dict[str, Any]]:
        # the reserves' liquidity indexes, then per user: configuration, eMode, and per reserve
        # the aToken balance and scaled balance (for the protocol-fee clamp) and the debt
        calls: list[Call] = [Call(self.pool, F_INCOME.encode(r.asset)) for r in self.reserves]
        per_user = 2 + 4 * len(self.reserves)
        for u in users:
            calls += [Call(self.pool, F_USER_CONFIG.encode(u)), Call(self.pool, F_USER_EMODE.encode(u))]
            for r in self.reserves:
                calls += [Call(r.a_token, F_BALANCE.encode(u)), Call(r.stable_debt, F_BALANCE.encode(u)),
                          Call(r.variable_debt, F_BALANCE.encode(u)), Call(r.a_token, F_SCALED.encode(u))]
        res = await self.mc.run(calls, block)
        index = {r.asset: F_INCOME.decode_one(d) for r, (ok, d) in zip(self.reserves, res) if ok and len(d) == 32}
        res = res[len(self.reserves):]
        out: dict[str, dict[str, Any]] = {}
        emode_ids: set[int] = set()
        for k, u in enumerate(users):
            chunk = res[k * per_user:(k + 1) * per_user]
            (ok_c, cfg_data), (ok_e, em_data) = chunk[0], chunk[1]
            if not ok_c:
                continue
            bitmap = F_USER_CONFIG.decode_one(cfg_data)[0]
            emode_id = F_USER_EMODE.decode_one(em_data) if ok_e else 0
            collateral, debt, clamp = {}, {}, {}
            for j, r in enumerate(self.reserves):
                (ok_a, a), (ok_s, s), (ok_v, v), (ok_sc, sc) = chunk[2 + 4 * j:6 + 4 * j]
                bal = F_BALANCE.decode_one(a) if ok_a else 0
                if bal:
                    collateral[r.asset] = bal
                    if ok_sc and len(sc) == 32 and r.asset in index:
                        clamp[r.asset] = (F_SCALED.decode_one(sc), index[r.asset])
                dbt = (F_BALANCE.decode_one(s) if ok_s and len(s) == 32 else 0) + (F_BALANCE.decode_one(v) if ok_v else 0)
                if dbt:
                    debt[r.asset] = dbt
            if emode_id:
                emode_ids.add(emode_id)
            out[u] = {"collateral": collateral, "debt": debt, "emode_id": emode_id, "fee_clamp": clamp,
                      "uses_as_collateral": (lambda rid, b=bitmap: bool((b >> (rid * 2 + 1)) & 1))}
        if emode_ids:
            ids = sorted(emode_ids)
            res = await self.mc.run([Call(self.pool, F_EMODE.encode(i)) for i in ids], block)
            cats: dict[int, tuple[int, int]] = {}
            cat_problems: dict[int, str] = {}
            srcs = []
            for i, (ok, data) in zip(ids, res):
                if ok:
                    cat = F_EMODE.decode_one(data)  # (ltv, liquidationThreshold, liquidationBonus, priceSource, label)
                    cats[i] = (cat[2], 0)
                    if int(cat[3], 16) if isinstance(cat[3], str) else cat[3]:
                        srcs.append((i, cat[3]))
            if srcs:
                pres = await self.mc.run([Call(self.oracle, F_PRICE.encode(s)) for _, s in srcs], block)
                for (i, _), (ok, data) in zip(srcs, pres):
                    price, problem = read_price(ok, data)
                    if problem:  # the protocol would price this category with it too: skip, never guess
                        cat_problems[i] = problem
                    else:
                        cats[i] = (cats[i][0], price)
            for pos in out.values():
                if pos["emode_id"] in cats:
                    pos["emode"] = cats[pos["emode_id"]]
                if pos["emode_id"] in cat_problems:
                    pos["emode_price_problem"] = cat_problems[pos["emode_id"]]
        return out

    # -- views and outcomes -----------------------------------------------------------
    def explain_revert(self, reason: str) -> str:
        return explain(reason)

    def parse_outcome(self, receipt: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for lg in receipt.get("logs", []):
            if (self.cfg.flash_liquidator and lg.get("topics") and lg["topics"][0] == EV_FLASH.topic0
                    and lg["address"].lower() == self.cfg.flash_liquidator.lower()):
                out["profit"] = EV_FLASH.decode(lg)["profit"]  # debt base units sent to the owner
        for lg in receipt.get("logs", []):
            if lg.get("topics") and lg["topics"][0] == EV_LIQUIDATION.topic0 and lg["address"].lower() == self.pool.lower():
                ev = EV_LIQUIDATION.decode(lg)
                out.update({"debt_repaid": ev["debtToCover"], "collateral_received": ev["liquidatedCollateralAmount"],
                            "collateral_asset": abi.to_checksum(ev["collateralAsset"]),
                            "debt_asset": abi.to_checksum(ev["debtAsset"]), "user": abi.to_checksum(ev["user"])})
                return out
        return out

    def describe(self, opp: Opportunity) -> str:
        d = opp.detail
        r = self.reserve(d.debt_asset)
        amount = d.debt_to_cover / 10**r.decimals if r else d.debt_to_cover
        return f"repay {amount:,.4f} {d.debt_symbol} for {d.collateral_symbol}"

    def symbol(self, asset: str) -> str:
        for r in self.reserves:
            if r.asset.lower() == asset.lower():
                return r.symbol
        return asset

    def reserve(self, asset: str) -> Reserve | None:
        for r in self.reserves:
            if r.asset.lower() == asset.lower():
                return r
        return None

    def can_price_native(self) -> bool:
        return any(r.symbol.upper() in NATIVE_SYMBOLS for r in self.reserves)

    def native_price_usd_e8(self) -> int | None:
        for r in self.reserves:
            if r.symbol.upper() in NATIVE_SYMBOLS and r.price > 0 and r.price_problem is None:
                return self._to_usd_e8(r.price)
        return None

    def positions(self) -> list[dict[str, Any]]:
        best = {o.account: o for o in self.last_opportunities}
        rows = []
        for a, h in self.health.items():
            coll, debt = self._to_usd_e8(h.collateral_base) / 1e8, self._to_usd_e8(h.debt_base) / 1e8
            hf = h.health_factor_wad / 1e18
            # HF is linear in the collateral prices: all of them falling by 1 - 1/HF (debt held)
            # brings it to 1, e.g. HF 1.25 -> liquidatable 20% lower
            to_liq = f", liquidatable at collateral prices {100 * (1 / hf - 1):+.1f}%" if hf >= 1 else ", liquidatable now"
            rows.append({"protocol": self.name, "account": a, "collateral_usd": coll, "debt_usd": debt,
                         "health_factor": hf, "liquidation_move_pct": 100 * (1 / hf - 1) if hf > 0 else None,
                         "summary": f"collateral ${coll:,.0f} debt ${debt:,.0f}{to_liq}", "opportunity": best.get(a)})
        rows.sort(key=lambda r: r["health_factor"])
        return rows


def _unpriced(reserves: list[Reserve]) -> dict[str, str]:
    """The skip detail naming the assets whose price is unavailable and why."""
    return {"asset": ",".join(r.symbol for r in reserves), "problem": ",".join(r.price_problem or "" for r in reserves)}


def _draft(user: str, c: Reserve, d: Reserve, requested: int, liq: am.Liquidation, hf: int,
           route: str) -> AaveLiquidation:
    return AaveLiquidation(
        user=user, collateral_asset=c.asset, collateral_symbol=c.symbol, debt_asset=d.asset, debt_symbol=d.symbol,
        debt_requested=requested, debt_to_cover=liq.debt_to_cover,
        collateral_to_liquidator=liq.collateral_to_liquidator, protocol_fee=liq.protocol_fee,
        health_factor_wad=hf, close_factor_bps=am.close_factor_bps(hf),
        bonus_usd_e8=0, protocol_fee_usd_e8=0, swap_cost_usd_e8=0, swap_fee_tier=0, swap_out=0, route=route)


def _fields(x: AaveLiquidation) -> dict[str, Any]:
    return {f: getattr(x, f) for f in x.__dataclass_fields__}


def _decode_symbol(data: bytes) -> str:
    try:
        return ERC20.fn("symbol").decode_one(data)
    except Exception:
        return data[:32].rstrip(b"\0").decode("utf-8", "replace") or "?"
