"""Transaction manager: one nonce sequence per signing key, EIP-1559 fees, tracking until
mined (or replaced, cancelled, dropped), confirmations, the journal and the safety limits.

- A send is tracked from the moment it is signed: the intent and the signed transaction are
  journaled (fsync'ed) before the broadcast, the nonce is consumed at signing, and any
  failure of the broadcast other than the node's explicit refusal means "maybe sent": the
  transaction stays in flight and per-block tracking rebroadcasts, replaces or cancels it.
  Never two different transactions for one intent unless one replaces the other on its nonce.
- Nonces: a local counter, recomputed every block as max(the node's mined count, the
  node's pending count where the node sees our transactions, our highest in-flight nonce
  + 1), so a node restarted from an older state, a transaction of ours the node forgot or
  another transaction on the key never leaves a gap or a duplicate.
- Refusals: "fee below base fee" is re-priced on a fresh base fee and retried (not a
  failure); "nonce too low" moves the intent to the next nonce (the refused transaction
  can never be mined); anything else drops the intent and counts as a failure. With several
  endpoints a refusal counts only when no endpoint accepted the transaction and none failed
  in a way that says nothing (rpc.MaybeSentError: maybe sent, tracked on its nonce).
- Fees: maxPriorityFee = the configured tip, or a share of the expected profit per gas if
  that is higher; maxFee = 2 × base fee + tip; both capped by max_fee_gwei and so that
  gas × maxFee never exceeds the expected profit.
- Tracking: every block, one batched query: the nonce count first, then the receipts (a query
  too long for one request reads the count alone first, so the receipts are never read
  before it); a final transaction is checked by its mined hash only. Not mined
  after `replace_after_blocks` → re-simulate: still good → the same nonce again with fees
  ≥ 12.5% higher (never past the profit cap); the call would now revert (someone else
  liquidated) → cancel with a 21,000-gas self-transfer on that nonce.
- Journal: the intent and each signed transaction are written (fsync'ed) before the
  broadcast, so a restarted keeper knows what is in flight and never sends an intent twice.
- Reorgs and resets: mined transactions are re-checked every block until they are
  `confirmations` deep and watched for REORG_WATCH_BLOCKS more; a receipt that disappears
  puts the transaction back in flight (re-simulated, then rebroadcast as the same signed
  transaction, to the relays in relay mode, or let go or cancelled). A mined but not final
  send keeps its account in flight. A restart never drops an in-flight intent because the
  block it was priced on changed or cannot be read: per-block tracking settles it.
- Limits: per-transaction fee cap, gas spend per hour and per day, a pause after N
  consecutive failed sends (reverted on chain and not a lost race, or refused for a reason
  other than fees or nonces; an RPC fault while judging a revert never counts) that lifts
  itself once `pause_cooldown_s` has passed (seen by whoever asks: a send, health, the
  heartbeat, alerts), and a kill switch (a file, or KEEPER_KILL_SWITCH=1). After `stopping`
  nothing is signed or sent: no new send, replacement, cancellation or rebroadcast.
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
from ..errors import BadResponseError, RpcError, TransientError
from ..rpc import Rpc, parse_int, rejection_kind
from ..types import Head, TxPlan
from .journal import Journal, JournalWriteError

BUMP_NUM, BUMP_DEN = 1125, 1000  # +12.5%: the minimum most nodes accept for a replacement
CANCEL_GAS = 21_000
FILL_PREFIX = "fill:"  # the intent key of a self-transfer filling a nonce gap ("fill:<nonce>")
MAX_GAP_FILL = 16  # a wider gap (a chain reset far back) is not filled: the sends above it are let go
REORG_WATCH_BLOCKS = 64  # a final transaction is still checked for reorgs this many blocks
JUDGE_TRIES = 5  # a revert whose judging eth_call keeps failing is left unjudged (not a failure)



class Broadcaster(Protocol):
    name: str
    public_pool: bool  # does the node the keeper reads see its transactions (public mempool)?

    async def broadcast(self, raw: bytes, tx_hash: str, head: Head, behind: bytes | None = None) -> None: ...

    async def on_block(self, head: Head, pending_hashes: set[str]) -> None:
        """Per block, with the hashes still pending: re-send what needs it. Never raises."""

    async def close(self) -> None: ...


class PublicMempool:
    name = "public"
    public_pool = True

    def __init__(self, rpc: Rpc):
        self.rpc = rpc

    async def broadcast(self, raw: bytes, tx_hash: str, head: Head, behind: bytes | None = None) -> None:
        # behind: the public mempool orders by fees alone (the sender set them for that)
        await self.rpc.send_raw_transaction("0x" + raw.hex())  # "already known" counts as accepted

    async def on_block(self, head: Head, pending_hashes: set[str]) -> None:
        return None  # lost transactions are rebroadcast by the transaction manager

    async def close(self) -> None:
        return None


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
    raws: dict[str, bytes] = field(default_factory=dict)  # hash -> signed transaction
    status: str = "pending"  # pending | mined | final (watched for reorgs) | dropped
    cancelled: bool = False
    receipt: dict[str, Any] | None = None
    mined_hash: str | None = None
    mined_block: int | None = None
    uncertain: bool = False  # the last broadcast failed in a way that says nothing (maybe sent)
    rebroadcast_block: int = -1
    reorged: bool = False  # mined, then reorged out: the node and the relays may no longer hold it
    judge_tries: int = 0  # attempts to judge a revert (lost race or failure) that the RPC failed

    @property
    def latest_hash(self) -> str:
        return self.hashes[-1]

    @property
    def in_flight(self) -> bool:
        return self.status in ("pending", "mined")


def _receipt_hashes(t: Tracked) -> list[str]:
    """The hashes whose receipts are read for a tracked send: all of them while it is not final;
    once final (watched for reorgs only), the one that was mined."""
    if t.status == "final" and t.mined_hash:
        return [t.mined_hash]
    return list(t.hashes)


class SendRefused(Exception):
    def __init__(self, reason: str, **detail: Any):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class TxManager:
    def __init__(self, rpc: Rpc, signer: Any, cfg: KeeperConfig, journal: Journal, log: Any,
                 broadcaster: Broadcaster | None = None, broadcast_timeout_s: float = 15.0):
        self.rpc = rpc
        self._signer = signer  # never logged
        self.address: str = signer.address
        self.cfg = cfg
        self.journal = journal
        self.log = log
        self.broadcaster = broadcaster or PublicMempool(rpc)
        self.broadcast_timeout_s = broadcast_timeout_s
        self.chain_id = 0
        self.nonce: int | None = None
        self.pending: dict[str, Tracked] = {}  # intent id -> tracked (in flight, or final and watched)
        self.consecutive_failures = 0
        self.lost_races = 0  # reverted sends that lost a race (not failures)
        self._unjudged: list[Tracked] = []  # reverted sends not judged yet (lost race or failure)
        self._paused = False
        self.paused_at = 0.0
        self.stopping = False  # set on shutdown: nothing new is signed
        self.lock = asyncio.Lock()  # one signer: nonce assignment, signing and broadcast in order
        # told of replacements and drops: (event "replaced" | "cancel_sent" | "dropped", tracked, new hash or
        # reason); the executor records them in the store
        self.on_event: Callable[[str, Tracked, str], None] | None = None

    # -- start-up and restart -------------------------------------------------------------
    async def start(self) -> None:
        self.chain_id = await self.rpc.chain_id()
        await self.restore()
        await self.resync_nonce()

    async def resync_nonce(self) -> None:
        """Next nonce = max(mined count, pending count if the node sees our pool, in-flight + 1)."""
        res = await self.rpc.batch([("eth_getTransactionCount", [self.address, "latest"]),
                                    ("eth_getTransactionCount", [self.address, "pending"])])
        latest, pending = parse_int(res[0], "nonce"), parse_int(res[1], "nonce")
        self._set_nonce(latest, pending)

    def _set_nonce(self, latest: int, pending: int) -> None:
        ours = [t.nonce + 1 for t in self.pending.values() if t.in_flight]
        new = max([latest] + ([pending] if self.broadcaster.public_pool else []) + ours)
        if self.nonce is not None and new != self.nonce:
            self.log.info("nonce_resynced", old=self.nonce, new=new, node_latest=latest, node_pending=pending)
        self.nonce = new

    async def restore(self) -> None:
        """Rebuild in-flight transactions from the journal (one request to check them all);
        per-block tracking reconciles them with the node from the next block on.

        Nothing is dropped here. The block an intent was priced on may have another hash now (a
        reorg, a node restarted from an older state) or not be readable (a lagging or pruned
        endpoint): either way the transaction may still be pending somewhere, so it is tracked
        as usual and per-block tracking settles it as after a reorg: the node holds it (kept),
        its nonce is used by something else (dropped), or neither (re-simulated: the same
        signed transaction again, or let go or cancelled on its nonce)."""
        states = self.journal.in_flight()
        if not states:
            return
        reqs = [("eth_getBlockByNumber", [hex(s.block), False]) for s in states]
        reqs += [("eth_getTransactionByHash", [h]) for s in states for h in s.hashes]
        try:
            res = await self.rpc.batch(reqs, return_errors=True)
        except TransientError as e:  # only informative: everything is restored all the same
            self.log.warning("in_flight_check_failed", error=str(e)[:200])
            res = [None] * len(reqs)
        blocks, by_hash = res[:len(states)], iter(res[len(states):])
        for s, blk in zip(states, blocks):
            known = any(isinstance(next(by_hash), dict) for _ in s.hashes)
            chain = "same"
            if s.block_hash and not isinstance(blk, dict):
                chain = "unreadable"  # not a reset: a lagging, pruned or failing endpoint says nothing
            elif s.block_hash and blk.get("hash") != s.block_hash:
                chain = "changed"  # a reorg or a node gone back: re-checked against the node below
            plan = TxPlan(to=s.to, data=bytes.fromhex(s.data[2:]), value=s.value, gas_limit=0)
            tr = Tracked(id=s.id, key=s.key, plan=plan, nonce=s.nonce, gas=0, max_fee=0, prio=0, sent_block=s.block,
                         expected_profit_usd_e8=s.expected_profit_usd_e8, profit_cap_wei=s.profit_cap_wei,
                         hashes=list(s.hashes), status=s.status, mined_hash=s.mined_hash,
                         mined_block=s.mined_block)
            tr.raws = {h: bytes.fromhex(r[2:]) for h, r in s.raws.items() if r}
            if s.hashes:
                tr.gas, tr.max_fee, tr.prio = s.fees[s.hashes[-1]]
                if s.kinds.get(s.hashes[-1]) == "cancel":
                    tr.cancelled = True
                    tr.plan = TxPlan(to=self.address, data=b"", gas_limit=CANCEL_GAS, description="cancel")
            if chain == "changed" and not known:
                tr.reorged = True  # the node lost it: re-simulated and sent again as the same transaction
            self.pending[s.id] = tr
            self.log.warning("in_flight_restored", intent=s.key, nonce=s.nonce, hashes=s.hashes, status=s.status,
                             known_to_node=known, send_block=chain)

    def in_flight_keys(self) -> set[str]:
        """Keys with a send pending or mined but not yet final: never sent again meanwhile."""
        return {t.key for t in self.pending.values() if t.in_flight}

    def in_flight(self) -> list[Tracked]:
        return [t for t in self.pending.values() if t.in_flight]

    # -- limits -----------------------------------------------------------------------
    def kill_switch(self) -> str | None:
        if os.environ.get("KEEPER_KILL_SWITCH", "").strip().lower() in ("1", "true", "yes", "on"):
            return "KEEPER_KILL_SWITCH"
        if self.cfg.kill_switch_file is not None and Path(self.cfg.kill_switch_file).exists():
            return str(self.cfg.kill_switch_file)
        return None

    @property
    def paused(self) -> bool:
        """Sending paused by the failure limit. Lifted (with `sending_resumed`) as soon as the
        cool-down has passed, whoever asks: a send, the heartbeat, health, metrics, alerts."""
        if self._paused:
            waited = time.monotonic() - self.paused_at
            if self.cfg.pause_cooldown_s > 0 and waited >= self.cfg.pause_cooldown_s:
                self._paused = False
                self.consecutive_failures = 0
                self.log.warning("sending_resumed", paused_s=round(waited, 1), cooldown_s=self.cfg.pause_cooldown_s)
        return self._paused

    @paused.setter
    def paused(self, value: bool) -> None:
        self._paused = bool(value)
        if value:
            self.paused_at = time.monotonic()

    def check_limits(self, gas: int, max_fee: int) -> None:
        if self.stopping:
            raise SendRefused("stopping")
        switch = self.kill_switch()
        if switch:
            raise SendRefused("kill_switch", source=switch)
        if self.paused:
            waited = time.monotonic() - self.paused_at
            raise SendRefused("paused", consecutive_failures=self.consecutive_failures,
                              resumes_in_s=round(max(self.cfg.pause_cooldown_s - waited, 0), 1)
                              if self.cfg.pause_cooldown_s > 0 else None)
        worst = gas * max_fee
        reserved = sum(t.gas * t.max_fee for t in self.pending.values() if t.status == "pending")
        now = time.time()
        for window, limit in ((3600, self.cfg.max_gas_spend_wei_per_hour), (86_400, self.cfg.max_gas_spend_wei_per_day)):
            if limit is None:
                continue
            spent = self.journal.gas_spent_wei_since(now - window)
            if spent + reserved + worst > limit:
                raise SendRefused("gas_budget", window_s=window, spent_eth=spent / 1e18, limit_eth=limit / 1e18)

    def _record_failure(self, why: str) -> None:
        """A send that reverted on chain or could not be made (not a fee or nonce refusal)."""
        self.consecutive_failures += 1
        limit = self.cfg.max_consecutive_failures
        if limit and self.consecutive_failures >= limit and not self._paused:
            self.paused = True
            cool = self.cfg.pause_cooldown_s
            self.log.error("sending_paused", consecutive_failures=self.consecutive_failures, last_failure=why,
                           resumes_in_s=cool if cool > 0 else None,
                           hint="the keeper keeps watching; sending resumes by itself after keeper.pause_cooldown_s"
                           if cool > 0 else "the keeper keeps watching; fix the cause and restart it to send again")

    # -- fees -------------------------------------------------------------------------
    def fees(self, head: Head, gas: int, profit_cap_wei: int | None, base_fee_wei: int | None = None) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) for a new transaction."""
        base = head.base_fee_wei if base_fee_wei is None else base_fee_wei
        prio = self.cfg.priority_fee_wei
        if profit_cap_wei and self.cfg.priority_fee_profit_share_bps and gas:
            prio = max(prio, profit_cap_wei * self.cfg.priority_fee_profit_share_bps // 10_000 // gas)
        max_fee = 2 * base + prio
        max_fee = min(max_fee, self._fee_cap(gas, profit_cap_wei))
        prio = min(prio, max_fee)
        return max_fee, prio

    def _fee_cap(self, gas: int, profit_cap_wei: int | None) -> int:
        cap = self.cfg.max_fee_wei
        if profit_cap_wei and gas:
            cap = min(cap, profit_cap_wei // gas)
        return cap

    async def _next_base_fee(self, head: Head) -> int:
        """The base fee of the block being built (the pending block where the node has one)."""
        try:
            blk = await self.rpc.call("eth_getBlockByNumber", ["pending", False])
            if isinstance(blk, dict) and blk.get("baseFeePerGas"):
                return parse_int(blk["baseFeePerGas"], "baseFeePerGas")
        except (RpcError, BadResponseError, TransientError):
            pass
        return head.base_fee_wei * BUMP_NUM // BUMP_DEN + 1

    # -- sending ----------------------------------------------------------------------
    def _sign(self, plan: TxPlan, nonce: int, gas: int, max_fee: int, prio: int) -> tuple[bytes, str]:
        tx = {"type": 2, "chainId": self.chain_id, "nonce": nonce, "to": plan.to, "value": plan.value,
              "data": plan.data, "gas": gas, "maxFeePerGas": max_fee, "maxPriorityFeePerGas": prio}
        raw = bytes(self._signer.sign_transaction(tx).raw_transaction)
        return raw, "0x" + keccak(raw).hex()

    async def send(self, plan: TxPlan, gas: int, head: Head, key: str, expected_profit_usd_e8: int = 0,
                   profit_cap_wei: int | None = None, behind: Any = None) -> Tracked:
        """Sign, journal and broadcast a new transaction on the next nonce.

        behind: a pending transaction (keeper.oracles.PendingTx) this one must land right
        after, in the same block. Its fees are set not to outbid it: the same fee cap (nodes
        like anvil order by fee cap, then arrival) and a tip no higher than its (builders order
        by tip); a relay gets the bundle [that transaction, this one].

        Returns the tracked transaction once the node has it or might have it (then
        `uncertain` is set and per-block tracking takes over). Raises SendRefused before
        signing, or RpcError when the node explicitly refused it (the intent is dropped)."""
        async with self.lock:
            max_fee, prio = self.fees(head, gas, profit_cap_wei)
            base = head.base_fee_wei
            if behind is not None:  # it lands in the next block: priced at that block's base fee
                from ..oracles import effective_tip

                base = head.next_base_fee_wei
                max_fee = min(behind.fee_cap, self._fee_cap(gas, profit_cap_wei))
                prio = max(0, min(prio, effective_tip(behind, base), max_fee - base))
            if base + prio > max_fee:
                raise SendRefused("fee_cap", base_fee_gwei=base / 1e9, max_fee_gwei=max_fee / 1e9)
            self.check_limits(gas, max_fee)
            if self.nonce is None:
                await self.resync_nonce()
            assert self.nonce is not None
            tr = Tracked(id=uuid.uuid4().hex[:16], key=key, plan=plan, nonce=self.nonce, gas=gas, max_fee=max_fee,
                         prio=prio, sent_block=head.number, expected_profit_usd_e8=expected_profit_usd_e8,
                         profit_cap_wei=profit_cap_wei or 0)
            try:
                self._journal_intent(tr, head)
            except JournalWriteError as e:  # nothing is sent that the journal does not hold
                self._record_failure("journal write failed")
                raise SendRefused("journal_unwritable", error=str(e)) from None
            self.pending[tr.id] = tr  # tracked from here on, whatever happens
            self.nonce = tr.nonce + 1
            for attempt in range(3):
                if attempt and self.stopping:  # a re-price or re-nonce would sign again: not after stopping
                    self._forget(tr, "stopping")
                    raise SendRefused("stopping")
                try:
                    await self._broadcast(tr, plan, gas, max_fee, prio, head, "send",
                                          behind=behind.raw if behind is not None else None)
                    return tr
                except JournalWriteError as e:
                    if tr.hashes:  # an earlier version may be out there: keep tracking it
                        self.log.error("journal_write_failed", intent=key, error=str(e))
                        return tr
                    self.pending.pop(tr.id, None)  # never signed into the journal: never broadcast
                    if self.nonce == tr.nonce + 1:
                        self.nonce = tr.nonce
                    self._record_failure("journal write failed")
                    raise SendRefused("journal_unwritable", error=str(e)) from None
                except RpcError as e:
                    kind = rejection_kind(e.rpc_message)
                    if kind == "fee_too_low" and attempt < 2:
                        # the base fee rose between pricing and sending: re-price, same nonce
                        base = await self._next_base_fee(head)
                        max_fee, prio = self.fees(head, gas, profit_cap_wei, base_fee_wei=base)
                        if base + prio <= max_fee:
                            self.log.info("send_repriced", intent=key, nonce=tr.nonce, base_fee_gwei=base / 1e9,
                                          max_fee_gwei=max_fee / 1e9, error=e.rpc_message)
                            continue
                        self._forget(tr, "fee_cap")
                        raise SendRefused("fee_cap", base_fee_gwei=base / 1e9, max_fee_gwei=max_fee / 1e9) from None
                    if kind in ("nonce_used", "replacement_underpriced") and attempt < 2:
                        # something else holds this nonce; the refused transaction can never be mined
                        old = tr.nonce
                        await self.resync_nonce()
                        tr.nonce = max(self.nonce or 0, old + 1)
                        self.nonce = tr.nonce + 1
                        self.journal.append({"t": "renonce", "id": tr.id, "nonce": tr.nonce})
                        self.log.warning("nonce_resynced", old=old, new=tr.nonce, error=e.rpc_message, intent=key)
                        continue
                    self._forget(tr, f"rejected: {e.rpc_message[:120]}")
                    if kind != "fee_too_low":
                        self._record_failure(e.rpc_message[:120])
                    raise
            raise AssertionError("unreachable")

    def _journal_intent(self, tr: Tracked, head: Head) -> None:
        """The intent, before anything is signed for it (JournalWriteError: not recorded)."""
        self.journal.append({"t": "intent", "id": tr.id, "key": tr.key, "nonce": tr.nonce, "to": tr.plan.to,
                             "data": "0x" + tr.plan.data.hex(), "value": tr.plan.value,
                             "expected_profit_usd_e8": tr.expected_profit_usd_e8, "profit_cap_wei": tr.profit_cap_wei,
                             "block": head.number, "block_hash": head.hash})

    async def _broadcast(self, tr: Tracked, plan: TxPlan, gas: int, max_fee: int, prio: int, head: Head,
                         kind: str, behind: bytes | None = None) -> str:
        """Sign, journal, broadcast. RpcError: the node refused this transaction. Any other
        failure is logged as uncertain and swallowed: the transaction may be out there."""
        raw, tx_hash = self._sign(plan, tr.nonce, gas, max_fee, prio)
        self.journal.append({"t": "signed", "id": tr.id, "hash": tx_hash, "nonce": tr.nonce, "gas": gas,
                             "max_fee": max_fee, "prio": prio, "raw": "0x" + raw.hex(), "kind": kind})
        tr.hashes.append(tx_hash)
        tr.raws[tx_hash] = raw
        tr.gas, tr.max_fee, tr.prio = gas, max_fee, prio
        await self._post(tr, raw, tx_hash, head, behind)
        return tx_hash

    async def _post(self, tr: Tracked, raw: bytes, tx_hash: str, head: Head, behind: bytes | None = None) -> None:
        try:
            await asyncio.wait_for(self.broadcaster.broadcast(raw, tx_hash, head, behind=behind),
                                   self.broadcast_timeout_s)
            tr.uncertain = False
        except RpcError:
            raise
        except Exception as e:  # timeout, HTTP 502, connection reset, no relay accepted: maybe sent
            tr.uncertain = True
            err = f"{e.__class__.__name__}: {e}" if str(e) else e.__class__.__name__
            self.journal.append({"t": "broadcast_failed", "id": tr.id, "hash": tx_hash, "error": err[:200]})
            self.log.warning("broadcast_uncertain", intent=tr.key, nonce=tr.nonce, tx=tx_hash, error=err,
                             hint="tracked as maybe sent: rebroadcast, replaced or cancelled on the next blocks")

    # -- tracking ---------------------------------------------------------------------
    def _mark_mined(self, t: Tracked, h: str, rc: dict[str, Any]) -> bool:
        """Record a receipt; True if this is news (first seen, or in another block than before)."""
        block = parse_int(rc["blockNumber"], "blockNumber")
        if t.status in ("mined", "final") and t.mined_hash == h and t.receipt is not None \
                and t.receipt.get("blockHash") == rc.get("blockHash"):
            return False
        fresh = t.status == "pending"
        t.status, t.receipt, t.mined_hash, t.mined_block = "mined", rc, h, block
        gas_used = parse_int(rc.get("gasUsed", "0x0"), "gasUsed")
        price = parse_int(rc.get("effectiveGasPrice", "0x0"), "effectiveGasPrice")
        ok = rc.get("status") == "0x1"
        self.journal.append({"t": "mined", "id": t.id, "hash": h, "block": block, "block_hash": rc.get("blockHash"),
                             "status": 1 if ok else 0, "gas_used": gas_used, "gas_price": price})
        if fresh:
            if ok and not t.cancelled:
                self.consecutive_failures = 0
            elif not ok and t not in self._unjudged:
                self._unjudged.append(t)  # lost race or failure: _judge_reverts() decides
        return True

    async def _judge_reverts(self, retries: bool = True) -> None:
        """A send that reverted on chain counts as a failure (towards the pause) unless it was
        a lost race: the same call succeeds against the state before its block, so another
        transaction in that block (a competitor's liquidation, an oracle update, a swap) changed
        the state first. Losing races is what keepers do all day; it must not stop sending.
        When the judging eth_call itself fails (timeout, garbage), nothing is counted: it is
        judged again on the next block, and after JUDGE_TRIES such failures left unjudged
        (`revert_unjudged`, not counted)."""
        judged, self._unjudged = self._unjudged, []
        if not retries:  # receipt polls judge new reverts only; a retry waits for the next block
            self._unjudged = [t for t in judged if t.judge_tries]
            judged = [t for t in judged if not t.judge_tries]
        for t in judged:
            if not t.mined_block:
                self._record_failure("reverted on chain")
                continue
            call = {"from": self.address, "to": t.plan.to, "data": "0x" + t.plan.data.hex(), "gas": hex(t.gas)}
            if t.plan.value:
                call["value"] = hex(t.plan.value)
            try:
                await self.rpc.call("eth_call", [call, hex(t.mined_block - 1)])
            except RpcError:  # it reverts against the state it was sent for too: our failure
                self._record_failure("reverted on chain")
                continue
            except (TransientError, BadResponseError) as e:
                # the RPC could not say: judged again later, never counted on an RPC fault
                t.judge_tries += 1
                if t.judge_tries < JUDGE_TRIES:
                    self._unjudged.append(t)
                    self.log.info("revert_judge_retry", intent=t.key, tx=t.mined_hash, error=str(e)[:200])
                else:
                    self.log.warning("revert_unjudged", intent=t.key, tx=t.mined_hash, block=t.mined_block,
                                     error=str(e)[:200], note="lost race or failure unknown: not counted "
                                                              "towards the pause")
                continue
            self.lost_races += 1
            self.log.warning("lost_race", intent=t.key, tx=t.mined_hash, block=t.mined_block, nonce=t.nonce,
                             note="reverted, but succeeds against the state before its block: another transaction "
                                  "in that block came first; not counted towards the pause")

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
                    if self._mark_mined(t, h, rc):
                        mined.append(t)
        if self._unjudged:
            await self._judge_reverts(retries=False)
        return mined

    async def wait(self, tracked: list[Tracked], timeout_s: float) -> list[Tracked]:
        """Poll receipts until all of `tracked` are mined or the timeout passes. RPC trouble
        is retried until the deadline; whatever is not seen here is found by on_block."""
        deadline = time.monotonic() + timeout_s
        delay = 0.01
        done: list[Tracked] = []
        while True:
            try:
                done += await self.poll()
            except (TransientError, RpcError) as e:
                self.log.info("receipt_poll_failed", error=str(e))
            if all(t.status != "pending" for t in tracked) or time.monotonic() >= deadline:
                return done
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def on_block(self, head: Head, resimulate: Callable[[Tracked], Awaitable[bool]]) -> list[Tracked]:
        """Per block: receipts (and receipts that disappeared), confirmations, the node's
        view of our pending transactions, nonce gaps, rebroadcasts, replacements,
        cancellations. Returns the transactions newly seen mined."""
        watch = list(self.pending.values())
        if not watch:
            if self.nonce is not None and head.number % 16 == 0:  # cheap check for other users of the key
                await self.resync_nonce()
            return []
        # the nonce count first: whatever it counts is mined before the receipts are read. One
        # batch is answered in order by one node; a batch too long for one request is cut into
        # parts that run at once (maybe on different endpoints), so then the count goes alone
        # first and the receipts after it.
        counts: list[tuple[str, list[Any]]] = [("eth_getTransactionCount", [self.address, "latest"]),
                                               ("eth_getTransactionCount", [self.address, "pending"])]
        reqs: list[tuple[str, list[Any]]] = []
        checked: list[tuple[Tracked, list[str]]] = [(t, _receipt_hashes(t)) for t in watch]
        for t, hs in checked:
            reqs += [("eth_getTransactionReceipt", [h]) for h in hs]
        pend = [t for t in watch if t.status == "pending"]
        for t in pend:
            reqs += [("eth_getTransactionByHash", [h]) for h in t.hashes]
        n = len(counts) + len(reqs)
        if n <= getattr(self.rpc, "max_batch_calls", n) and n * 160 <= getattr(self.rpc, "max_request_bytes", n * 160):
            res = await self.rpc.batch(counts + reqs, return_errors=True)
        else:
            res = await self.rpc.batch(counts, return_errors=True)
            if not any(isinstance(r, RpcError) for r in res):
                res += await self.rpc.batch(reqs, return_errors=True)
        if isinstance(res[0], RpcError) or isinstance(res[1], RpcError):
            raise TransientError("eth_getTransactionCount failed while tracking")
        latest, node_pending = parse_int(res[0], "nonce"), parse_int(res[1], "nonce")
        i = 2
        receipts: dict[str, Any] = {}
        for t, hs in checked:
            for h in hs:
                receipts[h] = res[i]
                i += 1
        by_hash: dict[str, Any] = {}
        for t in pend:
            for h in t.hashes:
                by_hash[h] = res[i]
                i += 1
        async with self.lock:
            mined = self._reconcile_receipts(head, watch, receipts)
            await self._reconcile_pending(head, latest, receipts, by_hash, resimulate)
            self._set_nonce(latest, node_pending)
        if self._unjudged:
            await self._judge_reverts()
        return mined

    def _reconcile_receipts(self, head: Head, watch: list[Tracked], receipts: dict[str, Any]) -> list[Tracked]:
        mined: list[Tracked] = []
        for t in watch:
            if t.id not in self.pending:
                continue
            got = [(h, receipts[h]) for h in t.hashes if isinstance(receipts.get(h), dict)
                   and receipts[h].get("blockNumber")]
            unknown = any(isinstance(receipts.get(h), Exception) for h in t.hashes)
            if got:
                h, rc = got[-1]
                was = t.status
                if self._mark_mined(t, h, rc) and was == "pending":
                    mined.append(t)
                depth = head.number - (t.mined_block or head.number) + 1
                if t.status == "mined" and depth >= self.cfg.confirmations:
                    t.status = "final"
                    self.journal.append({"t": "final", "id": t.id, "hash": t.mined_hash, "block": t.mined_block})
                if t.status == "final" and depth >= max(self.cfg.confirmations, REORG_WATCH_BLOCKS):
                    del self.pending[t.id]
            elif t.status in ("mined", "final") and not unknown:
                # its block is no longer in the chain: a reorg, or the node went back to an older state
                self.log.warning("tx_reorged_out", intent=t.key, nonce=t.nonce, tx=t.mined_hash, block=t.mined_block,
                                 head=head.number, was=t.status)
                t.status, t.receipt, t.mined_hash, t.mined_block = "pending", None, None, None
                t.sent_block = head.number  # re-checked and rebroadcast below if the node lost it
                t.reorged = True  # in relay mode too: the relays forgot it once it was mined
                self.journal.append({"t": "unmined", "id": t.id})
        return mined

    async def _reconcile_pending(self, head: Head, latest: int, receipts: dict[str, Any], by_hash: dict[str, Any],
                                 resimulate: Callable[[Tracked], Awaitable[bool]]) -> None:
        pend = sorted((t for t in self.pending.values() if t.status == "pending"), key=lambda t: t.nonce)
        expected = latest  # the next nonce the chain can take
        lost: list[Tracked] = []
        gap: list[int] = []  # nonces below a send the node holds that nothing of ours will fill
        for t in pend:
            known = [by_hash.get(h) for h in t.hashes if isinstance(by_hash.get(h), dict)]
            answered = all(h in by_hash and not isinstance(by_hash[h], Exception) for h in t.hashes) and \
                all(not isinstance(receipts.get(h), Exception) for h in t.hashes)
            if any(k.get("blockNumber") for k in known) or not answered:
                continue  # mined but its receipt is not served yet, or the node did not answer: next block
            if t.nonce < latest:
                # the nonce is used and none of our transactions for it was mined: not ours
                self._forget(t, "nonce_used_by_another_transaction")
                continue
            if t.nonce > expected:
                # a gap below it: nonces the chain needs first that no send of ours holds (the
                # node went back further than the sends the keeper watches). They are filled
                # (below) so this send and every later one can be mined. It is never dropped
                # for the gap: the node (a queued transaction is not always served by
                # eth_getTransactionByHash) or a relay may hold it, and once the gap is filled
                # it would land beside a new send for the same account. It is judged like any
                # pending send: held, the same transaction again, or cancelled on its nonce.
                # A gap wider than MAX_GAP_FILL (a chain reset far back: the sends above it could
                # only be mined after that many fillers) is not filled; the send is let go.
                held = {o.nonce for o in self.pending.values() if o.in_flight}
                width = t.nonce - expected  # at most len(held) of these are ours: no scan of a huge gap
                missing = [n for n in range(expected, t.nonce) if n not in held] \
                    if width <= MAX_GAP_FILL + len(held) else None
                if missing is None or len(gap) + len(missing) > MAX_GAP_FILL:
                    self._forget(t, "nonce_gap", node_next_nonce=expected,
                                 gap=width if missing is None else len(gap) + len(missing))
                    continue
                gap += missing
            expected = max(expected, t.nonce + 1)
            if not known and t.rebroadcast_block != head.number and (self.broadcaster.public_pool or t.reorged):
                # the node does not have it (public mempool), or it was reorged out (relays: they
                # dropped it when it was mined; the node cannot see private sends otherwise)
                lost.append(t)
            elif head.number - t.sent_block >= self.cfg.replace_after_blocks:
                await self._unstick(t, head, resimulate)
        if lost:
            await self._recover_lost(lost, head, resimulate)
        if gap:
            await self._fill_gap(sorted(set(gap)), head)

    async def _fill_gap(self, nonces: list[int], head: Head) -> None:
        """Nonces the chain needs before a send of ours the node holds, and that no send of ours
        will use any more (the node went back to an older state, further than the sends it
        watches): each gets a 21,000-gas self-transfer (`nonce_gap_filled`), tracked and
        journaled like any send (intent `fill:<nonce>`), so the held sends, and every later one,
        can be mined instead of queueing behind the gap for ever. Nothing after stopping, or
        while the limits refuse sending."""
        for n in nonces:
            if self.stopping:
                return
            plan = TxPlan(to=self.address, data=b"", gas_limit=CANCEL_GAS, description="fill a nonce gap")
            max_fee, prio = self.fees(head, CANCEL_GAS, None)
            try:
                self.check_limits(CANCEL_GAS, max_fee)
            except SendRefused as e:
                self.log.warning("nonce_gap_not_filled", nonce=n, reason=e.reason)
                return
            tr = Tracked(id=uuid.uuid4().hex[:16], key=f"{FILL_PREFIX}{n}", plan=plan, nonce=n, gas=CANCEL_GAS,
                         max_fee=max_fee, prio=prio, sent_block=head.number, expected_profit_usd_e8=0, profit_cap_wei=0)
            try:
                self._journal_intent(tr, head)
            except JournalWriteError as e:  # nothing is sent that the journal does not hold
                self.log.error("nonce_gap_not_filled", nonce=n, reason="journal_unwritable", error=str(e))
                return
            self.pending[tr.id] = tr
            try:
                h = await self._broadcast(tr, plan, CANCEL_GAS, max_fee, prio, head, "fill")
            except RpcError as e:  # e.g. the nonce is used after all: nothing to fill
                self._forget(tr, f"rejected: {e.rpc_message[:120]}")
                continue
            self.log.warning("nonce_gap_filled", nonce=n, tx=h, max_fee_gwei=max_fee / 1e9,
                             hint="the node went back: a self-transfer on a nonce nothing of ours holds, so the "
                                  "sends after it can be mined")

    async def _recover_lost(self, lost: list[Tracked], head: Head,
                            resimulate: Callable[[Tracked], Awaitable[bool]]) -> None:
        """Transactions the node does not hold (a swallowed or failed broadcast, a node
        restarted or gone back, a reorg): each is re-simulated; still good → the very same
        signed transaction again; would revert → let go if no later send of ours waits on its
        nonce, else cancelled on it (the nonce must be filled). Nothing after stopping."""
        if self.stopping:
            return
        good: dict[str, bool] = {}
        for t in lost:
            t.rebroadcast_block = head.number
            good[t.id] = t.cancelled or (t.hashes and t.latest_hash in t.raws and await resimulate(t)) or False
        if self.stopping:  # told to stop during the simulations
            return
        for t in sorted(lost, key=lambda t: t.nonce, reverse=True):
            if not good[t.id] and not any(o.nonce > t.nonce for o in self.in_flight() if o is not t):
                self._forget(t, "would_revert_not_in_pool")
        for t in lost:
            if t.id not in self.pending:
                continue
            if not good[t.id]:
                await self._unstick(t, head, resimulate)  # cancel on its nonce
                continue
            self.journal.append({"t": "rebroadcast", "id": t.id, "hash": t.latest_hash})
            self.log.info("tx_rebroadcast", intent=t.key, nonce=t.nonce, tx=t.latest_hash,
                          via=self.broadcaster.name)
            t.reorged = False  # the broadcaster holds it again (a relay re-targets it every block)
            try:
                await self._post(t, t.raws[t.latest_hash], t.latest_hash, head)
            except RpcError as e:
                kind = rejection_kind(e.rpc_message)
                if kind == "fee_too_low":
                    await self._unstick(t, head, resimulate)  # re-priced on the same nonce
                elif kind != "known":
                    self.log.warning("rebroadcast_rejected", intent=t.key, nonce=t.nonce, error=e.rpc_message)

    def _forget(self, t: Tracked, reason: str, **kw: Any) -> None:
        """Stop tracking an intent none of whose transactions can be mined; free its nonce if
        it was the last one handed out."""
        t.status = "dropped"
        self.journal.append({"t": "dropped", "id": t.id, "reason": reason})
        self.log.warning("tx_dropped", intent=t.key, nonce=t.nonce, reason=reason, hashes=t.hashes, **kw)
        self.pending.pop(t.id, None)
        if self.on_event is not None:
            self.on_event("dropped", t, reason)
        if self.nonce == t.nonce + 1:
            self.nonce = t.nonce

    async def _unstick(self, t: Tracked, head: Head, resimulate: Callable[[Tracked], Awaitable[bool]]) -> None:
        """Replace (still good) or cancel (would revert) a send on its nonce. Nothing is signed
        after stopping."""
        if self.stopping:
            return
        still_good = (not t.cancelled) and await resimulate(t)
        if self.stopping:  # told to stop during the simulation
            return
        new_prio = max(t.prio * BUMP_NUM // BUMP_DEN + 1, self.cfg.priority_fee_wei)
        new_max = max(t.max_fee * BUMP_NUM // BUMP_DEN + 1, 2 * head.base_fee_wei + new_prio)
        if still_good:
            cap = self._fee_cap(t.gas, t.profit_cap_wei)
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
            if self.on_event is not None:
                self.on_event("replaced", t, h)
        else:
            # the call would now revert (or the plan is unknown after a restart): a 21,000-gas
            # self-transfer on the same nonce costs less than letting it fail on chain
            cancel = TxPlan(to=self.address, data=b"", gas_limit=CANCEL_GAS, description="cancel")
            new_max = min(new_max, self.cfg.max_fee_wei)
            try:
                h = await self._broadcast(t, cancel, CANCEL_GAS, new_max, min(new_prio, new_max), head, "cancel")
            except RpcError as e:
                self.log.warning("cancel_rejected", intent=t.key, nonce=t.nonce, error=e.rpc_message)
                t.sent_block = head.number
                return
            t.cancelled = True
            t.plan, t.gas = cancel, CANCEL_GAS
            self.log.info("tx_cancelled", intent=t.key, nonce=t.nonce, tx=h, max_fee_gwei=new_max / 1e9)
            if self.on_event is not None:
                self.on_event("cancel_sent", t, h)
        t.sent_block = head.number

    def close(self) -> None:
        self.journal.close()
