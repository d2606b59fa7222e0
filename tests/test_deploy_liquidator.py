"""`keeper deploy-liquidator`: the keeper's own contracts for every protocol that needs one,
deployed from the keeper's key on the devnet, owned by the keeper, accepted by the adapters
(their start-up checks: owner, vat, code), and working: a Morpho liquidation through the
freshly deployed MorphoLiquidator."""

from __future__ import annotations

import asyncio
import re
import tomllib

import pytest

from keeper import abi
from keeper.protocols.morpho_blue.calls import EV_LIQUIDATE

from .conftest import DEVNET_CONFIG, KEEPER, KEEPER_KEY
from .test_cli import keeper_cmd
from .test_fork import clean_env
from .test_morpho_keeper import MORPHO, empty_keeper_loan_tokens, extras

OWNER = abi.Function("owner", [], ["address"])
NAMES = [p["name"] for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"]]


def _owner(chain, addr: str) -> str:
    (who,) = chain.view(addr, OWNER)
    return who


@pytest.mark.asyncio(loop_scope="session")
async def test_deploy_liquidator_deploys_each_protocols_contract_and_the_keeper_uses_them(chain, make_keeper):
    env = {**clean_env(), "KEEPER_RPC_URL": chain.url, "KEEPER_PRIVATE_KEY": KEEPER_KEY}
    p = await asyncio.to_thread(keeper_cmd, "deploy-liquidator", "--config", str(DEVNET_CONFIG), env=env)
    assert p.returncode == 0, p.stderr
    found = re.findall(r"(\w+) for ([\w.-]+) \(.*?\) deployed at (0x[0-9a-fA-F]{40}) \(owner (0x[0-9a-fA-F]{40})\)\n"
                       r"  add to its \[\[protocols\]\] entry \(protocols\[(\d+)\]\): (\w+) = \"(0x[0-9a-fA-F]{40})\"",
                       p.stdout)
    got = {name: (contract, addr, int(i), key) for contract, name, addr, owner, i, key, addr2 in found}
    assert set(got) == {"aave-v3-devnet", "aave-v3.2-devnet", "maker-devnet", "morpho-devnet"}, p.stdout
    assert got["aave-v3-devnet"][0] == got["aave-v3.2-devnet"][0] == "FlashLiquidator"
    assert (got["maker-devnet"][0], got["maker-devnet"][3]) == ("TakeCallee", "take_callee")
    assert (got["morpho-devnet"][0], got["morpho-devnet"][3]) == ("MorphoLiquidator", "liquidator")
    for name, (_, addr, i, _key) in got.items():
        assert NAMES[i] == name
        assert _owner(chain, addr).lower() == KEEPER.lower(), name
        assert chain.call("eth_getCode", [addr, "latest"]) not in ("0x", None)

    # the adapters accept them (their start-up checks) and the Morpho one liquidates
    overrides = {f"KEEPER_PROTOCOLS__{i}__{key.upper()}": addr for _, addr, i, key in got.values()}
    keeper = await make_keeper(**overrides)  # every protocol of the devnet config, on the new contracts
    assert keeper.adapters["maker-devnet"].cfg.take_callee == got["maker-devnet"][1]
    await keeper.close()
    empty_keeper_loan_tokens(chain)
    chain.shock("WETH", -12)
    start = chain.block_number()
    keeper = await make_keeper(only=MORPHO, **overrides)
    outs = await keeper.cycle(await keeper.read_head())
    assert [o for o in outs if o.status == "confirmed"], [(o.status, o.reason) for o in outs]
    logs = chain.call("eth_getLogs", [{"address": extras(chain)["morpho"], "fromBlock": hex(start + 1),
                                       "toBlock": "latest", "topics": [EV_LIQUIDATE.topic0]}])
    assert logs and {EV_LIQUIDATE.decode(lg)["caller"].lower() for lg in logs} == {got["morpho-devnet"][1].lower()}


def test_deploy_liquidator_for_an_unknown_protocol_is_one_line_exit_2(chain):
    p = keeper_cmd("deploy-liquidator", "--config", str(DEVNET_CONFIG), "--protocol", "nope",
                   env={**clean_env(), "KEEPER_RPC_URL": chain.url, "KEEPER_PRIVATE_KEY": KEEPER_KEY})
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no protocol named 'nope'" in p.stderr, p.stderr
    p = keeper_cmd("deploy-liquidator", "--config", str(DEVNET_CONFIG), "--protocol", "perps-devnet",
                   env={**clean_env(), "KEEPER_RPC_URL": chain.url, "KEEPER_PRIVATE_KEY": KEEPER_KEY})
    assert p.returncode == 2 and "has no contract of the keeper's to deploy" in p.stderr, p.stderr
