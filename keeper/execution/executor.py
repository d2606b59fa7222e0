"""Dry-run and live executors. Both simulate; only LiveExecutor signs and sends.

Flow for each selected opportunity: (live: one-time set-up calls and token approvals) →
simulate the exact call against the latest block, measuring the keeper's token balances
before and after where the node can (eth_simulateV1) → compare the measured profit with
the prediction (a gap above `profit_tolerance_pct` is logged) → re-price with the
simulated gas → refuse below the profit floor or over the fee cap → live: the transaction
manager signs, journals, sends and tracks it; dry-run: log what would be sent.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping

from .. import abi, strategy
from ..config import Config
from ..errors import BadResponseError, RpcError, TransientError
from ..rpc import Rpc, parse_int
from ..protocols.base import ProtocolAdapter, native_price_usd_e8
from ..types import Head, Outcome, Priced, TxPlan
from .journal import Journal
from .simulate import MeasuredSim, Simulator, simulate
from .txmanager import FILL_PREFIX, Broadcaster, SendRefused, Tracked, TxManager

ERC20 = abi.load("ERC20")
F_ALLOWANCE = ERC20.fn("allowance")
F_APPROVE = ERC20.fn("approve")
MAX_UINT = 2**256 - 1
OUTCOMES_KEPT = 10_000


def gas_limit_for(plan: TxPlan, simulated_gas: int) -> int:
    """The gas limit to send with: the simulated gas is what the call used after refunds, in
    the state the simulation saw; the call needs more up front (storage refunds come back only
    at the end, each nested call keeps 1/64 back) and the state at inclusion may differ (a
    swap that crosses more ticks). Half again plus 100,000, never above the plan's limit;
    only the gas used is paid."""
    if not simulated_gas:
        return plan.gas_limit
    return min(plan.gas_limit, simulated_gas * 3 // 2 + 100_000)


class Executor:
    live = False

    def __init__(self, cfg: Config, rpc: Rpc, adapters: Mapping[str, ProtocolAdapter], log: Any):
        self.cfg = cfg
        self.rpc = rpc
        self.adapters = adapters
        self.log = log
        self.address: str | None = cfg.keeper.address
        self.simulator = Simulator(rpc, cfg.chain.multicall3)
        self.outcomes: deque[Outcome] = deque(maxlen=OUTCOMES_KEPT)  # recent, for summaries (bounded: runs for months)
        self.stopping = False  # set on shutdown: nothing new is simulated or sent
        self.tasks: set[asyncio.Task[list[Outcome]]] = set()
        self._dispatching: set[str] = set()  # keys handed to a batch that has not finished
        self._approved: set[tuple[str, str]] = set()  # (token, spender) known to have a full allowance
        self.store: Any = None  # keeper.store.Store: sends and outcomes are recorded there (set by the app)
        # called with (head, protocol, account, tx hash, expected net usd_e8) for every liquidation sent
        self.on_sent: Callable[[Head, str, str, str, int], None] | None = None
        self.head: Head | None = None  # the head of the batch or block being handled
        self.metrics: Any = None  # keeper.metrics.Metrics (set by the app)
        self.last_native_usd_e8: int | None = None  # the native price the last batch was priced with

    @property
    def in_flight(self) -> set[str]:
        return set(self._dispatching)

    async def execute_all(self, chosen: list[Priced], head: Head, native_usd_e8: int,
                          background: bool = False) -> list[Outcome]:
        """Handle the chosen opportunities in ranking order (set-up, simulation, send, a short
        receipt wait) in one task. background: return at once and let the task run beside the
        loop (the daemon); otherwise wait for it (tests, --once)."""
        self.last_native_usd_e8 = native_usd_e8
        outs: list[Outcome] = []
        batch: list[Priced] = []
        for p in chosen:
            if p.opp.key in self.in_flight:  # never send twice
                outs.append(self._skip(p, "in_flight"))
            else:
                batch.append(p)
                self._dispatching.add(p.opp.key)
        if not batch:
            return outs
        task = asyncio.create_task(self._run_batch(batch, head, native_usd_e8))
        self.tasks.add(task)
        task.add_done_callback(lambda t, keys=[p.opp.key for p in batch]: self._batch_done(t, keys))
        if background:
            return outs
        return outs + await asyncio.shield(task)

    def _batch_done(self, task: asyncio.Task[list[Outcome]], keys: list[str]) -> None:
        self.tasks.discard(task)
        self._dispatching.difference_update(keys)
        if not task.cancelled() and task.exception() is not None:
            e = task.exception()
            self.log.error("execution_error", error=f"{e.__class__.__name__}: {e}", exc_info=e)

    async def _run_batch(self, batch: list[Priced], head: Head, native_usd_e8: int) -> list[Outcome]:
        raise NotImplementedError

    @property
    def paused(self) -> bool:
        return False

    def halt(self) -> None:
        """From now on nothing new is simulated, signed or sent (callable from a signal handler)."""
        self.stopping = True

    async def stop(self, grace_s: float = 5.0) -> None:
        """No new sends; let batches in the middle of a broadcast finish (bounded), then cancel."""
        self.halt()
        if self.tasks:
            _, late = await asyncio.wait(set(self.tasks), timeout=grace_s)
            for t in late:
                t.cancel()
            if late:
                await asyncio.wait(late, timeout=1.0)

    async def on_chain_change(self) -> None:
        """The chain went back or reorganised: whatever depends on the node's state is re-read."""
        return None

    async def start(self) -> None:
        return None

    async def on_block(self, head: Head) -> list[Outcome]:
        return []

    def fees(self, head: Head) -> tuple[int, int, int]:
        """(expected gas price, max fee, priority fee) in wei for the next block."""
        k = self.cfg.keeper
        prio = k.priority_fee_wei
        max_fee = min(2 * head.base_fee_wei + prio, k.max_fee_wei)
        return min(head.next_base_fee_wei + prio, max_fee), max_fee, prio

    def native_usd_e8(self) -> int | None:
        """The native price the adapters read, else the one the last batch was priced with
        (e.g. from chain.native_usd_feed)."""
        return native_price_usd_e8(self.adapters.values()) or self.last_native_usd_e8

    def realized_profit_usd_e8(self, out: Outcome) -> int | None:
        """What a confirmed action really earned after gas, in USD e8: the adapter's reading
        of its receipt minus the gas paid at the current native price (None: not known).
        A reverted or cancelled one lost its gas."""
        adapter = self.adapters.get(out.opp.protocol)
        native = self.native_usd_e8()
        if adapter is None or not native:
            return None
        gas = out.gas_cost_wei * native // 10**18
        if out.status in ("failed", "cancelled"):
            return -gas
        if out.status != "confirmed":
            return None
        gross = adapter.realized_gross_usd_e8(out.opp, out.realized)
        return None if gross is None else gross - gas

    def _skip(self, p: Priced, reason: str, **kw: Any) -> Outcome:
        self.log.info("skipped", protocol=p.opp.protocol, account=p.opp.account, reason=reason, **kw)
        out = Outcome(opp=p.opp, status="skipped", reason=reason, expected_profit_usd_e8=p.net_profit_usd_e8)
        self._keep(out)
        return out

    def _keep(self, out: Outcome) -> None:
        """Every outcome: kept for summaries and counted in the metrics."""
        self.outcomes.append(out)
        if self.metrics is not None:
            self.metrics.outcome(out, self.realized_profit_usd_e8(out))

    def _stage(self, stage: str, head: Head | None) -> None:
        if self.metrics is not None and head is not None and head.seen_at:
            self.metrics.stage(stage, time.monotonic() - head.seen_at)

    async def _sim_context(self, p: Priced, earlier: list[TxPlan]) -> tuple[tuple[TxPlan, ...], str]:
        """(calls to simulate first in the same block, block tag) for this executor.
        `earlier`: the plans this batch sent (or would send) before this one."""
        return tuple(earlier), "latest"

    def _approval_calls(self, plan: TxPlan) -> tuple[TxPlan, ...]:
        """The approvals the plan needs and the keeper may not have made yet, as calls to run
        before it in the simulation: reset to zero (USDT-like tokens refuse non-zero to
        non-zero), then the full allowance the executor would set."""
        out: list[TxPlan] = []
        for ap in plan.approvals:
            if (ap.token.lower(), ap.spender.lower()) not in self._approved:
                out += [TxPlan(to=ap.token, data=F_APPROVE.encode(ap.spender, 0), gas_limit=100_000),
                        TxPlan(to=ap.token, data=F_APPROVE.encode(ap.spender, MAX_UINT), gas_limit=100_000)]
        return tuple(out)

    async def _check(self, p: Priced, head: Head, native_usd_e8: int,
                     earlier: list[TxPlan] | None = None) -> tuple[Priced, MeasuredSim] | Outcome:
        """Simulate, measure and re-price; returns (repriced, sim) or a skip Outcome."""
        expected_price, _, prio = self.fees(head)
        if head.base_fee_wei + prio > self.cfg.keeper.max_fee_wei:
            return self._skip(p, "fee_cap", base_fee_gwei=head.base_fee_wei / 1e9)
        if self.address is None:
            return self._skip(p, "no_keeper_address", hint="set keeper.address to simulate")
        adapter = self.adapters.get(p.opp.protocol)
        tokens = adapter.measure_tokens(p.opp) if adapter is not None else ()
        try:
            pre, block = await self._sim_context(p, earlier or [])
            if p.opp.behind is not None:  # the pending oracle update it must follow, first in the block
                t = p.opp.behind
                pre = (TxPlan(to=t.to, data=t.input, value=t.value, gas_limit=t.gas, sender=t.sender),) + pre
            sim = await self.simulator.run(p.opp.plan, self.address, tokens, pre=pre, block=block)
        except (RpcError, TransientError, BadResponseError) as e:  # the node could not simulate: no send
            return self._skip(p, "simulation_failed", error=str(e))
        if not sim.ok:
            reason = adapter.explain_revert(sim.reason) if adapter is not None else sim.reason
            return self._skip(p, "simulation_reverted", revert=reason)
        gross = p.opp.gross_profit_usd_e8
        if sim.deltas is not None and adapter is not None:
            measured = adapter.measured_profit_usd_e8(p.opp, sim.deltas, sim.return_data)
            if measured is not None:
                gap = abs(measured - gross)
                if gap * 10_000 > abs(gross) * self.cfg.keeper.profit_tolerance_bps:
                    self.log.warning("profit_mismatch", protocol=p.opp.protocol, account=p.opp.account,
                                     predicted_usd=gross / 1e8, simulated_usd=measured / 1e8)
                gross = min(gross, measured)  # act on the more conservative of the two
        repriced = strategy.price(p.opp, expected_price, native_usd_e8, gas_units=sim.gas_used)
        if gross != p.opp.gross_profit_usd_e8:
            repriced = type(repriced)(opp=repriced.opp, gas_cost_usd_e8=repriced.gas_cost_usd_e8,
                                      net_profit_usd_e8=gross - repriced.gas_cost_usd_e8)
        if repriced.net_profit_usd_e8 < self.cfg.keeper.min_profit_usd_e8 or repriced.net_profit_usd_e8 <= 0:
            return self._skip(repriced, "unprofitable_after_gas", net_profit_usd=repriced.net_profit_usd_e8 / 1e8,
                              gas_used=sim.gas_used)
        self._stage("simulated", head)
        return repriced, sim

    async def close(self) -> None:
        await self.stop()


