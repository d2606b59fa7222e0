"""`keeper stress`: the table and the chart."""

from __future__ import annotations

from typing import Any
from ..risk import _usd
from .accounting import _series
from .chain import RAD_PER_USD_E8, WAD_PER_USD_E8


# --- output ------------------------------------------------------------------------------------

def _maker_line(x: dict[str, Any], asset: str, decimals: int) -> str:
    return (f"maker: {x['barks']} barks, {x['takes']} takes, {x['redos']} redos, gem sold "
            f"{x['gem_sold_raw'] / 10 ** decimals:,.4f} {asset} ({_usd(x['gem_sold_usd_e8'])} all ilks), DAI raised "
            f"{_usd(x['dai_raised_usd_e8'])}, uncovered tab {_usd(x['uncovered_usd_e8'])} "
            f"({len(x['uncovered_auctions'])} auctions; debt part {_usd(x['uncovered_debt_rad'] // RAD_PER_USD_E8)}"
            f"{', some unknown' if x['uncovered_debt_unknown'] else ''}), open {len(x['open_auctions'])} auctions "
            f"(tab {_usd(x['open_tab_usd_e8'])})")


def _perps_line(x: dict[str, Any]) -> str:
    return (f"perps: {x['accounts_flagged']} accounts flagged, {x['positions_closed']} position closes "
            f"({_usd(x['notional_closed_usd_e8'])} notional), shortfall {_usd(x['shortfall_usd_e8'])} "
            f"({len(x['shortfall_accounts'])} accounts), insurance fund "
            f"{_usd(x['insurance_fund_before_wad'] // WAD_PER_USD_E8)} -> "
            f"{_usd(x['insurance_fund_after_wad'] // WAD_PER_USD_E8)}")


def table(doc: dict[str, Any]) -> str:
    lines = [f"stress {doc['asset']} path {','.join(f'{p:g}' for p in doc['path_pct'])} impact "
             f"{'on' if doc['impact'] else 'off'}, fork of {doc['source']} at block {doc['fork_block']}",
             f"feeds {', '.join(doc['feeds'])}; deepest pool {doc['deepest_pool'] or '-'}"]
    moved = [f"{k['ilk']}" for k in doc.get("maker_ilks", []) if k["moved"]]
    if moved or doc.get("perps_markets"):
        pm = ", ".join(f"{x['symbol']} ({x['id']})" for x in doc.get("perps_markets", []))
        lines.append(f"also moved: Maker ilks {', '.join(moved) or '-'} (Spotter poked); perps markets {pm or '-'}")
    lines.append(f"{'step':>4} {'move %':>7} {'oracle':>14} {'pool before':>14} {'pool after':>14} {'impact %':>9} "
                 f"{'liqs':>5} {'sold':>16} {'volume USD':>16} {'bad debt':>14} {'keeper PnL':>14} {'cycles':>6}")
    for s in doc["steps"]:
        imp = "-" if s["impact_pct"] is None else f"{s['impact_pct']:.2f}"
        lines.append(f"{s['step']:>4} {s['pct']:>7g} {s['oracle_after'] / 1e8:>14,.4f} "
                     f"{_usd(s['pool_price_before_usd_e8']):>14} {_usd(s['pool_price_after_usd_e8']):>14} {imp:>9} "
                     f"{s['positions_liquidated']:>5} {s['sold_raw'] / 10 ** doc['decimals']:>16,.4f} "
                     f"{_usd(s['volume_usd_e8']):>16} {_usd(s['bad_debt_usd_e8']):>14} {_usd(s['keeper_pnl_usd_e8']):>14} "
                     f"{s['cycles']:>6}")
        by = ", ".join(f"{k} {v}" for k, v in s["positions_liquidated_by"].items())
        lines.append(f"     liquidated: {by or '-'}; bad debt: aave {_usd(s['bad_debt_aave_usd_e8'])}, morpho "
                     f"{_usd(s['bad_debt_morpho_usd_e8'])}, maker {_usd(s['bad_debt_maker_usd_e8'])}, perps "
                     f"{_usd(s['bad_debt_perps_usd_e8'])}"
                     + (f"; fork time +{s['time_advanced_s']} s" if s["time_advanced_s"] else ""))
        if s.get("maker"):
            lines.append("     " + _maker_line(s["maker"], doc["asset"], doc["decimals"]))
        if s.get("perps"):
            lines.append("     " + _perps_line(s["perps"]))
    t = doc["totals"]
    lines.append(f"total: {t['positions_liquidated']} liquidations, sold {t['sold_raw'] / 10 ** doc['decimals']:,.4f} "
                 f"{doc['asset']} ({_usd(t['sold_usd_e8'])}) on Aave/Morpho, volume {_usd(t['volume_usd_e8'])}, "
                 f"bad debt {_usd(t['bad_debt_usd_e8'])}, keeper PnL {_usd(t['keeper_pnl_usd_e8'])}, "
                 f"{t['failed']} failed sends")
    if t.get("maker"):
        x = t["maker"]
        lines.append(f"total maker: {x['barks']} barks, {x['takes']} takes, uncovered tab {_usd(x['uncovered_usd_e8'])}, "
                     f"{x['open_auctions']} auctions still open (tab {_usd(x['open_tab_usd_e8'])})")
    if t.get("perps"):
        x = t["perps"]
        lines.append(f"total perps: {x['accounts_flagged']} accounts flagged, shortfall {_usd(x['shortfall_usd_e8'])}, "
                     f"insurance fund {_usd(x['insurance_fund_before_wad'] // WAD_PER_USD_E8)} -> "
                     f"{_usd(x['insurance_fund_after_wad'] // WAD_PER_USD_E8)}")
    capped = [str(s["step"]) for s in doc["steps"] if s["capped"]]
    if capped:
        lines.append(f"cut short at {doc['max_cycles']} cycles (still liquidating) in step(s) "
                     f"{', '.join(capped)}: raise --cycles")
    if doc["not_covered"]:
        lines.append(f"not covered by stress: {', '.join(doc['not_covered'])}")
    return "\n".join(lines)


def png(doc: dict[str, Any]) -> bytes:
    """The chart (keeper/chart.py): x = the step of the path, y = cumulative USD after it:
    volume liquidated (sold, taken, closed), bad debt created, and the keeper's realized PnL."""
    from ..chart import line_chart

    ser = doc.get("series") or _series(doc["steps"])
    xs = ser["step"]
    lines = [(name, [(x, v / 1e8) for x, v in zip(xs, ser[key])])
             for name, key in (("volume liquidated", "volume_usd_e8"), ("bad debt", "bad_debt_usd_e8"),
                               ("keeper PnL", "keeper_pnl_usd_e8"))]
    moves = ", ".join(f"{s_['pct']:+g}%" for s_ in doc["steps"])
    impact = "impact on" if doc.get("impact") else "impact off"
    return line_chart(lines, title=f"keeper stress: {doc.get('asset', '')} {moves} ({impact})",
                      x_label="after step (of the price path)", y_label="cumulative USD",
                      x_format=lambda v: f"{v:.0f}" if abs(v - round(v)) < 1e-9 else "")


