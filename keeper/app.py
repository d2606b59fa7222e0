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
from typing import Any

from . import abi, log as logmod, strategy
from .config import Config, load_signer
from .errors import BadResponseError, ConfigError, RpcError, TransientError
from .execution.executor import DryRunExecutor, Executor, LiveExecutor
from .multicall import Call, Multicall
from .pricing.uniswap_v3 import UniswapV3Quoter
from .protocols import build_adapter
from .protocols.base import require_code
from .rpc import Rpc, parse_int, redact_url
from .types import Head, Outcome

AGG = abi.load("ChainlinkAggregator")
STARTUP_ATTEMPTS = 3
MAX_BACKOFF_S = 30.0


def build_executor(cfg: Config, rpc: Rpc, adapters: dict[str, Any], log: Any, dry_run: bool) -> Executor:
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
                                       log.bind(mode="live"), public=rpc if cfg.relay.fallback_public else None)
    return LiveExecutor(cfg, rpc, adapters, log.bind(mode="live"), signer, broadcaster)


class Keeper:
    def __init__(self, cfg: Config, dry_run: bool, log: Any = None):
        self.cfg = cfg
        self.dry_run = dry_run
        self.log = log or logmod.get()
        self.rpc = Rpc(cfg.chain.rpc_url, timeout_s=cfg.chain.rpc_timeout_s)
        self.mc = Multicall(self.rpc, cfg.chain.multicall3)
        self.adapters: dict[str, Any] = {}
        self.executor: Executor | None = None
        self.head: Head | None = None
        self.stop_event = asyncio.Event()
        self.cycles = 0

    # -- start-up ---------------------------------------------------------------------
    async def start(self) -> None:
        # the executor first: a missing key in live mode is a config error before any network work
        self.executor = build_executor(self.cfg, self.rpc, self.adapters, self.log, self.dry_run)
        chain_id = await self._connect()
        if self.cfg.chain.chain_id is not None and chain_id != self.cfg.chain.chain_id:
            raise ConfigError(f"chain.chain_id: config says {self.cfg.chain.chain_id} but the RPC is on chain {chain_id}")
        await require_code(self.rpc, self.cfg.chain.multicall3, "chain.multicall3")
        quoter = UniswapV3Quoter(self.mc, self.cfg.swap.quoter_v2, self.cfg.swap.fee_tiers)
        keeper_address = self.executor.address
        for pcfg in self.cfg.protocols:
            if not pcfg.enabled:
                continue
            adapter = build_adapter(pcfg, rpc=self.rpc, multicall=self.mc, quoter=quoter,
                                    keeper_address=keeper_address, chunk_blocks=self.cfg.chain.log_chunk_blocks,
                                    log=self.log)
            await adapter.start()
            self.adapters[pcfg.name] = adapter
        if self.cfg.chain.native_usd_feed is None and not any(
                a.native_price_usd_e8() for a in self.adapters.values() if hasattr(a, "native_price_usd_e8")):
            # prices are loaded on the first refresh; check reserves by symbol now
            if not any(getattr(r, "symbol", "").upper() in ("WETH", "ETH")
                       for a in self.adapters.values() for r in getattr(a, "reserves", [])):
                raise ConfigError("chain.native_usd_feed: required to price gas (no WETH reserve to read it from)")
        await self.executor.start()
        self.log.info("keeper_started", rpc=redact_url(self.cfg.chain.rpc_url), chain_id=chain_id,
                      dry_run=self.dry_run, protocols=list(self.adapters), address=keeper_address)

    async def _connect(self) -> int:
        delay = 0.5
        for attempt in range(1, STARTUP_ATTEMPTS + 1):
            try:
                return await self.rpc.chain_id()
            except (TransientError, RpcError) as e:
                if attempt == STARTUP_ATTEMPTS:
                    raise ConfigError(f"chain.rpc_url: {e} (after {attempt} attempts)") from None
                self.log.warning("rpc_retry", attempt=attempt, error=str(e), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    # -- one cycle --------------------------------------------------------------------
    async def read_head(self) -> Head:
        blk = await self.rpc.get_block("latest")
        return Head(number=parse_int(blk["number"], "block.number"),
                    timestamp=parse_int(blk.get("timestamp", "0x0"), "block.timestamp"),
                    base_fee_wei=parse_int(blk.get("baseFeePerGas", "0x0"), "block.baseFeePerGas"),
                    hash=str(blk.get("hash", "")))

    async def native_usd_e8(self) -> int | None:
        feed = self.cfg.chain.native_usd_feed
        if feed:
            res = await self.mc.run([Call(feed, AGG.fn("latestAnswer").encode()), Call(feed, AGG.fn("decimals").encode())])
            (ok, ans), (ok2, dec) = res
            if not ok or not ok2:
                return None
            answer, decimals = AGG.fn("latestAnswer").decode_one(ans), AGG.fn("decimals").decode_one(dec)
            return answer * 10**8 // 10**decimals if answer > 0 else None
        for a in self.adapters.values():
            p = a.native_price_usd_e8() if hasattr(a, "native_price_usd_e8") else None
            if p:
                return p
        return None

    async def gather(self, head: Head) -> list[Any]:
        """Sync and refresh every adapter; a failing one is logged and skipped."""
        opps: list[Any] = []
        for name, adapter in self.adapters.items():
            lg = self.log.bind(block=head.number, protocol=name)
            try:
                new = await adapter.sync(head)
                if new:
                    lg.info("accounts_discovered", new=new, tracked=len(adapter.accounts))
                found = await adapter.opportunities(head)
            except (TransientError, RpcError, BadResponseError) as e:
                lg.warning("protocol_error", error=str(e))
                continue
            except Exception as e:  # a bug in one adapter must not stop the others
                lg.error("protocol_error", error=f"{e.__class__.__name__}: {e}", exc_info=True)
                continue
            for s in getattr(adapter, "last_skips", []):
                lg.info("skipped", account=s.account, reason=s.reason, **s.detail)
            opps.extend(found)
        return opps

    async def cycle(self, head: Head) -> list[Outcome]:
        assert self.executor is not None
        self.executor.log = self.log.bind(block=head.number, mode="live" if self.executor.live else "dry_run")
        tracked = await self.executor.on_block(head)  # receipts, replacements, cancellations
        opps = await self.gather(head)
        native = await self.native_usd_e8()
        lg = self.log.bind(block=head.number)
        if not opps:
            self.cycles += 1
            return tracked
        if not native:
            for o in opps:
                lg.warning("skipped", protocol=o.protocol, account=o.account, reason="no_native_price")
            return []
        gas_price = head.base_fee_wei + self.cfg.keeper.priority_fee_wei
        ranked = strategy.rank(opps, gas_price, native)
        inventory = self._inventory()
        chosen, skipped = strategy.select(ranked, self.cfg.keeper.min_profit_usd_e8, self.executor.in_flight, inventory)
        for p in ranked:
            detail = p.opp.detail.log_fields() if hasattr(p.opp.detail, "log_fields") else {}
            lg.info("opportunity", protocol=p.opp.protocol, account=p.opp.account,
                    gross_profit_usd=p.opp.gross_profit_usd_e8 / 1e8, gas_cost_usd=p.gas_cost_usd_e8 / 1e8,
                    net_profit_usd=p.net_profit_usd_e8 / 1e8, **detail)
        for p, reason in skipped:
            lg.info("skipped", protocol=p.opp.protocol, account=p.opp.account, reason=reason,
                    net_profit_usd=p.net_profit_usd_e8 / 1e8)
        outs = await self.executor.execute_all(chosen, head, native)
        self.cycles += 1
        return tracked + outs

    def _inventory(self) -> dict[str, int] | None:
        """The keeper's token balances as the adapters read them (None: nobody knows them,
        e.g. dry-run without keeper.address: then inventory does not limit the selection)."""
        known = [a.inventory for a in self.adapters.values() if getattr(a, "inventory", None) is not None]
        if not known:
            return None
        inv: dict[str, int] = {}
        for ai in known:
            inv.update(ai)
        return inv

    # -- the loop ---------------------------------------------------------------------
    async def run(self, once: bool = False, max_cycles: int | None = None) -> None:
        backoff = self.cfg.chain.poll_interval_s
        last = -1
        while not self.stop_event.is_set():
            try:
                head = await self.read_head()
                if head.number != last:
                    self.head = head
                    await self.cycle(head)
                    last = head.number
                    if once or (max_cycles is not None and self.cycles >= max_cycles):
                        return
                backoff = self.cfg.chain.poll_interval_s
                wait = self.cfg.chain.poll_interval_s
            except (TransientError, RpcError) as e:
                self.log.warning("rpc_error", error=str(e), retry_in_s=round(backoff, 2))
                wait = backoff
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                if once and backoff >= MAX_BACKOFF_S:
                    raise
            except ConfigError:
                raise
            except Exception as e:  # never a crash loop: log it, back off, carry on
                self.log.error("cycle_error", error=f"{e.__class__.__name__}: {e}", retry_in_s=round(backoff, 2),
                               exc_info=True)
                wait = backoff
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                if once:
                    raise
            try:
                await asyncio.wait_for(self.stop_event.wait(), timeout=wait)
            except asyncio.TimeoutError:
                pass

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):
                pass

    def _on_signal(self, sig: int) -> None:
        self.log.info("stopping", signal=signal.Signals(sig).name)
        self.stop_event.set()

    async def close(self) -> None:
        if self.executor is not None:
            await self.executor.close()
        await self.rpc.close()
