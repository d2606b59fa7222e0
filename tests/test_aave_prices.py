"""Per-asset oracle prices: one failing or zero price source stops only the Aave pairs and
accounts that use that asset; everything else is liquidated in the same cycle."""

from __future__ import annotations

import asyncio
import json

import pytest
from keeper import abi

from .conftest import DEVNET_CONFIG, KEEPER, only_env
from .faultproxy import JsonLogs, assert_clean, assert_trustworthy

AAVE = "aave-v3-devnet"
pytestmark = pytest.mark.asyncio(loop_scope="session")
ORACLE = abi.load("AaveOracle")
ERC20 = abi.load("ERC20")
REVERT_CODE = "0x60006000fd"  # PUSH1 0 PUSH1 0 REVERT: every call reverts
RETURN_ZERO_CODE = "0x60206000f3"  # PUSH1 32 PUSH1 0 RETURN: every call answers one zero word
ZERO_ORACLE = "0x00000000000000000000000000000000000fa11b"


def source_of(chain, symbol: str) -> str:
    src = chain.view(chain.dep.oracle, ORACLE.fn("getSourceOfAsset"), chain.dep.tokens[symbol])[0]
    assert abi.to_checksum(src) == abi.to_checksum(chain.dep.aggregators[symbol])
    return abi.to_checksum(src)


def holders(chain, symbol: str) -> set[str]:
    """Borrowers that supply or borrow `symbol`."""
    out = set()
    for b in chain.dep.borrowers:
        supplied = chain.view(chain.dep.a_tokens[symbol], ERC20.fn("balanceOf"), b)[0]
        borrowed = chain.view(chain.dep.variable_debt_tokens[symbol], ERC20.fn("balanceOf"), b)[0]
        if supplied or borrowed:
            out.add(abi.to_checksum(b))
    return out


async def logged(out: JsonLogs, step):
    """Run `await step()`; returns (its result, the keeper's log events it wrote)."""
    n = len(out.events())
    res = await step()
    return res, out.events()[n:]


async def cycle(keeper):
    return await keeper.cycle(await keeper.read_head())


async def gather(keeper):
    return await keeper.gather(await keeper.read_head())


def skips(logs: list[dict], reason: str) -> list[dict]:
    return [e for e in logs if e["event"] == "skipped" and e.get("reason") == reason]


async def test_a_reverting_price_source_stops_only_the_pairs_that_use_it(chain, make_keeper):
    wbtc_users = holders(chain, "WBTC")
    chain.shock("WETH", -12)  # first: moving the pools reads every oracle price
    src = source_of(chain, "WBTC")
    code = chain.call("eth_getCode", [src, "latest"])
    chain.call("anvil_setCode", [src, REVERT_CODE])
    out = JsonLogs()
    keeper = await make_keeper(only=AAVE)
    adapter = keeper.adapters[AAVE]
    outs, logs = await logged(out, lambda: cycle(keeper))
    assert not [e for e in logs if e["event"] == "protocol_error"]
    warnings = [e for e in logs if e["event"] == "price_unavailable"]
    assert [(e["asset"], e["problem"], e["level"]) for e in warnings] == [("WBTC", "reverted", "warning")]
    # WETH/USDC liquidations of accounts without WBTC go through, on chain
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert confirmed, [(o.status, o.reason) for o in outs]
    assert all(o.opp.account not in wbtc_users for o in confirmed)
    assert {(o.opp.detail.collateral_symbol, o.opp.detail.debt_symbol) for o in confirmed} == {("WETH", "USDC")}
    assert all(o.realized["user"] == o.opp.account for o in confirmed)
    # every account holding WBTC is skipped (Aave's own getUserAccountData reverts for it), once
    unavailable = skips(logs, "price_unavailable")
    assert sorted(e["account"] for e in unavailable) == sorted(wbtc_users)
    assert {(e["asset"], e["problem"]) for e in unavailable} == {("WBTC", "reverted")}
    assert not set(adapter.health) & wbtc_users
    assert adapter.native_price_usd_e8() == 2_640 * 10**8  # WETH is fine

    # the source comes back: the same keeper liquidates the WBTC holders now below 1
    chain.call("anvil_setCode", [src, code])
    outs, logs = await logged(out, lambda: cycle(keeper))
    assert not [e for e in logs if e["event"] in ("price_unavailable", "protocol_error")]
    assert [e["asset"] for e in logs if e["event"] == "price_restored"] == ["WBTC"]
    assert not skips(logs, "price_unavailable")
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert confirmed and {o.opp.account for o in confirmed} <= wbtc_users
    assert any("WBTC" in (o.opp.detail.collateral_symbol, o.opp.detail.debt_symbol) for o in confirmed)
    # over both cycles: one transaction on chain per intent, none reverted, each account liquidated
    # at most once per intent, no traceback, no key
    summary = assert_trustworthy(chain, keeper, out)
    assert sum(rc is not None for rc in summary["mined"].values()) == len(out.events("liquidation_confirmed"))


