"""The commands as a user runs them, as processes against the devnet."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import DEVNET_CONFIG, KEEPER, REPO, only_env


def keeper_cmd(*args: str, env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "keeper", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, **kw)


def clean_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    env["KEEPER_RPC_URL"] = url
    env.update(only_env("aave-v3-devnet"))  # these tests are about the Aave adapter's output
    return env


def test_run_dry_run_once_logs_each_opportunity_as_json_and_sends_nothing(chain):
    chain.shock("WETH", -12)
    nonce, block = chain.nonce(KEEPER), chain.block_number()
    p = keeper_cmd("run", "--config", str(DEVNET_CONFIG), "--dry-run", "--once", env=clean_env(chain.url))
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    opps = [e for e in lines if e["event"] == "opportunity"]
    assert len(opps) >= 3
    assert all(e["protocol"] == "aave-v3-devnet" and isinstance(e["block"], int) for e in opps)
    assert {e["event"] for e in lines} >= {"keeper_started", "opportunity", "dry_run_send"}
    assert "liquidation_sent" not in {e["event"] for e in lines}
    assert chain.nonce(KEEPER) == nonce and chain.block_number() == block


@contextlib.contextmanager
def running_daemon(chain):
    """`keeper run --dry-run` against the devnet, shortly after it logged keeper_started;
    killed afterwards if it is still running."""
    p = subprocess.Popen([sys.executable, "-m", "keeper", "run", "--config", str(DEVNET_CONFIG), "--dry-run"],
                         cwd=REPO, env=clean_env(chain.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        for line in p.stdout:
            if '"keeper_started"' in line or time.monotonic() > deadline:
                break
        time.sleep(0.3)
        yield p
    finally:
        if p.poll() is None:
            p.kill()


def test_sigterm_stops_the_daemon_cleanly_with_exit_code_0(chain):
    with running_daemon(chain) as p:
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
        assert "Traceback" not in p.stderr.read()


def test_scan_lists_positions_by_health_with_the_best_opportunity(chain):
    chain.shock("WETH", -12)
    p = keeper_cmd("scan", "--config", str(DEVNET_CONFIG), "--json", "--limit", "0", env=clean_env(chain.url))
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    hfs = [r["health_factor"] for r in data["positions"]]
    assert hfs == sorted(hfs) and len(hfs) >= 30
    below = [r for r in data["positions"] if r["health_factor"] < 1]
    assert below and all(r["best_opportunity"] for r in below)
    assert all(r["best_opportunity"] is None for r in data["positions"] if r["health_factor"] >= 1)
    b = below[0]["best_opportunity"]
    assert {"collateral", "debt", "debt_to_cover", "action", "net_profit_usd"} <= set(b)
    assert b["action"].startswith("repay ")


# -- scan shows the route run would take ---------------------------------------------------------

def both_routes_env(url: str) -> dict[str, str]:
    import tomllib

    names = [p["name"] for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"]]
    return {**clean_env(url), f"KEEPER_PROTOCOLS__{names.index('aave-v3-devnet')}__ROUTES": '["inventory","flash"]'}


def test_scan_shows_the_route_run_would_take(chain):
    """Both routes of an account share one key; scan used to show whichever the adapter listed
    last (flash), while run acts on the one that nets more (or that inventory allows)."""
    from keeper import abi

    chain.shock("WETH", -12)
    env = both_routes_env(chain.url)
    p = keeper_cmd("scan", "--config", str(DEVNET_CONFIG), "--json", "--limit", "0", env=env)
    assert p.returncode == 0, p.stderr
    scan_route = {r["account"].lower(): r["best_opportunity"]["route"]
                  for r in json.loads(p.stdout)["positions"] if r["best_opportunity"]}
    assert scan_route and set(scan_route.values()) <= {"inventory", "flash"}

    run = keeper_cmd("run", "--config", str(DEVNET_CONFIG), "--dry-run", "--once", env=env)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
    # both routes call the keeper's liquidator contract: the function tells them apart
    flash = "0x" + abi.load("FlashLiquidator").fn("liquidate").selector.hex()
    sent = {e["account"].lower(): ("flash" if e["data"].startswith(flash) else "inventory")
            for e in events if e["event"] == "dry_run_send"}
    assert len(sent) >= 3
    assert {"inventory", "flash"} <= {e.get("route") for e in events if e["event"] == "opportunity"}  # both competed
    assert {a: scan_route.get(a) for a in sent} == sent


def test_scan_table_has_a_route_column(chain):
    chain.shock("WETH", -12)
    p = keeper_cmd("scan", "--config", str(DEVNET_CONFIG), "--limit", "5", env=both_routes_env(chain.url))
    assert p.returncode == 0, p.stderr
    header, *rows = p.stdout.splitlines()[1:]
    assert "route" in header.split()
    assert any(" inventory " in r or " flash " in r for r in rows)


# -- signals stop anvil -------------------------------------------------------------------------

def port_answers(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def anvil_pids(port: int) -> list[int]:
    """Live anvil processes started with --port <port>."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and argv and argv[0].endswith(b"anvil") and str(port).encode() in argv \
                and b"--port" in argv and argv[argv.index(b"--port") + 1] == str(port).encode():
            found.append(int(d.name))
    return found


