"""Pending transactions to chosen contracts (oracle updates), seen before they are mined.

Block order on anvil (1.7.1, default `--order fees`; checked by
tests/test_pending_oracles.py::test_anvil_orders_pending_by_fee_cap_then_arrival): pending
transactions from different senders are mined highest FEE CAP first (maxFeePerGas for
EIP-1559, gasPrice for legacy), and the priority fee plays no part. Equal fee caps are mined
in arrival order, whatever the tips: a second transaction with the same tip, a lower tip or a
higher tip all land after the first. So on anvil a liquidation sent after the oracle update
with the same maxFeePerGas (any tip) lands right after it in the same block; a higher cap puts
it before the update, a lower one after it but possibly behind other transactions.
(Ethereum block builders order by effective tip and promise nothing about arrival order: there
the keeper needs a bundle [update, liquidation] to be sure.)

    watcher = PendingWatcher(rpc, log, targets=feed_map.targets)   # a callable or a set
    await watcher.start()      # never raises: creates the filter (or logs why it cannot)
    tx = await watcher.queue.get()                                  # keeper.oracles.PendingTx
    decode_update(tx.to, tx.input)                                  # -> (aggregator, answer)
    await watcher.close()

How it follows the mempool: `eth_newPendingTransactionFilter`, then `eth_getFilterChanges`
every `poll_interval_s`; the new hashes' bodies in one JSON-RPC batch of
`eth_getTransactionByHash`; for those whose `to` is a target (or that call a target through a
Chainlink forwarder's forward(to, data), see keeper.oracles.call_targets) one batch of
`eth_getRawTransactionByHash` (raw kept only when keccak(raw) is the hash: anvil's
impersonated transactions have no real signature). Each matching transaction is queued once.

- A filter the node forgot ("filter not found": anvil drops filters not polled for 5 minutes)
  is recreated (`pending_filter_lost`, logged once as info, then debug). Transactions that
  arrived while there was no filter are not seen.
- A node that refuses pending filters (hosted RPCs often do), or forgets the filter at once
  three times in a row (a load balancer spreading polls over nodes), makes the watcher log
  `pending_unavailable` once with a hint and stop: `mode` becomes "off"; the keeper goes on
  with new blocks.
- Transient errors (transport, bad answers, other JSON-RPC errors): `pending_poll_failed`
  logged once per outage (then debug), exponential backoff up to `max_backoff_s`, and
  `pending_poll_recovered` when a poll works again. Hashes whose bodies could not be read are
  kept (bounded) and read on the next poll; a body the node does not have yet (null) is asked
  for once more.
- Cheap: hashes already seen are remembered in a bounded insertion-ordered dict (oldest
  forgotten first); only matching transactions cost a second request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, Callable, Iterable

from eth_utils import keccak

from ..errors import BadResponseError, RpcError, TransientError
from ..oracles import PendingTx, call_targets

MAX_SEEN = 100_000  # hashes remembered (mainnet: roughly 20-60 minutes of public mempool)
MAX_BACKLOG = 20_000  # hashes whose bodies are still to read
LOST_IN_A_ROW = 3  # "filter not found" this many times without one good poll: filters do not work here
_HASH_LEN = 66
_UNSUPPORTED_WORDS = ("not found", "not supported", "unsupported", "does not exist", "not available",
                      "unavailable", "not allowed", "disabled", "unknown method", "method not", "forbidden",
                      "not whitelisted", "not implemented")
_TRANSIENT_WORDS = ("rate", "limit", "too many", "capacity", "timeout", "timed out", "busy", "try again",
                    "temporar", "overload")
HINT = ("this RPC does not serve pending-transaction filters (hosted RPCs often refuse them, or spread "
        "polls over nodes that do not share filters): point the keeper at a node of your own (geth, reth, "
        "erigon, nethermind, anvil) to see oracle updates before they are mined; it goes on reacting to "
        "new blocks only")


class _Unavailable(Exception):
    """Pending filters cannot be used on this node: the reason."""


def _refuses_method(e: RpcError) -> bool:
    """A JSON-RPC error to eth_newPendingTransactionFilter that means "not here" (method not
    found, not supported, disabled ...) rather than "not now" (rate limit, busy)."""
    m = e.rpc_message.lower()
    if any(w in m for w in _TRANSIENT_WORDS):
        return False
    return e.code in (-32601, -32600, -32604) or any(w in m for w in _UNSUPPORTED_WORDS)


def _filter_gone(e: RpcError) -> bool:
    m = e.rpc_message.lower()
    return "filter" in m and ("not found" in m or "does not exist" in m or "expired" in m or "unknown" in m)


class PendingWatcher:
    """Follows the node's pending transactions; queues (`queue`) each PendingTx whose `to` is
    in `targets` (a set, or a callable returning one, read at every poll) once. `mode` is
    "filter" while a filter is installed and polled (through transient errors too), "off"
    before start, after close and when the node cannot serve pending filters (`reason` says
    why). Counters: `seen` (distinct hashes), `matched` (queued), `fetched`, `errors`,
    `dropped`, `filters_created`."""

    def __init__(self, rpc: Any, log: Any, targets: Callable[[], Iterable[str]] | Iterable[str],
                 poll_interval_s: float = 0.05, *, max_seen: int = MAX_SEEN, queue_size: int = 10_000,
                 max_backoff_s: float = 5.0, match_forwarded: bool = True, ws_url: str | None = None):
        if log is None:
            import structlog

            log = structlog.get_logger()
        self.rpc = rpc
        self.log = log
        self._targets = targets
        self.poll_interval_s = max(poll_interval_s, 0.0)
        self.max_seen = max(max_seen, 1)
        self.max_backoff_s = max(max_backoff_s, 0.01)
        self.match_forwarded = match_forwarded
        self.queue: asyncio.Queue[PendingTx] = asyncio.Queue(maxsize=queue_size)
        self.mode = "off"
        self.reason: str | None = None
        self.seen = 0
        self.matched = 0
        self.fetched = 0
        self.errors = 0
        self.dropped = 0
        self.filters_created = 0
        self._filter: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._seen: dict[str, None] = {}
        self._backlog: list[tuple[str, float]] = []  # (hash, when it was first seen)
        self._null_once: set[str] = set()  # bodies the node did not have at the first ask
        self._lost_in_a_row = 0
        self._lost_logged = False
        self._raw_ok = True
        self._full_logged = False
        self._malformed_logged = False
        self._failing = False
        # with ws_url: new pending hashes pushed by eth_subscribe("newPendingTransactions") wake
        # the loop at once (the filter polling goes on beside it, as the fallback)
        self.ws_url = ws_url
        self.pushed = 0
        self._wake = asyncio.Event()
        self._ws_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------
    async def start(self) -> None:
        """Create the filter and start polling in the background. Never raises: a node that
        refuses pending filters is logged (`pending_unavailable`) and leaves `mode` "off"; a
        transient failure is logged and retried by the background task."""
        if self._task is not None and not self._task.done():
            return
        try:
            await self._new_filter()
        except _Unavailable as e:
            self._unavailable(str(e))
            return
        except (TransientError, RpcError) as e:
            self._failed(e, self.poll_interval_s)
        self._task = asyncio.create_task(self._run(), name="pending-watcher")
        if self.ws_url and self._ws_task is None:
            self._ws_task = asyncio.create_task(self._push(), name="pending-push")

    async def close(self) -> None:
        ws_task, self._ws_task = self._ws_task, None
        if ws_task is not None:
            ws_task.cancel()
            await asyncio.gather(ws_task, return_exceptions=True)
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        fid, self._filter = self._filter, None
        if fid is not None:  # best effort, never long: the node forgets it anyway
            try:
                await asyncio.wait_for(self.rpc.call("eth_uninstallFilter", [fid]), 1.0)
            except Exception:
                pass
        self.mode = "off"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def stats(self) -> dict[str, Any]:
        return {"mode": self.mode, "reason": self.reason, "seen": self.seen, "matched": self.matched,
                "fetched": self.fetched, "errors": self.errors, "dropped": self.dropped,
                "filters_created": self.filters_created, "queued": self.queue.qsize()}

    # -- the loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.0
        while True:
            try:
                if self._filter is None:
                    await self._new_filter()
                await self._poll()
                if self._failing:
                    self._failing = False
                    self.log.info("pending_poll_recovered")
                backoff = 0.0
                while await self._pushed_or_timeout(self.poll_interval_s):
                    await self._read_backlog()  # pushed hashes: their bodies now, the filter later
            except asyncio.CancelledError:
                raise
            except _Unavailable as e:
                self._unavailable(str(e))
                return
            except (TransientError, RpcError) as e:
                backoff = min(max(2 * backoff, self.poll_interval_s, 0.05), self.max_backoff_s)
                self._failed(e, backoff)
                await asyncio.sleep(backoff)
            except Exception as e:  # a bug here must not end pending watching silently, nor spin
                backoff = min(max(2 * backoff, self.poll_interval_s, 0.05), self.max_backoff_s)
                self.errors += 1
                self.log.error("pending_watcher_error", error=f"{e.__class__.__name__}: {e}", exc_info=True)
                await asyncio.sleep(backoff)

    async def _pushed_or_timeout(self, timeout_s: float) -> bool:
        """Wait for the poll interval; True early when the websocket pushed new hashes."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout_s)
        except asyncio.TimeoutError:
            return False
        self._wake.clear()
        return True

    async def _push(self) -> None:
        """Pending hashes pushed over the websocket; reconnects with a bounded backoff. Never
        raises: without it the filter polling still sees everything, a little later."""
        import json

        import aiohttp

        from ..redact import redact_url

        delay, logged = 0.5, False
        while True:
            try:
                async with aiohttp.ClientSession() as session, session.ws_connect(self.ws_url, autoping=True) as ws:
                    await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe",
                                                  "params": ["newPendingTransactions"]}))
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        obj = json.loads(msg.data) if len(msg.data) < 100_000 else None
                        if not isinstance(obj, dict):
                            continue
                        if obj.get("id") == 1:
                            if "error" in obj:
                                raise ValueError(f"eth_subscribe refused: {str(obj['error'])[:120]}")
                            self.log.info("pending_push_up", url=redact_url(self.ws_url))
                            delay, logged = 0.5, False
                            continue
                        h = (obj.get("params") or {}).get("result") if isinstance(obj.get("params"), dict) else None
                        if type(h) is str and len(h) == _HASH_LEN and h.startswith("0x"):
                            h = h.lower()
                            if h not in self._seen:
                                self._remember(h)
                                self._backlog.append((h, time.monotonic()))
                                self.pushed += 1
                                self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - polling covers it meanwhile
                if not logged:
                    logged = True
                    self.log.warning("pending_push_down", url=redact_url(self.ws_url), error=str(e)[:200],
                                     note="pending transactions are still seen by polling the filter")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _failed(self, e: Exception, retry_in_s: float) -> None:
        self.errors += 1
        if not self._failing:
            self._failing = True
            self.log.warning("pending_poll_failed", error=str(e)[:300], retry_in_s=round(retry_in_s, 3))
        else:
            self.log.debug("pending_poll_failed", error=str(e)[:300], retry_in_s=round(retry_in_s, 3))

    def _unavailable(self, reason: str) -> None:
        self.mode = "off"
        self._filter = None
        if self.reason is None:
            self.reason = reason
            self.log.warning("pending_unavailable", reason=reason, hint=HINT)

    async def _new_filter(self) -> None:
        try:
            fid = await self.rpc.call("eth_newPendingTransactionFilter", [])
        except RpcError as e:
            if _refuses_method(e):
                raise _Unavailable(f"eth_newPendingTransactionFilter refused: {e.rpc_message[:200]} "
                                   f"(code {e.code})") from None
            raise
        if type(fid) is not str or not fid.startswith("0x") or not 2 < len(fid) <= 130:
            raise BadResponseError(f"eth_newPendingTransactionFilter: expected a filter id, got {str(fid)[:80]!r}")
        self._filter = fid
        self.filters_created += 1
        self.mode = "filter"
        self.reason = None

    async def _poll(self) -> None:
        assert self._filter is not None
        try:
            res = await self.rpc.call("eth_getFilterChanges", [self._filter])
        except RpcError as e:
            if not _filter_gone(e):
                raise
            self._filter = None
            self._lost_in_a_row += 1
            if self._lost_in_a_row >= LOST_IN_A_ROW:
                raise _Unavailable(f"the node forgot the pending filter {self._lost_in_a_row} times in a row "
                                   f"({e.rpc_message[:120]}): a load-balanced RPC?") from None
            if not self._lost_logged:
                self._lost_logged = True
                self.log.info("pending_filter_lost", error=e.rpc_message[:200], action="recreating the filter")
            else:
                self.log.debug("pending_filter_lost", error=e.rpc_message[:200], action="recreating the filter")
            await self._read_backlog()  # hashes already seen are still worth reading
            return
        if type(res) is not list:
            raise BadResponseError(f"eth_getFilterChanges: expected a list, got {str(res)[:80]!r}")
        self._lost_in_a_row = 0
        now = time.monotonic()
        full: list[Any] = []
        for item in res:
            if type(item) is str:
                if len(item) != _HASH_LEN or not item.startswith("0x"):
                    self._malformed(f"not a transaction hash: {item[:80]!r}")
                    continue
                h = item.lower()
                if h in self._seen:
                    continue
                self._remember(h)
                self._backlog.append((h, now))
            elif type(item) is dict:  # nodes asked for (or giving) full transactions
                full.append(item)
            else:
                self._malformed(f"not a transaction hash: {str(item)[:80]!r}")
        if len(self._backlog) > MAX_BACKLOG:
            cut = len(self._backlog) - MAX_BACKLOG
            del self._backlog[:cut]
            self.dropped += cut
            if len(self._null_once) > MAX_BACKLOG:
                self._null_once.clear()
        if full:
            self._offer_full(full, now)
        await self._read_backlog()

    def _remember(self, h: str) -> None:
        self._seen[h] = None
        self.seen += 1
        if len(self._seen) > self.max_seen:
            del self._seen[next(iter(self._seen))]

    def _malformed(self, what: str) -> None:
        self.errors += 1
        if not self._malformed_logged:
            self._malformed_logged = True
            self.log.warning("pending_tx_malformed", error=what[:300])
        else:
            self.log.debug("pending_tx_malformed", error=what[:300])

    def _target_set(self) -> set[str]:
        t = self._targets() if callable(self._targets) else self._targets
        return {a.lower() for a in t}

    def _matches(self, tx: PendingTx, targets: set[str]) -> bool:
        if tx.to is None:
            return False
        if tx.to in targets:
            return True
        if self.match_forwarded and len(tx.input) >= 4:
            return any(t in targets for t in call_targets(tx.to, tx.input)[1:])
        return False

    def _offer_full(self, items: list[Any], now: float) -> None:
        """Full transaction objects straight from the filter: no second request for the body."""
        targets = self._target_set()
        for obj in items:
            try:
                tx = PendingTx.from_rpc(obj, seen_at=now)
            except BadResponseError as e:
                self._malformed(str(e))
                continue
            if tx is None or tx.hash in self._seen:
                continue
            self._remember(tx.hash)
            self.fetched += 1
            if self._matches(tx, targets):
                self._put(tx)  # no raw without another request: the loop keeps it cheap

    async def _read_backlog(self) -> None:
        if not self._backlog:
            return
        todo, self._backlog = self._backlog, []
        try:
            results = await self.rpc.batch([("eth_getTransactionByHash", [h]) for h, _ in todo], return_errors=True)
        except BaseException:
            self._backlog = todo + self._backlog
            raise
        targets: set[str] | None = None
        matched: list[PendingTx] = []
        for (h, t0), res in zip(todo, results):
            if isinstance(res, RpcError):
                self.errors += 1
                self.log.debug("pending_tx_unreadable", tx=h, error=str(res)[:200])
                continue
            if res is None:
                if h not in self._null_once:  # not there yet (or dropped): ask once more
                    self._null_once.add(h)
                    self._backlog.append((h, t0))
                else:
                    self._null_once.discard(h)
                continue
            self._null_once.discard(h)
            try:
                tx = PendingTx.from_rpc(res, seen_at=t0)
                if tx is not None and tx.hash != h:
                    raise BadResponseError(f"eth_getTransactionByHash({h}): answered for {tx.hash}")
            except BadResponseError as e:
                self._malformed(str(e))
                continue
            if tx is None:
                continue
            self.fetched += 1
            if targets is None:
                targets = self._target_set()
            if self._matches(tx, targets):
                matched.append(tx)
        if matched:
            raws = await self._raws([tx.hash for tx in matched])
            for tx, raw in zip(matched, raws):
                self._put(dataclasses.replace(tx, raw=raw) if raw is not None else tx)

    async def _raws(self, hashes: list[str]) -> list[bytes | None]:
        """The signed raw transactions (None each where the node does not give one, or gives
        one that does not hash to the transaction's hash). Never raises: a match is queued
        with or without its raw bytes."""
        if not self._raw_ok:
            return [None] * len(hashes)
        for attempt in (1, 2):  # a relay bundle needs the raw bytes: one retry on a transient failure
            try:
                results = await self.rpc.batch([("eth_getRawTransactionByHash", [h]) for h in hashes],
                                               return_errors=True)
                break
            except (TransientError, RpcError) as e:
                self.log.debug("pending_raw_failed", error=str(e)[:200], attempt=attempt)
        else:
            return [None] * len(hashes)
        out: list[bytes | None] = []
        for h, res in zip(hashes, results):
            raw: bytes | None = None
            if isinstance(res, RpcError):
                if _refuses_method(res) and self._raw_ok:
                    self._raw_ok = False
                    self.log.info("pending_raw_unavailable", error=res.rpc_message[:200],
                                  note="pending transactions are queued without their signed raw bytes")
            elif type(res) is str and res.startswith("0x") and len(res) > 2:
                try:
                    data = bytes.fromhex(res[2:])
                except ValueError:
                    data = b""
                if data and "0x" + keccak(data).hex() == h:
                    raw = data
            out.append(raw)
        return out

    def _put(self, tx: PendingTx) -> None:
        try:
            self.queue.put_nowait(tx)
        except asyncio.QueueFull:
            self.dropped += 1
            if not self._full_logged:
                self._full_logged = True
                self.log.warning("pending_queue_full", size=self.queue.maxsize, tx=tx.hash,
                                 note="the consumer does not keep up; newer matches are dropped")
            return
        self.matched += 1


async def resolve_aggregator(rpc: Any, source: str) -> str:
    """The aggregator behind a Chainlink proxy (`aggregator()`), for FeedMap.add(source,
    aggregator); `source` itself when it has no such function (it is the aggregator, or a
    protocol adapter). Transport errors propagate (TransientError)."""
    try:
        out = await rpc.eth_call(source, bytes.fromhex("245a7bfc"))  # aggregator()
    except RpcError:
        return source.lower()
    if len(out) != 32 or any(out[:12]) or not any(out[12:]):
        return source.lower()
    return "0x" + out[12:].hex()
