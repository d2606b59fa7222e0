"""The daemon's engine: concurrent parts joined by queues.

```
 collectors (each its own task)          strategy (its own task)            executors
 heads     HeadWatcher push (ws) / poll ─▶ Latest[Head] ─▶ Keeper.cycle:      ─▶ batch tasks: simulate, sign,
           + read_head                      (a newer head     sync + refresh       send, track (beside the loop)
                                             supersedes one   (every adapter at
                                             not taken yet)   once, our sends'
 pending   PendingWatcher (mempool) ──────▶ Queue[PendingTx] ─▶ Keeper.react:      tracking beside), rank,
 oracle updates                                                 re-price exposed    select
                                                                accounts at the
                                                                pending answer ─────▶ sends behind the update
```

The head collector never waits for a cycle: while one runs it keeps reading heads, and
the strategy takes the newest when it is free (one cycle at a time, no pile-up). The
reactions to pending oracle updates run beside both. Errors: an RPC failure in either part
is logged (`rpc_error`, bounded exponential backoff), an outage is reported once when it
ends (`rpc_recovered`); any other error in a cycle is logged (`cycle_error`) and the same
head is tried again after the backoff unless a newer one came; a ConfigError ends the run.
`once`: one cycle, and failures are raised instead of retried for ever.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import ConfigError, RpcError, TransientError

if TYPE_CHECKING:
    from .app import Keeper
    from .types import Head

T = TypeVar("T")
MAX_BACKOFF_S = 30.0


class Latest(Generic[T]):
    """A queue of one: put() replaces what was not taken yet."""

    def __init__(self) -> None:
        self._item: T | None = None
        self._ready = asyncio.Event()

    def put(self, item: T) -> None:
        self._item = item
        self._ready.set()

    def put_if_empty(self, item: T) -> None:
        if not self._ready.is_set():
            self.put(item)

    async def get(self) -> T:
        await self._ready.wait()
        self._ready.clear()
        item, self._item = self._item, None
        assert item is not None
        return item


class _Outage:
    """RPC trouble shared by the parts: each failure logged with its retry, the recovery once."""

    def __init__(self, log: Any):
        self.log = log
        self.since: float | None = None
        self.errors = 0

    def failed(self, e: Exception, retry_in_s: float) -> None:
        if self.since is None:
            self.since = time.monotonic()
        self.errors += 1
        self.log.warning("rpc_error", error=str(e), retry_in_s=round(retry_in_s, 2), errors=self.errors)

    def ok(self) -> None:
        if self.since is not None:
            self.log.warning("rpc_recovered", outage_s=round(time.monotonic() - self.since, 1), errors=self.errors)
            self.since, self.errors = None, 0


class Engine:
    def __init__(self, keeper: Keeper, once: bool = False, max_cycles: int | None = None):
        self.k = keeper
        self.once = once
        self.max_cycles = max_cycles
        self.heads: Latest[Head] = Latest()
        self.outage = _Outage(keeper.log)
        self.head_wait_s = keeper.cfg.chain.poll_interval_s  # the collector's next wait (backoff in outages)

    async def run(self) -> None:
        k = self.k
        if k.cfg.chain.watch_pending and k._watch_task is None:  # beside the loop: never delays a cycle
            k._watch_task = asyncio.create_task(k._watch_pending(), name="pending-setup")
        parts = [asyncio.create_task(self._collect_heads(), name="heads"),
                 asyncio.create_task(self._strategy(), name="strategy")]
        stop = asyncio.ensure_future(k.stop_event.wait())
        try:
            done, _ = await asyncio.wait({*parts, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (*parts, stop):
                t.cancel()
            results = await asyncio.gather(*parts, return_exceptions=True)
            if k.executor is not None:
                await k.executor.stop()
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError):
                raise r

    # -- the head collector -----------------------------------------------------------
    async def _collect_heads(self) -> None:
        k = self.k
        poll = k.cfg.chain.poll_interval_s
        backoff = poll
        last: tuple[int, str] | None = None
        while not k.stop_event.is_set():
            wait = poll
            try:
                await k._unless_stopped(k.rpc.check_heads())  # endpoints whose head lags are taken out
                head = await k._unless_stopped(k.read_head())
                if head is None:
                    return
                self.outage.ok()
                k.metrics.head(head.number, head.timestamp)
                if (head.number, head.hash) != last:
                    last = (head.number, head.hash)
                    self.heads.put(head)
                backoff = poll
            except (TransientError, RpcError) as e:
                self.outage.failed(e, backoff)
                k.after_cycle(None, None)  # no cycle completes in an outage: health and alerts see it
                wait = backoff
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                if self.once and backoff >= MAX_BACKOFF_S:
                    raise
            await k._until_next_head(wait)

    # -- the strategy -----------------------------------------------------------------
    async def _strategy(self) -> None:
        k = self.k
        poll = k.cfg.chain.poll_interval_s
        backoff = poll
        while not k.stop_event.is_set():
            head = await self.heads.get()
            started = time.monotonic()
            try:
                done = await k._unless_stopped(k.cycle(head, background=not self.once))
                if done is None:
                    return
                self.outage.ok()
                k._heartbeat(head, time.monotonic() - started)
                k.after_cycle(head, time.monotonic() - started)
                k.follow_sources()  # feeds of markets found since: into the pending watch
                if self.once or (self.max_cycles is not None and k.cycles >= self.max_cycles):
                    return
                backoff = poll
                continue
            except (TransientError, RpcError) as e:
                self.outage.failed(e, backoff)
                k.after_cycle(None, None)
                if self.once and backoff >= MAX_BACKOFF_S:
                    raise
            except ConfigError:
                raise
            except Exception as e:  # never a crash loop: log it, back off, carry on
                k.log.error("cycle_error", error=f"{e.__class__.__name__}: {e}", retry_in_s=round(backoff, 2),
                            exc_info=True)
                if self.once:
                    raise
            await k._unless_stopped(asyncio.sleep(backoff))
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            self.heads.put_if_empty(head)  # the same head again, unless a newer one came meanwhile
