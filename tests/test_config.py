"""Bad configuration gives one clear line naming the key, a non-zero exit and no traceback."""

import os
import re
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


def clear_keeper_env(monkeypatch) -> None:
    for k in [k for k in os.environ if k.startswith("KEEPER_")]:
        monkeypatch.delenv(k)


def test_good_config_parses_with_exact_units(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), environ={})
    assert cfg.keeper.min_profit_usd_e8 == 250_000_000
    assert cfg.keeper.max_fee_wei == 100 * 10**9
    assert cfg.protocols[0].rules == "auto"  # the adapter applies the detected version's rule set


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


# -- one test per fixed defect ---------------------------------------------------------
KEY_HEX = ANVIL_KEY_1[2:]


def assert_one_safe_line(msg: str) -> None:
    """One line, and nothing of a key: no run of 24+ hex digits but 40-digit addresses."""
    assert "\n" not in msg and "\r" not in msg
    for run in re.findall(r"(?i)(?:0x)?[0-9a-f]{24,}", msg):
        assert len(run[2:] if run.lower().startswith("0x") else run) == 40, msg
    assert not any(KEY_HEX[i:i + 16] in msg.lower() for i in range(len(KEY_HEX) - 15)), msg


def config_error(tmp_path, text: str | bytes = GOOD, **env: str) -> str:
    p = tmp_path / "k.toml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError) as e:
        load_config(p, environ=env)
    assert_one_safe_line(str(e.value))
    return str(e.value)


def test_a_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    blob = GOOD.encode().replace(b"[keeper]", b"[keeper]\n# caf\xe9")
    offset = blob.index(b"\xe9")
    assert config_error(tmp_path, blob) == f"{tmp_path / 'k.toml'}: not UTF-8 text (byte 0xe9 at offset {offset})"
    code, out, err = run_cli(capsys, "run", "--config", str(tmp_path / "k.toml"), "--dry-run", "--once")
    assert code == 2 and err.startswith("error: ") and "not UTF-8 text" in err and "Traceback" not in out + err


def test_a_bom_is_not_a_mistake(tmp_path):
    p = tmp_path / "k.toml"
    p.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_config(p, environ={}).keeper.min_profit_usd_e8 == 250_000_000


@pytest.mark.parametrize("kind", ['["aave_v3"]', '{ name = "aave_v3" }', "1", '"aave_v3 "'])
def test_protocol_kind_of_the_wrong_type_is_one_line(tmp_path, kind):
    msg = config_error(tmp_path, GOOD.replace('kind = "aave_v3"', f"kind = {kind}"))
    assert msg.startswith("protocols[0].kind: ") and "aave_v3, maker, morpho_blue, synthetix_perps" in msg


@pytest.mark.parametrize("value, why", [
    ("http://[::1:8545", "broken [IPv6] host"),
    ("http://127.0.0.1:99999", "port must be a number from 1 to 65535"),
    ("http://127.0.0.1:0", "port must be a number from 1 to 65535"),
    ("http://127.0.0.1:85a45", "port must be a number from 1 to 65535"),
    ("http://", "must start with http:// or https://"),
    ("http://:8545", "no host"),
    ("http://a b:8545", "no spaces"),
    (" http://h:8545", "no spaces"),
    ("ws://h:8546", "must start with http:// or https://"),
    ("http://exämple.com", "punycode"),
    (f"http://{ANVIL_KEY_1}", "looks like a private key"),
    (f"http://{KEY_HEX}:8545/", "looks like a private key"),
    (ANVIL_KEY_1, "must start with http:// or https://"),
])
def test_bad_urls_are_one_line_and_never_echo_a_key(tmp_path, value, why):
    msg = config_error(tmp_path, GOOD.replace('"http://127.0.0.1:1"', f'"{value}"'))
    assert msg.startswith("chain.rpc_url: must be an http(s):// URL (") and why in msg
    msg = config_error(tmp_path, KEEPER_RPC_URL=value)
    assert msg.startswith("chain.rpc_url: ") and why in msg and msg.endswith("(set by KEEPER_RPC_URL)")


