"""Fuzz of the configuration loader: every malformed config or environment override is one
clear ConfigError line naming the key (or the file, or the variable), never another
exception, never silent acceptance, and never an echo of anything shaped like a private key.

The cases are generated deterministically (random.Random(SEED)) from config/devnet.toml:
each key gets values of wrong types, non-finite, negative, huge, empty, unicode, NUL and
newline values, pasted keys; required keys are deleted, unknown keys added, bytes that are
not UTF-8 inserted; the same values go through KEEPER_... environment overrides. Each case
says what must happen: `ok` (the mutation is legitimately valid: a Config comes back) or
the key path / file / variable the one error line must start with.
"""

from __future__ import annotations

import copy
import json
import random
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from keeper.config import Config, load_config
from keeper.errors import ConfigError

from .conftest import DEVNET_CONFIG

SEED = 20240601
KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil account 1 (public test key)
KEY_HEX = KEY[2:]
BASE = tomllib.loads(DEVNET_CONFIG.read_text(), parse_float=Decimal)
IDX = {p["kind"]: i for i, p in enumerate(BASE["protocols"])}
RELAY = {"urls": ["https://relay.example.org/bundles"], "target_blocks": 2}
TMP = "@TMP@"  # replaced by the test's tmp_path


# -- values ---------------------------------------------------------------------------
INF, NINF, NAN = Decimal("inf"), Decimal("-inf"), Decimal("nan")
HUGE = 10**400
PASTED_KEYS = [KEY, KEY_HEX, KEY.upper().replace("0X", "0x"), f" {KEY} "]
WRONG_SCALARS = ["", "text", "ünïcødé ✓", "a\x00b", "line\nbreak", "tab\there", True, [], [1, 2], {}, {"a": 1}]
NON_FINITE = [INF, NINF, NAN, Decimal("1e400"), Decimal("-1e400"), HUGE, -HUGE]


def ints(lo: int, hi: int) -> tuple[list, list]:
    bad = WRONG_SCALARS + NON_FINITE + [False, Decimal("1.5"), Decimal(f"{lo}.0"), str(lo), lo - 1, hi + 1, 2**256,
                                        KEY, KEY_HEX]
    return bad, [lo, hi]


def nums(lo: Decimal | int | None, hi: int, positive: bool = False) -> tuple[list, list]:
    bad = WRONG_SCALARS + NON_FINITE + [False, "1.5", "1", hi + 1, Decimal(hi) + Decimal("0.001"), KEY]
    bad += [Decimal(0), Decimal("-0.0")] if positive else [Decimal("-0.001"), -1]
    return bad, [hi, Decimal("0.5") if positive else 0, 1]


BOOL = ([0, 1, "true", "yes", Decimal("1.0"), "", [], {}, INF, KEY], [True, False])
LABEL = ([""] + WRONG_SCALARS[3:] + [1, INF, KEY, KEY_HEX, "\x7f"], ["renamed ✓ label", "a"])
ENV_NAME = ([*[v for v in WRONG_SCALARS if v != "text"], "1ABC", "WITH SPACE", "A-B", "", KEY, KEY_HEX, "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcaec",
             "X\x00"], ["MY_KEY_VAR", "_x1"])
PATH = ([*[v for v in WRONG_SCALARS if v != "text" and v != "ünïcødé ✓"], 5, INF], ["some/where ✓.txt", "/tmp/x"])
ADDRESS_OK = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
ADDRESS = ([*WRONG_SCALARS, *PASTED_KEYS, "0x12", "0x" + "g" * 40, ADDRESS_OK[2:], ADDRESS_OK + "0", ADDRESS_OK + "\n",
            " " + ADDRESS_OK, ADDRESS_OK.replace("C51", "c51"), ADDRESS_OK[:41], int(ADDRESS_OK, 16), INF],
           [ADDRESS_OK, ADDRESS_OK.lower(), "0x" + ADDRESS_OK[2:].upper()])
