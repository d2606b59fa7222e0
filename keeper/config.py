"""Configuration: a TOML file plus KEEPER_... environment overrides, validated at start-up.

Every problem raises ConfigError naming the key and what is wrong; the CLI prints that one
line and exits non-zero. Secrets never live in the file: the signing key comes from an
environment variable or an encrypted keystore with a password file, and is loaded only
when the live executor is built (never in dry-run).

Environment overrides: KEEPER_<SECTION>__<KEY>=value, e.g. KEEPER_CHAIN__RPC_URL=http://...
or KEEPER_KEEPER__MIN_PROFIT_USD=5; protocols by index: KEEPER_PROTOCOLS__0__START_BLOCK=100.
KEEPER_RPC_URL replaces the whole endpoint list (chain.rpc_url set, chain.rpc_urls dropped).
Values are read as TOML literals when they parse as such (numbers, booleans, arrays),
otherwise (and always for 0x...) as strings. An override of the wrong shape names the variable.

Error lines never echo a secret: every user value goes through show() (redact.safe_value: URLs
cut to scheme://host:port, runs of 24+ hex digits other than 40-digit addresses hidden), key
names through key_name(), and load_config passes the final line through hide_key_hex again.
Numbers must be finite and are bounded where a larger value can only be a typo or a unit slip.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Mapping, NoReturn
from urllib.parse import urlsplit

from .errors import ConfigError
from .nesting import parse_bounded
from .redact import hide_key_hex, safe_value, register_secret

USD_E8 = 10**8  # USD amounts are integers with 8 decimals, like Aave's base currency
_ADDR = re.compile(r"0x[0-9a-fA-F]{40}")
DEFAULT_MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"


def usd_to_e8(value: Decimal) -> int:
    return int((value * USD_E8).to_integral_value())


def gwei_to_wei(value: Decimal) -> int:
    return int((value * 10**9).to_integral_value())


def fail(where: str, msg: str) -> NoReturn:
    raise ConfigError(f"{where}: {msg}")


def show(v: Any, limit: int = 60) -> str:
    """A user value for an error line: numbers as written (long ones in e-notation), anything
    else through safe_value (URLs redacted, key-shaped hex hidden, bounded, one line)."""
    if isinstance(v, str) and len(v) > 20 and re.fullmatch(r"[0-9]+", v):
        return f"a {len(v)}-digit number"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if v.bit_length() <= 64 else f"{Decimal(v):.3e}"
    if isinstance(v, Decimal):
        s = str(v)
        return s if len(s) <= 20 else f"{v:.3e}"
    return safe_value(v, limit)


def show_path(p: Path | str) -> str:
    return show(str(p), limit=300)


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_CTRL = re.compile(r"[\x00-\x1f\x7f]")


def key_name(k: Any) -> str:
    """A key as it may appear in an error line (keys are user text too: hex hidden, quoted if odd)."""
    k = str(k)
    return hide_key_hex(k) if _BARE_KEY.fullmatch(k) else safe_value(k)


def _looks_like_key(s: str) -> bool:
    return hide_key_hex(s) != s


class Section:
    """Reads one table and remembers which keys were used, to reject unknown ones."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: must be a table, got {show(data)}")
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.path}.{key_name(key)}" if self.path else key_name(key)

    def get(self, key: str, kind: Callable[[str, Any], Any], default: Any = ..., ) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self._where(key)}: missing (required)")
            return default
        return kind(self._where(key), self.data[key])

    def sub(self, key: str, required: bool = True) -> "Section":
        self.used.add(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"{self._where(key)}: missing section [{self._where(key)}]")
            return Section({}, self._where(key))
        return Section(self.data[key], self._where(key))

    def done(self) -> None:
        unknown = sorted(str(k) for k in set(self.data) - self.used)
        if unknown:
            hint = difflib.get_close_matches(unknown[0], sorted(self.used), n=1)
            raise ConfigError(f"{self._where(unknown[0])}: unknown key "
                              f"({f'did you mean {hint[0]}?' if hint else 'check the spelling'})")


