"""A lean JSON-RPC client on aiohttp, with failover across several endpoints.

One HTTP session, raw JSON-RPC objects, batches as one POST of a JSON array.
Anything that is not a well-formed JSON-RPC answer raises BadResponseError
(a TransientError: the caller retries later); a JSON-RPC error object raises
RpcError with the node's code, message and revert data.

Several endpoints (`Rpc([url1, url2, ...])`):
- Each request goes to the first healthy endpoint in configured order (the operator's
  priority order: predictable, and free on the hot path; no latency bookkeeping).
- An endpoint that fails at transport level (timeout, connection refused or reset, HTTP 5xx
  or 429, non-JSON or malformed JSON-RPC answer) is taken out (logged once as
  `rpc_endpoint_down`) and the same request is retried once on the next healthy endpoint
  (if none is healthy, on the next one anyway). A JSON-RPC error object is the node's answer,
  not an endpoint failure: it is raised as RpcError, without retry.
- An endpoint that is out is probed in the background (eth_chainId, then eth_blockNumber) once
  per `probe_interval_s`, triggered by the traffic itself (no timer task); when it is on the
  chain connect() found and answers (and does not lag the last best head) it is back
  (`rpc_endpoint_up`) and, being earlier in the order, used again. On another chain it stays
  out (`rpc_endpoint_wrong_chain`, an error, logged once per change). A request never waits for
  a probe. Only endpoints whose chain id was seen to match are ever used.
- All endpoints out: every endpoint is tried anyway, in order; TransientError if all fail.
- A broadcast goes to every healthy endpoint: accepted (or "already known") by one = sent; refused
  by some while another failed in a way that says nothing (timeout, reset, HTTP error, garbage)
  = MaybeSentError (a TransientError: maybe sent); refused by every endpoint asked = RpcError.
- `check_heads()` compares eth_blockNumber across endpoints and takes out laggards;
  `connect()` checks every endpoint's chain id; `send_raw_transaction()` broadcasts to all.

With one endpoint (`Rpc(url)`) a request costs what it always did: one POST, no probes, no
logging (errors are raised to the caller as before; the state is still shown by
`endpoints_status()`).

Request size (`max_batch_calls`, `max_request_bytes`, `max_concurrent_requests`): `batch()`
cuts a long batch into HTTP requests of at most that many JSON-RPC calls and bytes of body,
at most `max_concurrent_requests` of them in flight; answers still come back in request order.
A node that refuses a request for its size (HTTP 413, or an answer like `-32600 Invalid
request`, "batch too large", "... exceeds the limit") makes the Rpc halve the limit it hit
(calls for "batch", else bytes) and remember it (`request_size_reduced`, logged once per
reduction), and resend that part in smaller pieces; one single request that is still refused
raises RequestTooLargeError (a BadResponseError; Multicall re-chunks its aggregate3 calls
when the byte limit went down).
The limits are per Rpc, not per endpoint: a request may fail over to any endpoint.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any, Callable, Iterable, Sequence

import aiohttp

from .errors import BadResponseError, ConfigError, RpcError, TransientError
from .nesting import parse_bounded
from .redact import redact_url, scrub

encode_json = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps(..., separators=) builds an encoder per call
_INF = float("inf")
# Defaults safe for hosted RPCs. Calls per HTTP batch: Alchemy advises batches under 50, Erigon
# refuses more than 100 by default (geth and Nethermind about 1,000). Body: anvil refuses over
# 2 MiB, geth over 5 MiB; 1 MiB still carries about 2,300 getUserAccountData calls (five
# 400-call aggregate3 eth_calls of ~180 KB each). Four requests in flight: a 6,000-account
# refresh (three such requests) goes out at once, without tripping hosted rate limits (HTTP 429).
DEFAULT_MAX_BATCH_CALLS = 50
DEFAULT_MAX_REQUEST_BYTES = 1 << 20
DEFAULT_MAX_CONCURRENT_REQUESTS = 4
MIN_REQUEST_BYTES = 4096  # a refusal never shrinks the body limit below this (nor the calls below 1)
_KNOWN_TX = ("already known", "already imported", "known transaction")


def is_known_tx(message: str) -> bool:
    """A node's refusal of a signed transaction that says it already has it: as good as accepted."""
    m = message.lower()
    return any(k in m for k in _KNOWN_TX)


def rejection_kind(message: str) -> str:
    """What a node's refusal of a signed transaction means for the keeper: known (as good as
    accepted), nonce_used, replacement_underpriced, fee_too_low (re-price), or rejected."""
    if is_known_tx(message):
        return "known"
    m = message.lower()
    if "nonce too low" in m or "nonce is too low" in m or "old nonce" in m or "nonce has already been used" in m:
        return "nonce_used"
    if "replacement" in m and ("underpriced" in m or "fee too low" in m):
        return "replacement_underpriced"
    if "base fee" in m or "basefee" in m or "fee cap" in m or "underpriced" in m or "feecap" in m:
        return "fee_too_low"
    return "rejected"


