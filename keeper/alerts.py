"""Alerts to a webhook: generic JSON, Slack or Discord.

    alerts = Alerts(url, style="slack", log=log)
    alerts.notify("paused", "sending paused by a safety limit", consecutive_failures=5)
    ...
    check(keeper, alerts, Thresholds(min_balance={"USDC": 1000.0}))   # after each cycle
    await alerts.close()

notify() never blocks the loop: the POST runs in a background task with a bounded timeout and
a failure is logged (`alert_failed`), never raised. The same kind and message are not sent
again within min_interval_s (so a condition that lasts is reported once per interval; keep
changing numbers in **fields**, not in the message), and at most `burst` alerts go out per
`burst_window_s` overall (the rest are logged as `alert_dropped`).

Bodies: json  {"kind", "message", "fields", "time"}
        slack {"text": "[keeper] kind: message (k=v, ...)"}
        discord {"content": same text}

Kinds: paused, low_balance, failed_sends, rpc_down, head_stalled (raised by check()), and
raced_miss (raised by the app where misses are classified).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

import aiohttp

from . import status
from .redact import redact_url

KINDS = ("paused", "low_balance", "failed_sends", "rpc_down", "head_stalled", "raced_miss")
STYLES = ("json", "slack", "discord")


class Alerts:
    def __init__(self, url: str | None, style: str = "json", log: Any = None, min_interval_s: float = 300.0,
                 timeout_s: float = 5.0, burst: int = 10, burst_window_s: float = 60.0, name: str = "keeper"):
        if style not in STYLES:
            raise ValueError(f"alerts style must be one of {STYLES}, not {style!r}")
        self.url = url or None
        self.style = style
        self.log = log
        self.min_interval_s = min_interval_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.burst = burst
        self.burst_window_s = burst_window_s
        self.name = name
        self._last: dict[tuple[str, str], float] = {}  # (kind, message) -> monotonic time sent
        self._sent_at: deque[float] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0  # delivered (2xx)
        self.failed = 0
        self.suppressed = 0  # de-duplicated or rate-limited

    def _logger(self) -> Any:
        if self.log is None:
            import structlog

            return structlog.get_logger()
        return self.log

    def body(self, kind: str, message: str, fields: Mapping[str, Any], when: float) -> dict[str, Any]:
        if self.style == "json":
            return {"kind": kind, "message": message, "fields": dict(fields), "time": when}
        text = f"[{self.name}] {kind}: {message}"
        if fields:
            text += " (" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")"
        return {"text": text} if self.style == "slack" else {"content": text[:2000]}

    def notify(self, kind: str, message: str, **fields: Any) -> bool:
        """Queue an alert; True if it will be posted (False: no URL, a duplicate within
        min_interval_s, or over the rate limit). Call from the event loop's thread."""
        now = time.monotonic()
        key = (kind, message)
        last = self._last.get(key)
        if last is not None and now - last < self.min_interval_s:
            self.suppressed += 1
            return False
        while self._sent_at and now - self._sent_at[0] > self.burst_window_s:
            self._sent_at.popleft()
        if len(self._sent_at) >= self.burst:
            self.suppressed += 1
            self._logger().warning("alert_dropped", kind=kind, message=message, reason="rate_limited")
            return False
        self._last[key] = now
        self._sent_at.append(now)
        self._logger().warning("alert", kind=kind, message=message, **fields)
        if self.url is None:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._logger().warning("alert_failed", kind=kind, error="no running event loop")
            return False
        task = loop.create_task(self._post(kind, self.body(kind, message, fields, time.time())))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def _post(self, kind: str, body: dict[str, Any]) -> None:
        assert self.url is not None
        try:
            async with self._sess().post(self.url, json=body) as resp:
                await resp.read()
                if resp.status >= 300:
                    raise RuntimeError(f"HTTP {resp.status}")
            self.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a webhook that is down must never matter to the keeper
            self.failed += 1
            err = "timed out" if isinstance(e, asyncio.TimeoutError) else f"{e.__class__.__name__}: {e}"
            self._logger().warning("alert_failed", kind=kind, url=redact_url(self.url), error=err.replace(self.url, "<url>"))

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for the posts under way (tests, shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def close(self, timeout_s: float = 2.0) -> None:
        await self.drain(timeout_s)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None and not self._session.closed:
            await self._session.close()


@dataclass(frozen=True)
class Thresholds:
    """When check() raises an alert.
    min_balance: token symbol (as status.wallet_balances names it: "USDC", "vatDAI", "ETH") ->
      the least balance in token units; failed_sends: this many failed sends in a row (mined and
      reverted, or refused) among the recent outcomes; head_stalled: health.HealthLimits
      (no cycle for stalled_s, or a head older than head_age_s)."""

    min_balance: Mapping[str, float] = field(default_factory=dict)
    failed_sends: int = 3
    limits: status.HealthLimits | None = None


def consecutive_failed(keeper: Any) -> int:
    """Failed sends in a row at the end of the executor's outcomes (skips not counted)."""
    ex = getattr(keeper, "executor", None)
    tx = getattr(ex, "tx", None)
    if tx is not None and isinstance(getattr(tx, "consecutive_failures", None), int):
        return tx.consecutive_failures
    n = 0
    for o in reversed(list(getattr(ex, "outcomes", ()) or ())):
        if o.status == "failed":
            n += 1
        elif o.status == "confirmed":
            break
    return n


def check(keeper: Any, alerts: Alerts, thresholds: Thresholds | None = None,
          now: float | None = None, wall: float | None = None) -> list[str]:
    """Inspect a keeper (after each cycle) and raise paused, low_balance, failed_sends,
    rpc_down, head_stalled when they apply. Returns the kinds that applied (whether or not
    they were sent again: notify de-duplicates)."""
    th = thresholds or Thresholds()
    now = time.monotonic() if now is None else now
    wall = time.time() if wall is None else wall
    raised: list[str] = []
    ex = getattr(keeper, "executor", None)
    if ex is not None and ex.paused:
        tx = getattr(ex, "tx", None)
        alerts.notify("paused", "sending is paused by a safety limit (the keeper keeps watching)",
                      consecutive_failures=getattr(tx, "consecutive_failures", None),
                      cooldown_s=status._cfg(keeper, "keeper", "pause_cooldown_s", None))
        raised.append("paused")
    balances = status.wallet_balances(keeper)
    for sym, least in th.min_balance.items():
        have = balances.get(sym)
        if have is not None and have < least:
            alerts.notify("low_balance", f"{sym} balance below {least:g}", symbol=sym, balance=have, minimum=least)
            if "low_balance" not in raised:
                raised.append("low_balance")
    failed = consecutive_failed(keeper)
    if th.failed_sends and failed >= th.failed_sends:
        alerts.notify("failed_sends", f"{th.failed_sends} or more sends failed in a row", failed=failed)
        raised.append("failed_sends")
    if status.rpc_all_down(keeper):
        alerts.notify("rpc_down", "every RPC endpoint is down",
                      endpoints=[f"{e['url']}: {e.get('reason') or 'down'}" for e in status.endpoints(keeper)])
        raised.append("rpc_down")
    last = getattr(keeper, "last_cycle_at", None)
    stall = status.stall_limit_s(keeper, th.limits)
    head = getattr(keeper, "head", None)
    age_limit = status.head_age_limit_s(keeper, th.limits)
    if last is not None and now - last > stall:
        alerts.notify("head_stalled", "no cycle completed within the stall limit", since_s=round(now - last, 1),
                      limit_s=stall, block=head.number if head else None)
        raised.append("head_stalled")
    elif head is not None and age_limit > 0 and wall - head.timestamp > age_limit:
        alerts.notify("head_stalled", "the chain head is older than the limit", block=head.number,
                      age_s=round(wall - head.timestamp, 1), limit_s=age_limit)
        raised.append("head_stalled")
    return raised