class DryRunExecutor(Executor):
    """Runs the whole pipeline down to the simulation, logs what it would send, never sends.
    It never loads the signing key. Set-up calls it would send first (approvals are assumed
    done; TxPlan.prerequisites such as vat.hope) are simulated in the same block."""

    async def _sim_context(self, p: Priced, earlier: list[TxPlan]) -> tuple[tuple[TxPlan, ...], str]:
        # what this batch would have sent before it, then its own set-up calls and approvals
        return tuple(earlier) + p.opp.plan.prerequisites + self._approval_calls(p.opp.plan), "latest"

    async def _run_batch(self, chosen: list[Priced], head: Head, native_usd_e8: int) -> list[Outcome]:
        outs = []
        would_send: list[TxPlan] = []
        for p in chosen:
            if self.stopping:
                outs.append(self._skip(p, "stopping"))
                continue
            r = await self._check(p, head, native_usd_e8, would_send)
            if isinstance(r, Outcome):
                outs.append(r)
                continue
            repriced, sim = r
            _, max_fee, prio = self.fees(head)
            plan = p.opp.plan
            would_send += [*plan.prerequisites, *self._approval_calls(plan), plan]
            for pre in plan.prerequisites:
                self.log.info("dry_run_setup", protocol=p.opp.protocol, to=pre.to, data="0x" + pre.data.hex(),
                              description=pre.description)
            self.log.info("dry_run_send", protocol=p.opp.protocol, account=p.opp.account, to=plan.to,
                          data="0x" + plan.data.hex(), gas=sim.gas_used, max_fee_gwei=max_fee / 1e9,
                          priority_fee_gwei=prio / 1e9, expected_profit_usd=repriced.net_profit_usd_e8 / 1e8,
                          description=plan.description)
            out = Outcome(opp=p.opp, status="dry_run", gas_used=sim.gas_used,
                          expected_profit_usd_e8=repriced.net_profit_usd_e8)
            self._keep(out)
            outs.append(out)
        return outs


