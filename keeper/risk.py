"""`keeper risk`: where every tracked position breaks, and how much debt (and keeper bonus)
each step of price drop opens, per asset.

Per position and per collateral price feed (others held): the liquidation price, in the
feed's own units (the adapters solve it by integer bisection on their exact health models:
liquidatable at that answer, not one step above it), the distance to it in %, the debt then
liquidatable, the loss potential (debt above the collateral's value at that price) and the
bonus one liquidation would pay. Per asset (collateral symbol): for each step of drop
(1% .. 50% by default) the debt that is liquidatable and the bonus, summed over positions
whose liquidation price is at or above that drop. Covered: Aave V3 (local health model),
Morpho Blue and Maker vaults (barkable once the Spotter is poked at that answer); perps are
listed under `not_covered`.

Integers throughout (USD e8, feed answers); floats only in the table and the distances.
"""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any, Iterable

from . import abi
from .multicall import Call

DEFAULT_STEPS = tuple(range(1, 51))


def png_path(text: str) -> str:
    """--png FILE: a file in an existing directory (checked before anything starts)."""
    import argparse
    import os

    d = os.path.dirname(os.path.abspath(text))
    if not text.strip() or os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"not a file name: {text!r}")
    if not os.path.isdir(d):
        raise argparse.ArgumentTypeError(f"no such directory: {d}")
    return text


async def _morpho_oracles(adapter: Any, block: int) -> dict[str, tuple[int, str, int, int]]:
    """market id -> (SCALE_FACTOR, base feed, quote answer, base answer) for oracles of the
    ChainlinkOracle shape; markets whose oracle does not answer these are left out."""
    ORACLE, AGG = abi.load("MorphoChainlinkOracle"), abi.load("ChainlinkAggregator")
    markets = list(adapter.markets.values())
    if not markets:
        return {}
    calls = [Call(m.oracle, ORACLE.fn(f).encode()) for m in markets for f in ("SCALE_FACTOR", "BASE_FEED_1", "QUOTE_FEED_1")]
    res = await adapter.mc.run(calls, block)
    shape: dict[str, tuple[int, str, str]] = {}
    for i, m in enumerate(markets):
        (ok1, s), (ok2, b), (ok3, q) = res[3 * i:3 * i + 3]
        if ok1 and ok2 and ok3 and len(s) == len(b) == len(q) == 32:
            shape[m.id] = (int.from_bytes(s, "big"), abi.to_checksum(b[12:]), abi.to_checksum(q[12:]))
    feeds = sorted({f for _, b, q in shape.values() for f in (b, q)})
    answers: dict[str, int] = {}
    if feeds:
        res = await adapter.mc.run([Call(f, AGG.fn("latestAnswer").encode()) for f in feeds], block)
        for f, (ok, d) in zip(feeds, res):
            a = int.from_bytes(d, "big") if ok and len(d) == 32 else 0
            answers[f] = a if 0 < a < 2**255 else 0
    return {mid: (s, b, answers[q], answers[b]) for mid, (s, b, q) in shape.items() if answers.get(q) and answers.get(b)}


async def _maker_pips(adapter: Any, block: int) -> dict[str, tuple[str, int, int, int]]:
    """ilk name -> (feed, scale, answer, Spotter par): for a pip of the AggregatorPip shape
    (src(), scale()) its src aggregator and that feed's latestAnswer; otherwise feed "",
    scale 1 and the pip's peek() value (wad). Ilks whose pip answers neither are left out."""
    AGG = abi.load("ChainlinkAggregator")
    f_src, f_scale = abi.Function("src", [], ["address"]), abi.Function("scale", [], ["uint256"])
    f_peek = abi.Function("peek", [], ["bytes32", "bool"])
    ilks = [k for k in adapter.ilks.values() if k.pip and int(k.pip, 16)]
    if not ilks or not adapter.spotter:
        return {}
    calls = [Call(adapter.spotter, abi.load("MakerSpotter").fn("par").encode())]
    calls += [Call(k.pip, f.encode()) for k in ilks for f in (f_src, f_scale, f_peek)]
    res = await adapter.mc.run(calls, block)
    ok, d = res[0]
    par = int.from_bytes(d, "big") if ok and len(d) == 32 else 0
    if par == 0:
        return {}
    out: dict[str, tuple[str, int, int, int]] = {}
    srcs: dict[str, tuple[str, int]] = {}
    for i, k in enumerate(ilks):
        (ok1, s), (ok2, sc), (ok3, pk) = res[1 + 3 * i:4 + 3 * i]
        if ok1 and ok2 and len(s) == len(sc) == 32 and int.from_bytes(sc, "big") > 0:
            srcs[k.name] = (abi.to_checksum(s[12:]), int.from_bytes(sc, "big"))
        elif ok3 and len(pk) == 64 and pk[63] == 1 and int.from_bytes(pk[:32], "big") > 0:
            out[k.name] = ("", 1, int.from_bytes(pk[:32], "big"), par)
    if srcs:
        feeds = sorted({f for f, _ in srcs.values()})
        res = await adapter.mc.run([Call(f, AGG.fn("latestAnswer").encode()) for f in feeds], block)
        answers = {}
        for f, (ok, d) in zip(feeds, res):
            a = int.from_bytes(d, "big") if ok and len(d) == 32 else 0
            answers[f] = a if 0 < a < 2**255 else 0
        for name, (f, sc) in srcs.items():
            if answers[f]:
                out[name] = (f, sc, answers[f], par)
    return out


