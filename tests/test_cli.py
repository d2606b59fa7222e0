"""The commands as a user runs them, as processes against the devnet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

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


def test_sigterm_stops_the_daemon_cleanly_with_exit_code_0(chain):
    p = subprocess.Popen([sys.executable, "-m", "keeper", "run", "--config", str(DEVNET_CONFIG), "--dry-run"],
                         cwd=REPO, env=clean_env(chain.url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        for line in p.stdout:
            if '"keeper_started"' in line or time.monotonic() > deadline:
                break
        time.sleep(0.3)
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
        assert "Traceback" not in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()


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