def wait_for(cond, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def start_cli(args: list[str], tmp_path, **kw) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    err = tmp_path / "stderr.txt"
    p = subprocess.Popen([sys.executable, "-m", "keeper", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                         stderr=err.open("w"), text=True, **kw)
    return p, err


def read_until(p: subprocess.Popen, marker: str, timeout: float = 60) -> list[str]:
    seen = []
    deadline = time.monotonic() + timeout
    for line in p.stdout:
        seen.append(line)
        if marker in line or time.monotonic() > deadline:
            break
    assert any(marker in s for s in seen), "".join(seen)
    return seen


def free_port() -> int:
    from keeper.devnet import free_port as fp

    return fp()


def assert_anvil_gone(port: int, pids: list[int]) -> None:
    assert wait_for(lambda: not anvil_pids(port) and not port_answers(port), 5), f"anvil {pids} still on {port}"


def cleanup(p: subprocess.Popen, port: int | None) -> None:
    """After a failed assertion: the process, and any anvil on the test's own port."""
    if p.poll() is None:
        p.kill()
        p.wait()
    for pid in anvil_pids(port) if port else []:
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def cli_with_anvil(tmp_path, *args: str, marker: str):
    """`keeper <args> --port P` on a free port P, read until it prints `marker`: yields
    (process, its stderr file, P, P's anvil pids); afterwards both are killed if still there."""
    port = free_port()
    p, err = start_cli([*args, "--port", str(port)], tmp_path)
    try:
        read_until(p, marker)
        yield p, err, port, anvil_pids(port)
    finally:
        cleanup(p, port)


def skip_if_a_devnet_is_detached() -> None:
    from keeper import devnet_cli

    if devnet_cli._read_run():
        pytest.skip("a detached devnet is running here; 'devnet up' refuses to start another")


def foreground_devnet_up(tmp_path):
    skip_if_a_devnet_is_detached()
    return cli_with_anvil(tmp_path, "devnet", "up", "--borrowers", "3", marker="Ctrl-C stops it")


@pytest.mark.parametrize("sig, marker, code", [
    (signal.SIGTERM, "[3/4] keeper running", 143),  # in the keeper's asyncio loop
    (signal.SIGHUP, "ready on", 129),               # right after the devnet started (price shock)
    (signal.SIGINT, "[3/4] keeper running", 130),
], ids=["SIGTERM-in-keeper-loop", "SIGHUP-after-devnet-start", "SIGINT-in-keeper-loop"])
def test_signal_during_demo_stops_anvil(sig, marker, code, tmp_path):
    """demo is cut short: anvil stopped, exit 128 + the signal number, no traceback."""
    with cli_with_anvil(tmp_path, "demo", "--borrowers", "3", marker=marker) as (p, err, port, pids):
        assert pids and port_answers(port)
        p.send_signal(sig)
        assert p.wait(timeout=10) == code, err.read_text()
        assert_anvil_gone(port, pids)
        assert "Traceback" not in err.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_signal_stops_foreground_devnet_up_and_its_anvil(sig, tmp_path):
    """Stopping is how a foreground devnet ends: exit 0, anvil gone."""
    with foreground_devnet_up(tmp_path) as (p, err, port, pids):
        assert pids and port_answers(port)
        p.send_signal(sig)
        assert p.wait(timeout=10) == 0, err.read_text()
        assert "devnet stopped" in p.stdout.read()
        assert_anvil_gone(port, pids)
        assert "Traceback" not in err.read_text()


def test_sigkill_of_devnet_up_still_takes_anvil_down(tmp_path):
    """Nothing runs in a SIGKILLed process: the kernel's parent-death signal stops anvil."""
    with foreground_devnet_up(tmp_path) as (p, _, port, pids):
        assert pids
        p.kill()
        p.wait(timeout=10)
        assert_anvil_gone(port, pids)


def test_detached_devnet_outlives_the_command_until_devnet_down(tmp_path):
    from keeper import devnet_cli

    skip_if_a_devnet_is_detached()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    try:
        up = keeper_cmd("devnet", "up", "--detach", "--borrowers", "3", "--port", str(port), env=env)
        assert up.returncode == 0, up.stderr
        assert "detached" in up.stdout
        time.sleep(0.3)  # the command has exited; its anvil must not have received a parent-death signal
        assert anvil_pids(port) and port_answers(port)
        down = keeper_cmd("devnet", "down", env=env)
        assert down.returncode == 0 and f"port {port} stopped" in down.stdout
        assert_anvil_gone(port, [])
    finally:
        for pid in anvil_pids(port):
            os.kill(pid, signal.SIGKILL)
        info = devnet_cli._read_run()
        if info and info.get("port") == port:
            devnet_cli.RUN_FILE.unlink(missing_ok=True)


def test_killed_process_takes_its_session_devnet_with_it(tmp_path):
    """What the test session's devnet fixture does (start_devnet in the main thread), in a
    process that then gets SIGKILLed: its anvil must go away with it."""
    code = ("import sys, time\n"
            "from keeper.devnet import start_devnet\n"
            f"node, _ = start_devnet(port=0, n_borrowers=40, log_path=__import__('pathlib').Path({str(tmp_path)!r}) / 'a.log')\n"
            "print(node.port, flush=True)\n"
            "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    port = None
    try:
        port = int(p.stdout.readline())
        pids = anvil_pids(port)
        assert pids and port_answers(port)
        p.kill()
        p.wait(timeout=10)
        assert_anvil_gone(port, pids)
    finally:
        cleanup(p, port)


def test_sigterm_to_a_test_session_tears_down_its_devnet(tmp_path):
    """A pytest session using the devnet fixture, SIGTERMed mid-test: the fixture's handler
    interrupts the session like Ctrl-C (exit 2), the teardown stops anvil."""
    (tmp_path / "test_sleepy.py").write_text(
        "import time\n"
        "from tests.conftest import devnet  # noqa: F401\n\n"
        "def test_sleep(devnet):\n"
        "    print('PORT', devnet[0].port, flush=True)\n"
        "    time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "--rootdir",
                          str(tmp_path), str(tmp_path / "test_sleepy.py")],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        for line in p.stdout:
            if "PORT" in line:
                port = int(line.split("PORT", 1)[1].split()[0])
                break
        assert port, "session did not start"
        pids = anvil_pids(port)
        assert pids
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 2  # pytest's "interrupted", after the teardown ran
        assert "stopped by SIGTERM" in p.stdout.read()
        assert_anvil_gone(port, pids)
    finally:
        cleanup(p, port)


def test_sighup_stops_the_daemon_cleanly_with_exit_code_0(chain):
    with running_daemon(chain) as p:
        p.send_signal(signal.SIGHUP)
        assert p.wait(timeout=10) == 0
        out, err = p.stdout.read(), p.stderr.read()
        assert "Traceback" not in err and "Traceback" not in out and "cycle_error" not in out
        assert '"signal": "SIGHUP"' in out