async def _aave_feeds_agree(adapter: Any, block: int) -> dict[str, bool]:
    """reserve symbol -> whether the AaveOracle price equals its source's latestAnswer (so a
    liquidation price is an answer of that feed)."""
    AGG = abi.load("ChainlinkAggregator")
    rs = [r for r in adapter.reserves if r.price_source and int(r.price_source, 16)]
    if not rs:
        return {}
    res = await adapter.mc.run([Call(r.price_source, AGG.fn("latestAnswer").encode()) for r in rs], block)
    return {r.symbol: ok and len(d) == 32 and int.from_bytes(d, "big") == r.price for r, (ok, d) in zip(rs, res)}


async def collect(keeper: Any, head: Any, ts: int | None = None) -> list[dict[str, Any]]:
    """Every covered adapter's per-position rows at block time ts (default: the next
    block's, as the keeper prices), after keeper.gather(head) refreshed them."""
    rows: list[dict[str, Any]] = []
    for a in keeper.adapters.values():
        t = ts if ts is not None else head.timestamp + a.block_time_s
        if a.kind == "aave_v3":
            agree = await _aave_feeds_agree(a, head.number)
            for r in a.liquidation_prices(t):
                r["price_units"] = "feed" if agree.get(r["asset"]) else "oracle"
                rows.append(r)
        elif a.kind == "morpho_blue":
            rows.extend(a.liquidation_prices(t, await _morpho_oracles(a, head.number)))
        elif a.kind == "maker":
            rows.extend(a.liquidation_prices(t, await _maker_pips(a, head.number)))
    return rows


def not_covered(keeper: Any) -> list[str]:
    return sorted(n for n, a in keeper.adapters.items() if a.kind not in ("aave_v3", "morpho_blue", "maker"))


def curve(rows: Iterable[dict[str, Any]], steps: Iterable[int] = DEFAULT_STEPS) -> dict[str, list[dict[str, Any]]]:
    """asset -> [{drop_pct, positions, debt_usd_e8, bonus_usd_e8}] for 0 and each step: the
    positions liquidatable once that asset's price falls by drop_pct (those liquidatable now
    included), with the debt and bonus at their liquidation prices."""
    by_asset: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("liquidation_price") is None:
            continue
        by_asset.setdefault(r["asset"], []).append(r)
    out: dict[str, list[dict[str, Any]]] = {}
    for asset, rs in sorted(by_asset.items()):
        pts = []
        for k in (0, *steps):
            # liquidatable at a drop of k%: liquidation price >= price * (100 - k) / 100
            hit = [r for r in rs if r["liquidation_price"] * 100 >= r["price"] * (100 - k)]
            pts.append({"drop_pct": k, "positions": len(hit),
                        "debt_usd_e8": sum(r.get("debt_at_liquidation_usd_e8", r["debt_usd_e8"]) for r in hit),
                        "bonus_usd_e8": sum(r.get("bonus_usd_e8", 0) for r in hit)})
        out[asset] = pts
    return out


def document(block: int, rows: list[dict[str, Any]], steps: Iterable[int], uncovered: list[str]) -> dict[str, Any]:
    # nearest liquidation first (distances are <= 0), the positions with none last
    rows = sorted(rows, key=lambda r: -r["distance_pct"] if r.get("distance_pct") is not None else float("inf"))
    return {"block": block, "positions": rows, "assets": curve(rows, steps), "not_covered": uncovered}


def _usd(e8: int | None) -> str:
    return "-" if e8 is None else f"${e8 / 1e8:,.2f}"