@pytest.mark.parametrize("how", ["aggregator_answers_zero", "oracle_answers_zero"])
async def test_a_zero_price_stops_only_the_pairs_that_use_it(chain, make_keeper, how):
    """aggregator_answers_zero: the AaveOracle has no fallback, so getAssetPrice reverts and
    so does getUserAccountData of every WBTC holder. oracle_answers_zero: a fallback oracle
    answers 0, so the AaveOracle returns 0; Aave then values WBTC at nothing and the accounts
    look liquidatable, but no pair with WBTC may be sized with a zero price."""
    from keeper.devnet.deploy import DEPLOYER

    wbtc_users = holders(chain, "WBTC")
    chain.shock("WETH", -12)
    if how == "oracle_answers_zero":
        chain.call("anvil_setCode", [ZERO_ORACLE, RETURN_ZERO_CODE])
        set_fallback = abi.Function("setFallbackOracle", ["address"], [])
        chain.send_as(DEPLOYER, chain.dep.oracle, set_fallback.encode(ZERO_ORACLE))
    chain.send_as(DEPLOYER, source_of(chain, "WBTC"), abi.Function("setAnswer", ["int256"], []).encode(0))
    assert chain.view(chain.dep.oracle, ORACLE.fn("getSourceOfAsset"), chain.dep.tokens["WBTC"])  # still listed
    out = JsonLogs()
    keeper = await make_keeper(only=AAVE)
    outs, logs = await logged(out, lambda: cycle(keeper))
    assert not [e for e in logs if e["event"] == "protocol_error"]
    problem = "reverted" if how == "aggregator_answers_zero" else "zero"
    assert [(e["asset"], e["problem"]) for e in logs if e["event"] == "price_unavailable"] == [("WBTC", problem)]
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert confirmed, [(o.status, o.reason) for o in outs]
    assert all("WBTC" not in (o.opp.detail.collateral_symbol, o.opp.detail.debt_symbol) for o in confirmed)
    unavailable = skips(logs, "price_unavailable")
    assert unavailable and {(e["asset"], e["problem"]) for e in unavailable} == {("WBTC", problem)}
    assert {e["account"] for e in unavailable} <= wbtc_users
    if how == "aggregator_answers_zero":
        assert all(o.opp.account not in wbtc_users for o in confirmed)
        assert sorted(e["account"] for e in unavailable) == sorted(wbtc_users)
    else:  # the skips name the pair; WETH/USDC of a WETH+WBTC account is still a valid liquidation
        assert all({"collateral", "debt"} <= set(e) and "WBTC" in (e["collateral"], e["debt"]) for e in unavailable)
    assert not skips(logs, "zero_price")
    summary = assert_trustworthy(chain, keeper, out)
    assert sum(rc is not None for rc in summary["mined"].values()) == len(confirmed)


async def test_a_broken_weth_price_is_never_used_to_price_gas(chain, make_keeper):
    out = JsonLogs()
    keeper = await make_keeper(only=AAVE, dry_run=True)
    adapter = keeper.adapters[AAVE]
    await keeper.gather(await keeper.read_head())
    assert adapter.native_price_usd_e8() == 3_000 * 10**8
    src = source_of(chain, "WETH")
    chain.call("anvil_setCode", [src, REVERT_CODE])
    _, logs = await logged(out, lambda: gather(keeper))
    assert [(e["asset"], e["problem"]) for e in logs if e["event"] == "price_unavailable"] == [("WETH", "reverted")]
    assert adapter.native_price_usd_e8() is None
    assert adapter.reserve(chain.dep.tokens["WETH"]).price == 0
    assert await keeper.native_usd_e8() is None  # no other source on this config: actions are skipped, not mispriced
    assert_clean(out.text)


async def test_scan_does_not_crash_when_a_price_is_unavailable(chain, monkeypatch, capsys):
    from keeper import cli

    monkeypatch.setenv("KEEPER_RPC_URL", chain.url)
    for k, v in only_env(AAVE).items():
        monkeypatch.setenv(k, v)
    wbtc_users = holders(chain, "WBTC")
    chain.shock("WETH", -12)
    chain.call("anvil_setCode", [source_of(chain, "WBTC"), REVERT_CODE])
    nonce = chain.nonce(KEEPER)
    code = await asyncio.to_thread(cli.main, ["scan", "--config", str(DEVNET_CONFIG), "--json", "--limit", "0"])
    out = capsys.readouterr()
    assert code == 0, out.err
    rows = json.loads(out.out)["positions"]
    accounts = {r["account"] for r in rows}
    assert rows and not accounts & wbtc_users  # no health factor can be read for them this block
    assert len(accounts) == len(chain.dep.borrowers) - len(wbtc_users)
    assert any(r["best_opportunity"] for r in rows)
    assert "price_unavailable" in out.err and "WBTC" in out.err
    assert chain.nonce(KEEPER) == nonce  # the scan sends nothing
    assert_clean(out.out + out.err)


async def test_each_kind_of_bad_price_answer_is_named():
    from keeper.protocols.aave_v3.adapter import read_price

    assert read_price(True, (2_640 * 10**8).to_bytes(32, "big")) == (2_640 * 10**8, None)
    assert read_price(False, b"") == (0, "reverted")
    assert read_price(True, b"") == (0, "bad_answer")
    assert read_price(True, bytes(32)) == (0, "zero")
    assert read_price(True, (2**256 - 5).to_bytes(32, "big")) == (0, "negative")  # int256 -5 cast to uint256