URL = ([*WRONG_SCALARS, *PASTED_KEYS, "http://[::1:8545", "http://127.0.0.1:99999", "http://127.0.0.1:0", "http://h:abc",
        "http://h:-1", "http://", "http:///x", "http://:8545", "http://a b", " http://h", "http://h\n", "127.0.0.1:8545",
        "ftp://h", "ws://h:8546", f"http://{KEY}", f"http://{KEY_HEX}:8545", f"https://{KEY_HEX}.example.com",
        "http://exämple.com", "http://[zz]:1", 8545, INF],
       ["https://rpc.example.com/v2/abcdef", "http://[::1]:8545", "http://localhost:8545/", "HTTP://h"])
URLS = ([[], "http://h:1", [1], ["http://a:1", "http://a:1"], ["http://a:1", "http://[::1:8545"],
         [f"http://{KEY}"], [KEY], {}, INF, True], [["http://a:1"], ["http://a:1", "https://b.example/x"]])
ROUTES = ([[], ["loan"], ["flash", "flash"], "flash", [1], [True], {}, INF, ["flash", KEY]],
          [["flash"], ["inventory"], ["flash", "inventory"]])
FEE_TIERS = ([[], [1], [500, 500], "500", [Decimal("500.0")], [True], [HUGE], {}, [KEY], INF], [[100], [3000, 500]])
MARKETS = ([[], [-1], [2**128], [Decimal("1.5")], "100", [100, 100], [True], [INF], {}, [KEY]], [[100], [1, 2, 2**128 - 1]])
PROTOCOL_KIND = ([["aave_v3"], {"kind": "aave_v3"}, "compound_v9", "", 1, True, INF, KEY, "aave_v3 "], [])
SWAP_KIND = ([["uniswap_v3"], {}, "uniswap_v2", "", 3, True, INF, KEY], ["uniswap_v3"])
RULES = ([["v3.0"], "v3.1", "", 3, Decimal("3.0"), True, INF, KEY], ["v3.0", "v3.3", "auto"])
HEALTH = ([["local"], "onchain", "", 1, True, INF, KEY], ["local", "chain"])
ILK_NAME = ([*WRONG_SCALARS[:1], *WRONG_SCALARS[3:], "x" * 33, "é" * 17, 1, INF, KEY],
            ["ETH-B", "x" * 32, "ünïcødé ✓"])  # any ≤ 32 bytes: the Vat check at start-up finds unknown ilks
ILKS = ([[], "ETH-A", [1], [{}], [{"name": "ETH-A"}], [{"name": "A", "clipper": ADDRESS_OK}] * 2, {}, INF,
         [{"name": "A", "clipper": ADDRESS_OK, "extra": 1}]], [[{"name": "A", "clipper": ADDRESS_OK}]])

# gas: estimates stay ≤ their limits in every valid value
GAS = ([*ints(21_000, 100_000_000)[0]], [21_000])
GAS_LIMIT = ([*ints(21_000, 100_000_000)[0]], [5_000_000, 100_000_000])

CHAIN = {
    "rpc_url": URL, "rpc_urls": URLS, "chain_id": ints(1, 4_503_599_627_370_476), "multicall3": ADDRESS,
    "poll_interval_s": nums(None, 3600, positive=True), "log_chunk_blocks": ints(1, 10_000_000),
    "rpc_timeout_s": nums(None, 600, positive=True), "native_usd_feed": ADDRESS, "max_head_lag_blocks": ints(0, 10_000),
    "rpc_probe_interval_s": nums(None, 3600, positive=True), "watch_pending": BOOL,
    "pending_poll_interval_s": nums(None, 60, positive=True),
}
KEEPER = {
    "address": ADDRESS, "private_key_env": ENV_NAME, "min_profit_usd": nums(0, 10**12),
    "max_fee_gwei": (nums(None, 1_000_000, positive=True)[0], [1_000_000, 1]),  # ≥ priority_fee_gwei (1.0)
    "priority_fee_gwei": (nums(0, 1_000_000)[0], [0, 1, Decimal("0.5")]),  # ≤ max_fee_gwei (200)
    "receipt_timeout_s": nums(None, 600, positive=True), "priority_fee_profit_share": nums(0, 1),
    "replace_after_blocks": ints(1, 10_000), "confirmations": ints(1, 1000),
    "journal": (PATH[0] + [TMP, f"{TMP}/file/j.jsonl", f"{TMP}/file/a/b/j.jsonl"], [f"{TMP}/j.jsonl", f"{TMP}/new/dir/j.jsonl"]),
    "max_gas_spend_eth_per_hour": nums(None, 1_000_000, positive=True),
    "max_gas_spend_eth_per_day": nums(None, 1_000_000, positive=True), "max_consecutive_failures": ints(0, 1_000_000),
    "kill_switch_file": PATH, "profit_tolerance_pct": nums(0, 10_000), "pause_cooldown_s": nums(0, 604_800),
    "heartbeat_blocks": ints(0, 1_000_000),
    "keystore": (PATH[0], []), "password_file": (PATH[0], []),  # valid only as a pair: see SPECIAL
}
SWAP = {"kind": SWAP_KIND, "quoter_v2": ADDRESS, "router": ADDRESS, "fee_tiers": FEE_TIERS}
RELAY_KEYS = {"urls": URLS, "auth_key_env": ENV_NAME, "target_blocks": ints(1, 100), "fallback_public": BOOL,
              "timeout_s": nums(None, 60, positive=True)}
