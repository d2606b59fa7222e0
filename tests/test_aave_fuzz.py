"""Aave V3 liquidations on the devnet's real bytecode (@aave/core-v3 1.19.3), predicted to the
wei by keeper/protocols/aave_v3/math.py from the same reads the adapter makes.

Each fuzz case opens a random position (one or two collaterals, random sizes, plain or
eMode, with and without an eMode price source), makes it liquidatable (oracle moves, or a
lower eMode liquidation threshold), lets a random time pass, and calls liquidationCall with
a random debtToCover (small, partial, exactly the close factor, more than allowed, max
uint) and receiveAToken. The prediction must match the chain exactly: debt repaid and
collateral received (LiquidationCall event and the liquidator's balance changes), the
protocol fee (aToken Transfer to the treasury, the treasury's scaled and aToken balance
changes) and what the user has left.

Time: the inputs are read with `eth_call` at "latest" with the block override
`{"time": T}`, then `evm_setNextBlockTimestamp(T)` mines the liquidation at exactly T (the
test checks the block's timestamp and that it is the very next block), so the reads see the
indexes, and thus the balances, the transaction sees. anvil refuses a next timestamp equal
to the latest block's, so "mine a block at T, read it, execute at T" is not possible;
reading with the next block's timestamp is. Read at block N instead (what the adapter does
today), 52 of the 64 cases differ by the interest of the interval.

The first half of the cases runs on the devnet as loaded (liquidity indexes ~1.00000002),
the second on an older market (`age_market`: indexes 1.0004 to 1.35), where rayMul/rayDiv
rounding, and so the fee clamp, shows up as on mainnet. Blocks are 12 s apart
(`steady_clock`), so a seed replays the same chain.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from keeper import abi
from keeper.protocols.aave_v3 import math as am
from keeper.protocols.aave_v3.adapter import Adapter, Reserve
from keeper.protocols.aave_v3.errors import explain

from .conftest import KEEPER

SEED = 0xAA7E_F022
N_CASES = 64
CANDIDATES = ("WETH", "WBTC", "USDC", "LINK", "USDT")  # LINK, USDT only if the devnet lists them
POOL_ADMIN = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil account 0: pool admin, aggregator owner
LIQUIDATOR = KEEPER
MAX_UINT = 2**256 - 1
RULES = "v3.0"  # @aave/core-v3 1.19.3

POOL = abi.load("AavePool")
ORACLE = abi.load("AaveOracle")
ERC20 = abi.load("ERC20")
F_SCALED = abi.Function("scaledBalanceOf", ["address"], ["uint256"])
F_SET_EMODE_CATEGORY = abi.Function(
    "setEModeCategory", ["uint8", "uint16", "uint16", "uint16", "address", "string"], [])
F_SET_ASSET_EMODE = abi.Function("setAssetEModeCategory", ["address", "uint8"], [])
F_SET_ANSWER = abi.Function("setAnswer", ["int256"], [])
F_MINT = ERC20.fn("mint(uint256)")
EV_LIQUIDATION = POOL.event("LiquidationCall")
EV_TRANSFER = ERC20.event("Transfer")
ZERO = "0x" + "00" * 20


# -- pure math: the clamp on its own ------------------------------------------------------


def test_ray_div_rounds_half_up_like_wadraymath():
    assert am.ray_div(1, 2 * am.RAY) == 1  # 0.5 -> 1
    assert am.ray_div(1, 2 * am.RAY + 1) == 0  # just under 0.5 -> 0
    assert am.ray_div(3, 2 * am.RAY) == 2  # 1.5 -> 2
    assert am.ray_div(10**18, am.RAY) == 10**18
    i = am.RAY + 123_456_789_012_345
    assert am.ray_div(10**18, i) == (10**18 * am.RAY + i // 2) // i


def _whole_collateral(scaled: int, index: int, bonus: int = 10500, fee_bps: int = 1000) -> am.Liquidation:
    """collateral_for_debt's answer when the whole balance (scaled.rayMul(index)) is seized."""
    balance = am.ray_mul(scaled, index)
    fee = am.percent_mul(balance - am.percent_div(balance, bonus), fee_bps)
    return am.Liquidation(debt_to_cover=1, collateral_to_liquidator=balance - fee, protocol_fee=fee,
                          collateral_taken=balance)


def test_clamp_lowers_the_fee_to_the_users_last_scaled_units_when_all_collateral_goes():
    rng = random.Random(7)
    hits = 0
    for _ in range(2_000):
        index = am.RAY + rng.randint(1, 10**26)
        scaled = rng.randint(10**4, 10**24)
        liq = _whole_collateral(scaled, index, rng.randint(10_010, 11_500), rng.choice((500, 1000, 2500)))
        got = am.clamp_protocol_fee(liq, scaled, index)
        left = scaled - am.ray_div(liq.collateral_to_liquidator, index)
        assert got.collateral_to_liquidator == liq.collateral_to_liquidator and got.debt_to_cover == 1
        assert got.collateral_taken == got.collateral_to_liquidator + got.protocol_fee
        if am.ray_div(liq.protocol_fee, index) > left:
            hits += 1
            assert got.protocol_fee == am.ray_mul(left, index)
            assert liq.protocol_fee - got.protocol_fee in (1, 2), (liq, got)
            assert am.ray_div(got.protocol_fee, index) <= left  # the transfer now fits
        else:
            assert got == liq
    assert hits > 100  # the clamp is common (about 1 in 8) once all the collateral goes


