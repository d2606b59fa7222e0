"""The reads behind local.py: reserve states, eMode categories, prices and account states,
each in as few Multicall3 batches as the data allows, all at one block.

Reserves are passed duck-typed: anything with .asset, .id, .a_token, .stable_debt and
.variable_debt (the adapter's Reserve does). Answers are decoded by hand (fixed words) on
the per-account path; eth_abi only for the eMode category (it has a string).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from ... import abi
from ...errors import BadResponseError
from ...multicall import Call
from .local import NO_STABLE_DEBT, AccountState, EModeCategory, ReserveState

_POOL = abi.load("AavePool")
F_RESERVE_DATA = _POOL.fn("getReserveData")
F_USER_CONFIG = _POOL.fn("getUserConfiguration")
F_USER_EMODE = _POOL.fn("getUserEMode")
F_EMODE = _POOL.fn("getEModeCategoryData")
F_EMODE_BITMAP = abi.Function("getEModeCategoryCollateralBitmap", ["uint8"], ["uint128"])  # v3.2+
F_PRICE = abi.load("AaveOracle").fn("getAssetPrice")
F_SCALED = abi.Function("scaledBalanceOf", ["address"], ["uint256"])  # AToken, VariableDebtToken
F_PRINCIPAL = abi.Function("principalBalanceOf", ["address"], ["uint256"])  # StableDebtToken
F_STABLE_RATE = abi.Function("getUserStableRate", ["address"], ["uint256"])
F_STABLE_UPDATED = abi.Function("getUserLastUpdated", ["address"], ["uint40"])
_INT256_MAX = 2**255 - 1


def _word(data: bytes, i: int = 0) -> int:
    return int.from_bytes(data[32 * i:32 * i + 32], "big")


def _addr(data: bytes, i: int) -> str:
    return abi.to_checksum(data[32 * i + 12:32 * i + 32])


def decode_reserve_data(data: bytes, asset: str) -> ReserveState:
    """getReserveData's static 15-word tuple (DataTypes.ReserveData of 1.19.3)."""
    if len(data) < 15 * 32:
        raise BadResponseError(f"getReserveData({asset}): {len(data)} bytes, expected 480")
    w = [_word(data, i) for i in range(8)]
    return ReserveState(
        id=w[7], asset=asset, configuration=w[0],
        liquidity_index_ray=w[1], current_liquidity_rate_ray=w[2],
        variable_borrow_index_ray=w[3], current_variable_borrow_rate_ray=w[4],
        current_stable_borrow_rate_ray=w[5], last_update_timestamp=w[6],
        a_token=_addr(data, 8), stable_debt=_addr(data, 9), variable_debt=_addr(data, 10),
    )


async def read_reserve_states(mc: Any, pool: str, reserves: Sequence[Any], block: int | str) -> dict[int, ReserveState]:
    """getReserveData of every reserve, one multicall. Raises BadResponseError when one fails
    (without a reserve's state no account using it can be computed)."""
    res = await mc.run([Call(pool, F_RESERVE_DATA.encode(r.asset)) for r in reserves], block)
    out: dict[int, ReserveState] = {}
    for r, (ok, data) in zip(reserves, res):
        if not ok:
            raise BadResponseError(f"getReserveData({r.asset}) failed")
        st = decode_reserve_data(data, r.asset)
        if st.id != r.id:
            raise BadResponseError(f"getReserveData({r.asset}): id {st.id}, expected {r.id}")
        out[st.id] = st
    return out


async def read_emode_categories(mc: Any, pool: str, ids: Iterable[int], block: int | str) -> dict[int, EModeCategory]:
    """getEModeCategoryData for each id (0 skipped: no category), with the category's
    collateral bitmap where the pool has one (v3.2+; a pool without the function reverts:
    collateral_bitmap None). A failed read is left out."""
    ids = sorted({i for i in ids if i})
    if not ids:
        return {}
    res = await mc.run([c for i in ids for c in (Call(pool, F_EMODE.encode(i)), Call(pool, F_EMODE_BITMAP.encode(i)))],
                       block)
    out: dict[int, EModeCategory] = {}
    for k, i in enumerate(ids):
        (ok, data), (ok_b, bm) = res[2 * k], res[2 * k + 1]
        if ok:
            ltv, lt, bonus, source, _label = F_EMODE.decode_one(data)
            bitmap = int.from_bytes(bm, "big") if ok_b and len(bm) == 32 else None
            out[i] = EModeCategory(ltv, lt, bonus, abi.to_checksum(source), bitmap)
    return out


def _price(ok: bool, data: bytes) -> int | None:
    if not ok or len(data) != 32:
        return None
    p = int.from_bytes(data, "big")
    return p if 0 < p <= _INT256_MAX else None


async def read_prices(
    mc: Any, oracle: str, reserves: Sequence[Any], emode_categories: Mapping[int, EModeCategory], block: int | str,
) -> tuple[dict[int, int], dict[int, int]]:
    """AaveOracle.getAssetPrice of every reserve and of every category's price source, one
    multicall: (reserve id -> price, category id -> price). A price that fails, is 0 or
    negative is left out: account_data then raises KeyError for the accounts that need it
    (the chain's getUserAccountData reverts for them too)."""
    cats = [(i, c.price_source) for i, c in sorted(emode_categories.items()) if c.has_price_source]
    calls = [Call(oracle, F_PRICE.encode(r.asset)) for r in reserves]
    calls += [Call(oracle, F_PRICE.encode(src)) for _, src in cats]
    res = await mc.run(calls, block)
    prices: dict[int, int] = {}
    for r, (ok, data) in zip(reserves, res):
        p = _price(ok, data)
        if p is not None:
            prices[r.id] = p
    emode_prices: dict[int, int] = {}
    for (i, _), (ok, data) in zip(cats, res[len(reserves):]):
        p = _price(ok, data)
        if p is not None:
            emode_prices[i] = p
    return prices, emode_prices


