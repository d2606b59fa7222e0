"""`keeper stress`: the run: fork, keeper, price path, cycles (with the fork clock advanced for auctions), the report."""

from __future__ import annotations

import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable


from ..errors import ConfigError
from ..fork import DEV_CHAIN_ID, RUN_DIR, ForkAnvil, _local, close_run, fund, source_head
from ..redact import redact_url
from ..risk import COVERED, perps_price_feeds, write_outputs
from .accounting import _series, _totals, aave_bad_debt, insurance_funds, liquidations, maker_step, perps_step
from .chain import (DEVNET_KEEPER_KEY, MAX_ADVANCE_S, MAX_CYCLES, MAX_STEPS, MOVER,
                    PERPS_WINDOWS, TIME_STEP_S, _CLIP, _answer, _call, _enc, _uint)
from .market import Market, Pool
from .report import png, table


def parse_path(text: str) -> list[Fraction]:
    """--path "-5,-5,-10": percent moves, each above -100."""
    out = []
    for part in text.replace(" ", "").split(","):
        try:
            v = Fraction(part)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"not a percentage: {part!r}") from None
        if v <= -100 or v > 1000:
            raise ValueError(f"{part}% is out of range (above -100, at most 1000)")
        out.append(v)
    if not out or len(out) > MAX_STEPS:
        raise ValueError(f"1 to {MAX_STEPS} steps")
    return out


def _waiting(m: Market, now: int, block_time: int) -> tuple[list[int], int] | None:
    """What waits for time: (candidate seconds to advance, the time budget it justifies), or
    None when no Maker auction is active and no perps account is flagged. Candidates: an
    auction reaching the keeper's limit (the adapter's limit_in_s, plus one block so the head
    itself is at the limit; an auction already under its limit but not taken: TIME_STEP_S, its
    price keeps falling), an auction needing redo (tail), a perps window freeing capacity."""
    cands: list[int] = []
    budget = 0
    for k in m.ilks:
        if not _uint(m.url, k.clipper, "count()"):
            continue
        tail = _uint(m.url, k.clipper, "tail()") or 0
        budget = max(budget, tail)
        raw = _call(m.url, k.clipper, _enc("list()"))
        for i in (_CLIP.fn("list").decode_one(raw) if raw else []):
            sale = _call(m.url, k.clipper, _enc("sales(uint256)", i)) or b""
            tic = int.from_bytes(sale[128:160], "big") if len(sale) >= 160 else 0
            if tic and tic + tail + 1 > now:
                cands.append(tic + tail + 1 - now)  # when it needs redo
    if budget:
        for ad in m.maker:  # the keeper's own figure: seconds until an auction reaches its limit
            for au in ad.auctions.values():
                if au.limit_in_s is not None:
                    cands.append(au.limit_in_s + block_time if au.limit_in_s > 0 else TIME_STEP_S)
    for ad in m.perps:
        raw = _call(m.url, ad.market, _enc("flaggedAccounts()"))
        if not raw or len(raw) < 64 or not int.from_bytes(raw[32:64], "big"):
            continue
        for pm in ad.markets:
            cap = _call(m.url, ad.market, _enc("liquidationCapacity(uint128)", pm.id)) or b""
            par = _call(m.url, ad.market, _enc("getMaxLiquidationParameters(uint128)", pm.id)) or b""
            if len(cap) < 96 or len(par) < 64:
                continue
            capacity, latest = int.from_bytes(cap[:32], "big"), int.from_bytes(cap[64:96], "big")
            window = int.from_bytes(par[32:64], "big")
            budget = max(budget, PERPS_WINDOWS * window)
            if capacity == 0:
                cands.append(max(1, latest + window - now))
        budget = max(budget, 1)
    if budget == 0:
        return None
    return cands, min(budget, MAX_ADVANCE_S)