def test_clamp_never_changes_a_partial_liquidation_or_a_zero_fee():
    rng = random.Random(8)
    for _ in range(2_000):
        index = am.RAY + rng.randint(0, 10**26)
        scaled = rng.randint(10**4, 10**24)
        whole = _whole_collateral(scaled, index)
        taken = rng.randint(1, whole.collateral_taken - 1)  # at least 1 wei stays with the user
        fee = am.percent_mul(taken - am.percent_div(taken, 10500), 1000)
        part = am.Liquidation(1, taken - fee, fee, taken)
        assert am.clamp_protocol_fee(part, scaled, index) == part
    no_fee = am.Liquidation(1, 10**18, 0, 10**18)
    assert am.clamp_protocol_fee(no_fee, 1, am.RAY) == no_fee  # the pool skips the fee transfer


def test_size_liquidation_applies_the_clamp_only_when_given_its_inputs():
    index = 1_012_345_678_901_234_567_890_123_456  # 1.0123...: an index with digits to round
    for scaled in range(10**18, 10**18 + 200):
        liq = _whole_collateral(scaled, index)
        if am.clamp_protocol_fee(liq, scaled, index) != liq:
            break
    else:
        pytest.fail("no clamp in 200 balances")
    coll = am.Side(price=3000 * 10**8, unit=10**18, balance=liq.collateral_taken)
    debt = am.Side(price=10**8, unit=10**6, balance=10_000 * 10**6)
    plain = am.size_liquidation(RULES, 5 * 10**17, debt, coll, 10_000 * 10**8, 10500, 1000)
    clamped = am.size_liquidation(RULES, 5 * 10**17, debt, coll, 10_000 * 10**8, 10500, 1000,
                                  user_scaled_balance=scaled, liquidity_index_ray=index)
    assert plain.collateral_taken == coll.balance  # all the collateral goes
    assert clamped == am.clamp_protocol_fee(plain, scaled, index)
    assert clamped.protocol_fee == plain.protocol_fee - 1
    assert clamped.collateral_to_liquidator == plain.collateral_to_liquidator
    assert clamped.debt_to_cover == plain.debt_to_cover


# -- the devnet market ------------------------------------------------------------------------


