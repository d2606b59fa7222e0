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

The adapter's jobs are split: config.py (its section), model.py (reserves, accounts,
candidates), calls.py (the contract functions), actions.py (routes, sizing, encoding),
views.py (read-back and display); this file does the reading: start-up, discovery,
refresh and positions.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from ... import abi
from ...errors import BadResponseError, ConfigError
from ...multicall import Call
from ...types import ChainLiquidation, Head, Opportunity
from ..base import BaseAdapter, Skip, log_chunks, require_code, trigger_tag
from . import chainstate, local, math as am, versions
from .actions import Actions
from .calls import (BORROW_TOPIC, EV_BALANCE_TRANSFER, EV_LIQUIDATION, POSITION_TOPICS, F_ACCOUNT, F_BALANCE, F_BASE_UNIT, F_CONFIGURATION, F_DECIMALS,
                    F_EMODE, F_FLASH_PREMIUM, F_INCOME, F_PRICE, F_RESERVE_DATA, F_RESERVES, F_ROUND, F_SCALED,
                    F_SOURCE, F_SYMBOL, F_USER_CONFIG, F_USER_EMODE, PROVIDER, _decode_symbol, read_price)
from .config import AaveV3Config, parse_config
from .model import AccountHealth, Candidate, Reserve, _unpriced
from .views import Views

CONFIRM_BELOW_WAD = 1_010_000_000_000_000_000  # local health below 1.01: confirmed on chain before acting
CONFIRM_AHEAD = 256  # the accounts nearest the threshold, confirmed with the block read


async def _none() -> Any:
    return None


__all__ = ["Adapter", "AaveV3Config", "parse_config", "Reserve", "read_price"]


