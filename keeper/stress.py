"""`keeper stress`: a price path applied on a fork, the real keeper liquidating live at each
step, with or without the liquidations' own price impact feeding back into the oracle.

    keeper stress --config FILE --asset WETH --path -5,-5,-10 [--impact on|off]
                  [--fork-url URL] [--json] [--png FILE]

1. Fork the source (--fork-url, default the config's chain.rpc_url) at its head
   (keeper/fork.py ForkAnvil, automine on) and start the real keeper on it, live, with no
   store, a temporary journal, no HTTP server. Its key: keeper.private_key_env (on a devnet
   fork, chain id 31337, anvil's public test account #1 when that variable is unset); its
   address gets 10,000 ETH on the fork.
2. The asset's feeds: the price source of every Aave reserve whose symbol is --asset and the
   base feed of every Morpho market (ChainlinkOracle shape) whose collateral is that token.
   A feed is set with `setAnswer(int256)` sent from its `owner()`, impersonated (the devnet's
   SettableAggregator). A feed that is not settable that way gets the project's
   SettableAggregator code in its place (anvil_setCode, owner slot set to the stress account):
   latestAnswer/latestRoundData keep working, at the answers the path sets.
3. The market: every Uniswap V3 pool (swap.router's factory, swap.fee_tiers) and Uniswap V2
   pair (swap.uniswap_v2_factory) of the asset against another Aave reserve. At the start of
   each step the feeds are set to the step's price (old answer * (100 + pct) / 100) and every
   such pool is arbitraged to the feeds' ratio (the market moved): a stress account gets the
   tokens it sells by writing its balance slot (found by probing) and swaps through the
   router (V3, with the target as sqrtPriceLimitX96) or the pair (V2). The deepest pool is
   the one holding most of the asset; its price (pool ratio x the other token's feed) is the
   step's pool price.
4. Then the keeper runs cycle after cycle until a cycle confirms nothing (at most --cycles per
   step, default 50; a step cut short is flagged `capped`). Its liquidation routes sell the
   seized collateral in the same transaction, so the pools move. With --impact on, after each cycle the asset's feeds are set to the deepest
   pool's price: liquidations can cause more liquidations.
5. Per step, read from the fork: the liquidations (Aave LiquidationCall, Morpho Liquidate
   events in the step's blocks, by anyone), the collateral seized in the asset, the part of it
   sold (seized minus what the keeper's address and liquidator contracts still hold of it),
   its USD value at the feed's answer of each liquidation's block, the pool price before and
   after, the bad debt created (Aave: the debt of accounts liquidated in the step left with
   zero collateral, getUserAccountData; Morpho: badDebtAssets of the Liquidate events) and
   the keeper's PnL (the executor's realized profit of each confirmed or failed send).
   Maker and perps are not covered (listed in `not_covered`).

The fork is always stopped. Integers for amounts (raw units, USD e8).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from eth_utils import keccak

from . import abi
from .errors import ConfigError, KeeperError
from .fork import RUN_DIR, ForkAnvil, _local, fund, source_head
from .redact import redact_url

MAX_CYCLES = 50  # keeper cycles per step at most (the devnet's test cascade needs 38)
MAX_STEPS = 50
DEV_CHAIN_ID = 31337
# anvil's public test account #1: the devnet keeper (local chains only)
DEVNET_KEEPER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
MOVER = "0x5757e55757E55757e55757E55757e55757e55757"  # the stress account: moves markets and feeds
ZERO = "0x" + "00" * 20
LIQ_AAVE = abi.load("AavePool").event("LiquidationCall")


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


# --- raw chain access (the fork) ---------------------------------------------------------------

def _word(v: int) -> str:
    return "0x" + v.to_bytes(32, "big").hex()


def _enc(sig: str, *args: Any) -> str:
    from .devnet.jsonrpc import encode_call

    return encode_call(sig, *args)


def _call(url: str, to: str, data: str, block: str = "latest") -> bytes | None:
    try:
        out = _local(url, "eth_call", [{"to": to, "data": data}, block])
    except KeeperError:
        return None
    return bytes.fromhex(out[2:])


def _uint(url: str, to: str, sig: str, *args: Any, block: str = "latest") -> int | None:
    out = _call(url, to, _enc(sig, *args), block)
    return int.from_bytes(out[:32], "big") if out and len(out) >= 32 else None


def _addr(url: str, to: str, sig: str, *args: Any) -> str | None:
    v = _uint(url, to, sig, *args)
    return abi.to_checksum("0x" + v.to_bytes(32, "big")[12:].hex()) if v else None


def _answer(url: str, feed: str, block: str = "latest") -> int:
    v = _uint(url, feed, "latestAnswer()", block=block)
    if v is None or not 0 < v < 2**255:
        raise KeeperError(f"stress: feed {feed} has no positive latestAnswer")
    return v


def _send(url: str, sender: str, to: str | None, data: str, what: str, gas: int = 2_000_000) -> dict[str, Any]:
    tx = {"from": sender, "data": data, "gas": hex(gas)}
    if to:
        tx["to"] = to
    h = _local(url, "eth_sendTransaction", [tx])
    rc = None
    for _ in range(600):
        rc = _local(url, "eth_getTransactionReceipt", [h])
        if rc:
            break
        time.sleep(0.02)
    if not rc or rc.get("status") != "0x1":
        raise KeeperError(f"stress: {what} failed on the fork ({h})")
    return rc


def give(url: str, token: str, who: str, amount: int) -> None:
    """Set `who`'s balance of `token` to `amount` by writing its balance slot (a Solidity or
    Vyper mapping in one of the first 20 slots, found by probing; restored when wrong)."""
    pad = bytes.fromhex(who[2:].lower().rjust(64, "0"))
    for slot in range(20):
        s = slot.to_bytes(32, "big")
        for key in (keccak(pad + s), keccak(s + pad)):
            k = "0x" + key.hex()
            old = _local(url, "eth_getStorageAt", [token, k, "latest"])
            _local(url, "anvil_setStorageAt", [token, k, _word(amount)])
            if _uint(url, token, "balanceOf(address)", who) == amount:
                return
            _local(url, "anvil_setStorageAt", [token, k, _word(int(old, 16))])
    raise KeeperError(f"stress: cannot find the balance slot of token {token}")


# --- feeds -------------------------------------------------------------------------------------

def set_feed(url: str, feed: str, answer: int) -> str:
    """Set the feed's answer; returns how ('owner' or 'stub')."""
    owner = _addr(url, feed, "owner()")
    data = _enc("setAnswer(int256)", answer)
    if owner:
        fund(url, owner)
        try:
            _send(url, owner, feed, data, f"setAnswer on {feed}", gas=200_000)
            if _answer(url, feed) == answer:
                return "owner"
        except KeeperError:
            pass
    _install_stub(url, feed)
    _send(url, MOVER, feed, data, f"setAnswer on the stub at {feed}", gas=200_000)
    return "stub"