def test_urls_that_are_fine(tmp_path):
    for u in ["https://eth.example.com/v2/abcdef0123", "http://[::1]:8545", "http://localhost:8545/", "http://u:p@h:1"]:
        assert load_config(write(tmp_path, GOOD), environ={"KEEPER_RPC_URL": u}).chain.rpc_url == u


@pytest.mark.parametrize("key, section", [
    ("poll_interval_s", "chain"), ("rpc_timeout_s", "chain"), ("rpc_probe_interval_s", "chain"),
    ("receipt_timeout_s", "keeper"), ("pause_cooldown_s", "keeper"), ("max_fee_gwei", "keeper"),
    ("min_profit_usd", "keeper"), ("profit_tolerance_pct", "keeper"), ("max_gas_spend_eth_per_day", "keeper"),
])
@pytest.mark.parametrize("value", ["1e400", "inf", "-inf", "nan", "+nan", "1" + "0" * 400])
def test_numbers_must_be_finite_and_bounded(tmp_path, key, section, value):
    text = GOOD.replace("min_profit_usd = 2.5\n", "").replace(f"[{section}]", f"[{section}]\n{key} = {value}")
    assert config_error(tmp_path, text).startswith(f"{section}.{key}: must be ")
    msg = config_error(tmp_path, **{f"KEEPER_{section.upper()}__{key.upper()}": value})
    assert msg.startswith(f"{section}.{key}: must be ") and f"(set by KEEPER_{section.upper()}__{key.upper()})" in msg


@pytest.mark.parametrize("key, limit", [
    ("chain.poll_interval_s", 3600), ("chain.rpc_timeout_s", 600), ("keeper.receipt_timeout_s", 600),
    ("chain.log_chunk_blocks", 10_000_000), ("keeper.confirmations", 1000), ("keeper.replace_after_blocks", 10_000),
    ("keeper.max_fee_gwei", 1_000_000), ("chain.max_head_lag_blocks", 10_000), ("chain.rpc_probe_interval_s", 3600),
    ("keeper.pause_cooldown_s", 604_800), ("keeper.heartbeat_blocks", 1_000_000), ("relay.timeout_s", 60),
    ("relay.target_blocks", 100), ("protocols[0].gas_limit", 100_000_000), ("protocols[0].start_block", 10**12),
])
def test_upper_bounds(tmp_path, key, limit):
    section, name = key.split(".")
    var = "KEEPER_" + section.upper().replace("[0]", "__0") + "__" + name.upper()
    env = {"KEEPER_RELAY__URLS": '["https://relay.example"]'} if section == "relay" else {}
    assert load_config(write(tmp_path, GOOD), environ={**env, var: str(limit)})  # the bound itself is fine
    msg = config_error(tmp_path, **env, **{var: str(limit + 1)})
    assert msg.startswith(f"{key}: must be ≤ {limit}, got {limit + 1}")


@pytest.mark.parametrize("value, got", [("true", "got true"), ("5.0", "got 5.0"), ("1.5", "got 1.5"), ('"5"', "got '5'"),
                                        ("1" + "0" * 400, "got 1.000e+400"), ("1" * 5000, "got a 5000-digit number"),
                                        ("-1", "must be ≥ 1"), ("0x10", "got '0x10'")])
def test_integers_reject_bools_floats_strings_and_huge_values(tmp_path, value, got):
    msg = config_error(tmp_path, KEEPER_KEEPER__CONFIRMATIONS=value)
    assert msg.startswith("keeper.confirmations: ") and got in msg


def test_an_integer_too_long_to_read_in_the_file_is_one_line(tmp_path):
    msg = config_error(tmp_path, GOOD.replace("[keeper]", "[keeper]\nconfirmations = " + "9" * 5000))
    assert msg == f"{tmp_path / 'k.toml'}: invalid TOML: a number too long to read"