# -- field kinds: each is (where, value) -> parsed value, or ConfigError naming `where` ---
def string(where: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        fail(where, f"must be a non-empty string, got {show(v)}")
    if _CTRL.search(v):
        fail(where, f"must not contain control characters (newline, tab, NUL), got {show(v)}")
    return v


def label(where: str, v: Any) -> str:
    """A name that shows up in log lines: never something that looks like a key."""
    s = string(where, v)
    if _looks_like_key(s):
        fail(where, "looks like a private key (a long hex string); use a plain label")
    return s


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_name(where: str, v: Any) -> str:
    """The NAME of an environment variable (the value is read later and never echoed)."""
    s = string(where, v)
    if _looks_like_key(s):
        fail(where, "looks like a private key; put the key in an environment variable and give its name here")
    if not _ENV_NAME.fullmatch(s):
        fail(where, f"must be an environment variable name (letters, digits, _), got {show(s)}")
    return s


def path(where: str, v: Any) -> Path:
    return Path(string(where, v))


def journal_path(where: str, v: Any) -> Path:
    """The send journal: a file the keeper can create; checked again when it is opened."""
    p = path(where, v)
    try:
        if p.is_dir():
            fail(where, f"{show_path(p)} is a directory; give the journal file's path")
        parent = p.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            fail(where, f"{show_path(p)}: parent {show_path(parent)} is not a directory")
    except OSError as e:
        fail(where, f"cannot check {show_path(p)}: {e.strerror or type(e).__name__}")
    return p


def url(where: str, v: Any) -> str:
    def bad(why: str) -> NoReturn:
        fail(where, f"must be an http(s):// URL ({why}), got {show(v)}")

    if not isinstance(v, str) or not v:
        bad("a non-empty string")
    if any(c.isspace() for c in v) or _CTRL.search(v):
        bad("no spaces or control characters")
    try:
        parts = urlsplit(v)
    except ValueError:
        bad("broken [IPv6] host")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        bad("it must start with http:// or https://")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        bad("the port must be a number from 1 to 65535")
    host = parts.hostname or ""
    if not host:
        bad("no host")
    if "[" not in parts.netloc and not re.fullmatch(r"[A-Za-z0-9._-]+", host):
        bad("the host may hold only letters, digits, '.', '-' and '_'; use the punycode form of a non-ASCII name")
    if _looks_like_key(host):
        bad("the host looks like a private key")
    return v


def non_empty_list(where: str, v: Any, what: str) -> list:
    if not isinstance(v, list) or not v:
        fail(where, f"must be a non-empty list of {what}, got {show(v)}")
    return v


def _no_repeats(where: str, items: list) -> None:
    """(items are validated first: strings or integers)"""
    seen: set = set()
    for x in items:
        if x in seen:
            fail(where, f"lists {show(x)} twice")
        seen.add(x)


def url_list(where: str, v: Any) -> tuple[str, ...]:
    out = tuple(url(f"{where}[{i}]", u) for i, u in enumerate(non_empty_list(where, v, "http(s):// URLs")))
    _no_repeats(where, list(out))
    return out


def ws_url(where: str, v: Any) -> str:
    """A ws:// or wss:// URL (new heads over a websocket)."""
    text = string(where, v)
    parts = urlsplit(text) if not any(c.isspace() for c in text) else None
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.netloc:
        fail(where, f"must be a ws:// or wss:// URL, got {show(v)}")
    return text


def listen_address(where: str, v: Any) -> tuple[str, int]:
    """host:port to listen on (an IPv4 address or a host name, port 0..65535)."""
    text = string(where, v)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535 or any(c.isspace() for c in host):
        fail(where, f"must be host:port, e.g. \"127.0.0.1:9108\", got {show(v)}")
    return host, int(port)


def _balances(where: str, v: Any) -> dict[str, Decimal]:
    if not isinstance(v, dict):
        fail(where, f"must be a table of token symbol = whole tokens, e.g. {{ WETH = 1 }}, got {show(v)}")
    amount = decimal(minimum=0, maximum=10**15)
    return {str(k): amount(f"{where}.{k}", x) for k, x in v.items()}


def address_list(where: str, v: Any) -> tuple[str, ...]:
    out = tuple(address(f"{where}[{i}]", a) for i, a in enumerate(non_empty_list(where, v, "addresses")))
    _no_repeats(where, [a.lower() for a in out])
    return out


def address(where: str, v: Any) -> str:
    if not isinstance(v, str) or not _ADDR.fullmatch(v):
        pasted = isinstance(v, str) and re.search(r"[0-9a-fA-F]{60,}", v)
        hint = " (that looks like a private key: keys never go in the config)" if pasted else ""
        fail(where, f"must be a 0x-prefixed 20-byte hex address, got {show(v)}{hint}")
    from eth_utils import to_checksum_address

    checksummed = to_checksum_address(v)
    body = v[2:]
    if body != body.lower() and body != body.upper() and v != checksummed:
        fail(where, f"{v} has a wrong EIP-55 checksum (mixed case): check it for a typo, or write it all lowercase")
    return checksummed


def _within(where: str, n: int | Decimal, v: Any, minimum: Any, maximum: Any) -> None:
    """The bounds check of integer() and decimal(): `n` is the number, `v` as the user wrote it."""
    if minimum is not None and n < minimum:
        fail(where, f"must be ≥ {minimum}, got {show(v)}")
    if maximum is not None and n > maximum:
        fail(where, f"must be ≤ {maximum}, got {show(v)}")


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str, Any], int]:
    def parse(where: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            fail(where, f"must be an integer, got {show(v)}")
        _within(where, v, v, minimum, maximum)
        return v

    return parse


def decimal(minimum: Decimal | int | None = None, positive: bool = False,
            maximum: Decimal | int | None = None) -> Callable[[str, Any], Decimal]:
    """A finite number (TOML integer or float, read exactly). Strings are not numbers."""

    def parse(where: str, v: Any) -> Decimal:
        if isinstance(v, bool) or not isinstance(v, (int, Decimal, float)):
            fail(where, f"must be a number, got {show(v)}")
        d = Decimal(repr(v)) if isinstance(v, float) else Decimal(v)
        if not d.is_finite():
            fail(where, f"must be a finite number, got {show(v)}")
        if positive and d <= 0:
            fail(where, f"must be > 0, got {show(v)}")
        _within(where, d, v, minimum, maximum)
        return d

    return parse


def seconds(maximum: int, minimum: int | None = None) -> Callable[[str, Any], float]:
    """A duration in seconds: > 0 (or ≥ minimum), finite and at most `maximum`."""
    parse = decimal(minimum=minimum, positive=minimum is None, maximum=maximum)
    return lambda where, v: float(parse(where, v))


def subset_of(*choices: str) -> Callable[[str, Any], tuple[str, ...]]:
    """A non-empty list drawn from `choices` (e.g. execution routes), each at most once."""
    what = " and/or ".join(repr(c) for c in choices)

    def parse(where: str, v: Any) -> tuple[str, ...]:
        for x in non_empty_list(where, v, what):
            if not isinstance(x, str) or x not in choices:
                fail(where, f"must be a non-empty list of {what}, got {show(x)} in it")
        _no_repeats(where, v)
        return tuple(v)

    return parse


def boolean(where: str, v: Any) -> bool:
    if not isinstance(v, bool):
        fail(where, f"must be true or false, got {show(v)}")
    return v


def one_of(*choices: str) -> Callable[[str, Any], str]:
    def parse(where: str, v: Any) -> str:
        if not isinstance(v, str) or v not in choices:
            fail(where, f"must be one of {', '.join(repr(c) for c in choices)}, got {show(v)}")
        return v

    return parse


def int_list(allowed: set[int] | None = None, minimum: int | None = None,
             maximum: int | None = None) -> Callable[[str, Any], tuple[int, ...]]:
    item = integer(minimum, maximum)

    def parse(where: str, v: Any) -> tuple[int, ...]:
        for x in non_empty_list(where, v, "integers"):
            if isinstance(x, bool) or not isinstance(x, int):
                fail(where, f"must be a non-empty list of integers, got {show(x)} in it")
            item(where, x)
            if allowed is not None and x not in allowed:
                fail(where, f"{show(x)} is not one of {sorted(allowed)}")
        _no_repeats(where, v)
        return tuple(v)

    return parse


# shared bounds: anything above them is a typo or a unit mistake, not a setting
MAX_BLOCK = 10**12  # block numbers
MAX_GAS = 100_000_000  # gas per transaction
block_number = integer(0, MAX_BLOCK)
gas_units = integer(21_000, MAX_GAS)


def gas_fits(where: str, estimate: int, estimate_key: str, limit: int, limit_key: str) -> None:
    if estimate > limit:
        fail(f"{where}.{estimate_key}", f"{estimate} is above {where}.{limit_key} {limit}")


# -- the configuration ----------------------------------------------------------------
@dataclass(frozen=True)
class ChainConfig:
    rpc_url: str  # the first of rpc_urls
    chain_id: int | None
    multicall3: str
    poll_interval_s: float
    log_chunk_blocks: int
    rpc_timeout_s: float
    native_usd_feed: str | None
    rpc_urls: tuple[str, ...] = ()  # every endpoint, rpc_url first; requests go to the healthiest
    max_head_lag_blocks: int = 3  # an endpoint whose head is further behind the best is taken out
    rpc_probe_interval_s: float = 5.0  # how often an endpoint taken out is tried again
    block_time_s: int = 12  # seconds between blocks: what is priced for the next block (auction clocks)
    ws_url: str | None = None  # new heads pushed over a websocket (polling when it is down)
    # request size (keeper/rpc.py, where the defaults are justified): JSON-RPC calls per HTTP
    # batch, bytes per HTTP body, HTTP requests in flight at once for one batch; lowered (and
    # remembered) when a node refuses a request for its size
    max_batch_calls: int = 50
    max_request_bytes: int = 1_048_576
    max_concurrent_requests: int = 4
    # oracle updates seen while pending (keeper/sources/pending.py) are acted on in their own
    # block; a node without pending filters is logged once and the keeper reacts per block
    watch_pending: bool = True
    pending_poll_interval_s: float = 0.05


@dataclass(frozen=True)
class KeeperConfig:
    address: str | None
    private_key_env: str
    keystore: Path | None
    password_file: Path | None
    min_profit_usd_e8: int
    max_fee_wei: int
    priority_fee_wei: int
    receipt_timeout_s: float
    priority_fee_profit_share_bps: int = 0
    replace_after_blocks: int = 3
    confirmations: int = 1
    journal: Path | None = None
    max_gas_spend_wei_per_hour: int | None = None
    max_gas_spend_wei_per_day: int | None = None
    max_consecutive_failures: int = 5
    kill_switch_file: Path | None = None
    profit_tolerance_bps: int = 100
    pause_cooldown_s: float = 300.0  # a pause after repeated failures lifts itself after this
    heartbeat_blocks: int = 10  # a heartbeat log line every N blocks (0: none)
    # "profit": each liquidation sized for the largest net profit, the keeper's own market impact
    # within a block priced in; "max": the largest size the rules allow, quoted alone (a baseline)
    sizing: str = "profit"
    store_path: Path | None = None  # SQLite record of everything seen and done (None: beside the journal)
    store_retention_days: float = 90.0  # opportunities seen and decisions older than this are pruned (0: never)


@dataclass(frozen=True)
class RelayConfig:
    urls: tuple[str, ...]
    auth_key_env: str
    target_blocks: int
    fallback_public: bool
    timeout_s: float = 2.0  # per relay request; relays are contacted concurrently


@dataclass(frozen=True)
class SwapConfig:
    kind: str
    quoter_v2: str | None
    fee_tiers: tuple[int, ...]
    router: str | None = None  # Uniswap V3 SwapRouter: used by the flash liquidator contract
    v3_factory: str | None = None  # None: read from the QuoterV2's factory()
    uniswap_v2_factory: str | None = None  # a second venue: Uniswap V2 pairs (None: V3 only)
    connectors: tuple[str, ...] = ()  # tokens a two-hop route may pass through (() : the QuoterV2's WETH9)


@dataclass(frozen=True)
class HttpConfig:
    """The operator's port: /healthz, /metrics, the status page."""

    host: str
    port: int
    token_env: str | None = None  # environment variable holding the bearer token (None: no token)


@dataclass(frozen=True)
class AlertsConfig:
    webhook_url_env: str  # environment variable holding the webhook URL (it is a secret)
    style: str = "json"  # json | slack | discord
    min_interval_s: float = 300.0  # the same alert is not sent again within this
    min_balances: tuple[tuple[str, Decimal], ...] = ()  # (token symbol, whole tokens): alert below
    failed_sends: int = 3  # alert after this many failed sends in a row
    raced_min_usd_e8: int = 100 * 10**8  # alert when a competitor takes a liquidation worth more
    head_stalled_s: float = 120.0  # alert when the head has not moved for this long


@dataclass(frozen=True)
class Config:
    chain: ChainConfig
    keeper: KeeperConfig
    swap: SwapConfig
    protocols: tuple[Any, ...]  # each protocol's own frozen config dataclass
    relay: RelayConfig | None = None
    http: HttpConfig | None = None
    alerts: AlertsConfig | None = None
    source: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


def _parse_env_value(raw: str) -> Any:
    """A TOML literal when the value parses as one (numbers, booleans, arrays, inline tables,
    quoted strings), else the text itself. The value is one line (checked before). 0x... stays
    text: it is an address (or a pasted key), never meant as a TOML hex integer."""
    if raw.strip()[:2].lower() == "0x":
        return raw
    try:
        return _toml(f"v = {raw}")["v"]
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):
        return raw