async def _cycles(keeper: Any, m: Market, pool: Pool | None, impact: bool, max_cycles: int) -> dict[str, Any]:
    """The keeper, cycle after cycle, until a cycle confirms nothing and nothing waits for time
    (at most max_cycles). When a cycle confirms nothing while Maker auctions are active or perps
    accounts are flagged, fork time is advanced (module docstring) within the step's budget."""
    sent = confirmed = failed = cycles = 0
    pnl, unknown = 0, 0
    advanced = advances = budget = 0
    block_time = max(1, int(getattr(keeper.cfg.chain, "block_time_s", 1) or 1))
    capped = True  # the last cycle still liquidated (or waited): the step was cut short by max_cycles
    for _ in range(max_cycles):
        cycles += 1
        outs = await keeper.cycle(await keeper.read_head())
        done = [o for o in outs if o.status in ("confirmed", "failed")]
        sent += len(done)
        for o in done:
            confirmed += o.status == "confirmed"
            failed += o.status == "failed"
            v = keeper.realized_profit_usd_e8(o)
            if v is None:
                unknown += 1
            else:
                pnl += v
        if impact and pool is not None and done:
            p = pool.usd_e8(m.url)
            if p > 0 and p != m.price():
                m.set_price(p)
        if any(o.status == "confirmed" for o in outs):
            continue
        now = int(_local(m.url, "eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
        wait = _waiting(m, now, block_time)
        if wait is not None:
            cands, b = wait
            budget = max(budget, b)
            dt = min(max(min(cands, default=TIME_STEP_S), block_time), budget - advanced)
            if dt > 0:
                _local(m.url, "evm_increaseTime", [dt])
                _local(m.url, "evm_mine")
                advanced += dt
                advances += 1
                continue
        capped = False
        break
    return {"cycles": cycles, "capped": capped, "sends": sent, "confirmed": confirmed, "failed": failed,
            "keeper_pnl_usd_e8": pnl, "pnl_unknown": unknown, "time_advanced_s": advanced,
            "time_advances": advances}


async def stress(config_path: str | Path, asset: str, path: list[Fraction], *, impact: bool = False,
                 fork_url: str | None = None, environ: dict[str, str] | None = None, port: int = 0,
                 max_cycles: int = MAX_CYCLES, log: Any = None,
                 on_fork: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the stress test; returns the report (module docstring). on_fork(url, report) is
    called before the fork is stopped (tests check the chain there). The fork is always stopped."""
    from ..app import Keeper
    from ..config import load_config, load_signer
    from ..devnet.anvil import free_port

    env = dict(os.environ if environ is None else environ)
    base = load_config(config_path, environ=env)
    source = (fork_url or base.chain.rpc_url).strip()
    shown = redact_url(source)
    chain_id, head = source_head(source)
    if base.chain.chain_id is not None and base.chain.chain_id != chain_id:
        raise ConfigError(f"--config: chain.chain_id is {base.chain.chain_id} but {shown} is chain {chain_id}")
    if base.relay is not None:
        raise ConfigError("stress: remove the [relay] section (the fork's transactions would go to the real relays)")
    key_env = base.keeper.private_key_env
    if not env.get(key_env) and chain_id == DEV_CHAIN_ID:
        env[key_env] = DEVNET_KEEPER_KEY
    port = port or free_port()
    node = ForkAnvil(source, head, chain_id, port, RUN_DIR / f"stress-{port}.log")
    keeper = None
    tmp = tempfile.TemporaryDirectory(prefix="keeper-stress-")
    saved_key = os.environ.get(key_env)
    t0 = time.monotonic()
    ok = False
    try:
        node.start()
        url = node.url
        env.update({"KEEPER_RPC_URL": url, "KEEPER_WS_URL": "ws://" + url.removeprefix("http://"),
                    "KEEPER_KEEPER__JOURNAL": str(Path(tmp.name) / "journal.jsonl")})
        cfg = load_config(config_path, environ=env)
        fund(url, load_signer(cfg.keeper, env).address)
        fund(url, MOVER)
        os.environ[key_env] = env[key_env]  # the executor reads the key from the process environment
        keeper = Keeper(cfg, dry_run=False, log=log, record=False)
        await keeper.start()
        m = Market(keeper, url, asset, {a.name: await perps_price_feeds(a) for a in keeper.adapters.values()
                                        if a.kind == "synthetix_perps"})
        pools = m.discover_pools(cfg)
        deepest = max(pools, key=lambda p: p.depth(url)) if pools else None
        doc: dict[str, Any] = {
            "source": shown, "fork_block": head, "chain_id": chain_id, "asset": m.symbol, "token": m.token, "decimals": m.decimals,
            "path_pct": [float(p) for p in path], "impact": impact, "feeds": m.feeds,
            "pools": [p.describe() for p in pools], "deepest_pool": deepest.describe() if deepest else None,
            "covered": sorted(n for n, a in keeper.adapters.items() if a.kind in COVERED),
            "not_covered": m.not_covered, "maker_ilks": [k.describe() for k in m.ilks],
            "perps_markets": [x.describe() for x in m.perps_markets],
            "holders": m.holders, "fork": url, "max_cycles": max_cycles, "steps": []}
        how: set[str] = set()
        auctions_seen: dict[tuple[str, int], dict[str, int]] = {}
        for i, pct in enumerate(path, 1):
            from_block = int(_local(url, "eth_blockNumber"), 16) + 1
            fund_before = insurance_funds(m)
            old = m.price()
            new = int(old * (100 + pct) // 100)
            if new <= 0:
                raise ConfigError(f"--path: step {i} would make the price non-positive")
            how.update(m.set_price(new))
            for p in pools:
                p.move_to(url, new, cfg.swap.router)
            pool_before = deepest.usd_e8(url) if deepest else None
            held_before = m.held()
            liq_from = int(_local(url, "eth_blockNumber"), 16) + 1
            run = await _cycles(keeper, m, deepest, impact, max_cycles)
            to_block = int(_local(url, "eth_blockNumber"), 16)
            events = liquidations(m, liq_from, to_block)
            pool_after = deepest.usd_e8(url) if deepest else None
            seized = sum(e["seized"] for e in events if e["collateral"].lower() == m.token.lower())
            sold = seized - max(0, m.held() - held_before)
            sold_usd = sum(e["seized"] * _answer(url, m.feeds[0], hex(e["block"])) // 10**m.decimals
                           for e in events if e["collateral"].lower() == m.token.lower())
            if seized and sold != seized:
                sold_usd = sold_usd * sold // seized
            aave_bad, bad_accounts = aave_bad_debt(m, events)
            morpho_bad = 0
            for e in events:
                if e["bad_debt"]:
                    morpho_bad += m.usd_of(e["debt_token"], e["bad_debt"], hex(e["block"])) or 0
                    bad_accounts.append(e["account"])
            mk = maker_step(m, liq_from, to_block, auctions_seen) if m.maker else None
            pp = perps_step(m, liq_from, to_block, fund_before) if m.perps else None
            maker_bad = mk["uncovered_usd_e8"] if mk else 0
            perps_bad = pp["shortfall_usd_e8"] if pp else 0
            if mk:
                bad_accounts += [f"{u['ilk']}#{u['auction']}" for u in mk["uncovered_auctions"]]
            if pp:
                bad_accounts += [str(a) for a in pp["shortfall_accounts"]]
            by_kind = {k: sum(1 for e in events if e["kind"] == k) for k in ("aave_v3", "morpho_blue")
                       if (m.aave if k == "aave_v3" else m.morpho)}
            if mk:
                by_kind["maker"] = mk["barks"]
            if pp:
                by_kind["synthetix_perps"] = pp["accounts_flagged"]
            step = {
                "step": i, "pct": float(pct), "from_block": from_block, "liquidations_from_block": liq_from,
                "to_block": to_block, "oracle_before": old, "oracle_set": new, "oracle_after": m.price(),
                "pool_price_before_usd_e8": pool_before, "pool_price_after_usd_e8": pool_after,
                "impact_pct": (pool_after - pool_before) * 100 / pool_before if pool_before else None,
                "positions_liquidated": sum(by_kind.values()), "positions_liquidated_by": by_kind,
                "accounts": sorted({e["account"] for e in events}),
                "seized_raw": seized, "sold_raw": sold, "sold_usd_e8": sold_usd,
                "volume_usd_e8": sold_usd + (mk["gem_sold_usd_e8"] if mk else 0)
                + (pp["notional_closed_usd_e8"] if pp else 0),
                "bad_debt_usd_e8": aave_bad + morpho_bad + maker_bad + perps_bad, "bad_debt_aave_usd_e8": aave_bad,
                "bad_debt_morpho_usd_e8": morpho_bad, "bad_debt_maker_usd_e8": maker_bad,
                "bad_debt_perps_usd_e8": perps_bad, "bad_debt_accounts": sorted(set(bad_accounts)),
                **run, "maker": mk, "perps": pp, "liquidations": events}
            doc["steps"].append(step)
        doc["feed_set_by"] = sorted(how)
        doc["totals"] = _totals(doc["steps"])
        doc["series"] = _series(doc["steps"])
        doc["seconds"] = round(time.monotonic() - t0, 2)
        if on_fork is not None:
            on_fork(url, doc)
        ok = True
        return doc
    finally:
        try:
            # the node's log is kept only when something went wrong
            await close_run(keeper, node, tmp, keep_log=not ok)
        finally:
            if saved_key is None:
                os.environ.pop(key_env, None)
            else:
                os.environ[key_env] = saved_key


async def main(args: Any) -> int:
    """keeper stress --config FILE --asset SYM --path P [--impact on|off] [--fork-url URL] [--json] [--png FILE]."""
    try:
        path = parse_path(args.path)
    except ValueError as e:
        raise ConfigError(f"--path: {e}") from None
    doc = await stress(args.config, args.asset, path, impact=args.impact == "on", fork_url=args.fork_url,
                       max_cycles=args.cycles)
    write_outputs(doc, args.png, args.json, png, table,
                  "cumulative USD after each step: volume liquidated, bad debt, keeper PnL")
    return 0