@pytest.mark.parametrize("value", [ANVIL_KEY_1, KEY_HEX, ANVIL_KEY_1.upper().replace("0X", "0x"), f" {ANVIL_KEY_1}",
                                   f"{ANVIL_KEY_1}\\n", ANVIL_KEY_1[:60]])
@pytest.mark.parametrize("key", ["keeper.address", "swap.quoter_v2", "protocols[0].pool_addresses_provider",
                                 "chain.multicall3", "swap.router"])
def test_a_key_pasted_into_an_address_is_never_echoed(tmp_path, key, value):
    section, name = key.split(".")
    text = GOOD.replace(f"[{section}]", f'[{section}]\n{name} = "{value}"', 1) if "[" not in section else \
        GOOD.replace('pool_addresses_provider = "0x5FbDB2315678afecb367f032d93F642f64180aa3"', f'{name} = "{value}"')
    text = text.replace('address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"\n', "", 1) if name == "address" else text
    text = text.replace('quoter_v2 = "0x5FbDB2315678afecb367f032d93F642f64180aa3"\n', "", 1) if name == "quoter_v2" else text
    msg = config_error(tmp_path, text)
    assert msg.startswith(f"{key}: must be a 0x-prefixed 20-byte hex address, got ")


@pytest.mark.parametrize("env", [
    {"KEEPER_KEEPER__PRIVATE_KEY_ENV": ANVIL_KEY_1}, {"KEEPER_KEEPER__PRIVATE_KEY_ENV": "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcaec"},
    {"KEEPER_RELAY__URLS": '["https://r.example"]', "KEEPER_RELAY__AUTH_KEY_ENV": KEY_HEX},
    {"KEEPER_PROTOCOLS__0__NAME": KEY_HEX}, {f"KEEPER_KEEPER__{KEY_HEX.upper()}": "1"}, {f"KEEPER_{KEY_HEX}__X": "1"},
    {"KEEPER_CHAIN__CHAIN_ID": ANVIL_KEY_1}, {"KEEPER_CHAIN__RPC_URLS": f'["http://h:1", "http://{KEY_HEX}"]'},
    {"KEEPER_SWAP__FEE_TIERS": f"[{ANVIL_KEY_1}]"}, {"KEEPER_KEEPER__MIN_PROFIT_USD": f'"{KEY_HEX}"'},
])
def test_a_pasted_key_is_never_echoed_anywhere(tmp_path, env):
    config_error(tmp_path, **env)


def test_a_pasted_key_as_an_unknown_key_name_is_hidden(tmp_path):
    msg = config_error(tmp_path, GOOD.replace("[keeper]", f"[keeper]\n{KEY_HEX} = 1"))
    assert msg == "keeper.<64 hex digits hidden>: unknown key (check the spelling)"


def test_addresses_are_checksum_checked_and_settable_from_the_environment(tmp_path):
    good = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
    cfg = load_config(write(tmp_path, GOOD), environ={"KEEPER_KEEPER__ADDRESS": good.lower()})
    assert cfg.keeper.address == good  # not read as a TOML hex integer
    msg = config_error(tmp_path, KEEPER_KEEPER__ADDRESS=good.replace("C44", "c44"))
    assert msg.startswith("keeper.address: 0x3c44CdDdB6a900fa2b585dd299e03d12FA4293BC has a wrong EIP-55 checksum")


def test_journal_path_is_checked_when_the_config_is_read(tmp_path):
    (tmp_path / "file").write_text("x")
    msg = config_error(tmp_path, KEEPER_KEEPER__JOURNAL=str(tmp_path))
    assert msg.startswith(f"keeper.journal: '{tmp_path}' is a directory")
    for j in (tmp_path / "file" / "j.jsonl", tmp_path / "file" / "deeper" / "j.jsonl"):
        msg = config_error(tmp_path, KEEPER_KEEPER__JOURNAL=str(j))
        assert msg.startswith(f"keeper.journal: '{j}': parent '{tmp_path / 'file'}' is not a directory")
    new = tmp_path / "not" / "yet" / "j.jsonl"
    assert load_config(write(tmp_path, GOOD), environ={"KEEPER_KEEPER__JOURNAL": str(new)}).keeper.journal == new