AAVE = {
    "kind": PROTOCOL_KIND, "name": LABEL, "pool_addresses_provider": ADDRESS, "start_block": ints(0, 10**12),
    "rules": RULES, "gas_estimate": GAS, "gas_limit": GAS_LIMIT, "max_price_age_s": ints(1, 10**8), "enabled": BOOL,
    "flash_liquidator": ADDRESS, "flash_gas_estimate": GAS, "flash_gas_limit": GAS_LIMIT,
    "flash_min_profit_share": nums(0, 10), "routes": ROUTES, "health": HEALTH,
    "near_health_factor": (nums(1, 10)[0] + [Decimal("0.999"), 0], [1, Decimal("1.05"), 10]),
    "full_check_blocks": ints(1, 10**6),
}
PERPS = {
    "kind": PROTOCOL_KIND, "name": LABEL, "market": ADDRESS, "markets": MARKETS, "start_block": ints(0, 10**12),
    "gas_estimate": GAS, "gas_limit": GAS_LIMIT, "max_flagged_per_tx": ints(1, 10_000), "price_step_wad": ints(1, 10**36),
    "enabled": BOOL,
}
MAKER = {
    "kind": PROTOCOL_KIND, "name": LABEL, "dog": ADDRESS, "take_callee": ADDRESS, "dai_join": ADDRESS,
    "min_margin_pct": nums(0, 100), "dai_usd": nums(None, 10, positive=True), "bark": BOOL, "take": BOOL, "redo": BOOL,
    "gas_bark": GAS, "gas_take": GAS, "gas_flash_take": GAS, "gas_redo": GAS, "gas_limit": GAS_LIMIT, "routes": ROUTES,
    "enabled": BOOL, "start_block": ints(0, 10**12), "ilks": ILKS,
}
ILK = {"name": ILK_NAME, "clipper": ADDRESS, "gem_join": ADDRESS}
REQUIRED = {("chain",), ("keeper",), ("swap",), ("protocols",), ("chain", "rpc_url"), ("swap", "kind"),
            ("swap", "quoter_v2"), ("relay", "urls")} | {
    ("protocols", i, k) for i in IDX.values() for k in ("kind", "name")} | {
    ("protocols", IDX["aave_v3"], "pool_addresses_provider"), ("protocols", IDX["synthetix_perps"], "market"),
    ("protocols", IDX["maker"], "dog"), ("protocols", IDX["maker"], "ilks"),
    ("protocols", IDX["maker"], "ilks", 0, "name"), ("protocols", IDX["maker"], "ilks", 0, "clipper")}


def table_specs() -> list[tuple[tuple, dict]]:
    m = IDX["maker"]
    return [(("chain",), CHAIN), (("keeper",), KEEPER), (("swap",), SWAP), (("relay",), RELAY_KEYS),
            (("protocols", IDX["aave_v3"]), AAVE), (("protocols", IDX["synthetix_perps"]), PERPS),
            (("protocols", m), MAKER), (("protocols", m, "ilks", 0), ILK)]


