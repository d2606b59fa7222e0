"""`keeper stress`: what each step did, read from the fork: liquidations, collateral sold, bad debt (Aave, Morpho, Maker tab, perps shortfall), totals and the cumulative series."""

from __future__ import annotations

from typing import Any


from .. import abi
from ..fork import _local
from .chain import (EV_ATTEMPT, EV_BARK, EV_FLAGGED, EV_KICK, EV_POSITION, EV_REDO, EV_TAKE, LIQ_AAVE,
                    RAD_PER_USD_E8, WAD, WAD_PER_USD_E8, _CLIP, _call, _enc, _uint)
from .market import Market


def _logs(url: str, address: str, topic0: str | list[str], a: int, b: int) -> list[dict[str, Any]]:
    """The logs of `address` in blocks a..b whose first topic is topic0 (or one of a list)."""
    if a > b:
        return []
    return _local(url, "eth_getLogs", [{"address": address, "fromBlock": hex(a), "toBlock": hex(b), "topics": [topic0]}])


def liquidations(m: Market, a: int, b: int) -> list[dict[str, Any]]:
    """Every Aave LiquidationCall and Morpho Liquidate in blocks a..b, normalized:
    protocol, account, block, tx, liquidator, collateral, seized, debt_token, bad_debt (raw)."""
    from ..protocols.morpho_blue.calls import EV_LIQUIDATE

    out = []
    for ad in m.aave:
        for lg in _logs(m.url, ad.pool, LIQ_AAVE.topic0, a, b):
            e = LIQ_AAVE.decode(lg)
            out.append({"protocol": ad.name, "kind": "aave_v3", "account": abi.to_checksum(e["user"]),
                        "block": int(lg["blockNumber"], 16), "tx": lg["transactionHash"],
                        "liquidator": abi.to_checksum(e["liquidator"]), "collateral": abi.to_checksum(e["collateralAsset"]),
                        "seized": int(e["liquidatedCollateralAmount"]), "debt_token": abi.to_checksum(e["debtAsset"]),
                        "repaid": int(e["debtToCover"]), "bad_debt": 0})
    for ad in m.morpho:
        for lg in _logs(m.url, ad.cfg.morpho, EV_LIQUIDATE.topic0, a, b):
            e = EV_LIQUIDATE.decode(lg)
            mid = lg["topics"][1].lower()
            mk = ad.markets.get(mid)
            out.append({"protocol": ad.name, "kind": "morpho_blue", "account": abi.to_checksum(e["borrower"]),
                        "block": int(lg["blockNumber"], 16), "tx": lg["transactionHash"],
                        "liquidator": abi.to_checksum(e["caller"]),
                        "collateral": abi.to_checksum(mk.collateral_token) if mk else "",
                        "seized": int(e["seizedAssets"]), "debt_token": abi.to_checksum(mk.loan_token) if mk else "",
                        "repaid": int(e["repaidAssets"]), "bad_debt": int(e["badDebtAssets"])})
    out.sort(key=lambda x: (x["block"], x["tx"]))
    return out


