"""Log lines an operator can use: tracebacks kept (and scrubbed), every value redacted, levels checked."""

from __future__ import annotations

import io
import json
import secrets
import sys
import time

import pytest

from keeper import log as logmod
from keeper import redact
from keeper.cli import main

TX_HASH = "0x" + "ab" * 32
ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def fresh_secret() -> str:
    s = "0x" + secrets.token_hex(32)
    redact.register_secret(s)
    return s


def log_raised(exc: Exception, event: str, *, json_lines: bool) -> None:
    """Raise exc and log it as `event` with exc_info=True (to the captured stdout)."""
    logmod.setup("info", json_lines=json_lines, stream=sys.stdout)
    try:
        raise exc
    except type(exc):
        logmod.get().error(event, exc_info=True)


def test_json_error_line_carries_the_formatted_traceback(capsys):
    logmod.setup("info", json_lines=True, stream=sys.stdout)
    try:
        {}["missing"]
    except KeyError:
        logmod.get(block=7).error("cycle_error", error="KeyError: 'missing'", exc_info=True)
    (line,) = json_lines(capsys.readouterr().out)
    assert "exc_info" not in line
    assert line["exception"].startswith("Traceback (most recent call last)")
    assert "test_json_error_line_carries_the_formatted_traceback" in line["exception"]
    assert line["exception"].rstrip().endswith("KeyError: 'missing'")
    assert line["block"] == 7 and line["level"] == "error"


def test_exception_instance_as_exc_info_is_rendered_too(capsys):
    logmod.setup("info", json_lines=True, stream=sys.stdout)
    try:
        raise RuntimeError("node went away")
    except RuntimeError as e:
        err = e
    logmod.get().error("unexpected_error", exc_info=err)
    (line,) = json_lines(capsys.readouterr().out)
    assert "RuntimeError: node went away" in line["exception"]


def test_traceback_in_a_log_line_is_scrubbed_of_urls_and_registered_keys(capsys):
    key = fresh_secret()
    log_raised(ValueError(f"cannot reach https://eth.example.io/v3/APIKEY123456 signing with {key}"),
               "protocol_error", json_lines=True)
    out = capsys.readouterr().out
    (line,) = json_lines(out)
    assert "ValueError: cannot reach https://eth.example.io/*** signing with 0x***" in line["exception"]
    assert "APIKEY123456" not in out and key[2:] not in out.lower()


def test_console_line_shows_the_traceback_below_it(capsys):
    key = fresh_secret()
    log_raised(ZeroDivisionError(f"division by zero near {key}"), "cycle_error", json_lines=False)
    out = capsys.readouterr().out
    first, *rest = out.splitlines()
    assert "cycle_error" in first
    assert any(r.startswith("Traceback (most recent call last)") for r in rest)
    assert "ZeroDivisionError: division by zero near 0x***" in out
    assert key[2:] not in out.lower()


def test_every_value_is_scrubbed_whatever_the_field_name(capsys):
    key = fresh_secret()

    class Endpoint:
        def __str__(self) -> str:
            return "Endpoint(https://rpc.example.org/v2/OBJKEY42)"

    logmod.setup("info", json_lines=True, stream=sys.stdout)
    logmod.get().warning(
        "rpc_error", error=f"POST https://mainnet.example.io/v3/ERRKEY99 failed ({key})",
        nested={"upstream": "wss://ws.example.io/KEYWSS77", "tries": [1, "https://a.example/KEYLIST88"]},
        pair=("http://u:PASSWD66@host.example:8545/", 3), endpoint=Endpoint(), count=3, ratio=0.5, ok=True)
    out = capsys.readouterr().out
    (line,) = json_lines(out)
    for leaked in ("ERRKEY99", "KEYWSS77", "KEYLIST88", "PASSWD66", "OBJKEY42", key[2:]):
        assert leaked not in out
    assert line["error"].startswith("POST https://mainnet.example.io/*** failed (0x***)")
    assert line["nested"] == {"upstream": "wss://ws.example.io/***", "tries": [1, "https://a.example/***"]}
    assert line["pair"] == ["http://host.example:8545/***", 3]
    assert line["endpoint"].startswith("Endpoint(https://rpc.example.org/***")
    assert (line["count"], line["ratio"], line["ok"]) == (3, 0.5, True)