# -- cases ----------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    expect: str  # "ok", or what the error line must start with (a key path, "<file>", or a variable)
    data: dict | None = None  # written as TOML
    raw: bytes | None = None  # written as is
    env: dict[str, str] = field(default_factory=dict)
    contains: str = ""  # the message must also contain this


def where(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def base(with_relay: bool = False) -> dict:
    data = copy.deepcopy(BASE)
    if with_relay:
        data["relay"] = copy.deepcopy(RELAY)
    return data


def put(data: dict, path: tuple, value: Any = ..., delete: bool = False) -> dict:
    node: Any = data
    for p in path[:-1]:
        node = node[p]
    if delete:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = copy.deepcopy(value)
    return data


def env_var(path: tuple) -> str:
    return "KEEPER_" + "__".join(str(p).upper() for p in path)


def env_literal(v: Any) -> str:
    """How an operator would write the value in an environment variable (a TOML literal; bare text for plain words)."""
    if isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_./:-]+", v) and not re.fullmatch(r"[0-9.eE+-]+|true|false|inf|nan", v):
        return v
    return toml_value(v)


def build_cases() -> list[Case]:
    rng = random.Random(SEED)
    cases: list[Case] = []
    for table, spec in table_specs():
        relay = table[0] == "relay"
        for key, (bad, good) in spec.items():
            path = table + (key,)
            w = where(path)
            for i, v in enumerate(bad):
                cases.append(Case(f"{w}=bad{i}", w, data=put(base(relay), path, v)))
            for i, v in enumerate(good):
                cases.append(Case(f"{w}=good{i}", "ok", data=put(base(relay), path, v)))
            if key in _get(base(relay), table) or path in REQUIRED:
                cases.append(Case(f"{w}=deleted", w if path in REQUIRED else "ok", data=put(base(relay), path, delete=True)))
            # the same values through the environment (a sample, so the env path sees every kind)
            for i, v in enumerate(rng.sample(bad, min(len(bad), 6))):
                literal = env_literal(v)
                if re.search(r"[\x00-\x1f\x7f]", literal):
                    continue
                env = {env_var(path): literal}
                cases.append(Case(f"env {w}=bad{i}", w, data=base(relay), env=env, contains=f"(set by {env_var(path)})"))
            for i, v in enumerate(good[:1]):
                cases.append(Case(f"env {w}=good{i}", "ok", data=base(relay), env={env_var(path): env_literal(v)}))
    # sections and top level
    for path in [("chain",), ("keeper",), ("swap",), ("protocols",)]:
        cases.append(Case(f"{where(path)}=deleted", where(path), data=put(base(), path, delete=True)))
        for i, v in enumerate([5, "x", [1], INF, KEY]):
            cases.append(Case(f"{where(path)}=bad{i}", where(path), data=put(base(), path, v)))
    for i, v in enumerate([5, [], "x", {}]):
        cases.append(Case(f"protocols[0]=bad{i}", "protocols" if v == [] else "protocols[0]",
                          data=put(base(), ("protocols", 0), v)))
    cases.append(Case("relay=empty", "relay.urls", data=put(base(), ("relay",), {})))
    # unknown keys in every table, some with key-shaped or odd names
    names = ["max_fee_gwe", "rpcurl", KEY_HEX, "ünï", "a b", "x\ny", "Chain_ID"]
    for table, _ in table_specs() + [((), {})]:
        for name in rng.sample(names, 3):
            data = base(table[:1] == ("relay",))
            put(data, table + (name,), 1)
            shown = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) and name != KEY_HEX else None
            prefix = where(table + (shown,)) if shown else (where(table) + "." if table else "")
            cases.append(Case(f"unknown {where(table) or 'root'}.{name!r}", prefix, data=data, contains="unknown key"))
    # valid on purpose: an int where a float is expected, a BOM, a relay section, optional keys added
    cases.append(Case("int for float", "ok", data=put(base(), ("chain", "poll_interval_s"), 2)))
    cases.append(Case("relay section", "ok", data=base(True)))
    cases.append(Case("utf-8 BOM", "ok", raw=b"\xef\xbb\xbf" + DEVNET_CONFIG.read_bytes()))
    # keystore and password_file only as a pair
    cases.append(Case("keystore alone", "keeper.password_file", data=put(base(), ("keeper", "keystore"), "k.json")))
    cases.append(Case("password_file alone", "keeper.password_file", data=put(base(), ("keeper", "password_file"), "pw")))
    cases.append(Case("keystore pair", "ok", data=put(put(base(), ("keeper", "keystore"), "k.json"), ("keeper", "password_file"), "pw")))
    # cross-key checks
    cases.append(Case("priority above max fee", "keeper.priority_fee_gwei", data=put(base(), ("keeper", "priority_fee_gwei"), 500)))
    a = IDX["aave_v3"]
    cases.append(Case("gas estimate above limit", f"protocols[{a}].gas_estimate",
                      data=put(base(), ("protocols", a, "gas_limit"), 21_000)))
    cases.append(Case("duplicate protocol name", "protocols",
                      data=put(base(), ("protocols", 1, "name"), BASE["protocols"][0]["name"]), contains="used twice"))
    # not UTF-8: a byte that can never start or continue a character, between two ASCII bytes
    blob = DEVNET_CONFIG.read_bytes()
    spots = [i for i in range(1, len(blob)) if blob[i - 1] < 0x80 and blob[i] < 0x80]
    for n, off in enumerate(sorted(rng.sample(spots, 12))):
        b = rng.choice([0xFF, 0xFE, 0xC0, 0xC1, 0xF5, 0x80])
        cases.append(Case(f"not utf-8 #{n}", "<file>", raw=blob[:off] + bytes([b]) + blob[off:],
                          contains=f"not UTF-8 text (byte 0x{b:02x} at offset {off})"))
    cases.append(Case("utf-16 file", "<file>", raw=DEVNET_CONFIG.read_text().encode("utf-16"), contains="not UTF-8 text"))
    for n, text in enumerate(["[chain\nrpc_url=1", "a = = 1", "x = " + "1" * 5000, "x = " + "[" * 5000 + "]" * 5000,
                              "[chain]\nchain_id = " + "[" * 100_000 + "]" * 100_000, "x = " + "{a=" * 3000 + "1" + "}" * 3000,
                              "[chain]\n[chain]\n", "k = 'unterminated"]):
        cases.append(Case(f"invalid toml #{n}", "<file>", raw=text.encode(), contains="invalid TOML"))
    cases += env_shape_cases()
    return cases


