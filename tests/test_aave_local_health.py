"""Aave V3 account health computed off-chain (keeper/protocols/aave_v3/local.py, from the
reads in chainstate.py) equals the devnet's getUserAccountData (@aave/core-v3 1.19.3
bytecode) to the wei, in all six fields, and the per-reserve balances equal the tokens'
balanceOf.

The market is made to exercise every rule: a whale borrows most of the stablecoin and LINK
liquidity and half a year passes (indexes well above 1, so rayMul rounding matters); stable
borrowing is enabled on USDC, USDT and WETH (the devnet lists no stable borrowing: the
test turns it on as pool admin, so stable debt, its per-user compounding and
swapBorrowRateMode are covered); two eMode categories: ETH-BTC without a price source and
USD (USDC, USDT) priced by USDT's feed, so a USDC depeg does not move eMode users; mid-run
WBTC's LTV goes to 0 (zero-LTV collateral); late in the run LINK's LTV and liquidation
threshold are set to 0 while users hold it as collateral (only reachable through
Pool.setConfiguration, here by impersonating the configurator; governance cannot do it with
suppliers), so the "threshold 0 is not collateral" rule is checked on real balances.

Random users (seeded) then supply, borrow (variable and stable), repay, withdraw, toggle
collateral, enter and leave eMode, swap rate modes, get liquidated after price moves, and
time passes in many blocks; after every step, every account (the random users, the whale
and the devnet's 40 seeded borrowers) is compared at the latest block N with ts = N's
timestamp. Blocks are 12 s apart unless a step mines with a longer interval, so a seed
replays the same chain.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import pytest

from keeper import abi
from keeper.multicall import Call, Multicall
from keeper.protocols.aave_v3 import local
from keeper.protocols.aave_v3.chainstate import (read_accounts, read_emode_categories, read_prices,
                                                 read_reserve_states)
from keeper.rpc import Rpc

from .conftest import KEEPER

SEED = 0x10CA1_4EA1
N_STEPS = 120
ADMIN = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil account 0: pool admin, feeds' owner
WHALE = "0x00000000000000000000000000000000000a11ce"
LIQUIDATOR = KEEPER
MAX_UINT = 2**256 - 1
ZERO = "0x" + "00" * 20

POOL = abi.load("AavePool")
ORACLE = abi.load("AaveOracle")
ERC20 = abi.load("ERC20")
F_ACCOUNT = POOL.fn("getUserAccountData")
F_MINT = ERC20.fn("mint(uint256)")
F_BALANCE = ERC20.fn("balanceOf")
F_SET_ANSWER = abi.Function("setAnswer", ["int256"], [])
F_SET_EMODE_CATEGORY = abi.Function("setEModeCategory", ["uint8", "uint16", "uint16", "uint16", "address", "string"], [])
F_SET_ASSET_EMODE = abi.Function("setAssetEModeCategory", ["address", "uint8"], [])
F_STABLE_BORROWING = abi.Function("setReserveStableRateBorrowing", ["address", "bool"], [])
F_AS_COLLATERAL = abi.Function("configureReserveAsCollateral", ["address", "uint256", "uint256", "uint256"], [])
F_SET_CONFIGURATION = abi.Function("setConfiguration", ["address", "(uint256)"], [])
F_SWAP_RATE_MODE = abi.Function("swapBorrowRateMode", ["address", "uint256"], [])


@dataclass
class R:
    """A reserve, duck-typed as chainstate wants it, plus the test's own fields."""

    symbol: str
    asset: str
    id: int
    unit: int
    a_token: str
    stable_debt: str
    variable_debt: str
    feed: str


