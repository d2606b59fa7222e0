"""Transaction manager: one nonce sequence per signing key, EIP-1559 fees, tracking until
mined (or replaced, cancelled, dropped), confirmations, the journal and the safety limits.

- Nonces: a local counter, initialised from the node's pending count, advanced only when a
  broadcast is accepted, resynced after any send error ("nonce too low" when something
  else used the key, a dropped transaction) so there is never a gap.
- Fees: maxPriorityFee = the configured tip, or a share of the expected profit per gas if
  that is higher; maxFee = 2 × base fee + tip; both capped by max_fee_gwei and so that
  gas × maxFee never exceeds the expected profit.
- Tracking: every block, one batched receipt query for all pending transactions. Not mined
  after `replace_after_blocks` → re-simulate: still good → the same nonce again with fees
  ≥ 12.5% higher (never past the profit cap); the call would now revert (someone else
  liquidated) → cancel with a 21,000-gas self-transfer on that nonce.
- Journal: the intent and each signed transaction are written (fsync'ed) before the
  broadcast, so a restarted keeper knows what is in flight and never sends an intent twice.
- Limits: per-transaction fee cap, gas spend per hour and per day, a pause after N
  consecutive failed sends, and a kill switch (a file, or KEEPER_KILL_SWITCH=1).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

from eth_utils import keccak

from ..config import KeeperConfig
from ..errors import RpcError
from ..rpc import Rpc, parse_int
from ..types import Head, TxPlan
from .journal import Journal

BUMP_NUM, BUMP_DEN = 1125, 1000  # +12.5%: the minimum most nodes accept for a replacement
CANCEL_GAS = 21_000


class Broadcaster(Protocol):
    name: str

    async def broadcast(self, raw: bytes, tx_hash: str, head: Head) -> None: ...


class PublicMempool:
    name = "public"

    def __init__(self, rpc: Rpc):
        self.rpc = rpc

    async def broadcast(self, raw: bytes, tx_hash: str, head: Head) -> None:
        try:
            await self.rpc.call("eth_sendRawTransaction", ["0x" + raw.hex()])
        except RpcError as e:
            if "already known" in e.rpc_message.lower() or "already imported" in e.rpc_message.lower():
                return
            raise


@dataclass
class Tracked:
    id: str
    key: str
    plan: TxPlan
    nonce: int
    gas: int
    max_fee: int
    prio: int
    sent_block: int
    expected_profit_usd_e8: int
    profit_cap_wei: int  # never pay more than this in fees (gas × maxFee)
    hashes: list[str] = field(default_factory=list)
    status: str = "pending"  # pending | mined | final | dropped
    cancelled: bool = False
    receipt: dict[str, Any] | None = None
    mined_hash: str | None = None
    restored: bool = False

    @property
    def latest_hash(self) -> str:
        return self.hashes[-1]


class SendRefused(Exception):
    def __init__(self, reason: str, **detail: Any):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class TxManager:
    def __init__(self, rpc: Rpc, signer: Any, cfg: KeeperConfig, journal: Journal, log: Any,
                 broadcaster: Broadcaster | None = None):
        self.rpc = rpc
        self._signer = signer  # never logged
        self.address: str = signer.address
        self.cfg = cfg
        self.journal = journal
        self.log = log
        self.broadcaster = broadcaster or PublicMempool(rpc)
        self.chain_id = 0
        self.nonce: int | None = None
        self.pending: dict[str, Tracked] = {}  # intent id -> tracked
        self.consecutive_failures = 0
        self.paused = False

    # -- start-up and restart -------------------------------------------------------------
    async def start(self) -> None:
        self.chain_id = await self.rpc.chain_id()
        await self.resync_nonce()
        await self.restore()

    async def resync_nonce(self) -> None:
        self.nonce = parse_int(await self.rpc.call("eth_getTransactionCount", [self.address, "pending"]), "nonce")

    async def restore(self) -> None:
        """Rebuild in-flight transactions from the journal and reconcile them with the node."""
        states = self.journal.in_flight()
        if not states:
            return
        latest = parse_int(await self.rpc.call("eth_getTransactionCount", [self.address, "latest"]), "nonce")
        for s in states:
            if s.block_hash:
                blk = await self.rpc.call("eth_getBlockByNumber", [hex(s.block), False])
                if not isinstance(blk, dict) or blk.get("hash") != s.block_hash:
                    # the chain this was sent on is gone (a devnet restarted, a deep reorg)
                    self.journal.append({"t": "dropped", "id": s.id, "reason": "chain_reset"})
                    self.log.warning("in_flight_dropped", intent=s.key, nonce=s.nonce, reason="chain_reset")
                    continue
            plan = TxPlan(to=s.to, data=bytes.fromhex(s.data[2:]), value=s.value, gas_limit=0)
            tr = Tracked(id=s.id, key=s.key, plan=plan, nonce=s.nonce, gas=0, max_fee=0, prio=0, sent_block=s.block,
                         expected_profit_usd_e8=s.expected_profit_usd_e8, profit_cap_wei=s.profit_cap_wei,
                         hashes=list(s.hashes), status=s.status, restored=True, mined_hash=s.mined_hash)
            if s.hashes:
                tr.gas, tr.max_fee, tr.prio = s.fees[s.hashes[-1]]
                if s.kinds.get(s.hashes[-1]) == "cancel":
                    tr.cancelled = True
                    tr.plan = TxPlan(to=self.address, data=b"", gas_limit=CANCEL_GAS, description="cancel")
            known = await self._known(tr.hashes)
            if tr.status == "pending" and not known and latest > s.nonce:
                self.journal.append({"t": "dropped", "id": s.id, "reason": "nonce_used_by_another_transaction"})
                self.log.warning("in_flight_dropped", intent=s.key, nonce=s.nonce, hashes=s.hashes)
                continue
            self.pending[s.id] = tr
            self.log.warning("in_flight_restored", intent=s.key, nonce=s.nonce, hashes=s.hashes, status=s.status,
                             known_to_node=known)

    async def _known(self, hashes: list[str]) -> bool:
        if not hashes:
            return False
        res = await self.rpc.batch([("eth_getTransactionByHash", [h]) for h in hashes], return_errors=True)
        return any(isinstance(r, dict) for r in res)

    def in_flight_keys(self) -> set[str]:
        return {t.key for t in self.pending.values() if t.status == "pending"}

    # -- limits -----------------------------------------------------------------------
    def kill_switch(self) -> str | None:
        if os.environ.get("KEEPER_KILL_SWITCH", "").strip().lower() in ("1", "true", "yes", "on"):
            return "KEEPER_KILL_SWITCH"
        if self.cfg.kill_switch_file is not None and Path(self.cfg.kill_switch_file).exists():
            return str(self.cfg.kill_switch_file)
        return None

    def check_limits(self, gas: int, max_fee: int) -> None:
        switch = self.kill_switch()
        if switch:
            raise SendRefused("kill_switch", source=switch)
        if self.paused:
            raise SendRefused("paused", consecutive_failures=self.consecutive_failures)
        worst = gas * max_fee
        reserved = sum(t.gas * t.max_fee for t in self.pending.values() if t.status == "pending")
        now = time.time()
        for window, limit in ((3600, self.cfg.max_gas_spend_wei_per_hour), (86_400, self.cfg.max_gas_spend_wei_per_day)):
            if limit is None:
                continue
            spent = self.journal.gas_spent_wei_since(now - window)
            if spent + reserved + worst > limit:
                raise SendRefused("gas_budget", window_s=window, spent_eth=spent / 1e18, limit_eth=limit / 1e18)

    def _record_failure(self) -> None:
        self.consecutive_failures += 1
        limit = self.cfg.max_consecutive_failures
        if limit and self.consecutive_failures >= limit and not self.paused:
            self.paused = True
            self.log.error("sending_paused", consecutive_failures=self.consecutive_failures,
                           hint="the keeper keeps watching; fix the cause and restart it to send again")

    # -- fees -------------------------------------------------------------------------
    def fees(self, head: Head, gas: int, profit_cap_wei: int | None) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) for a new transaction."""
        prio = self.cfg.priority_fee_wei
        if profit_cap_wei and self.cfg.priority_fee_profit_share_bps and gas:
            prio = max(prio, profit_cap_wei * self.cfg.priority_fee_profit_share_bps // 10_000 // gas)
        max_fee = 2 * head.base_fee_wei + prio
        cap = self.cfg.max_fee_wei
        if profit_cap_wei is not None and gas:
            cap = min(cap, profit_cap_wei // gas)
        max_fee = min(max_fee, cap)
        prio = min(prio, max_fee)
        return max_fee, prio

    # -- sending ----------------------------------------------------------------------
    def _sign(self, plan: TxPlan, nonce: int, gas: int, max_fee: int, prio: int) -> tuple[bytes, str]:
        tx = {"type": 2, "chainId": self.chain_id, "nonce": nonce, "to": plan.to, "value": plan.value,
              "data": plan.data, "gas": gas, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": prio}
        raw = bytes(self._signer.sign_transaction(tx).raw_transaction)
        return raw, "0x" + keccak(raw).hex()

    async def send(self, plan: TxPlan, gas: int, head: Head, key: str, expected_profit_usd_e8: int = 0,
                   profit_cap_wei: int | None = None) -> Tracked:
        """Sign, journal and broadcast a new transaction on the next nonce."""
        max_fee, prio = self.fees(head, gas, profit_cap_wei)
        if head.base_fee_wei + prio > max_fee:
            raise SendRefused("fee_cap", base_fee_gwei=head.base_fee_wei / 1e9, max_fee_gwei=max_fee / 1e9)
        self.check_limits(gas, max_fee)
        if self.nonce is None:
            await self.resync_nonce()
        tr = Tracked(id=uuid.uuid4().hex[:16], key=key, plan=plan, nonce=self.nonce, gas=gas, max_fee=max_fee,
                     prio=prio, sent_block=head.number, expected_profit_usd_e8=expected_profit_usd_e8,
                     profit_cap_wei=profit_cap_wei or 0)
        self.journal.append({"t": "intent", "id": tr.id, "key": key, "nonce": tr.nonce, "to": plan.to,
                             "data": "0x" + plan.data.hex(), "value": plan.value,
                             "expected_profit_usd_e8": expected_profit_usd_e8, "profit_cap_wei": tr.profit_cap_wei,
                             "block": head.number, "block_hash": head.hash})
        for attempt in range(2):
            try:
                await self._broadcast(tr, plan, gas, max_fee, prio, head, "send")
                break
            except RpcError as e:
                msg = e.rpc_message.lower()
                await self.resync_nonce()
                if attempt == 0 and "nonce" in msg and self.nonce != tr.nonce:
                    # something else used our nonce: move to the node's next one and retry once
                    self.log.warning("nonce_resynced", old=tr.nonce, new=self.nonce, error=e.rpc_message)
                    tr.nonce = self.nonce
                    self.journal.append({"t": "renonce", "id": tr.id, "nonce": tr.nonce})
                    continue
                self.journal.append({"t": "dropped", "id": tr.id, "reason": f"rejected: {e.rpc_message[:120]}"})
                self._record_failure()
                raise
        self.nonce = tr.nonce + 1
        self.pending[tr.id] = tr
        return tr

    async def _broadcast(self, tr: Tracked, plan: TxPlan, gas: int, max_fee: int, prio: int, head: Head, kind: str) -> str:
        raw, tx_hash = self._sign(plan, tr.nonce, gas, max_fee, prio)
        self.journal.append({"t": "signed", "id": tr.id, "hash": tx_hash, "nonce": tr.nonce, "gas": gas,
                             "max_fee": max_fee, "prio": prio, "raw": "0x" + raw.hex(), "kind": kind})
        await self.broadcaster.broadcast(raw, tx_hash, head)
        tr.hashes.append(tx_hash)
        tr.gas, tr.max_fee, tr.prio = gas, max_fee, prio
        return tx_hash

    # -- tracking ---------------------------------------------------------------------
    async def poll(self, head: Head | None = None) -> list[Tracked]:
        """One batched receipt query for every pending hash; returns the newly mined ones."""
        pend = [t for t in self.pending.values() if t.status == "pending"]
        if not pend:
            return []
        reqs = [("eth_getTransactionReceipt", [h]) for t in pend for h in t.hashes]
        res = await self.rpc.batch(reqs, return_errors=True)
        mined: list[Tracked] = []
        i = 0
        for t in pend:
            for h in t.hashes:
                rc = res[i]
                i += 1
                if isinstance(rc, dict) and rc.get("blockNumber") and t.status == "pending":
                    t.status, t.receipt, t.mined_hash = "mined", rc, h
                    gas_used = parse_int(rc.get("gasUsed", "0x0"), "gasUsed")
                    price = parse_int(rc.get("effectiveGasPrice", "0x0"), "effectiveGasPrice")
                    ok = rc.get("status") == "0x1"
                    self.journal.append({"t": "mined", "id": t.id, "hash": h, "block": parse_int(rc["blockNumber"], "block"),
                                         "status": 1 if ok else 0, "gas_used": gas_used, "gas_price": price})
                    if ok and not t.cancelled:
                        self.consecutive_failures = 0
                    elif not ok:
                        self._record_failure()
                    mined.append(t)
        return mined

    async def wait(self, tracked: list[Tracked], timeout_s: float) -> list[Tracked]:
        """Poll receipts until all of `tracked` are mined or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        done: list[Tracked] = []
        while True:
            done += await self.poll()
            if all(t.status != "pending" for t in tracked) or time.monotonic() >= deadline:
                return done
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def on_block(self, head: Head, resimulate: Callable[[Tracked], Awaitable[bool]]) -> list[Tracked]:
        """Per block: receipts, confirmations, replacements, cancellations, dropped nonces."""
        mined = await self.poll(head)
        for t in list(self.pending.values()):
            if t.status == "mined" and t.receipt is not None:
                blk = parse_int(t.receipt["blockNumber"], "block")
                if head.number - blk + 1 >= self.cfg.confirmations:
                    still = await self.rpc.call("eth_getTransactionReceipt", [t.mined_hash])
                    if isinstance(still, dict) and still.get("blockHash") == t.receipt.get("blockHash"):
                        t.status = "final"
                        self.journal.append({"t": "final", "id": t.id, "hash": t.mined_hash, "block": blk})
                        del self.pending[t.id]
                    else:  # reorged out: back to pending
                        t.status, t.receipt, t.mined_hash = "pending", None, None
                        self.journal.append({"t": "unmined", "id": t.id})
                        self.log.warning("tx_reorged_out", intent=t.key, nonce=t.nonce)
            elif t.status == "mined" and t.receipt is None:  # restored from the journal as mined
                t.status = "final"
                self.journal.append({"t": "final", "id": t.id, "hash": t.mined_hash, "block": 0})
                del self.pending[t.id]
        for t in [t for t in self.pending.values() if t.status == "pending"]:
            if head.number - t.sent_block < self.cfg.replace_after_blocks:
                continue
            await self._unstick(t, head, resimulate)
        return mined

    async def _unstick(self, t: Tracked, head: Head, resimulate: Callable[[Tracked], Awaitable[bool]]) -> None:
        latest = parse_int(await self.rpc.call("eth_getTransactionCount", [self.address, "latest"]), "nonce")
        if latest > t.nonce:  # the nonce is used and none of our hashes was mined: someone else's tx took it
            t.status = "dropped"
            self.journal.append({"t": "dropped", "id": t.id, "reason": "nonce_used_by_another_transaction"})
            self.log.warning("tx_dropped", intent=t.key, nonce=t.nonce)
            del self.pending[t.id]
            return
        still_good = (not t.cancelled) and await resimulate(t)
        new_prio = max(t.prio * BUMP_NUM // BUMP_DEN + 1, self.cfg.priority_fee_wei)
        new_max = max(t.max_fee * BUMP_NUM // BUMP_DEN + 1, 2 * head.base_fee_wei + new_prio)
        if still_good:
            cap = self.cfg.max_fee_wei
            if t.profit_cap_wei:
                cap = min(cap, t.profit_cap_wei // t.gas)
            if new_max > cap:
                if t.max_fee * BUMP_NUM // BUMP_DEN + 1 > cap:
                    self.log.warning("replacement_capped", intent=t.key, nonce=t.nonce, max_fee_gwei=t.max_fee / 1e9,
                                     cap_gwei=cap / 1e9)
                    t.sent_block = head.number  # look again in replace_after_blocks
                    return
                new_max = cap
            new_prio = min(new_prio, new_max)
            try:
                h = await self._broadcast(t, t.plan, t.gas, new_max, new_prio, head, "replace")
            except RpcError as e:
                self.log.warning("replacement_rejected", intent=t.key, nonce=t.nonce, error=e.rpc_message)
                t.sent_block = head.number
                return
            self.log.info("tx_replaced", intent=t.key, nonce=t.nonce, tx=h, max_fee_gwei=new_max / 1e9,
                          priority_fee_gwei=new_prio / 1e9)
        else:
            # the call would now revert (or the plan is unknown after a restart): a 21,000-gas
            # self-transfer on the same nonce costs less than letting it fail on chain
            cancel = TxPlan(to=self.address, data=b"", gas_limit=CANCEL_GAS, description="cancel")
            if CANCEL_GAS * new_max > self.cfg.max_fee_wei * CANCEL_GAS:
                new_max = self.cfg.max_fee_wei
            try:
                h = await self._broadcast(t, cancel, CANCEL_GAS, new_max, min(new_prio, new_max), head, "cancel")
            except RpcError as e:
                self.log.warning("cancel_rejected", intent=t.key, nonce=t.nonce, error=e.rpc_message)
                t.sent_block = head.number
                return
            t.cancelled = True
            t.plan, t.gas = cancel, CANCEL_GAS
            self.log.info("tx_cancelled", intent=t.key, nonce=t.nonce, tx=h, max_fee_gwei=new_max / 1e9)
        t.sent_block = head.number

    def close(self) -> None:
        self.journal.close()