def _get(data: dict, table: tuple) -> dict:
    node: Any = data
    for p in table:
        node = node[p]
    return node


def env_shape_cases() -> list[Case]:
    """Overrides of the wrong shape: (variable, value, what the line must start with)."""
    m, n, hidden = IDX["maker"], len(BASE["protocols"]), "<64 hex digits hidden>"
    same = None  # the line starts with the variable's own name
    table = [
        ("KEEPER___", "1", same), ("KEEPER____", "1", same), ("KEEPER_CHAIN__", "1", same),
        ("KEEPER___RPC_URL", "x", same), ("KEEPER_CHAIN____RPC_URL", "x", same),
        ("KEEPER_CHAIN__RPC_URL__X", "1", same), ("KEEPER_CHAIN__POLL_INTERVAL_S__A__B", "1", same),
        (f"KEEPER_PROTOCOLS__{n}__NAME", "x", same), ("KEEPER_PROTOCOLS__99999999__NAME", "x", same),
        ("KEEPER_PROTOCOLS__X__KIND", "aave_v3", same), ("KEEPER_PROTOCOLS__-1__NAME", "x", same),
        ("KEEPER_PROTOCOLS__²__NAME", "x", "'KEEPER_PROTOCOLS__²__NAME'"),
        (f"KEEPER_PROTOCOLS__{m}__ILKS__5__NAME", "x", same), (f"KEEPER_PROTOCOLS__{m}__ILKS__A__NAME", "x", same),
        ("KEEPER_SWAP__FEE_TIERS__9", "500", same),
        ("KEEPER_CHAIN__CHAIN_ID", "1\n2", same), ("KEEPER_KEEPER__ADDRESS", f"{ADDRESS_OK}\x00", same),
        ("KEEPER_CHAIN__RPC_URL", f"http://{KEY_HEX}\t", same), ("KEEPER_RPC_URL", "http://h:1\r", same),
        ("KEEPER_CHAIN_RPC_URL", "http://h:1", same), ("KEEPER_KEEPER_MIN_PROFIT_USD", "5", same),
        (f"KEEPER_{KEY_HEX.upper()}__X", "1", hidden), (f"KEEPER_KEEPER__{KEY_HEX.upper()}", "1", f"keeper.{hidden}"),
        ("KEEPER_NOPE__X", "1", "nope"), ("KEEPER_KEEPER__PRIVATE_KEY_ENV", KEY, "keeper.private_key_env"),
        ("KEEPER_KEEPER__PRIVATE_KEY_ENV", KEY_HEX, "keeper.private_key_env"),
        ("KEEPER_PROTOCOLS__0", "x", "protocols[0]"), ("KEEPER_PROTOCOLS__0__KIND", '["aave_v3"]', "protocols[0].kind"),
        ("KEEPER_PROTOCOLS__0__ROUTES", "flash", "protocols[0].routes"),
        ("KEEPER_RPC_URL", f"http://{KEY}:8545", "chain.rpc_url"), ("KEEPER_RPC_URL", "", "chain.rpc_url"),
        ("KEEPER_RPC_URL", "http://[::1:8545", "chain.rpc_url"),
        ("KEEPER_CHAIN__CHAIN_ID", "[" * 100_000 + "]" * 100_000, "chain.chain_id"),
        ("KEEPER_CHAIN__CHAIN_ID", "[" * 300 + "]" * 300, "chain.chain_id"),
    ]
    cases = [Case(f"env shape #{i} {name[:40]!r}", name if expect is same else expect, data=base(), env={name: value})
             for i, (name, value, expect) in enumerate(table)]
    both = {"KEEPER_RPC_URL": "http://a:1", "KEEPER_CHAIN__RPC_URLS": '["http://b:1"]'}
    cases.append(Case("env KEEPER_RPC_URL with rpc_urls", "KEEPER_RPC_URL", data=base(), env=both))
    for name in ("KEEPER_PRIVATE_KEY", "KEEPER_RELAY_AUTH_KEY", "KEEPER_LOG_LEVEL", "KEEPER_KILL_SWITCH", "KEEPER_PROTOCOLS",
                 "OTHER__X"):
        cases.append(Case(f"env unrelated {name}", "ok", data=base(), env={name: KEY}))
    cases.append(Case("env swap list element", "ok", data=base(), env={"KEEPER_SWAP__FEE_TIERS__0": "100"}))
    cases.append(Case("env new relay section", "ok", data=base(), env={"KEEPER_RELAY__URLS": '["https://r.example"]'}))
    cases.append(Case("env address", "ok", data=base(), env={"KEEPER_KEEPER__ADDRESS": ADDRESS_OK.lower()}))
    cases.append(Case("env rpc_url replaces rpc_urls", "ok", data=put(base(), ("chain", "rpc_urls"), ["http://[::1:8545"]),
                      env={"KEEPER_RPC_URL": "http://10.0.0.1:8545"}))
    return cases