_NEST_LIMIT = 4000  # a 100,000-deep body crashed the process (a segfault) before this guard: see nesting.py


def parse_json(raw: bytes | str) -> Any:
    """json.loads for answers from the network (nodes, relays): too deep a nesting raises
    RecursionError instead of overflowing the C stack."""
    return parse_bounded(json.loads, raw, _NEST_LIMIT)


def _request(rid: int, method: str, params: list[Any]) -> str:
    return encode_json({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})


def _snip(value: Any, n: int = 120) -> str:
    return repr(str(value)[:n])


class _WholeBatchError(BadResponseError):
    """The node answered a batch with one error object: its answer to this request, not an
    endpoint failure (no failover); still a BadResponseError for the caller."""


class RequestTooLargeError(_WholeBatchError):
    """The node refused a request for its size (HTTP 413, -32600, "batch too large", ...): the
    node's answer, not an endpoint failure (no failover). `batch()` shrinks and resends; what
    reaches the caller is one single request that is still refused. `kind` is the limit the
    refusal names: "bytes", "calls" or "both" (it does not say)."""

    def __init__(self, message: str, kind: str = "both"):
        super().__init__(message)
        self.kind = kind


# words of a node's refusal of a request's size; a refusal that names a rate, a quota or gas
# is not one (halving the batch would not help and would be remembered for nothing)
_SIZE_WORDS = ("too large", "too big", "too long", "entity", "exceed", "limit", "batch", "size", "length")
_NOT_SIZE_WORDS = ("rate", "per second", "daily", "quota", "credit", "compute unit", "gas", "too many requests",
                   "revert", "timeout", "timed out", "capacity")


def is_size_refusal(code: int | None, message: str) -> bool:
    """Whether a node's error answer to a whole request means "too large" (-32600 Invalid
    request for a well-formed request, or a message about size, batch or limit)."""
    m = message.lower()
    if any(w in m for w in _NOT_SIZE_WORDS):
        return False
    return code == -32600 or any(w in m for w in _SIZE_WORDS)


def _size_kind(message: str) -> str:
    """Which limit a node's size refusal names: "bytes" (entity, body, content length),
    "calls" (batch), or "both" when it does not say (anvil's -32600 Invalid request)."""
    m = message.lower()
    if "entity" in m or "body" in m or "content" in m or "bytes" in m:
        return "bytes"
    if "batch" in m:
        return "calls"
    if "size" in m or "length" in m:
        return "bytes"
    return "both"


class MaybeSentError(TransientError):
    """A broadcast to several endpoints that no endpoint accepted, where at least one refused it
    (a JSON-RPC error) and at least one other failed in a way that says nothing (it may have
    received the transaction): the transaction is maybe sent, not refused. `refusal` is the
    first refusal in endpoint order."""

    def __init__(self, message: str, refusal: RpcError):
        super().__init__(message)
        self.refusal = refusal


class _Skipped(Exception):
    """A part of a batch not sent because another part failed."""


class _Job:
    """One logical batch cut into HTTP requests: the requests, their encoded JSON, the first id."""
    __slots__ = ("reqs", "parts", "first", "return_errors", "sem", "failed")

    def __init__(self, reqs: list[tuple[str, list[Any]]], parts: list[str], first: int, return_errors: bool,
                 sem: asyncio.Semaphore):
        self.reqs = reqs
        self.parts = parts
        self.first = first
        self.return_errors = return_errors
        self.sem = sem
        self.failed = False


class Endpoint:
    __slots__ = ("index", "url", "redacted", "healthy", "reason", "last_error", "requests", "failures",
                 "next_probe", "down_since", "probe", "chain_ok")

    def __init__(self, index: int, url: str):
        self.index = index
        self.url = url
        self.redacted = redact_url(url)
        self.healthy = True
        self.reason: str | None = None  # why it is out (None while healthy)
        self.last_error: str | None = None  # the last transport error, kept after recovery
        self.requests = 0
        self.failures = 0
        self.next_probe = _INF
        self.down_since = 0.0
        self.probe: asyncio.Task[None] | None = None
        self.chain_ok = False  # its chain id was seen to match (connect() or a probe)


