"""Event sources the keeper follows besides new blocks (pending transactions: pending.py)."""

from .pending import PendingWatcher

__all__ = ["PendingWatcher"]
