"""`keeper report --config FILE [--since 2026-11-01|7d|24h] [--json|--csv]`: the operator's
record from the store (keeper/store.py): PnL per protocol and per day (realized USD after gas),
gas spent, success rate (included / finished sends), capture rate (the keeper's / all on-chain
liquidations seen in the watched protocols), misses by class (raced: the competitor and how many
blocks after the keeper first saw the account), best and worst trades, every action with its
expected and realized profit, and the skips with their reasons.

Human tables by default; `--json` one JSON document (USD as e8 integers and as floats, wei as
decimal strings); `--csv` the actions, one row each. A missing store is one line, exit 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import time
from calendar import timegm
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .store import StoreError, StoreReader, store_path_for

_REL = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$", re.I)
_UNIT_S = {"m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
ACTIONS_SHOWN = 50
CSV_FIELDS = ("sent_ts", "sent_block", "protocol", "account", "status", "tx_hash", "block", "route", "broadcaster",
              "replacements", "expected_usd", "realized_usd", "gas_used", "gas_cost_eth", "intent_id")


def parse_since(text: str | None, now: float | None = None) -> int:
    """A unix time from `2026-11-01` (UTC midnight), `2026-11-01T12:30` (UTC), or a span back
    from now: `30m`, `24h`, `7d`, `2w`. None or "all": 0. ValueError with a readable message."""
    if text is None or text.strip().lower() in ("", "all"):
        return 0
    now = time.time() if now is None else now
    m = _REL.match(text)
    if m:
        return max(int(now) - int(m.group(1)) * _UNIT_S[m.group(2).lower()], 0)
    t = text.strip()
    for fmt in ("%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return timegm(time.strptime(t, fmt))
        except ValueError:
            continue
    raise ValueError(f"not a date or a span: {text!r} (e.g. 2026-11-01, 2026-11-01T12:00, 24h, 7d)")


def since_arg(text: str) -> int:
    try:
        return parse_since(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _usd(e8: int | None) -> float | None:
    return None if e8 is None else e8 / 1e8


def _iso(ts: int | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_usd(row: dict[str, Any]) -> dict[str, Any]:
    """e8 fields get a float USD twin (x_usd_e8 -> x_usd); wei as a decimal string (JSON-safe)."""
    out = dict(row)
    for k, v in row.items():
        if k.endswith("_usd_e8"):
            out[k[:-3]] = _usd(v)
        elif k.endswith("_wei"):
            out[k] = str(v)
            out[k[:-4] + "_eth"] = int(v) / 1e18
    return out


def build(reader: StoreReader, since_ts: int = 0) -> dict[str, Any]:
    """The whole report as one JSON-ready document."""
    s = reader.summary(since_ts)
    return {
        "store": str(reader.path), "since": _iso(since_ts) if since_ts else None,
        "first": _iso(s["first_ts"]), "last": _iso(s["last_ts"]),
        "summary": _with_usd({k: v for k, v in s.items() if k not in ("best", "worst")}),
        "by_protocol": [_with_usd(r) for r in reader.pnl_by_protocol(since_ts)],
        "by_day": [_with_usd(r) for r in reader.pnl_by_day(since_ts)],
        "best": [_with_usd(a) for a in s["best"]],
        "worst": [_with_usd(a) for a in s["worst"]],
        "actions": [_with_usd(a) for a in reader.actions(since_ts)],
        "skips": reader.skips(since_ts),
        "misses": reader.misses(since_ts),
    }


def _m(v: float | None) -> str:
    return "-" if v is None else f"{v:,.2f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def _short(a: str | None) -> str:
    a = a or "-"
    return a if len(a) <= 14 else f"{a[:8]}…{a[-4:]}"


def render_text(doc: dict[str, Any]) -> str:
    s = doc["summary"]
    act = s["actions"]
    lines = [f"store {doc['store']}: {doc['first'] or '-'} .. {doc['last'] or '-'}"
             + (f" (since {doc['since']})" if doc["since"] else ""),
             f"realized ${_m(s['realized_usd'])} after gas (expected ${_m(s['expected_usd'])} on included); "
             f"gas {s['gas_cost_eth']:.6f} ETH" + (f" (${_m(s['gas_usd'])})" if s["gas_usd_e8"] else ""),
             f"sent {act['sent']}: included {act['included']}, reverted {act['reverted']}, cancelled "
             f"{act['cancelled']}, dropped {act['dropped']}, pending {act['pending']}; success rate "
             f"{_pct(s['success_rate'])}",
             f"on-chain liquidations {s['chain_liquidations']}: ours {s['classes']['ours']}, raced "
             f"{s['classes']['raced']}, filtered {s['classes']['filtered']}, unseen {s['classes']['unseen']}; "
             f"capture rate {_pct(s['capture_rate'])}",
             f"opportunities seen {s['opportunities_seen']} ({s['accounts_seen']} accounts); skips {s['skips']}", ""]
    lines.append(f"{'protocol':<18} {'sent':>5} {'incl':>5} {'revert':>6} {'success':>8} {'expected $':>13} "
                 f"{'realized $':>13} {'gas ETH':>11} {'on chain':>8} {'ours':>5} {'capture':>8}")
    for r in doc["by_protocol"]:
        lines.append(f"{r['protocol']:<18} {r['sent']:>5} {r['included']:>5} {r['reverted']:>6} "
                     f"{_pct(r['success_rate']):>8} {_m(r['expected_usd']):>13} {_m(r['realized_usd']):>13} "
                     f"{r['gas_cost_eth']:>11.6f} {r['chain_liquidations']:>8} {r['ours']:>5} "
                     f"{_pct(r['capture_rate']):>8}")
    lines += ["", f"{'day (UTC)':<11} {'sent':>5} {'incl':>5} {'success':>8} {'expected $':>13} {'realized $':>13} "
                  f"{'gas ETH':>11}"]
    for r in doc["by_day"]:
        lines.append(f"{r['day']:<11} {r['sent']:>5} {r['included']:>5} {_pct(r['success_rate']):>8} "
                     f"{_m(r['expected_usd']):>13} {_m(r['realized_usd']):>13} {r['gas_cost_eth']:>11.6f}")
    for title, rows in (("best trades", doc["best"]), ("worst trades", doc["worst"])):
        lines += ["", f"{title}:"]
        lines += [f"  {_m(a['realized_usd']):>12} $  expected {_m(a['expected_usd']):>12} $  {a['protocol']:<16} "
                  f"{a['account']}  {a['tx_hash'] or '-'}" for a in rows] or ["  (none)"]
    acts = doc["actions"]
    lines += ["", f"actions ({len(acts)}{f', last {ACTIONS_SHOWN} shown; --csv for all' if len(acts) > ACTIONS_SHOWN else ''}):",
              f"{'sent (UTC)':<20} {'protocol':<16} {'account':<42} {'status':<9} {'route':<9} {'expected $':>12} "
              f"{'realized $':>12} {'gas ETH':>10} tx"]
    for a in acts[-ACTIONS_SHOWN:]:
        lines.append(f"{_iso(a['sent_ts']) or '-':<20} {a['protocol']:<16} {a['account']:<42} {a['status']:<9} "
                     f"{a['route'] or '-':<9} {_m(a['expected_usd']):>12} {_m(a['realized_usd']):>12} "
                     f"{a['gas_cost_eth']:>10.6f} {a['tx_hash'] or '-'}")
    lines += ["", "skips (reason: count, accounts):"]
    lines += [f"  {r['protocol']:<16} {r['reason']:<32} {r['count']:>7} {r['accounts']:>6}" for r in doc["skips"]] \
        or ["  (none)"]
    misses = doc["misses"]
    lines += ["", f"missed liquidations ({len(misses)}):"]
    for m in misses[-ACTIONS_SHOWN:]:
        w = m["why"]
        if m["klass"] == "raced":
            what = f"by {w.get('competitor')} {w.get('blocks_behind')} blocks after first seen" + (
                f" (our tx {w.get('our_tx')})" if w.get("sent") else "")
        elif m["klass"] == "filtered":
            what = f"skipped: {w.get('reason')}"
        else:
            what = f"by {w.get('competitor') or m['liquidator']}"
        lines.append(f"  block {m['block']:<10} {m['protocol']:<16} {m['account']:<42} {m['klass']:<9} "
                     f"${_m(_usd(m['value_usd_e8']))}  {what}")
    if not misses:
        lines.append("  (none)")
    return "\n".join(lines) + "\n"


def render_csv(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for a in doc["actions"]:
        w.writerow({**a, "sent_ts": _iso(a["sent_ts"])})
    return buf.getvalue()


def resolve_store(cfg: Any) -> Path:
    """keeper.store_path, else the default beside the journal for keeper.address; with neither,
    the one store found there (several: say which to choose)."""
    if getattr(cfg.keeper, "store_path", None) or cfg.keeper.address:
        return store_path_for(cfg)
    folder = store_path_for(cfg).parent
    found = sorted(folder.glob("store-*.sqlite")) if folder.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise StoreError(f"keeper.store_path: no store in {folder} (the keeper creates it when it runs)")
    raise ConfigError(f"keeper.store_path: several stores in {folder} ({', '.join(p.name for p in found)}); "
                      "set keeper.store_path or keeper.address")


def main(args: argparse.Namespace) -> int:
    from .config import load_config

    cfg = load_config(args.config)
    reader = StoreReader(Path(args.store) if getattr(args, "store", None) else resolve_store(cfg))
    try:
        doc = build(reader, args.since or 0)
    finally:
        reader.close()
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
    elif args.csv:
        print(render_csv(doc), end="")
    else:
        print(render_text(doc), end="")
    return 0
