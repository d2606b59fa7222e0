"""What a running keeper looks like from outside: the snapshot behind /api/status and the
status page, the health check behind /healthz, and the keeper's balances by token symbol.

Built only from public attributes of a running keeper.app.Keeper (head, cycles, dry_run,
executor.outcomes / paused / in_flight / address, each adapter's positions(), inventory and
reserves, rpc.endpoints_status()) and, when the keeper has one, its store (`keeper.store`
with pnl_by_day(since_ts) and misses(since_ts)); attributes the app may not have yet are read
with getattr and a default: last_cycle_at (time.monotonic() of the last completed cycle),
rpc_down (bool), started_at (time.monotonic() at start), native_balance_wei (int).

Floats only here: this is for display.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .metrics import MISS_CLASSES

# health-factor histogram: bucket i is [EDGES[i], EDGES[i+1]), the last one [EDGES[-1], inf)
HF_EDGES = (0.0, 0.9, 0.95, 1.0, 1.02, 1.05, 1.1, 1.2, 1.5, 2.0, 3.0, 5.0)
MAX_POSITIONS = 100
RECENT = 50
PNL_DAYS = 30
MISSES_DAYS = 7


@dataclass(frozen=True)
class HealthLimits:
    """When /healthz says 503. stalled_s None: max(60 s, 10 x chain.poll_interval_s);
    head_age_s None: max(300 s, 25 x chain.block_time_s), 0 turns the head-age check off
    (a devnet that mines only on demand has old heads while all is well)."""

    stalled_s: float | None = None
    head_age_s: float | None = None


def _finite(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _cfg(keeper: Any, section: str, name: str, default: Any) -> Any:
    return getattr(getattr(getattr(keeper, "cfg", None), section, None), name, default)


def stall_limit_s(keeper: Any, limits: HealthLimits | None = None) -> float:
    if limits is not None and limits.stalled_s is not None:
        return limits.stalled_s
    return max(60.0, 10 * float(_cfg(keeper, "chain", "poll_interval_s", 1.0)))


def head_age_limit_s(keeper: Any, limits: HealthLimits | None = None) -> float:
    if limits is not None and limits.head_age_s is not None:
        return limits.head_age_s
    return max(300.0, 25 * float(_cfg(keeper, "chain", "block_time_s", 12)))


def rpc_all_down(keeper: Any) -> bool:
    if getattr(keeper, "rpc_down", False):
        return True
    eps = endpoints(keeper)
    return bool(eps) and not any(e.get("healthy") for e in eps)


def endpoints(keeper: Any) -> list[dict[str, Any]]:
    rpc = getattr(keeper, "rpc", None)
    if rpc is None or not hasattr(rpc, "endpoints_status"):
        return []
    return [{"url": e.get("url"), "healthy": bool(e.get("healthy")), "reason": e.get("reason"),
             "last_error": e.get("last_error"), "requests": e.get("requests", 0), "failures": e.get("failures", 0)}
            for e in rpc.endpoints_status()]


def health(keeper: Any, now: float | None = None, wall: float | None = None,
           limits: HealthLimits | None = None) -> tuple[bool, str]:
    """(ok, reason). now: time.monotonic() (for last_cycle_at); wall: time.time() (for the head's
    timestamp). Not ok when: every RPC endpoint is down; no cycle completed for longer than the
    stall limit (counted from start-up until the first one); the head is older than the head-age
    limit; sending is paused by a safety limit."""
    now = time.monotonic() if now is None else now
    wall = time.time() if wall is None else wall
    if rpc_all_down(keeper):
        down = [f"{e['url']}: {e.get('reason') or e.get('last_error') or 'down'}" for e in endpoints(keeper)]
        return False, "every RPC endpoint is down" + (" (" + "; ".join(down) + ")" if down else "")
    stall = stall_limit_s(keeper, limits)
    last = getattr(keeper, "last_cycle_at", None)
    since = last if last is not None else getattr(keeper, "started_at", None)
    if since is not None and now - since > stall:
        what = "no cycle completed" if last is not None else "no cycle completed since start-up"
        return False, f"{what} for {now - since:.0f} s (limit {stall:.0f} s)"
    head = getattr(keeper, "head", None)
    age_limit = head_age_limit_s(keeper, limits)
    if head is not None and age_limit > 0 and wall - head.timestamp > age_limit:
        return False, f"head {head.number} is {wall - head.timestamp:.0f} s old (limit {age_limit:.0f} s)"
    ex = getattr(keeper, "executor", None)
    if ex is not None and ex.paused:
        tx = getattr(ex, "tx", None)
        n = getattr(tx, "consecutive_failures", None)
        return False, "sending paused by a safety limit" + (f" after {n} consecutive failed sends" if n else "")
    if head is None:
        return True, "ok (starting: no head yet)"
    return True, "ok"


def wallet_balances(keeper: Any) -> dict[str, float]:
    """The keeper's balances by token symbol, as the adapters last read them (token units):
    Aave reserves (ERC20 balances), the Maker Vat DAI as "vatDAI", and the native balance as
    "ETH" if the app keeps `native_balance_wei`."""
    out: dict[str, float] = {}
    for a in getattr(keeper, "adapters", {}).values():
        inv = getattr(a, "inventory", None)
        if not inv:
            continue
        for r in getattr(a, "reserves", None) or ():
            if r.asset in inv:
                out[r.symbol] = inv[r.asset] / 10**r.decimals
        dai_key = getattr(a, "dai_key", None)
        if isinstance(dai_key, str) and dai_key in inv:
            out["vatDAI"] = inv[dai_key] / 10**45
    native = getattr(keeper, "native_balance_wei", None)
    if isinstance(native, int):
        out["ETH"] = native / 1e18
    return out


def _position_row(r: dict[str, Any]) -> dict[str, Any]:
    coll = r.get("collateral_usd", r.get("available_margin_usd"))
    debt = r.get("debt_usd", r.get("maintenance_margin_usd"))
    opp = r.get("opportunity")
    return {"protocol": r.get("protocol"), "account": str(r.get("account")),
            "health_factor": _finite(r.get("health_factor")), "collateral_usd": _finite(coll),
            "debt_usd": _finite(debt), "summary": str(r.get("summary", "")),
            "liquidatable": opp is not None,
            "expected_usd": _finite(opp.gross_profit_usd_e8 / 1e8) if opp is not None else None}


def positions(keeper: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the riskiest positions across every adapter, at most MAX_POSITIONS; the health
    histogram over all of them)."""
    rows: list[dict[str, Any]] = []
    per_protocol: dict[str, list[int]] = {}
    total = [0] * len(HF_EDGES)
    for name, a in getattr(keeper, "adapters", {}).items():
        try:
            rs = a.positions()
        except Exception:  # a display must never take the keeper down
            continue
        counts = per_protocol.setdefault(name, [0] * len(HF_EDGES))
        for r in rs:
            row = _position_row(r)
            rows.append(row)
            hf = row["health_factor"]
            if hf is None:
                continue
            i = max(0, sum(1 for e in HF_EDGES if hf >= e) - 1)
            counts[i] += 1
            total[i] += 1
    rows.sort(key=lambda r: (r["health_factor"] is None, r["health_factor"] or 0.0))
    return rows[:MAX_POSITIONS], {"edges": list(HF_EDGES), "counts": total, "protocols": per_protocol}