@pytest.mark.parametrize("name, value, message", [
    ("KEEPER_CHAIN__RPC_URL__PORT", "1", "KEEPER_CHAIN__RPC_URL__PORT: chain.rpc_url is a single value, not a table"),
    ("KEEPER_PROTOCOLS__1__NAME", "x", "KEEPER_PROTOCOLS__1__NAME: no protocols[1] to override (protocols has 1 entry)"),
    ("KEEPER_PROTOCOLS__X__KIND", "maker", "KEEPER_PROTOCOLS__X__KIND: protocols is a list: expected an index after it"),
    ("KEEPER___", "1", "KEEPER___: an empty part in the variable name"),
    ("KEEPER_KEEPER____ADDRESS", "1", "KEEPER_KEEPER____ADDRESS: an empty part"),
    ("KEEPER_KEEPER__ADDRESS", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8\x00",
     "KEEPER_KEEPER__ADDRESS: the value contains a control character"),
    ("KEEPER_KEEPER__MIN_PROFIT_USD", "1\n2", "KEEPER_KEEPER__MIN_PROFIT_USD: the value contains a control character"),
    ("KEEPER_KEEPER_MIN_PROFIT_USD", "1", "KEEPER_KEEPER_MIN_PROFIT_USD: not applied: an override needs two underscores"),
    ("KEEPER_KEEPER__MIN_PROFT_USD", "1", "keeper.min_proft_usd: unknown key (did you mean min_profit_usd?) "
                                          "(set by KEEPER_KEEPER__MIN_PROFT_USD)"),
    ("KEEPER_SWAP__FEE_TIERS__3", "500", "KEEPER_SWAP__FEE_TIERS__3: no swap.fee_tiers[3] to override"),
])
def test_environment_overrides_of_the_wrong_shape_name_the_variable(tmp_path, capsys, monkeypatch, name, value, message):
    text = GOOD.replace("[swap]", "[swap]\nfee_tiers = [500, 3000, 10000]")
    assert config_error(tmp_path, text, **{name: value}).startswith(message)
    clear_keeper_env(monkeypatch)
    monkeypatch.setenv(name, value.replace("\x00", "\x01"))  # (a real environment cannot hold a NUL)
    code, out, err = run_cli(capsys, "run", "--config", str(write(tmp_path, text)), "--dry-run", "--once")
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"error: {message.split(':')[0]}")
    assert "Traceback" not in out + err


def test_keeper_rpc_url_replaces_the_whole_endpoint_list(tmp_path):
    text = GOOD.replace('rpc_url = "http://127.0.0.1:1"', 'rpc_urls = ["http://10.0.0.2:8545", "http://10.0.0.3:8545"]')
    cfg = load_config(write(tmp_path, text), environ={"KEEPER_RPC_URL": "http://10.0.0.1:8545"})
    assert cfg.chain.rpc_url == "http://10.0.0.1:8545" and cfg.chain.rpc_urls == ("http://10.0.0.1:8545",)
    assert "rpc_urls" not in cfg.raw["chain"]
    assert load_config(write(tmp_path, text), environ={}).chain.rpc_urls == ("http://10.0.0.2:8545", "http://10.0.0.3:8545")
    msg = config_error(tmp_path, text, KEEPER_RPC_URL="http://10.0.0.1:8545", KEEPER_CHAIN__RPC_URLS='["http://a:1"]')
    assert msg.startswith("KEEPER_RPC_URL: replaces the whole endpoint list, so KEEPER_CHAIN__RPC_URLS must not be set")