def default_journal_path(address: str) -> Path:
    return Path(".keeper") / f"journal-{address.lower()}.jsonl"


class LiveExecutor(Executor):
    live = True

    def __init__(self, cfg: Config, rpc: Rpc, adapters: Mapping[str, Any], log: Any, signer: Any,
                 broadcaster: Broadcaster | None = None):
        super().__init__(cfg, rpc, adapters, log)
        self.address = signer.address
        journal = Journal(cfg.keeper.journal or default_journal_path(signer.address))
        if journal.repaired:
            log.warning("journal_repaired", journal=str(journal.path), detail=journal.repaired)
        timeout = cfg.chain.rpc_timeout_s + (cfg.relay.timeout_s if cfg.relay is not None else 0) + 1
        self.tx = TxManager(rpc, signer, cfg.keeper, journal, log, broadcaster, broadcast_timeout_s=timeout)
        self._prereqs_done: set[tuple[str, bytes]] = set()
        self._setup_mined: set[str] = set()  # set-up intents mined successfully
        self._sent: dict[str, tuple[Priced, MeasuredSim]] = {}  # intent id -> what it was for
        self._setup_undo: dict[str, tuple[str, Any]] = {}  # set-up key -> what it made the executor assume
        self._sent_seen_at: dict[str, float] = {}  # intent id -> when the head it was sent on was seen
        self.tx.on_event = self._tx_event

    @property
    def in_flight(self) -> set[str]:
        return self.tx.in_flight_keys() | self._dispatching

    @property
    def paused(self) -> bool:
        return self.tx.paused

    def halt(self) -> None:
        super().halt()
        self.tx.stopping = True

    async def on_chain_change(self) -> None:
        await self.tx.resync_nonce()

    async def _sim_context(self, p: Priced, earlier: list[TxPlan]) -> tuple[tuple[TxPlan, ...], str]:
        """Our own transactions not mined yet run first in the simulated block, in nonce
        order, so each send is checked in the state it will really meet (after the set-up
        calls and the swaps of the ones before it); then the set-up calls this one still
        needs. A node without eth_simulateV1 simulates on "pending" instead."""
        setup = tuple(pre for pre in p.opp.plan.prerequisites if (pre.to.lower(), pre.data) not in self._prereqs_done)
        setup += self._approval_calls(p.opp.plan)
        ours, tag = await self._not_mined()
        return ours + setup, tag

    async def _not_mined(self) -> tuple[tuple[TxPlan, ...], str]:
        """(our sends not mined yet, in nonce order; the block tag to simulate on). Which are
        not mined: nonces at or above the node's latest count (one request, only while some
        are tracked as pending)."""
        pending = sorted((t for t in self.tx.pending.values() if t.status == "pending"), key=lambda t: t.nonce)
        if not pending:
            return (), "latest"
        if self.simulator.has_simulate_v1 is False:
            return (), "pending"
        mined_below = parse_int(await self.rpc.call("eth_getTransactionCount", [self.address, "latest"]), "nonce")
        return tuple(TxPlan(to=t.plan.to, data=t.plan.data, value=t.plan.value, gas_limit=max(t.gas, 21_000))
                     for t in pending if t.nonce >= mined_below), "latest"

    async def start(self) -> None:
        await self.tx.start()
        self.log.info("executor_ready", mode="live", address=self.address, nonce=self.tx.nonce,
                      broadcaster=self.tx.broadcaster.name, journal=str(self.tx.journal.path),
                      in_flight=len(self.tx.pending))

    async def _setup_send(self, plan: TxPlan, head: Head, what: str, undo: tuple[str, Any]) -> None:
        """A set-up transaction (approval, hope): simulated after our sends not mined yet, then
        sent; not awaited. The action that needs it is simulated after it (it is one of our
        pending sends) and sent right behind it on the next nonce, so both can land in the
        same block. `undo` names what to forget if it is mined and fails."""
        key = f"setup:{what}"
        if key in self._setup_mined or key in self.tx.in_flight_keys():  # done, or sent: never twice
            return
        ours, tag = await self._not_mined()
        sim = await self.simulator.run(plan, self.address, pre=ours, block=tag)
        if not sim.ok:
            raise TransientError(f"{what} would revert: {sim.reason}")
        gas = gas_limit_for(plan, sim.gas_used)
        t = await self.tx.send(plan, gas, head, key=key)
        self._setup_undo[key] = undo
        self.log.info("setup_sent", description=what, tx=t.latest_hash, nonce=t.nonce)

    async def _ensure_prerequisites(self, plan: TxPlan, head: Head) -> bool:
        """Send the plan's one-time set-up calls not done yet; True if any was sent."""
        sent = False
        for pre in plan.prerequisites:
            key = (pre.to.lower(), pre.data)
            if key not in self._prereqs_done:
                await self._setup_send(pre, head, pre.description or f"set-up call to {pre.to}", ("prereq", key))
                self._prereqs_done.add(key)
                sent = True
        return sent

    async def _ensure_allowance(self, plan: TxPlan, head: Head) -> bool:
        """Make sure of the plan's token allowances; True if an approval was sent."""
        sent = False
        for ap in plan.approvals:
            key = (ap.token.lower(), ap.spender.lower())
            if key in self._approved:
                continue
            cur = F_ALLOWANCE.decode_one(await self.rpc.eth_call(ap.token, F_ALLOWANCE.encode(self.address, ap.spender)))
            if cur < ap.amount:
                if cur:  # USDT-like tokens revert on approve from non-zero to non-zero: reset first
                    reset = TxPlan(to=ap.token, data=F_APPROVE.encode(ap.spender, 0), gas_limit=100_000)
                    await self._setup_send(reset, head, f"reset approval of {ap.token} for {ap.spender}", ("approve", key))
                approve = TxPlan(to=ap.token, data=F_APPROVE.encode(ap.spender, MAX_UINT), gas_limit=100_000)
                await self._setup_send(approve, head, f"approve {ap.token} for {ap.spender}", ("approve", key))
                cur = MAX_UINT
                sent = True
            if cur >= MAX_UINT // 2:
                self._approved.add(key)
        return sent

    def _profit_cap_wei(self, p: Priced, native_usd_e8: int) -> int:
        """Fees may never exceed what the action pays (gross, before gas), in wei."""
        return max(p.opp.gross_profit_usd_e8, 0) * 10**18 // max(native_usd_e8, 1)

    async def _run_batch(self, chosen: list[Priced], head: Head, native_usd_e8: int) -> list[Outcome]:
        self.head = head
        outs: list[Outcome] = []
        sent: list[Tracked] = []
        for p in chosen:
            if self.stopping:
                outs.append(self._skip(p, "stopping"))
                continue
            if p.opp.key in self.tx.in_flight_keys():  # sent by another batch meanwhile
                outs.append(self._skip(p, "in_flight"))
                continue
            # simulate first (with the set-up calls it needs run before it), so nothing is spent
            # on approvals for a liquidation that would revert; then the set-up, then once more
            r = await self._check(p, head, native_usd_e8)
            if isinstance(r, Outcome):
                outs.append(r)
                continue
            try:
                did_setup = await self._ensure_prerequisites(p.opp.plan, head)
                did_setup = await self._ensure_allowance(p.opp.plan, head) or did_setup
            except SendRefused as e:
                outs.append(self._skip(p, e.reason, **e.detail))
                continue
            except (TransientError, RpcError) as e:
                outs.append(self._skip(p, "setup_failed", error=str(e)))
                continue
            if did_setup:
                r = await self._check(p, head, native_usd_e8)
                if isinstance(r, Outcome):
                    outs.append(r)
                    continue
            repriced, sim = r
            gas = gas_limit_for(p.opp.plan, sim.gas_used)
            try:
                t = await self.tx.send(p.opp.plan, gas, head, key=p.opp.key,
                                       expected_profit_usd_e8=repriced.net_profit_usd_e8,
                                       profit_cap_wei=self._profit_cap_wei(repriced, native_usd_e8),
                                       behind=p.opp.behind)
            except SendRefused as e:
                outs.append(self._skip(repriced, e.reason, **e.detail))
                continue
            except (RpcError, TransientError) as e:
                outs.append(self._skip(repriced, "send_rejected", error=str(e)))
                continue
            detail = p.opp.detail.log_fields() if hasattr(p.opp.detail, "log_fields") else {}
            self.log.info("liquidation_sent", protocol=p.opp.protocol, account=p.opp.account, tx=t.latest_hash,
                          nonce=t.nonce, gas_limit=gas, max_fee_gwei=t.max_fee / 1e9, priority_fee_gwei=t.prio / 1e9,
                          expected_profit_usd=repriced.net_profit_usd_e8 / 1e8, broadcaster=self.tx.broadcaster.name,
                          uncertain=t.uncertain, **({"behind": p.opp.behind.hash} if p.opp.behind else {}), **detail)
            self._sent[t.id] = (repriced, sim)
            self._sent_seen_at[t.id] = head.seen_at
            self._stage("sent", head)
            sent.append(t)
            if self.store is not None:
                self.store.tx(t.id, t.key, p.opp.protocol, p.opp.account, t.latest_hash, t.nonce, t.max_fee, t.prio, gas,
                              str(getattr(p.opp.detail, "route", "")), self.tx.broadcaster.name,
                              repriced.net_profit_usd_e8, head.number, head.timestamp)
            if self.on_sent is not None:
                self.on_sent(head, p.opp.protocol, p.opp.account, t.latest_hash, repriced.net_profit_usd_e8)
        if sent:
            mined = await self.tx.wait(sent, self.cfg.keeper.receipt_timeout_s)
            outs.extend(o for o in (self._finish(t) for t in mined) if o is not None)
        return outs

    async def on_block(self, head: Head) -> list[Outcome]:
        self.head = head
        mined = await self.tx.on_block(head, self._resimulate)
        # re-target private bundles not in yet
        await self.tx.broadcaster.on_block(head, {h for t in self.tx.pending.values() if t.status == "pending"
                                                  for h in t.hashes})
        outs = [o for o in (self._finish(t) for t in mined) if o is not None]
        for iid in [i for i in self._sent if i not in self.tx.pending]:  # final or dropped: done with it
            del self._sent[iid]
            self._sent_seen_at.pop(iid, None)
        return outs

    async def _resimulate(self, t: Tracked) -> bool:
        sim = await simulate(self.rpc, TxPlan(to=t.plan.to, data=t.plan.data, value=t.plan.value,
                                              gas_limit=max(t.gas, 21_000)), self.address)
        if not sim.ok:
            self.log.info("pending_would_revert", intent=t.key, nonce=t.nonce, revert=sim.reason)
        return sim.ok

    def _finish(self, t: Tracked) -> Outcome | None:
        """Report a transaction seen mined: one log line, and the Outcome when this run sent it
        (a transaction restored from the journal after a restart is reported from its receipt)."""
        rc = t.receipt or {}
        if t.key.startswith(FILL_PREFIX):  # a self-transfer that filled a nonce gap
            self.log.info("nonce_gap_fill_mined", nonce=t.nonce, tx=t.mined_hash, status=rc.get("status"))
            return None
        if t.key.startswith("setup:"):
            what, undo = self._setup_undo.pop(t.key, ("", None))
            if rc.get("status") == "0x1" and not t.cancelled:
                self._setup_mined.add(t.key)
            else:  # assumed done when sent: it is not, so it is made again when next needed
                (self._approved if what == "approve" else self._prereqs_done).discard(undo)
                self.log.warning("setup_failed", intent=t.key, tx=t.mined_hash, cancelled=t.cancelled)
            return None
        gas_used = parse_int(rc.get("gasUsed", "0x0"), "gasUsed")
        gas_cost_wei = gas_used * parse_int(rc.get("effectiveGasPrice", "0x0"), "effectiveGasPrice")
        entry = self._sent.get(t.id)
        protocol, _, account = t.key.partition(":")
        if entry is not None:
            protocol, account = entry[0].opp.protocol, entry[0].opp.account
        expected = entry[0].net_profit_usd_e8 if entry is not None else t.expected_profit_usd_e8
        fields: dict[str, Any] = dict(protocol=protocol, account=account, tx=t.mined_hash,
                                      block=parse_int(rc.get("blockNumber", "0x0"), "blockNumber"), gas_used=gas_used,
                                      gas_cost_eth=gas_cost_wei / 1e18, expected_profit_usd=expected / 1e8)
        if entry is None:
            fields["restored"] = True
        realized: dict[str, Any] = {}
        if t.cancelled:
            status, reason = "cancelled", "would_revert"
            self.log.info("liquidation_cancelled", **fields)
        elif rc.get("status") == "0x1":
            status, reason = "confirmed", ""
            adapter = self.adapters.get(protocol)
            realized = adapter.parse_outcome(rc) if adapter else {}
            self.log.info("liquidation_confirmed", replacements=len(t.hashes) - 1, **fields, **realized)
        else:
            status, reason = "failed", "reverted"
            self.log.warning("liquidation_failed", reason=reason, **fields)
        if entry is None:
            self._record_outcome(t, protocol, account, status, fields["block"], gas_used, gas_cost_wei, expected,
                                 None, realized)
            return None
        p, sim = entry
        out = Outcome(opp=p.opp, status=status, reason=reason, tx_hash=t.mined_hash, gas_used=gas_used,
                      gas_cost_wei=gas_cost_wei, expected_profit_usd_e8=p.net_profit_usd_e8, realized=realized,
                      simulated=dict(sim.deltas or {}) if status == "confirmed" else {})
        self._keep(out)
        seen_at = self._sent_seen_at.pop(t.id, 0.0)
        if status == "confirmed" and seen_at and self.metrics is not None:
            self.metrics.stage("included", time.monotonic() - seen_at)
        self._record_outcome(t, protocol, account, status, fields["block"], gas_used, gas_cost_wei, expected,
                             self.realized_profit_usd_e8(out), realized)
        return out

    def _tx_event(self, event: str, t: Tracked, detail: str) -> None:
        """Replacements and drops, for the store: a replacement is another send of the same
        intent (same intent id, the new hash); a drop is that intent's outcome."""
        if self.store is None or t.key.startswith(("setup:", FILL_PREFIX)):
            return
        protocol, _, account = t.key.partition(":")
        entry = self._sent.get(t.id)
        if entry is not None:
            protocol, account = entry[0].opp.protocol, entry[0].opp.account
        head = self.head
        block, ts = (head.number, head.timestamp) if head is not None else (0, 0)
        if event in ("replaced", "cancel_sent"):
            route = "cancel" if event == "cancel_sent" else str(getattr(entry[0].opp.detail, "route", "")) if entry else ""
            self.store.tx(t.id, t.key, protocol, account, detail, t.nonce, t.max_fee, t.prio, t.gas, route,
                          self.tx.broadcaster.name, t.expected_profit_usd_e8, block, ts)
        elif event == "dropped":
            self.store.outcome(t.id, None, protocol, account, "dropped", block, ts, 0, 0, t.expected_profit_usd_e8,
                               None, {"reason": detail})

    def _record_outcome(self, t: Tracked, protocol: str, account: str, status: str, block: int, gas_used: int,
                        gas_cost_wei: int, expected: int, realized_usd_e8: int | None, realized: dict[str, Any]) -> None:
        if self.store is None:
            return
        stored = {"confirmed": "included", "failed": "reverted"}.get(status, status)
        native = self.native_usd_e8()
        ts = self.head.timestamp if self.head is not None else 0
        self.store.outcome(t.id, t.mined_hash, protocol, account, stored, block, ts, gas_used, gas_cost_wei, expected,
                           realized_usd_e8, realized,
                           gas_usd_e8=gas_cost_wei * native // 10**18 if native else None)

    async def close(self) -> None:
        await self.stop()
        await self.tx.broadcaster.close()
        self.tx.close()