def _realized_usd(keeper: Any, out: Any) -> float | None:
    fn = getattr(keeper, "realized_profit_usd_e8", None)
    if fn is None or out.status != "confirmed":
        return None
    try:
        v = fn(out)
    except Exception:
        return None
    return None if v is None else v / 1e8


def recent(keeper: Any, n: int = RECENT) -> list[dict[str, Any]]:
    """The executor's last n outcomes, newest first."""
    ex = getattr(keeper, "executor", None)
    outs = list(getattr(ex, "outcomes", ()) or ())[-n:]
    rows = []
    for o in reversed(outs):
        rows.append({"protocol": o.opp.protocol, "account": o.opp.account, "block": o.opp.block, "status": o.status,
                     "reason": o.reason, "expected_usd": o.expected_profit_usd_e8 / 1e8,
                     "realized_usd": _realized_usd(keeper, o), "tx": o.tx_hash,
                     "what": getattr(o.opp.plan, "description", "")})
    return rows


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


def _usd(rec: Any) -> float | None:
    if isinstance(rec, dict):
        if "usd" in rec:
            return _finite(rec["usd"])
        for k in ("usd_e8", "realized_usd_e8", "profit_usd_e8"):
            if k in rec:
                return _finite(rec[k] / 1e8)
        return None
    return _finite(rec / 1e8) if isinstance(rec, int) else _finite(rec)


