"""An unreachable RPC or one that answers garbage: a clear error at start-up, a logged
bounded retry while running, never a crash loop or a traceback."""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from keeper.cli import main

from .conftest import DEVNET_CONFIG, keeper_env



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_rpc_is_a_clear_error(capsys, monkeypatch):
    monkeypatch.setenv("KEEPER_RPC_URL", f"http://127.0.0.1:{free_port()}")
    code = main(["run", "--config", str(DEVNET_CONFIG), "--dry-run", "--once"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("error: chain.rpc_url: cannot reach RPC") and "after 3 attempts" in err
    assert "Traceback" not in out + err


class FlakyProxy:
    """A JSON-RPC proxy in front of anvil that can be told to answer garbage."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.garbage = False
        self.port = free_port()
        self.runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.garbage:
            return web.Response(status=502, text="<html>502 Bad Gateway</html>")
        async with self.session.post(self.upstream, data=body, headers={"content-type": "application/json"}) as r:
            return web.Response(body=await r.read(), content_type="application/json")

    async def __aenter__(self) -> "FlakyProxy":
        app = web.Application()
        app.router.add_post("/", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"


@pytest.mark.asyncio(loop_scope="session")
async def test_rpc_answering_garbage_at_start_is_a_clear_error(chain):
    from keeper.app import Keeper
    from keeper.config import load_config
    from keeper.errors import ConfigError

    async with FlakyProxy(chain.url) as proxy:
        proxy.garbage = True
        cfg = load_config(DEVNET_CONFIG, environ={**keeper_env(chain), "KEEPER_RPC_URL": proxy.url})
        k = Keeper(cfg, dry_run=True)
        with pytest.raises(ConfigError, match="non-JSON"):
            await k.start()
        await k.close()


@pytest.mark.asyncio(loop_scope="session")
async def test_garbage_while_running_is_retried_and_the_keeper_recovers(chain):
    from keeper.app import Keeper
    from keeper.config import load_config

    async with FlakyProxy(chain.url) as proxy:
        cfg = load_config(DEVNET_CONFIG, environ={**keeper_env(chain), "KEEPER_RPC_URL": proxy.url,
                                                   "KEEPER_CHAIN__POLL_INTERVAL_S": "0.05"})
        k = Keeper(cfg, dry_run=True)
        await k.start()
        with capture_logs() as logs:
            task = asyncio.create_task(k.run())
            await asyncio.sleep(0.3)
            first = k.cycles
            assert first >= 1
            proxy.garbage = True
            await asyncio.sleep(0.5)
            proxy.garbage = False
            chain.call("evm_mine")
            for _ in range(100):
                if k.cycles > first:
                    break
                await asyncio.sleep(0.05)
            k.stop_event.set()
            await asyncio.wait_for(task, 5)
        await k.close()
        errors = [e for e in logs if e["event"] == "rpc_error"]
        assert errors and "non-JSON" in errors[0]["error"]
        assert all(e["retry_in_s"] <= 30 for e in errors)
        assert k.cycles > first, "the keeper went on after the RPC recovered"
