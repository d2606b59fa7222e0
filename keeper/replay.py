"""`keeper replay`: a backtest. What would the keeper have captured in blocks [A, B] of a chain?

    keeper replay --config FILE --source-rpc URL --from-block A --to-block B [--mempool on|off]
                  [--json] [--port P]

1. Fork the source at A (keeper/fork.py's ForkAnvil, automine off) and start the real keeper
   on the fork, live (its key from keeper.private_key_env; its address gets 10,000 ETH there),
   with no store, no journal of the operator's (a temporary one) and no HTTP server.
2. The price updates of the range, read from the source: every transaction in A+1..B that
   calls a contract whose transactions move a price the config's protocols act on (the
   adapters' price_update_targets(): feeds, a Maker Spotter and pips; a proxy's aggregator();
   a pip's src() feed), or that made one of them emit AnswerUpdated. The liquidations of the range:
   the logs each adapter builds its records of on-chain liquidations from
   (ProtocolAdapter.liquidation_log_filter / liquidations_from_logs: Aave V3 LiquidationCall,
   Morpho Blue Liquidate, Maker Bark and Take, perps flags and liquidation attempts); an
   adapter without them is listed as not covered.
3. Block by block, n = A+1..B: the source's oracle updates of block n are sent on the fork
   from their own senders (impersonated, priority fee 0: the keeper's sends of the block
   before go first, as they were sent first), and so is the market around them, in the
   source's order: every transaction of the range whose sender swapped in a pool the keeper
   prices with (a Uniswap V3 or V2 Swap event of the book's pools, found after the first
   cycle), except the source's liquidations themselves (those are what the keeper competes
   for), so the fork's pools follow the source's. A transaction that fails on the fork (its
   state diverged) is counted, not retried. With --mempool on (the default) each update
   is then handed to the keeper as the pending transaction it was (Keeper.react, as its
   PendingWatcher would): the keeper re-prices the exposed accounts at the pending answer
   and sends its liquidations right behind the update, into block n. Block n is mined with
   the source's timestamp (the fork's block numbers stay the source's), and the keeper runs
   one cycle on it; those sends land in the next block. One more block (B+1) is mined at the
   end so the keeper's sends from block B count. --mempool off replays the per-block keeper.
4. Each liquidation on the source (block L, the competitor's) is classified:
   - `ours`: the keeper liquidated that account on the fork in a block K < L
     (blocks_ahead = L - K > 0);
   - `raced`: the keeper liquidated it on the fork, but in K >= L (a tie goes to the
     competitor, who really landed first: blocks_ahead = L - K <= 0); or it had chosen / sent
     it by L without landing it (keeper/missed.py's classify);
   - `filtered`: the keeper saw it by block L and its last decision was a skip;
   - `unseen`: the keeper never saw it liquidatable by block L.
   The liquidations the keeper made on the fork that nobody made on the source are `extra`.
   Values are what each liquidation paid its liquidator, priced by the keeper's adapter at
   the fork's prices of that block.

Other transactions of the source are not replayed (a swap whose sender is not a swapper of
the range, through a pool the keeper does not price with, is not). A competitor in the very
block of the price move is `raced` either way: with the mempool the
keeper lands in that block too (blocks_ahead 0; who is first inside a block is the builder's
order, which a fork cannot replay), without it one block later (-1). A competitor one block
after the move is `ours` (+1) with the mempool and `raced` (0) without. Only the oracle
updates are replayed: other pending transactions of the source's mempool are not known.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_utils import keccak

from . import abi
from .errors import ConfigError
from .fork import RUN_DIR, ForkAnvil, _local, _source_call, close_run, fund, source_head
from .missed import classify
from .redact import redact_url
from .types import ChainLiquidation

MAX_BLOCKS = 20_000
LOG_CHUNK = 2_000
F_SRC = abi.Function("src", [], ["address"])  # a Maker pip's (AggregatorPip, OSM) source
# Uniswap V3 pool and V2 pair Swap events: a source transaction that swapped in a pool the
# keeper prices with is replayed too, so the fork's pools follow the source's
SWAP_TOPICS = ["0x" + keccak(text=sig).hex() for sig in (
    "Swap(address,address,int256,int256,uint160,uint128,int24)", "Swap(address,uint256,uint256,uint256,uint256,address)")]


def _answer_updated_topic() -> str:
    return "0x" + keccak(text="AnswerUpdated(int256,uint256,uint256)").hex()


@dataclass
class Row:
    liq: ChainLiquidation
    klass: str
    our_block: int | None
    blocks_ahead: int | None
    why: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        lq = self.liq
        return {"protocol": lq.protocol, "account": lq.account, "block": lq.block, "competitor": lq.liquidator,
                "tx": lq.tx_hash, "value_usd": _usd(lq.value_usd_e8), "class": self.klass,
                "our_block": self.our_block, "blocks_ahead": self.blocks_ahead, "why": self.why}


def _usd(e8: int | None) -> float | None:
    return None if e8 is None else e8 / 1e8


# --- what the source did -----------------------------------------------------------------------

def _logs(url: str, address: list[str] | str, topic0s: list[str] | str, a: int, b: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    start = a
    t0s = [topic0s] if isinstance(topic0s, str) else list(topic0s)
    while start <= b:
        end = min(b, start + LOG_CHUNK - 1)
        out += _source_call(url, "eth_getLogs", [{"address": address, "fromBlock": hex(start), "toBlock": hex(end),
                                                  "topics": [t0s]}])
        start = end + 1
    return sorted(out, key=lambda lg: (int(lg["blockNumber"], 16), int(lg.get("logIndex", "0x0"), 16)))


def liquidation_sources(keeper: Any) -> tuple[list[tuple[str, Any, list[str], list[str]]], list[str]]:
    """(protocol name, adapter, addresses, topic0s) of the logs each adapter builds its
    liquidation records from (ProtocolAdapter.liquidation_log_filter), read from the source,
    and the names of the protocols not covered (an empty filter)."""
    out, not_covered = [], []
    for name, a in keeper.adapters.items():
        addresses, topics = a.liquidation_log_filter()
        if addresses and topics:
            out.append((name, a, addresses, topics))
        else:
            not_covered.append(name)
    return out, not_covered


async def feed_targets(keeper: Any) -> set[str]:
    """Every address whose transactions move a price the adapters act on (lowercase): their
    price_update_targets() (feeds, a Maker Spotter and pips), a Chainlink proxy's aggregator()
    (the keeper's own mapping, as its pending watch uses) and a pip's src() feed."""
    from .multicall import Call

    await keeper.map_sources()
    targets = sorted({t for a in keeper.adapters.values() for t in a.price_update_targets()})
    out = set(keeper.feeds.targets()) | {t.lower() for t in targets}
    if targets:
        res = await keeper.mc.run([Call(t, F_SRC.encode()) for t in targets])
        for ok, data in res:
            if ok and len(data) == 32 and int.from_bytes(data, "big"):
                out.add(abi.to_checksum(data[12:32]).lower())
    return out


async def _react(keeper: Any, url: str, tx_hash: str) -> int:
    """The keeper reacts to the update `tx_hash`, pending on the fork, as its PendingWatcher
    would hand it over; waits for the sends it chose to be made. Returns 1 when it chose
    liquidations to send behind it, else 0."""
    from .oracles import PendingTx

    await keeper.map_sources()  # feeds of markets found since
    ptx = PendingTx.from_rpc(_local(url, "eth_getTransactionByHash", [tx_hash]))
    if ptx is None:
        return 0
    before = keeper.reactions
    await keeper.react(ptx)
    if keeper.executor is not None and keeper.executor.tasks:
        await asyncio.gather(*list(keeper.executor.tasks), return_exceptions=True)
    return keeper.reactions - before


# --- the replay --------------------------------------------------------------------------------

async def replay(config_path: str | Path, source_url: str, from_block: int, to_block: int, *,
                 environ: dict[str, str] | None = None, port: int = 0, log: Any = None,
                 mempool: bool = True, on_fork: Any = None) -> dict[str, Any]:
    """Run the backtest; returns the report (see module docstring). on_fork(url, report) is
    called before the fork is stopped (tests check the chain there). The fork is always stopped."""
    from .app import Keeper
    from .config import load_config
    from .devnet.anvil import free_port

    shown = redact_url(source_url)
    if from_block > to_block:
        raise ConfigError(f"--from-block {from_block} is after --to-block {to_block}")
    if to_block - from_block > MAX_BLOCKS:
        raise ConfigError(f"at most {MAX_BLOCKS} blocks per replay (got {to_block - from_block})")
    chain_id, head = source_head(source_url)
    if to_block > head:
        raise ConfigError(f"--to-block {to_block} is after the source's head ({head})")
    port = port or free_port()
    node = ForkAnvil(source_url, from_block, chain_id, port, RUN_DIR / f"replay-{port}.log")
    t0 = time.monotonic()
    node.start()
    keeper = None
    tmp = tempfile.TemporaryDirectory(prefix="keeper-replay-")
    try:
        url = node.url
        _local(url, "evm_setAutomine", [False])
        env = dict(os.environ if environ is None else environ)
        env.update({"KEEPER_RPC_URL": url, "KEEPER_WS_URL": "ws://" + url.removeprefix("http://"),
                    "KEEPER_KEEPER__RECEIPT_TIMEOUT_S": "0.2",  # its sends land in the next block: never wait
                    "KEEPER_KEEPER__JOURNAL": str(Path(tmp.name) / "journal.jsonl")})
        cfg = load_config(config_path, environ=env)
        if cfg.relay is not None:
            raise ConfigError("replay: remove the [relay] section (the fork's transactions would go to the real relays)")
        if cfg.chain.chain_id is not None and cfg.chain.chain_id != chain_id:
            raise ConfigError(f"--config: chain.chain_id is {cfg.chain.chain_id} but {shown} is chain {chain_id}")
        from .config import load_signer

        address = load_signer(cfg.keeper, env).address
        fund(url, address)
        keeper = Keeper(cfg, dry_run=False, log=log, record=False)
        await keeper.start()
        await keeper.cycle(await keeper.read_head())  # block A: what it knew before the range
        targets = await feed_targets(keeper)
        sources, not_covered = liquidation_sources(keeper)
        pools: list[str] = []
        if keeper.swaps is not None:  # the pools among the tokens the adapters watch
            await keeper.swaps.book((await keeper.read_head()).number)
            pools = keeper.swaps.pools

        # the source's history of the range
        a, b = from_block + 1, to_block
        update_txs: set[str] = set()
        swap_txs: set[str] = set()  # the source's swaps in the pools the keeper prices with
        swappers: set[str] = set()  # their senders: their other transactions of the range go too
        liq_txs: set[str] = set()  # the source's liquidations: never replayed (the keeper competes)
        source_logs: dict[int, list[tuple[Any, list[dict[str, Any]]]]] = {}
        if a <= b:
            if targets:
                for lg in _logs(source_url, sorted(targets), _answer_updated_topic(), a, b):
                    update_txs.add(lg["transactionHash"].lower())
            if pools:
                for lg in _logs(source_url, pools, SWAP_TOPICS, a, b):
                    swap_txs.add(lg["transactionHash"].lower())
            for name, adapter, addresses, topics in sources:
                by_block: dict[int, list[dict[str, Any]]] = {}
                for lg in _logs(source_url, addresses, topics, a, b):
                    by_block.setdefault(int(lg["blockNumber"], 16), []).append(lg)
                    liq_txs.add(lg["transactionHash"].lower())
                for n, lgs in by_block.items():
                    source_logs.setdefault(n, []).append((adapter, lgs))

        replayed, failed, misaligned, reactions = 0, [], [], 0
        market_txs_replayed, market_txs_failed = 0, []
        liqs: list[ChainLiquidation] = []
        blocks = {n: _source_call(source_url, "eth_getBlockByNumber", [hex(n), True]) for n in range(a, b + 1)}
        swap_txs -= liq_txs  # a liquidation that sold through a pool is the competitor's: not replayed
        for blk in blocks.values():
            for tx in (blk or {}).get("transactions", []):
                if tx["hash"].lower() in swap_txs:
                    swappers.add(str(tx.get("from", "")).lower())
        for n in range(a, b + 2):
            blk = blocks.get(n)
            if blk is not None:
                sent, swaps = [], []
                for tx in blk.get("transactions", []):  # in the source's order
                    to = (tx.get("to") or "").lower()
                    if to in targets or tx["hash"].lower() in update_txs:
                        sent.append((tx["hash"], _send_update(url, tx)))
                    elif tx["hash"].lower() not in liq_txs and str(tx.get("from", "")).lower() in swappers:
                        swaps.append((tx["hash"], _send_update(url, tx)))
                if mempool:
                    for _src, h in sent:
                        reactions += 1 if await _react(keeper, url, h) else 0
                _local(url, "evm_setNextBlockTimestamp", [int(blk["timestamp"], 16)])
            _local(url, "evm_mine")
            if blk is not None:
                for src_hash, h in sent:
                    rc = _local(url, "eth_getTransactionReceipt", [h])
                    replayed += 1
                    if not rc or rc.get("status") != "0x1":
                        failed.append(src_hash)
                for src_hash, h in swaps:
                    rc = _local(url, "eth_getTransactionReceipt", [h])
                    market_txs_replayed += 1
                    if not rc or rc.get("status") != "0x1":
                        market_txs_failed.append(src_hash)
            got = int(_local(url, "eth_blockNumber"), 16)
            if got != n:
                misaligned.append({"source_block": n, "fork_block": got})
            await keeper.cycle(await keeper.read_head())
            for adapter, lgs in source_logs.get(n, []):  # priced by the adapter at this block's prices
                liqs += adapter.liquidations_from_logs(lgs)

        ours = {x.lower() for x in keeper.adapters_addresses()}
        fork_liqs = [(lq, k) for lq, k, _w in keeper.classified]
        captured: dict[tuple[str, str], ChainLiquidation] = {}
        for lq, k in fork_liqs:
            if k == "ours":
                captured.setdefault((lq.protocol, lq.account.lower()), lq)
        rows = [classify_row(lq, captured.get((lq.protocol, lq.account.lower())), ours, keeper.tracker) for lq in liqs]
        source_keys = {(lq.protocol, lq.account.lower()) for lq in liqs}
        extra = [lq for key, lq in captured.items() if key not in source_keys]
        rep = build_report(shown, chain_id, from_block, to_block, rows, extra, captured, not_covered,
                           replayed=replayed, failed=failed, misaligned=misaligned, address=address,
                           took_s=time.monotonic() - t0, mempool=mempool, reactions=reactions,
                           market_txs_replayed=market_txs_replayed, market_txs_failed=market_txs_failed, pools=pools)
        if on_fork is not None:
            on_fork(url, rep)
        return rep
    finally:
        await close_run(keeper, node, tmp)


def _send_update(url: str, tx: dict[str, Any]) -> str:
    """The source's oracle update, sent on the fork from its own sender (impersonated), with
    no priority fee: the keeper's earlier sends are ordered before it."""
    sender = tx["from"]
    gas = int(tx.get("gas", hex(1_000_000)), 16)
    max_fee = 2 * int(_local(url, "eth_getBlockByNumber", ["latest", False]).get("baseFeePerGas", "0x0"), 16) + 1
    need = gas * max_fee + int(tx.get("value", "0x0"), 16)
    if int(_local(url, "eth_getBalance", [sender, "latest"]), 16) < need:
        _local(url, "anvil_setBalance", [sender, hex(need + 10**18)])
    _local(url, "anvil_impersonateAccount", [sender])
    send = {"from": sender, "to": tx["to"], "data": tx.get("input", "0x"), "value": tx.get("value", "0x0"),
            "gas": hex(gas), "maxFeePerGas": hex(max_fee), "maxPriorityFeePerGas": "0x0"}
    return _local(url, "eth_sendTransaction", [send])


def classify_row(liq: ChainLiquidation, mine: ChainLiquidation | None, ours: set[str], tracker: Any) -> Row:
    """One source liquidation against the keeper's run on the fork (module docstring)."""
    if mine is not None:
        ahead = liq.block - mine.block
        why = {"our_tx": mine.tx_hash, "our_value_usd": _usd(mine.value_usd_e8)}
        return Row(liq, "ours" if ahead > 0 else "raced", mine.block, ahead, why)
    klass, why = classify(liq, ours=ours, history=tracker.history(liq.protocol, liq.account, upto_block=liq.block))
    return Row(liq, klass, None, None, why)


def build_report(source: str, chain_id: int, a: int, b: int, rows: list[Row], extra: list[ChainLiquidation],
                 captured: dict[tuple[str, str], ChainLiquidation], not_covered: list[str], **info: Any) -> dict[str, Any]:
    counts = {k: sum(1 for r in rows if r.klass == k) for k in ("ours", "raced", "filtered", "unseen")}
    competitor = sum(r.liq.value_usd_e8 or 0 for r in rows)
    would_take = sum((r.liq.value_usd_e8 or 0) for r in rows if r.klass == "ours")
    keeper_total = sum(lq.value_usd_e8 or 0 for lq in captured.values())
    return {
        "source": source, "chain_id": chain_id, "from_block": a, "to_block": b,
        "liquidations": [r.to_json() for r in rows],
        "extra": [{"protocol": lq.protocol, "account": lq.account, "our_block": lq.block, "tx": lq.tx_hash,
                   "value_usd": _usd(lq.value_usd_e8)} for lq in extra],
        "totals": {**counts, "source_liquidations": len(rows), "extra": len(extra),
                   "competitor_value_usd": competitor / 1e8,
                   "ours_value_usd": would_take / 1e8,  # what the competitor took that the keeper would have taken first
                   "keeper_value_usd": keeper_total / 1e8},  # everything the keeper liquidated on the fork
        "not_covered": not_covered,
        "oracle_updates_replayed": info.get("replayed", 0), "oracle_updates_failed": info.get("failed", []),
        "misaligned_blocks": info.get("misaligned", []), "keeper": info.get("address"),
        "mempool": info.get("mempool", False), "reactions": info.get("reactions", 0),
        "pools": list(info.get("pools", [])), "market_txs_replayed": info.get("market_txs_replayed", 0),
        "market_txs_failed": info.get("market_txs_failed", []),
        "took_s": round(info.get("took_s", 0.0), 2),
    }


def render(rep: dict[str, Any]) -> str:
    t = rep["totals"]
    lines = [f"replay of {rep['source']} blocks {rep['from_block']}..{rep['to_block']} (chain {rep['chain_id']}): "
             f"{rep['oracle_updates_replayed']} oracle updates replayed"
             + (f", {len(rep['oracle_updates_failed'])} failed" if rep["oracle_updates_failed"] else "")
             + (f", mempool on ({rep['reactions']} reacted to while pending)" if rep.get("mempool")
                else ", mempool off (per-block keeper)")
             + f"; {rep.get('market_txs_replayed', 0)} transactions of the swappers in the keeper's "
               f"{len(rep.get('pools', []))} pools replayed"
             + (f", {len(rep['market_txs_failed'])} failed" if rep.get("market_txs_failed") else ""),
             f"{'protocol':<18} {'account':<42} {'block':>8} {'class':<8} {'ours at':>8} {'ahead':>6} "
             f"{'value $':>12}  competitor"]
    for r in rep["liquidations"]:
        v = "-" if r["value_usd"] is None else f"{r['value_usd']:,.2f}"
        lines.append(f"{r['protocol']:<18} {r['account']:<42} {r['block']:>8} {r['class']:<8} "
                     f"{'-' if r['our_block'] is None else r['our_block']:>8} "
                     f"{'-' if r['blocks_ahead'] is None else r['blocks_ahead']:>6} {v:>12}  {r['competitor']}")
    for e in rep["extra"]:
        v = "-" if e["value_usd"] is None else f"{e['value_usd']:,.2f}"
        lines.append(f"{e['protocol']:<18} {e['account']:<42} {'-':>8} {'extra':<8} {e['our_block']:>8} {'-':>6} "
                     f"{v:>12}  (nobody on the source)")
    lines.append(f"totals: {t['source_liquidations']} liquidations on the source: {t['ours']} ours, {t['raced']} raced, "
                 f"{t['filtered']} filtered, {t['unseen']} unseen; {t['extra']} extra")
    lines.append(f"value: competitor took ${t['competitor_value_usd']:,.2f}, the keeper would have taken "
                 f"${t['ours_value_usd']:,.2f} of it first; the keeper liquidated ${t['keeper_value_usd']:,.2f} on the fork")
    if rep["not_covered"]:
        lines.append(f"not covered (their liquidations are not read from the source): {', '.join(rep['not_covered'])}")
    if rep["misaligned_blocks"]:
        lines.append(f"warning: {len(rep['misaligned_blocks'])} fork blocks did not match the source's numbers")
    return "\n".join(lines)


async def main(args: Any) -> int:
    if not args.source_rpc.lower().startswith(("http://", "https://")):
        raise ConfigError(f"--source-rpc: not an http(s) URL: {redact_url(args.source_rpc)}")
    rep = await replay(args.config, args.source_rpc, args.from_block, args.to_block, port=args.port,
                       mempool=getattr(args, "mempool", "on") == "on")
    print(json.dumps(rep, indent=2) if args.json else render(rep), flush=True)
    return 0
