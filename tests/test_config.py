"""Bad configuration gives one clear line naming the key, a non-zero exit and no traceback."""

from pathlib import Path

import pytest

from keeper.cli import main
from keeper.config import load_config, load_signer
from keeper.errors import ConfigError

GOOD = """
[chain]
rpc_url = "http://127.0.0.1:1"
[keeper]
address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
min_profit_usd = 2.5
[swap]
kind = "uniswap_v3"
quoter_v2 = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
[[protocols]]
kind = "aave_v3"
name = "aave"
pool_addresses_provider = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
"""
ANVIL_KEY_1 = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "k.toml"
    p.write_text(text)
    return p


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_good_config_parses_with_exact_units(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), environ={})
    assert cfg.keeper.min_profit_usd_e8 == 250_000_000
    assert cfg.keeper.max_fee_wei == 100 * 10**9
    assert cfg.protocols[0].rules == "v3.0"


def test_environment_overrides_the_file(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), environ={
        "KEEPER_RPC_URL": "http://10.0.0.1:8545", "KEEPER_KEEPER__MIN_PROFIT_USD": "7",
        "KEEPER_PROTOCOLS__0__START_BLOCK": "123"})
    assert cfg.chain.rpc_url == "http://10.0.0.1:8545"
    assert cfg.keeper.min_profit_usd_e8 == 7 * 10**8
    assert cfg.protocols[0].start_block == 123


@pytest.mark.parametrize("text, message", [
    ("[chain\nrpc_url=1", "invalid TOML"),
    (GOOD.replace('kind = "aave_v3"', 'kind = "compound_v9"'), "protocols[0].kind: unknown protocol kind 'compound_v9'"),
    (GOOD.replace('rpc_url = "http://127.0.0.1:1"', 'rpc_url = "127.0.0.1"'), "chain.rpc_url: must be an http(s):// URL"),
    (GOOD.replace("min_profit_usd = 2.5", "min_profit_usd = -1"), "keeper.min_profit_usd: must be ≥ 0"),
    (GOOD.replace("min_profit_usd = 2.5", "min_proft_usd = 2.5"), "keeper.min_proft_usd: unknown key"),
    (GOOD.replace('pool_addresses_provider = "0x5FbDB2315678afecb367f032d93F642f64180aa3"', 'pool_addresses_provider = "0x12"'),
     "protocols[0].pool_addresses_provider: must be a 0x-prefixed 20-byte hex address"),
    (GOOD.replace("[[protocols]]", "[[nothing]]"), "protocols: add at least one"),
])
def test_bad_config_is_one_clear_line(tmp_path, capsys, text, message):
    code, out, err = run_cli(capsys, "run", "--config", str(write(tmp_path, text)), "--dry-run", "--once")
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err + out


def test_missing_config_file_is_a_clear_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "scan", "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "config file not found" in err


def test_live_mode_without_a_key_stops_before_touching_the_network(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KEEPER_PRIVATE_KEY", raising=False)
    code, out, err = run_cli(capsys, "run", "--config", str(write(tmp_path, GOOD)), "--once")
    assert code == 2
    assert "KEEPER_PRIVATE_KEY is not set" in err and "--dry-run" in err


def test_a_bad_key_is_rejected_without_echoing_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KEEPER_PRIVATE_KEY", "0xdeadbeef" + "5" * 10)
    code, out, err = run_cli(capsys, "run", "--config", str(write(tmp_path, GOOD)), "--once")
    assert code == 2 and "not a valid private key" in err and "deadbeef" not in err + out


def test_key_address_mismatch_is_caught(tmp_path):
    cfg = load_config(write(tmp_path, GOOD.replace("0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                                                   "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC")), environ={})
    with pytest.raises(ConfigError, match="does not match the signing key"):
        load_signer(cfg.keeper, environ={"KEEPER_PRIVATE_KEY": ANVIL_KEY_1})


def test_keystore_with_password_file_loads_the_key(tmp_path):
    from eth_account import Account

    ks = Account.encrypt(ANVIL_KEY_1, "hunter2", iterations=2)
    import json

    (tmp_path / "ks.json").write_text(json.dumps(ks))
    (tmp_path / "pw").write_text("hunter2\n")
    text = GOOD.replace("min_profit_usd = 2.5", f'keystore = "{tmp_path / "ks.json"}"\npassword_file = "{tmp_path / "pw"}"')
    cfg = load_config(write(tmp_path, text), environ={})
    assert load_signer(cfg.keeper, environ={}).address == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    (tmp_path / "pw").write_text("wrong")
    with pytest.raises(ConfigError, match="cannot decrypt"):
        load_signer(cfg.keeper, environ={})


@pytest.mark.parametrize("name", ["devnet.toml", "mainnet.toml"])
def test_shipped_configs_are_valid(name):
    from tests.conftest import REPO

    cfg = load_config(REPO / "config" / name, environ={})
    assert cfg.protocols and cfg.swap.quoter_v2
