"""`keeper fork`, tested by forking the project's own devnet: a price move and a live
liquidation on the fork, the devnet itself untouched."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import tomllib

import pytest

from keeper import abi

from .conftest import DEVNET_CONFIG, KEEPER, KEEPER_KEY, REPO, only_env, rpc

AAVE = "aave-v3-devnet"
LIQ = abi.load("AavePool").event("LiquidationCall")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}


def keeper_cmd(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "keeper", *args], cwd=REPO, env=clean_env(),
                          capture_output=True, text=True, timeout=timeout)


def answers(port: int) -> bool:
    try:
        rpc(f"http://127.0.0.1:{port}", "eth_chainId")
        return True
    except (OSError, RuntimeError):
        return False


def stop_fork(port: int) -> None:
    """Whatever happened in the test: the fork on `port` is stopped."""
    from keeper import fork

    try:
        fork.down(port)
    finally:
        (fork.RUN_DIR / f"fork-{port}.log").unlink(missing_ok=True)
    assert not answers(port)


def liquidations(url: str, pool: str, from_block: int) -> list[dict]:
    logs = rpc(url, "eth_getLogs", [{"address": pool, "fromBlock": hex(from_block), "toBlock": "latest",
                                     "topics": [LIQ.topic0]}])
    return [LIQ.decode(lg) for lg in logs]


def account_data(url: str, pool: str, user: str) -> tuple:
    fn = abi.load("AavePool").fn("getUserAccountData")
    data = rpc(url, "eth_call", [{"to": pool, "data": "0x" + fn.encode(user).hex()}, "latest"])
    return tuple(fn.decode(bytes.fromhex(data[2:])))


@pytest.mark.asyncio(loop_scope="session")
async def test_keeper_liquidates_live_on_a_fork_of_the_devnet_and_the_devnet_is_untouched(chain, tmp_path, monkeypatch):
    from keeper.app import Keeper
    from keeper.config import load_config
    from keeper.devnet import free_port, get_price, shock

    block = chain.block_number()
    devnet_head = chain.call("eth_getBlockByNumber", ["latest", False])
    devnet_weth = get_price(chain.url, chain.dep, "WETH")
    devnet_liquidations = liquidations(chain.url, chain.dep.pool, 0)
    port = free_port()
    fork_url = f"http://127.0.0.1:{port}"
    try:
        up = keeper_cmd("fork", "--fork-url", chain.url, "--fork-block", str(block), "--port", str(port),
                        "--config", str(DEVNET_CONFIG), "--fund", KEEPER, "--deploy-liquidator", "--detach")
        assert up.returncode == 0, up.stderr
        assert f"at block {block} (chain id 31337) ready on {fork_url}" in up.stdout
        assert f"export KEEPER_RPC_URL={fork_url}" in up.stdout
        assert f"impersonated: {KEEPER}" in up.stdout
        deployed = dict(re.findall(r"export (KEEPER_PROTOCOLS__\d+__FLASH_LIQUIDATOR)=(0x[0-9a-fA-F]{40})", up.stdout))
        assert len(deployed) == 2, up.stdout  # both Aave markets of the devnet config
        assert answers(port) and int(rpc(fork_url, "eth_blockNumber"), 16) >= block

        # the price moves on the fork only
        shock(fork_url, chain.dep, "WETH", -12)
        assert get_price(fork_url, chain.dep, "WETH") < devnet_weth

        # the keeper, pointed at the fork as the command says, liquidates live through the
        # FlashLiquidator it deployed there (owned by the impersonated keeper address)
        monkeypatch.setenv("KEEPER_PRIVATE_KEY", KEEPER_KEY)
        aave_index = [p["name"] for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"]].index(AAVE)
        liquidator = deployed[f"KEEPER_PROTOCOLS__{aave_index}__FLASH_LIQUIDATOR"]
        env = {"KEEPER_RPC_URL": fork_url, "KEEPER_PRIVATE_KEY": KEEPER_KEY, **only_env(AAVE), **deployed,
               f"KEEPER_PROTOCOLS__{aave_index}__ROUTES": '["flash"]',
               "KEEPER_KEEPER__JOURNAL": str(tmp_path / "journal.jsonl")}
        keeper = Keeper(load_config(DEVNET_CONFIG, environ=env), dry_run=False)
        try:
            await keeper.start()
            outs = await keeper.cycle(await keeper.read_head())
        finally:
            await keeper.close()
        confirmed = [o for o in outs if o.status == "confirmed"]
        assert confirmed, [(o.status, o.reason) for o in outs]
        events = liquidations(fork_url, chain.dep.pool, block + 1)
        assert len(events) == len(confirmed)
        assert {e["liquidator"].lower() for e in events} == {liquidator.lower()}
        users = {e["user"] for e in events}
        on_fork = {u: account_data(fork_url, chain.dep.pool, u) for u in users}

        # the devnet: same head, same state, no liquidation, the accounts as they were
        after = chain.call("eth_getBlockByNumber", ["latest", False])
        assert chain.block_number() == block
        assert (after["hash"], after["stateRoot"]) == (devnet_head["hash"], devnet_head["stateRoot"])
        assert liquidations(chain.url, chain.dep.pool, 0) == devnet_liquidations
        assert get_price(chain.url, chain.dep, "WETH") == devnet_weth
        for u in users:
            assert account_data(chain.url, chain.dep.pool, u) != on_fork[u]  # its debt is still all there
            assert account_data(chain.url, chain.dep.pool, u)[1] > on_fork[u][1]
    finally:
        stop_fork(port)


def test_foreground_fork_stops_its_anvil_on_sigterm_and_never_shows_the_source_key(chain, tmp_path):
    from keeper.devnet import free_port
    from keeper.fork import RUN_DIR

    port = free_port()
    source = chain.url + "/?apikey=sekrit0123456789"  # anvil answers on any query string
    err = tmp_path / "err.txt"
    with open(err, "w") as ef:
        p = subprocess.Popen([sys.executable, "-m", "keeper", "fork", "--fork-url", source, "--port", str(port)],
                             cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=ef, text=True)
    out = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            out.append(line)
            if "Ctrl-C stops it" in line:
                break
        assert any("Ctrl-C stops it" in x for x in out), "".join(out) + err.read_text()
        assert answers(port)
        assert f"fork of {chain.url}/*** at block {chain.block_number()}" in "".join(out)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0, err.read_text()
        out.append(p.stdout.read())
        assert "fork stopped" in out[-1]
        assert not answers(port)
        text = "".join(out) + err.read_text() + (RUN_DIR / f"fork-{port}.log").read_text(errors="replace")
        assert "sekrit" not in text
        assert "Traceback" not in err.read_text()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        stop_fork(port)


@pytest.mark.parametrize("args, says", [
    ([], "--fork-url is required"),
    (["--fork-url", "http://127.0.0.1:1", "--fork-block", "-1"], "--fork-block"),
    (["--fork-url", "http://127.0.0.1:1", "--port", "70000"], "--port"),
    (["--fork-url", "http://127.0.0.1:1", "--fund", "0x1234"], "--fund: not an address"),
    (["--fork-url", "http://127.0.0.1:1", "--deploy-liquidator"], "--deploy-liquidator needs --config"),
    (["--fork-url", "not a url"], "--fork-url: not an http(s) or ws(s) URL"),
    (["down", "--fork-url", "http://127.0.0.1:1"], "'keeper fork down' takes only --port"),
], ids=["no-url", "negative-block", "bad-port", "bad-fund", "deploy-without-config", "bad-url", "down-with-url"])
def test_bad_fork_arguments_are_one_error_line_and_exit_2(args, says, capsys):
    from keeper.cli import main

    try:
        code = main(["fork", *args])
    except SystemExit as e:  # argparse's own checks (the type of an argument) exit from parse_args
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and says in err[0], err


def test_fork_block_after_the_source_head_is_refused_with_exit_2(chain, capsys):
    from keeper.cli import main

    head = chain.block_number()
    assert main(["fork", "--fork-url", chain.url, "--fork-block", str(head + 1000), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --fork-block {head + 1000} is after the source's head ({head})"


def test_unreachable_source_exits_3_without_showing_its_key(capsys):
    from keeper.cli import main
    from keeper.devnet import free_port

    url = f"http://127.0.0.1:{free_port()}/v3/0123456789abcdefsecretkey"
    assert main(["fork", "--fork-url", url, "--port", "0"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --fork-url: cannot reach http://127.0.0.1:") and "/***" in err
    assert "secretkey" not in err


def test_fork_down_with_nothing_running_says_so():
    from keeper.devnet import free_port

    port = free_port()
    r = keeper_cmd("fork", "down", "--port", str(port), timeout=60)
    assert r.returncode == 0 and f"no fork running on port {port}" in r.stdout