def aave_bad_debt(m: Market, events: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """USD e8 of debt left on the Aave accounts of `events` that have no collateral now."""
    total, accounts = 0, []
    for ad in m.aave:
        users = sorted({e["account"] for e in events if e["protocol"] == ad.name})
        for u in users:
            out = _call(m.url, ad.pool, _enc("getUserAccountData(address)", u))
            coll, debt = int.from_bytes(out[:32], "big"), int.from_bytes(out[32:64], "big")
            if coll == 0 and debt > 0:
                total += debt
                accounts.append(u)
    return total, accounts


def _int(url: str, to: str, sig: str, *args: Any, block: str = "latest") -> int | None:
    v = _uint(url, to, sig, *args, block=block)
    return None if v is None else (v - 2**256 if v >= 2**255 else v)


def _ilk_name(b: bytes) -> str:
    return b.rstrip(b"\0").decode("utf-8", "replace")


def open_auctions(m: Market, block: str = "latest") -> list[dict[str, Any]]:
    """Every active auction of every Maker ilk at `block`: tab [rad], lot [wad], price [ray]."""
    out = []
    for k in m.ilks:
        raw = _call(m.url, k.clipper, _enc("list()"), block)
        ids = _CLIP.fn("list").decode_one(raw) if raw else []
        for i in ids:
            st = _CLIP.fn("getStatus").decode(_call(m.url, k.clipper, _enc("getStatus(uint256)", i), block) or b"")
            needs_redo, price, lot, tab = st
            out.append({"protocol": k.protocol, "ilk": k.name, "id": int(i), "tab_rad": int(tab), "lot_wad": int(lot),
                        "price_ray": int(price), "needs_redo": bool(needs_redo), "tab_usd_e8": int(tab) // RAD_PER_USD_E8})
    return out


def maker_step(m: Market, a: int, b: int, seen: dict[tuple[str, int], dict[str, int]] | None = None) -> dict[str, Any]:
    """Barks, takes, redos of blocks a..b, the gem sold, the DAI raised, the uncovered tab and
    the auctions still open at b (module docstring). `seen` keeps, across the steps of a run,
    each auction's Bark `due` and Kick `tab` by (clipper, id): the uncovered tab's debt part."""
    url = m.url
    seen = {} if seen is None else seen
    by_ilk = {(k.dog.lower(), k.name): k for k in m.ilks}
    barks, takes, redos = [], [], []
    for dog in sorted({k.dog for k in m.ilks}):
        for lg in _logs(url, dog, EV_BARK.topic0, a, b):
            e = EV_BARK.decode(lg)
            name = _ilk_name(e["ilk"])
            k = by_ilk.get((dog.lower(), name))
            barks.append({"protocol": k.protocol if k else "", "ilk": name, "urn": abi.to_checksum(e["urn"]),
                          "auction": int(e["id"]), "ink_wad": int(e["ink"]), "art_wad": int(e["art"]),
                          "due_rad": int(e["due"]), "block": int(lg["blockNumber"], 16), "tx": lg["transactionHash"]})
            seen.setdefault((e["clip"].lower(), int(e["id"])), {})["due"] = int(e["due"])
    for k in m.ilks:
        for lg in _logs(url, k.clipper, [EV_TAKE.topic0, EV_REDO.topic0, EV_KICK.topic0], a, b):
            blk = int(lg["blockNumber"], 16)
            if lg["topics"][0] == EV_KICK.topic0:
                e = EV_KICK.decode(lg)
                seen.setdefault((k.clipper.lower(), int(e["id"])), {})["tab"] = int(e["tab"])
                continue
            if lg["topics"][0] == EV_REDO.topic0:
                e = EV_REDO.decode(lg)
                redos.append({"protocol": k.protocol, "ilk": k.name, "auction": int(e["id"]), "tab_rad": int(e["tab"]),
                              "lot_wad": int(e["lot"]), "block": blk, "tx": lg["transactionHash"]})
                continue
            e = EV_TAKE.decode(lg)
            price, owe, tab, lot = int(e["price"]), int(e["owe"]), int(e["tab"]), int(e["lot"])
            sl = owe // price if price else 0  # the slice bought: owe = slice * price, or slice = owe / price
            uncovered = tab if lot == 0 and tab > 0 else 0
            # the tab includes the penalty (tab at kick - due): the debt part left uncovered
            known = seen.get((k.clipper.lower(), int(e["id"])), {})
            debt = (max(0, tab - (known["tab"] - known["due"])) if "tab" in known and "due" in known else None) \
                if uncovered else 0
            takes.append({"protocol": k.protocol, "ilk": k.name, "auction": int(e["id"]),
                          "urn": abi.to_checksum(e["usr"]), "price_ray": price,
                          "owe_rad": owe, "slice_wad": sl, "tab_left_rad": tab, "lot_left_wad": lot,
                          "uncovered_rad": uncovered, "uncovered_debt_rad": debt,
                          "gem_usd_e8": k.gem_usd_e8(url, sl, hex(blk)),
                          "asset": k.gem.lower() == m.token.lower(), "gem_dec": k.gem_dec,
                          "block": blk, "tx": lg["transactionHash"]})
    barks.sort(key=lambda x: (x["block"], x["tx"]))
    takes.sort(key=lambda x: (x["block"], x["tx"]))
    opened = open_auctions(m, hex(b))
    uncovered_rad = sum(t["uncovered_rad"] for t in takes)
    dai_rad = sum(t["owe_rad"] for t in takes)
    return {
        "barks": len(barks), "takes": len(takes), "redos": len(redos),
        "gem_sold_raw": sum(t["slice_wad"] // 10 ** (18 - t["gem_dec"]) for t in takes if t["asset"]),
        "gem_sold_usd_e8": sum(t["gem_usd_e8"] for t in takes),
        "dai_raised_rad": dai_rad, "dai_raised_usd_e8": dai_rad // RAD_PER_USD_E8,
        "uncovered_tab_rad": uncovered_rad, "uncovered_usd_e8": uncovered_rad // RAD_PER_USD_E8,
        "uncovered_debt_rad": sum(t["uncovered_debt_rad"] or 0 for t in takes),
        "uncovered_debt_unknown": sum(1 for t in takes if t["uncovered_debt_rad"] is None),
        "uncovered_auctions": [{"protocol": t["protocol"], "ilk": t["ilk"], "auction": t["auction"], "urn": t["urn"],
                                "tab_rad": t["uncovered_rad"], "debt_rad": t["uncovered_debt_rad"],
                                "tab_usd_e8": t["uncovered_rad"] // RAD_PER_USD_E8} for t in takes if t["uncovered_rad"]],
        "open_auctions": opened, "open_tab_rad": sum(o["tab_rad"] for o in opened),
        "open_tab_usd_e8": sum(o["tab_rad"] for o in opened) // RAD_PER_USD_E8,
        "bark_events": barks, "take_events": takes, "redo_events": redos}


def insurance_funds(m: Market, block: str = "latest") -> dict[str, int]:
    """PerpsMarket.insuranceFund() [snxUSD wad, signed] of every perps adapter's market."""
    return {abi.to_checksum(a.market): _int(m.url, a.market, "insuranceFund()", block=block) or 0 for a in m.perps}


def perps_step(m: Market, a: int, b: int, fund_before: dict[str, int]) -> dict[str, Any]:
    """Flags, attempts, positions closed, shortfall of blocks a..b (module docstring)."""
    url = m.url
    flags, attempts, closed = [], [], []
    for ad in m.perps:
        for lg in _logs(url, ad.market, [EV_FLAGGED.topic0, EV_ATTEMPT.topic0, EV_POSITION.topic0], a, b):
            blk, t0 = int(lg["blockNumber"], 16), lg["topics"][0]
            base = {"protocol": ad.name, "block": blk, "tx": lg["transactionHash"]}
            if t0 == EV_FLAGGED.topic0:
                e = EV_FLAGGED.decode(lg)
                am = int(e["availableMargin"])
                flags.append({**base, "account": int(e["accountId"]), "available_margin_wad": am,
                              "required_maintenance_wad": int(e["requiredMaintenanceMargin"]),
                              "shortfall_wad": max(0, -am)})
            elif t0 == EV_ATTEMPT.topic0:
                e = EV_ATTEMPT.decode(lg)
                attempts.append({**base, "account": int(e["accountId"]), "reward_wad": int(e["reward"]),
                                 "full": bool(e["fullLiquidation"])})
            else:
                e = EV_POSITION.decode(lg)
                mid, amount = int(e["marketId"]), int(e["amountLiquidated"])
                price = _uint(url, ad.market, "indexPrice(uint128)", mid, block=hex(blk)) or 0
                closed.append({**base, "account": int(e["accountId"]), "market": mid, "amount_wad": amount,
                               "size_left_wad": int(e["currentPositionSize"]), "index_price_wad": price,
                               "notional_usd_e8": amount * price // (WAD * WAD_PER_USD_E8)})
    after = insurance_funds(m)
    shortfall = sum(f["shortfall_wad"] for f in flags)
    return {
        "accounts_flagged": len(flags), "attempts": len(attempts), "positions_closed": len(closed),
        "size_closed_wad": {str(mid): sum(c["amount_wad"] for c in closed if c["market"] == mid)
                            for mid in sorted({c["market"] for c in closed})},
        "notional_closed_usd_e8": sum(c["notional_usd_e8"] for c in closed),
        "rewards_wad": sum(x["reward_wad"] for x in attempts),
        "shortfall_wad": shortfall, "shortfall_usd_e8": shortfall // WAD_PER_USD_E8,
        "shortfall_accounts": sorted({f["account"] for f in flags if f["shortfall_wad"]}),
        "insurance_fund_before_wad": sum(fund_before.values()), "insurance_fund_after_wad": sum(after.values()),
        "insurance_fund_by_market": {k: {"before_wad": fund_before.get(k, 0), "after_wad": v} for k, v in after.items()},
        "flag_events": flags, "attempt_events": attempts, "position_events": closed}


def _totals(steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over the steps; Maker and perps parts when those protocols are configured."""
    t: dict[str, Any] = {k: sum(s[k] for s in steps) for k in
                         ("positions_liquidated", "seized_raw", "sold_raw", "sold_usd_e8", "volume_usd_e8",
                          "bad_debt_usd_e8", "bad_debt_aave_usd_e8", "bad_debt_morpho_usd_e8", "bad_debt_maker_usd_e8",
                          "bad_debt_perps_usd_e8", "keeper_pnl_usd_e8", "sends", "confirmed", "failed",
                          "time_advanced_s")}
    by: dict[str, int] = {}
    for s in steps:
        for k, v in s["positions_liquidated_by"].items():
            by[k] = by.get(k, 0) + v
    t["positions_liquidated_by"] = by
    mks = [s["maker"] for s in steps if s.get("maker")]
    if mks:
        t["maker"] = {k: sum(x[k] for x in mks) for k in
                      ("barks", "takes", "redos", "gem_sold_raw", "gem_sold_usd_e8", "dai_raised_rad",
                       "dai_raised_usd_e8", "uncovered_tab_rad", "uncovered_usd_e8", "uncovered_debt_rad",
                       "uncovered_debt_unknown")}
        t["maker"].update(open_auctions=len(mks[-1]["open_auctions"]), open_tab_rad=mks[-1]["open_tab_rad"],
                          open_tab_usd_e8=mks[-1]["open_tab_usd_e8"])
    pps = [s["perps"] for s in steps if s.get("perps")]
    if pps:
        t["perps"] = {k: sum(x[k] for x in pps) for k in
                      ("accounts_flagged", "attempts", "positions_closed", "notional_closed_usd_e8", "rewards_wad",
                       "shortfall_wad", "shortfall_usd_e8")}
        t["perps"].update(insurance_fund_before_wad=pps[0]["insurance_fund_before_wad"],
                          insurance_fund_after_wad=pps[-1]["insurance_fund_after_wad"])
    return t


def _series(steps: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Cumulative USD e8 after each step (a leading 0), for charts: volume, bad debt (all and
    per protocol kind), keeper PnL."""
    keys = ("volume_usd_e8", "bad_debt_usd_e8", "bad_debt_aave_usd_e8", "bad_debt_morpho_usd_e8",
            "bad_debt_maker_usd_e8", "bad_debt_perps_usd_e8", "keeper_pnl_usd_e8")
    out: dict[str, list[int]] = {"step": [0] + [s["step"] for s in steps]}
    for k in keys:
        acc, vals = 0, [0]
        for s in steps:
            acc += s[k]
            vals.append(acc)
        out[k] = vals
    return out


