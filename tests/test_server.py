"""Metrics, /healthz, the status page and its JSON, alerts: on the devnet, with a real keeper.

The app does not call the Metrics methods yet: here the test feeds them around keeper.cycle
from what really happened (stage times from the head seen, the real outcomes), the way the
app will.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import struct
import tempfile
import time
import zlib
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from keeper import abi
from keeper.alerts import Alerts, Thresholds, check
from keeper.metrics import Metrics
from keeper.server import Server, page_html
from keeper.status import HealthLimits, health, snapshot

from .conftest import REPO
from .faultproxy import FaultProxy, served

AAVE = "aave-v3-devnet"
TOKEN = "s3cret-token"
SCREENSHOT = REPO / ".devnet" / "status-page.png"
HIST_BAR, PNL_BAR = bytes((0x58, 0xA6, 0xFF)), bytes((0x3F, 0xB9, 0x50))  # the page's bar colours
METRIC_NAMES = {
    "keeper_head_block", "keeper_head_lag_seconds", "keeper_cycle_seconds", "keeper_stage_seconds",
    "keeper_opportunities", "keeper_sends", "keeper_gas_spent_eth", "keeper_realized_profit_usd_total",
    "keeper_wallet_balance", "keeper_rpc_errors", "keeper_rpc_latency_seconds", "keeper_tracked_accounts",
    "keeper_paused", "keeper_misses",
}  # family names as prometheus_client reports them (counters without _total)


# -- helpers ------------------------------------------------------------------------------------
async def fed_cycle(keeper: Any) -> list[Any]:
    """One cycle as the daemon's loop runs it: the app feeds keeper.metrics itself (RPC
    latency per request, stage times from the moment the head was read, outcomes), then
    the after-cycle metrics and alerts."""
    t0 = time.monotonic()
    head = await keeper.read_head()
    keeper.metrics.head(head.number, head.timestamp)
    outs = await keeper.cycle(head)  # not in the background: returns once the receipts are in
    keeper.after_cycle(head, time.monotonic() - t0)
    return outs


async def get(session: aiohttp.ClientSession, url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers) as r:
        return r.status, await r.text()


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                return s.value
    return None


def png_pixels(data: bytes, max_rows: int | None = None) -> tuple[int, int, list[bytes]]:
    """A minimal PNG decoder (8-bit greyscale/RGB/RGBA, not interlaced): (width, height, the
    first max_rows rows as raw pixel bytes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, ihdr = 8, bytearray(), None
    while pos < len(data):
        (length,), typ = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        chunk = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if typ == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif typ == b"IDAT":
            idat += chunk
        elif typ == b"IEND":
            break
    assert ihdr is not None
    w, h, depth, ctype, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0 and ctype in (0, 2, 4, 6), ihdr
    bpp = {0: 1, 2: 3, 4: 2, 6: 4}[ctype]
    raw = zlib.decompress(bytes(idat))
    stride = w * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(min(h, max_rows or h)):
        i = y * (stride + 1)
        f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        if f == 1:
            for x in range(bpp, stride):
                line[x] = (line[x] + line[x - bpp]) & 0xFF
        elif f == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif f == 3:
            for x in range(stride):
                left = line[x - bpp] if x >= bpp else 0
                line[x] = (line[x] + ((left + prev[x]) >> 1)) & 0xFF
        elif f == 4:
            for x in range(stride):
                a = line[x - bpp] if x >= bpp else 0
                b, c = prev[x], prev[x - bpp] if x >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return w, h, rows


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


async def run_chromium(*args: str, timeout_s: float = 120) -> tuple[int, bytes, bytes]:
    """Headless Chromium, without blocking the event loop the server runs on."""
    with tempfile.TemporaryDirectory() as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-extensions", f"--user-data-dir={profile}",
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        return proc.returncode or 0, out, err


class Webhook:
    """A local webhook receiver: records every JSON body posted to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        self.arrived.set()
        return web.Response(text="ok")

    async def wait(self, n: int = 1, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.bodies) < n and time.monotonic() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), max(deadline - time.monotonic(), 0.01))
            except asyncio.TimeoutError:
                pass


def fresh_head(chain: Any) -> None:
    """Mine a block stamped now: the devnet's clock is its cached state's (and after a snapshot
    revert, the snapshot's), minutes behind the wall clock, which /healthz reads as an old head."""
    parent = int(chain.call("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    chain.call("evm_setNextBlockTimestamp", [max(int(time.time()), parent + 1)])
    chain.call("evm_mine")


async def until(pred, timeout_s: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await pred():
            return True
        await asyncio.sleep(step)
    return False


# -- without the devnet ----------------------------------------------------------------------------
def test_metrics_have_exactly_the_dashboard_names_and_a_private_registry():
    a, b = Metrics(), Metrics()
    a.stage("sent", 0.5)
    a.realized("p", -2_5000_0000)  # a loss: the profit gauge goes down
    a.realized("p", 1_0000_0000)
    a.miss("p", "raced")
    assert set(a.names()) == METRIC_NAMES
    text = a.render().decode()
    assert sample(text, "keeper_stage_seconds_count", {"stage": "sent"}) == 1
    assert sample(text, "keeper_realized_profit_usd_total", {"protocol": "p"}) == pytest.approx(-1.5)
    assert sample(text, "keeper_misses_total", {"protocol": "p", "class": "raced"}) == 1
    assert b.value("keeper_stage_seconds_count", {"stage": "sent"}) == 0  # two keepers, two registries
    with pytest.raises(ValueError):
        a.stage("mined", 1.0)
    with pytest.raises(ValueError):
        a.miss("p", "lost")


def test_the_page_is_package_data_and_self_contained():
    html = page_html().decode()
    assert "<canvas" in html and "api/status" in html
    for external in ("http://", "https://", "//cdn", "<link", "src="):
        assert external not in html, external


async def test_alerts_are_posted_in_the_background_deduplicated_and_rate_limited():
    hook = Webhook()
    async with served(hook.handle) as url:
        al = Alerts(url, style="slack", min_interval_s=60, burst=3, burst_window_s=60)
        t = time.monotonic()
        assert al.notify("rpc_down", "every RPC endpoint is down", endpoints=1)
        assert time.monotonic() - t < 0.05  # never waits for the webhook
        assert not al.notify("rpc_down", "every RPC endpoint is down")  # the same: not again
        assert al.notify("low_balance", "USDC balance below 100", balance=3.0)
        assert al.notify("low_balance", "WETH balance below 1")
        assert not al.notify("paused", "sending is paused")  # over the burst limit
        await hook.wait(3)
        await al.close()
    texts = sorted(b["text"] for b in hook.bodies)
    assert len(texts) == 3 and texts[0].startswith("[keeper] low_balance: USDC balance below 100 (balance=3.0)")
    assert al.sent == 3 and al.suppressed == 2
    # discord and json bodies; a webhook that is down is logged, never raised
    assert Alerts(None, style="discord").body("paused", "m", {}, 1.0) == {"content": "[keeper] paused: m"}
    assert Alerts(None).body("paused", "m", {"a": 1}, 1.0) == {"kind": "paused", "message": "m", "fields": {"a": 1},
                                                              "time": 1.0}
    from keeper.devnet import free_port

    dead = Alerts(f"http://127.0.0.1:{free_port()}/hook", timeout_s=1)
    assert dead.notify("paused", "x")
    await dead.close(timeout_s=5)
    assert dead.failed == 1 and dead.sent == 0


# -- on the devnet -------------------------------------------------------------------------------
async def test_metrics_status_json_token_and_the_page_in_a_real_browser(chain, make_keeper):
    chain.shock("WETH", -12)
    fresh_head(chain)
    keeper = await make_keeper(only=AAVE)
    metrics = keeper.metrics
    outs = await fed_cycle(keeper)
    assert any(o.status == "confirmed" for o in outs), [(o.status, o.reason) for o in outs]
    chain.call("evm_mine")
    await fed_cycle(keeper)

    if getattr(keeper, "store", None) is not None:
        keeper.store.flush()  # the store writes in batches from its own thread
    async with Server(keeper, metrics, listen="127.0.0.1:0", token=TOKEN) as server, aiohttp.ClientSession() as s:
        base = server.url
        assert server.host == "127.0.0.1" and server.port > 0
        # health never needs the token
        assert await get(s, base + "healthz") == (200, "ok\n")
        # every other route does
        for path in ("", "metrics", "api/status", "?token=wrong"):
            assert (await get(s, base + path))[0] == 401, path
            assert (await get(s, base + path, token="wrong"))[0] == 401, path
        status, text = await get(s, base + "metrics", token=TOKEN)
        assert status == 200
        for st in ("opportunity", "simulated", "sent", "included"):
            assert sample(text, "keeper_stage_seconds_count", {"stage": st}) > 0, st
        assert sample(text, "keeper_head_block") == keeper.head.number
        assert sample(text, "keeper_sends_total", {"protocol": AAVE, "outcome": "confirmed"}) >= 1
        assert sample(text, "keeper_realized_profit_usd_total", {"protocol": AAVE}) > 0
        assert sample(text, "keeper_gas_spent_eth_total") > 0
        assert sample(text, "keeper_tracked_accounts", {"protocol": AAVE}) == len(keeper.adapters[AAVE].accounts) > 30
        assert sample(text, "keeper_wallet_balance", {"symbol": "USDC"}) > 0
        assert sample(text, "keeper_paused") == 0
        assert sample(text, "keeper_rpc_latency_seconds_count", {"endpoint": keeper.rpc.endpoints_status()[0]["url"]}) > 0
        assert sample(text, "keeper_cycle_seconds_count") == 2

        status, body = await get(s, base + "api/status", token=TOKEN)
        assert status == 200
        snap = json.loads(body)
        assert snap["head"]["number"] == keeper.head.number and snap["cycles"] == 2 and snap["healthy"]
        assert snap["address"] and snap["dry_run"] is False and snap["paused"] is False
        assert snap["endpoints"] and snap["endpoints"][0]["healthy"]
        assert 0 < len(snap["positions"]) <= 100
        hfs = [p["health_factor"] for p in snap["positions"]]
        assert hfs == sorted(hfs)  # riskiest first
        assert sum(snap["health_histogram"]["counts"]) == sum(snap["health_histogram"]["protocols"][AAVE])
        assert len(snap["health_histogram"]["counts"]) == len(snap["health_histogram"]["edges"])
        confirmed = [r for r in snap["recent"] if r["status"] == "confirmed"]
        assert confirmed and all(r["tx"] and r["realized_usd"] is not None for r in confirmed)
        assert snap["pnl"] and snap["pnl"][0]["usd"] > 0
        assert snap["misses"]["ours"] == len(confirmed)
        assert set(snap["misses"]) == {"ours", "raced", "filtered", "unseen"}
        assert snap["stages"]["included"]["count"] > 0
        status, html = await get(s, base, token=TOKEN)
        assert status == 200 and "<canvas" in html

        if chromium() is None:
            pytest.skip("no chromium/chromium-browser on PATH (./dev setup installs it): the page was not rendered")
        SCREENSHOT.parent.mkdir(exist_ok=True)
        page = f"{base}?token={TOKEN}"
        fetched, refused = server.hits[("/api/status", 200)], server.hits[("/api/status", 401)]
        for _ in range(3):  # a screenshot taken before the first fetch is answered shows no data: try again
            SCREENSHOT.unlink(missing_ok=True)
            rc, out, err = await run_chromium(f"--screenshot={SCREENSHOT}", "--window-size=1280,900",
                                              "--virtual-time-budget=5000", page)
            assert rc == 0 and SCREENSHOT.exists(), err.decode(errors="replace")[-2000:]
            png = SCREENSHOT.read_bytes()
            w, h, rows = png_pixels(png, max_rows=450)
            bpp = len(rows[0]) // w
            colours = {row[x:x + 3] for row in rows for x in range(0, len(row), bpp)}
            if {HIST_BAR, PNL_BAR} <= colours:
                break
        assert len(png) > 20_000 and (w, h) == (1280, 900)
        assert len(colours) > 50, f"the page looks blank: {len(colours)} colours"
        # drawn from the data: the health histogram's bars and the day's (positive) PnL bar
        assert HIST_BAR in colours and PNL_BAR in colours
        # the page's script fetched the status with the token
        assert server.hits[("/api/status", 200)] > fetched and server.hits[("/api/status", 401)] == refused
        first = snap["positions"][0]["account"]
        for _ in range(3):  # --dump-dom may serialize before the first fetch is answered: try again
            rc, dom, err = await run_chromium("--dump-dom", "--virtual-time-budget=5000", page)
            assert rc == 0, err.decode(errors="replace")[-2000:]
            dom_text = dom.decode(errors="replace")
            if "data-updated=" in dom_text:
                break
        assert "data-updated=" in dom_text, "the page never rendered a status"
        assert first[:8] in dom_text and "confirmed" in dom_text and '<span id="err"></span>' in dom_text


async def test_health_turns_503_when_the_rpc_is_down_and_200_when_it_returns(chain, make_keeper, monkeypatch):
    """The daemon as configured: [http] serves /healthz, [alerts] posts to the webhook; the
    RPC goes down under the running loop and comes back."""
    hook = Webhook()
    fresh_head(chain)
    async with FaultProxy(chain.url) as proxy, served(hook.handle) as hook_url:
        monkeypatch.setenv("KEEPER_TEST_WEBHOOK", hook_url)
        keeper = await make_keeper(dry_run=True, only=AAVE, KEEPER_RPC_URL=proxy.url,
                                   KEEPER_CHAIN__POLL_INTERVAL_S="0.05", KEEPER_CHAIN__RPC_TIMEOUT_S="0.5",
                                   KEEPER_HTTP__LISTEN="127.0.0.1:0", KEEPER_ALERTS__WEBHOOK_URL_ENV="KEEPER_TEST_WEBHOOK")
        assert keeper.server is not None and keeper.alerts is not None
        run = asyncio.create_task(keeper.run())
        try:
            async with aiohttp.ClientSession() as s:
                url = keeper.server.url + "healthz"
                assert await until(lambda: _is(s, url, 200), 10), "healthy once cycles run"
                proxy.down = True
                assert await until(lambda: _is(s, url, 503), 10), "503 while every RPC endpoint is down"
                status, reason = await get(s, url)
                assert status == 503 and "RPC endpoint" in reason
                await hook.wait(1)
                assert [b["kind"] for b in hook.bodies] == ["rpc_down"]
                proxy.down = False
                assert await until(lambda: _is(s, url, 200), 40), "back to 200 when the RPC returns"
                cycles = keeper.cycles
                chain.call("evm_mine")
                assert await until(lambda: _cycled(keeper, cycles), 10)
        finally:
            keeper.stop()
            await asyncio.wait_for(run, 15)
            await keeper.alerts.drain()
    assert len(hook.bodies) == 1  # reported once, not on every check


async def _is(s: aiohttp.ClientSession, url: str, status: int) -> bool:
    return (await get(s, url))[0] == status


async def _cycled(keeper: Any, before: int) -> bool:
    return keeper.cycles > before


async def test_an_alert_reaches_the_webhook_when_the_keeper_pauses_itself(chain, make_keeper):
    from keeper.types import TxPlan

    fresh_head(chain)
    keeper = await make_keeper(only=AAVE, KEEPER_KEEPER__MAX_CONSECUTIVE_FAILURES="1")
    await keeper.cycle(await keeper.read_head())
    keeper.last_cycle_at = time.monotonic()
    hook = Webhook()
    async with served(hook.handle) as hook_url, Server(keeper, Metrics(), listen="127.0.0.1:0") as server, \
            aiohttp.ClientSession() as s:
        alerts = Alerts(hook_url, style="json")
        assert check(keeper, alerts) == [] and (await get(s, server.url + "healthz"))[0] == 200
        # a send that reverts on chain: with max_consecutive_failures = 1 the keeper pauses sending
        tm = keeper.executor.tx
        bad = TxPlan(to=chain.dep.tokens["USDC"], data=abi.load("ERC20").fn("transfer").encode(chain.dep.depositor, 10**40),
                     gas_limit=100_000)
        t = await tm.send(bad, 100_000, await keeper.read_head(), key="bad:0")
        await tm.wait([t], 5)
        assert keeper.executor.paused
        assert check(keeper, alerts, Thresholds(min_balance={"USDC": 10**12}, failed_sends=1)) == \
            ["paused", "low_balance", "failed_sends"]
        await hook.wait(3)
        kinds = {b["kind"]: b for b in hook.bodies}
        assert set(kinds) == {"paused", "low_balance", "failed_sends"}
        assert kinds["paused"]["fields"]["consecutive_failures"] == 1 and kinds["paused"]["time"] > 0
        assert kinds["low_balance"]["fields"]["symbol"] == "USDC"
        check(keeper, alerts, Thresholds(min_balance={"USDC": 10**12}, failed_sends=1))  # still paused: not resent
        await alerts.drain()
        assert len(hook.bodies) == 3
        status, reason = await get(s, server.url + "healthz")
        assert status == 503 and "paused" in reason
        status, text = await get(s, server.url + "metrics")
        assert sample(text, "keeper_paused") == 1
        await alerts.close()


def test_health_reasons_on_a_keeper_that_stalls_or_sees_an_old_head():
    from types import SimpleNamespace

    from keeper.types import Head

    ex = SimpleNamespace(paused=False, outcomes=[], in_flight=set(), address=None)
    cfg = SimpleNamespace(chain=SimpleNamespace(poll_interval_s=0.2, block_time_s=12))
    k = SimpleNamespace(cfg=cfg, executor=ex, adapters={}, head=Head(10, 1_000, 0, "0x"), cycles=3, dry_run=True,
                        last_cycle_at=100.0, rpc=SimpleNamespace(endpoints_status=lambda: [{"url": "u", "healthy": True}]))
    assert health(k, now=110.0, wall=1_010.0) == (True, "ok")
    ok, why = health(k, now=161.0, wall=1_010.0)
    assert not ok and "no cycle completed for 61 s (limit 60 s)" == why
    ok, why = health(k, now=110.0, wall=1_400.0)
    assert not ok and why.startswith("head 10 is 400 s old")
    assert health(k, now=110.0, wall=1_400.0, limits=HealthLimits(head_age_s=0))[0]  # check off (devnet)
    k.rpc_down = True
    assert health(k, now=110.0, wall=1_010.0)[1].startswith("every RPC endpoint is down")
    k.rpc_down = False
    ex.paused = True
    assert health(k, now=110.0, wall=1_010.0) == (False, "sending paused by a safety limit")
    snap = snapshot(k, wall=1_010.0, now=110.0)
    assert snap["paused"] and snap["positions"] == [] and snap["recent"] == [] and snap["pnl"] == []


def test_pnl_and_misses_come_from_the_store_when_the_keeper_has_one(tmp_path):
    from types import SimpleNamespace

    import structlog

    from keeper.store import Store

    store = Store(tmp_path / "store.sqlite", structlog.get_logger())
    day = 86_400
    now = 1_800_000_000
    try:
        for i, (ts, realized) in enumerate([(now - 2 * day, 150_0000_0000), (now - 2 * day + 60, -2_0000_0000),
                                            (now - 60, 40_0000_0000)]):
            store.tx(f"i{i}", f"p:a{i}", "p", f"a{i}", f"0x{i:064x}", i, 10**9, 10**9, 500_000, "flash", "public",
                     realized, 100 + i, ts)
            store.outcome(f"i{i}", f"0x{i:064x}", "p", f"a{i}", "included" if realized > 0 else "reverted", 101 + i,
                          ts + 12, 400_000, 10**15, realized, realized, {})
        for j, klass in enumerate(["ours", "ours", "raced", "filtered", "unseen", "unseen"]):
            store.chain_liquidation("p", "aave_v3", f"b{j}", "0xliq", 200 + j, now - 3600, f"0x{j:064x}", 0, {},
                                    10**8, klass, {})
        store.flush()
        ex = SimpleNamespace(paused=False, outcomes=[], in_flight=set(), address=None)
        k = SimpleNamespace(executor=ex, adapters={}, head=None, cycles=0, dry_run=False, store=store)
        snap = snapshot(k, wall=now, now=0.0)
    finally:
        store.close()
    assert snap["pnl_source"] == "store" and snap["misses_source"] == "store"
    assert [r["usd"] for r in snap["pnl"]] == [pytest.approx(148.0), pytest.approx(40.0)]
    assert snap["pnl"][0]["day"] < snap["pnl"][1]["day"]
    assert snap["misses"] == {"ours": 2, "raced": 1, "filtered": 1, "unseen": 2}


async def test_the_risk_curve_is_served_as_json_and_as_the_pages_chart(chain, make_keeper):
    """/api/risk is `keeper risk` of the running keeper's positions (per position liquidation
    prices, per asset the liquidatable-debt curve), /risk.png its chart, which the page shows;
    both behind the token like every route but /healthz."""
    chain.shock("WETH", -8)
    keeper = await make_keeper(dry_run=True)
    await keeper.cycle(await keeper.read_head())
    async with Server(keeper, Metrics(), listen="127.0.0.1:0", token="s3cret") as server, \
            aiohttp.ClientSession() as s:
        assert (await get(s, server.url + "api/risk"))[0] == 401
        status, text = await get(s, server.url + "api/risk", token="s3cret")
        assert status == 200
        doc = json.loads(text)
        assert doc["block"] == keeper.head.number and doc["positions"]
        assert {"aave-v3-devnet", "morpho-devnet"} <= {r["protocol"] for r in doc["positions"]}
        weth = doc["assets"]["WETH"]
        assert [p["drop_pct"] for p in weth][:3] == [0, 1, 2]
        assert all(a["positions"] <= b["positions"] for a, b in zip(weth, weth[1:]))  # more as the price falls
        async with s.get(server.url + "risk.png", headers={"Authorization": "Bearer s3cret"}) as r:
            assert r.status == 200 and r.content_type == "image/png"
            width, height, _ = png_pixels(await r.read(), max_rows=1)
        assert width > 100 and height > 100
        assert 'id="risk"' in page_html().decode()
