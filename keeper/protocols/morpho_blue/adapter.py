"""Morpho Blue adapter: markets and positions from Morpho's events, health computed off-chain
exactly as Morpho.sol does (math.py: interest accrued to the next block's time with the
market's IRM rate, shares rounded up, LLTV), liquidations sized for profit and carried out with
no capital through the keeper's MorphoLiquidator and Morpho's onMorphoLiquidate callback.

Per block: one request with every market's stored state (`market(id)`), its oracle price, the
loan tokens' USD feeds, and the positions an event touched since they were last read (every
`full_check_blocks`, all of them); one more with each market's IRM rate for the state just read
(`borrowRateView(marketParams, market)`: the rate `_accrueInterest` will use, exact for IRMs
whose rate is a function of the stored market, as the devnet's IrmMock or a fixed-rate IRM;
for an AdaptiveCurveIrm it is the rate at the read block, confirmed by the simulation). The
positions found liquidatable are read again from the node (confirmation) before they are sized.

The adapter's jobs are split: config.py (its section), model.py (markets, positions, sizing
records), calls.py (the contract functions and events), math.py (Morpho's arithmetic),
actions.py (sizing, encoding), views.py (read-back and display); this file does the reading.

One action per borrower and block (Opportunity.key is per account): a borrower liquidatable in
several markets gets the best one now and the next one in a later block.

Same-block reactions: for a market whose oracle is of the MorphoChainlinkOracle(V2) shape
without vaults (price = SCALE_FACTOR * base feeds / quote feeds, floor) and whose price that
formula reproduces from the block's feed answers (checked every block), a pending update of
one of its feeds gives the market's next price: the positions of that market are re-priced at
it and the liquidations it opens are sent right behind the update (react()).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ... import abi
from ...errors import BadResponseError
from ...multicall import Call
from ...types import ChainLiquidation, Head, Opportunity
from ..base import BaseAdapter, Skip, log_chunks, require_code, trigger_tag
from . import math as mm
from .actions import Actions
from .calls import (EV_CREATE_MARKET, EV_LIQUIDATE, F_ANSWER, F_DECIMALS, F_FEED_DECIMALS, F_MARKET,
                    F_ORACLE_ADDRESSES, F_POSITION, F_PRICE, F_QUOTE_FEED, F_RATE, F_SCALE, F_SYMBOL, NATIVE_SYMBOLS,
                    POSITION_TOPICS)
from .config import MorphoBlueConfig, parse_config
from .model import Candidate, Market, OracleFeeds, Position
from .views import Views

__all__ = ["Adapter", "MorphoBlueConfig", "parse_config"]

TOPICS = [EV_CREATE_MARKET.topic0, *POSITION_TOPICS]


def _symbol(data: bytes) -> str:
    try:
        return F_SYMBOL.decode_one(data)
    except Exception:
        return data[:32].rstrip(b"\0").decode("utf-8", "replace") or "?"


class Adapter(Actions, Views, BaseAdapter):
    kind = "morpho_blue"
    cfg: MorphoBlueConfig

    def __init__(self, cfg: MorphoBlueConfig, **deps: Any):
        super().__init__(cfg, **deps)
        self.markets: dict[str, Market] = {}
        self._new_markets: list[Market] = []
        self.positions_by: dict[tuple[str, str], Position] = {}
        self.accounts: set[str] = set()
        self.dirty: set[tuple[str, str]] = set()
        self.feeds: dict[str, str] = {t.lower(): f for t, f in cfg.usd_feeds}  # token -> USD feed
        self._feed_decimals: dict[str, int] = {}
        self._feed_answers: dict[str, int] = {}
        self._native = ""  # the USD feed of the native token (WETH), from usd_feeds
        self.live_from: int | None = None
        self.checked_at: int | None = None
        self.disagreements = 0
        self.next_ts = 0
        self._chain_liquidations: list[ChainLiquidation] = []
        self._candidates: dict[tuple[str, ...], tuple[int, Candidate]] = {}
        self._oracle_answers: dict[str, int] = {}  # every feed read (lowercase) -> answer (signed)
        self._oracle_warned: set[str] = set()

    # -- start-up ---------------------------------------------------------------------
    async def start(self) -> None:
        await require_code(self.rpc, self.cfg.morpho, f"{self.cfg.path}.morpho")
        if self.cfg.liquidator:
            await require_code(self.rpc, self.cfg.liquidator, f"{self.cfg.path}.liquidator",
                               "the keeper's MorphoLiquidator (contracts/morpho/MorphoLiquidator.sol)")
        else:
            self.log.warning("liquidator_unavailable", reason="Morpho liquidations go through the keeper's "
                             "MorphoLiquidator (onMorphoLiquidate callback); set liquidator: watching only")
        if self.cfg.usd_feeds:  # which configured feed prices the native token (gas), and the feeds' decimals
            calls = [c for t, f in self.cfg.usd_feeds for c in (Call(t, F_SYMBOL.encode()), Call(f, F_FEED_DECIMALS.encode()))]
            res = await self.mc.run(calls)
            for i, (t, f) in enumerate(self.cfg.usd_feeds):
                (ok_s, sym), (ok_d, dec) = res[2 * i], res[2 * i + 1]
                self._feed_decimals[f] = F_FEED_DECIMALS.decode_one(dec) if ok_d and len(dec) == 32 else 8
                if ok_s and _symbol(sym).upper() in NATIVE_SYMBOLS and not self._native:
                    self._native = f
            (await self.refresh_feeds())
        self.log.info("morpho_ready", morpho=self.cfg.morpho, liquidator=self.cfg.liquidator)

    async def refresh_feeds(self) -> None:
        feeds = self._feeds_to_read()
        self._note_answers(feeds, await self.mc.run([Call(f, F_ANSWER.encode()) for f in feeds]))

    def _feeds_to_read(self) -> list[str]:
        """The loan tokens' USD feeds and the feeds the markets' oracles read, each once."""
        out = {f.lower(): f for m in self.markets.values() if m.oracle_feeds is not None for f in m.oracle_feeds.feeds}
        out.update({f.lower(): f for f in self._feed_decimals})
        return sorted(out.values())

    def _note_answers(self, feeds: list[str], res: list[tuple[bool, bytes]]) -> None:
        """Their latestAnswer: a USD feed's when positive (else 0: unknown), and every feed's
        as the oracles see it (signed; left out when it did not answer)."""
        for f, (ok, data) in zip(feeds, res):
            raw = int.from_bytes(data, "big", signed=True) if ok and len(data) == 32 else None
            if f in self._feed_decimals:
                self._feed_answers[f] = raw if raw is not None and raw > 0 else 0
            if raw is None:
                self._oracle_answers.pop(f.lower(), None)
            else:
                self._oracle_answers[f.lower()] = raw

    # -- discovery --------------------------------------------------------------------
    async def sync(self, head: Head) -> int:
        """Morpho's market and position events from the last synced block to head: new markets,
        borrowers (Borrow, SupplyCollateral) and the positions to read again."""
        before = len(self.accounts)
        if self.live_from is None:
            self.live_from = head.number
        async for last, logs in log_chunks(self.rpc, self.cfg.morpho, [TOPICS], self.synced_to + 1, head.number,
                                           self.chunk_blocks, self.log, what=f"{self.name} positions",
                                           found=lambda: len(self.accounts)):
            for lg in logs:
                try:
                    self._on_log(lg)
                except (KeyError, IndexError, TypeError, ValueError):
                    raise BadResponseError("eth_getLogs: malformed Morpho event") from None
            self.synced_to = last
        return len(self.accounts) - before

    def _on_log(self, lg: dict[str, Any]) -> None:
        if lg["address"].lower() != self.cfg.morpho.lower():
            return
        topic0, mid = lg["topics"][0], lg["topics"][1].lower()
        if topic0 == EV_CREATE_MARKET.topic0:
            if mid not in self.markets and (not self.cfg.markets or mid in self.cfg.markets):
                p = EV_CREATE_MARKET.decode(lg)["marketParams"]
                m = Market(id=mid, loan_token=abi.to_checksum(p[0]), collateral_token=abi.to_checksum(p[1]),
                           oracle=abi.to_checksum(p[2]), irm=abi.to_checksum(p[3]), lltv=p[4])
                self.markets[mid] = m
                self._new_markets.append(m)
            return
        where = POSITION_TOPICS.get(topic0)
        if where is None or mid not in self.markets:
            return
        user = abi.to_checksum("0x" + lg["topics"][where][-40:])
        key = (mid, user)
        if key not in self.positions_by:
            self.positions_by[key] = Position()
            self.accounts.add(user)
        self.dirty.add(key)
        if topic0 == EV_LIQUIDATE.topic0 and int(lg["blockNumber"], 16) > (self.live_from or 0):
            self._chain_liquidations.append(self._chain_liquidation(lg))

    def liquidation_log_filter(self) -> tuple[list[str], list[str]]:
        return [self.cfg.morpho], [EV_LIQUIDATE.topic0]

    def liquidations_from_logs(self, logs: list[dict[str, Any]]) -> list[ChainLiquidation]:
        return [self._chain_liquidation(lg) for lg in logs if lg["topics"] and lg["topics"][0] == EV_LIQUIDATE.topic0
                and lg["address"].lower() == self.cfg.morpho.lower() and lg["topics"][1].lower() in self.markets]

    def _chain_liquidation(self, lg: dict[str, Any]) -> ChainLiquidation:
        ev = EV_LIQUIDATE.decode(lg)
        m = self.markets.get(lg["topics"][1].lower())
        value = None  # what the liquidator got for what it repaid, at the oracle price now
        if m is not None and m.price > 0 and m.loan_usd_e8 > 0:
            value = m.loan_usd_e8_of(mm.mul_div_down(ev["seizedAssets"], m.price, mm.ORACLE_PRICE_SCALE)
                                     - ev["repaidAssets"])
        return ChainLiquidation(
            protocol=self.name, kind="liquidation", account=abi.to_checksum(ev["borrower"]),
            liquidator=abi.to_checksum(ev["caller"]), block=int(lg["blockNumber"], 16),
            tx_hash=lg.get("transactionHash", ""), log_index=int(lg.get("logIndex", "0x0"), 16),
            detail={"market": m.label if m else lg["topics"][1], "repaid_assets": ev["repaidAssets"],
                    "seized_assets": ev["seizedAssets"], "bad_debt_assets": ev["badDebtAssets"],
                    "bad_debt_shares": ev["badDebtShares"]},
            value_usd_e8=value)

    def drain_liquidations(self) -> list[ChainLiquidation]:
        out, self._chain_liquidations = self._chain_liquidations, []
        return out

    def liquidator_addresses(self) -> set[str]:
        return {self.cfg.liquidator.lower()} if self.cfg.liquidator else set()

    # -- reading ----------------------------------------------------------------------
    async def _load_new_markets(self, block: int) -> None:
        """Symbols, decimals and the loan token's USD feed of markets first seen."""
        new, self._new_markets = self._new_markets, []
        if not new:
            return
        calls: list[Call] = []
        for m in new:
            calls += [Call(m.loan_token, F_SYMBOL.encode()), Call(m.loan_token, F_DECIMALS.encode()),
                      Call(m.collateral_token, F_SYMBOL.encode()), Call(m.collateral_token, F_DECIMALS.encode()),
                      Call(m.oracle, F_QUOTE_FEED.encode()), Call(m.oracle, F_SCALE.encode()),
                      *(Call(m.oracle, f.encode()) for f in F_ORACLE_ADDRESSES)]
        n = 6 + len(F_ORACLE_ADDRESSES)
        res = await self.mc.run(calls, block)
        for i, m in enumerate(new):
            (ok1, s1), (ok2, d1), (ok3, s2), (ok4, d2), (ok5, qf), (ok6, sc) = res[n * i:n * i + 6]
            m.oracle_feeds = _oracle_feeds(ok6, sc, res[n * i + 6:n * i + n])
            m.loan_symbol = _symbol(s1) if ok1 else m.loan_token[:10]
            m.loan_decimals = F_DECIMALS.decode_one(d1) if ok2 and len(d1) == 32 else 18
            m.collateral_symbol = _symbol(s2) if ok3 else m.collateral_token[:10]
            m.collateral_decimals = F_DECIMALS.decode_one(d2) if ok4 and len(d2) == 32 else 18
            feed = self.feeds.get(m.loan_token.lower(), "")
            if not feed and ok5 and len(qf) == 32 and int.from_bytes(qf, "big"):
                feed = abi.to_checksum(F_QUOTE_FEED.decode_one(qf))
            m.usd_feed = feed
        for f in {m.usd_feed for m in new if m.usd_feed} | set(self.feeds.values()):
            if f not in self._feed_decimals:
                (ok, d), = await self.mc.run([Call(f, F_FEED_DECIMALS.encode())], block)
                self._feed_decimals[f] = F_FEED_DECIMALS.decode_one(d) if ok and len(d) == 32 else 8
        if self.swaps is not None:
            self.swaps.watch(t for m in new for t in (m.loan_token, m.collateral_token))
        self.log.info("morpho_markets", markets=[m.label for m in self.markets.values()])

    async def refresh(self, head: Head) -> None:
        """Markets, prices, feeds and the positions to read, at head; then the IRM rates."""
        await self._load_new_markets(head.number)
        markets = [m for m in self.markets.values()]
        full = self.checked_at is None or head.number - self.checked_at >= self.cfg.full_check_blocks
        to_read = sorted(self.positions_by) if full else sorted(self.dirty)
        feeds = self._feeds_to_read()
        calls: list[Call] = []
        for m in markets:
            calls += [Call(self.cfg.morpho, F_MARKET.encode(bytes.fromhex(m.id[2:]))), Call(m.oracle, F_PRICE.encode())]
        calls += [Call(f, F_ANSWER.encode()) for f in feeds]
        calls += [Call(self.cfg.morpho, F_POSITION.encode(bytes.fromhex(mid[2:]), who)) for mid, who in to_read]
        res = await self.mc.run(calls, head.number)
        for i, m in enumerate(markets):
            (ok, data), (ok_p, pdata) = res[2 * i], res[2 * i + 1]
            if ok and len(data) == 192:
                m.state = mm.MarketState(*F_MARKET.decode(data))
            if not ok_p or len(pdata) != 32:
                m.price, m.price_problem = 0, "reverted" if not ok_p else "bad_answer"
            else:
                m.price = int.from_bytes(pdata, "big")
                m.price_problem = None if m.price else "zero"
        res = res[2 * len(markets):]
        self._note_answers(feeds, res[:len(feeds)])
        self._check_oracles(markets)
        res = res[len(feeds):]
        for key, (ok, data) in zip(to_read, res):
            if not ok or len(data) != 96:
                continue
            _, shares, coll = F_POSITION.decode(data)
            pos = self.positions_by[key]
            if full and key not in self.dirty and (pos.borrow_shares, pos.collateral) != (shares, coll):
                self.disagreements += 1
                self.log.warning("position_disagreement", market=key[0], account=key[1],
                                 model=(pos.borrow_shares, pos.collateral), chain=(shares, coll))
            pos.borrow_shares, pos.collateral = shares, coll
        self.dirty.clear()
        if full:
            self.checked_at = head.number
        for m in markets:
            feed = m.usd_feed
            ans = self._feed_answers.get(feed, 0) if feed else 0
            m.loan_usd_e8 = ans * 10**8 // 10 ** self._feed_decimals.get(feed, 8) if ans else 0
        # the IRM's rate for the state just read (what _accrueInterest will use next)
        with_irm = [m for m in markets if m.state is not None and int(m.irm, 16)]
        if with_irm:
            res = await self.mc.run([Call(m.irm, F_RATE.encode(m.params, tuple(_state_tuple(m.state))))
                                     for m in with_irm], head.number)
            for m, (ok, data) in zip(with_irm, res):
                m.rate = int.from_bytes(data[:32], "big") if ok and len(data) >= 32 else 0
                if not ok:
                    m.price_problem = m.price_problem or "irm_reverted"

    # -- opportunities ----------------------------------------------------------------
    async def opportunities(self, head: Head) -> list[Opportunity]:
        """Every position not healthy at the next block's time (off-chain, exact), confirmed
        with a fresh read of its position, sized for profit on the block's pool book."""
        await self.refresh(head)
        self.last_skips = []
        self._candidates = {}
        self.next_ts = head.timestamp + self.block_time_s
        unhealthy = self._unhealthy(self.next_ts)
        if not unhealthy:
            self.last_opportunities = []
            return []
        # confirmation: the positions as the node has them now
        res = await self.mc.run([Call(self.cfg.morpho, F_POSITION.encode(bytes.fromhex(mid[2:]), who))
                                 for mid, who in unhealthy], "latest")
        for key, (ok, data) in zip(unhealthy, res):
            if ok and len(data) == 96:
                _, shares, coll = F_POSITION.decode(data)
                pos = self.positions_by[key]
                pos.borrow_shares, pos.collateral = shares, coll
        candidates = self._candidates_for(self._unhealthy(self.next_ts), self.last_skips)
        if not self.can_liquidate:
            for k in candidates:
                self.last_skips.append(Skip(k.borrower, "no_route", {"market": k.market.label}))
            self.last_opportunities = []
            return []
        book = await self.swaps.book(head.number) if self.swaps is not None and candidates else None
        best: dict[str, Opportunity] = {}
        for k in candidates:
            opp = self._size(head.number, k, book)
            if isinstance(opp, str):
                self.last_skips.append(Skip(k.borrower, opp, {"market": k.market.label}))
                continue
            cur = best.get(k.borrower)
            if cur is None or opp.gross_profit_usd_e8 > cur.gross_profit_usd_e8:
                best[k.borrower] = opp
                self._candidates[(k.borrower,)] = (head.number, k)
        self.last_opportunities = list(best.values())
        return self.last_opportunities

    def _unhealthy(self, ts: int, prices: dict[str, int] | None = None) -> list[tuple[str, str]]:
        """The positions not healthy at block time ts: at the markets' prices, or, given
        `prices` (market id -> price), only in those markets at those prices."""
        out = []
        accrued: dict[str, mm.MarketState] = {}
        for key, p in self.positions_by.items():
            if p.borrow_shares == 0 or (prices is not None and key[0] not in prices):
                continue
            m = self.markets.get(key[0])
            price = m.price if m is not None and prices is None else (prices or {}).get(key[0], 0)
            if m is None or m.state is None or price <= 0:
                continue
            st = accrued.get(m.id)
            if st is None:
                st = accrued[m.id] = m.accrued(ts)
            if not mm.is_healthy(p.borrow_shares, p.collateral, st, price, m.lltv):
                out.append(key)
        return out

    def _candidates_for(self, keys: list[tuple[str, str]], skips: list[Skip], ts: int | None = None,
                        prices: dict[str, int] | None = None) -> list[Candidate]:
        out = []
        for mid, who in keys:
            m, p = self.markets[mid], self.positions_by[(mid, who)]
            if m.price_problem and prices is None:
                skips.append(Skip(who, "price_unavailable", {"market": m.label, "problem": m.price_problem}))
                continue
            price = m.price if prices is None else prices[mid]
            st = m.accrued(self.next_ts if ts is None else ts)
            hf = mm.health_factor_wad(p.borrow_shares, p.collateral, st, price, m.lltv)
            try:
                mm.liquidate(st, p.borrow_shares, p.collateral, price, m.lltv, seized_assets=p.collateral)
                underwater = True
            except mm.Overflow:
                underwater = False
            max_seize = p.collateral if underwater else mm.max_seizable(st, p.borrow_shares, p.collateral, price,
                                                                        m.lltv)
            out.append(Candidate(m, who, p.borrow_shares, p.collateral, st, price, hf, max_seize, underwater))
        return out

    # -- same-block reaction to a pending oracle update ---------------------------------
    def _check_oracles(self, markets: list[Market]) -> None:
        """Whether each market's oracle formula over the block's feed answers gives the
        oracle's own price (then a pending answer can be turned into the next price)."""
        for m in markets:
            of = m.oracle_feeds
            m.oracle_exact = of is not None and m.price > 0 and of.price(self._oracle_answers) == m.price
            if of is not None and not m.oracle_exact and m.price > 0 and m.id not in self._oracle_warned:
                self._oracle_warned.add(m.id)
                self.log.warning("morpho_oracle_not_reproduced", market=m.label, oracle=m.oracle,
                                 hint="no same-block reaction for this market; it is handled per block")

    def oracle_sources(self) -> set[str]:
        """The feeds the markets' oracles read (for oracles of the feeds-only shape)."""
        return {f for m in self.markets.values() if m.oracle_feeds is not None for f in m.oracle_feeds.feeds}

    async def react(self, head: Head, answers: dict[str, int], trigger: Any) -> list[Opportunity]:
        """The liquidations a pending oracle update opens: `answers` maps feeds (lowercase) to
        the answer the pending transaction sets. Each market whose oracle reads a moved feed
        (and whose formula was exact at the last block) gets its price at the new answers; its
        positions are checked at the next block's time and the liquidatable ones sized as in
        a block, carrying the trigger so the executor simulates them after it and sends them
        right behind it. Nothing the block cycle keeps is changed."""
        if not self.can_liquidate:
            return []
        merged = {**self._oracle_answers, **answers}
        prices: dict[str, int] = {}
        for m in self.markets.values():
            of = m.oracle_feeds
            if of is None or not m.oracle_exact or m.state is None or not any(f.lower() in answers for f in of.feeds):
                continue
            p = of.price(merged)
            if p:
                prices[m.id] = p
        if not prices:
            return []
        ts = head.timestamp + self.block_time_s
        keys = self._unhealthy(ts, prices)
        if not keys:
            return []
        book = await self.swaps.book(head.number) if self.swaps is not None else None
        # from here on no await: the block cycle never sees the pending price
        skips: list[Skip] = []
        tag = trigger_tag(trigger)
        best: dict[str, Opportunity] = {}
        for k in self._candidates_for(keys, skips, ts, prices):
            opp = self._size(head.number, k, book)
            if isinstance(opp, str):
                skips.append(Skip(k.borrower, opp, {"market": k.market.label}))
                continue
            cur = best.get(k.borrower)
            if cur is None or opp.gross_profit_usd_e8 > cur.gross_profit_usd_e8:
                best[k.borrower] = opp
                self._candidates[(k.borrower, tag)] = (head.number, k)
        self.log.info("oracle_update_reaction", tx=getattr(trigger, "hash", None), markets=len(prices),
                      liquidatable=len(keys), opportunities=len(best), skipped=len(skips))
        return [replace(o, behind=trigger) for o in best.values()]

    # -- prices -----------------------------------------------------------------------
    def _native_feed(self) -> str:
        if self._native:
            return self._native
        for m in self.markets.values():
            if m.loan_symbol.upper() in NATIVE_SYMBOLS and m.usd_feed:
                return m.usd_feed
        return ""

    def can_price_native(self) -> bool:
        return bool(self._native_feed())

    def native_price_usd_e8(self) -> int | None:
        f = self._native_feed()
        ans = self._feed_answers.get(f, 0) if f else 0
        return ans * 10**8 // 10 ** self._feed_decimals.get(f, 8) if ans else None


def _oracle_feeds(ok_scale: bool, scale: bytes, addresses: list[tuple[bool, bytes]]) -> OracleFeeds | None:
    """The oracle's feeds-only shape from SCALE_FACTOR and BASE_FEED_1/2, QUOTE_FEED_1/2,
    BASE_VAULT, QUOTE_VAULT (a call that fails: not set); None for another shape or one with a
    vault (its conversion rate is not followed)."""
    if not ok_scale or len(scale) != 32 or not int.from_bytes(scale, "big"):
        return None
    got = [abi.to_checksum(d[12:32]) if ok and len(d) == 32 and int.from_bytes(d, "big") else "" for ok, d in addresses]
    b1, b2, q1, q2, bv, qv = got
    if bv or qv or not (b1 or q1):
        return None
    return OracleFeeds(int.from_bytes(scale, "big"), tuple(f for f in (b1, b2) if f), tuple(f for f in (q1, q2) if f))


def _state_tuple(s: mm.MarketState) -> list[int]:
    return [s.total_supply_assets, s.total_supply_shares, s.total_borrow_assets, s.total_borrow_shares,
            s.last_update, s.fee]
