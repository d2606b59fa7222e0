"""Faults inside one protocol's data, on the devnet: stale oracle prices, and an adapter that
fails with an unexpected exception (a bug). Each ends with the checks every fault scenario
ends with (tests/faultproxy.py): at most one transaction on chain per intent, no reverted
send, no traceback where none is due, no secret in the output; and the keeper recovers by
itself."""

from __future__ import annotations

import tomllib
from collections import Counter

import pytest

from keeper import abi
from keeper.devnet.prices import get_price, set_price

from .conftest import DEVNET_CONFIG, KEEPER
from .faultproxy import JsonLogs, assert_clean, assert_trustworthy

AAVE = "aave-v3-devnet"
MORPHO = "morpho-devnet"
pytestmark = pytest.mark.asyncio(loop_scope="session")
LIQ = abi.load("AavePool").event("LiquidationCall")


def enabled_env(*names: str) -> dict[str, str]:
    """Environment overrides that leave only the named [[protocols]] entries of devnet.toml on."""
    listed = [p["name"] for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"]]
    return {f"KEEPER_PROTOCOLS__{i}__ENABLED": "true" if n in names else "false" for i, n in enumerate(listed)}


def aave_liquidations(chain, from_block: int) -> list[dict]:
    logs = chain.call("eth_getLogs", [{"address": chain.dep.pool, "fromBlock": hex(from_block), "toBlock": "latest",
                                       "topics": [LIQ.topic0]}])
    return [LIQ.decode(lg) for lg in logs]


async def test_stale_oracle_prices_are_not_acted_on_and_fresh_ones_are_liquidated_once(chain, make_keeper):
    """Every price is two hours old with max_price_age_s = 1 h: nothing is signed, each position priced by them
    is skipped as stale_price, with no traceback and no key in the output. The feeds update
    (same answers, new rounds): the same keeper liquidates, one transaction per intent."""
    out = JsonLogs()
    chain.shock("WETH", -12)
    chain.call("evm_increaseTime", [7200])
    chain.call("evm_mine")
    nonce = chain.nonce(KEEPER)
    keeper = await make_keeper(only=AAVE, KEEPER_PROTOCOLS__0__MAX_PRICE_AGE_S="3600")
    outs = await keeper.cycle(await keeper.read_head())
    assert outs == [] and chain.nonce(KEEPER) == nonce
    skipped = out.events("skipped")
    assert skipped and {e.get("reason") for e in skipped} == {"stale_price"}
    assert not out.events("liquidation_sent") and not out.events("protocol_error")
    assert_clean(out.text)
    journal = keeper.executor.tx.journal.path
    assert not journal.exists() or not journal.read_text().strip()  # not even an intent

    # the feeds update: fresh rounds with the same answers
    for sym in chain.dep.aggregators:
        set_price(chain.url, chain.dep, sym, get_price(chain.url, chain.dep, sym))
    start = chain.block_number()
    outs = []
    for _ in range(2):
        outs += await keeper.cycle(await keeper.read_head())
        chain.call("evm_mine")
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert len(confirmed) >= 3, [(o.status, o.reason) for o in outs]
    assert chain.nonce(KEEPER) == nonce + len(confirmed)
    users = Counter(e["user"].lower() for e in aave_liquidations(chain, start + 1))
    assert len(users) == len(confirmed) and set(users.values()) == {1}
    summary = assert_trustworthy(chain, keeper, out)
    assert sum(rc is not None for rc in summary["mined"].values()) == len(confirmed)


async def test_an_adapter_that_raises_is_a_protocol_error_with_a_traceback_and_the_others_go_on(chain, make_keeper):
    """A bug in one protocol's adapter (an unexpected exception) is logged as protocol_error,
    at error level, with the formatted traceback; the other protocol is liquidated in the same
    cycle; once the adapter works again the keeper carries on with it, by itself."""
    out = JsonLogs()
    chain.shock("WETH", -12)
    start = chain.block_number()
    keeper = await make_keeper(**enabled_env(AAVE, MORPHO))
    assert set(keeper.adapters) == {AAVE, MORPHO}
    broken = keeper.adapters[MORPHO]
    real = broken.opportunities
    calls = 0

    async def bug(head):
        nonlocal calls
        calls += 1
        raise ZeroDivisionError("injected bug in the adapter")

    broken.opportunities = bug
    outs = await keeper.cycle(await keeper.read_head())
    assert calls == 1
    errors = out.events("protocol_error")
    assert len(errors) == 1, errors
    e = errors[0]
    assert e["protocol"] == MORPHO and e["level"] == "error"
    assert e["error"] == "ZeroDivisionError: injected bug in the adapter"
    assert "Traceback" in e["exception"] and "ZeroDivisionError: injected bug in the adapter" in e["exception"]
    assert "in bug" in e["exception"]  # the frame that raised
    # the other protocol went on in that very cycle
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert len(confirmed) >= 3 and {o.opp.protocol for o in confirmed} == {AAVE}, [(o.status, o.reason) for o in outs]
    users = Counter(e["user"].lower() for e in aave_liquidations(chain, start + 1))
    assert len(users) == len(confirmed) and set(users.values()) == {1}
    # the traceback is the one expected in the output; no other, and no secret anywhere
    assert out.text.count("Traceback") == 1
    assert_clean(out.text, traceback_ok=True)

    # the adapter works again: no error, and its own liquidations go out
    broken.opportunities = real
    n = len(out.events())
    outs = []
    for _ in range(3):
        chain.call("evm_mine")
        outs += await keeper.cycle(await keeper.read_head())
        if any(o.status == "confirmed" and o.opp.protocol == MORPHO for o in outs):
            break
    assert not [x for x in out.events()[n:] if x["event"] == "protocol_error"]
    assert any(o.status == "confirmed" and o.opp.protocol == MORPHO for o in outs), \
        [(o.opp.protocol, o.status, o.reason) for o in outs]
    # every send of both protocols: one transaction on chain per intent, none reverted; no secret
    summary = assert_trustworthy(chain, keeper, out, traceback_ok=True)
    assert sum(rc is not None for rc in summary["mined"].values()) == len(out.events("liquidation_confirmed"))
    assert out.text.count("Traceback") == 1
