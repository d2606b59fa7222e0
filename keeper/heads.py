"""New heads pushed over a websocket (eth_subscribe "newHeads"), with polling as the fallback.

The watcher only says *that* a new head exists; the loop then reads the head itself with one
eth_getBlockByNumber through the normal Rpc (one source of truth: failover, lag checks and
reorg detection stay where they are).

    heads = HeadWatcher(cfg.chain.ws_url, cfg.chain.poll_interval_s, log)
    await heads.start()               # never raises for a bad socket: logs and polls
    ...
    if await heads.wait(poll):        # True as soon as a head was pushed; False after the timeout
        ...
    await heads.close()

- mode "websocket": subscribed; wait(timeout_s) returns True when a notification arrived
  since the last wait (at once if one is pending), else False after timeout_s.
- mode "polling": no URL, a URL that is not ws(s)://, or the socket is down; wait() returns
  False after min(timeout_s, poll_interval_s): the loop polls as it always did.
- The socket dropping (close, error, refused subscription) is logged once per outage as
  `head_source_down` (warning; URL redacted), retried in the background with exponential
  backoff up to `reconnect_max_s` (each failed retry is a debug line), and `head_source_up`
  (info) is logged when it is subscribed again.
- Stalls: a provider can keep the socket open and stop pushing. After `stall_s` (default
  max(30 s, 10 x poll interval)) without a notification the watcher asks the socket itself
  for eth_blockNumber: no answer within `probe_timeout_s`, or a node ahead of the last pushed
  head, is a drop (reason "stalled"); an answer at the same height is an idle chain (e.g. a
  devnet that mines only on demand) and the socket is kept.
- Untrusted input: every frame is size-limited (`max_msg_size`), parsed with the nesting
  guard of keeper.rpc.parse_json and dropped unless it is exactly a notification of our
  subscription with a hex `params.result.number`; nothing is queued (a pending head is one
  flag), so a flood of frames costs time, not memory.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from .redact import redact_url, scrub
from .rpc import parse_json

MAX_MSG_BYTES = 1 << 20  # a newHeads notification is ~1-2 KB; anything bigger is not one
FIRST_RETRY_S = 0.5


class _Down(Exception):
    """The socket cannot be used (any more): the reason, for the log."""


def _hex_int(value: Any) -> int | None:
    if not isinstance(value, str) or not value.startswith("0x") or not 2 < len(value) <= 66:
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None


class HeadWatcher:
    """Wakes the loop when a new head exists: eth_subscribe("newHeads") over a websocket when
    a ws(s):// URL is configured and works, else (and whenever the socket drops) polling."""

    def __init__(self, ws_url: str | None, poll_interval_s: float, log: Any, *, reconnect_max_s: float = 30.0,
                 stall_s: float | None = None, probe_timeout_s: float = 10.0, connect_timeout_s: float = 10.0,
                 start_wait_s: float = 5.0, max_msg_size: int = MAX_MSG_BYTES):
        self.ws_url = ws_url.strip() if ws_url else None
        self.redacted = redact_url(self.ws_url) if self.ws_url else None
        self.poll_interval_s = poll_interval_s
        if log is None:
            import structlog

            log = structlog.get_logger()
        self.log = log
        self.reconnect_max_s = max(reconnect_max_s, 0.01)
        self.stall_s = stall_s if stall_s is not None else max(30.0, 10 * poll_interval_s)
        self.probe_timeout_s = probe_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.start_wait_s = start_wait_s
        self.max_msg_size = max_msg_size
        self._mode = "polling"
        self._pending = False  # a head was announced since the last wait() that returned True
        self._wake = asyncio.Event()  # set on a new head or a change of mode
        self._attempted = asyncio.Event()  # the first connection attempt is over (either way)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._ids = 0
        # for status views and tests
        self.last_number: int | None = None  # the number of the last head pushed
        self.heads = 0  # notifications accepted
        self.ignored = 0  # frames dropped as malformed or not ours
        self.drops = 0  # outages (each logged once as head_source_down)
        self.last_error: str | None = None

    @property
    def mode(self) -> str:
        """"websocket" while subscribed, else "polling"."""
        return self._mode

    # -- life cycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start the background connection. Waits (at most start_wait_s) for the first attempt,
        so the keeper starts in a known mode; never raises for a bad URL or socket."""
        if self._task is not None or self._closed:
            return
        if not self.ws_url:
            return
        if not self.ws_url.lower().startswith(("ws://", "wss://")):
            self.last_error = "not a ws:// or wss:// URL"
            self.log.warning("head_source_down", url=self.redacted, error=self.last_error, mode="polling",
                             hint="new heads are polled every poll_interval_s")
            return
        self._task = asyncio.get_running_loop().create_task(self._run(), name="head-watcher")
        try:
            await asyncio.wait_for(self._attempted.wait(), timeout=self.start_wait_s)
        except asyncio.TimeoutError:
            pass  # still connecting: polling meanwhile

    async def close(self) -> None:
        """End the background task and the socket; wait() then only times out."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        self._set_mode("polling")

    async def __aenter__(self) -> "HeadWatcher":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- the loop's side ------------------------------------------------------------------
    async def wait(self, timeout_s: float) -> bool:
        """True as soon as a new head was announced since the last wait (at once if one is
        pending); False after timeout_s without one (after at most poll_interval_s while
        polling, also when the socket drops during the wait)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + max(timeout_s, 0.0)
        while True:
            if self._pending:
                self._pending = False
                return True
            limit = deadline if self._mode == "websocket" else min(deadline, start + self.poll_interval_s)
            remaining = limit - loop.time()
            if remaining <= 0:
                return False
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=remaining)
            except asyncio.TimeoutError:
                pass

    # -- internals ------------------------------------------------------------------------
    def _set_mode(self, mode: str) -> None:
        if mode != self._mode:
            self._mode = mode
            self._wake.set()

    def _announce(self, number: int) -> None:
        self.last_number = number
        self.heads += 1
        self._pending = True
        self._wake.set()

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def _run(self) -> None:
        delay = min(FIRST_RETRY_S, self.reconnect_max_s)
        down_since: float | None = None
        attempts = 0
        timeout = aiohttp.ClientTimeout(total=None, connect=self.connect_timeout_s,
                                        sock_connect=self.connect_timeout_s)
        session = aiohttp.ClientSession(timeout=timeout)
        try:
            while not self._closed:
                attempts += 1
                subscribed_at: list[float] = []
                try:
                    await self._session_once(session, subscribed_at, down_since, attempts)
                    reason = "closed by the server"
                except asyncio.CancelledError:
                    raise
                except _Down as e:
                    reason = str(e)
                except asyncio.TimeoutError:
                    reason = f"no answer within {self.connect_timeout_s:g}s"
                except (aiohttp.ClientError, OSError, ValueError) as e:
                    reason = scrub(f"{e.__class__.__name__}: {e}")
                except Exception as e:  # never let the watcher die: it would silently leave polling forever
                    reason = scrub(f"{e.__class__.__name__}: {e}")
                    self.log.error("head_source_error", url=self.redacted, error=reason, exc_info=True)
                self._set_mode("polling")
                self.last_error = reason
                self._attempted.set()
                if subscribed_at:  # it worked for a while: a new outage, start the backoff again
                    delay = min(FIRST_RETRY_S, self.reconnect_max_s)
                    down_since, attempts = None, 0
                if down_since is None:
                    down_since = time.monotonic()
                    self.drops += 1
                    self.log.warning("head_source_down", url=self.redacted, error=reason, mode="polling",
                                     retry_in_s=round(delay, 2))
                else:
                    self.log.debug("head_source_retry", url=self.redacted, error=reason, attempts=attempts,
                                   retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.reconnect_max_s)
        finally:
            self._set_mode("polling")
            await session.close()

    async def _session_once(self, session: aiohttp.ClientSession, subscribed_at: list[float],
                            down_since: float | None, attempts: int) -> None:
        """One connection: subscribe, then announce heads until it drops (returns or raises)."""
        assert self.ws_url is not None
        async with session.ws_connect(self.ws_url, max_msg_size=self.max_msg_size, autoping=True,
                                      timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0)) as ws:
            sub_rid, base_rid = self._next_id(), self._next_id()
            await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": sub_rid, "method": "eth_subscribe",
                                          "params": ["newHeads"]}))
            await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": base_rid, "method": "eth_blockNumber",
                                          "params": []}))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.connect_timeout_s
            sub_id: str | None = None
            base: int | None = None  # the node's height when we subscribed, if it answered first
            while sub_id is None:
                msg = await self._receive(ws, deadline - loop.time())
                if msg is None:
                    raise _Down(f"no answer to eth_subscribe within {self.connect_timeout_s:g}s")
                reply = self._reply(msg)
                if reply is not None and reply.get("id") == base_rid:
                    base = _hex_int(reply.get("result"))
                if reply is None or reply.get("id") != sub_rid:
                    continue
                if "error" in reply:
                    raise _Down(scrub(f"eth_subscribe refused: {str(reply['error'])[:200]}"))
                if not isinstance(reply.get("result"), str) or not reply["result"]:
                    raise _Down(scrub(f"eth_subscribe: malformed answer {str(reply)[:120]!r}"))
                sub_id = reply["result"]
            subscribed_at.append(time.monotonic())
            self.last_error = None
            self._set_mode("websocket")
            self._attempted.set()
            if down_since is not None:
                self.log.info("head_source_up", url=self.redacted, down_for_s=round(time.monotonic() - down_since, 1),
                              attempts=attempts)
            else:
                self.log.info("head_source_up", url=self.redacted)
            await self._follow(ws, sub_id, base_rid, base)

    async def _follow(self, ws: aiohttp.ClientWebSocketResponse, sub_id: str, base_rid: int, known: int | None) -> None:
        """Announce every head pushed on this connection until it drops. `known`: the latest
        height this connection told us of (a pushed head or an eth_blockNumber answer), to
        tell a stalled subscription (the node is ahead) from an idle chain (it is not)."""
        loop = asyncio.get_running_loop()
        quiet_until = loop.time() + self.stall_s  # a head or an idle-chain answer pushes it on
        probe_rid: int | None = None  # the eth_blockNumber sent after stall_s of silence
        deadline: float | None = None  # drop at this time unless a head arrives
        why = ""
        grace = min(2.0, self.probe_timeout_s)
        while True:
            now = loop.time()
            if deadline is None and now >= quiet_until:
                probe_rid = self._next_id()
                deadline = now + self.probe_timeout_s
                why = f"stalled: nothing pushed for {self.stall_s:g}s and no answer for {self.probe_timeout_s:g}s"
                await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": probe_rid, "method": "eth_blockNumber",
                                              "params": []}))
            if deadline is not None and now >= deadline:
                raise _Down(why)
            msg = await self._receive(ws, (deadline if deadline is not None else quiet_until) - now)
            if msg is None:
                continue
            obj = self._parse(msg)
            if obj is None:
                continue
            number = self._notification(obj, sub_id)
            if number is not None:
                self._announce(number)
                known = number
                quiet_until, probe_rid, deadline = loop.time() + self.stall_s, None, None
                continue
            rid = obj.get("id")
            n = _hex_int(obj.get("result")) if rid is not None and rid in (base_rid, probe_rid) else None
            if n is None:  # not ours, or an error / garbage answer (a probe then counts as unanswered)
                self.ignored += 1
                continue
            if rid == base_rid:
                known = n if known is None else known
                continue
            probe_rid = None
            if known is not None and n > known:
                # the node is ahead of what was pushed: a stalled subscription, unless the
                # notification is just behind this answer (a head mined at the probe's moment)
                deadline = loop.time() + grace
                why = f"stalled: node at block {n}, last pushed {known}, nothing pushed for {self.stall_s:g}s"
                continue
            known = n  # an idle chain: the socket answers, keep it
            quiet_until, deadline = loop.time() + self.stall_s, None

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse, timeout_s: float) -> Any:
        """The next data frame, None on timeout; a closed or failed socket raises _Down."""
        try:
            msg = await ws.receive(timeout=max(timeout_s, 0.001))
        except asyncio.TimeoutError:
            return None
        if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return msg.data
        if msg.type == aiohttp.WSMsgType.ERROR:
            raise _Down(scrub(f"socket error: {msg.data!r}"[:200]))
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
            code = ws.close_code
            raise _Down(f"closed by the server (code {code})" if code else "connection closed")
        return None  # PING/PONG/CONTINUATION: aiohttp handles them

    def _parse(self, data: Any) -> dict[str, Any] | None:
        try:
            obj = parse_json(data)
        except (ValueError, RecursionError, TypeError):  # incl. UnicodeDecodeError
            self.ignored += 1
            return None
        if not isinstance(obj, dict):
            self.ignored += 1
            return None
        return obj

    def _reply(self, data: Any) -> dict[str, Any] | None:
        obj = self._parse(data)
        if obj is None or "id" not in obj:
            return None
        return obj

    @staticmethod
    def _notification(obj: dict[str, Any], sub_id: str) -> int | None:
        """The block number of a newHeads notification of our subscription, else None."""
        if obj.get("method") != "eth_subscription":
            return None
        params = obj.get("params")
        if not isinstance(params, dict) or params.get("subscription") != sub_id:
            return None
        result = params.get("result")
        if not isinstance(result, dict):
            return None
        return _hex_int(result.get("number"))