class World:
    def __init__(self, chain: Any, mc: Multicall):
        self.chain, self.mc = chain, mc
        dep = chain.dep
        self.pool, self.oracle, self.configurator = dep.pool, dep.oracle, dep.pool_configurator
        self.reserves: list[R] = []
        for a in self.view(self.pool, POOL.fn("getReservesList"))[0]:
            d = self.view(self.pool, POOL.fn("getReserveData"), a)[0]
            self.reserves.append(R(dep.symbol_of(a), abi.to_checksum(a), d[7], 10 ** ((d[0][0] >> 48) & 0xFF),
                                   abi.to_checksum(d[8]), abi.to_checksum(d[9]), abi.to_checksum(d[10]),
                                   abi.to_checksum(self.view(self.oracle, ORACLE.fn("getSourceOfAsset"), a)[0])))
        self.by_sym = {r.symbol: r for r in self.reserves}
        self.users: list[str] = []
        self.impersonated: set[str] = set()
        self.counts: dict[str, int] = {}
        self.initial_prices: dict[str, int] = {}
        self.pending_restore: dict[str, int] = {}  # prices a liquidation step moved, to put back

    # -- raw chain access
    def view(self, to: str, fn: abi.Function, *args: Any, block: str = "latest") -> Any:
        return self.chain.view(to, fn, *args, block=block)

    def latest(self) -> tuple[int, int]:
        b = self.chain.call("eth_getBlockByNumber", ["latest", False])
        return int(b["number"], 16), int(b["timestamp"], 16)

    def tx(self, sender: str, to: str, data: bytes, what: str = "") -> bool:
        """Send (impersonated), wait for the receipt; True when it succeeded. A revert is an
        ordinary outcome of a random step (it still mines a block)."""
        if sender not in self.impersonated:
            self.chain.call("anvil_impersonateAccount", [sender])
            self.chain.call("anvil_setBalance", [sender, hex(10**21)])
            self.impersonated.add(sender)
        h = self.chain.call("eth_sendTransaction", [{"from": sender, "to": to, "data": "0x" + data.hex(),
                                                     "gas": hex(3_000_000)}])
        for _ in range(1000):
            rc = self.chain.call("eth_getTransactionReceipt", [h])
            if rc:
                ok = rc["status"] == "0x1"
                if what:
                    key = what + ("" if ok else " reverted")
                    self.counts[key] = self.counts.get(key, 0) + 1
                return ok
            time.sleep(0.002)
        raise AssertionError(f"no receipt for {h}")

    def must(self, sender: str, to: str, data: bytes) -> None:
        assert self.tx(sender, to, data), f"setup transaction to {to} reverted"

    def price(self, sym: str) -> int:
        return self.view(self.oracle, ORACLE.fn("getAssetPrice"), self.by_sym[sym].asset)[0]

    def set_price(self, sym: str, price: int) -> None:
        self.must(ADMIN, self.by_sym[sym].feed, F_SET_ANSWER.encode(max(1, price)))

    def account(self, user: str) -> tuple[int, ...]:
        return self.view(self.pool, F_ACCOUNT, user)

    def to_raw(self, sym: str, usd: float) -> int:
        return max(1, int(usd * 10**8) * self.by_sym[sym].unit // self.price(sym))

    # -- user actions
    def fund(self, user: str, sym: str, amount: int) -> None:
        r = self.by_sym[sym]
        self.must(user, r.asset, F_MINT.encode(amount))
        allowance = self.view(r.asset, ERC20.fn("allowance"), user, self.pool)[0]
        if allowance < amount:
            if allowance:  # USDT-like: no non-zero to non-zero approve
                self.must(user, r.asset, ERC20.fn("approve").encode(self.pool, 0))
            self.must(user, r.asset, ERC20.fn("approve").encode(self.pool, MAX_UINT))

    def supply(self, user: str, sym: str, amount: int) -> bool:
        self.fund(user, sym, amount)
        return self.tx(user, self.pool, POOL.fn("supply").encode(self.by_sym[sym].asset, amount, user, 0), "supply")

    def borrow(self, user: str, sym: str, amount: int, mode: int) -> bool:
        return self.tx(user, self.pool, POOL.fn("borrow").encode(self.by_sym[sym].asset, max(1, amount), mode, 0, user),
                       "borrow stable" if mode == 1 else "borrow variable")

    def debt_of(self, user: str, sym: str) -> tuple[int, int]:
        r = self.by_sym[sym]
        return self.view(r.stable_debt, F_BALANCE, user)[0], self.view(r.variable_debt, F_BALANCE, user)[0]

    def repay(self, user: str, sym: str, mode: int, amount: int) -> bool:
        r = self.by_sym[sym]
        owed = self.debt_of(user, sym)[0 if mode == 1 else 1]
        if not owed:
            return False
        self.fund(user, sym, min(amount, owed) + r.unit)  # enough for max uint and the interest of a block
        return self.tx(user, self.pool, POOL.fn("repay").encode(r.asset, amount, mode, user), "repay")


def emode_members(w: World) -> dict[int, tuple[list[str], str]]:
    return {1: (["WETH", "WBTC"], ZERO), 2: (["USDC", "USDT"], w.by_sym["USDT"].asset)}


def set_up_market(w: World, rng: random.Random) -> None:
    """Stable borrowing on, two eMode categories, a whale at 85% utilisation of the
    stablecoins and LINK, then half a year."""
    for sym in ("USDC", "USDT", "WETH"):
        w.must(ADMIN, w.configurator, F_STABLE_BORROWING.encode(w.by_sym[sym].asset, True))
    w.must(ADMIN, w.configurator, F_SET_EMODE_CATEGORY.encode(1, 8800, 9100, 10300, ZERO, "ETH-BTC"))
    w.must(ADMIN, w.configurator, F_SET_EMODE_CATEGORY.encode(2, 9300, 9500, 10100, w.by_sym["USDT"].asset, "USD"))
    for cat, (members, _src) in emode_members(w).items():
        for sym in members:
            w.must(ADMIN, w.configurator, F_SET_ASSET_EMODE.encode(w.by_sym[sym].asset, cat))
    liquidity = {s: w.view(r.asset, F_BALANCE, r.a_token)[0] for s, r in w.by_sym.items()}
    targets = [s for s in ("USDC", "USDT", "LINK") if s in w.by_sym]
    need_usd = sum(liquidity[s] * w.price(s) // w.by_sym[s].unit for s in targets) // 10**8
    for s in ("WETH", "WBTC"):
        assert w.supply(WHALE, s, w.to_raw(s, need_usd * 5 // 2))
    for s in targets:
        assert w.borrow(WHALE, s, liquidity[s] * 85 // 100, 2)
    w.chain.call("evm_setNextBlockTimestamp", [w.latest()[1] + 182 * 86400])
    w.chain.call("evm_mine")


def open_user(w: World, rng: random.Random, n: int) -> str:
    user = abi.to_checksum("0x" + rng.randbytes(20).hex())
    w.users.append(user)
    cat = rng.choice((0, 0, 0, 1, 2))
    if cat:
        w.tx(user, w.pool, POOL.fn("setUserEMode").encode(cat), "set eMode")
    colls = rng.sample([s for s in w.by_sym], rng.choice((1, 2)))
    if n % 3 == 0 and "LINK" not in colls:
        colls.append("LINK")  # the threshold-0 step needs LINK collateral
    for s in colls:
        w.supply(user, s, w.to_raw(s, 10 ** rng.uniform(3, 5)))
    do_borrow(w, rng, user)
    return user


def borrowable(w: World, user: str, mode: int) -> list[str]:
    cat = w.view(w.pool, POOL.fn("getUserEMode"), user)[0]
    syms = list(w.by_sym)
    if cat:
        syms = emode_members(w)[cat][0]
    if mode == 1:
        syms = [s for s in syms if s in ("USDC", "USDT", "WETH") and not w.view(w.by_sym[s].a_token, F_BALANCE, user)[0]]
    return syms


def do_borrow(w: World, rng: random.Random, user: str) -> None:
    mode = 1 if rng.random() < 0.35 else 2
    syms = borrowable(w, user, mode)
    if not syms:
        mode, syms = 2, borrowable(w, user, 2)
    sym = rng.choice(syms)
    avail = w.account(user)[2]
    r = w.by_sym[sym]
    cat = w.view(w.pool, POOL.fn("getUserEMode"), user)[0]
    src = emode_members(w)[cat][1] if cat else ZERO
    price = w.view(w.oracle, ORACLE.fn("getAssetPrice"), src)[0] if src != ZERO and sym in emode_members(w)[cat][0] \
        else w.price(sym)
    liquidity = w.view(r.asset, F_BALANCE, r.a_token)[0]
    cap = liquidity // 5 if mode == 1 else liquidity // 2
    amount = min(int(avail * rng.uniform(0.3, 0.97)) * r.unit // price, cap)
    if amount > 0:
        w.borrow(user, sym, amount, mode)


def used(w: World, user: str) -> tuple[list[str], list[str]]:
    """(collateral symbols, borrowed symbols) by the user's configuration bitmap."""
    cfg = w.view(w.pool, POOL.fn("getUserConfiguration"), user)[0][0]
    colls = [r.symbol for r in w.reserves if (cfg >> (2 * r.id + 1)) & 1]
    debts = [r.symbol for r in w.reserves if (cfg >> (2 * r.id)) & 1]
    return colls, debts


def try_liquidate(w: World, rng: random.Random, user: str) -> None:
    """Push the user below HF 1 by lowering its collateral prices, liquidate one pair for
    everything allowed, put the prices back (each price tx is a step too: the caller
    compares only at the end, the liquidation compares on its own)."""
    colls, debts = used(w, user)
    if not debts or not colls:
        return
    original = {s: w.price(s) for s in w.by_sym}
    moved = False
    for _ in range(3):
        hf = w.account(user)[5]
        if hf < 10**18:
            break
        for s in colls:
            if s not in debts:
                w.set_price(s, w.price(s) * 88 * 10**16 // hf)
                moved = True
    if w.account(user)[5] < 10**18:
        lt_ok = [s for s in colls if w.view(w.pool, POOL.fn("getConfiguration"), w.by_sym[s].asset)[0][0] >> 16 & 0xFFFF]
        if lt_ok:
            c, d = rng.choice(lt_ok), rng.choice(debts)
            stable, var = w.debt_of(user, d)
            w.fund(LIQUIDATOR, d, (stable + var) * 2 + w.by_sym[d].unit)
            w.tx(LIQUIDATOR, w.pool, POOL.fn("liquidationCall").encode(
                w.by_sym[c].asset, w.by_sym[d].asset, user, MAX_UINT, rng.random() < 0.3), "liquidationCall")
    if moved:
        w.pending_restore = {s: p for s, p in original.items() if w.price(s) != p}


def random_step(w: World, rng: random.Random) -> str:
    user = rng.choice(w.users)
    colls, debts = used(w, user)
    op = rng.choices(["supply", "borrow", "repay", "withdraw", "collateral", "emode", "swap_mode", "price", "time",
                      "liquidate"], weights=[10, 12, 8, 6, 3, 3, 3, 8, 8, 6])[0]
    if op == "supply":
        s = rng.choice(list(w.by_sym))
        w.supply(user, s, w.to_raw(s, 10 ** rng.uniform(2, 4.5)))
    elif op == "borrow":
        do_borrow(w, rng, user)
    elif op == "repay" and debts:
        s = rng.choice(debts)
        stable, var = w.debt_of(user, s)
        mode = 1 if stable and (not var or rng.random() < 0.5) else 2
        owed = stable if mode == 1 else var
        w.repay(user, s, mode, MAX_UINT if rng.random() < 0.3 else max(1, int(owed * rng.uniform(0.05, 0.9))))
    elif op == "withdraw" and colls:
        s = rng.choice(colls)
        bal = w.view(w.by_sym[s].a_token, F_BALANCE, user)[0]
        amount = MAX_UINT if rng.random() < 0.2 else max(1, int(bal * rng.uniform(0.05, 0.6)))
        w.tx(user, w.pool, POOL.fn("withdraw").encode(w.by_sym[s].asset, amount, user), "withdraw")
    elif op == "collateral":
        held = [r.symbol for r in w.reserves if w.view(r.a_token, F_BALANCE, user)[0]]
        if held:
            s = rng.choice(held)
            w.tx(user, w.pool, POOL.fn("setUserUseReserveAsCollateral").encode(w.by_sym[s].asset, s not in colls),
                 "toggle collateral")
    elif op == "emode":
        w.tx(user, w.pool, POOL.fn("setUserEMode").encode(rng.choice((0, 1, 2))), "set eMode")
    elif op == "swap_mode" and debts:
        s = rng.choice(debts)
        stable, var = w.debt_of(user, s)
        mode = 1 if stable and (not var or rng.random() < 0.5) else 2
        w.tx(user, w.pool, F_SWAP_RATE_MODE.encode(w.by_sym[s].asset, mode), "swapBorrowRateMode")
    elif op == "price":
        s = rng.choice(list(w.by_sym))
        p0 = w.initial_prices[s]
        w.set_price(s, min(2 * p0, max(p0 // 2, int(w.price(s) * rng.uniform(0.85, 1.15)))))
        w.counts["price move"] = w.counts.get("price move", 0) + 1
    elif op == "time":
        n, interval = rng.randint(2, 40), rng.choice((12, 600, 86400))
        w.chain.call("anvil_mine", [hex(n), hex(interval)])
        w.counts["blocks mined"] = w.counts.get("blocks mined", 0) + n
    elif op == "liquidate":
        try_liquidate(w, rng, rng.choice(w.users + w.chain.dep.borrowers[:10]))
    else:
        return "noop"
    return op


# -- the comparison -------------------------------------------------------------------------


async def compare_at_latest(w: World, accounts: list[str]) -> dict[str, int]:
    """Local vs chain for every account at the latest block; asserts equality, returns what
    the states held (for coverage)."""
    block, ts = w.latest()
    states = await read_reserve_states(w.mc, w.pool, w.reserves, block)
    failed: dict[str, str] = {}
    accts = await read_accounts(w.mc, w.pool, w.reserves, accounts, block, failed)
    assert not failed, failed
    cats = await read_emode_categories(w.mc, w.pool, {a.emode_category for a in accts.values()}, block)
    prices, emode_prices = await read_prices(w.mc, w.oracle, w.reserves, cats, block)
    onchain = await w.mc.run([Call(w.pool, F_ACCOUNT.encode(u)) for u in accounts], block)
    # balances: the tokens' balanceOf for every used reserve
    calls, where = [], []
    for u in accounts:
        for rid, is_coll, is_borrow in accts[u].used:
            r = next(x for x in w.reserves if x.id == rid)
            calls += [Call(r.a_token, F_BALANCE.encode(u)), Call(r.variable_debt, F_BALANCE.encode(u)),
                      Call(r.stable_debt, F_BALANCE.encode(u))]
            where.append((u, rid, is_coll, is_borrow))
    bal_res = await w.mc.run(calls, block)
    bad = []
    seen = {"accounts": 0, "hf_below_1": 0, "emode": 0, "emode_price_source": 0, "stable": 0, "zero_ltv": 0,
            "lt0_collateral": 0, "two_collaterals": 0}
    for u, (ok, data) in zip(accounts, onchain):
        assert ok, f"getUserAccountData({u}) reverted at {block}"
        chain_val = F_ACCOUNT.decode(data)
        mine = local.account_data(accts[u], states, prices, cats, emode_prices, ts)
        if mine.as_chain_tuple() != chain_val:
            bad.append(f"{u} at block {block}: local {mine.as_chain_tuple()} chain {chain_val} ({accts[u]})")
        a = accts[u]
        seen["accounts"] += 1
        seen["hf_below_1"] += chain_val[1] > 0 and chain_val[5] < 10**18
        seen["emode"] += a.emode_category != 0
        seen["emode_price_source"] += a.emode_category != 0 and cats[a.emode_category].has_price_source
        seen["stable"] += any(p for p, _r, _t in a.stable_debt.values())
        seen["zero_ltv"] += mine.has_zero_ltv_collateral
        seen["lt0_collateral"] += any(c and states[rid].liquidation_threshold == 0 for rid, c, _b in a.used)
        seen["two_collaterals"] += sum(c and states[rid].liquidation_threshold > 0 for rid, c, _b in a.used) >= 2
    per_user: dict[str, dict[int, tuple[int, int]]] = {}
    for k, (u, rid, is_coll, is_borrow) in enumerate(where):
        (ok_a, a), (ok_v, v), (ok_s, s) = bal_res[3 * k:3 * k + 3]
        assert ok_a and ok_v and ok_s
        if u not in per_user:
            per_user[u] = local.balances(accts[u], states, ts)
        want = (F_BALANCE.decode(a)[0] if is_coll else 0,
                F_BALANCE.decode(v)[0] + F_BALANCE.decode(s)[0] if is_borrow else 0)
        if per_user[u][rid] != want:
            bad.append(f"{u} reserve {rid} at block {block}: balances local {per_user[u][rid]} chain {want}")
    assert not bad, f"{len(bad)} differences:\n" + "\n".join(bad[:8])
    return seen


async def test_local_health_equals_get_user_account_data_through_random_histories(chain, steady_clock):
    rng = random.Random(SEED)
    started = time.monotonic()
    async with Rpc(chain.url, timeout_s=60) as rpc:
        w = World(chain, Multicall(rpc, chain.dep.multicall3))
        assert {"WETH", "WBTC", "USDC", "USDT", "LINK"} <= set(w.by_sym), list(w.by_sym)
        set_up_market(w, rng)
        w.initial_prices = {s: w.price(s) for s in w.by_sym}
        for n in range(10):
            open_user(w, rng, n)
        accounts = w.users + [WHALE] + list(chain.dep.borrowers)
        totals: dict[str, int] = {}
        ops: dict[str, int] = {}

        async def check() -> None:
            for k, v in (await compare_at_latest(w, accounts)).items():
                totals[k] = totals.get(k, 0) + v

        await check()
        for step in range(N_STEPS):
            if step == N_STEPS // 3:  # WBTC becomes zero-LTV collateral (threshold kept)
                wbtc = w.by_sym["WBTC"]
                cfg = w.view(w.pool, POOL.fn("getConfiguration"), wbtc.asset)[0][0]
                w.must(ADMIN, w.configurator, F_AS_COLLATERAL.encode(wbtc.asset, 0, (cfg >> 16) & 0xFFFF,
                                                                     (cfg >> 32) & 0xFFFF))
                await check()
            if step == 2 * N_STEPS // 3:  # LINK: LTV and threshold 0 while users hold it as collateral
                link = w.by_sym["LINK"]
                cfg = w.view(w.pool, POOL.fn("getConfiguration"), link.asset)[0][0]
                cfg &= ~0xFFFF_FFFF
                w.must(w.configurator, w.pool, F_SET_CONFIGURATION.encode(link.asset, (cfg,)))
                await check()
            op = random_step(w, rng)
            ops[op] = ops.get(op, 0) + 1
            await check()
            if w.pending_restore:
                for s, p in w.pending_restore.items():
                    w.set_price(s, p)
                w.pending_restore = {}
                await check()
    elapsed = time.monotonic() - started
    stats = {"ops": ops, "txs": w.counts, "seen": totals, "seconds": round(elapsed, 1)}
    print(f"aave local health: {stats}")
    # the history reached every rule this module implements
    assert totals["hf_below_1"] >= 1 and totals["emode"] >= 10 and totals["emode_price_source"] >= 5, stats
    assert totals["stable"] >= 5 and totals["zero_ltv"] >= 5 and totals["lt0_collateral"] >= 3, stats
    assert totals["two_collaterals"] >= 10, stats
    assert w.counts.get("liquidationCall", 0) >= 2 and w.counts.get("borrow stable", 0) >= 2, stats
    assert w.counts.get("repay", 0) >= 3 and w.counts.get("withdraw", 0) >= 2, stats
    assert w.counts.get("blocks mined", 0) >= 50, stats


async def test_health_at_a_later_timestamp_needs_no_new_reserve_or_account_reads(chain, steady_clock):
    """Reserve and account states read once at block N, health computed for the timestamps
    of later blocks (interest accrued over seconds to months, nothing touching the reserves
    or accounts) equals getUserAccountData there; then a price moves (a feed transaction,
    no Aave state touched) and only the prices are read again."""
    rng = random.Random(SEED + 1)
    async with Rpc(chain.url, timeout_s=60) as rpc:
        w = World(chain, Multicall(rpc, chain.dep.multicall3))
        set_up_market(w, rng)
        for n in range(8):
            open_user(w, rng, n)
        # and for sure: a USD-eMode user (category priced by USDT) with stable USDT debt
        user = "0x00000000000000000000000000000000057ab1e0"
        assert w.tx(user, w.pool, POOL.fn("setUserEMode").encode(2))
        assert w.supply(user, "USDC", w.to_raw("USDC", 50_000))
        assert w.borrow(user, "USDT", w.to_raw("USDT", 30_000), 1)
        w.users.append(user)
        accounts = w.users + [WHALE] + list(chain.dep.borrowers)
        block, ts0 = w.latest()
        states = await read_reserve_states(w.mc, w.pool, w.reserves, block)
        accts = await read_accounts(w.mc, w.pool, w.reserves, accounts, block)
        assert len(accts) == len(accounts)
        cats = await read_emode_categories(w.mc, w.pool, {a.emode_category for a in accts.values()}, block)
        prices, emode_prices = await read_prices(w.mc, w.oracle, w.reserves, cats, block)
        assert any(a.stable_debt for a in accts.values()) and any(a.emode_category for a in accts.values())

        async def chain_values(b: int) -> list[tuple[int, ...]]:
            res = await w.mc.run([Call(w.pool, F_ACCOUNT.encode(u)) for u in accounts], b)
            return [F_ACCOUNT.decode(d) for _ok, d in res]

        def local_values(ts: int, px: dict[int, int]) -> list[tuple[int, ...]]:
            return [local.account_data(accts[u], states, px, cats, emode_prices, ts).as_chain_tuple() for u in accounts]

        changed = 0
        for n, interval in ((1, 1), (3, 12), (5, 3600), (2, 86400), (1, 30 * 86400), (1, 90 * 86400)):
            w.chain.call("anvil_mine", [hex(n), hex(interval)])
            later, ts = w.latest()
            assert later > block and ts > ts0
            want = await chain_values(later)
            got = local_values(ts, prices)
            assert got == want, [(u, g, c) for u, g, c in zip(accounts, got, want) if g != c][:5]
            changed += sum(g != o for g, o in zip(want, local_values(ts0, prices)))
        assert changed > len(accounts), "interest moved nothing: the check proves little"
        # a price move: a feed transaction, no Aave reserve or account touched
        w.set_price("USDC", w.price("USDC") * 97 // 100)
        w.set_price("USDT", w.price("USDT") * 102 // 100)  # the USD eMode category's price source
        later, ts = w.latest()
        prices2, emode_prices2 = await read_prices(w.mc, w.oracle, w.reserves, cats, later)
        assert prices2 != prices and emode_prices2 != emode_prices
        after = [local.account_data(accts[u], states, prices2, cats, emode_prices2, ts).as_chain_tuple()
                 for u in accounts]
        assert after == await chain_values(later)
        # what a recompute after a price move needs: only the accounts exposed to a moved price
        moved = {rid for rid, p in prices2.items() if prices[rid] != p}
        moved_cats = {i for i, p in emode_prices2.items() if emode_prices.get(i) != p}
        before = local_values(ts, prices)
        exposed = 0
        for u, b, a in zip(accounts, before, after):
            if local.exposure(accts[u]) & moved or accts[u].emode_category in moved_cats:
                exposed += 1
            else:
                assert a == b, u
        assert exposed > 0


# -- pure cases ----------------------------------------------------------------------------


def _reserve(rid: int, lt: int = 8000, ltv: int = 7500, decimals: int = 18, cat: int = 0, **kw: int) -> local.ReserveState:
    cfg = ltv | lt << 16 | 10500 << 32 | decimals << 48 | 1 << 56 | cat << 168
    base = dict(liquidity_index_ray=local.RAY, variable_borrow_index_ray=local.RAY, current_liquidity_rate_ray=0,
                current_variable_borrow_rate_ray=0, current_stable_borrow_rate_ray=0, last_update_timestamp=1_000)
    base.update(kw)
    return local.ReserveState(id=rid, asset=f"0x{rid:040x}", configuration=cfg, **base)


def test_an_empty_account_has_max_health_and_no_exposure():
    acct = local.AccountState(config=0)
    assert local.account_data(acct, {}, {}, {}, {}, 5) == local.EMPTY
    assert local.EMPTY.health_factor_wad == MAX_UINT and local.exposure(acct) == frozenset()


def test_indexes_are_the_stored_ones_at_the_last_update_and_accrue_after():
    r = _reserve(0, current_liquidity_rate_ray=5 * 10**25, current_variable_borrow_rate_ray=10**26,
                 liquidity_index_ray=11 * 10**26, variable_borrow_index_ray=12 * 10**26)
    assert local.normalized_income(r, 1_000) == 11 * 10**26 and local.normalized_debt(r, 1_000) == 12 * 10**26
    year = 1_000 + local.SECONDS_PER_YEAR
    assert local.normalized_income(r, year) == (11 * 10**26) * 105 // 100  # linear: exactly 5% on 1.1
    assert local.normalized_debt(r, year) > (12 * 10**26) * 110 // 100  # compounded: more than 10%
    assert r.indexes(year) == (local.normalized_income(r, year), local.normalized_debt(r, year))
    with pytest.raises(ValueError):
        local.normalized_income(r, 999)


def test_a_reserve_with_threshold_zero_is_priced_but_not_collateral():
    rs = {0: _reserve(0, lt=0, ltv=0), 1: _reserve(1, decimals=6)}
    acct = local.AccountState(config=0b0110, collateral={0: 10**18}, variable_debt={1: 500 * 10**6})
    d = local.account_data(acct, rs, {0: 3000 * 10**8, 1: 10**8}, {}, {}, 1_000)
    assert d.total_collateral_base == 0 and d.total_debt_base == 500 * 10**8 and d.health_factor_wad == 0
    with pytest.raises(KeyError):  # the chain prices every used reserve: no price, no answer
        local.account_data(acct, rs, {1: 10**8}, {}, {}, 1_000)
    assert local.exposure(acct) == {0, 1}


class _FakeMulticall:
    """Answers each call from `answer(target, data)`: (ok, bytes). Counts the batches."""

    def __init__(self, answer: Any):
        self.answer, self.batches = answer, 0

    async def run(self, calls: list[Call], block: Any = "latest") -> list[tuple[bool, bytes]]:
        self.batches += 1
        return [self.answer(c.target, c.data) for c in calls]


async def test_read_accounts_leaves_out_and_names_the_users_it_cannot_read():
    from keeper.protocols.aave_v3 import chainstate as cs

    def word(v: int) -> bytes:
        return v.to_bytes(32, "big")

    reserves = [R("A", "0x" + "a0" * 20, 0, 10**18, "0x" + "a1" * 20, "0x" + "a2" * 20, "0x" + "a3" * 20, ""),
                R("B", "0x" + "b0" * 20, 1, 10**6, "0x" + "b1" * 20, "0x" + "b2" * 20, "0x" + "b3" * 20, "")]
    users = {  # user -> (config, eMode)
        "0x" + "01" * 20: (0b0110, 0),  # collateral A, borrows B (with stable debt)
        "0x" + "02" * 20: (0b0010, 1),  # collateral A only
        "0x" + "03" * 20: None,  # getUserConfiguration reverts
        "0x" + "04" * 20: (0b0010 | 1 << 6, 0),  # borrows reserve 3: not known
        "0x" + "05" * 20: (0b0100, 0),  # its debt balance read reverts
    }

    def answer(target: str, data: bytes) -> tuple[bool, bytes]:
        user = "0x" + data[16:36].hex()
        sel = data[:4]
        if sel in (cs.F_USER_CONFIG.selector, cs.F_USER_EMODE.selector):
            if users[user] is None:
                return False, b""
            return True, word(users[user][0 if sel == cs.F_USER_CONFIG.selector else 1])
        if user == "0x" + "05" * 20:
            return False, b""
        value = {cs.F_SCALED.selector: 7, cs.F_PRINCIPAL.selector: 11 if user == "0x" + "01" * 20 else 0,
                 cs.F_STABLE_RATE.selector: 5 * 10**25, cs.F_STABLE_UPDATED.selector: 1_000}[sel]
        return True, word(value * (2 if target == reserves[1].variable_debt else 1))

    mc = _FakeMulticall(answer)
    failed: dict[str, str] = {}
    got = await cs.read_accounts(mc, "0x" + "ff" * 20, reserves, list(users), 1, failed)
    assert failed == {"0x" + "03" * 20: "user_configuration", "0x" + "04" * 20: "unknown_reserve",
                      "0x" + "05" * 20: "balance"}
    assert mc.batches == 3  # configurations, balances, stable rate and timestamp (only user 1 has stable debt)
    one, two = got["0x" + "01" * 20], got["0x" + "02" * 20]
    assert (one.collateral, one.variable_debt, one.stable_debt) == ({0: 7}, {1: 14}, {1: (11, 5 * 10**25, 1_000)})
    assert (two.emode_category, two.collateral, two.variable_debt, two.stable_debt) == (1, {0: 7}, {}, {})
    assert local.exposure(one) == {0, 1} and local.exposure(two) == {0}
