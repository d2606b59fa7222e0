"""Perps adapter (Synthetix v3 perps interface): margin accounts discovered from OrderSettled
events, margins and per-position liquidation prices computed with the protocol's rules
(math.py), `canLiquidate` read in the same batch to confirm, and the `liquidate(accountId)` /
`liquidateFlagged(n)` encodings.

Per block this costs one HTTP request: the markets' index prices, configurations and window
capacities, the keeper reward guards and costs, the flagged list, and for every tracked
account its collateral, available margin, required margins, canLiquidate and its position in
every watched market, as Multicall3 aggregate3 chunks in one JSON-RPC batch.

Rewards are paid in snxUSD and valued at $1 (usd_e8 = wad // 1e10). Liquidating needs no
inventory. An eligible account is flagged by `liquidate(id)` (paid the flag reward, bounded by
the keeper reward guards); what is left of a large account after the window's capacity is
closed later by `liquidateFlagged(n)` (paid the liquidation cost reward per account that
makes progress), once the market's capacity frees up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ... import abi
from ...config import Section, address, block_number, boolean, gas_fits, gas_units, int_list, integer, label
from ...errors import BadResponseError, ConfigError
from ...missed import ChainLiquidation
from ...multicall import Call
from ...types import Head, Opportunity, TxPlan
from ..base import BaseAdapter, Skip, log_chunks, require_code
from . import math as pm
from . import views


MARKET = abi.load("PerpsMarket")
F_MARKETS = MARKET.fn("getMarkets")
F_METADATA = MARKET.fn("metadata")
F_INDEX_PRICE = MARKET.fn("indexPrice")
F_CAPACITY = MARKET.fn("liquidationCapacity")
F_LIQ_PARAMS = MARKET.fn("getLiquidationParameters")
F_MAX_LIQ_PARAMS = MARKET.fn("getMaxLiquidationParameters")
F_FUNDING = MARKET.fn("getFundingParameters")
F_FEES = MARKET.fn("getOrderFees")
F_GUARDS = MARKET.fn("getKeeperRewardGuards")
F_COSTS = MARKET.fn("getKeeperCosts")
F_FLAGGED = MARKET.fn("flaggedAccounts")
F_COLLATERAL = MARKET.fn("totalCollateralValue")
F_AVAILABLE = MARKET.fn("getAvailableMargin")
F_REQUIRED = MARKET.fn("getRequiredMargins")
F_CAN_LIQUIDATE = MARKET.fn("canLiquidate")
F_POSITION = MARKET.fn("getOpenPosition")
F_LIQUIDATE = MARKET.fn("liquidate")
F_LIQUIDATE_FLAGGED = MARKET.fn("liquidateFlagged")
EV_SETTLED = MARKET.event("OrderSettled")
EV_ATTEMPT = MARKET.event("AccountLiquidationAttempt")
EV_POSITION_LIQUIDATED = MARKET.event("PositionLiquidated")
EV_FLAGGED = MARKET.event("AccountFlaggedForLiquidation")
F_USD_TOKEN = MARKET.fn("usdToken")
EV_TRANSFER = abi.load("ERC20").event("Transfer")
USD_E8_PER_WAD = 10**10
NATIVE_SYMBOLS = ("ETH", "WETH")
FLAGGED = "flagged"


def _error_names() -> dict[str, str]:
    from eth_utils import keccak

    out = {}
    for e in json.loads((abi.ABI_DIR / "PerpsMarket.json").read_text()):
        if e.get("type") == "error":
            sig = f"{e['name']}({','.join(abi._type_str(i) for i in e['inputs'])})"
            out["0x" + keccak(text=sig)[:4].hex()] = e["name"]
    return out


ERRORS = _error_names()


@dataclass(frozen=True)
class PerpsConfig:
    kind: str
    name: str
    market: str  # the perps market proxy (Synthetix v3 PerpsMarketProxy)
    markets: tuple[int, ...] | None  # watched market ids (None: every market the proxy lists)
    start_block: int
    gas_estimate: int
    gas_limit: int
    max_flagged_per_tx: int
    price_step_wad: int
    enabled: bool = True
    where: str = "protocols[?]"


def parse_config(s: Section) -> PerpsConfig:
    cfg = PerpsConfig(
        kind="synthetix_perps",
        name=s.get("name", label),
        market=s.get("market", address),
        markets=s.get("markets", int_list(minimum=0, maximum=2**128 - 1), None),  # uint128 ids
        start_block=s.get("start_block", block_number, 0),
        gas_estimate=s.get("gas_estimate", gas_units, 250_000),
        gas_limit=s.get("gas_limit", gas_units, 3_000_000),
        max_flagged_per_tx=s.get("max_flagged_per_tx", integer(1, 10_000), 10),
        price_step_wad=s.get("price_step_wad", integer(1, 10**36), pm.FEED_STEP),
        enabled=s.get("enabled", boolean, True),
        where=s.path,
    )
    gas_fits(s.path, cfg.gas_estimate, "gas_estimate", cfg.gas_limit, "gas_limit")
    return cfg


@dataclass(slots=True)
class Market:
    id: int
    symbol: str
    params: pm.MarketParams | None = None
    price: int = 0  # wad
    capacity: int = 0  # size units left in the current window
    max_in_window: int = 0


@dataclass(slots=True)
class AccountState:
    id: int
    collateral: int
    available_margin: int  # the protocol's own getAvailableMargin (wad)
    required_initial: int
    required_maintenance: int  # includes the possible liquidation reward, as the protocol's
    max_liquidation_reward: int
    can_liquidate: bool
    flagged: bool
    positions: list[pm.Position]
    pnl: dict[int, int]  # market -> the protocol's totalPnl
    model_margin: int = 0  # this adapter's availableMargin
    model_maintenance: int = 0
    liquidation_prices: dict[int, int | None] = field(default_factory=dict)

    @property
    def health(self) -> float:
        if self.flagged:
            return 0.0
        if self.required_maintenance <= 0:
            return float("inf")
        return self.available_margin / self.required_maintenance


@dataclass(frozen=True, slots=True)
class PerpsLiquidation:
    """One liquidation call and what it pays (snxUSD wad, $1 each)."""

    action: str  # liquidate | liquidateFlagged
    accounts: tuple[int, ...]
    reward: int
    available_margin: int = 0
    required_maintenance: int = 0
    max_liquidation_reward: int = 0
    reward_min: int = 0  # the guards' bounds for this call
    reward_max: int = 0
    windows: int = 1

    def log_fields(self) -> dict[str, Any]:
        return {"action": self.action, "accounts": list(self.accounts), "reward_usd": self.reward / 1e18,
                "available_margin_usd": self.available_margin / 1e18,
                "maintenance_margin_usd": self.required_maintenance / 1e18, "windows": self.windows}


class _Tx:
    """What one transaction's logs have shown so far, per account until its attempt event."""

    __slots__ = ("hash", "flags", "closed", "paid")

    def __init__(self, h: str):
        self.hash = h
        self.flags: dict[int, dict[str, Any]] = {}
        self.closed: dict[int, list[dict[str, Any]]] = {}
        self.paid: list[tuple[str, int]] = []  # reward-token transfers out of the market: (to, value)