# tomllib recurses up to ~4 frames per character of nesting; a value nested deeper than the
# recursion limit py_ecc sets would also overflow the C stack later, in repr(). Long texts are
# parsed with the limit lowered to _NEST_LIMIT: a RecursionError instead (keeper/nesting.py).
_NEST_LIMIT = 2000


def _toml(text: str) -> dict[str, Any]:
    return parse_bounded(_toml_loads, text, _NEST_LIMIT, frames_per_char=4)


def _toml_loads(text: str) -> dict[str, Any]:
    return tomllib.loads(text, parse_float=Decimal)


SECTIONS = ("chain", "keeper", "swap", "relay", "http", "alerts", "protocols")
_INDEX = re.compile(r"[0-9]{1,6}")
_ENV_SHAPE = "overrides look like KEEPER_<SECTION>__<KEY> or KEEPER_PROTOCOLS__<index>__<KEY>"


def _env_value(name: str, shown: str, environ: Mapping[str, str]) -> str:
    raw = environ[name]
    if _CTRL.search(raw):
        fail(shown, f"the value contains a control character (newline, tab or NUL): {show(raw)}")
    return raw


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Apply KEEPER_SECTION__KEY overrides onto the parsed TOML (returns the same dict)."""
    _apply_env(data, environ)
    return data


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Apply the overrides; return {key path: variable name} for every value they set.

    KEEPER_RPC_URL replaces the whole endpoint list (chain.rpc_url set, chain.rpc_urls dropped)."""
    origin: dict[str, str] = {}
    for name in sorted(n for n in environ if n.startswith("KEEPER_") and "__" in n):
        shown = key_name(name)
        raw = _env_value(name, shown, environ)
        parts = name[len("KEEPER_"):].split("__")
        if not all(parts):
            fail(shown, f"an empty part in the variable name; {_ENV_SHAPE}")
        value = _parse_env_value(raw)
        node: Any = data
        trail = ""
        for i, part in enumerate(p.lower() for p in parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not _INDEX.fullmatch(part):
                    fail(shown, f"{trail} is a list: expected an index after it, got {key_name(part)}; {_ENV_SHAPE}")
                if int(part) >= len(node):
                    fail(shown, f"no {trail}[{int(part)}] to override ({trail} has {len(node)} "
                                f"entr{'y' if len(node) == 1 else 'ies'})")
                trail, key = f"{trail}[{int(part)}]", int(part)
            elif isinstance(node, dict):
                trail, key = (f"{trail}.{key_name(part)}" if trail else key_name(part)), part
                if not last:
                    node.setdefault(part, {})
            else:
                fail(shown, f"{trail} is a single value, not a table or list: nothing under it to override")
            if last:
                node[key] = value
            else:
                node = node[key]
        origin[trail] = shown
    if "KEEPER_RPC_URL" in environ:
        raw = _env_value("KEEPER_RPC_URL", "KEEPER_RPC_URL", environ)
        clash = [v for k, v in origin.items() if k in ("chain", "chain.rpc_url", "chain.rpc_urls")
                 or k.startswith("chain.rpc_urls[")]
        if clash:
            fail("KEEPER_RPC_URL", f"replaces the whole endpoint list, so {clash[0]} must not be set with it")
        chain = data.setdefault("chain", {})
        if not isinstance(chain, dict):
            fail("KEEPER_RPC_URL", "chain is not a table in the config file")
        chain["rpc_url"] = raw
        chain.pop("rpc_urls", None)
        origin["chain.rpc_url"] = "KEEPER_RPC_URL"
    if "KEEPER_WS_URL" in environ:
        chain = data.setdefault("chain", {})
        if not isinstance(chain, dict):
            fail("KEEPER_WS_URL", "chain is not a table in the config file")
        chain["ws_url"] = _env_value("KEEPER_WS_URL", "KEEPER_WS_URL", environ)
        origin["chain.ws_url"] = "KEEPER_WS_URL"
    _near_misses(data, environ)
    return origin


def _near_misses(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    """KEEPER_CHAIN_RPC_URL (one underscore) would be silently ignored: say so instead."""
    own = {"KEEPER_RPC_URL", "KEEPER_PRIVATE_KEY", "KEEPER_RELAY_AUTH_KEY", "KEEPER_LOG_LEVEL"}
    for section, key in (("keeper", "private_key_env"), ("relay", "auth_key_env")):
        t = data.get(section)
        if isinstance(t, dict) and isinstance(t.get(key), str):  # (validated later; may be anything here)
            own.add(t[key])
    for name in sorted(environ):
        m = re.fullmatch(r"KEEPER_(CHAIN|KEEPER|SWAP|RELAY|PROTOCOLS)_([A-Z0-9][A-Za-z0-9_]*)", name)
        if m and "__" not in name and name not in own:
            fail(key_name(name), f"not applied: an override needs two underscores after the section "
                                 f"({key_name(f'KEEPER_{m[1]}__{m[2]}')}); {_ENV_SHAPE}")


def _one_line(msg: str) -> str:
    """The last guard on every ConfigError out of load_config: one line, no key-shaped hex."""
    return hide_key_hex(_CTRL.sub(lambda m: f"\\x{ord(m[0]):02x}", msg))


def _blame(msg: str, origin: Mapping[str, str]) -> str:
    """Name the environment variable(s) behind the key an error is about."""
    where = msg.split(": ", 1)[0]
    related = lambda a, b: a == b or b.startswith((a + ".", a + "["))  # noqa: E731
    names = sorted({v for k, v in origin.items() if related(where, k) or related(k, where)})
    return f"{msg} (set by {', '.join(names[:2])})" if names else msg


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    p = Path(path)
    where = safe_value(str(p)) if _CTRL.search(str(p)) else hide_key_hex(str(p))
    try:
        blob = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: is a directory, not a config file") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot read config file: {e.strerror or type(e).__name__}") from None
    except ValueError:  # a NUL in the path
        raise ConfigError(f"{where}: not a usable file name") from None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text (byte 0x{blob[e.start]:02x} at offset {e.start})") from None
    try:
        data = _toml(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(_one_line(f"{where}: invalid TOML: {e}")) from None
    except ValueError:  # an integer of more than 4300 digits
        raise ConfigError(f"{where}: invalid TOML: a number too long to read") from None
    except RecursionError:
        raise ConfigError(f"{where}: invalid TOML: arrays or tables nested too deeply") from None
    origin: dict[str, str] = {}
    try:
        origin = _apply_env(data, environ)
        return parse_config(data, source=str(p))
    except ConfigError as e:
        raise ConfigError(_one_line(_blame(str(e), origin))) from None


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    from .protocols import parse_protocol

    root = Section(data, "")
    ch = root.sub("chain")
    single = ch.get("rpc_url", url, None)
    many = ch.get("rpc_urls", url_list, None)
    if single is None and many is None:
        raise ConfigError("chain.rpc_url: missing (required; or chain.rpc_urls, a list of endpoints)")
    rpc_urls = tuple(dict.fromkeys(([single] if single else []) + list(many or ())))
    chain = ChainConfig(
        rpc_url=rpc_urls[0],
        chain_id=ch.get("chain_id", integer(1, 4_503_599_627_370_476), None),  # EIP-2294's bound
        multicall3=ch.get("multicall3", address, DEFAULT_MULTICALL3),
        poll_interval_s=ch.get("poll_interval_s", seconds(3600), 1.0),
        log_chunk_blocks=ch.get("log_chunk_blocks", integer(1, 10_000_000), 2000),
        rpc_timeout_s=ch.get("rpc_timeout_s", seconds(600), 10.0),
        native_usd_feed=ch.get("native_usd_feed", address, None),
        rpc_urls=rpc_urls,
        max_head_lag_blocks=ch.get("max_head_lag_blocks", integer(0, 10_000), 3),
        rpc_probe_interval_s=ch.get("rpc_probe_interval_s", seconds(3600), 5.0),
        block_time_s=ch.get("block_time_s", integer(0, 3600), 12),
        ws_url=ch.get("ws_url", ws_url, None),
        max_batch_calls=ch.get("max_batch_calls", integer(1, 10_000), 50),
        max_request_bytes=ch.get("max_request_bytes", integer(4096, 256 * 1_048_576), 1_048_576),
        max_concurrent_requests=ch.get("max_concurrent_requests", integer(1, 16), 4),  # 16: the connection pool
        watch_pending=ch.get("watch_pending", boolean, True),
        pending_poll_interval_s=ch.get("pending_poll_interval_s", seconds(60), 0.05),
    )
    ch.done()

    kp = root.sub("keeper")
    keystore = kp.get("keystore", path, None)
    password_file = kp.get("password_file", path, None)
    if keystore and not password_file:
        raise ConfigError("keeper.password_file: required when keeper.keystore is set")
    if password_file and not keystore:
        raise ConfigError("keeper.password_file: only used with keeper.keystore, which is not set")
    max_fee = kp.get("max_fee_gwei", decimal(positive=True, maximum=1_000_000), Decimal("100"))
    prio = kp.get("priority_fee_gwei", decimal(minimum=0, maximum=1_000_000), Decimal("1"))
    if prio > max_fee:
        raise ConfigError(f"keeper.priority_fee_gwei: {show(prio)} is above keeper.max_fee_gwei {show(max_fee)}")
    eth_budget = decimal(positive=True, maximum=1_000_000)
    keeper = KeeperConfig(
        address=kp.get("address", address, None),
        private_key_env=kp.get("private_key_env", env_name, "KEEPER_PRIVATE_KEY"),
        keystore=keystore,
        password_file=password_file,
        min_profit_usd_e8=usd_to_e8(kp.get("min_profit_usd", decimal(minimum=0, maximum=10**12), Decimal("1"))),
        max_fee_wei=gwei_to_wei(max_fee),
        priority_fee_wei=gwei_to_wei(prio),
        receipt_timeout_s=kp.get("receipt_timeout_s", seconds(600), 5.0),
        priority_fee_profit_share_bps=int(kp.get("priority_fee_profit_share", decimal(minimum=0, maximum=1),
                                                 Decimal(0)) * 10_000),
        replace_after_blocks=kp.get("replace_after_blocks", integer(1, 10_000), 3),
        confirmations=kp.get("confirmations", integer(1, 1000), 1),
        journal=kp.get("journal", journal_path, None),
        store_path=kp.get("store_path", journal_path, None),
        store_retention_days=float(kp.get("store_retention_days", decimal(minimum=0, maximum=36_500), Decimal(90))),
        max_gas_spend_wei_per_hour=_opt_eth(kp.get("max_gas_spend_eth_per_hour", eth_budget, None)),
        max_gas_spend_wei_per_day=_opt_eth(kp.get("max_gas_spend_eth_per_day", eth_budget, None)),
        max_consecutive_failures=kp.get("max_consecutive_failures", integer(0, 1_000_000), 5),
        kill_switch_file=kp.get("kill_switch_file", path, None),
        profit_tolerance_bps=int(kp.get("profit_tolerance_pct", decimal(minimum=0, maximum=10_000), Decimal(1)) * 100),
        pause_cooldown_s=kp.get("pause_cooldown_s", seconds(7 * 86_400, minimum=0), 300.0),
        heartbeat_blocks=kp.get("heartbeat_blocks", integer(0, 1_000_000), 10),
        sizing=kp.get("sizing", one_of("profit", "max"), "profit"),
    )
    kp.done()

    sw = root.sub("swap")
    swap = SwapConfig(
        kind=sw.get("kind", one_of("uniswap_v3")),
        quoter_v2=sw.get("quoter_v2", address),
        fee_tiers=sw.get("fee_tiers", int_list({100, 500, 3000, 10000}), (500, 3000, 10000)),
        router=sw.get("router", address, None),
        v3_factory=sw.get("factory", address, None),
        uniswap_v2_factory=sw.get("uniswap_v2_factory", address, None),
        connectors=sw.get("connectors", address_list, ()),
    )
    sw.done()

    relay = None
    if "relay" in data:
        rl = root.sub("relay")
        relay = RelayConfig(
            urls=rl.get("urls", url_list),
            auth_key_env=rl.get("auth_key_env", env_name, "KEEPER_RELAY_AUTH_KEY"),
            target_blocks=rl.get("target_blocks", integer(1, 100), 3),
            fallback_public=rl.get("fallback_public", boolean, False),
            timeout_s=rl.get("timeout_s", seconds(60), 2.0),
        )
        rl.done()

    http = None
    if "http" in data:
        hs = root.sub("http")
        host, port = hs.get("listen", listen_address, ("127.0.0.1", 9108))
        http = HttpConfig(host=host, port=port, token_env=hs.get("token_env", env_name, None))
        hs.done()

    alerts = None
    if "alerts" in data:
        al = root.sub("alerts")
        balances = al.get("min_balances", _balances, {})
        alerts = AlertsConfig(
            webhook_url_env=al.get("webhook_url_env", env_name, "KEEPER_ALERT_WEBHOOK"),
            style=al.get("style", one_of("json", "slack", "discord"), "json"),
            min_interval_s=al.get("min_interval_s", seconds(7 * 86_400, minimum=0), 300.0),
            min_balances=tuple(sorted(balances.items())),
            failed_sends=al.get("failed_sends", integer(1, 1_000_000), 3),
            raced_min_usd_e8=int(al.get("raced_min_usd", decimal(minimum=0, maximum=10**12), Decimal(100)) * 10**8),
            head_stalled_s=al.get("head_stalled_s", seconds(86_400), 120.0),
        )
        al.done()

    root.used.add("protocols")
    plist = data.get("protocols")
    if not isinstance(plist, list) or not plist:
        raise ConfigError(f"protocols: add at least one [[protocols]] table"
                          f"{'' if plist is None else f', got {show(plist)}'}")
    protocols = tuple(parse_protocol(Section(p, f"protocols[{i}]")) for i, p in enumerate(plist))
    names = [p.name for p in protocols]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"protocols: name {show(sorted(dup)[0])} is used twice")
    root.done()
    return Config(chain=chain, keeper=keeper, swap=swap, protocols=protocols, relay=relay, http=http, alerts=alerts, source=source, raw=data)


def _opt_eth(v: Decimal | None) -> int | None:
    return None if v is None else int((v * 10**18).to_integral_value())


# -- secrets --------------------------------------------------------------------------
def _read_secret_file(where: str, p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except OSError as e:
        fail(where, f"cannot read {show_path(p)}: {e.strerror or type(e).__name__}")
    except UnicodeDecodeError:
        fail(where, f"{show_path(p)} is not UTF-8 text")


def load_relay_signer(cfg: RelayConfig, environ: Mapping[str, str] | None = None):
    """The relay auth key (signs X-Flashbots-Signature; holds no funds). Never echoed."""
    from eth_account import Account

    environ = os.environ if environ is None else environ
    raw = environ.get(cfg.auth_key_env, "").strip()
    if not raw:
        raise ConfigError(f"relay.auth_key_env: environment variable {key_name(cfg.auth_key_env)} is not set")
    register_secret(raw)  # scrubbed from every log line from now on, even if it is not a valid key
    try:
        return Account.from_key(raw)
    except Exception:
        raise ConfigError(f"{key_name(cfg.auth_key_env)}: not a valid private key (expected 32 bytes of hex)") from None


def load_signer(cfg: KeeperConfig, environ: Mapping[str, str] | None = None):
    """Load the signing account (live mode only). Never echoes the key."""
    from eth_account import Account

    environ = os.environ if environ is None else environ
    if cfg.keystore is not None:
        keystore = _read_secret_file("keeper.keystore", cfg.keystore)
        password = _read_secret_file("keeper.password_file", cfg.password_file).rstrip("\n") if cfg.password_file else ""
        register_secret(password)
        try:
            key = Account.decrypt(keystore, password)
        except Exception:  # ValueError, KeyError, TypeError from a file that is not a keystore
            raise ConfigError("keeper.keystore: cannot decrypt (wrong password or not a keystore file)") from None
        acct = Account.from_key(key)
    else:
        raw = environ.get(cfg.private_key_env, "").strip()
        if not raw:
            raise ConfigError(
                f"keeper.private_key_env: environment variable {key_name(cfg.private_key_env)} is not set; "
                "live mode needs a signing key (or use --dry-run to watch without one)"
            )
        try:
            register_secret(raw)  # scrubbed from every log line from now on
            acct = Account.from_key(raw)
        except Exception:
            raise ConfigError(f"{key_name(cfg.private_key_env)}: not a valid private key (expected 32 bytes of hex)") from None
    if cfg.address is not None and acct.address != cfg.address:
        raise ConfigError(f"keeper.address: {cfg.address} does not match the signing key's address {acct.address}")
    register_secret(acct.key.hex())
    return acct
