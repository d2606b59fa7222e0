"""Every CLI mistake: one clear `error:` line, a non-zero exit, never a traceback, no secret echoed."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys

import pytest

from keeper import cli, redact
from keeper.cli import main
from keeper.devnet import anvil as anvil_mod

from .conftest import DEVNET_CONFIG, KEEPER_KEY, REPO, only_env


def usage_error(argv: list[str], capsys) -> str:
    """argparse mistakes: SystemExit 2 and exactly one line on stderr, nothing on stdout."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and "usage:" not in err
    return err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def env_for(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEPER_")}
    env["KEEPER_RPC_URL"] = url
    env.update(only_env("aave-v3-devnet"))
    return env


@pytest.mark.parametrize("pct, says", [
    ("abc", "not a number: 'abc'"),
    ("-150", "cannot fall by 100% or more"),
    ("-100", "cannot fall by 100% or more"),
    ("nan", "finite"),
    ("inf", "finite"),
    ("-Infinity", "finite"),
    ("20000", "at most +10000%"),
])
def test_shock_with_an_impossible_percentage_is_one_line(pct, says, capsys):
    err = usage_error(["devnet", "shock", "--asset", "WETH", f"--pct={pct}"], capsys)
    assert err.startswith("error: argument --pct: ") and says in err


@pytest.mark.parametrize("pct", ["-150", "abc"])
def test_demo_with_an_impossible_percentage_is_one_line(pct, capsys):
    err = usage_error(["demo", "--pct", pct], capsys)
    assert "argument --pct" in err


def test_demo_with_an_unknown_asset_lists_the_known_ones(capsys):
    err = usage_error(["demo", "--asset", "DOGE"], capsys)
    assert "unknown devnet asset 'DOGE'" in err and "WETH, WBTC, USDC" in err


def test_asset_names_are_case_insensitive():
    args = cli._parser().parse_args(["devnet", "shock", "--asset", "weth", "--pct", "-12"])
    assert args.asset == "WETH"


def test_cli_asset_list_matches_the_devnet_tokens():
    from keeper.devnet.deploy import TOKENS
    from keeper.devnet.venues import NEW_TOKENS

    assert set(cli.DEVNET_ASSETS) == {sym for sym, *_ in TOKENS} | set(NEW_TOKENS)


@pytest.mark.parametrize("argv", [
    ["demo", "--borrowers", "-3"],
    ["demo", "--borrowers", "0"],
    ["demo", "--borrowers", "1000000"],
    ["demo", "--borrowers", "many"],
    ["devnet", "up", "--borrowers", "-1"],
    ["demo", "--port", "70000"],
    ["devnet", "up", "--port", "-1"],
])
def test_counts_and_ports_out_of_range_are_one_line(argv, capsys):
    err = usage_error(argv, capsys)
    assert f"argument {argv[-2]}" in err


@pytest.mark.parametrize("argv", [
    [],
    ["devnet"],
    ["scan"],
    ["bogus"],
    ["run", "--config", "x.toml", "--frobnicate"],
    ["scan", "--config", "x.toml", "--limit", "ten"],
])
def test_usage_mistakes_are_one_line_exit_2(argv, capsys):
    err = usage_error(argv, capsys)
    assert "--help" in err


def test_run_with_a_missing_config_file_is_one_line_exit_2(capsys, tmp_path):
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    out, err = capsys.readouterr()
    line = one_error_line(err)
    assert "missing.toml" in line and "not found" in line


@pytest.fixture
def busy_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def test_demo_on_a_busy_port_says_the_port_is_in_use(busy_port, capsys):
    assert main(["demo", "--borrowers", "3", "--port", str(busy_port)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: port {busy_port} is in use")


def test_devnet_up_on_a_busy_port_says_the_port_is_in_use(busy_port, capsys):
    from keeper import devnet_cli

    if devnet_cli._read_run():
        pytest.skip("a detached devnet is running here; 'devnet up' would refuse for that reason first")
    assert main(["devnet", "up", "--borrowers", "3", "--port", str(busy_port)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: port {busy_port} is in use")


def test_anvil_failing_to_bind_is_reported_as_port_in_use(monkeypatch, tmp_path):
    """The check before starting can race with another process: anvil's own early exit
    ("Address already in use") is recognized too."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    try:
        monkeypatch.setattr(anvil_mod, "port_in_use", lambda port, host="127.0.0.1": False)
        node = anvil_mod.Anvil(port=port, log_path=tmp_path / "anvil.log")
        with pytest.raises(anvil_mod.PortInUseError) as e:
            node.start()
        assert str(e.value).startswith(f"port {port} is in use")
        assert isinstance(e.value, RuntimeError)  # callers catching RuntimeError still do
        assert not node.running
    finally:
        s.close()


def test_scan_piped_into_head_exits_quietly(chain):
    cmd = (f"{sys.executable} -m keeper scan --config {DEVNET_CONFIG} --json --limit 0 | head -1; "
           "echo \"status=${PIPESTATUS[0]}\"")
    p = subprocess.run(["bash", "-c", cmd], cwd=REPO, env=env_for(chain.url), capture_output=True, text=True,
                       timeout=120)
    first, status = p.stdout.splitlines()
    assert first == "{"
    assert status in ("status=0", "status=141")  # 141 when the pipe closed before scan finished writing
    assert "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr and "Exception ignored" not in p.stderr


def test_scan_into_a_closed_pipe_exits_141_without_traceback(chain):
    r, w = os.pipe()
    os.close(r)  # the reader is gone before scan writes a byte: every write gets EPIPE
    try:
        p = subprocess.run([sys.executable, "-m", "keeper", "scan", "--config", str(DEVNET_CONFIG)], cwd=REPO,
                           env=env_for(chain.url), stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(w)
    assert p.returncode == 141, p.stderr
    assert "Traceback" not in p.stderr and "BrokenPipeError" not in p.stderr and "Exception ignored" not in p.stderr
    assert not [line for line in p.stderr.splitlines() if line.startswith("error:")]


def test_scan_with_zero_or_negative_limit_shows_every_position(chain, capsys, monkeypatch):
    """--limit N shows the N lowest-health positions; 0 or a negative number shows all."""
    for k, v in env_for(chain.url).items():
        if k.startswith("KEEPER_"):
            monkeypatch.setenv(k, v)
    counts = {}
    for limit in ("-5", "0", "3"):
        assert main(["scan", "--config", str(DEVNET_CONFIG), "--json", "--limit", limit]) == 0
        data = json.loads(capsys.readouterr().out)
        counts[limit] = len(data["positions"])
        assert data["tracked"] >= 30
        all_count = data["tracked"]
    assert counts == {"-5": all_count, "0": all_count, "3": 3}


def test_unexpected_exception_is_one_line_and_the_traceback_goes_to_the_log(monkeypatch, capsys):
    key = "0x" + secrets.token_hex(32)
    redact.register_secret(key)

    def boom(args):
        raise RuntimeError(f"node https://eth.example.io/v3/APIKEY777 refused\nsecond line, key {key}")

    monkeypatch.setattr(cli, "_dispatch", boom)
    assert main(["--json-logs", "scan", "--config", "x.toml"]) == 1
    out, err = capsys.readouterr()
    assert key[2:] not in (out + err).lower() and "APIKEY777" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: unexpected RuntimeError: node https://eth.example.io/*** refused "
                      "(traceback logged on stderr as event=unexpected_error)"]
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (entry,) = [e for e in logged if e["event"] == "unexpected_error"]
    assert entry["level"] == "error"
    assert entry["exception"].startswith("Traceback (most recent call last)")
    assert "in boom" in entry["exception"] and "RuntimeError: node https://eth.example.io/***" in entry["exception"]


def test_unexpected_exception_in_run_points_to_stdout(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_dispatch", lambda args: {}["nope"])
    assert main(["--json-logs", "run", "--config", "x.toml"]) == 1
    out, err = capsys.readouterr()
    assert err == "error: unexpected KeyError: 'nope' (traceback logged on stdout as event=unexpected_error)\n"
    (entry,) = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert entry["event"] == "unexpected_error" and "KeyError: 'nope'" in entry["exception"]


def test_unexpected_exception_hides_key_shaped_hex_even_if_not_registered(monkeypatch, capsys):
    raw = secrets.token_hex(32)
    monkeypatch.setattr(cli, "_dispatch", lambda args: (_ for _ in ()).throw(ValueError(f"bad key {raw}")))
    assert main(["--log-level", "critical", "scan", "--config", "x.toml"]) == 1
    out, err = capsys.readouterr()
    assert raw not in out + err
    assert err == ("error: unexpected ValueError: bad key <64 hex digits hidden> "
                   "(traceback not logged at this --log-level; rerun with --log-level error)\n")


def test_config_error_echo_never_shows_the_signing_key(tmp_path, capsys, monkeypatch):
    """A live run whose key is loaded but whose RPC is unreachable: the key appears nowhere."""
    monkeypatch.setenv("KEEPER_PRIVATE_KEY", KEEPER_KEY)
    monkeypatch.setenv("KEEPER_RPC_URL", "http://127.0.0.1:9/v3/SECRETAPIKEY55")
    code = main(["run", "--config", str(DEVNET_CONFIG), "--once"])
    out, err = capsys.readouterr()
    assert code in (2, 3)
    one_error_line(err)
    assert "SECRETAPIKEY55" not in out + err and KEEPER_KEY[2:] not in (out + err).lower()


def test_a_mistyped_option_never_echoes_a_key_or_an_rpc_token(capsys):
    err = usage_error(["run", "--config", "x.toml", "--rpc-url", "https://eth.example.io/v3/TOKEN4242",
                       "--private-key", KEEPER_KEY], capsys)
    assert "unrecognized arguments" in err
    assert "TOKEN4242" not in err and KEEPER_KEY[2:] not in err.lower()