class Adapter(Actions, Views, BaseAdapter):
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
        self._candidates: dict[tuple[str, ...], tuple[int, Candidate]] = {}
        # accounts whose getUserAccountData failed in the last refresh -> (reason, detail)
        self.unreadable: dict[str, tuple[str, dict[str, Any]]] = {}
        # the local health model (health = "local"): positions kept from events
        self.dirty: set[str] = set()  # tracked accounts an event touched since they were read
        self._a_tokens: set[str] = set()  # lowercase aToken addresses (their BalanceTransfer)
        self.model: dict[str, local.AccountState] = {}
        self.rstates: dict[int, local.ReserveState] = {}
        self.emode_cats: dict[int, local.EModeCategory] = {}
        self.exposed: dict[int, set[str]] = {}  # reserve id -> accounts whose health depends on it
        self.near: set[str] = set()  # accounts below near_health_factor: recomputed every block
        self.checked_at: int | None = None  # the last full check against getUserAccountData
        self.disagreements = 0  # local health that differed from the chain's (logged each time)
        self.recomputed = 0  # accounts whose health the last refresh computed again
        self._seen_prices: dict[int, tuple[int, int]] = {}  # reserve id -> (price, configuration) last used
        self._emode_prices: dict[int, int] = {}  # eMode category -> its price source's price, this block
        self.version: versions.AaveVersion = versions.V3_0  # detected at start (versions.py)
        self.emode_bitmaps: dict[int, int] = {}  # v3.2+: category -> collateral bitmap, read at start
        self._grace_ts = 0  # the timestamp the next block is expected at (grace periods end before it)
        self._block_read: tuple[int, list[tuple[int, str]], asyncio.Future[Any]] | None = None
        self._ahead: list[str] = []  # accounts whose getUserAccountData rides along with the block read

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
        await self._apply_version(await versions.detect(self.mc, self.pool))
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
                      reserves=[r.symbol for r in self.reserves], rules=self.cfg.rules, health=self.cfg.health,
                      **{f"aave_{k}": v for k, v in self.version.describe().items()})

    async def _apply_version(self, version: versions.AaveVersion) -> None:
        """The detected version's rules: the rule set (unless the config names one), health
        from the chain where the local model does not implement the version, and (v3.2+)
        the eMode categories' collateral bitmaps."""
        self.version = version
        if self.cfg.rules == "auto":
            self.cfg = replace(self.cfg, rules=version.rules)
        elif self.cfg.rules != version.rules:
            self.log.warning("aave_rules_differ", configured=self.cfg.rules, detected=version.rules,
                             version=version.name, revision=version.revision)
        if self.cfg.health == "local" and not version.local_model:
            self.log.warning("aave_health_from_chain", version=version.name, revision=version.revision,
                             reason="the local health model does not implement this Aave version")
            self.cfg = replace(self.cfg, health="chain")
        if version.emode == "bitmap":
            self.emode_bitmaps = await versions.read_emode_bitmaps(self.mc, self.pool)

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
        self._a_tokens = {r.a_token.lower() for r in reserves}

    # -- discovery --------------------------------------------------------------------
    async def sync(self, head: Head) -> int:
        """Read the pool's position events (and the aTokens' BalanceTransfer) from the last
        synced block to head, in chunks (one eth_getLogs per chunk). Borrowers become tracked
        accounts; every tracked account an event touches is marked to be read again (the
        local health model); liquidations after the keeper started are kept for
        drain_liquidations(). Returns new accounts."""
        before = len(self.accounts)
        if self.live_from is None:
            self.live_from = head.number  # liquidations before the keeper ran are history
        if self.cfg.health == "local" and self.reserves:  # the block read needs no log: it goes out now
            self._prefetch(head)
        addresses = [self.pool] + [r.a_token for r in self.reserves]
        async for last, logs in log_chunks(self.rpc, addresses, [list(POSITION_TOPICS)],
                                           self.synced_to + 1, head.number, self.chunk_blocks, self.log,
                                           what=f"{self.name} borrowers", found=lambda: len(self.accounts)):
            for lg in logs:
                try:
                    self._on_log(lg)
                except (KeyError, IndexError, TypeError, ValueError):
                    raise BadResponseError("eth_getLogs: malformed Aave position event") from None
            self.synced_to = last
        return len(self.accounts) - before

    def _on_log(self, lg: dict[str, Any]) -> None:
        topic0 = lg["topics"][0]
        where = POSITION_TOPICS.get(topic0)
        if where is None:
            return
        if topic0 == EV_BALANCE_TRANSFER.topic0:
            if lg["address"].lower() not in self._a_tokens:
                return
        elif lg["address"].lower() != self.pool.lower():
            return
        for i in where:
            user = abi.to_checksum("0x" + lg["topics"][i][-40:])
            if topic0 == BORROW_TOPIC:
                self.accounts.add(user)
            if user in self.accounts and self.cfg.health == "local":
                self.dirty.add(user)
        if topic0 == EV_LIQUIDATION.topic0 and int(lg["blockNumber"], 16) > self.live_from:
            self._chain_liquidations.append(self._chain_liquidation(lg))

    def liquidation_log_filter(self) -> tuple[list[str], list[str]]:
        return [self.pool], [EV_LIQUIDATION.topic0]

    def liquidations_from_logs(self, logs: list[dict[str, Any]]) -> list[ChainLiquidation]:
        return [self._chain_liquidation(lg) for lg in logs
                if lg["topics"] and lg["topics"][0] == EV_LIQUIDATION.topic0 and lg["address"].lower() == self.pool.lower()]

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
        if self.version.grace_period:
            calls += [Call(self.pool, versions.F_GRACE_PERIOD.encode(r.asset)) for r in self.reserves]
        calls += [Call(self.pool, F_ACCOUNT.encode(a)) for a in accounts]
        return calls

    async def refresh(self, head: Head) -> list[str]:
        """One batched read of prices, reserve configurations, inventory and every account's
        health (getUserAccountData). Returns the liquidatable accounts. (health = "chain";
        refresh_local() is the default.)

        A price that reverts or is not positive marks only its asset unavailable (one
        `price_unavailable` warning per asset per block); an account whose
        getUserAccountData fails is left out of this block and recorded in `unreadable`."""
        accounts = sorted(self.accounts)
        res = await self.mc.run(self._block_calls(accounts), head.number)
        i = self._apply_block(res, head)
        chain, failed = self._decode_account_data(accounts, res[i:])
        liquidatable: list[str] = []
        for a, h in chain.items():
            if h.debt_base == 0:
                self.accounts.discard(a)  # repaid: a new Borrow event brings it back
                continue
            if am.is_liquidatable(h.health_factor_wad, h.debt_base):
                liquidatable.append(a)
        self.health = {a: h for a, h in chain.items() if h.debt_base}
        self.unreadable = await self._why_unreadable(failed, head.number) if failed else {}
        return liquidatable

    def _apply_block(self, res: list[tuple[bool, bytes]], head: Head) -> int:
        """Prices, configurations, price ages and the keeper's inventory from the block read
        (_block_calls); returns where the answers after them start."""
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
        if self.version.grace_period:
            for r in self.reserves:
                ok, data = res[i]
                # unreadable: assume a grace period that has not ended (skipped, never reverted)
                r.grace_until = int.from_bytes(data, "big") if ok and len(data) == 32 else 2**40 - 1
                i += 1
            self._grace_ts = head.timestamp + max(1, self.block_time_s)
        return i

    @staticmethod
    def _decode_account_data(accounts: list[str], res: list[tuple[bool, bytes]]
                             ) -> tuple[dict[str, AccountHealth], list[str]]:
        """getUserAccountData answers: (account -> health, accounts whose call failed)."""
        out: dict[str, AccountHealth] = {}
        failed: list[str] = []
        for a, (ok, data) in zip(accounts, res):
            if not ok or len(data) != 192:
                failed.append(a)  # this account only: Aave's own price read reverted, or worse
                continue
            coll, debt, _avail, lt, _ltv, hf = F_ACCOUNT.decode(data)
            out[a] = AccountHealth(coll, debt, lt, hf)
        return out, failed

    # -- health kept off-chain (health = "local") -------------------------------------
    async def refresh_local(self, head: Head) -> list[str]:
        """Health from the local model (local.py, exact to the wei), returning the accounts
        the chain confirms liquidatable.

        One round of concurrent requests whatever the number of accounts: the block read
        (prices, configurations, inventory, eMode prices), every reserve's state (indexes,
        rates), and the accounts an event touched since they were read (or new ones). Health
        is computed again only for those, for the accounts exposed to a reserve whose price
        or configuration moved, and for the ones near the threshold (below
        near_health_factor); the node is asked getUserAccountData only for the accounts the
        model finds below CONFIRM_BELOW_WAD (to confirm before acting), and every
        full_check_blocks for all of them: any difference is logged (`health_disagreement`)
        and counted, and the account is read again."""
        accounts = self.accounts
        # new borrowers come with their Borrow event, failed reads are marked again: the
        # accounts to read are the marked ones (nothing per block is O(all accounts))
        fresh_users = sorted(a for a in self.dirty if a in accounts)
        self.dirty.clear()
        full = self.checked_at is None or head.number - self.checked_at >= self.cfg.full_check_blocks
        cat_ids = set(self.emode_cats) if not full else {m.emode_category for m in self.model.values()
                                                           if m.emode_category}
        cat_sources, block_read = self._prefetch(head)
        self._block_read = None
        failed: dict[str, str] = {}
        checked = sorted(accounts) if full else []
        jobs = [block_read,
                chainstate.read_accounts(self.mc, self.pool, self.reserves, fresh_users, head.number, failed)
                if fresh_users else _none(),
                self.mc.run([Call(self.pool, F_ACCOUNT.encode(a)) for a in checked], head.number) if checked else _none()]
        res, fresh, check_res = await asyncio.gather(*jobs)
        i = self._apply_block(res, head)
        emode_prices = {}
        for (cid, _), (ok, data) in zip(cat_sources, res[i:]):
            price, problem = read_price(ok, data)
            if not problem:
                emode_prices[cid] = price
        ahead, _ = self._decode_account_data(self._ahead, res[i + len(cat_sources) + len(self.reserves):])
        rstates: dict[int, local.ReserveState] = {}
        for r, (ok, data) in zip(self.reserves, res[i + len(cat_sources):]):
            if not ok:
                raise BadResponseError(f"getReserveData({r.asset}) failed")
            st = chainstate.decode_reserve_data(data, r.asset)
            rstates[st.id] = st
        self.rstates = rstates
        self._emode_prices = emode_prices
        for u in failed:
            self.dirty.add(u)  # read again next block
        recompute: set[str] = set(fresh or ())
        for u, st in (fresh or {}).items():
            old = self.model.get(u)
            if old is not None:
                for rid in old.exposure - st.exposure:
                    self.exposed.get(rid, set()).discard(u)
            for rid in st.exposure:
                self.exposed.setdefault(rid, set()).add(u)
            self.model[u] = st
            if st.emode_category and st.emode_category not in self.emode_cats:
                cat_ids.add(st.emode_category)
        new_cats = {c for c in cat_ids if c not in self.emode_cats}
        if new_cats or full:
            self.emode_cats.update(await chainstate.read_emode_categories(
                self.mc, self.pool, cat_ids if full else new_cats, head.number))
            if new_cats:
                recompute |= {u for u, m in self.model.items() if m.emode_category in new_cats}
            unpriced_cats = [(i, c.price_source) for i, c in sorted(self.emode_cats.items())
                             if c.has_price_source and i not in emode_prices]
            if unpriced_cats:  # a category first seen this block: its price source's price too
                res = await self.mc.run([Call(self.oracle, F_PRICE.encode(src)) for _, src in unpriced_cats],
                                        head.number)
                for (cid, _), (ok, data) in zip(unpriced_cats, res):
                    price, problem = read_price(ok, data)
                    if not problem:
                        emode_prices[cid] = price
        moved = [r for r in self.reserves if self._seen_prices.get(r.id) != (r.price, r.configuration)]
        for r in moved:
            recompute |= self.exposed.get(r.id, set())
            self._seen_prices[r.id] = (r.price, r.configuration)
        if full:
            recompute = set(self.model)
        else:
            recompute |= self.near
        recompute = {u for u in recompute if u in self.model}
        # as the chain: an oracle answering 0 values the asset at 0 (the pairs using it are
        # skipped when sized); one that reverts makes getUserAccountData revert
        prices = {r.id: r.price for r in self.reserves if r.price_problem in (None, "zero")}
        unpriced = {r.id: r for r in self.reserves if r.price_problem not in (None, "zero")}
        unreadable: dict[str, tuple[str, dict[str, Any]]] = {}
        computed: set[str] = set()  # this block's health
        confirm: list[str] = []  # below CONFIRM_BELOW_WAD: asked of the node before acting
        repaid: list[str] = []
        near, health, model = self.near, self.health, self.model
        near_wad, ts, cats = self.cfg.near_health_factor_wad, head.timestamp, self.emode_cats
        account_data = local.account_data
        # a large set is walked in the model's order (memory locality: ~2x faster at 100,000)
        order = ((u, model[u]) for u in recompute) if len(recompute) * 4 < len(model) else \
            ((u, st) for u, st in model.items() if u in recompute)
        for u, st in order:
            if unpriced and not st.exposure.isdisjoint(unpriced):
                unreadable[u] = ("price_unavailable", _unpriced([unpriced[rid] for rid in st.exposure if rid in unpriced]))
                continue
            try:
                d = account_data(st, rstates, prices, cats, emode_prices, ts)
            except KeyError:  # an eMode category or its price the model does not have
                unreadable[u] = ("price_unavailable", {"asset": f"eMode {st.emode_category} price source",
                                                       "problem": "unavailable"})
                continue
            except ValueError as e:  # a reserve state newer than the block (a node that answered late)
                raise BadResponseError(f"reserve state read after block {head.number}: {e}") from None
            computed.add(u)
            hf = d.health_factor_wad
            if d.total_debt_base == 0:
                repaid.append(u)
                continue
            health[u] = AccountHealth(d.total_collateral_base, d.total_debt_base, d.avg_liquidation_threshold_bps, hf)
            if hf < near_wad:
                near.add(u)
                if hf < CONFIRM_BELOW_WAD:
                    confirm.append(u)
            else:
                near.discard(u)
        for u in repaid:
            self.accounts.discard(u)  # repaid: a new Borrow event brings it back
            self._forget(u)
        self.recomputed = len(computed)
        for u, why in failed.items():
            if u in self.accounts:
                unreadable[u] = ("account_data_failed", {"call": why})
        self.unreadable = unreadable
        if full:
            chain, _ = self._decode_account_data(checked, check_res)
            self._compare(head, chain, "full_check")
            self.checked_at = head.number
            self.log.info("health_checked", block=head.number, accounts=len(chain), disagreements=self.disagreements)
        else:
            chain = {}
        known = {u: ahead[u] for u in confirm if u in ahead and u not in chain}
        if known:
            self._compare(head, known, "confirm")
            chain.update(known)
        confirm = sorted(u for u in confirm if u not in chain)
        if confirm:
            res = await self.mc.run([Call(self.pool, F_ACCOUNT.encode(a)) for a in confirm], head.number)
            confirmed, _ = self._decode_account_data(confirm, res)
            self._compare(head, confirmed, "confirm")
            chain.update(confirmed)
        return sorted(u for u, h in chain.items() if u in self.model and am.is_liquidatable(h.health_factor_wad, h.debt_base))

    def _prefetch(self, head: Head) -> tuple[list[tuple[int, str]], asyncio.Future[Any]]:
        """The block read of refresh_local (prices, configurations, ages, inventory, eMode
        prices, reserve states), started once per block: sync() starts it beside its logs."""
        if self._block_read is not None and self._block_read[0] == head.number:
            return self._block_read[1], self._block_read[2]
        calls = self._block_calls([])
        cat_sources = [(i, c.price_source) for i, c in sorted(self.emode_cats.items()) if c.has_price_source]
        calls += [Call(self.oracle, F_PRICE.encode(src)) for _, src in cat_sources]
        calls += [Call(self.pool, F_RESERVE_DATA.encode(r.asset)) for r in self.reserves]
        # the accounts nearest the threshold are confirmed in the same request (no round trip
        # of its own when one of them becomes liquidatable)
        self._ahead = sorted(self.near, key=lambda u: self.health[u].health_factor_wad if u in self.health else 0
                             )[:CONFIRM_AHEAD]
        calls += [Call(self.pool, F_ACCOUNT.encode(a)) for a in self._ahead]
        fut = asyncio.ensure_future(self.mc.run(calls, head.number))
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved by refresh_local
        self._block_read = (head.number, cat_sources, fut)
        return cat_sources, fut

    def _compare(self, head: Head, chain: dict[str, AccountHealth], why: str) -> None:
        """The chain's getUserAccountData against the model's, for the same block: a
        difference is logged and counted, the chain's answer kept, and the account re-read."""
        for u, h in chain.items():
            mine = self.health.get(u)
            if mine is None and h.debt_base == 0:
                continue
            if mine != h:
                self.disagreements += 1
                self.log.warning("health_disagreement", block=head.number, account=u, check=why,
                                 local_hf=None if mine is None else mine.health_factor_wad,
                                 chain_hf=h.health_factor_wad,
                                 local_debt=None if mine is None else mine.debt_base, chain_debt=h.debt_base)
                self.dirty.add(u)
                if h.debt_base:
                    self.health[u] = h
                    self.near.add(u)

    def _forget(self, u: str) -> None:
        st = self.model.pop(u, None)
        if st is not None:
            for rid in st.exposure:
                self.exposed.get(rid, set()).discard(u)
        self.near.discard(u)
        self.health.pop(u, None)

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
        local_health = self.cfg.health == "local"
        liquidatable = await (self.refresh_local(head) if local_health else self.refresh(head))
        self.last_skips = [Skip(u, reason, detail) for u, (reason, detail) in self.unreadable.items()]
        self.last_candidates = {}
        self._candidates = {}
        if not liquidatable:
            self.last_opportunities = []
            return []
        positions = (self._positions_local(liquidatable, head.timestamp) if local_health
                     else await self._positions(liquidatable, head.number))
        for user in liquidatable:
            if user not in positions:
                self.last_skips.append(Skip(user, "account_data_failed", {"call": "getUserConfiguration"}))
        health = {u: (self.health[u].health_factor_wad, self.health[u].debt_base) for u in positions}
        candidates = self._candidates_for(positions, health, self.reserves, self.last_skips)
        book = await self.swaps.book(head.number) if self.swaps is not None and candidates else None
        self.last_opportunities = self._best(candidates, head.number, self.last_skips, book)
        return self.last_opportunities

    def _candidates_for(self, positions: dict[str, dict[str, Any]], health: dict[str, tuple[int, int]],
                        reserves: list[Reserve], skips: list[Skip]) -> list[Candidate]:
        """Each (account, pair, route) the rules allow, from the accounts' positions, their
        (health factor, total debt) and the reserves as priced (no I/O)."""
        bad_prices = {r.asset: r for r in reserves if r.price_problem}
        stale = {r.asset for r in reserves
                 if self.cfg.max_price_age_s and r.price_age_s is not None and r.price_age_s > self.cfg.max_price_age_s}
        candidates: list[Candidate] = []
        for user, pos in positions.items():
            if pos.get("emode_price_problem"):
                skips.append(Skip(user, "price_unavailable", {
                    "asset": f"eMode {pos['emode_id']} price source", "problem": pos["emode_price_problem"]}))
                continue
            hf, total_debt = health[user]
            bitmap = 0
            if self.version.emode == "bitmap" and pos.get("emode_id"):
                cat = self.emode_cats.get(pos["emode_id"])
                bitmap = cat.collateral_bitmap if cat is not None and cat.collateral_bitmap is not None \
                    else self.emode_bitmaps.get(pos["emode_id"])
                if bitmap is None or not pos.get("emode"):  # never guess a bonus
                    skips.append(Skip(user, "emode_category_unknown", {"emode": pos["emode_id"]}))
                    continue
            pairs = [(c, d) for c in reserves for d in reserves
                     if pos["collateral"].get(c.asset, 0) and pos["uses_as_collateral"](c.id)
                     and c.liquidation_threshold_bps and pos["debt"].get(d.asset, 0)]
            if not pairs:
                skips.append(Skip(user, "no_collateral_debt_pair"))
            for c, d in pairs:
                where = {"collateral": c.symbol, "debt": d.symbol}
                if not (c.active and d.active) or c.paused or d.paused:
                    skips.append(Skip(user, "reserve_paused_or_inactive", where))
                    continue
                unpriced = [bad_prices[a] for a in dict.fromkeys((c.asset, d.asset)) if a in bad_prices]
                if unpriced:
                    skips.append(Skip(user, "price_unavailable", {**where, **_unpriced(unpriced)}))
                    continue
                if {c.asset, d.asset} & stale:
                    skips.append(Skip(user, "stale_price", where))
                    continue
                grace = [r for r in ((c, d) if c.asset != d.asset else (c,))
                         if r.grace_until and r.grace_until >= self._grace_ts] if self.version.grace_period else []
                if grace:  # ValidationLogic: LIQUIDATION_GRACE_SENTINEL_CHECK_FAILED until then
                    skips.append(Skip(user, "grace_period", {**where, "asset": ",".join(r.symbol for r in grace),
                                                             "until": max(r.grace_until for r in grace)}))
                    continue
                if self.version.emode == "bitmap":
                    bonus, c_price, d_price = versions.bonus_and_prices_bitmap(pos, c, d, bitmap)
                else:
                    bonus, c_price, d_price = self._bonus_and_prices(pos, c, d)
                coll = am.Side(price=c_price, unit=c.unit, balance=pos["collateral"][c.asset])
                debt = am.Side(price=d_price, unit=d.unit, balance=pos["debt"][d.asset])
                limit = am.max_liquidatable_debt(self.cfg.rules, hf, debt, coll, total_debt)
                if self.cfg.rules == "v3.0" and limit >= debt.balance > 1:
                    # v3.0 burns the variable debt as amount.rayDiv(index), rounded half up: asking
                    # for exactly the whole balance can burn one scaled unit more than the user has
                    # and revert (panic 0x11) when no interest accrues before the block; one wei
                    # less never does (v3.0 has no dust rule)
                    limit = debt.balance - 1
                for route in self.routes:
                    inv = None if route == "flash" or self.inventory is None else self.inventory.get(d.asset, 0)
                    cap = limit if inv is None else min(limit, inv)
                    if cap <= 0:
                        skips.append(Skip(user, "no_inventory" if inv == 0 else "dust_or_zero_size",
                                          {**where, "route": route}))
                        continue
                    candidates.append(Candidate(user, c, d, coll, debt, hf, total_debt, bonus, route, cap,
                                                capped=inv is not None and inv < limit,
                                                fee_clamp=pos["fee_clamp"].get(c.asset)))
        return candidates

    def _best(self, candidates: list[Candidate], block: int, skips: list[Skip], book: Any,
              behind: str | None = None) -> list[Opportunity]:
        """Each candidate sized on the block's pool book; the best pair per account and route
        (no I/O)."""
        if not candidates:
            return []
        best: dict[tuple[str, str], Opportunity] = {}
        for k in candidates:
            opp = self._size(block, k, book)
            where = {"collateral": k.c.symbol, "debt": k.d.symbol, "route": k.route}
            if isinstance(opp, str):
                skips.append(Skip(k.user, opp, where))
                continue
            self.last_candidates.setdefault(k.user, []).append(
                ((k.c.symbol, k.d.symbol), opp.gross_profit_usd_e8) if k.route == "inventory"
                else ((k.c.symbol, k.d.symbol, "flash"), opp.gross_profit_usd_e8))
            cur = best.get((k.user, k.route))
            if cur is None or opp.gross_profit_usd_e8 > cur.gross_profit_usd_e8:
                best[(k.user, k.route)] = opp
                # a reaction's candidates (priced at a pending answer) are kept apart from the block's
                self._candidates[(k.user, k.route) if behind is None else (k.user, k.route, behind)] = (block, k)
        return list(best.values())

    # -- same-block reaction to a pending oracle update ---------------------------------
    def oracle_sources(self) -> set[str]:
        """The price sources (Chainlink-style aggregators or proxies) the AaveOracle reads."""
        return {r.price_source for r in self.reserves if r.price_source and int(r.price_source, 16)}

    async def react(self, head: Head, answers: dict[str, int], trigger: Any) -> list[Opportunity]:
        """The liquidations a pending oracle update opens: `answers` maps price sources
        (lowercase) to the answer the pending transaction sets. Only the accounts exposed to
        the moved reserves are computed again (the local model, at the next block's time),
        at the new price; the ones it makes liquidatable are sized as in a block and carry
        the trigger, so the executor simulates them after it and sends them right behind it.
        Needs health = "local" (the model); otherwise nothing."""
        if self.cfg.health != "local" or not self.rstates:
            return []
        hit = {r.id: answers[r.price_source.lower()] for r in self.reserves
               if r.price_source.lower() in answers and answers[r.price_source.lower()] > 0}
        if not hit:
            return []
        reserves = [replace(r, price=hit[r.id], price_problem=None, price_age_s=0) if r.id in hit else r
                    for r in self.reserves]
        prices = {r.id: r.price for r in reserves if r.price_problem in (None, "zero")}
        ts = head.timestamp + self.block_time_s
        users = sorted(set().union(*(self.exposed.get(rid, set()) for rid in hit)))
        health: dict[str, tuple[int, int]] = {}
        for u in users:
            st = self.model.get(u)
            if st is None or any(rid not in prices for rid in st.exposure):
                continue
            try:
                d = local.account_data(st, self.rstates, prices, self.emode_cats, self._emode_prices, ts)
            except KeyError:
                continue
            if am.is_liquidatable(d.health_factor_wad, d.total_debt_base):
                health[u] = (d.health_factor_wad, d.total_debt_base)
        if not health:
            return []
        book = await self.swaps.book(head.number) if self.swaps is not None else None
        # from here on no await: the block cycle never sees the pending price
        positions = self._positions_local(sorted(health), ts, reserves)
        skips: list[Skip] = []
        found = self._best(self._candidates_for(positions, health, reserves, skips), head.number, skips, book,
                           behind=trigger_tag(trigger))
        self.log.info("oracle_update_reaction", tx=getattr(trigger, "hash", None), exposed=len(users),
                      liquidatable=len(health), opportunities=len(found), skipped=len(skips))
        return [replace(o, behind=trigger) for o in found]

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

    def _positions_local(self, users: list[str], ts: int, reserves: list[Reserve] | None = None
                         ) -> dict[str, dict[str, Any]]:
        """What _positions reads, from the local model at `ts` (no I/O): the balances are
        the scaled balances times the reserves' indexes at ts, exactly as balanceOf."""
        by_id = {r.id: r for r in (reserves or self.reserves)}
        out: dict[str, dict[str, Any]] = {}
        for u in users:
            st = self.model.get(u)
            if st is None:
                continue
            collateral, debt, clamp = {}, {}, {}
            for rid, (coll, dbt) in local.balances(st, self.rstates, ts).items():
                r = by_id.get(rid)
                if r is None:
                    continue
                if coll:
                    collateral[r.asset] = coll
                    clamp[r.asset] = (st.collateral.get(rid, 0), self.rstates[rid].indexes(ts)[0])
                if dbt:
                    debt[r.asset] = dbt
            pos: dict[str, Any] = {"collateral": collateral, "debt": debt, "emode_id": st.emode_category,
                                   "fee_clamp": clamp,
                                   "uses_as_collateral": (lambda rid, b=st.config: bool((b >> (rid * 2 + 1)) & 1))}
            cat = self.emode_cats.get(st.emode_category) if st.emode_category else None
            if cat is not None:
                price = self._emode_prices.get(st.emode_category, 0) if cat.has_price_source else 0
                pos["emode"] = (cat.liquidation_bonus, price)
                if cat.has_price_source and not price:
                    pos["emode_price_problem"] = "unavailable"
            out[u] = pos
        return out
