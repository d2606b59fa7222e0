"""Perps configuration errors: one clear line naming the key, exit code 2."""

from __future__ import annotations

from keeper.cli import main

from .conftest import DEVNET_CONFIG
from .test_perps_keeper import PERPS_INDEX


def test_unknown_market_id_is_a_clear_config_error(chain, capsys, monkeypatch):
    monkeypatch.setenv("KEEPER_RPC_URL", chain.url)
    monkeypatch.setenv(f"KEEPER_PROTOCOLS__{PERPS_INDEX}__MARKETS", "[100, 300]")
    code = main(["run", "--config", str(DEVNET_CONFIG), "--dry-run", "--once"])
    out, err = capsys.readouterr()
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: protocols[{PERPS_INDEX}].markets: market id 300 ")
    assert "Traceback" not in out + err


def test_bad_perps_keys_name_the_key():
    import pytest

    from keeper.config import load_config
    from keeper.errors import ConfigError

    for key, value, msg in [("MARKETS", "[]", "markets: must be a non-empty list of integers"),
                            ("MAX_FLAGGED_PER_TX", "0", "max_flagged_per_tx: must be ≥ 1"),
                            ("MARKET", "0x1234", "market: must be a 0x-prefixed 20-byte hex address")]:
        env = {"KEEPER_RPC_URL": "http://127.0.0.1:1", f"KEEPER_PROTOCOLS__{PERPS_INDEX}__{key}": value}
        with pytest.raises(ConfigError, match=f"^protocols\\[{PERPS_INDEX}\\]\\.{msg}"):
            load_config(DEVNET_CONFIG, environ=env)