@pytest.mark.parametrize("line, message", [
    ("rpc_urls = []", "chain.rpc_urls: must be a non-empty list of http(s):// URLs"),
    ('rpc_urls = ["http://a:1", "http://a:1"]', "chain.rpc_urls: lists 'http://a:1' twice"),
    ('rpc_urls = ["http://a:99999"]', "chain.rpc_urls[0]: must be an http(s):// URL (the port"),
    ("max_head_lag_blocks = -1", "chain.max_head_lag_blocks: must be ≥ 0"),
    ("max_head_lag_blocks = 1.5", "chain.max_head_lag_blocks: must be an integer, got 1.5"),
    ("rpc_probe_interval_s = 0", "chain.rpc_probe_interval_s: must be > 0"),
    ("pause_cooldown_s = -1", "keeper.pause_cooldown_s: must be ≥ 0"),
    ("pause_cooldown_s = nan", "keeper.pause_cooldown_s: must be a finite number"),
    ("heartbeat_blocks = true", "keeper.heartbeat_blocks: must be an integer, got true"),
    ('password_file = "pw"', "keeper.password_file: only used with keeper.keystore"),
    ("priority_fee_profit_share = 1.5", "keeper.priority_fee_profit_share: must be ≤ 1"),
    ('private_key_env = "MY KEY"', "keeper.private_key_env: must be an environment variable name"),
    ('kill_switch_file = "a\\u0000b"', "keeper.kill_switch_file: must not contain control characters"),
])
def test_new_chain_and_keeper_keys_are_validated(tmp_path, line, message):
    section = message.split(".", 1)[0]  # the line goes into the section the message names
    assert config_error(tmp_path, GOOD.replace(f"[{section}]", f"[{section}]\n{line}")).startswith(message)


def test_relay_timeout_is_validated(tmp_path):
    relay = '\n[relay]\nurls = ["https://r.example"]\ntimeout_s = '
    assert load_config(write(tmp_path, GOOD + relay + "1.5"), environ={}).relay.timeout_s == 1.5
    for bad, why in [("0", "must be > 0"), ("inf", "must be a finite number"), ("61", "must be ≤ 60"),
                     ('"2"', "must be a number, got '2'")]:
        assert config_error(tmp_path, GOOD + relay + bad).startswith(f"relay.timeout_s: {why}")


def test_gas_estimates_must_fit_their_limits(tmp_path):
    msg = config_error(tmp_path, GOOD + "gas_limit = 300000\n")
    assert msg == "protocols[0].gas_estimate: 650000 is above protocols[0].gas_limit 300000"


def test_a_config_path_that_is_a_directory_is_one_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--config", str(tmp_path), "--dry-run", "--once")
    assert code == 2 and err == f"error: {tmp_path}: is a directory, not a config file\n"


def test_a_keystore_that_is_not_text_is_one_line(tmp_path):
    (tmp_path / "ks.json").write_bytes(b"\xff\xfe binary")
    (tmp_path / "pw").write_text("pw")
    text = GOOD.replace("min_profit_usd = 2.5", f'keystore = "{tmp_path / "ks.json"}"\npassword_file = "{tmp_path / "pw"}"')
    cfg = load_config(write(tmp_path, text), environ={})
    with pytest.raises(ConfigError, match=r"^keeper.keystore: '.*ks.json' is not UTF-8 text$"):
        load_signer(cfg.keeper, environ={})
    (tmp_path / "ks.json").write_text('{"not": "a keystore"}')
    with pytest.raises(ConfigError, match="cannot decrypt"):
        load_signer(cfg.keeper, environ={})


def test_a_quoter_address_without_code_stops_start_up(chain, capsys, monkeypatch, tmp_path):
    from tests.conftest import DEVNET_CONFIG, only_env

    clear_keeper_env(monkeypatch)
    nothing = "0x000000000000000000000000000000000000dEaD"
    for k, v in {"KEEPER_RPC_URL": chain.url, "KEEPER_SWAP__QUOTER_V2": nothing, **only_env("aave-v3-devnet")}.items():
        monkeypatch.setenv(k, v)
    code, out, err = run_cli(capsys, "run", "--config", str(DEVNET_CONFIG), "--dry-run", "--once")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err[-500:])
    assert len(lines) == 1 and lines[0].startswith(f"error: swap.quoter_v2: no contract at {nothing} on this chain")
    assert "Traceback" not in out + err
