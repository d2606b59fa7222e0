"""Execution: flash-loan route, the liquidator contract's guards, replacement, nonces under
failures, competitors, relays, restarts, safety limits. All on the devnet."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest
from structlog.testing import capture_logs

from keeper import abi

from .conftest import KEEPER, KEEPER_KEY

AAVE = "aave-v3-devnet"
pytestmark = pytest.mark.asyncio(loop_scope="session")
ERC20 = abi.load("ERC20")
FLASH = abi.load("FlashLiquidator")
POOL = abi.load("AavePool")


def empty_inventory(chain) -> None:
    for sym in chain.dep.tokens:
        bal = chain.balance(sym, KEEPER)
        if bal:
            chain.send_as(KEEPER, chain.dep.tokens[sym], ERC20.fn("transfer").encode(chain.dep.depositor, bal))


async def test_flash_liquidation_needs_no_inventory_and_pays_what_the_simulation_said(chain, make_keeper):
    empty_inventory(chain)
    chain.shock("WETH", -12)
    keeper = await make_keeper(only=AAVE, routes='["inventory", "flash"]')
    before = {s: chain.balance(s, KEEPER) for s in chain.dep.tokens}
    assert not any(before.values())
    outs = await keeper.cycle(await keeper.read_head())
    confirmed = [o for o in outs if o.status == "confirmed"]
    assert len(confirmed) >= 3 and all(o.opp.detail.route == "flash" for o in confirmed)
    paid: dict[str, int] = defaultdict(int)
    for o in confirmed:
        debt = o.opp.detail.debt_asset
        realized, simulated = o.realized["profit"], o.simulated[debt]
        assert realized > 0 and abs(realized - simulated) * 1000 <= simulated, (realized, simulated)
        paid[debt] += realized
    for sym, token in chain.dep.tokens.items():  # the owner holds exactly the profits, nothing else
        assert chain.balance(sym, KEEPER) - before[sym] == paid[token], sym


async def test_the_liquidator_contract_refuses_strangers_and_thin_profits(chain, make_keeper):
    liq = chain.dep.extras["flash_liquidator"]
    usdc, weth = chain.dep.tokens["USDC"], chain.dep.tokens["WETH"]
    stranger = "0x000000000000000000000000000000000000dEaD"
    chain.call("anvil_setBalance", [stranger, hex(10**20)])
    chain.call("anvil_impersonateAccount", [stranger])

    def call_as(sender: str, to: str, data: bytes) -> str:
        try:
            chain.call("eth_call", [{"from": sender, "to": to, "data": "0x" + data.hex()}, "latest"])
        except RuntimeError as e:
            return str(e)
        return "ok"

    liquidate = FLASH.fn("liquidate").encode(weth, usdc, stranger, 1, 1, b"", 0)
    assert selector("NotOwner()") in call_as(stranger, liq, liquidate)
    cb = FLASH.fn("executeOperation").encode(usdc, 1, 0, liq, b"")
    assert selector("NotPool()") in call_as(stranger, liq, cb)
    # a flash loan started by someone else with our contract as receiver: wrong initiator
    fl = POOL.fn("flashLoanSimple").encode(liq, usdc, 10**6, b"", 0)
    assert selector("BadInitiator()") in call_as(stranger, chain.dep.pool, fl)
    # the owner asking for more profit than the trade makes (5x the prediction): the swap's own
    # minimum (debt owed + minProfit) stops it, decoded by name in the log
    chain.shock("WETH", -12)
    nonce = chain.nonce(KEEPER)
    keeper = await make_keeper(only=AAVE, routes='["flash"]', KEEPER_PROTOCOLS__0__FLASH_MIN_PROFIT_SHARE="5")
    head = await keeper.read_head()
    with capture_logs() as logs:
        outs = await keeper.cycle(head)
    assert outs and all(o.status == "skipped" and o.reason == "simulation_reverted" for o in outs)
    reverts = {e["revert"] for e in logs if e.get("reason") == "simulation_reverted"}
    assert reverts and all(r.startswith("SwapOutputTooLow(out=") for r in reverts), reverts
    assert chain.nonce(KEEPER) == nonce


def selector(sig: str) -> str:
    from eth_utils import keccak

    return "0x" + keccak(text=sig)[:4].hex()


async def test_deploy_liquidator_deploys_a_contract_owned_by_the_keeper(chain, monkeypatch, capsys):
    from keeper.cli import main

    monkeypatch.setenv("KEEPER_RPC_URL", chain.url)
    monkeypatch.setenv("KEEPER_PRIVATE_KEY", KEEPER_KEY)
    from .conftest import DEVNET_CONFIG

    code = await asyncio.to_thread(main, ["deploy-liquidator", "--config", str(DEVNET_CONFIG)])
    out = capsys.readouterr().out
    assert code == 0, out
    addr = out.split("deployed at ")[1].split()[0]
    owner = chain.call("eth_call", [{"to": addr, "data": "0x" + FLASH.fn("owner").encode().hex()}, "latest"])
    assert owner[-40:].lower() == KEEPER[2:].lower()