_STUB_CODE: dict[str, str] = {}


def _install_stub(url: str, feed: str) -> None:
    """The project's SettableAggregator (8 decimals) in place of the feed's code, owned by MOVER."""
    dec = _uint(url, feed, "decimals()")
    if dec not in (None, 8):
        raise KeeperError(f"stress: feed {feed} has {dec} decimals and is not settable (only 8-decimal feeds "
                          "can be replaced)")
    if url not in _STUB_CODE:
        from eth_abi import encode as abi_encode

        from .solidity import compile_files

        src = Path(__file__).resolve().parent.parent / "contracts" / "SettableAggregator.sol"
        art = compile_files([src])["SettableAggregator"]
        code = "0x" + art["bytecode"].removeprefix("0x") + abi_encode(["int256", "string"], [1, "stress"]).hex()
        fund(url, MOVER)
        rc = _send(url, MOVER, None, code, "deploy the feed stub", gas=3_000_000)
        _STUB_CODE[url] = _local(url, "eth_getCode", [rc["contractAddress"], "latest"])
    _local(url, "anvil_setCode", [feed, _STUB_CODE[url]])
    _local(url, "anvil_setStorageAt", [feed, _word(0), _word(int(MOVER, 16))])  # owner
    for slot in (3, 4):  # _roundId, _updatedAt: whatever the old contract kept there
        _local(url, "anvil_setStorageAt", [feed, _word(slot), _word(0)])