# -- writing TOML ---------------------------------------------------------------------
def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, Decimal):
        if v.is_nan():
            return "nan"
        if v.is_infinite():
            return "-inf" if v < 0 else "inf"
        s = str(v)
        return s if any(c in s for c in ".eE") else s + ".0"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(data: dict) -> str:
    lines = [f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in data.items()
             if not isinstance(v, dict) and not (k == "protocols" and isinstance(v, list) and v and all(isinstance(p, dict) for p in v))]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"[{json.dumps(k, ensure_ascii=False)}]")
            lines += [f"{json.dumps(kk, ensure_ascii=False)} = {toml_value(vv)}" for kk, vv in v.items()]
    if isinstance(data.get("protocols"), list) and data["protocols"] and all(isinstance(p, dict) for p in data["protocols"]):
        for p in data["protocols"]:
            lines.append("[[protocols]]")
            lines += [f"{json.dumps(kk, ensure_ascii=False)} = {toml_value(vv)}" for kk, vv in p.items()]
    return "\n".join(lines) + "\n"


def subst(v: Any, tmp: Path) -> Any:
    if isinstance(v, str):
        return v.replace(TMP, str(tmp))
    if isinstance(v, list):
        return [subst(x, tmp) for x in v]
    if isinstance(v, dict):
        return {k: subst(x, tmp) for k, x in v.items()}
    return v