class Rpc:
    def __init__(self, urls: str | Sequence[str], timeout_s: float = 10.0, *, max_head_lag_blocks: int = 3,
                 probe_interval_s: float = 5.0, log: Any = None, max_batch_calls: int = DEFAULT_MAX_BATCH_CALLS,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 max_concurrent_requests: int = DEFAULT_MAX_CONCURRENT_REQUESTS):
        self.urls = (urls,) if isinstance(urls, str) else tuple(urls)
        if not self.urls:
            raise ValueError("Rpc: at least one endpoint URL is required")
        if max_batch_calls < 1 or max_request_bytes < 1 or max_concurrent_requests < 1:
            raise ValueError("Rpc: max_batch_calls, max_request_bytes and max_concurrent_requests must be ≥ 1")
        # current limits: lowered (and kept) when a node refuses a request for its size
        self.max_batch_calls = max_batch_calls
        self.max_request_bytes = max_request_bytes
        self.max_concurrent_requests = max_concurrent_requests
        self.url = self.urls[0]
        self.max_head_lag_blocks = max_head_lag_blocks
        self.probe_interval_s = probe_interval_s
        self.log = log
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._eps = tuple(Endpoint(i, u) for i, u in enumerate(self.urls))
        self._single = len(self._eps) == 1
        self._n_down = 0
        self._next_probe_at = _INF  # earliest next_probe of an endpoint that is out and not being probed
        self._best_head: int | None = None  # from the last check_heads()
        self._chain_id: int | None = None  # the chain id connect() found: an endpoint probed back in must match it
        self._bg: set[asyncio.Future[Any]] = set()  # broadcasts still finishing after one endpoint accepted
        # called with (endpoint as shown in logs, seconds, failed) after every request: metrics
        self.on_request: Callable[[str, float, bool], None] | None = None

    async def __aenter__(self) -> "Rpc":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            n = len(self._eps)
            # per-host limit: a hanging endpoint must not hold every pooled connection
            connector = aiohttp.TCPConnector(limit=16 * n, limit_per_host=16 if n > 1 else 0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                headers={"content-type": "application/json"},
                connector=connector,
            )
        return self._session

    async def close(self) -> None:
        pending = [t for t in self._bg if not t.done()] + [ep.probe for ep in self._eps if ep.probe is not None]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self._session is not None and not self._session.closed:
            await self._session.close()

    # -- status ----------------------------------------------------------------------
    def endpoints_status(self) -> list[dict[str, Any]]:
        """For heartbeats and metrics: one dict per endpoint, in configured order."""
        return [{"url": ep.redacted, "healthy": ep.healthy, "reason": ep.reason, "last_error": ep.last_error,
                 "requests": ep.requests, "failures": ep.failures} for ep in self._eps]

    def _logger(self) -> Any:
        if self.log is None:
            import structlog

            return structlog.get_logger()
        return self.log

    def _mark_down(self, ep: Endpoint, reason: str, failure: bool = True) -> None:
        if failure:
            ep.failures += 1
            ep.last_error = reason
        ep.reason = reason
        if not ep.healthy:
            return
        ep.healthy = False
        self._n_down += 1
        ep.down_since = time.monotonic()
        self._schedule_probe(ep, ep.down_since)
        if not self._single:
            self._logger().warning("rpc_endpoint_down", url=ep.redacted, reason=reason,
                                   healthy_left=len(self._eps) - self._n_down)

    def _schedule_probe(self, ep: Endpoint, now: float) -> None:
        ep.next_probe = now + self.probe_interval_s
        if ep.next_probe < self._next_probe_at:
            self._next_probe_at = ep.next_probe

    def _mark_up(self, ep: Endpoint) -> None:
        if ep.healthy:
            return
        was = ep.reason
        ep.healthy = True
        ep.reason = None
        ep.next_probe = _INF
        self._n_down -= 1
        if not self._single:
            self._logger().info("rpc_endpoint_up", url=ep.redacted, was=was,
                                down_for_s=round(time.monotonic() - ep.down_since, 3))

    # -- transport -------------------------------------------------------------------
    async def _exchange(self, ep: Endpoint, body: str) -> Any:
        """POST body to one endpoint and parse the JSON. Transport problems, HTTP 5xx/429 and
        non-JSON raise TransientError / BadResponseError (the endpoint's fault). Each request's
        time and whether it failed go to `on_request` (metrics) when set."""
        ep.requests += 1
        t0 = time.monotonic()
        failed = True
        try:
            async with self._sess().post(ep.url, data=body) as resp:
                raw = await resp.read()
                status = resp.status
            failed = status >= 400
        except asyncio.TimeoutError as e:
            raise TransientError(f"RPC {ep.redacted} timed out") from e
        except aiohttp.ClientConnectorError as e:  # the connection was never made: nothing was delivered
            err = TransientError(f"cannot reach RPC {ep.redacted}: {e.__class__.__name__}: {scrub(str(e))}")
            err.unreached = True  # type: ignore[attr-defined]
            raise err from e
        except aiohttp.ClientError as e:
            raise TransientError(f"cannot reach RPC {ep.redacted}: {e.__class__.__name__}: {scrub(str(e))}") from e
        except OSError as e:
            raise TransientError(f"cannot reach RPC {ep.redacted}: {scrub(str(e))}") from e
        finally:
            if self.on_request is not None:
                self.on_request(ep.redacted, time.monotonic() - t0, failed)
        if status == 413:
            raise RequestTooLargeError(f"RPC {ep.redacted} answered HTTP 413 (request entity too large)", "bytes")
        try:
            reply = parse_json(raw)
        except (ValueError, RecursionError):  # includes UnicodeDecodeError (non-UTF-8 bytes)
            snippet = scrub(raw[:120].decode("utf-8", "replace"))
            if status in (400, 414, 431) and is_size_refusal(None, snippet):
                raise RequestTooLargeError(f"RPC {ep.redacted} answered HTTP {status}: {snippet!r}",
                                           _size_kind(snippet)) from None
            raise BadResponseError(f"RPC {ep.redacted} answered HTTP {status} with non-JSON: {snippet!r}") from None
        if status >= 500:
            raise BadResponseError(f"RPC {ep.redacted} answered HTTP {status}: {scrub(str(reply)[:120])!r}")
        if status == 429:
            raise TransientError(f"RPC {ep.redacted} answered HTTP 429 (rate limited)")
        return reply

    async def _via(self, ep: Endpoint, body: str, check: Callable[[Any, Any, Any], Any], a: Any, b: Any) -> Any:
        """One attempt on one endpoint, with the endpoint's health bookkeeping."""
        try:
            res = check(await self._exchange(ep, body), a, b)
        except (RpcError, _WholeBatchError):  # the node answered: the endpoint works
            if not ep.healthy and self._usable(ep):
                self._mark_up(ep)
            raise
        except TransientError as e:
            self._mark_down(ep, str(e))
            raise
        if not ep.healthy and self._usable(ep):
            self._mark_up(ep)
        return res

    def _usable(self, ep: Endpoint) -> bool:
        """May this endpoint serve requests? Not one whose chain id was never seen to match the
        chain connect() found (down at start-up, or on another chain): only a probe that checks
        its chain id brings it in."""
        return ep.chain_ok or self._chain_id is None

    async def _send(self, body: str, check: Callable[[Any, Any, Any], Any], a: Any, b: Any) -> Any:
        eps = self._eps
        if self._single:
            return await self._via(eps[0], body, check, a, b)
        if self._n_down:
            self._probe_due(time.monotonic())
        for ep in eps:
            if ep.healthy:
                break
        else:  # nothing healthy: never stall, try each in order (each on the right chain)
            errors: list[TransientError] = []
            for ep in [e for e in eps if self._usable(e)] or eps[:1]:
                try:
                    return await self._via(ep, body, check, a, b)
                except (RpcError, _WholeBatchError):
                    raise
                except TransientError as e:
                    errors.append(e)
            raise _combine(errors)
        try:
            return await self._via(ep, body, check, a, b)
        except (RpcError, _WholeBatchError):
            raise
        except TransientError as e:
            first = e
        nxt = self._next_after(ep)
        try:
            return await self._via(nxt, body, check, a, b)
        except (RpcError, _WholeBatchError):
            raise
        except TransientError as e:
            raise _combine([first, e]) from None

    def _next_after(self, failed: Endpoint) -> Endpoint:
        """The retry target: the first healthy endpoint other than `failed`, else the next one
        after it in order (all are out: try anyway)."""
        for ep in self._eps:
            if ep.healthy and ep is not failed:
                return ep
        n = len(self._eps)
        for k in range(1, n):
            ep = self._eps[(failed.index + k) % n]
            if self._usable(ep):
                return ep
        return failed

    def _probe_due(self, now: float) -> None:
        if now < self._next_probe_at:
            return
        nxt = _INF
        for ep in self._eps:
            if ep.healthy or ep.probe is not None:
                continue
            if ep.next_probe <= now:
                ep.probe = asyncio.get_running_loop().create_task(self._probe(ep))
            elif ep.next_probe < nxt:
                nxt = ep.next_probe
        self._next_probe_at = nxt

    async def _probe(self, ep: Endpoint) -> None:
        try:
            if self._chain_id is not None and not await self._probe_chain(ep):
                return
            rid = next(self._ids)
            body = _request(rid, "eth_blockNumber", [])
            try:
                head: int | None = _check_quantity(await self._exchange(ep, body), "eth_blockNumber", rid)
            except RpcError:
                head = None  # it answers; a node error is not an endpoint failure
            except TransientError as e:
                self._mark_down(ep, str(e))  # already out: only the reason and counters change
                return
            best = self._best_head
            if head is not None and best is not None and best - head > self.max_head_lag_blocks:
                ep.reason = f"lagging {best - head} blocks"
                return
            self._mark_up(ep)
        finally:
            ep.probe = None
            if not ep.healthy:
                self._schedule_probe(ep, time.monotonic())

    async def _probe_chain(self, ep: Endpoint) -> bool:
        """Before an endpoint that is out rejoins: is it on the chain connect() found? (An
        endpoint down at start-up was never checked.) Wrong chain, or no chain id: it stays out,
        with one error line per change of reason."""
        rid = next(self._ids)
        body = _request(rid, "eth_chainId", [])
        try:
            cid = _check_quantity(await self._exchange(ep, body), "eth_chainId", rid)
        except RpcError as e:
            reason = f"no chain id: {str(e)[:120]}"
        except TransientError as e:
            self._mark_down(ep, str(e))  # already out: only the reason and counters change
            return False
        else:
            if cid == self._chain_id:
                ep.chain_ok = True
                return True
            reason = f"on chain {cid}, not {self._chain_id}"
        if ep.reason != reason:
            ep.reason = reason
            self._logger().error("rpc_endpoint_wrong_chain", url=ep.redacted, reason=reason,
                                 hint="this endpoint stays out: point chain.rpc_urls at nodes of one chain")
        return False

    # -- requests ----------------------------------------------------------------------
    async def call(self, method: str, params: list[Any] | None = None) -> Any:
        rid = next(self._ids)
        return await self._send(_request(rid, method, params or []), _check_call, method, rid)

    async def batch(self, requests: Iterable[tuple[str, list[Any]]], return_errors: bool = False) -> list[Any]:
        """Send many requests as JSON arrays of at most max_batch_calls calls and
        max_request_bytes bytes each (one POST when they fit), at most max_concurrent_requests
        at once; answers come back in request order. A part refused for its size is resent in
        smaller parts (the limits stay lowered).

        With return_errors, an RpcError is returned in place of that answer instead of raised.
        Otherwise the first error in request order is raised (parts not yet sent are not sent).
        """
        reqs = list(requests)
        n = len(reqs)
        if not n:
            return []
        first = next(self._ids)
        self._ids = itertools.count(first + n)  # ids first .. first + n - 1 are this batch's
        # each request encoded once: its size decides the cut, and a resend after a refusal reuses it
        parts = [_request(first + i, m, p) for i, (m, p) in enumerate(reqs)]
        job = _Job(reqs, parts, first, return_errors, asyncio.Semaphore(self.max_concurrent_requests))
        return await self._run_parts(job, self._split(parts, 0, n))

    def _split(self, parts: list[str], start: int, end: int) -> list[tuple[int, int]]:
        """Cut parts[start:end] into consecutive (start, end) ranges within the current limits
        (a single request above the byte limit goes alone)."""
        max_calls, max_bytes = self.max_batch_calls, self.max_request_bytes - 2  # the brackets
        out: list[tuple[int, int]] = []
        size = 0
        for i in range(start, end):
            ln = len(parts[i]) + 1  # ASCII JSON: characters are bytes; the comma
            if i > start and (i - start >= max_calls or size + ln > max_bytes):
                out.append((start, i))
                start, size = i, 0
            size += ln
        out.append((start, end))
        return out

    async def _run_parts(self, job: _Job, ranges: list[tuple[int, int]]) -> list[Any]:
        if len(ranges) == 1:
            return await self._part(job, *ranges[0])
        outs = await asyncio.gather(*(self._part(job, s, e) for s, e in ranges), return_exceptions=True)
        skipped: BaseException | None = None
        for o in outs:
            if isinstance(o, BaseException):
                if not isinstance(o, _Skipped):
                    raise o  # the first failure in request order
                skipped = skipped or o
        if skipped is not None:
            raise skipped
        return [a for o in outs for a in o]  # type: ignore[union-attr]

    async def _part(self, job: _Job, start: int, end: int) -> list[Any]:
        """One HTTP request of the batch: requests start .. end - 1."""
        async with job.sem:
            if job.failed:
                raise _Skipped()
            parts = job.parts
            body = "[" + ",".join(parts[start:end]) + "]" if end - start > 1 else "[" + parts[start] + "]"
            sub = job.reqs if end - start == len(job.reqs) else job.reqs[start:end]
            try:
                return await self._send(body, _check_batch, sub, (job.first + start, job.return_errors))
            except RequestTooLargeError as e:
                refused = e
            except BaseException:
                job.failed = True
                raise
        if not self._shrink(end - start, len(body), refused) or end - start == 1:
            job.failed = True
            raise refused
        return await self._run_parts(job, self._split(job.parts, start, end))

    def _shrink(self, n: int, nbytes: int, err: RequestTooLargeError) -> bool:
        """A request of n calls and nbytes was refused for its size. If it was within the
        current limits, set the limit the refusal names to half of what was refused (never
        below 1 call / MIN_REQUEST_BYTES: a request under twice that is not refused for its
        bytes) and log the new limits (`request_size_reduced`). A refusal that does not say
        which (anvil's -32600) lowers the bytes, which halves the calls a request carries as
        well, or the calls when the request is too small for that. A request already beyond
        the limits (sent at the same time as one whose refusal lowered them) changes nothing:
        one log per reduction. True if the request no longer fits the limits (send it in
        smaller parts)."""
        calls, limit = self.max_batch_calls, self.max_request_bytes
        if n <= calls and nbytes <= limit:
            kind = err.kind
            if kind == "both":
                kind = "calls" if n > 1 and nbytes // 2 < MIN_REQUEST_BYTES else "bytes"
            if kind == "calls":
                calls = max(1, n // 2)
            elif nbytes // 2 >= MIN_REQUEST_BYTES:
                limit = nbytes // 2
            if calls != self.max_batch_calls or limit != self.max_request_bytes:
                self.max_batch_calls, self.max_request_bytes = calls, limit
                self._logger().warning("request_size_reduced", max_batch_calls=calls, max_request_bytes=limit,
                                       refused_calls=n, refused_bytes=nbytes, reason=str(err)[:200])
        return n > calls or nbytes > limit

    async def check_heads(self) -> int | None:
        """eth_blockNumber on every healthy endpoint at once; an endpoint more than
        max_head_lag_blocks behind the best is taken out ("lagging N blocks"). Returns the best
        head, or None if no endpoint answered. One endpoint: None at once, no request.
        Endpoints already out are not asked (a hanging one would stall the caller): their
        background probe brings them back, compared against this best head."""
        if self._single:
            return None
        if self._n_down:
            self._probe_due(time.monotonic())
        targets = [ep for ep in self._eps if ep.healthy] or [ep for ep in self._eps if self._usable(ep)]
        rid = next(self._ids)
        body = _request(rid, "eth_blockNumber", [])
        heads = await asyncio.gather(*(self._head_of(ep, body, rid) for ep in targets))
        best = max((h for h in heads if h is not None), default=None)
        if best is None:
            return None
        self._best_head = best
        for ep, h in zip(targets, heads):
            if h is not None and best - h > self.max_head_lag_blocks:
                self._mark_down(ep, f"lagging {best - h} blocks", failure=False)
        return best

    async def _head_of(self, ep: Endpoint, body: str, rid: int) -> int | None:
        try:
            return await self._via(ep, body, _check_quantity, "eth_blockNumber", rid)
        except (TransientError, RpcError):
            return None

    # -- typed helpers ---------------------------------------------------------------
    async def block_number(self) -> int:
        return parse_int(await self.call("eth_blockNumber"), "eth_blockNumber")

    async def connect(self) -> int:
        """The chain id, checked on every endpoint at once. Endpoints that do not answer are
        taken out (at least one must answer, else TransientError); endpoints on different
        chains are a ConfigError."""
        if self._single:
            return await self.chain_id()
        rid = next(self._ids)
        body = _request(rid, "eth_chainId", [])
        answers = await asyncio.gather(*(self._chain_id_of(ep, body, rid) for ep in self._eps))
        ids = [(ep, a) for ep, a in zip(self._eps, answers) if type(a) is int]
        for ep, _ in ids:
            ep.chain_ok = True
        if not ids:
            raise _combine([a if isinstance(a, TransientError) else TransientError(str(a)) for a in answers])
        ep0, cid0 = ids[0]
        for ep, cid in ids[1:]:
            if cid != cid0:
                raise ConfigError(f"chain.rpc_urls: {ep0.redacted} is on chain {cid0} but {ep.redacted} is on chain {cid}")
        self._chain_id = cid0
        return cid0

    async def _chain_id_of(self, ep: Endpoint, body: str, rid: int) -> int | Exception:
        try:
            return await self._via(ep, body, _check_quantity, "eth_chainId", rid)
        except TransientError as e:
            return e
        except RpcError as e:  # answered, but not its chain id: not usable
            self._mark_down(ep, f"RPC {ep.redacted}: {e}")
            return e

    async def chain_id(self) -> int:
        return parse_int(await self.call("eth_chainId"), "eth_chainId")

    async def send_raw_transaction(self, raw_hex: str) -> str:
        """Broadcast a signed transaction to every healthy endpoint at once (all of them if none
        is healthy; the ones out as well if no healthy one could be reached). Returns the tx hash
        as soon as one endpoint accepted it (or said it already knows it); the other sends
        finish in the background. Every endpoint that was asked answered a JSON-RPC error (or
        could not even be connected to): the first error (in endpoint order) is raised. Some
        refused it but another failed in a way that says nothing (a timeout or reset after the
        request went out, an HTTP error, garbage): MaybeSentError (a TransientError: the
        transaction may be out there, tracked as maybe sent). None reachable: TransientError."""
        rid = next(self._ids)
        body = _request(rid, "eth_sendRawTransaction", [raw_hex])
        if self._single:
            return await self._via(self._eps[0], body, _check_sent, raw_hex, rid)
        if self._n_down:
            self._probe_due(time.monotonic())
        healthy = [ep for ep in self._eps if ep.healthy]
        usable = [ep for ep in self._eps if self._usable(ep)] or list(self._eps[:1])
        rounds = [healthy, [ep for ep in usable if not ep.healthy]] if healthy else [usable]
        rpc_errors: dict[int, RpcError] = {}
        transport: list[TransientError] = []
        for targets in rounds:
            if not targets:
                continue
            tx_hash = await self._broadcast(targets, body, rid, raw_hex, rpc_errors, transport)
            if tx_hash is not None:
                return tx_hash
            if rpc_errors:  # an endpoint answered: the transaction was seen and refused
                break
        maybe = [e for e in transport if not getattr(e, "unreached", False)]
        if rpc_errors and maybe:
            # one endpoint refused it, another failed in a way that says nothing (a timeout or a
            # reset after the request went out, an HTTP error, garbage): that one may hold it
            refused = "; ".join(f"{self._eps[i].redacted}: {rpc_errors[i].rpc_message[:120]}"
                                for i in sorted(rpc_errors))
            raise MaybeSentError(f"eth_sendRawTransaction: refused by {refused}; no answer that says anything "
                                 f"from {'; '.join(str(e) for e in maybe)}", rpc_errors[min(rpc_errors)])
        if rpc_errors:
            raise rpc_errors[min(rpc_errors)]
        raise _combine(transport)

    async def _broadcast(self, targets: list[Endpoint], body: str, rid: int, raw_hex: str,
                         rpc_errors: dict[int, RpcError], transport: list[TransientError]) -> str | None:
        tasks = {asyncio.ensure_future(self._via(ep, body, _check_sent, raw_hex, rid)): ep.index for ep in targets}
        pending: set[asyncio.Future[Any]] = set(tasks)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                accepted: str | None = None
                for t in sorted(done, key=tasks.__getitem__):
                    try:
                        res = t.result()
                    except RpcError as e:
                        rpc_errors[tasks[t]] = e
                        continue
                    except TransientError as e:
                        transport.append(e)
                        continue
                    if accepted is None:
                        accepted = res
                if accepted is not None:
                    return accepted
            return None
        finally:
            for t in pending:  # the broadcast is under way: let it finish (bookkeeping included)
                self._bg.add(t)
                t.add_done_callback(self._bg_done)

    def _bg_done(self, t: asyncio.Future[Any]) -> None:
        self._bg.discard(t)
        if not t.cancelled():
            t.exception()  # retrieved: the endpoint's state already records it

    async def eth_call(self, to: str, data: bytes, block: int | str = "latest", sender: str | None = None, value: int = 0) -> bytes:
        tx: dict[str, Any] = {"to": to, "data": "0x" + data.hex()}
        if sender:
            tx["from"] = sender
        if value:
            tx["value"] = hex(value)
        res = await self.call("eth_call", [tx, _block_tag(block)])
        return parse_bytes(res, "eth_call")

    async def get_block(self, tag: int | str = "latest") -> dict[str, Any]:
        blk = await self.call("eth_getBlockByNumber", [_block_tag(tag), False])
        if not isinstance(blk, dict) or "number" not in blk:
            raise BadResponseError(f"eth_getBlockByNumber({tag}): malformed block: {_snip(blk)}")
        return blk


# -- answer checks (check(reply, a, b) -> result; BadResponseError = the endpoint's fault) ----
def _check_call(reply: Any, method: str, rid: int) -> Any:
    if type(reply) is not dict:
        raise BadResponseError(f"{method}: malformed JSON-RPC answer: {_snip(reply)}")
    got = reply.get("id")
    if got != rid and not (got is None and reply.get("error") is not None):  # errors before parsing have id null
        raise BadResponseError(f"{method}: answer for id {_snip(got, 40)}, expected {rid}")
    return _result(method, reply)


def _result(method: str, reply: dict[str, Any]) -> Any:
    """The result of one JSON-RPC answer object (already known to be a dict)."""
    if reply.get("jsonrpc") != "2.0":
        raise BadResponseError(f"{method}: malformed JSON-RPC answer: {_snip(reply)}")
    err = reply.get("error")
    if err is not None:
        if type(err) is not dict:
            raise BadResponseError(f"{method}: malformed error object: {_snip(err)}")
        code, message = err.get("code"), err.get("message")
        if type(code) is not int or type(message) is not str:
            raise BadResponseError(f"{method}: malformed error object: {_snip(err)}")
        raise RpcError(method, code, message, _revert_data(err.get("data")))
    if "result" not in reply:
        raise BadResponseError(f"{method}: malformed JSON-RPC answer: {_snip(reply)}")
    return reply["result"]


def _check_quantity(reply: Any, method: str, rid: int) -> int:
    return parse_int(_check_call(reply, method, rid), method)


def _check_hash(reply: Any, method: str, rid: int) -> str:
    res = _check_call(reply, method, rid)
    if type(res) is not str or not res.startswith("0x"):
        raise BadResponseError(f"{method}: expected a transaction hash, got {_snip(res, 80)}")
    return res


def _check_sent(reply: Any, raw_hex: str, rid: int) -> str:
    """eth_sendRawTransaction's answer; "already known" counts as accepted (its hash)."""
    try:
        return _check_hash(reply, "eth_sendRawTransaction", rid)
    except RpcError as e:
        if is_known_tx(e.rpc_message):
            return _tx_hash(raw_hex)
        raise


def _check_batch(replies: Any, reqs: list[tuple[str, list[Any]]], ctx: tuple[int, bool]) -> list[Any]:
    first, return_errors = ctx
    n = len(reqs)
    if type(replies) is dict:  # some nodes answer a batch with one error object
        err = replies.get("error")
        if type(err) is dict and type(err.get("code")) is int and type(err.get("message")) is str:
            msg = (f"batch of {n}: the node answered one error for the whole batch: "
                   f"{err['message'][:200]} (code {err['code']})")
            if is_size_refusal(err["code"], err["message"]):
                raise RequestTooLargeError(msg, _size_kind(err["message"]))
            raise _WholeBatchError(msg)
        raise BadResponseError(f"batch of {n}: malformed answer: {_snip(replies)}")
    if type(replies) is not list or len(replies) != n:
        if type(replies) is list:  # geth: [one -32600 "batch too large" error] for the whole batch
            for r in replies[:4]:
                err = r.get("error") if type(r) is dict else None
                if type(err) is dict and type(err.get("message")) is str and \
                        is_size_refusal(err.get("code") if type(err.get("code")) is int else None, err["message"]):
                    raise RequestTooLargeError(f"batch of {n}: the node refused the batch: {err['message'][:200]} "
                                               f"(code {err.get('code')})", _size_kind(err["message"]))
        raise BadResponseError(f"batch of {n}: malformed answer: {_snip(replies)}")
    by_id: dict[int, Any] = {}
    for r in replies:
        if type(r) is not dict or type(r.get("id")) is not int:
            raise BadResponseError(f"batch: malformed answer item: {_snip(r)}")
        by_id[r["id"]] = r
    out: list[Any] = []
    for i, (m, _) in enumerate(reqs):
        r = by_id.get(first + i)
        if r is None:
            raise BadResponseError(f"batch: answer for {m} missing")
        try:
            out.append(_result(m, r))
        except RpcError as e:
            if n > 1 and "response" in e.rpc_message.lower() and is_size_refusal(None, e.rpc_message):
                # geth: "response too large" for the calls past its batch response limit
                raise RequestTooLargeError(f"batch of {n}: {e.rpc_message[:200]} (code {e.code})") from None
            if not return_errors:
                raise
            out.append(e)
    return out


def _revert_data(data: Any) -> str | None:
    """Revert data as a string, from the shapes nodes use: "0x..", "Reverted 0x.." (Nethermind),
    {"data": "0x.."} or {"originalError": {"data": ..}} nested a few levels; anything else: None."""
    for _ in range(4):
        if type(data) is str:
            return data[9:] if data.startswith("Reverted 0x") else data
        if type(data) is not dict:
            return None
        data = data["data"] if "data" in data else data.get("originalError")
    return None


def _tx_hash(raw_hex: str) -> str:
    from eth_utils import keccak

    return "0x" + keccak(hexstr=raw_hex).hex()


def _combine(errors: list[TransientError]) -> TransientError:
    """One error for several failed attempts: the same object for one, else one message naming
    each (BadResponseError if every attempt got a bad answer)."""
    if len(errors) == 1:
        return errors[0]
    cls = BadResponseError if all(isinstance(e, BadResponseError) for e in errors) else TransientError
    return cls(f"{len(errors)} RPC endpoints failed: " + "; ".join(str(e) for e in errors))


def _block_tag(block: int | str) -> str:
    return hex(block) if isinstance(block, int) else block


def parse_int(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise BadResponseError(f"{what}: expected a hex quantity, got {_snip(value, 80)}")
    try:
        return int(value, 16)
    except ValueError:
        raise BadResponseError(f"{what}: expected a hex quantity, got {value[:80]!r}") from None


def parse_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise BadResponseError(f"{what}: expected hex data, got {_snip(value, 80)}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise BadResponseError(f"{what}: expected hex data, got {value[:80]!r}") from None
