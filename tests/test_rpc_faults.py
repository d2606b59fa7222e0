"""An unreachable RPC or one that answers garbage: a clear error at start-up, a logged
bounded retry while running, never a crash loop or a traceback."""

from __future__ import annotations

import asyncio

import pytest
from keeper.cli import main

from .conftest import DEVNET_CONFIG, keeper_env
from .faultproxy import FaultProxy, JsonLogs, assert_clean, free_port


def test_unreachable_rpc_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setenv("KEEPER_RPC_URL", f"http://127.0.0.1:{free_port()}")
    code = main(["run", "--config", str(DEVNET_CONFIG), "--dry-run", "--once"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: chain.rpc_url: cannot reach RPC") and "after 3 attempts" in err
    assert "Traceback" not in out + err


@pytest.mark.asyncio(loop_scope="session")
async def test_rpc_answering_garbage_at_start_is_a_clear_error(chain):
    from keeper.app import Keeper
    from keeper.config import load_config
    from keeper.errors import ConfigError

    async with FaultProxy(chain.url) as proxy:
        proxy.add("*", "html502")
        logs = JsonLogs()
        cfg = load_config(DEVNET_CONFIG, environ={**keeper_env(chain), "KEEPER_RPC_URL": proxy.token_url})
        k = Keeper(cfg, dry_run=True)
        with pytest.raises(ConfigError, match="non-JSON") as err:
            await k.start()
        await k.close()
    assert_clean(logs.text + str(err.value))  # the one error line and the retries: no token, no traceback


@pytest.mark.asyncio(loop_scope="session")
async def test_garbage_while_running_is_retried_and_the_keeper_recovers(chain):
    from keeper.app import Keeper
    from keeper.config import load_config

    logs = JsonLogs()  # the keeper's real output, as an operator reads it
    async with FaultProxy(chain.url) as proxy:
        # an RPC URL with an API token in its path: it must never reach the output
        cfg = load_config(DEVNET_CONFIG, environ={**keeper_env(chain), "KEEPER_RPC_URL": proxy.token_url,
                                                   "KEEPER_CHAIN__POLL_INTERVAL_S": "0.05"})
        k = Keeper(cfg, dry_run=True)
        await k.start()
        task = asyncio.create_task(k.run())
        await asyncio.sleep(0.3)
        first = k.cycles
        assert first >= 1
        proxy.add("*", "html502")
        await asyncio.sleep(0.5)
        proxy.clear()
        chain.call("evm_mine")
        for _ in range(100):
            if k.cycles > first:
                break
            await asyncio.sleep(0.05)
        k.stop_event.set()
        await asyncio.wait_for(task, 5)
        await k.close()
    errors = logs.events("rpc_error")
    assert errors and "non-JSON" in errors[0]["error"]
    assert all(e["retry_in_s"] <= 30 for e in errors)
    assert k.cycles > first, "the keeper went on after the RPC recovered"
    assert logs.events("rpc_recovered")
    assert_clean(logs.text)  # no traceback, no key, no RPC token