def materialise(case: Case, tmp: Path) -> tuple[Path, dict[str, str]]:
    (tmp / "file").write_text("a regular file")
    p = tmp / "fuzz.toml"
    if case.raw is not None:
        p.write_bytes(case.raw)
    else:
        p.write_text(to_toml(subst(case.data, tmp)), encoding="utf-8")
    return p, {k: subst(v, tmp) for k, v in case.env.items()}


CASES = build_cases()


# -- checks ---------------------------------------------------------------------------
def assert_no_key_material(text: str) -> None:
    for run in re.findall(r"(?i)(?:0x)?[0-9a-f]{24,}", text):
        digits = run[2:] if run.lower().startswith("0x") else run
        assert len(digits) == 40, f"key-shaped hex run {run!r} in {text!r}"
    low = text.lower()
    for i in range(len(KEY_HEX) - 16 + 1):
        assert KEY_HEX[i:i + 16] not in low, f"part of the key echoed in {text!r}"


def check(case: Case, p: Path, env: dict[str, str]) -> str | None:
    """Load the case; assert what it must do; return the error line (None if valid)."""
    try:
        cfg = load_config(p, environ=env)
    except ConfigError as e:
        msg = str(e)
        assert case.expect != "ok", f"{case.id}: expected a valid config, got: {msg}"
        assert "\n" not in msg and "\r" not in msg and msg.strip() == msg, f"{case.id}: not one line: {msg!r}"
        prefix = str(p) if case.expect == "<file>" else case.expect
        assert msg.startswith(prefix), f"{case.id}: expected to start with {prefix!r}: {msg}"
        rest = msg[len(prefix):]
        assert case.expect in ("<file>", "") or rest[:1] in (":", "[", ".") or prefix.endswith("."), f"{case.id}: {msg}"
        assert re.match(r"^[^\s:][^:]*: \S", msg), f"{case.id}: not 'where: what': {msg}"
        assert case.contains in msg, f"{case.id}: {case.contains!r} not in {msg}"
        assert_no_key_material(msg)
        return msg
    assert case.expect == "ok", f"{case.id}: silently accepted; expected an error at {case.expect!r}"
    assert isinstance(cfg, Config)
    return None


def test_there_are_enough_cases():
    kinds = {"env": sum(bool(c.env) for c in CASES), "file": sum(not c.env for c in CASES),
             "valid": sum(c.expect == "ok" for c in CASES), "not utf-8": sum("utf" in c.id for c in CASES)}
    assert len(CASES) >= 200 and kinds["env"] >= 100 and kinds["valid"] >= 50 and kinds["not utf-8"] >= 10, kinds
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fuzzed_config_is_valid_or_one_clear_line(case, tmp_path):
    p, env = materialise(case, tmp_path)
    check(case, p, env)


CLI_CASES = random.Random(SEED + 1).sample([c for c in CASES if c.expect != "ok"], 24)


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_fuzzed_config_through_the_cli(case, tmp_path, capsys, monkeypatch):
    from keeper.cli import main

    p, env = materialise(case, tmp_path)
    msg = check(case, p, env)  # the same line load_config gives
    for name in [n for n in __import__("os").environ if n.startswith("KEEPER_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["run", "--config", str(p), "--dry-run", "--once"])
    out, err = capsys.readouterr()
    assert code == 2, (case.id, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {msg}", (case.id, err)
    assert "Traceback" not in out + err
    assert_no_key_material(out + err)
