"""Why a liquidation seen on chain was not the keeper's: pure classification (no I/O).

Classes:
- `ours`: the liquidator is one of the keeper's addresses (its EOA, its liquidator contracts);
- `raced`: the keeper saw the account as an opportunity (and sent, or chose it, or ranked it
  without skipping it) but another address landed first; why = competitor, block, how many
  blocks after the keeper first saw it, and the keeper's own transaction if it sent one;
- `filtered`: the keeper saw it and skipped it (its last decision before the liquidation was a
  skip); why = the skip reason and its block;
- `unseen`: the keeper has no history of the account up to that block (not tracked, or never
  seen liquidatable).

`Tracker` is the in-memory history the app feeds every cycle (`saw`, `chose`, `skipped`,
`sent`); `history(protocol, account, upto_block)` is what the keeper knew up to a block.
Memory is bounded: an account not touched for `forget_blocks` is forgotten, at most
`max_accounts` are kept (least recently touched first out), and each keeps a few decisions.
An account seen again after a gap of more than `episode_gap_blocks` starts a new episode
(a position that recovered and fell again is "first seen" again).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Iterable

from .types import ChainLiquidation  # noqa: F401  (produced by the adapters, classified here)

FORGET_BLOCKS = 10_000
EPISODE_GAP_BLOCKS = 50
MAX_ACCOUNTS = 200_000
EVENTS_KEPT = 16


@dataclass(frozen=True, slots=True)
class AccountHistory:
    """What the keeper knew about (protocol, account) up to a block."""

    first_seen_block: int | None = None  # first block of this episode it was liquidatable / an opportunity
    last_seen_block: int | None = None
    last_skip_reason: str | None = None  # the last decision, if it was a skip
    last_skip_block: int | None = None
    chosen_block: int | None = None  # last block the strategy chose it (handed to the executor)
    sent: bool = False
    sent_block: int | None = None
    tx_hash: str | None = None  # the keeper's last transaction for it


def classify(liq: ChainLiquidation, *, ours: Iterable[str], history: AccountHistory | None) -> tuple[str, dict[str, Any]]:
    """(class, why) of one on-chain liquidation; see the module docstring. `ours` lowercase
    (compared case-insensitively anyway); `history` as of the liquidation's block."""
    mine = {a.lower() for a in ours}
    competitor = liq.liquidator.lower()
    if competitor in mine:
        why: dict[str, Any] = {"tx_hash": liq.tx_hash}
        if history is not None and history.first_seen_block is not None:
            why["blocks_after_seen"] = liq.block - history.first_seen_block
        return "ours", why
    if history is None or history.first_seen_block is None or history.first_seen_block > liq.block:
        return "unseen", {"competitor": competitor, "block": liq.block}
    behind = liq.block - history.first_seen_block
    base = {"competitor": competitor, "block": liq.block, "first_seen_block": history.first_seen_block,
            "blocks_behind": behind}
    if history.sent:
        return "raced", {**base, "sent": True, "our_tx": history.tx_hash, "sent_block": history.sent_block}
    last_skip = history.last_skip_block if history.last_skip_reason is not None else None
    if last_skip is not None and (history.chosen_block is None or last_skip >= history.chosen_block):
        return "filtered", {**base, "reason": history.last_skip_reason, "skip_block": last_skip}
    return "raced", {**base, "sent": False, "chosen_block": history.chosen_block}


@dataclass(slots=True)
class _Entry:
    first_seen: int
    last_seen: int
    touched: int
    # decisions, oldest first: (block, "skip" | "chose" | "sent", reason or tx hash); a repeat of
    # the last one only moves its block forward
    events: deque = field(default_factory=lambda: deque(maxlen=EVENTS_KEPT))


class Tracker:
    """The keeper's per-account history, updated by the app every cycle. Keys are
    (protocol, account lowercase)."""

    def __init__(self, forget_blocks: int = FORGET_BLOCKS, episode_gap_blocks: int = EPISODE_GAP_BLOCKS,
                 max_accounts: int = MAX_ACCOUNTS):
        self.forget_blocks = forget_blocks
        self.episode_gap_blocks = episode_gap_blocks
        self.max_accounts = max_accounts
        self._d: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._head = 0

    def __len__(self) -> int:
        return len(self._d)

    def _touch(self, protocol: str, account: str, block: int) -> _Entry:
        key = (protocol, account.lower())
        e = self._d.get(key)
        if e is None or block - e.last_seen > self.episode_gap_blocks:
            e = _Entry(first_seen=block, last_seen=block, touched=block)
            self._d[key] = e
        else:
            e.first_seen = min(e.first_seen, block)
            e.last_seen = max(e.last_seen, block)
            e.touched = max(e.touched, block)
        self._d.move_to_end(key)
        self._prune(block)
        return e

    def _prune(self, block: int) -> None:
        self._head = max(self._head, block)
        while self._d:
            key, e = next(iter(self._d.items()))
            if len(self._d) > self.max_accounts or e.touched < self._head - self.forget_blocks:
                del self._d[key]
            else:
                break

    @staticmethod
    def _event(e: _Entry, block: int, what: str, arg: str | None) -> None:
        if e.events and e.events[-1][1] == what and e.events[-1][2] == arg:
            e.events[-1] = (max(block, e.events[-1][0]), what, arg)
        else:
            e.events.append((block, what, arg))

    def saw(self, protocol: str, account: str, block: int) -> None:
        """It was liquidatable / an opportunity at this block."""
        self._touch(protocol, account, block)

    def chose(self, protocol: str, account: str, block: int) -> None:
        """The strategy chose it (handed to the executor)."""
        self._event(self._touch(protocol, account, block), block, "chose", None)

    def skipped(self, protocol: str, account: str, block: int, reason: str) -> None:
        """Skipped at this block (adapter, strategy or executor reason); it was seen."""
        self._event(self._touch(protocol, account, block), block, "skip", reason)

    def sent(self, protocol: str, account: str, block: int, tx_hash: str) -> None:
        self._event(self._touch(protocol, account, block), block, "sent", tx_hash)

    def history(self, protocol: str, account: str, upto_block: int | None = None) -> AccountHistory | None:
        """What the keeper knew up to `upto_block` (inclusive; None: everything), or None."""
        e = self._d.get((protocol, account.lower()))
        if e is None:
            return None
        upto = upto_block if upto_block is not None else max(e.last_seen, e.touched)
        if e.first_seen > upto:
            return None
        h: dict[str, Any] = {"first_seen_block": e.first_seen, "last_seen_block": min(e.last_seen, upto)}
        for block, what, arg in e.events:
            if block > upto:
                break
            if what == "skip":
                h["last_skip_reason"], h["last_skip_block"] = arg, block
            elif what == "chose":
                h["chosen_block"] = block
            elif what == "sent":
                h.update(sent=True, sent_block=block, tx_hash=arg, chosen_block=block)
        return AccountHistory(**h)