def test_key_named_fields_are_hidden_at_any_depth(capsys):
    logmod.setup("info", json_lines=True, stream=sys.stdout)
    logmod.get().info("loaded", private_key="0x" + "1" * 64, key="k", password="p", secret="s", auth_key="a",
                      relay_private_key="x", keystore_password="y", client_secret="z", Private_Key="w",
                      cfg={"signer": {"private_key": "q", "address": ADDRESS}, "keys": 2})
    out = capsys.readouterr().out
    (line,) = json_lines(out)
    for f in ("private_key", "key", "password", "secret", "auth_key", "relay_private_key", "keystore_password",
              "client_secret", "Private_Key"):
        assert line[f] == "***", f
    assert line["cfg"] == {"signer": {"private_key": "***", "address": ADDRESS}, "keys": 2}
    assert "1" * 64 not in out


def test_transaction_hashes_addresses_and_event_names_stay_readable(capsys):
    fresh_secret()  # a registered secret must not hide other hex
    logmod.setup("info", json_lines=True, stream=sys.stdout)
    logmod.get().info("liquidation_sent", tx_hash=TX_HASH, account=ADDRESS, data="0xdeadbeef", to=ADDRESS)
    (line,) = json_lines(capsys.readouterr().out)
    assert line["event"] == "liquidation_sent"
    assert line["tx_hash"] == TX_HASH and line["account"] == ADDRESS and line["data"] == "0xdeadbeef"


def test_redaction_stays_cheap_on_the_hot_path():
    fresh_secret()
    event = {"event": "opportunity", "block": 123, "protocol": "aave-v3-devnet", "account": ADDRESS,
             "collateral": "WETH", "debt": "USDC", "debt_to_cover": 51_440_147_661, "gross_profit_usd": 2164.03,
             "gas_cost_usd": 3.1, "net_profit_usd": 2160.9, "route": "inventory", "level": "info",
             "timestamp": "2024-01-01T00:00:00Z"}
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        logmod._redact(None, "info", dict(event))
    per_event = (time.perf_counter() - t0) / n
    assert per_event < 100e-6, f"{per_event * 1e6:.1f} µs per event"


@pytest.mark.parametrize("level", ["DEBUG", "Warning", "error", "CRITICAL", "info"])
def test_log_levels_are_case_insensitive(level, capsys):
    assert main(["--log-level", level, "run", "--config", "/nonexistent/keeper.toml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config file not found" in err and "Traceback" not in err


def test_unknown_log_level_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--log-level", "bogus", "scan", "--config", "x.toml"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument --log-level: invalid choice: 'bogus'")
    for lvl in ("debug", "info", "warning", "error", "critical"):
        assert lvl in err
    assert "Traceback" not in err


def test_unknown_log_level_from_the_environment_is_rejected(capsys, monkeypatch):
    monkeypatch.setenv("KEEPER_LOG_LEVEL", "loud")
    with pytest.raises(SystemExit) as e:
        main(["scan", "--config", "x.toml"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KEEPER_LOG_LEVEL" in err and "'loud'" in err


def test_level_filter_applies(capsys):
    logmod.setup("WARNING", json_lines=True, stream=sys.stdout)
    logmod.get().info("quiet")
    logmod.get().warning("loud")
    assert [e["event"] for e in json_lines(capsys.readouterr().out)] == ["loud"]


def test_setup_rejects_an_unknown_level():
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        logmod.setup("verbose", json_lines=True, stream=io.StringIO())