def pnl(keeper: Any, wall: float) -> tuple[list[dict[str, Any]], str]:
    """Realized PnL per UTC day, oldest first: from the store when there is one (its
    pnl_by_day(since_ts): a list of {"day", "usd" | "usd_e8"} or (day, usd_e8) pairs, or a
    {day: usd_e8} dict), else from the outcomes in memory (each dated by its block, at
    chain.block_time_s per block before the current head)."""
    store = getattr(keeper, "store", None)
    if store is not None and hasattr(store, "pnl_by_day"):
        try:
            raw = store.pnl_by_day(int(wall - PNL_DAYS * 86_400))
        except Exception:
            raw = None
        if raw is not None:
            items = raw.items() if isinstance(raw, dict) else raw
            rows = []
            for it in items:
                if isinstance(it, dict):
                    day, usd = it.get("day"), _usd(it)
                else:
                    day, usd = it[0], _usd(it[1])
                if isinstance(day, (int, float)):
                    day = _day(day)
                rows.append({"day": str(day), "usd": usd or 0.0})
            return sorted(rows, key=lambda r: r["day"]), "store"
    head = getattr(keeper, "head", None)
    bt = float(_cfg(keeper, "chain", "block_time_s", 12))
    by_day: dict[str, float] = {}
    ex = getattr(keeper, "executor", None)
    for o in list(getattr(ex, "outcomes", ()) or ()):
        usd = _realized_usd(keeper, o)
        if usd is None:
            continue
        ts = head.timestamp - (head.number - o.opp.block) * bt if head is not None else wall
        d = _day(ts)
        by_day[d] = by_day.get(d, 0.0) + usd
    return [{"day": d, "usd": v} for d, v in sorted(by_day.items())], "memory"


def misses(keeper: Any, wall: float) -> tuple[dict[str, int], str]:
    """Liquidations on chain by class over the last MISSES_DAYS. From the store: its
    chain_classes(since_ts) ({class: count}, ours included) where it has one (itself or its
    reader), else its misses(since_ts) (records with "klass", ours excluded) with "ours" counted
    from the confirmed outcomes in memory. Without a store: "ours" from memory, the rest 0."""
    out = {k: 0 for k in MISS_CLASSES}
    ex = getattr(keeper, "executor", None)
    ours_in_memory = sum(1 for o in list(getattr(ex, "outcomes", ()) or ()) if o.status == "confirmed")
    store = getattr(keeper, "store", None)
    since = int(wall - MISSES_DAYS * 86_400)
    if store is not None:
        classes = getattr(store, "chain_classes", None) or getattr(getattr(store, "reader", None), "chain_classes", None)
        try:
            if classes is not None:
                for k, v in dict(classes(since)).items():
                    if k in out:
                        out[k] = int(v or 0)
                return out, "store"
            if hasattr(store, "misses"):
                raw = store.misses(since)
                if isinstance(raw, dict):
                    for k, v in raw.items():
                        if k in out:
                            out[k] = len(v) if isinstance(v, (list, tuple)) else int(v or 0)
                else:
                    c = Counter((r.get("klass") or r.get("class")) if isinstance(r, dict) else getattr(r, "klass", None)
                                for r in raw)
                    for k in out:
                        out[k] = c.get(k, 0)
                if not out["ours"]:
                    out["ours"] = ours_in_memory
                return out, "store"
        except Exception:  # a display must never take the keeper down: fall back to memory
            pass
    out["ours"] = ours_in_memory
    return out, "memory"


def snapshot(keeper: Any, wall: float | None = None, now: float | None = None,
             limits: HealthLimits | None = None) -> dict[str, Any]:
    """Everything the status page shows, JSON-ready."""
    wall = time.time() if wall is None else wall
    head = getattr(keeper, "head", None)
    ex = getattr(keeper, "executor", None)
    ok, reason = health(keeper, now, wall, limits)
    pos, hist = positions(keeper)
    pnl_rows, pnl_source = pnl(keeper, wall)
    miss, miss_source = misses(keeper, wall)
    return {
        "time": wall,
        "head": {"number": head.number if head else None, "timestamp": head.timestamp if head else None,
                 "lag_s": round(max(wall - head.timestamp, 0.0), 1) if head else None},
        "cycles": getattr(keeper, "cycles", 0),
        "paused": bool(ex is not None and ex.paused),
        "dry_run": bool(getattr(keeper, "dry_run", False)),
        "address": getattr(ex, "address", None),
        "in_flight": len(ex.in_flight) if ex is not None else 0,
        "healthy": ok,
        "health": reason,
        "endpoints": endpoints(keeper),
        "tracked": {n: len(getattr(a, "accounts", ()) or ()) for n, a in getattr(keeper, "adapters", {}).items()},
        "balances": wallet_balances(keeper),
        "health_histogram": hist,
        "positions": pos,
        "recent": recent(keeper),
        "pnl": pnl_rows,
        "pnl_source": pnl_source,
        "misses": miss,
        "misses_source": miss_source,
    }