class Adapter(BaseAdapter):
    kind = "synthetix_perps"
    cfg: PerpsConfig

    def __init__(self, cfg: PerpsConfig, **deps: Any):
        super().__init__(cfg, **deps)
        self.market = cfg.market
        self.markets: list[Market] = []
        self.guards = pm.Guards(0, 0, 0, 0)
        self.flagged: list[int] = []
        self.accounts: set[int] = set()
        self.entries: dict[tuple[int, int], int] = {}  # (account, market) -> fill price of the last settlement
        self.state: dict[int, AccountState] = {}
        self.inventory = {}  # liquidating needs no tokens
        # the token the market pays keeper rewards in (usdToken()); its Transfer out of the market
        # names who was paid (the liquidating msg.sender). None: the market does not say
        self.usd_token: str | None = None
        self._liquidations: list[ChainLiquidation] = []  # seen by sync, not yet drained

    # -- start-up ---------------------------------------------------------------------
    async def start(self) -> None:
        where = f"{self.cfg.where}.market"
        await require_code(self.rpc, self.market, where)
        (ok, data), (ok_u, usd) = await self.mc.run([Call(self.market, F_MARKETS.encode()),
                                                     Call(self.market, F_USD_TOKEN.encode())])
        if ok_u and len(usd) == 32 and int.from_bytes(usd, "big") != 0:
            self.usd_token = abi.to_checksum(F_USD_TOKEN.decode_one(usd))
        if not ok:
            raise ConfigError(f"{where}: {self.market} does not answer getMarkets(): not a Synthetix v3 perps market")
        known = [int(m) for m in F_MARKETS.decode_one(data)]
        wanted = list(self.cfg.markets) if self.cfg.markets is not None else known
        for m in wanted:
            if m not in known:
                raise ConfigError(f"{self.cfg.where}.markets: market id {m} is not a market of the perps market at "
                                  f"{self.market} (its markets: {', '.join(map(str, known)) or 'none'})")
        res = await self.mc.run([Call(self.market, F_METADATA.encode(m)) for m in wanted])
        self.markets = [Market(m, F_METADATA.decode(d)[1] if ok and d else str(m)) for m, (ok, d) in zip(wanted, res)]
        head_block = await self.rpc.call("eth_blockNumber", [])
        await self._refresh_globals(int(head_block, 16))
        self.log.info("perps_ready", market=self.market, markets={m.id: m.symbol for m in self.markets})

    # -- discovery --------------------------------------------------------------------
    async def sync(self, head: Head) -> int:
        """OrderSettled events since the last synced block, in chunks: accounts and entry prices.
        In the same eth_getLogs, for the record of every liquidation on chain
        (drain_liquidations): the market's flag / position-liquidated / liquidation-attempt
        events and the reward token's Transfers (who was paid)."""
        before = len(self.accounts)
        market = self.market.lower()
        addresses: str | list[str] = [self.market, self.usd_token] if self.usd_token else self.market
        t0s = [EV_SETTLED.topic0, EV_FLAGGED.topic0, EV_POSITION_LIQUIDATED.topic0, EV_ATTEMPT.topic0]
        if self.usd_token:
            t0s.append(EV_TRANSFER.topic0)
        async for last, logs in log_chunks(self.rpc, addresses, [t0s], self.synced_to + 1,
                                           head.number, self.chunk_blocks, self.log):
            rest = []
            for lg in logs:
                topics = lg.get("topics") or []
                if not topics:
                    continue
                if str(lg.get("address", "")).lower() == market and topics[0] == EV_SETTLED.topic0:
                    try:
                        ev = EV_SETTLED.decode(lg)
                    except Exception:
                        raise BadResponseError("eth_getLogs: malformed OrderSettled log") from None
                    acct, m = int(ev["accountId"]), int(ev["marketId"])
                    self.accounts.add(acct)
                    self.entries[(acct, m)] = int(ev["fillPrice"])
                else:
                    rest.append(lg)
            try:
                found = self.liquidations_from_logs(rest)
            except (KeyError, IndexError, TypeError, ValueError):
                raise BadResponseError("eth_getLogs: malformed perps liquidation log") from None
            self._liquidations += found  # only whole chunks: a failed chunk is read again
            self.synced_to = last
        return len(self.accounts) - before

    def liquidation_log_filter(self) -> tuple[list[str], list[str]]:
        t0s = [EV_FLAGGED.topic0, EV_POSITION_LIQUIDATED.topic0, EV_ATTEMPT.topic0]
        return ([self.market, self.usd_token] if self.usd_token else [self.market],
                t0s + ([EV_TRANSFER.topic0] if self.usd_token else []))

    def liquidations_from_logs(self, logs: list[dict[str, Any]]) -> list[ChainLiquidation]:
        market, usd = self.market.lower(), (self.usd_token or "").lower()
        out: list[ChainLiquidation] = []
        tx = _Tx("")
        for lg in logs:
            src = str(lg.get("address", "")).lower()
            if not lg.get("topics") or (src != market and src != usd):
                continue
            if lg["transactionHash"] != tx.hash:
                tx = _Tx(lg["transactionHash"])
            c = self._on_liquidation_log(lg, src == market, tx)
            if c is not None:
                out.append(c)
        return out

    def _on_liquidation_log(self, lg: dict[str, Any], from_market: bool, tx: _Tx) -> ChainLiquidation | None:
        """One log of a liquidation transaction, in execution order: per account, the flag
        (liquidate of an eligible account), each PositionLiquidated, the reward's Transfer to
        msg.sender, then AccountLiquidationAttempt, which closes the record."""
        t0 = lg["topics"][0]
        if not from_market:
            if t0 == EV_TRANSFER.topic0:
                ev = EV_TRANSFER.decode(lg)
                if ev["from"].lower() == self.market.lower():
                    tx.paid.append((ev["to"].lower(), ev["value"]))
            return None
        if t0 == EV_FLAGGED.topic0:
            ev = EV_FLAGGED.decode(lg)
            tx.flags[int(ev["accountId"])] = ev
        elif t0 == EV_POSITION_LIQUIDATED.topic0:
            ev = EV_POSITION_LIQUIDATED.decode(lg)
            tx.closed.setdefault(int(ev["accountId"]), []).append(
                {"market": int(ev["marketId"]), "amount": ev["amountLiquidated"], "size_left": ev["currentPositionSize"]})
        elif t0 == EV_ATTEMPT.topic0:
            ev = EV_ATTEMPT.decode(lg)
            a, reward = int(ev["accountId"]), ev["reward"]
            flag = tx.flags.pop(a, None)
            closed = tx.closed.pop(a, [])
            if flag is None and not closed and reward == 0:
                return None  # an attempt that changed nothing (no window capacity left): not a liquidation
            payee = None
            if reward > 0:  # paid by usdToken.transfer(msg.sender, reward) just before this event
                for i in range(len(tx.paid) - 1, -1, -1):
                    if tx.paid[i][1] == reward:
                        payee = tx.paid.pop(i)[0]
                        break
            detail: dict[str, Any] = {"account_id": a, "reward": reward, "full": bool(ev["fullLiquidation"]),
                                      "flagged": flag is not None, "positions": closed}
            if flag is not None:
                detail.update(available_margin=flag["availableMargin"],
                              required_maintenance=flag["requiredMaintenanceMargin"], flag_reward=flag["flagReward"])
            if payee is None:
                detail["needs_sender"] = True
            return ChainLiquidation(
                protocol=self.name, kind="liquidation", account=str(a), liquidator=payee or "",
                block=int(lg["blockNumber"], 16), tx_hash=lg["transactionHash"], log_index=int(lg["logIndex"], 16),
                detail=detail, value_usd_e8=reward // USD_E8_PER_WAD)
        return None

    def drain_liquidations(self) -> list[ChainLiquidation]:
        """Every liquidation of the market seen on chain by sync since the last drain (one per
        account and transaction that flagged it, closed some of its positions or paid a
        reward), in block/log order, the keeper's own included."""
        out = sorted(self._liquidations, key=lambda c: (c.block, c.log_index))
        self._liquidations = []
        return out

    def liquidator_addresses(self) -> set[str]:
        """The keeper's own contracts that appear as a liquidator: none (the keeper's address
        calls liquidate / liquidateFlagged itself)."""
        return set()

    # -- refresh ----------------------------------------------------------------------
    def _global_calls(self) -> list[Call]:
        calls = []
        for m in self.markets:
            calls += [Call(self.market, F_INDEX_PRICE.encode(m.id)), Call(self.market, F_CAPACITY.encode(m.id)),
                      Call(self.market, F_LIQ_PARAMS.encode(m.id)), Call(self.market, F_MAX_LIQ_PARAMS.encode(m.id)),
                      Call(self.market, F_FUNDING.encode(m.id)), Call(self.market, F_FEES.encode(m.id))]
        calls += [Call(self.market, F_GUARDS.encode()), Call(self.market, F_COSTS.encode()),
                  Call(self.market, F_FLAGGED.encode())]
        return calls

    def _apply_globals(self, res: list[tuple[bool, bytes]]) -> None:
        for k, m in enumerate(self.markets):
            (ok_p, price), (ok_c, cap), (ok_l, lp), (ok_x, xp), (ok_f, fp), (ok_o, fees) = res[6 * k:6 * k + 6]
            if not ok_p:
                raise BadResponseError(f"indexPrice({m.id}) reverted: the market's price feed fails")
            m.price = F_INDEX_PRICE.decode_one(price)
            if ok_c:
                m.capacity, m.max_in_window, _ = F_CAPACITY.decode(cap)
            if not (ok_l and ok_x and ok_f and ok_o):
                raise BadResponseError(f"market {m.id}: configuration views failed")
            imr, min_imr, scalar, flag, min_pm = F_LIQ_PARAMS.decode(lp)
            mult, secs, _pd, _endorsed = F_MAX_LIQ_PARAMS.decode(xp)
            skew_scale, _ = F_FUNDING.decode(fp)
            maker, taker = F_FEES.decode(fees)
            m.params = pm.MarketParams(m.id, imr, min_imr, scalar, flag, min_pm, skew_scale, maker, taker, mult, secs)
        i = 6 * len(self.markets)
        (ok_g, guards), (ok_k, costs), (ok_f, flagged) = res[i:i + 3]
        if not ok_g:
            raise BadResponseError("getKeeperRewardGuards() failed")
        g = F_GUARDS.decode(guards)
        # getKeeperCosts is this devnet market's stand-in for Synthetix's gas-oracle costs; without
        # it the costs count as 0, which can only understate the reward
        flag_cost, liq_cost = F_COSTS.decode(costs) if ok_k and len(costs) == 64 else (0, 0)
        self.guards = pm.Guards(*g, flag_cost=flag_cost, liquidate_cost=liq_cost)
        self.flagged = [int(a) for a in F_FLAGGED.decode_one(flagged)] if ok_f else []

    async def _refresh_globals(self, block: int | str = "latest") -> None:
        self._apply_globals(await self.mc.run(self._global_calls(), block))

    async def refresh(self, head: Head) -> list[int]:
        """One batched read; returns the accounts the protocol says can be liquidated."""
        accounts = sorted(self.accounts | set(self.flagged))
        g_calls = self._global_calls()
        per = 4 + len(self.markets)
        calls = list(g_calls)
        for a in accounts:
            calls += [Call(self.market, F_COLLATERAL.encode(a)), Call(self.market, F_AVAILABLE.encode(a)),
                      Call(self.market, F_REQUIRED.encode(a)), Call(self.market, F_CAN_LIQUIDATE.encode(a))]
            calls += [Call(self.market, F_POSITION.encode(a, m.id)) for m in self.markets]
        res = await self.mc.run(calls, head.number)
        self._apply_globals(res[:len(g_calls)])
        # flaggedAccounts() is read in the same batch; accounts first seen there are tracked from now on
        self.accounts |= set(self.flagged)
        flagged = set(self.flagged)
        prices = {m.id: m.price for m in self.markets}
        params = {m.id: m.params for m in self.markets}
        state: dict[int, AccountState] = {}
        liquidatable: list[int] = []
        base = len(g_calls)
        for k, a in enumerate(accounts):
            chunk = res[base + k * per: base + (k + 1) * per]
            (ok_c, coll), (ok_a, am), (ok_r, req), (ok_l, can) = chunk[:4]
            if not (ok_c and ok_a and ok_r and ok_l):
                continue
            positions, pnl = [], {}
            for m, (ok_p, pdata) in zip(self.markets, chunk[4:]):
                if not ok_p:
                    continue
                total_pnl, _funding, size, _interest = F_POSITION.decode(pdata)
                if size == 0:
                    continue
                entry = self.entries.get((a, m.id))
                if entry is None or pm.pnl(size, m.price, entry) != total_pnl:
                    # no event seen (start_block after the settlement) or funding/interest on a real
                    # deployment: the entry that reproduces the protocol's PnL at this price
                    entry = m.price - total_pnl * pm.WAD // size
                positions.append(pm.Position(m.id, size, entry))
                pnl[m.id] = total_pnl
            st = AccountState(
                id=a, collateral=F_COLLATERAL.decode_one(coll), available_margin=F_AVAILABLE.decode_one(am),
                required_initial=0, required_maintenance=0, max_liquidation_reward=0,
                can_liquidate=F_CAN_LIQUIDATE.decode_one(can), flagged=a in flagged, positions=positions, pnl=pnl)
            st.required_initial, st.required_maintenance, st.max_liquidation_reward = F_REQUIRED.decode(req)
            if not positions and not st.flagged:
                self.accounts.discard(a)  # closed: a new OrderSettled event brings it back
                continue
            if not st.flagged:
                self._model(st, params, prices)
            state[a] = st
            if st.can_liquidate:
                liquidatable.append(a)
        self.state = state
        return liquidatable

    def _model(self, st: AccountState, params: dict[int, pm.MarketParams], prices: dict[int, int]) -> None:
        """The account's margins with the protocol's formulas, and each position's liquidation
        price. Anything the model does not see (funding, interest, markets not watched) enters
        as a constant offset so the model matches the protocol at today's prices."""
        st.model_margin = pm.available_margin(st.collateral, st.positions, prices)
        _, st.model_maintenance, _ = pm.required_margins(params, st.positions, prices, st.collateral, self.guards)
        am_off = st.available_margin - st.model_margin
        mm_off = st.required_maintenance - st.model_maintenance
        if am_off or mm_off:
            self.log.debug("margin_model_offset", account=st.id, available=am_off, maintenance=mm_off)
        for q in st.positions:
            st.liquidation_prices[q.market_id] = pm.liquidation_price(
                params, st.positions, prices, st.collateral, self.guards, q.market_id,
                step=self.cfg.price_step_wad, am_offset=am_off, mm_offset=mm_off)

    # -- opportunities ----------------------------------------------------------------
    async def opportunities(self, head: Head) -> list[Opportunity]:
        liquidatable = await self.refresh(head)
        self.last_skips = []
        opps: list[Opportunity] = []
        prices = {m.id: m.price for m in self.markets}
        params = {m.id: m.params for m in self.markets}
        g = self.guards
        for a in liquidatable:
            st = self.state[a]
            if st.flagged:
                continue
            model_says = st.required_maintenance > st.available_margin
            if not model_says:
                self.log.warning("margin_model_mismatch", account=a, available=st.available_margin,
                                 maintenance=st.required_maintenance)
            reward = pm.flag_payout(params, st.positions, prices, st.collateral, g)
            n_windows = max((pm.windows(params[q.market_id], q.size) for q in st.positions), default=1)
            detail = PerpsLiquidation(
                action="liquidate", accounts=(a,), reward=reward, available_margin=st.available_margin,
                required_maintenance=st.required_maintenance, max_liquidation_reward=st.max_liquidation_reward,
                reward_min=pm.min_cap(g, g.flag_cost), reward_max=pm.max_cap(g, st.collateral),
                windows=n_windows)
            mm = max(st.required_maintenance, 1)
            risk = max(0, st.required_maintenance - st.available_margin) * pm.WAD // mm
            opps.append(self._opportunity(head, str(a), F_LIQUIDATE.encode(a), detail, risk,
                                          f"liquidate perps account {a}"))
        if self.flagged:
            positions = {a: self.state[a].positions for a in self.flagged if a in self.state}
            caps = {m.id: m.capacity for m in self.markets}
            n, reward, progress = pm.plan_flagged(self.flagged, positions, caps, g, self.cfg.max_flagged_per_tx)
            waiting = [a for a in self.flagged if a not in progress]
            for a in waiting:
                self.last_skips.append(Skip(str(a), "liquidation_capacity_exhausted",
                                            {"markets": [q.market_id for q in positions.get(a, [])]}))
            if n:
                detail = PerpsLiquidation(action="liquidateFlagged", accounts=tuple(self.flagged[:n]), reward=reward,
                                          reward_min=pm.min_cap(g, g.liquidate_cost), reward_max=pm.max_cap(g, 0))
                opps.append(self._opportunity(head, FLAGGED, F_LIQUIDATE_FLAGGED.encode(n), detail, pm.WAD,
                                              f"liquidateFlagged({n}) accounts {progress}"))
        self.last_opportunities = opps
        return opps

    def _opportunity(self, head: Head, account: str, data: bytes, detail: PerpsLiquidation, risk: int,
                     description: str) -> Opportunity:
        plan = TxPlan(to=self.market, data=data, gas_limit=self.cfg.gas_limit, description=description)
        return Opportunity(protocol=self.name, kind=self.kind, account=account, block=head.number,
                           gross_profit_usd_e8=detail.reward // USD_E8_PER_WAD, gas_units=self.cfg.gas_estimate,
                           plan=plan, detail=detail, risk_e18=risk)

    # -- views and outcomes -----------------------------------------------------------
    def explain_revert(self, reason: str) -> str:
        if reason.startswith("custom error "):
            sel = reason.removeprefix("custom error ")
            if sel in ERRORS:
                return ERRORS[sel]
        return reason

    def parse_outcome(self, receipt: dict[str, Any]) -> dict[str, Any]:
        reward = 0
        accounts, full, flagged, closed = [], [], [], []
        for lg in receipt.get("logs", []):
            if not lg.get("topics") or lg.get("address", "").lower() != self.market.lower():
                continue
            t0 = lg["topics"][0]
            if t0 == EV_ATTEMPT.topic0:
                ev = EV_ATTEMPT.decode(lg)
                reward += ev["reward"]
                accounts.append(int(ev["accountId"]))
                if ev["fullLiquidation"]:
                    full.append(int(ev["accountId"]))
            elif t0 == EV_FLAGGED.topic0:
                flagged.append(int(EV_FLAGGED.decode(lg)["accountId"]))
            elif t0 == EV_POSITION_LIQUIDATED.topic0:
                ev = EV_POSITION_LIQUIDATED.decode(lg)
                closed.append([int(ev["accountId"]), int(ev["marketId"]), ev["amountLiquidated"], ev["currentPositionSize"]])
        if not accounts:
            return {}
        return {"reward": reward, "reward_usd": reward / 1e18, "accounts": accounts, "fully_liquidated": full,
                "flagged": flagged, "positions_liquidated": closed}

    def realized_gross_usd_e8(self, opp: Opportunity, realized: dict[str, Any]) -> int | None:
        """The keeper's reward from the LiquidationAttempt events (sUSD, 18 decimals, at $1)."""
        return realized["reward"] // USD_E8_PER_WAD if "reward" in realized else None

    def describe(self, opp: Opportunity) -> str:
        d = opp.detail
        if d.action == "liquidateFlagged":
            return f"liquidateFlagged({len(d.accounts)}) reward {d.reward / 1e18:,.2f} snxUSD"
        return f"liquidate account {d.accounts[0]} reward {d.reward / 1e18:,.2f} snxUSD"

    def can_price_native(self) -> bool:
        return any(m.symbol.upper() in NATIVE_SYMBOLS for m in self.markets)

    def native_price_usd_e8(self) -> int | None:
        for m in self.markets:
            if m.symbol.upper() in NATIVE_SYMBOLS and m.price > 0:
                return m.price // USD_E8_PER_WAD
        return None

    def liquidation_prices(self, ts: int, feeds: dict[int, tuple[str, int, int, str]] | None = None
                           ) -> list[dict[str, Any]]:
        """keeper risk: per account and open market, where it breaks (views.liquidation_prices)."""
        return views.liquidation_prices(self, ts, feeds)

    def symbol(self, market_id: int) -> str:
        return next((m.symbol for m in self.markets if m.id == market_id), str(market_id))

    def positions(self) -> list[dict[str, Any]]:
        by_account: dict[str, Opportunity] = {o.account: o for o in self.last_opportunities}
        prices = {m.id: m.price for m in self.markets}
        rows = []
        for a, st in self.state.items():
            notional = sum(abs(q.size) * prices[q.market_id] // pm.WAD for q in st.positions)
            parts = []
            legs = []
            for q in st.positions:
                lp = st.liquidation_prices.get(q.market_id)
                price = prices[q.market_id]
                dist = None if lp is None else (lp - price) / price
                legs.append({"market": q.market_id, "symbol": self.symbol(q.market_id), "size": q.size / 1e18,
                             "entry_price": q.entry_price / 1e18, "price": price / 1e18,
                             "liquidation_price": None if lp is None else lp / 1e18,
                             "distance": dist})
                liq = "none" if lp is None else f"{lp / 1e18:,.2f} ({dist:+.1%})"
                parts.append(f"{self.symbol(q.market_id)} {q.size / 1e18:+,.4f} liq {liq}")
            if st.flagged:
                summary = "flagged, closing by window: " + ", ".join(
                    f"{self.symbol(q.market_id)} {q.size / 1e18:+,.4f}" for q in st.positions)
            else:
                if st.available_margin * 1000 > notional:
                    head = (f"lev {notional / st.available_margin:.1f}x "
                            f"margin ratio {st.required_maintenance / st.available_margin:.1%}")
                else:
                    head = f"lev >999x margin ${st.available_margin / 1e18:,.2f}"
                summary = head + " | " + " | ".join(parts)
            opp = by_account.get(FLAGGED) if st.flagged else by_account.get(str(a))
            rows.append({"protocol": self.name, "account": str(a), "health_factor": st.health, "summary": summary,
                         "available_margin_usd": st.available_margin / 1e18,
                         "maintenance_margin_usd": st.required_maintenance / 1e18,
                         "notional_usd": notional / 1e18, "positions": legs, "opportunity": opp})
        rows.sort(key=lambda r: r["health_factor"])
        return rows
