"""The keeper's HTTP side: health, Prometheus metrics, a live status page and its JSON.

    server = Server(keeper, metrics, listen="127.0.0.1:9108", token=None)
    await server.start(); ...; await server.stop()

  GET /healthz      200 "ok" | 503 and the reason (never needs the token: for probes)
  GET /metrics      Prometheus text exposition (keeper.metrics.Metrics.render)
  GET /             the status page (keeper/web/status.html, self-contained)
  GET /api/status   keeper.status.snapshot as JSON

With a token, every route but /healthz needs `Authorization: Bearer <token>` (or `?token=`,
which is how a browser opens the page; the page then sends the header on its fetches);
401 otherwise. Binds 127.0.0.1 by default; port 0 picks a free port (see `port`, `url`).
Access logs are off (a ?token= must not end up in a log).
"""

from __future__ import annotations

import hmac
import json
import math
from collections import Counter
from importlib import resources
from typing import Any

from aiohttp import web

from . import status
from .metrics import CONTENT_TYPE, Metrics

DEFAULT_LISTEN = "127.0.0.1:9108"


def parse_listen(listen: str) -> tuple[str, int]:
    """"host:port", "[::1]:port" or ":port" (127.0.0.1) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"listen: expected host:port, got {listen!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def page_html() -> bytes:
    """The status page, from the package data (keeper/web/status.html)."""
    return resources.files("keeper").joinpath("web", "status.html").read_bytes()


class Server:
    def __init__(self, keeper: Any, metrics: Metrics | None = None, listen: str = DEFAULT_LISTEN,
                 token: str | None = None, limits: status.HealthLimits | None = None):
        self.keeper = keeper
        self.metrics = metrics
        self.host, self._port = parse_listen(listen)
        self.token = token or None
        self.limits = limits
        self.runner: web.AppRunner | None = None
        self._page: bytes | None = None
        self._risk_doc: tuple[tuple[int, str], dict[str, Any]] | None = None
        self.hits: Counter[tuple[str, int]] = Counter()  # (path, status) -> requests answered

    # -- lifecycle --------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_text)
        app.router.add_get("/api/status", self.api_status)
        app.router.add_get("/api/risk", self.api_risk)
        app.router.add_get("/risk.png", self.risk_png)
        app.router.add_get("/", self.page)
        return app

    async def start(self) -> "Server":
        self.runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self._port)
        await site.start()
        addrs = self.runner.addresses  # the bound (host, port): port 0 picked a free one
        if addrs:
            self._port = addrs[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def __aenter__(self) -> "Server":
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}/"

    # -- auth -------------------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        given = ""
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        elif "token" in request.query:
            given = request.query["token"]
        return hmac.compare_digest(given.encode(), self.token.encode())

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != "/healthz" and not self._authorized(request):
            self.hits[(request.path, 401)] += 1
            return web.Response(status=401, text="unauthorized: Authorization: Bearer <token> required\n",
                                headers={"WWW-Authenticate": 'Bearer realm="keeper"'})
        resp = await handler(request)
        self.hits[(request.path, resp.status)] += 1
        return resp

    # -- routes -----------------------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.Response:
        ok, reason = status.health(self.keeper, limits=self.limits)
        return web.Response(status=200 if ok else 503, text=("ok" if ok else reason) + "\n",
                            headers={"Cache-Control": "no-store"})

    async def metrics_text(self, request: web.Request) -> web.Response:
        if self.metrics is None:
            return web.Response(status=404, text="no metrics\n")
        self.metrics.sync(self.keeper)
        body = self.metrics.render()
        resp = web.Response(body=body, headers={"Cache-Control": "no-store"})
        resp.headers["Content-Type"] = CONTENT_TYPE
        return resp

    async def api_status(self, request: web.Request) -> web.Response:
        snap = status.snapshot(self.keeper, limits=self.limits)
        if self.metrics is not None:
            snap["stages"] = {s: _stage_summary(self.metrics, s) for s in ("opportunity", "simulated", "sent",
                                                                             "included")}
        return web.Response(text=json.dumps(_clean(snap), default=str, allow_nan=False), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def _risk(self) -> dict[str, Any]:
        """`keeper risk` of the running keeper's positions (keeper/risk.py), computed at most
        once per head (its bisections cost more than a status snapshot)."""
        from . import risk

        head = self.keeper.head
        if head is None:
            return {"block": None, "positions": [], "assets": {}, "not_covered": []}
        if self._risk_doc is None or self._risk_doc[0] != (head.number, head.hash):
            rows = await risk.collect(self.keeper, head)
            doc = risk.document(head.number, rows, risk.DEFAULT_STEPS, risk.not_covered(self.keeper))
            self._risk_doc = ((head.number, head.hash), doc)
        return self._risk_doc[1]

    async def api_risk(self, request: web.Request) -> web.Response:
        doc = await self._risk()
        return web.Response(text=json.dumps(_clean(doc), default=str, allow_nan=False),
                            content_type="application/json", headers={"Cache-Control": "no-store"})

    async def risk_png(self, request: web.Request) -> web.Response:
        from . import risk

        return web.Response(body=risk.png(await self._risk()), content_type="image/png",
                            headers={"Cache-Control": "no-store"})

    async def page(self, request: web.Request) -> web.Response:
        if self._page is None:
            self._page = page_html()
        return web.Response(body=self._page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                                     "Content-Security-Policy": "default-src 'self'; script-src 'unsafe-inline'; "
                                                                "style-src 'unsafe-inline'; img-src 'self' data:"})


def _stage_summary(m: Metrics, stage: str) -> dict[str, float]:
    n = m.value("keeper_stage_seconds_count", {"stage": stage}) or 0.0
    s = m.value("keeper_stage_seconds_sum", {"stage": stage}) or 0.0
    return {"count": n, "mean_s": round(s / n, 4) if n else 0.0}


def _clean(x: Any) -> Any:
    """JSON-safe: NaN and infinities become null (JSON.parse refuses them)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x
