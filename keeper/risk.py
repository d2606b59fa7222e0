"""`keeper risk`: where every tracked position breaks, and how much debt (and keeper bonus)
each step of price drop (or, for perps shorts, of price rise) opens, per asset.

Per position and per collateral price feed (others held): the liquidation price, in the
feed's own units (the adapters solve it by integer search on their exact health models:
liquidatable at that answer, not one feed step on the safe side of it), the distance to it
in %, the debt then liquidatable, the loss potential (debt above the collateral's value at
that price) and the bonus one liquidation would pay. Per asset (collateral symbol): for each
step of drop (1% .. 50% by default) the debt that is liquidatable and the bonus, summed over
positions whose liquidation price is at or above that drop (`assets`); and for the rows that
break on a rise (direction "up") the same by step of rise (`assets_rise`, liquidation price
at or below that rise). Covered: Aave V3 (local health model), Morpho Blue and Maker vaults
(barkable once the Spotter is poked at that answer) and Synthetix-v3-style perps (one row per
account and open market, on the market's price feed; a long breaks on a drop, direction
"down", a short on a rise, direction "up", distance > 0; debt = the position's notional, loss
= the insurance fund's shortfall, bonus = the keeper's flag reward; keeper/protocols/perps/
views.py). Other kinds are listed under `not_covered`.

Integers throughout (USD e8, feed answers); floats only in the table and the distances.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable

from . import abi
from .multicall import Call

DEFAULT_STEPS = tuple(range(1, 51))
COVERED = ("aave_v3", "morpho_blue", "maker", "synthetix_perps")


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


def _morpho_oracles(adapter: Any) -> dict[str, tuple[int, str, int, int]]:
    """market id -> (SCALE_FACTOR, base feed, quote answer, base answer) for oracles of the
    ChainlinkOracle shape with one base and one quote feed, from what the adapter keeps (the
    feeds read at market load, their answers at its last refresh); markets whose oracle is
    not of that shape or whose feeds do not answer a positive value are left out."""
    answers = adapter._oracle_answers  # feed (lower case) -> signed answer
    out: dict[str, tuple[int, str, int, int]] = {}
    for m in adapter.markets.values():
        of = m.oracle_feeds
        if of is None or len(of.base) != 1 or len(of.quote) != 1:
            continue
        b, q = answers.get(of.base[0].lower(), 0), answers.get(of.quote[0].lower(), 0)
        if b > 0 and q > 0:
            out[m.id] = (of.scale, of.base[0], q, b)
    return out


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


async def perps_price_feeds(adapter: Any, block: int | str = "latest") -> dict[int, str]:
    """market id -> the perps market's getPriceFeed(id) (checksummed), for the adapter's
    markets whose call answers a non-zero address (keeper risk, keeper stress)."""
    f_feed = abi.load("PerpsMarket").fn("getPriceFeed")
    markets = list(adapter.markets)
    if not markets:
        return {}
    res = await adapter.mc.run([Call(adapter.market, f_feed.encode(m.id)) for m in markets], block)
    return {m.id: abi.to_checksum(d[12:32]) for m, (ok, d) in zip(markets, res)
            if ok and len(d) == 32 and int.from_bytes(d, "big") != 0}


async def _perps_feeds(adapter: Any, block: int, known: dict[str, str]) -> dict[int, tuple[str, int, int, str]]:
    """market id -> (feed, scale, answer, asset) for markets whose getPriceFeed(id) is a
    Chainlink-style feed (decimals <= 18, positive latestAnswer): the market's index price is
    answer * scale, scale = 10**(18 - decimals). asset: the name the other protocols' rows use
    for that feed (known: feed address, lower case -> asset), else the base of the feed's
    description ("WETH / USD" -> "WETH"), else the market symbol. Markets whose feed does not
    answer these are left out (their rows are in wad index prices)."""
    AGG = abi.load("ChainlinkAggregator")
    f_desc = abi.Function("description", [], ["string"])
    markets = list(adapter.markets)
    feed_of = await perps_price_feeds(adapter, block)
    feeds = sorted(set(feed_of.values()))
    if not feeds:
        return {}
    calls = [Call(f, fn.encode()) for f in feeds for fn in (AGG.fn("decimals"), AGG.fn("latestAnswer"), f_desc)]
    res = await adapter.mc.run(calls, block)
    info: dict[str, tuple[int, int, str]] = {}
    for i, f in enumerate(feeds):
        (ok_d, dec), (ok_a, ans), (ok_s, desc) = res[3 * i:3 * i + 3]
        if not (ok_d and ok_a and len(dec) == 32 and len(ans) == 32):
            continue
        decimals, answer = int.from_bytes(dec, "big"), int.from_bytes(ans, "big")
        if decimals > 18 or not 0 < answer < 2**255:
            continue
        name = ""
        if ok_s and desc:
            try:
                text = f_desc.decode_one(desc)
            except Exception:
                text = ""
            base, sep, quote = str(text).partition(" / ")
            if sep and quote.strip().upper() == "USD" and base.strip():
                name = base.strip()
        info[f] = (10 ** (18 - decimals), answer, name)
    out = {}
    for m in markets:
        f = feed_of.get(m.id)
        if f in info:
            scale, answer, name = info[f]
            out[m.id] = (f, scale, answer, known.get(f.lower()) or name or m.symbol)
    return out


async def collect(keeper: Any, head: Any, ts: int | None = None) -> list[dict[str, Any]]:
    """Every covered adapter's per-position rows at block time ts (default: the next
    block's, as the keeper prices), after keeper.gather(head) refreshed them. Perps rows come
    last: their asset is the name the other protocols use for the same feed."""
    rows: list[dict[str, Any]] = []
    known: dict[str, str] = {}  # feed address (lower case) -> asset name, for the perps rows
    perps = []
    for a in keeper.adapters.values():
        t = ts if ts is not None else head.timestamp + a.block_time_s
        if a.kind == "aave_v3":
            agree = await _aave_feeds_agree(a, head.number)
            for r in a.reserves:
                if r.price_source and int(r.price_source, 16):
                    known.setdefault(r.price_source.lower(), r.symbol)
            for r in a.liquidation_prices(t):
                r["price_units"] = "feed" if agree.get(r["asset"]) else "oracle"
                rows.append(r)
        elif a.kind == "morpho_blue":
            oracles = _morpho_oracles(a)
            rows.extend(a.liquidation_prices(t, oracles))
            for mid, (_, feed, _, _) in oracles.items():
                if mid in a.markets:
                    known.setdefault(feed.lower(), a.markets[mid].collateral_symbol)
        elif a.kind == "maker":
            pips = await _maker_pips(a, head.number)
            rows.extend(a.liquidation_prices(t, pips))
            for name, (feed, _, _, _) in pips.items():
                if feed and name in a.ilks:
                    known.setdefault(feed.lower(), a.ilks[name].gem_symbol)
        elif a.kind == "synthetix_perps":
            perps.append((a, t))
    for a, t in perps:
        rows.extend(a.liquidation_prices(t, await _perps_feeds(a, head.number, known)))
    return rows


def not_covered(keeper: Any) -> list[str]:
    return sorted(n for n, a in keeper.adapters.items() if a.kind not in COVERED)


def _points(rs: list[dict[str, Any]], steps: Iterable[int], key: str, hit_at: Any) -> list[dict[str, Any]]:
    pts = []
    for k in (0, *steps):
        hit = [r for r in rs if hit_at(r, k)]
        pts.append({key: k, "positions": len(hit),
                    "debt_usd_e8": sum(r.get("debt_at_liquidation_usd_e8", r["debt_usd_e8"]) for r in hit),
                    "bonus_usd_e8": sum(r.get("bonus_usd_e8", 0) for r in hit)})
    return pts


def _by_asset(rows: Iterable[dict[str, Any]], up: bool) -> dict[str, list[dict[str, Any]]]:
    by_asset: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("liquidation_price") is None or (r.get("direction") == "up") != up:
            continue
        by_asset.setdefault(r["asset"], []).append(r)
    return dict(sorted(by_asset.items()))


def curve(rows: Iterable[dict[str, Any]], steps: Iterable[int] = DEFAULT_STEPS) -> dict[str, list[dict[str, Any]]]:
    """asset -> [{drop_pct, positions, debt_usd_e8, bonus_usd_e8}] for 0 and each step: the
    positions liquidatable once that asset's price falls by drop_pct (those liquidatable now
    included), with the debt and bonus at their liquidation prices. Rows that break on a rise
    (direction "up": perps shorts) are left out: see rise_curve."""
    steps = tuple(steps)
    # liquidatable at a drop of k%: liquidation price >= price * (100 - k) / 100
    return {asset: _points(rs, steps, "drop_pct", lambda r, k: r["liquidation_price"] * 100 >= r["price"] * (100 - k))
            for asset, rs in _by_asset(rows, up=False).items()}


def rise_curve(rows: Iterable[dict[str, Any]], steps: Iterable[int] = DEFAULT_STEPS) -> dict[str, list[dict[str, Any]]]:
    """asset -> [{rise_pct, positions, debt_usd_e8, bonus_usd_e8}] for 0 and each step, over
    the rows with direction "up" only (perps shorts, which break as the price rises): the
    positions liquidatable once that asset's price rises by rise_pct (those liquidatable now
    included), with the debt (position notional) and bonus at their liquidation prices."""
    steps = tuple(steps)
    # liquidatable at a rise of k%: liquidation price <= price * (100 + k) / 100
    return {asset: _points(rs, steps, "rise_pct", lambda r, k: r["liquidation_price"] * 100 <= r["price"] * (100 + k))
            for asset, rs in _by_asset(rows, up=True).items()}


def document(block: int, rows: list[dict[str, Any]], steps: Iterable[int], uncovered: list[str]) -> dict[str, Any]:
    # nearest liquidation first (|distance|: below the price for drops, above it for rises), the positions with none last
    rows = sorted(rows, key=lambda r: abs(r["distance_pct"]) if r.get("distance_pct") is not None else float("inf"))
    steps = tuple(steps)
    return {"block": block, "positions": rows, "assets": curve(rows, steps), "assets_rise": rise_curve(rows, steps),
            "not_covered": uncovered}


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
    for title, key, sign, curves in (("drop", "drop_pct", -1, doc["assets"]),
                                     ("rise", "rise_pct", 1, doc.get("assets_rise", {}))):
        for asset, pts in curves.items():
            lines.append("")
            lines.append(f"{asset}: debt liquidatable and keeper bonus by price {title} (others held)")
            lines.append(f"{title + ' %':>7} {'positions':>9} {'debt':>16} {'bonus':>14}")
            last = None
            for p in pts:
                row_key = (p["positions"], p["debt_usd_e8"])
                if row_key == last and p[key] % 10:
                    continue  # unchanged rows are left out (every 10% shown)
                last = row_key
                pct = f"{sign * p[key]:+d}" if p[key] else "0"
                lines.append(f"{pct:>7} {p['positions']:>9} {_usd(p['debt_usd_e8']):>16} {_usd(p['bonus_usd_e8']):>14}")
    if doc["not_covered"]:
        lines.append("")
        lines.append(f"not covered by risk yet: {', '.join(doc['not_covered'])}")
    return "\n".join(lines)


# -- PNG chart (stdlib only: zlib + struct) ---------------------------------------------
def png(doc: dict[str, Any], width: int = 720, height: int = 400) -> bytes:
    """The chart (keeper/chart.py): x = the asset's price move in % (drops left of 0, rises
    right of it), y = the debt liquidatable (USD) at that move, one line per asset for the
    positions that break on a drop (`assets`) and one per asset for those that break on a rise
    (`assets_rise`, perps shorts), others held."""
    from .chart import line_chart

    series: list[tuple[str, list[tuple[float, float]]]] = []
    for asset, pts in doc.get("assets", {}).items():
        series.append((asset, [(-p["drop_pct"], p["debt_usd_e8"] / 1e8) for p in pts]))
    for asset, pts in doc.get("assets_rise", {}).items():
        series.append((f"{asset} (rise)", [(p["rise_pct"], p["debt_usd_e8"] / 1e8) for p in pts]))
    block = doc.get("block")
    return line_chart(series, title="Debt liquidatable by price move" + (f" (block {block})" if block else ""),
                      x_label="price of the asset, % from now (others held)", y_label="debt liquidatable (USD)",
                      width=width, height=height, x_format=lambda v: f"{v:+.0f}%" if v else "0%")


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
    lines = ", ".join(list(doc["assets"]) + [a + " (rise)" for a in doc.get("assets_rise", {})])
    write_outputs(doc, args.png, args.json, png, lambda d: table(d, args.limit),
                  f"debt liquidatable by price move, one line per asset and direction: {lines}")
    return 0


def write_outputs(doc: dict[str, Any], png_file: str | None, as_json: bool, chart: Callable[[dict[str, Any]], bytes],
                  text: Callable[[dict[str, Any]], str], chart_note: str) -> None:
    """A report command's output (keeper risk, keeper stress): --png FILE gets chart(doc) (and
    doc["png"] its name), then the document as JSON (--json) or text(doc) followed by a line
    naming the chart: "chart: FILE (chart_note)"."""
    if png_file:
        with open(png_file, "wb") as f:
            f.write(chart(doc))
        doc["png"] = str(png_file)
    if as_json:
        print(json.dumps(doc, indent=1, default=str))
    else:
        print(text(doc))
        if png_file:
            print(f"\nchart: {png_file} ({chart_note})")