# --- pools -------------------------------------------------------------------------------------

class Pool:
    def __init__(self, kind: str, address: str, asset: str, other: str, fee: int, other_feed: str,
                 dec_a: int, dec_o: int):
        self.kind, self.address, self.asset, self.other, self.fee = kind, address, asset, other, fee
        self.other_feed, self.dec_a, self.dec_o = other_feed, dec_a, dec_o
        self.asset_is_0 = int(asset, 16) < int(other, 16)

    def describe(self) -> str:
        return f"{self.kind} {self.address}" + (f" fee {self.fee}" if self.kind == "v3" else "")

    def ratio(self, url: str) -> Fraction:
        """Raw units of `other` per raw unit of the asset."""
        if self.kind == "v3":
            sp = _uint(url, self.address, "slot0()") or 0
            p10 = Fraction(sp * sp, 1 << 192)  # token1 per token0
        else:
            out = _call(url, self.address, _enc("getReserves()"))
            r0, r1 = int.from_bytes(out[:32], "big"), int.from_bytes(out[32:64], "big")
            p10 = Fraction(r1, r0) if r0 else Fraction(0)
        if self.asset_is_0:
            return p10
        return 1 / p10 if p10 else Fraction(0)

    def usd_e8(self, url: str) -> int:
        """The asset's price in this pool, in USD e8 (x the other token's feed)."""
        return int(self.ratio(url) * 10**self.dec_a * _answer(url, self.other_feed) / 10**self.dec_o)

    def depth(self, url: str) -> int:
        return _uint(url, self.asset, "balanceOf(address)", self.address) or 0

    def move_to(self, url: str, asset_usd_e8: int, router: str) -> None:
        """Arbitrage the pool to asset_usd_e8 / the other token's feed (the stress account
        swaps; it gets what it sells by writing its balance)."""
        other_usd = _answer(url, self.other_feed)
        # target raw other per raw asset
        target = Fraction(asset_usd_e8 * 10**self.dec_o, other_usd * 10**self.dec_a)
        t10 = target if self.asset_is_0 else 1 / target  # token1 per token0
        t0, t1 = (self.asset, self.other) if self.asset_is_0 else (self.other, self.asset)
        if self.kind == "v3":
            goal = math.isqrt(t10.numerator * (1 << 192) // t10.denominator)
            cur = _uint(url, self.address, "slot0()") or 0
            if goal == cur or cur == 0:
                return
            zero_for_one = goal < cur
            tin, tout = (t0, t1) if zero_for_one else (t1, t0)
            amount = 2**200
            give(url, tin, MOVER, amount)
            _send(url, MOVER, tin, _enc("approve(address,uint256)", router, amount), "approve the router", 200_000)
            _send(url, MOVER, router,
                  _enc("exactInputSingle((address,address,uint24,address,uint256,uint256,uint256,uint160))",
                       (tin, tout, self.fee, MOVER, 2**255, 2**128, 0, goal)),
                  f"move {self.describe()}", 3_000_000)
            return
        out = _call(url, self.address, _enc("getReserves()"))
        r0, r1 = int.from_bytes(out[:32], "big"), int.from_bytes(out[32:64], "big")
        if not r0 or not r1 or Fraction(r1, r0) == t10:
            return
        k = r0 * r1
        if Fraction(r1, r0) > t10:  # token0 too dear: sell token0
            new0 = math.isqrt(k * t10.denominator // t10.numerator)
            amt = (new0 - r0) * 1000 // 997
            if amt <= 0:
                return
            give(url, t0, MOVER, amt)
            _send(url, MOVER, t0, _enc("transfer(address,uint256)", self.address, amt), "pay the pair", 200_000)
            o0, o1 = 0, amt * 997 * r1 // (r0 * 1000 + amt * 997)
        else:
            new1 = math.isqrt(k * t10.numerator // t10.denominator)
            amt = (new1 - r1) * 1000 // 997
            if amt <= 0:
                return
            give(url, t1, MOVER, amt)
            _send(url, MOVER, t1, _enc("transfer(address,uint256)", self.address, amt), "pay the pair", 200_000)
            o0, o1 = amt * 997 * r0 // (r1 * 1000 + amt * 997), 0
        _send(url, MOVER, self.address, _enc("swap(uint256,uint256,address,bytes)", o0, o1, MOVER, b""),
              f"move {self.describe()}", 500_000)


# --- what the keeper runs ----------------------------------------------------------------------

class Market:
    """The asset's token, feeds and pools as the keeper's adapters see them on the fork."""

    def __init__(self, keeper: Any, url: str, asset: str):
        self.url = url
        self.symbol = asset.upper()
        self.aave = [a for a in keeper.adapters.values() if a.kind == "aave_v3"]
        self.morpho = [a for a in keeper.adapters.values() if a.kind == "morpho_blue"]
        self.not_covered = sorted(n for n, a in keeper.adapters.items() if a.kind not in ("aave_v3", "morpho_blue"))
        token, dec, feeds = None, 18, []
        reserves: dict[str, tuple[int, str]] = {}  # token -> (decimals, feed)
        for a in self.aave:
            for r in a.reserves:
                if r.price_source and int(r.price_source, 16):
                    reserves.setdefault(r.asset.lower(), (r.decimals, abi.to_checksum(r.price_source)))
                if r.symbol.upper() == self.symbol:
                    token, dec = abi.to_checksum(r.asset), r.decimals
                    if r.price_source and int(r.price_source, 16) and r.price_source.lower() not in {f.lower() for f in feeds}:
                        feeds.append(abi.to_checksum(r.price_source))
        for a in self.morpho:
            for m in a.markets.values():
                if m.collateral_symbol.upper() == self.symbol or (token and m.collateral_token.lower() == token.lower()):
                    token, dec = token or abi.to_checksum(m.collateral_token), m.collateral_decimals
                    base = _addr(url, m.oracle, "BASE_FEED_1()")
                    if base and base.lower() not in {f.lower() for f in feeds}:
                        feeds.append(base)
        if token is None or not feeds:
            raise ConfigError(f"--asset {asset}: no Aave reserve or Morpho collateral of that symbol with a price feed "
                              "in the config's protocols")
        self.token, self.decimals, self.feeds, self.reserves = token, dec, feeds, reserves
        self.holders = [keeper.executor.address] + sorted(keeper.adapters_addresses())

    def discover_pools(self, cfg: Any) -> list[Pool]:
        url, pools = self.url, []
        factory = _addr(url, cfg.swap.router, "factory()") if cfg.swap.router else None
        v2 = getattr(cfg.swap, "uniswap_v2_factory", None)
        for other, (dec_o, feed) in sorted(self.reserves.items()):
            if other == self.token.lower():
                continue
            other = abi.to_checksum(other)
            if factory:
                for fee in cfg.swap.fee_tiers:
                    p = _addr(url, factory, "getPool(address,address,uint24)", self.token, other, fee)
                    if p:
                        pools.append(Pool("v3", p, self.token, other, fee, feed, self.decimals, dec_o))
            if v2:
                p = _addr(url, v2, "getPair(address,address)", self.token, other)
                if p:
                    pools.append(Pool("v2", p, self.token, other, 3000, feed, self.decimals, dec_o))
        return pools

    def price(self) -> int:
        return _answer(self.url, self.feeds[0])

    def set_price(self, answer: int) -> list[str]:
        return [set_feed(self.url, f, answer) for f in self.feeds]

    def held(self) -> int:
        return sum(_uint(self.url, self.token, "balanceOf(address)", h) or 0 for h in self.holders)

    def usd_of(self, token: str, amount: int, block: str = "latest") -> int | None:
        r = self.reserves.get(token.lower())
        if r is None:
            return None
        return amount * _answer(self.url, r[1], block) // 10 ** r[0]


def _logs(url: str, address: str, topic0: str, a: int, b: int) -> list[dict[str, Any]]:
    if a > b:
        return []
    return _local(url, "eth_getLogs", [{"address": address, "fromBlock": hex(a), "toBlock": hex(b), "topics": [topic0]}])


def liquidations(m: Market, a: int, b: int) -> list[dict[str, Any]]:
    """Every Aave LiquidationCall and Morpho Liquidate in blocks a..b, normalized:
    protocol, account, block, tx, liquidator, collateral, seized, debt_token, bad_debt (raw)."""
    from .protocols.morpho_blue.calls import EV_LIQUIDATE

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


async def _cycles(keeper: Any, m: Market, pool: Pool | None, impact: bool, max_cycles: int) -> dict[str, Any]:
    """The keeper, cycle after cycle, until a cycle confirms nothing (at most max_cycles)."""
    sent = confirmed = failed = cycles = 0
    pnl, unknown = 0, 0
    capped = True  # the last cycle still liquidated: the step was cut short by max_cycles
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
        if not any(o.status == "confirmed" for o in outs):
            capped = False
            break
    return {"cycles": cycles, "capped": capped, "sends": sent, "confirmed": confirmed, "failed": failed,
            "keeper_pnl_usd_e8": pnl, "pnl_unknown": unknown}


async def stress(config_path: str | Path, asset: str, path: list[Fraction], *, impact: bool = False,
                 fork_url: str | None = None, environ: dict[str, str] | None = None, port: int = 0,
                 max_cycles: int = MAX_CYCLES, log: Any = None,
                 on_fork: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the stress test; returns the report (module docstring). on_fork(url, report) is
    called before the fork is stopped (tests check the chain there). The fork is always stopped."""
    from .app import Keeper
    from .config import load_config, load_signer
    from .devnet.anvil import free_port

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
        m = Market(keeper, url, asset)
        pools = m.discover_pools(cfg)
        deepest = max(pools, key=lambda p: p.depth(url)) if pools else None
        doc: dict[str, Any] = {
            "source": shown, "fork_block": head, "chain_id": chain_id, "asset": m.symbol, "token": m.token, "decimals": m.decimals,
            "path_pct": [float(p) for p in path], "impact": impact, "feeds": m.feeds,
            "pools": [p.describe() for p in pools], "deepest_pool": deepest.describe() if deepest else None,
            "not_covered": m.not_covered, "holders": m.holders, "fork": url, "max_cycles": max_cycles, "steps": []}
        how: set[str] = set()
        for i, pct in enumerate(path, 1):
            from_block = int(_local(url, "eth_blockNumber"), 16) + 1
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
            step = {
                "step": i, "pct": float(pct), "from_block": from_block, "liquidations_from_block": liq_from,
                "to_block": to_block, "oracle_before": old, "oracle_set": new, "oracle_after": m.price(),
                "pool_price_before_usd_e8": pool_before, "pool_price_after_usd_e8": pool_after,
                "impact_pct": (pool_after - pool_before) * 100 / pool_before if pool_before else None,
                "positions_liquidated": len(events), "accounts": sorted({e["account"] for e in events}),
                "seized_raw": seized, "sold_raw": sold, "sold_usd_e8": sold_usd,
                "bad_debt_usd_e8": aave_bad + morpho_bad, "bad_debt_aave_usd_e8": aave_bad,
                "bad_debt_morpho_usd_e8": morpho_bad, "bad_debt_accounts": sorted(set(bad_accounts)),
                **run, "liquidations": events}
            doc["steps"].append(step)
        doc["feed_set_by"] = sorted(how)
        doc["totals"] = {k: sum(s[k] for s in doc["steps"]) for k in
                         ("positions_liquidated", "seized_raw", "sold_raw", "sold_usd_e8", "bad_debt_usd_e8",
                          "keeper_pnl_usd_e8", "sends", "confirmed", "failed")}
        doc["seconds"] = round(time.monotonic() - t0, 2)
        if on_fork is not None:
            on_fork(url, doc)
        ok = True
        return doc
    finally:
        try:
            if keeper is not None:
                await keeper.close()
        finally:
            node.stop()
            tmp.cleanup()
            if ok:  # the node's log is kept only when something went wrong
                node.log_path.unlink(missing_ok=True)
            if saved_key is None:
                os.environ.pop(key_env, None)
            else:
                os.environ[key_env] = saved_key


# --- output ------------------------------------------------------------------------------------

def _usd(e8: int | None) -> str:
    return "-" if e8 is None else f"${e8 / 1e8:,.2f}"


def table(doc: dict[str, Any]) -> str:
    lines = [f"stress {doc['asset']} path {','.join(f'{p:g}' for p in doc['path_pct'])} impact "
             f"{'on' if doc['impact'] else 'off'}, fork of {doc['source']} at block {doc['fork_block']}",
             f"feeds {', '.join(doc['feeds'])}; deepest pool {doc['deepest_pool'] or '-'}",
             f"{'step':>4} {'move %':>7} {'oracle':>14} {'pool before':>14} {'pool after':>14} {'impact %':>9} "
             f"{'liqs':>5} {'sold':>16} {'sold USD':>16} {'bad debt':>14} {'keeper PnL':>14} {'cycles':>6}"]
    for s in doc["steps"]:
        imp = "-" if s["impact_pct"] is None else f"{s['impact_pct']:.2f}"
        lines.append(f"{s['step']:>4} {s['pct']:>7g} {s['oracle_after'] / 1e8:>14,.4f} "
                     f"{_usd(s['pool_price_before_usd_e8']):>14} {_usd(s['pool_price_after_usd_e8']):>14} {imp:>9} "
                     f"{s['positions_liquidated']:>5} {s['sold_raw'] / 10 ** doc['decimals']:>16,.4f} "
                     f"{_usd(s['sold_usd_e8']):>16} {_usd(s['bad_debt_usd_e8']):>14} {_usd(s['keeper_pnl_usd_e8']):>14} "
                     f"{s['cycles']:>6}")
    t = doc["totals"]
    lines.append(f"total: {t['positions_liquidated']} liquidations, sold {t['sold_raw'] / 10 ** doc['decimals']:,.4f} {doc['asset']} ({_usd(t['sold_usd_e8'])}), "
                 f"bad debt {_usd(t['bad_debt_usd_e8'])}, keeper PnL {_usd(t['keeper_pnl_usd_e8'])}, "
                 f"{t['failed']} failed sends")
    capped = [str(s["step"]) for s in doc["steps"] if s["capped"]]
    if capped:
        lines.append(f"cut short at {doc['max_cycles']} cycles (still liquidating) in step(s) "
                     f"{', '.join(capped)}: raise --cycles")
    if doc["not_covered"]:
        lines.append(f"not covered by stress: {', '.join(doc['not_covered'])}")
    return "\n".join(lines)


def png(doc: dict[str, Any]) -> bytes:
    """keeper/risk.py's stdlib chart: x = step (10 units each), y = USD; lines: cumulative
    volume sold (blue), cumulative bad debt (orange), cumulative keeper PnL (green, >= 0 part)."""
    from .risk import png as line_png

    series: dict[str, list[dict[str, Any]]] = {"sold": [], "bad_debt": [], "pnl": []}
    acc = {"sold": 0, "bad_debt": 0, "pnl": 0}
    for k in series:
        series[k].append({"drop_pct": 0, "debt_usd_e8": 0})
    for s in doc["steps"]:
        acc["sold"] += s["sold_usd_e8"]
        acc["bad_debt"] += s["bad_debt_usd_e8"]
        acc["pnl"] += s["keeper_pnl_usd_e8"]
        for k in series:
            series[k].append({"drop_pct": s["step"] * 10, "debt_usd_e8": max(0, acc[k])})
    return line_png({"assets": series})


async def main(args: Any) -> int:
    """keeper stress --config FILE --asset SYM --path P [--impact on|off] [--fork-url URL] [--json] [--png FILE]."""
    try:
        path = parse_path(args.path)
    except ValueError as e:
        raise ConfigError(f"--path: {e}") from None
    doc = await stress(args.config, args.asset, path, impact=args.impact == "on", fork_url=args.fork_url,
                       max_cycles=args.cycles)
    if args.png:
        with open(args.png, "wb") as f:
            f.write(png(doc))
        doc["png"] = str(args.png)
    if args.json:
        print(json.dumps(doc, indent=1, default=str))
    else:
        print(table(doc))
        if args.png:
            print(f"\nchart: {args.png} (cumulative USD by step: sold, bad debt, keeper PnL)")
    return 0