class Market:
    """The Aave reserves of the devnet and reads at a chosen timestamp, as the adapter makes them."""

    def __init__(self, chain: Any):
        self.chain = chain
        dep = chain.dep
        self.pool, self.oracle, self.treasury = dep.pool, dep.oracle, dep.treasury
        listed = {a.lower() for a in chain.view(dep.pool, POOL.fn("getReservesList"))[0]}
        self.reserves: dict[str, Reserve] = {}
        for sym in CANDIDATES:
            asset = dep.tokens.get(sym)
            if not asset or asset.lower() not in listed:
                continue
            d = chain.view(dep.pool, POOL.fn("getReserveData"), asset)[0]
            self.reserves[sym] = Reserve(
                asset=asset, symbol=sym, id=d[7], decimals=(d[0][0] >> 48) & 0xFF,
                a_token=abi.to_checksum(d[8]), stable_debt=abi.to_checksum(d[9]),
                variable_debt=abi.to_checksum(d[10]), price_source="", configuration=d[0][0])
        self.aggregators = dict(dep.aggregators)

    # reserve configuration bits not exposed by adapter.Reserve
    @staticmethod
    def ltv(r: Reserve) -> int:
        return r.configuration & 0xFFFF

    @staticmethod
    def borrowable(r: Reserve) -> bool:
        return bool((r.configuration >> 58) & 1)

    def collateral_symbols(self) -> list[str]:
        return [s for s, r in self.reserves.items() if r.liquidation_threshold_bps and self.ltv(r)]

    def debt_symbols(self) -> list[str]:
        return [s for s, r in self.reserves.items() if self.borrowable(r)]

    # raw JSON-RPC
    def latest(self) -> tuple[int, int]:
        b = self.chain.call("eth_getBlockByNumber", ["latest", False])
        return int(b["number"], 16), int(b["timestamp"], 16)

    def at(self, ts: int | None, to: str, fn: abi.Function, *args: Any) -> Any:
        """eth_call at "latest"; with ts, as if in a block with that timestamp (block override)."""
        params: list[Any] = [{"to": to, "data": "0x" + fn.encode(*args).hex()}, "latest"]
        if ts is not None:
            params += [None, {"time": hex(ts)}]
        out = fn.decode(bytes.fromhex(self.chain.call("eth_call", params)[2:]))
        return out[0] if len(out) == 1 else out

    def send(self, sender: str, to: str, data: bytes, *, ok: bool = True, gas: int = 3_000_000) -> dict[str, Any]:
        self.chain.call("anvil_impersonateAccount", [sender])
        h = self.chain.call("eth_sendTransaction", [{"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(gas)}])
        rc = None
        for _ in range(500):
            rc = self.chain.call("eth_getTransactionReceipt", [h])
            if rc:
                break
            time.sleep(0.005)
        assert rc is not None, f"no receipt for {h}"
        if ok:
            assert rc["status"] == "0x1", f"{fn_name(data)} from {sender} reverted: {self.why(sender, to, data, rc)}"
        return rc

    def why(self, sender: str, to: str, data: bytes, rc: dict[str, Any]) -> str:
        """The revert reason (Aave's numeric codes named), replayed at the receipt's parent block."""
        block = hex(int(rc["blockNumber"], 16) - 1)
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_call",
                "params": [{"from": sender, "to": to, "data": "0x" + data.hex(), "gas": hex(3_000_000)}, block]}
        req = urllib.request.Request(self.chain.url, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            reply = json.loads(resp.read())
        err = reply.get("error")
        if not err:
            return "did not revert on replay"
        data_hex = err.get("data")
        if isinstance(data_hex, str) and data_hex.startswith("0x"):
            return explain(abi.decode_revert(bytes.fromhex(data_hex[2:])))
        return str(err.get("message"))

    # state changes
    def set_price(self, sym: str, price: int) -> None:
        self.send(POOL_ADMIN, self.aggregators[sym], F_SET_ANSWER.encode(price))

    def price(self, asset: str) -> int:
        return self.at(None, self.oracle, ORACLE.fn("getAssetPrice"), asset)

    def approve_pool(self, owner: str, token: str, amount: int = MAX_UINT) -> None:
        """approve, USDT-safe: a token like mainnet USDT (the devnet's TetherLike) refuses a
        non-zero approve over a non-zero allowance; skipped when the allowance suffices."""
        allowance = self.at(None, token, ERC20.fn("allowance"), owner, self.pool)
        if allowance >= amount:
            return
        if allowance:
            self.send(owner, token, ERC20.fn("approve").encode(self.pool, 0))
        self.send(owner, token, ERC20.fn("approve").encode(self.pool, amount))

    def supply(self, user: str, sym: str, amount: int) -> None:
        r = self.reserves[sym]
        self.send(user, r.asset, F_MINT.encode(amount))
        self.approve_pool(user, r.asset, amount)
        self.send(user, self.pool, POOL.fn("supply").encode(r.asset, amount, user, 0))

    def free_emode_id(self) -> int:
        for i in range(1, 256):
            if self.at(None, self.pool, POOL.fn("getEModeCategoryData"), i)[1] == 0:
                return i
        raise AssertionError("no free eMode category id")

    def set_emode_category(self, cat: int, ltv: int, lt: int, bonus: int, source: str, label: str) -> None:
        self.send(POOL_ADMIN, self.chain.dep.pool_configurator,
                  F_SET_EMODE_CATEGORY.encode(cat, ltv, lt, bonus, source, label))


def fn_name(data: bytes) -> str:
    for a in (POOL, ERC20):
        for f in a.functions.values():
            if f.selector == data[:4]:
                return f.name
    return "0x" + data[:4].hex()


@dataclass
class Inputs:
    """What the adapter reads for one (user, collateral, debt) pair, plus the clamp's inputs."""

    health_factor: int
    total_debt_base: int
    coll: am.Side
    debt: am.Side
    bonus_bps: int
    protocol_fee_bps: int
    scaled: int  # AToken(collateral).scaledBalanceOf(user)
    index: int  # Pool.getReserveNormalizedIncome(collateral)


def read_inputs(m: Market, ts: int, user: str, c: Reserve, d: Reserve) -> Inputs:
    """getUserAccountData, reserve configurations, oracle prices, getUserEMode and the
    category, aToken and debt-token balances: the adapter's reads (refresh + _positions),
    made one by one, at timestamp ts. eMode bonus and prices go through the adapter's own
    `_bonus_and_prices` (it uses no adapter state)."""
    _coll_base, debt_base, _avail, _lt, _ltv, hf = m.at(ts, m.pool, POOL.fn("getUserAccountData"), user)
    c = replace(c, configuration=m.at(ts, m.pool, POOL.fn("getConfiguration"), c.asset)[0],
                price=m.at(ts, m.oracle, ORACLE.fn("getAssetPrice"), c.asset))
    d = replace(d, configuration=m.at(ts, m.pool, POOL.fn("getConfiguration"), d.asset)[0],
                price=m.at(ts, m.oracle, ORACLE.fn("getAssetPrice"), d.asset))
    emode_id = m.at(ts, m.pool, POOL.fn("getUserEMode"), user)
    pos: dict[str, Any] = {"emode_id": emode_id}
    if emode_id:
        _ltv_c, _lt_c, bonus_c, source, _label = m.at(ts, m.pool, POOL.fn("getEModeCategoryData"), emode_id)
        source_price = m.at(ts, m.oracle, ORACLE.fn("getAssetPrice"), source) if int(source, 16) else 0
        pos["emode"] = (bonus_c, source_price)
    bonus, c_price, d_price = Adapter._bonus_and_prices(None, pos, c, d)  # type: ignore[arg-type]
    c_bal = m.at(ts, c.a_token, ERC20.fn("balanceOf"), user)
    d_bal = m.at(ts, d.stable_debt, ERC20.fn("balanceOf"), user) + m.at(ts, d.variable_debt, ERC20.fn("balanceOf"), user)
    return Inputs(
        health_factor=hf, total_debt_base=debt_base,
        coll=am.Side(price=c_price, unit=c.unit, balance=c_bal),
        debt=am.Side(price=d_price, unit=d.unit, balance=d_bal),
        bonus_bps=bonus, protocol_fee_bps=c.protocol_fee_bps,
        scaled=m.at(ts, c.a_token, F_SCALED, user),
        index=m.at(ts, m.pool, POOL.fn("getReserveNormalizedIncome"), c.asset),
    )


def predict(inp: Inputs, requested: int, clamp: bool = True) -> am.Liquidation | None:
    """What liquidationCall(debtToCover=requested) does: the rules' limit capped by the request."""
    extra = {"user_scaled_balance": inp.scaled, "liquidity_index_ray": inp.index} if clamp else {}
    return am.size_liquidation(RULES, inp.health_factor, inp.debt, inp.coll, inp.total_debt_base,
                               inp.bonus_bps, inp.protocol_fee_bps, inventory=requested, **extra)


@dataclass
class Execution:
    receipt: dict[str, Any]
    checks: list[tuple[str, int, int]] = field(default_factory=list)  # (what, predicted, on chain)
    reason: str = ""  # the revert reason, if it reverted

    def check(self, what: str, predicted: int, actual: int) -> None:
        self.checks.append((what, predicted, actual))

    @property
    def mismatches(self) -> list[str]:
        bad = [f"{w}: predicted {p}, chain {a} ({a - p:+d})" for w, p, a in self.checks if p != a]
        return bad + [f"reverted: {self.reason}"] if bad and self.reason else bad


def liquidate_and_compare(m: Market, ts: int, user: str, c: Reserve, d: Reserve, inp: Inputs,
                          requested: int, receive_a_token: bool, liq: am.Liquidation | None) -> Execution:
    """Execute liquidationCall at timestamp ts from the liquidator and compare every amount
    with `liq` (None: the call must revert)."""
    rd, rm, idx = am.ray_div, am.ray_mul, inp.index
    tokens = {c.asset, d.asset}
    under_before = {t: m.at(None, t, ERC20.fn("balanceOf"), LIQUIDATOR) for t in tokens}
    liq_scaled_before = m.at(None, c.a_token, F_SCALED, LIQUIDATOR)
    tre_scaled_before = m.at(None, c.a_token, F_SCALED, m.treasury)
    tre_bal_before = m.at(ts, c.a_token, ERC20.fn("balanceOf"), m.treasury)
    user_scaled_before = m.at(None, c.a_token, F_SCALED, user)
    user_debt_scaled_before = m.at(None, d.variable_debt, F_SCALED, user)
    debt_index = m.at(ts, m.pool, POOL.fn("getReserveNormalizedVariableDebt"), d.asset)
    stable_debt = m.at(ts, d.stable_debt, ERC20.fn("balanceOf"), user)

    number, _ = m.latest()
    m.chain.call("evm_setNextBlockTimestamp", [ts])
    data = POOL.fn("liquidationCall").encode(c.asset, d.asset, user, requested, receive_a_token)
    rc = m.send(LIQUIDATOR, m.pool, data, ok=False)
    ex = Execution(rc)
    block = m.chain.call("eth_getBlockByNumber", [rc["blockNumber"], False])
    ex.check("block timestamp", ts, int(block["timestamp"], 16))
    ex.check("block number", number + 1, int(rc["blockNumber"], 16))
    status = int(rc["status"], 16)
    ex.check("status (1: succeeds, 0: reverts)", 0 if liq is None else 1, status)
    if status == 0:
        ex.reason = m.why(LIQUIDATOR, m.pool, data, rc)
    if liq is None or status == 0:
        return ex

    events = [EV_LIQUIDATION.decode(lg) for lg in rc["logs"]
              if lg["address"].lower() == m.pool.lower() and lg["topics"][0] == EV_LIQUIDATION.topic0]
    ex.check("LiquidationCall events", 1, len(events))
    if events:
        ex.check("event debtToCover", liq.debt_to_cover, events[0]["debtToCover"])
        ex.check("event liquidatedCollateralAmount", liq.collateral_to_liquidator, events[0]["liquidatedCollateralAmount"])
    fee_transfers = [EV_TRANSFER.decode(lg)["value"] for lg in rc["logs"]
                     if lg["address"].lower() == c.a_token.lower() and lg["topics"][0] == EV_TRANSFER.topic0
                     and int(lg["topics"][1], 16) == int(user, 16) and int(lg["topics"][2], 16) == int(m.treasury, 16)]
    ex.check("aToken Transfer user->treasury (protocol fee)", liq.protocol_fee, sum(fee_transfers))
    ex.check("fee Transfer events", 1 if liq.protocol_fee else 0, len(fee_transfers))

    expect = {t: 0 for t in tokens}
    expect[d.asset] -= liq.debt_to_cover
    if not receive_a_token:
        expect[c.asset] += liq.collateral_to_liquidator
    for t in sorted(tokens):
        sym = c.symbol if t == c.asset else d.symbol
        ex.check(f"liquidator {sym} balance change", expect[t], m.at(None, t, ERC20.fn("balanceOf"), LIQUIDATOR) - under_before[t])
    got_scaled = m.at(None, c.a_token, F_SCALED, LIQUIDATOR) - liq_scaled_before
    ex.check("liquidator scaled aToken change", rd(liq.collateral_to_liquidator, idx) if receive_a_token else 0, got_scaled)
    fee_scaled = rd(liq.protocol_fee, idx)
    tre_scaled_after = m.at(None, c.a_token, F_SCALED, m.treasury)
    ex.check("treasury scaled aToken change", fee_scaled, tre_scaled_after - tre_scaled_before)
    ex.check("treasury aToken balance change", rm(tre_scaled_before + fee_scaled, idx) - rm(tre_scaled_before, idx),
             m.at(None, c.a_token, ERC20.fn("balanceOf"), m.treasury) - tre_bal_before)
    ex.check("user scaled aToken left",
             user_scaled_before - rd(liq.collateral_to_liquidator, idx) - (fee_scaled if liq.protocol_fee else 0),
             m.at(None, c.a_token, F_SCALED, user))
    if stable_debt == 0:  # the devnet enables no stable borrowing
        ex.check("user scaled variable debt left", user_debt_scaled_before - rd(liq.debt_to_cover, debt_index),
                 m.at(None, d.variable_debt, F_SCALED, user))
    ex.check("index the chain used", idx, m.at(None, m.pool, POOL.fn("getReserveNormalizedIncome"), c.asset))
    return ex


# -- one random case ------------------------------------------------------------------------


@dataclass
class Case:
    n: int
    kind: str  # plain | emode | emode_source
    supply: dict[str, int]
    debt: str
    collateral: str  # the one liquidated
    mode: str  # small | partial | close_factor | over | max
    receive_a_token: bool
    dt: int  # seconds from the last setup block to the liquidation
    notes: list[str] = field(default_factory=list)
    market: str = "fresh"  # fresh: the devnet as loaded; mature: after age_market

    def __str__(self) -> str:
        return (f"case {self.n} (seed {SEED}+{self.n}, {self.market} market) {self.kind}: supply {self.supply}, debt {self.debt}, "
                f"liquidate {self.collateral}, debtToCover {self.mode}, receiveAToken {self.receive_a_token}, "
                f"dt {self.dt}s; {'; '.join(self.notes)}")


@dataclass
class Outcome:
    case: Case
    liquidatable: bool
    reverted: bool
    whole_collateral: bool
    whole_debt: bool  # the user's whole debt in the reserve repaid (burns the full scaled balance)
    clamped: bool
    fee_unclamped_error: int  # unclamped prediction minus the chain's fee
    mismatches: list[str]


def max_bonus(lt: int) -> int:
    """The largest liquidation bonus setEModeCategory accepts with this threshold."""
    b = PERCENTAGE_FACTOR_SQ // lt
    while am.percent_mul(lt, b) > am.PERCENTAGE_FACTOR:
        b -= 1
    return b


PERCENTAGE_FACTOR_SQ = am.PERCENTAGE_FACTOR * am.PERCENTAGE_FACTOR


def to_raw(m: Market, sym: str, usd: int, price: int | None = None) -> int:
    r = m.reserves[sym]
    price = price or m.price(r.asset)
    return max(1, usd * 10**8 * r.unit // price)


def open_case(m: Market, rng: random.Random, n: int) -> tuple[Case, str]:
    """Open a random position and make it liquidatable; returns the case and the borrower."""
    colls, debts = m.collateral_symbols(), m.debt_symbols()
    user = abi.to_checksum("0x" + rng.randbytes(20).hex())
    m.chain.call("anvil_setBalance", [user, hex(10**20)])
    kind = rng.choices(["plain", "emode", "emode_source"], weights=[5, 2, 2])[0]
    members: list[str] = []
    cat = lt = 0
    source = ZERO
    notes: list[str] = []
    if kind != "plain":
        members = rng.sample([s for s in colls if s in debts], 2)
        debt = rng.choice(members)
        cat = m.free_emode_id()
        base_lt = max(m.reserves[s].liquidation_threshold_bps for s in members)
        base_ltv = max(m.ltv(m.reserves[s]) for s in members)
        if kind == "emode_source":  # room to lower the threshold later
            ltv = rng.randint(max(base_lt, base_ltv) + 400, 9700)
            # any listed asset can price the category; one priced far from the debt asset
            # makes the debt (in units) worth much more or less than the collateral really is
            # and the borrow runs into the reserve's liquidity
            d_price = m.price(m.reserves[debt].asset)
            source = m.reserves[rng.choice([s for s, r in m.reserves.items()
                                            if d_price <= 4 * m.price(r.asset) <= 16 * d_price])].asset
        else:
            ltv = rng.randint(base_ltv + 1, 9600)
        lt = rng.randint(max(ltv, base_lt + 1), min(ltv + 300, 9800))
        bonus = rng.randint(10_010, max_bonus(lt))
        m.set_emode_category(cat, ltv, lt, bonus, source, f"fuzz {n}")
        for s in members:
            m.send(POOL_ADMIN, m.chain.dep.pool_configurator, F_SET_ASSET_EMODE.encode(m.reserves[s].asset, cat))
        m.send(user, m.pool, POOL.fn("setUserEMode").encode(cat))
        notes.append(f"eMode {cat} {members} ltv {ltv} lt {lt} bonus {bonus} source "
                     f"{m.chain.dep.symbol_of(source) if source != ZERO else '-'}")
    else:
        debt = rng.choice(debts)
    if kind == "emode_source":  # same price for every member: only the threshold can make it liquidatable
        pool_of = members
    else:
        pool_of = [s for s in colls if s != debt]
    supplied = rng.sample(pool_of, rng.choice((1, 2)) if len(pool_of) > 1 else 1)
    supply = {}
    for s in supplied:
        usd = int(10 ** rng.uniform(2.5, 5.4))  # valued as the pool values it
        supply[s] = to_raw(m, s, usd, m.price(source) if source != ZERO else None)
        m.supply(user, s, supply[s])
    collateral = min(supplied, key=lambda s: supply[s] * m.price(m.reserves[s].asset) // m.reserves[s].unit) \
        if rng.random() < 0.6 else rng.choice(supplied)

    # borrow a share of what the LTV allows, priced as the pool prices the debt
    avail = m.at(None, m.pool, POOL.fn("getUserAccountData"), user)[2]
    d = m.reserves[debt]
    d_price = m.price(source) if source != ZERO else m.price(d.asset)
    share = rng.uniform(0.97, 0.995) if kind == "emode_source" else rng.uniform(0.5, 0.995)
    liquidity = m.at(None, d.asset, ERC20.fn("balanceOf"), d.a_token)
    amount = min(int(avail * share) * d.unit // d_price, liquidity // 2)
    m.send(user, m.pool, POOL.fn("borrow").encode(d.asset, max(amount, 1), 2, 0, user))

    hf = m.at(None, m.pool, POOL.fn("getUserAccountData"), user)[5]
    target = rng.choice((rng.uniform(0.955, 0.999), rng.uniform(0.86, 0.95), rng.uniform(0.3, 0.86)))
    if kind == "emode_source":
        new_lt = max(base_lt + 1, min(int(lt * 0.999 * 10**18 / hf), int(lt * target * 10**18 / hf)))
        new_ltv = rng.randint(base_ltv + 1, new_lt)
        new_bonus = rng.randint(10_010, max_bonus(new_lt))
        m.set_emode_category(cat, new_ltv, new_lt, new_bonus, source, f"fuzz {n} lowered")
        notes.append(f"eMode lowered to ltv {new_ltv} lt {new_lt} bonus {new_bonus}")
    else:
        for s in supplied:
            if rng.random() < 0.5:
                old = m.price(m.reserves[s].asset)
                m.set_price(s, max(1, int(old * rng.uniform(0.6, 1.1))))
                notes.append(f"{s} {old} -> {m.price(m.reserves[s].asset)}")
        hf = m.at(None, m.pool, POOL.fn("getUserAccountData"), user)[5]
        if hf > target * 10**18:
            old = m.price(d.asset)
            m.set_price(debt, old * hf // int(target * 10**18) + 1)
            notes.append(f"{debt} {old} -> {m.price(d.asset)}")
    mode = rng.choice(("small", "partial", "close_factor", "over", "max", "max"))
    dt = rng.choice((1, 12, rng.randint(13, 3600), rng.randint(3601, 90 * 86400)))
    return Case(n, kind, supply, debt, collateral, mode, rng.random() < 0.3, dt, notes), user


def request_for(mode: str, limit: int, rng: random.Random) -> int:
    if mode == "small":
        return rng.randint(max(1, limit // 1000), max(1, limit // 10))
    if mode == "partial":
        return rng.randint(max(1, limit // 10), max(1, limit - 1))
    if mode == "close_factor":
        return limit
    if mode == "over":
        return limit + rng.randint(1, limit + 1)
    return MAX_UINT


def clamp_timestamp(m: Market, inp: Inputs, asset: str, start: int, tries: int = 400) -> int | None:
    """The first timestamp from `start` at which seizing the whole collateral triggers the
    fee clamp (the index moves each second; the user's scaled balance does not)."""
    for ts in range(start, start + tries):
        idx = m.at(ts, m.pool, POOL.fn("getReserveNormalizedIncome"), asset)
        whole = am.ray_mul(inp.scaled, idx)
        fee = am.percent_mul(whole - am.percent_div(whole, inp.bonus_bps), inp.protocol_fee_bps)
        liq = am.Liquidation(1, whole - fee, fee, whole)
        if fee and am.clamp_protocol_fee(liq, inp.scaled, idx) != liq:
            return ts
    return None


def run_case(m: Market, n: int, market: str = "fresh") -> Outcome:
    rng = random.Random(SEED + n)
    case, user = open_case(m, rng, n)
    case.market = market
    c, d = m.reserves[case.collateral], m.reserves[case.debt]
    # the liquidator pays from its own balance: enough for the whole debt and its interest
    m.send(LIQUIDATOR, d.asset, F_MINT.encode(m.at(None, d.variable_debt, ERC20.fn("balanceOf"), user) * 2 + 10 * d.unit))
    m.approve_pool(LIQUIDATOR, d.asset)

    _, last_ts = m.latest()
    ts = last_ts + case.dt
    inp = read_inputs(m, ts, user, c, d)
    if case.n % 4 == 0 and case.mode in ("max", "over"):
        # every 4th case with a full-size request hunts for a timestamp where the clamp bites
        hunted = clamp_timestamp(m, inp, c.asset, ts)
        if hunted is not None and hunted != ts:
            case.notes.append(f"clamp hunt: dt {case.dt} -> {hunted - last_ts}")
            case.dt, ts = hunted - last_ts, hunted
            inp = read_inputs(m, ts, user, c, d)
    liquidatable = am.is_liquidatable(inp.health_factor, inp.total_debt_base)
    limit = am.max_liquidatable_debt(RULES, inp.health_factor, inp.debt, inp.coll, inp.total_debt_base)
    requested = request_for(case.mode, limit, rng)
    liq = predict(inp, requested) if liquidatable else None
    raw = predict(inp, requested, clamp=False) if liquidatable else None
    receive = case.receive_a_token and liq is not None
    case.notes.append(f"HF {inp.health_factor / 1e18:.4f}, limit {limit}, requested {requested}, prediction {liq}")
    ex = liquidate_and_compare(m, ts, user, c, d, inp, requested, receive, liq)
    whole = raw is not None and raw.collateral_taken == inp.coll.balance
    clamped = liq is not None and raw is not None and liq.protocol_fee != raw.protocol_fee
    fee_err = 0
    if clamped:
        fee_err = raw.protocol_fee - liq.protocol_fee  # the chain's fee is liq's when the checks pass
    whole_debt = liq is not None and liq.debt_to_cover == inp.debt.balance
    return Outcome(case, liquidatable, liq is None, whole, whole_debt, clamped, fee_err, ex.mismatches)


AGE_S = 365 * 86400


def age_market(m: Market) -> dict[str, int]:
    """An older market: a whale posts WETH and WBTC and borrows 90% of every reserve's
    liquidity (rates far up the slope), then a year passes. Liquidity indexes go from the
    fresh devnet's 1.00000002 to about 1.33 (USDC, LINK, USDT: 90% utilised) and 1.0004
    (WETH, WBTC: the whale's own collateral keeps their utilisation low). With an index that
    close to 1, rayMul and rayDiv are exact for small scaled balances (a WBTC position of
    1e6 units) and the fee clamp cannot bite; with these it does in about 1 of 8
    whole-collateral seizures. Returns the liquidity indexes (ray) by symbol."""
    whale = "0x00000000000000000000000000000000000a11ce"
    m.chain.call("anvil_setBalance", [whale, hex(10**20)])
    liquidity = {s: m.at(None, r.asset, ERC20.fn("balanceOf"), r.a_token) for s, r in m.reserves.items()}
    need_usd = sum(liquidity[s] * m.price(r.asset) // r.unit for s, r in m.reserves.items()) // 10**8
    for s in ("WETH", "WBTC"):  # collateral worth 5x everything it borrows, half in each
        m.supply(whale, s, to_raw(m, s, need_usd * 5 // 2))
    for s, r in m.reserves.items():
        if m.borrowable(r):
            m.send(whale, m.pool, POOL.fn("borrow").encode(r.asset, liquidity[s] * 9 // 10, 2, 0, whale))
    m.chain.call("evm_setNextBlockTimestamp", [m.latest()[1] + AGE_S])
    m.chain.call("evm_mine")
    return {s: m.at(None, m.pool, POOL.fn("getReserveNormalizedIncome"), r.asset) for s, r in m.reserves.items()}


def _revert_to(chain: Any, snap: str) -> str:
    chain.call("evm_revert", [snap])
    base = chain.call("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"]
    chain.call("anvil_setNextBlockBaseFeePerGas", [base])
    return chain.call("evm_snapshot")


@pytest.fixture
def steady_clock(chain):
    """Every block 12 s after the previous one (unless a test sets the next timestamp), so a
    seed replays the same chain, timestamps and interest included; normally anvil stamps
    blocks with the wall clock. Back to the wall clock afterwards."""
    chain.call("anvil_setBlockTimestampInterval", [12])
    try:
        yield
    finally:
        chain.call("anvil_removeBlockTimestampInterval")


def test_random_liquidations_match_the_keepers_prediction_to_the_wei(chain, steady_clock):
    m = Market(chain)
    assert {"WETH", "WBTC", "USDC"} <= set(m.reserves), m.reserves.keys()
    started = time.monotonic()
    outcomes: list[Outcome] = []
    # anvil's clock follows the snapshot only after a revert: start from one
    snap = _revert_to(chain, chain.call("evm_snapshot"))
    indexes: dict[str, int] = {}
    for n in range(N_CASES):
        if n == N_CASES // 2:  # the second half runs on an older market
            indexes = age_market(m)
            snap = chain.call("evm_snapshot")
        try:
            outcomes.append(run_case(m, n, "mature" if indexes else "fresh"))
        except AssertionError as e:
            raise AssertionError(f"case {n} (seed {SEED}+{n}) failed during setup or execution: {e}") from e
        finally:
            snap = _revert_to(chain, snap)
    elapsed = time.monotonic() - started

    bad = [o for o in outcomes if o.mismatches]
    assert not bad, f"{len(bad)} of {len(outcomes)} cases differ from the prediction:\n" + "\n".join(
        f"{o.case}\n    " + "\n    ".join(o.mismatches) for o in bad[:5])
    stats = {
        "cases": len(outcomes),
        "liquidated": sum(not o.reverted for o in outcomes),
        "reverted_as_predicted": sum(o.reverted for o in outcomes),
        "whole_collateral": sum(o.whole_collateral for o in outcomes),
        "whole_debt": sum(o.whole_debt for o in outcomes),
        "clamp_hits": sum(o.clamped for o in outcomes),
        "emode": sum(o.case.kind != "plain" for o in outcomes),
        "emode_price_source": sum(o.case.kind == "emode_source" for o in outcomes),
        "receive_a_token": sum(o.case.receive_a_token and not o.reverted for o in outcomes),
        "modes": {k: sum(o.case.mode == k for o in outcomes) for k in ("small", "partial", "close_factor", "over", "max")},
        "reserves": sorted(m.reserves),
        "mature_indexes": {k: round(v / am.RAY, 4) for k, v in indexes.items()},
        "clamp_hits_fresh_mature": (sum(o.clamped for o in outcomes if o.case.market == "fresh"),
                                    sum(o.clamped for o in outcomes if o.case.market == "mature")),
        "clamp_hits_at_a_hunted_timestamp": sum(o.clamped and any(x.startswith("clamp hunt") for x in o.case.notes)
                                                for o in outcomes),
        "seconds": round(elapsed, 1),
    }
    print(f"aave fuzz: {stats}")
    assert stats["liquidated"] >= N_CASES * 3 // 4, stats
    assert stats["whole_collateral"] >= 5, stats
    assert stats["emode"] >= 5 and stats["emode_price_source"] >= 2, stats
    assert stats["clamp_hits"] >= 1, f"no case reached the protocol-fee clamp: {stats}"
    # without the clamp, the prediction would have been 1 wei high in exactly those cases
    assert all(o.fee_unclamped_error in (1, 2) for o in outcomes if o.clamped)


def test_fee_is_clamped_when_the_whole_collateral_is_seized(chain, steady_clock):
    """A constructed clamp: WETH collateral worth far less than the USDC debt, liquidated
    for max uint at a timestamp where the fee's scaled amount is one unit more than the
    user has left; the treasury gets the clamped fee, 1 wei below the unclamped one."""
    m = Market(chain)
    user = "0x00000000000000000000000000000000c1a3f001"
    m.chain.call("anvil_setBalance", [user, hex(10**20)])
    weth, usdc = m.reserves["WETH"], m.reserves["USDC"]
    m.supply(user, "WETH", 3 * 10**18 + 123_456_789)
    m.send(user, m.pool, POOL.fn("borrow").encode(usdc.asset, 7_000 * 10**6, 2, 0, user))
    m.set_price("WETH", m.price(weth.asset) * 2 // 5)  # HF ~0.35: all collateral goes
    m.send(LIQUIDATOR, usdc.asset, F_MINT.encode(100_000 * 10**6))
    m.approve_pool(LIQUIDATOR, usdc.asset)
    _, last_ts = m.latest()
    inp = read_inputs(m, last_ts + 12, user, weth, usdc)
    ts = clamp_timestamp(m, inp, weth.asset, last_ts + 12)
    assert ts is not None, "no timestamp in 400 s makes the clamp bite"
    inp = read_inputs(m, ts, user, weth, usdc)
    liq, raw = predict(inp, MAX_UINT), predict(inp, MAX_UINT, clamp=False)
    assert raw.collateral_taken == inp.coll.balance
    assert liq.protocol_fee < raw.protocol_fee
    ex = liquidate_and_compare(m, ts, user, weth, usdc, inp, MAX_UINT, False, liq)
    assert not ex.mismatches, ex.mismatches
    fee = [w for w in ex.checks if w[0].startswith("aToken Transfer")][0][2]
    assert fee == liq.protocol_fee == raw.protocol_fee - 1
