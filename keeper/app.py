"""Assembles the keeper: RPC, adapters, strategy and the executor. The one place where
dry-run is chosen (build_executor).

One cycle per new block: every adapter syncs (new accounts from events) and produces its
opportunities from one batched refresh; the strategy ranks them all in one list; the
executor simulates and (live) sends. A failing protocol is logged and skipped; the others
go on. RPC trouble while running is logged and retried with a bounded backoff.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import deque
from typing import Any, Awaitable, TypeVar

from . import abi, log as logmod, strategy
from .config import Config, load_signer
from .errors import BadResponseError, ConfigError, RpcError, TransientError
from .execution.executor import DryRunExecutor, Executor, LiveExecutor
from .multicall import Call, Multicall
from .heads import HeadWatcher
from .metrics import Metrics
from .oracles import FeedMap, PendingTx, decode_updates
from .sources.pending import PendingWatcher
from .missed import Tracker, classify
from .pricing.book import SwapVenues
from .protocols import build_adapter
from .protocols.base import ProtocolAdapter, native_price_usd_e8, require_code
from .redact import redact_url
from .rpc import Rpc, parse_int
from .types import ChainLiquidation, Head, Outcome

T = TypeVar("T")
AGG = abi.load("ChainlinkAggregator")
STARTUP_ATTEMPTS = 3


def build_executor(cfg: Config, rpc: Rpc, adapters: dict[str, ProtocolAdapter], log: Any, dry_run: bool) -> Executor:
    """The single switch between watching and acting. Dry-run never loads the key.
    Live: through the public mempool, or as bundles to private relays when [relay] is set."""
    if dry_run:
        return DryRunExecutor(cfg, rpc, adapters, log.bind(mode="dry_run"))
    signer = load_signer(cfg.keeper)
    broadcaster = None
    if cfg.relay is not None:
        from .config import load_relay_signer
        from .execution.relay import RelayBroadcaster

        broadcaster = RelayBroadcaster(cfg.relay.urls, load_relay_signer(cfg.relay), cfg.relay.target_blocks,
                                       log.bind(mode="live"), public=rpc if cfg.relay.fallback_public else None,
                                       timeout_s=cfg.relay.timeout_s)
    return LiveExecutor(cfg, rpc, adapters, log.bind(mode="live"), signer, broadcaster)


class Keeper:
    def __init__(self, cfg: Config, dry_run: bool, log: Any = None, record: bool = True):
        """record: keep the SQLite store of everything seen and done (keeper/store.py);
        one-shot views (scan) do not."""
        self.cfg = cfg
        self.dry_run = dry_run
        self.record = record
        self.store: Any = None  # keeper.store.Store once started (record=True)
        self.tracker = Tracker()  # what the keeper knew of each account: for classifying misses
        self.last_cycle_at: float | None = None  # time.monotonic() when the last cycle completed
        self.started_at: float | None = None  # time.monotonic() when start() finished
        self.metrics = Metrics()  # Prometheus metrics, served on [http] (keeper/server.py)
        self.server: Any = None  # keeper.server.Server with [http]
        self.alerts: Any = None  # keeper.alerts.Alerts with [alerts]
        self._thresholds: Any = None
        # the latest liquidations seen on chain, with their class and why (bounded: for views)
        self.classified: deque[tuple[ChainLiquidation, str, dict[str, Any]]] = deque(maxlen=1000)
        self.log = log or logmod.get()
        self.heads = HeadWatcher(cfg.chain.ws_url, cfg.chain.poll_interval_s, self.log)  # started by start()
        self.rpc = Rpc(cfg.chain.rpc_urls or (cfg.chain.rpc_url,), timeout_s=cfg.chain.rpc_timeout_s,
                       max_head_lag_blocks=cfg.chain.max_head_lag_blocks,
                       probe_interval_s=cfg.chain.rpc_probe_interval_s, log=self.log,
                       max_batch_calls=cfg.chain.max_batch_calls, max_request_bytes=cfg.chain.max_request_bytes,
                       max_concurrent_requests=cfg.chain.max_concurrent_requests)
        self.mc = Multicall(self.rpc, cfg.chain.multicall3)
        self.adapters: dict[str, ProtocolAdapter] = {}
        self.executor: Executor | None = None
        self.swaps: SwapVenues | None = None
        self.head: Head | None = None
        self.stop_event = asyncio.Event()
        self.cycles = 0
        self.feeds = FeedMap()  # price feeds the adapters read -> the contracts their updates call
        self.pending: PendingWatcher | None = None  # pending oracle updates (started by run())
        self._watched: set[str] = set()  # the sources in self.feeds (lowercase)
        self._last_heartbeat: int | None = None  # the head of the last heartbeat line
        self._pending_refused = False  # the node cannot show pending transactions
        self._react_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.reactions = 0  # pending oracle updates acted on
        self._hashes: dict[int, str] = {}  # recent block number -> hash, to see reorgs
        self._canonical: dict[int, str] = {}  # the node's hash now at the last head's height

    # -- start-up ---------------------------------------------------------------------
    async def start(self) -> None:
        # the executor first: a missing key in live mode is a config error before any network work
        self.executor = build_executor(self.cfg, self.rpc, self.adapters, self.log, self.dry_run)
        chain_id = await self._connect()
        if self.cfg.chain.chain_id is not None and chain_id != self.cfg.chain.chain_id:
            raise ConfigError(f"chain.chain_id: config says {self.cfg.chain.chain_id} but the RPC is on chain {chain_id}")
        await require_code(self.rpc, self.cfg.chain.multicall3, "chain.multicall3")
        self.swaps = await self._swap_venues()
        keeper_address = self.executor.address
        if self.record:
            from .store import Store, store_path_for

            self.store = Store(store_path_for(self.cfg, keeper_address), self.log,
                               retention_days=self.cfg.keeper.store_retention_days)
            self.executor.store = self.store
        self.executor.on_sent = self._on_sent
        self.executor.metrics = self.metrics
        self.rpc.on_request = self.metrics.rpc
        for pcfg in self.cfg.protocols:
            if not pcfg.enabled:
                continue
            adapter = build_adapter(pcfg, rpc=self.rpc, multicall=self.mc, swaps=self.swaps,
                                    keeper_address=keeper_address, chunk_blocks=self.cfg.chain.log_chunk_blocks,
                                    log=self.log)
            adapter.sizing = self.cfg.keeper.sizing
            adapter.block_time_s = self.cfg.chain.block_time_s
            await adapter.start()
            self.adapters[pcfg.name] = adapter
        if self.cfg.chain.native_usd_feed is None and not any(a.can_price_native() for a in self.adapters.values()):
            raise ConfigError("chain.native_usd_feed: required to price gas (no WETH reserve, ETH ilk or market to "
                              "read it from)")
        await self.executor.start()
        if self.record:  # a view (scan) neither records nor serves nor follows heads
            await self._start_operations()
            await self.heads.start()
        self.started_at = time.monotonic()
        self.log.info("keeper_started", rpc=redact_url(self.cfg.chain.rpc_url), chain_id=chain_id,
                      dry_run=self.dry_run, protocols=list(self.adapters), address=keeper_address)

    async def _start_operations(self) -> None:
        """The operator's side: the HTTP server ([http]: /healthz, /metrics, the status page)
        and webhook alerts ([alerts]); both optional."""
        import os

        if self.cfg.http is not None:
            from .server import Server

            h = self.cfg.http
            token = os.environ.get(h.token_env) if h.token_env else None
            if h.token_env and not token:
                raise ConfigError(f"http.token_env: the environment variable {h.token_env} is not set")
            self.server = Server(self, self.metrics, listen=f"{h.host}:{h.port}", token=token)
            try:
                await self.server.start()
            except OSError as e:
                raise ConfigError(f"http.listen: cannot listen on {h.host}:{h.port}: {e.strerror or e}") from None
            self.log.info("http_listening", url=f"http://{h.host}:{self.server.port}/", token=bool(token))
        if self.cfg.alerts is not None:
            from .alerts import Alerts, Thresholds

            a = self.cfg.alerts
            url = os.environ.get(a.webhook_url_env)
            if not url:
                raise ConfigError(f"alerts.webhook_url_env: the environment variable {a.webhook_url_env} is not set")
            self.alerts = Alerts(url, a.style, self.log, min_interval_s=a.min_interval_s)
            self._thresholds = Thresholds(min_balance={k: float(v) for k, v in a.min_balances}, failed_sends=a.failed_sends)

    def after_cycle(self, head: Head | None, seconds: float | None) -> None:
        """Metrics and alerts once a cycle ended (or failed: head None)."""
        if seconds is not None:
            self.metrics.cycle(seconds)
        self.metrics.sync(self)
        if self.alerts is not None:
            from .alerts import check

            check(self, self.alerts, self._thresholds)

    async def _swap_venues(self) -> SwapVenues:
        """The pool book every adapter prices its swaps with: the Uniswap V3 factory (from the
        config, else the QuoterV2's factory()), the V2 factory when configured, and the
        connector tokens two-hop routes may pass through (default: the QuoterV2's WETH9)."""
        sw = self.cfg.swap
        await require_code(self.rpc, sw.quoter_v2, "swap.quoter_v2")
        quoter = abi.load("UniswapV3QuoterV2")
        factory, connectors = sw.v3_factory, sw.connectors
        if factory is None or not connectors:
            (ok_f, f), (ok_w, w) = await self.mc.run([Call(sw.quoter_v2, quoter.fn("factory").encode()),
                                                      Call(sw.quoter_v2, quoter.fn("WETH9").encode())])
            if not (ok_f and ok_w and len(f) == 32 and len(w) == 32):
                raise ConfigError(f"swap.quoter_v2: {sw.quoter_v2} is not a Uniswap V3 QuoterV2 (no factory()/WETH9())")
            factory = factory or abi.to_checksum(quoter.fn("factory").decode_one(f))
            connectors = connectors or (abi.to_checksum(quoter.fn("WETH9").decode_one(w)),)
        await require_code(self.rpc, factory, "swap.factory")
        if sw.uniswap_v2_factory:
            await require_code(self.rpc, sw.uniswap_v2_factory, "swap.uniswap_v2_factory")
        return SwapVenues(self.mc, v3_factory=factory, fee_tiers=sw.fee_tiers, v2_factory=sw.uniswap_v2_factory,
                          connectors=connectors, log=self.log)

    async def _connect(self) -> int:
        delay = 0.5
        for attempt in range(1, STARTUP_ATTEMPTS + 1):
            try:
                return await self.rpc.connect()
            except (TransientError, RpcError) as e:
                if attempt == STARTUP_ATTEMPTS:
                    raise ConfigError(f"chain.rpc_url: {e} (after {attempt} attempts)") from None
                self.log.warning("rpc_retry", attempt=attempt, error=str(e), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    # -- one cycle --------------------------------------------------------------------
    async def read_head(self) -> Head:
        """The latest block; in the same request, the block at the last head's height, so a
        reorg under skipped blocks is seen (its hash no longer matches)."""
        prev = self.head
        if prev is None:
            blk = await self.rpc.get_block("latest")
        else:
            blk, then = await self.rpc.batch([("eth_getBlockByNumber", ["latest", False]),
                                              ("eth_getBlockByNumber", [hex(prev.number), False])])
            if not isinstance(blk, dict) or "number" not in blk:
                raise BadResponseError(f"eth_getBlockByNumber(latest): malformed block: {str(blk)[:120]!r}")
            self._canonical[prev.number] = str(then.get("hash", "")) if isinstance(then, dict) else ""
        return Head(seen_at=time.monotonic(), number=parse_int(blk["number"], "block.number"),
                    timestamp=parse_int(blk.get("timestamp", "0x0"), "block.timestamp"),
                    base_fee_wei=parse_int(blk.get("baseFeePerGas", "0x0"), "block.baseFeePerGas"),
                    hash=str(blk.get("hash", "")), gas_used=parse_int(blk.get("gasUsed", "0x0"), "block.gasUsed"),
                    gas_limit=parse_int(blk.get("gasLimit", "0x0"), "block.gasLimit"))

    async def native_usd_e8(self) -> int | None:
        feed = self.cfg.chain.native_usd_feed
        if feed:
            res = await self.mc.run([Call(feed, AGG.fn("latestAnswer").encode()), Call(feed, AGG.fn("decimals").encode())])
            (ok, ans), (ok2, dec) = res
            if not ok or not ok2:
                return None
            answer, decimals = AGG.fn("latestAnswer").decode_one(ans), AGG.fn("decimals").decode_one(dec)
            return answer * 10**8 // 10**decimals if answer > 0 else None
        return native_price_usd_e8(self.adapters.values())

    async def gather(self, head: Head) -> list[Any]:
        """Sync and refresh every adapter, all at once; a failing one is logged and skipped."""
        results = await asyncio.gather(*(self._gather_one(name, a, head) for name, a in self.adapters.items()))
        return [o for found in results for o in found]

    async def _gather_one(self, name: str, adapter: Any, head: Head) -> list[Any]:
        lg = self.log.bind(block=head.number, protocol=name)
        try:
            new = await adapter.sync(head)
            if new:
                lg.info("accounts_discovered", new=new, tracked=len(adapter.accounts))
            found = await adapter.opportunities(head)
        except (TransientError, RpcError, BadResponseError) as e:
            lg.warning("protocol_error", error=str(e))
            return []
        except Exception as e:  # a bug in one adapter must not stop the others
            lg.error("protocol_error", error=f"{e.__class__.__name__}: {e}", exc_info=True)
            return []
        for s in adapter.last_skips:
            lg.info("skipped", account=s.account, reason=s.reason, **s.detail)
            self.tracker.skipped(name, s.account, head.number, s.reason)
            if self.store is not None:
                self.store.decided(head.number, head.timestamp, name, s.account, "skipped", s.reason, None)
        self._chain_liquidations(name, adapter, head)
        return list(found)

    def _chain_liquidations(self, name: str, adapter: Any, head: Head) -> None:
        """Every liquidation that happened on chain in this protocol since the last block,
        classified against what the keeper knew: ours, raced, filtered or unseen."""
        liqs = adapter.drain_liquidations()
        if not liqs:
            return
        ours = {a.lower() for a in self.adapters_addresses()}
        for liq in liqs:
            klass, why = classify(liq, ours=ours, history=self.tracker.history(liq.protocol, liq.account,
                                                                                upto_block=liq.block))
            self.log.info("chain_liquidation", protocol=name, account=liq.account, liquidator=liq.liquidator,
                          block=liq.block, tx=liq.tx_hash, klass=klass,
                          value_usd=None if liq.value_usd_e8 is None else liq.value_usd_e8 / 1e8, why=why)
            self.classified.append((liq, klass, why))
            self.metrics.miss(name, klass)
            if (klass == "raced" and self.alerts is not None and liq.value_usd_e8 is not None
                    and liq.value_usd_e8 >= self.cfg.alerts.raced_min_usd_e8):
                self.alerts.notify("raced_miss", f"{name}: {liq.account} liquidated by {liq.liquidator} first "
                                   f"(${liq.value_usd_e8 / 1e8:,.2f})", block=liq.block, tx=liq.tx_hash, why=why)
            if self.store is not None:
                self.store.chain_liquidation(liq.protocol, liq.kind, liq.account, liq.liquidator, liq.block,
                                             head.timestamp, liq.tx_hash, liq.log_index, liq.detail, liq.value_usd_e8,
                                             klass, why)

    def adapters_addresses(self) -> set[str]:
        """The keeper's own addresses: its account and the contracts it liquidates through."""
        out = {self.executor.address} if self.executor is not None and self.executor.address else set()
        for a in self.adapters.values():
            out |= a.liquidator_addresses()
        return out

    async def cycle(self, head: Head, background: bool = False) -> list[Outcome]:
        """One block: track our transactions, refresh every adapter, rank, and hand the chosen
        opportunities to the executor (background: its batch runs beside the loop)."""
        assert self.executor is not None
        await self._note_chain(head)
        self.head = head
        self.executor.log = self.log.bind(block=head.number, mode="live" if self.executor.live else "dry_run")
        if self.swaps is not None and self.record:  # the daemon: the book loads beside the refresh
            self.swaps.prefetch(head.number)
        # receipts, reorgs, replacements and cancellations of our sends, beside every adapter's
        # sync and refresh: neither waits for the other
        tracked, opps = await asyncio.gather(self.executor.on_block(head), self.gather(head))
        if opps:
            self.metrics.stage("opportunity", time.monotonic() - head.seen_at)
            for o in opps:
                self.metrics.opportunity(o.protocol)
        native = await self.native_usd_e8()
        lg = self.log.bind(block=head.number)
        if not opps:
            self.cycles += 1
            self.last_cycle_at = time.monotonic()
            return tracked
        if not native:
            for o in opps:
                lg.warning("skipped", protocol=o.protocol, account=o.account, reason="no_native_price")
            return []
        gas_price = self.executor.fees(head)[0]
        ranked = strategy.rank(opps, gas_price, native)
        inventory = self.inventory()
        impact = None
        if self.cfg.keeper.sizing == "profit" and any(p.opp.routes for p in ranked):
            # the state every adapter priced with (memoized per block; a private copy to apply to)
            impact = strategy.Impact(await self.swaps.book(head.number), self._resize, gas_price, native)
        chosen, skipped = strategy.select(ranked, self.cfg.keeper.min_profit_usd_e8, self.executor.in_flight, inventory,
                                          impact)
        for p in ranked:
            detail = p.opp.detail.log_fields() if hasattr(p.opp.detail, "log_fields") else {}
            lg.info("opportunity", protocol=p.opp.protocol, account=p.opp.account,
                    gross_profit_usd=p.opp.gross_profit_usd_e8 / 1e8, gas_cost_usd=p.gas_cost_usd_e8 / 1e8,
                    net_profit_usd=p.net_profit_usd_e8 / 1e8, **detail)
            self.tracker.saw(p.opp.protocol, p.opp.account, head.number)
            if self.store is not None:
                self.store.seen(head.number, head.timestamp, p.opp.protocol, p.opp.kind, p.opp.account,
                                str(getattr(p.opp.detail, "route", "")), detail, p.opp.gross_profit_usd_e8,
                                p.gas_cost_usd_e8, p.net_profit_usd_e8)
        for p, reason in skipped:
            lg.info("skipped", protocol=p.opp.protocol, account=p.opp.account, reason=reason,
                    net_profit_usd=p.net_profit_usd_e8 / 1e8)
            self._decided(head, p.opp.protocol, p.opp.account, "skipped", reason, p.net_profit_usd_e8)
        for p in chosen:
            self.tracker.chose(p.opp.protocol, p.opp.account, head.number)
        outs = await self.executor.execute_all(chosen, head, native, background=background)
        self._note_outcomes(head, outs)
        self.cycles += 1
        self.last_cycle_at = time.monotonic()
        return tracked + outs

    # -- same-block reaction to pending oracle updates -----------------------------------
    async def _watch_pending(self) -> None:
        """Map every feed the adapters read to the contract its updates call (a Chainlink
        proxy's aggregator(), else the feed itself), then follow pending transactions to them.
        A node that cannot is logged once; the keeper then reacts per block."""
        try:
            await self._start_pending()
        except (TransientError, RpcError, BadResponseError) as e:
            self.log.warning("pending_unavailable", error=str(e), hint="the keeper reacts per block")

    def _new_sources(self) -> list[str]:
        return sorted({s for a in self.adapters.values() for s in a.oracle_sources()
                       if s.lower() not in self._watched})

    def follow_sources(self) -> None:
        """After a cycle: feeds an adapter found since (a Morpho market created after
        start-up) are added to the pending watch, beside the loop."""
        if (not self.cfg.chain.watch_pending or self._pending_refused or self.stop_event.is_set()
                or (self._watch_task is not None and not self._watch_task.done()) or not self._new_sources()):
            return
        self._watch_task = asyncio.create_task(self._watch_pending(), name="pending-setup")

    async def map_sources(self) -> list[str]:
        """Every feed the adapters read and not yet mapped, mapped to the contract its updates
        call (a Chainlink proxy's aggregator(), else the feed itself); returns them."""
        sources = self._new_sources()
        if not sources:
            return []
        f = AGG.fn("aggregator") if "aggregator" in AGG.functions else abi.Function("aggregator", [], ["address"])
        res = await self.mc.run([Call(src, f.encode()) for src in sources])
        for src, (ok, data) in zip(sources, res):
            agg = abi.to_checksum(data[12:32]) if ok and len(data) == 32 and int.from_bytes(data, "big") else None
            self.feeds.add(src, agg)
            self._watched.add(src.lower())
        return sources

    async def _start_pending(self) -> None:
        sources = await self.map_sources()
        if not sources:
            return
        if self.pending is not None:
            self.log.info("pending_watch", feeds=len(self.feeds), mode=self.pending.mode, added=len(sources))
            return
        self._pending_refused = True  # until the watcher has started: one attempt
        self.pending = PendingWatcher(self.rpc, self.log, targets=self.feeds.targets,
                                      poll_interval_s=self.cfg.chain.pending_poll_interval_s,
                                      ws_url=self.cfg.chain.ws_url)
        await self.pending.start()
        self._pending_refused = False
        self._react_task = asyncio.create_task(self._react_loop(), name="oracle-reactions")
        self.log.info("pending_watch", feeds=len(self.feeds), mode=self.pending.mode)

    async def _react_loop(self) -> None:
        assert self.pending is not None
        while True:
            tx = await self.pending.queue.get()
            try:
                await self.react(tx)
            except asyncio.CancelledError:
                raise
            except (TransientError, RpcError, BadResponseError) as e:
                self.log.warning("reaction_error", tx=tx.hash, error=str(e))
            except Exception as e:  # never let one update stop the reactions
                self.log.error("reaction_error", tx=tx.hash, error=f"{e.__class__.__name__}: {e}", exc_info=True)

    async def react(self, tx: PendingTx) -> list[Outcome]:
        """A pending transaction that updates feeds the adapters read: each adapter re-prices
        the accounts exposed to them at the pending answers; what becomes liquidatable is
        ranked and sent to land right behind the update, in its block."""
        head = self.head
        if head is None or self.executor is None or self.stop_event.is_set() or tx.block_number is not None:
            return []
        answers: dict[str, int] = {}
        for target, answer in decode_updates(tx.to, tx.input):
            for src in self.feeds.lookup(target):
                answers[src] = answer
        if not answers:
            return []
        self.log.info("oracle_update_pending", tx=tx.hash, feeds=sorted(answers), answers=sorted(set(answers.values())),
                      block=head.number)
        opps: list[Any] = []
        for name, a in self.adapters.items():
            try:
                opps += await a.react(head, answers, tx)
            except (TransientError, RpcError, BadResponseError) as e:
                self.log.warning("protocol_error", protocol=name, error=str(e), during="reaction")
            except Exception as e:  # one adapter's bug must not stop the others
                self.log.error("protocol_error", protocol=name, error=f"{e.__class__.__name__}: {e}",
                               during="reaction", exc_info=True)
        native = self.executor.native_usd_e8()
        if not opps or not native:
            return []
        gas_price = self.executor.fees(head)[0]
        ranked = strategy.rank(opps, gas_price, native)
        impact = None
        if self.cfg.keeper.sizing == "profit" and self.swaps is not None and any(p.opp.routes for p in ranked):
            # as in a block: each one sized again after the swaps of the ones ranked before it
            impact = strategy.Impact(await self.swaps.book(head.number), self._resize, gas_price, native)
        chosen, skipped = strategy.select(ranked, self.cfg.keeper.min_profit_usd_e8, self.executor.in_flight,
                                          self.inventory(), impact)
        for p, reason in skipped:
            self.log.info("skipped", protocol=p.opp.protocol, account=p.opp.account, reason=reason, behind=tx.hash)
        for p in chosen:
            self.tracker.chose(p.opp.protocol, p.opp.account, head.number)
        self.reactions += 1
        outs = await self.executor.execute_all(chosen, head, native, background=True)
        self.metrics.stage("reaction", time.monotonic() - tx.seen_at)
        self._note_outcomes(head, outs)
        return outs

    def _on_sent(self, head: Head, protocol: str, account: str, tx_hash: str, net: int) -> None:
        self.tracker.sent(protocol, account, head.number, tx_hash)
        self._decided(head, protocol, account, "sent", "", net)

    def _decided(self, head: Head, protocol: str, account: str, decision: str, reason: str, net: int | None) -> None:
        if decision == "skipped":
            self.tracker.skipped(protocol, account, head.number, reason)
        if self.store is not None:
            self.store.decided(head.number, head.timestamp, protocol, account, decision, reason, net)

    def _note_outcomes(self, head: Head, outs: list[Outcome]) -> None:
        """The executor's decisions: skips (with the reason) and dry-run sends (live sends are
        recorded by the executor when they are signed)."""
        for o in outs:
            if o.status in ("skipped", "dry_run"):
                self._decided(head, o.opp.protocol, o.opp.account, o.status, o.reason, o.expected_profit_usd_e8)

    def _resize(self, opp: Any, book: Any) -> Any:
        return self.adapters[opp.protocol].resize(opp, book)

    def realized_profit_usd_e8(self, out: Outcome) -> int | None:
        """What a confirmed action really earned after gas, in USD e8: the adapter's reading
        of its receipt minus the gas paid at the current native price (None: not known)."""
        assert self.executor is not None
        return self.executor.realized_profit_usd_e8(out)

    def inventory(self) -> dict[str, int] | None:
        """The keeper's token balances as the adapters read them (None: nobody knows them,
        e.g. dry-run without keeper.address: then inventory does not limit the selection)."""
        known = [a.inventory for a in self.adapters.values() if a.inventory is not None]
        if not known:
            return None
        inv: dict[str, int] = {}
        for ai in known:
            inv.update(ai)
        return inv

    # -- the loop ---------------------------------------------------------------------
    async def _unless_stopped(self, coro: Awaitable[T]) -> T | None:
        """Run coro; if the keeper is told to stop meanwhile, cancel it and return None."""
        task = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self.stop_event.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # the caller was cancelled: so is what it waited for
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            raise
        finally:
            stop.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None

    async def _note_chain(self, head: Head) -> None:
        """Detect a reorg or a chain that went backwards, say so, and let the executor resync."""
        prev = self.head
        self._hashes[head.number] = head.hash
        canonical_prev = self._canonical.pop(prev.number, "") if prev is not None else ""
        for n in [n for n in self._hashes if n < head.number - 128]:
            del self._hashes[n]
        if prev is None:
            return
        if head.number < prev.number:
            self.log.warning("chain_went_back", from_block=prev.number, to_block=head.number,
                             hint="the node restarted from an older state or switched chains; nonce resynced,"
                                  " sends re-checked")
            for n in [n for n in self._hashes if n > head.number]:
                del self._hashes[n]
        elif canonical_prev not in (prev.hash, ""):  # the block we last saw is no longer the chain's
            depth = await self._reorg_depth(head)
            self.log.warning("chain_reorg", block=head.number, depth=depth)
        else:
            return
        assert self.executor is not None
        await self.executor.on_chain_change()

    async def _reorg_depth(self, head: Head) -> int | None:
        known = sorted((n for n in self._hashes if n < head.number), reverse=True)[:64]
        if not known:
            return None
        try:
            blocks = await self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n in known], return_errors=True)
        except (TransientError, RpcError):
            return None
        for n, b in zip(known, blocks):
            if isinstance(b, dict) and b.get("hash") == self._hashes[n]:
                return head.number - n - 1 if head.number > n else None
            if isinstance(b, dict):
                self._hashes[n] = str(b.get("hash"))
        return len(known)

    def _heartbeat(self, head: Head, cycle_s: float) -> None:
        """A heartbeat line once at least heartbeat_blocks blocks have passed since the last one
        (and on the first processed head): heads are coalesced and failed cycles emit none, so a
        "multiple of N" rule could skip every block it would fire on. A chain that went back
        below the last heartbeat starts the count again."""
        every = self.cfg.keeper.heartbeat_blocks
        if not every:
            return
        last = self._last_heartbeat
        if last is not None and last <= head.number < last + every:
            return
        self._last_heartbeat = head.number
        ex = self.executor
        status = self.rpc.endpoints_status if len(self.rpc.urls) > 1 else None
        self.log.info("heartbeat", block=head.number, lag_s=max(round(time.time() - head.timestamp, 1), 0),
                      cycle_s=round(cycle_s, 3), cycles=self.cycles,
                      tracked={n: len(a.accounts) for n, a in self.adapters.items()}, heads=self.heads.mode,
                      in_flight=len(ex.in_flight) if ex else 0,
                      paused=bool(ex and ex.paused),
                      rpc=[{"url": e.get("url"), "healthy": e.get("healthy")} for e in status()] if status else None)

    async def run(self, once: bool = False, max_cycles: int | None = None) -> None:
        """Follow the chain until stopped: the engine's parts (keeper/engine.py) run as their
        own tasks: heads are collected while a cycle runs, one cycle at a time takes the newest
        (no pile-up), pending oracle updates are reacted to beside them, sends run in the
        executor's tasks."""
        from .engine import Engine

        await Engine(self, once=once, max_cycles=max_cycles).run()

    async def _until_next_head(self, wait: float) -> None:
        """Sleep until the websocket announces a new head, the poll interval (or backoff) has
        passed, or the keeper is told to stop."""
        stop = asyncio.ensure_future(self.stop_event.wait())
        new = asyncio.ensure_future(self.heads.wait(wait))
        try:
            await asyncio.wait({stop, new}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (stop, new):
                t.cancel()
            await asyncio.gather(stop, new, return_exceptions=True)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):
                pass

    def _on_signal(self, sig: int) -> None:
        self.log.info("stopping", signal=signal.Signals(sig).name)
        self.stop()

    def stop(self) -> None:
        """Stop between any two steps: nothing new is signed from now on."""
        self.stop_event.set()
        if self.executor is not None:
            self.executor.halt()

    async def close(self) -> None:
        for t in (self._watch_task, self._react_task):
            if t is not None:
                t.cancel()
                await asyncio.gather(t, return_exceptions=True)
        if self.pending is not None:
            await self.pending.close()
        await self.heads.close()
        if self.server is not None:
            await self.server.stop()
        if self.alerts is not None:
            await self.alerts.close()
        if self.executor is not None:
            await self.executor.close()
        await self.rpc.close()
        if self.store is not None:
            self.store.close()