def table(doc: dict[str, Any], limit: int = 30) -> str:
    lines = [f"block {doc['block']}: {len(doc['positions'])} position/feed pairs, nearest liquidation first"]
    lines.append(f"{'protocol':<16} {'account':<42} {'asset':<6} {'price':>14} {'liq. price':>14} {'dist %':>8} "
                 f"{'debt':>14} {'loss':>12} {'bonus':>12}")
    shown = doc["positions"][:limit] if limit > 0 else doc["positions"]
    for r in shown:
        lp, dist = r.get("liquidation_price"), r.get("distance_pct")
        lines.append(f"{r['protocol']:<16} {str(r['account']):<42} {r['asset']:<6} {r['price']:>14} "
                     f"{'-' if lp is None else lp:>14} {'-' if dist is None else f'{dist:.2f}':>8} "
                     f"{_usd(r.get('debt_at_liquidation_usd_e8', r['debt_usd_e8'])):>14} "
                     f"{_usd(r.get('loss_usd_e8')):>12} {_usd(r.get('bonus_usd_e8')):>12}")
    for asset, pts in doc["assets"].items():
        lines.append("")
        lines.append(f"{asset}: debt liquidatable and keeper bonus by price drop (others held)")
        lines.append(f"{'drop %':>7} {'positions':>9} {'debt':>16} {'bonus':>14}")
        last = None
        for p in pts:
            key = (p["positions"], p["debt_usd_e8"])
            if key == last and p["drop_pct"] % 10:
                continue  # unchanged rows are left out (every 10% shown)
            last = key
            lines.append(f"{-p['drop_pct']:>7} {p['positions']:>9} {_usd(p['debt_usd_e8']):>16} {_usd(p['bonus_usd_e8']):>14}")
    if doc["not_covered"]:
        lines.append("")
        lines.append(f"not covered by risk yet: {', '.join(doc['not_covered'])}")
    return "\n".join(lines)


# -- PNG chart (stdlib only: zlib + struct) ---------------------------------------------
COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def png(doc: dict[str, Any], width: int = 640, height: int = 360) -> bytes:
    """A line chart: x = price drop 0..max step, y = debt liquidatable (USD), one line per
    asset (colors in COLORS order of doc['assets']), on a white background with axes and a
    light grid every 10%. No text (stdlib only): the JSON and the table carry the numbers."""
    px = [[(255, 255, 255)] * width for _ in range(height)]
    ml, mr, mt, mb = 40, 10, 10, 30
    w, h = width - ml - mr, height - mt - mb
    series = list(doc["assets"].items())
    max_x = max((p["drop_pct"] for _, pts in series for p in pts), default=50) or 1
    max_y = max((p["debt_usd_e8"] for _, pts in series for p in pts), default=0) or 1

    def put(x: int, y: int, c: tuple[int, int, int]) -> None:
        if 0 <= x < width and 0 <= y < height:
            px[y][x] = c

    for k in range(0, max_x + 1, 10):
        x = ml + k * w // max_x
        for y in range(mt, mt + h):
            put(x, y, (225, 225, 225))
    for x in range(ml, ml + w + 1):
        put(x, mt + h, (0, 0, 0))
    for y in range(mt, mt + h + 1):
        put(ml, y, (0, 0, 0))
    for i, (_, pts) in enumerate(series):
        c = COLORS[i % len(COLORS)]
        xy = [(ml + p["drop_pct"] * w // max_x, mt + h - p["debt_usd_e8"] * h // max_y) for p in pts]
        for (x0, y0), (x1, y1) in zip(xy, xy[1:]):
            n = max(abs(x1 - x0), abs(y1 - y0), 1)
            for s in range(n + 1):
                x, y = x0 + (x1 - x0) * s // n, y0 + (y1 - y0) * s // n
                for dx in (0, 1):
                    for dy in (0, 1):
                        put(x + dx, y + dy, c)
        for j in range(12):  # legend swatch
            for k in range(6):
                put(ml + 10 + i * 20 + j % 12, mt + 5 + k, c)
    raw = b"".join(b"\x00" + bytes(v for p in row for v in p) for row in px)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


async def main(args: Any) -> int:
    """keeper risk --config FILE [--json] [--png FILE] [--limit N]."""
    from .app import Keeper
    from .config import load_config

    cfg = load_config(args.config)
    keeper = Keeper(cfg, dry_run=True, record=False)  # a view: nothing goes to the store
    try:
        await keeper.start()
        head = await keeper.read_head()
        await keeper.gather(head)
        doc = document(head.number, await collect(keeper, head), DEFAULT_STEPS, not_covered(keeper))
    finally:
        await keeper.close()
    if args.png:
        with open(args.png, "wb") as f:
            f.write(png(doc))
        doc["png"] = str(args.png)
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
    else:
        print(table(doc, args.limit))
        if args.png:
            print(f"\nchart: {args.png} (debt liquidatable by price drop, one line per asset: "
                  f"{', '.join(doc['assets'])})")
    return 0
