"""Dry-run and live executors. Both simulate; only LiveExecutor signs and sends.

Flow for each selected opportunity: (live: make sure the debt token is approved) →
simulate the exact call against the latest block → re-price with the simulated gas →
refuse if below the profit floor or the fee cap → (live: sign, send, await the receipt;
dry-run: log what would be sent).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Mapping

from .. import abi, strategy
from ..config import Config
from ..errors import RpcError, TransientError
from ..rpc import Rpc, parse_int
from ..types import Head, Outcome, Priced, TxPlan
from .simulate import SimResult, simulate

ERC20 = abi.load("ERC20")
F_ALLOWANCE = ERC20.fn("allowance")
F_APPROVE = ERC20.fn("approve")
MAX_UINT = 2**256 - 1


class Executor:
    live = False

    def __init__(self, cfg: Config, rpc: Rpc, adapters: Mapping[str, Any], log: Any):
        self.cfg = cfg
        self.rpc = rpc
        self.adapters = adapters
        self.log = log
        self.address: str | None = cfg.keeper.address
        self.in_flight: set[str] = set()
        self.outcomes: list[Outcome] = []

    async def start(self) -> None:
        return None

    def fees(self, head: Head) -> tuple[int, int, int]:
        """(expected gas price, max fee, priority fee) in wei for the next block."""
        k = self.cfg.keeper
        prio = k.priority_fee_wei
        max_fee = min(2 * head.base_fee_wei + prio, k.max_fee_wei)
        return head.base_fee_wei + prio, max_fee, prio

    def _skip(self, p: Priced, reason: str, **kw: Any) -> Outcome:
        self.log.info("skipped", protocol=p.opp.protocol, account=p.opp.account, reason=reason, **kw)
        out = Outcome(opp=p.opp, status="skipped", reason=reason, expected_profit_usd_e8=p.net_profit_usd_e8)
        self.outcomes.append(out)
        return out

    async def _check(self, p: Priced, head: Head, native_usd_e8: int) -> tuple[Priced, SimResult, int, int] | Outcome:
        """Simulate and re-price; returns (repriced, sim, max_fee, prio) or a skip Outcome."""
        expected_price, max_fee, prio = self.fees(head)
        if head.base_fee_wei + prio > self.cfg.keeper.max_fee_wei:
            return self._skip(p, "fee_cap", base_fee_gwei=head.base_fee_wei / 1e9)
        if self.address is None:
            return self._skip(p, "no_keeper_address", hint="set keeper.address to simulate")
        sim = await simulate(self.rpc, p.opp.plan, self.address)
        if not sim.ok:
            adapter = self.adapters.get(p.opp.protocol)
            reason = adapter.explain_revert(sim.reason) if adapter and hasattr(adapter, "explain_revert") else sim.reason
            return self._skip(p, "simulation_reverted", revert=reason)
        repriced = strategy.price(p.opp, expected_price, native_usd_e8, gas_units=sim.gas_used)
        if repriced.net_profit_usd_e8 < self.cfg.keeper.min_profit_usd_e8 or repriced.net_profit_usd_e8 <= 0:
            return self._skip(repriced, "unprofitable_after_gas", net_profit_usd=repriced.net_profit_usd_e8 / 1e8,
                              gas_used=sim.gas_used)
        return repriced, sim, max_fee, prio

    async def execute_all(self, chosen: list[Priced], head: Head, native_usd_e8: int) -> list[Outcome]:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class DryRunExecutor(Executor):
    """Runs the whole pipeline down to the simulation, logs what it would send, never sends.
    It never loads the signing key."""

    async def execute_all(self, chosen: list[Priced], head: Head, native_usd_e8: int) -> list[Outcome]:
        outs = []
        for p in chosen:
            r = await self._check(p, head, native_usd_e8)
            if isinstance(r, Outcome):
                outs.append(r)
                continue
            repriced, sim, max_fee, prio = r
            plan = p.opp.plan
            for pre in plan.prerequisites:
                self.log.info("dry_run_setup", protocol=p.opp.protocol, to=pre.to, data="0x" + pre.data.hex(),
                              description=pre.description)
            self.log.info("dry_run_send", protocol=p.opp.protocol, account=p.opp.account, to=plan.to,
                          data="0x" + plan.data.hex(), gas=sim.gas_used, max_fee_gwei=max_fee / 1e9,
                          priority_fee_gwei=prio / 1e9, expected_profit_usd=repriced.net_profit_usd_e8 / 1e8,
                          description=plan.description)
            out = Outcome(opp=p.opp, status="dry_run", gas_used=sim.gas_used,
                          expected_profit_usd_e8=repriced.net_profit_usd_e8)
            self.outcomes.append(out)
            outs.append(out)
        return outs


class LiveExecutor(Executor):
    live = True

    def __init__(self, cfg: Config, rpc: Rpc, adapters: Mapping[str, Any], log: Any, signer: Any):
        super().__init__(cfg, rpc, adapters, log)
        self._signer = signer  # eth_account LocalAccount; never logged
        self.address = signer.address
        self.chain_id = 0
        self.nonce: int | None = None
        self._approved: set[tuple[str, str]] = set()
        self._prereqs_done: set[tuple[str, bytes]] = set()

    async def start(self) -> None:
        self.chain_id = await self.rpc.chain_id()
        await self._resync_nonce()
        self.log.info("executor_ready", mode="live", address=self.address, nonce=self.nonce)

    async def _resync_nonce(self) -> None:
        self.nonce = parse_int(await self.rpc.call("eth_getTransactionCount", [self.address, "pending"]), "nonce")

    def _sign(self, plan: TxPlan, gas: int, max_fee: int, prio: int) -> bytes:
        tx = {"type": 2, "chainId": self.chain_id, "nonce": self.nonce, "to": plan.to, "value": plan.value,
              "data": plan.data, "gas": gas, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": prio}
        return bytes(self._signer.sign_transaction(tx).raw_transaction)

    async def _send(self, plan: TxPlan, gas: int, max_fee: int, prio: int) -> tuple[str, int]:
        if self.nonce is None:
            await self._resync_nonce()
        nonce = self.nonce
        raw = self._sign(plan, gas, max_fee, prio)
        try:
            tx_hash = await self.rpc.call("eth_sendRawTransaction", ["0x" + raw.hex()])
        except RpcError:
            await self._resync_nonce()  # the node may have seen other transactions from us
            raise
        self.nonce = nonce + 1
        return tx_hash, nonce

    async def _wait(self, tx_hash: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.cfg.keeper.receipt_timeout_s
        delay = 0.02
        while time.monotonic() < deadline:
            try:
                rc = await self.rpc.call("eth_getTransactionReceipt", [tx_hash])
            except TransientError:
                rc = None
            if isinstance(rc, dict) and rc.get("blockNumber"):
                return rc
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.cfg.chain.poll_interval_s)
        return None

    async def _ensure_prerequisites(self, plan: TxPlan, head: Head) -> None:
        for pre in plan.prerequisites:
            key = (pre.to.lower(), pre.data)
            if key in self._prereqs_done:
                continue
            _, max_fee, prio = self.fees(head)
            sim = await simulate(self.rpc, pre, self.address)
            if not sim.ok:
                raise TransientError(f"set-up call {pre.description or pre.to} would revert: {sim.reason}")
            tx_hash, nonce = await self._send(pre, min(pre.gas_limit, sim.gas_used * 13 // 10 + 20_000), max_fee, prio)
            self.log.info("setup_sent", description=pre.description, tx=tx_hash, nonce=nonce)
            rc = await self._wait(tx_hash)
            if rc is None or rc.get("status") != "0x1":
                raise TransientError(f"set-up call {pre.description or pre.to} did not succeed")
            self._prereqs_done.add(key)

    async def _ensure_allowance(self, plan: TxPlan, head: Head) -> None:
        for ap in plan.approvals:
            key = (ap.token.lower(), ap.spender.lower())
            if key in self._approved:
                continue
            cur = F_ALLOWANCE.decode_one(await self.rpc.eth_call(ap.token, F_ALLOWANCE.encode(self.address, ap.spender)))
            if cur >= ap.amount:
                if cur >= MAX_UINT // 2:
                    self._approved.add(key)
                continue
            _, max_fee, prio = self.fees(head)
            approve = TxPlan(to=ap.token, data=F_APPROVE.encode(ap.spender, MAX_UINT), gas_limit=100_000)
            tx_hash, nonce = await self._send(approve, 100_000, max_fee, prio)
            self.log.info("approval_sent", token=ap.token, spender=ap.spender, tx=tx_hash, nonce=nonce)
            rc = await self._wait(tx_hash)
            if rc is None or rc.get("status") != "0x1":
                raise TransientError(f"approval of {ap.token} for {ap.spender} did not succeed")
            self._approved.add(key)

    async def execute_all(self, chosen: list[Priced], head: Head, native_usd_e8: int) -> list[Outcome]:
        sent: list[tuple[Priced, str, int, int]] = []
        outs: list[Outcome] = []
        for p in chosen:
            if p.opp.key in self.in_flight:  # never send twice
                outs.append(self._skip(p, "in_flight"))
                continue
            try:
                await self._ensure_prerequisites(p.opp.plan, head)
                await self._ensure_allowance(p.opp.plan, head)
            except (TransientError, RpcError) as e:
                outs.append(self._skip(p, "approval_failed", error=str(e)))
                continue
            r = await self._check(p, head, native_usd_e8)
            if isinstance(r, Outcome):
                outs.append(r)
                continue
            repriced, sim, max_fee, prio = r
            gas = min(p.opp.plan.gas_limit, sim.gas_used * 13 // 10 + 20_000)
            try:
                tx_hash, nonce = await self._send(p.opp.plan, gas, max_fee, prio)
            except RpcError as e:
                outs.append(self._skip(repriced, "send_rejected", error=e.rpc_message))
                continue
            self.in_flight.add(p.opp.key)
            detail = p.opp.detail.log_fields() if hasattr(p.opp.detail, "log_fields") else {}
            self.log.info("liquidation_sent", protocol=p.opp.protocol, account=p.opp.account, tx=tx_hash, nonce=nonce,
                          gas_limit=gas, max_fee_gwei=max_fee / 1e9, priority_fee_gwei=prio / 1e9,
                          expected_profit_usd=repriced.net_profit_usd_e8 / 1e8, **detail)
            sent.append((repriced, tx_hash, nonce, gas))
        receipts = await asyncio.gather(*(self._wait(h) for _, h, _, _ in sent))
        for (p, tx_hash, nonce, gas), rc in zip(sent, receipts):
            outs.append(self._finish(p, tx_hash, rc))
        return outs

    def _finish(self, p: Priced, tx_hash: str, rc: dict[str, Any] | None) -> Outcome:
        opp = p.opp
        if rc is None:
            # still pending: stays in flight so it is never sent again
            self.log.warning("liquidation_failed", protocol=opp.protocol, account=opp.account, tx=tx_hash,
                             reason="not_mined_in_time")
            out = Outcome(opp=opp, status="failed", reason="not_mined_in_time", tx_hash=tx_hash,
                          expected_profit_usd_e8=p.net_profit_usd_e8)
            self.outcomes.append(out)
            return out
        self.in_flight.discard(opp.key)
        gas_used = parse_int(rc.get("gasUsed", "0x0"), "gasUsed")
        price = parse_int(rc.get("effectiveGasPrice", "0x0"), "effectiveGasPrice")
        block = parse_int(rc.get("blockNumber", "0x0"), "blockNumber")
        if rc.get("status") == "0x1":
            adapter = self.adapters.get(opp.protocol)
            realized = adapter.parse_outcome(rc) if adapter else {}
            self.log.info("liquidation_confirmed", protocol=opp.protocol, account=opp.account, tx=tx_hash, block=block,
                          gas_used=gas_used, gas_cost_eth=gas_used * price / 1e18,
                          expected_profit_usd=p.net_profit_usd_e8 / 1e8, **realized)
            out = Outcome(opp=opp, status="confirmed", tx_hash=tx_hash, gas_used=gas_used,
                          gas_cost_wei=gas_used * price, expected_profit_usd_e8=p.net_profit_usd_e8, realized=realized)
        else:
            self.log.warning("liquidation_failed", protocol=opp.protocol, account=opp.account, tx=tx_hash, block=block,
                             reason="reverted", gas_used=gas_used)
            out = Outcome(opp=opp, status="failed", reason="reverted", tx_hash=tx_hash, gas_used=gas_used,
                          gas_cost_wei=gas_used * price, expected_profit_usd_e8=p.net_profit_usd_e8)
        self.outcomes.append(out)
        return out