async def read_accounts(
    mc: Any, pool: str, reserves: Sequence[Any], users: Sequence[str], block: int | str,
    failed: dict[str, str] | None = None,
) -> dict[str, AccountState]:
    """Each user's AccountState at `block`, in two phases (a third only if stable debt exists):

    1. getUserConfiguration + getUserEMode of every user;
    2. per user, only for the reserves the bitmap marks: AToken.scaledBalanceOf where the
       collateral bit is set; VariableDebtToken.scaledBalanceOf and
       StableDebtToken.principalBalanceOf where the borrowing bit is set;
    3. getUserStableRate + getUserLastUpdated where the principal is not 0.

    Stable reads are not skipped on a zero stable-debt total supply: StableDebtToken.burn
    zeroes the total when the last repayer's balance exceeds it, while other users may
    still hold rounding-size debt, so the total says nothing exact about one user.

    Users whose reads fail are left out of the answer; with `failed`, their reason is put
    there: "user_configuration" (configuration or eMode read failed), "unknown_reserve"
    (the bitmap marks a reserve id not in `reserves`: a reserve listed after these were
    loaded), "balance" (a balance read failed)."""
    by_id = {r.id: r for r in reserves}
    res = await mc.run([c for u in users for c in (Call(pool, F_USER_CONFIG.encode(u)), Call(pool, F_USER_EMODE.encode(u)))],
                       block)
    heads: list[tuple[str, int, int]] = []
    calls: list[Call] = []
    plans: list[list[tuple[int, int]]] = []  # per user: (reserve id, kind) in call order
    for k, u in enumerate(users):
        (ok_c, cfg), (ok_e, em) = res[2 * k], res[2 * k + 1]
        if not (ok_c and ok_e and len(cfg) == 32 and len(em) == 32):
            if failed is not None:
                failed[u] = "user_configuration"
            continue
        config, emode = int.from_bytes(cfg, "big"), int.from_bytes(em, "big")
        plan: list[tuple[int, int]] = []
        i, c = 0, config
        unknown = False
        while c:
            pair = c & 3
            if pair:
                r = by_id.get(i)
                if r is None:
                    unknown = True
                    break
                if pair & 2:
                    calls.append(Call(r.a_token, F_SCALED.encode(u)))
                    plan.append((i, 0))
                if pair & 1:
                    calls.append(Call(r.variable_debt, F_SCALED.encode(u)))
                    plan.append((i, 1))
                    if int(r.stable_debt or "0x0", 16):  # v3.2+ has no stable debt token (address 0)
                        calls.append(Call(r.stable_debt, F_PRINCIPAL.encode(u)))
                        plan.append((i, 2))
            c >>= 2
            i += 1
        if unknown:
            if failed is not None:
                failed[u] = "unknown_reserve"
            del calls[len(calls) - len(plan):]
            continue
        heads.append((u, config, emode))
        plans.append(plan)
    res = await mc.run(calls, block) if calls else []
    out: dict[str, AccountState] = {}
    stable_wanted: list[tuple[str, int]] = []
    parts: dict[str, tuple[int, int, dict[int, int], dict[int, int], dict[int, int]]] = {}
    pos = 0
    for (u, config, emode), plan in zip(heads, plans):
        coll: dict[int, int] = {}
        var: dict[int, int] = {}
        principal: dict[int, int] = {}
        bad = False
        for rid, kind in plan:
            ok, data = res[pos]
            pos += 1
            if not ok or len(data) != 32:
                bad = True
                continue
            v = int.from_bytes(data, "big")
            if kind == 0:
                coll[rid] = v
            elif kind == 1:
                var[rid] = v
            elif v:
                principal[rid] = v
        if bad:
            if failed is not None:
                failed[u] = "balance"
            continue
        parts[u] = (config, emode, coll, var, principal)
        stable_wanted += ((u, rid) for rid in principal)
    stable: dict[str, dict[int, tuple[int, int, int]]] = {}
    if stable_wanted:
        calls = []
        for u, rid in stable_wanted:
            r = by_id[rid]
            calls += (Call(r.stable_debt, F_STABLE_RATE.encode(u)), Call(r.stable_debt, F_STABLE_UPDATED.encode(u)))
        res = await mc.run(calls, block)
        for k, (u, rid) in enumerate(stable_wanted):
            (ok_r, rate), (ok_t, ts) = res[2 * k], res[2 * k + 1]
            if u not in parts:
                continue
            if not (ok_r and ok_t and len(rate) == 32 and len(ts) == 32):
                if failed is not None:
                    failed[u] = "balance"
                del parts[u]
                continue
            stable.setdefault(u, {})[rid] = (parts[u][4][rid], int.from_bytes(rate, "big"), int.from_bytes(ts, "big"))
    for u, (config, emode, coll, var, _principal) in parts.items():
        out[u] = AccountState(config=config, emode_category=emode, collateral=coll, variable_debt=var,
                              stable_debt=stable.get(u, NO_STABLE_DEBT))
    return out
