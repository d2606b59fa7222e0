"""Configuration: a TOML file plus KEEPER_... environment overrides, validated at start-up.

Every problem raises ConfigError naming the key and what is wrong; the CLI prints that one
line and exits non-zero. Secrets never live in the file: the signing key comes from an
environment variable or an encrypted keystore with a password file, and is loaded only
when the live executor is built (never in dry-run).

Environment overrides: KEEPER_<SECTION>__<KEY>=value, e.g. KEEPER_CHAIN__RPC_URL=http://...
or KEEPER_KEEPER__MIN_PROFIT_USD=5; protocols by index: KEEPER_PROTOCOLS__0__START_BLOCK=100.
KEEPER_RPC_URL is a shortcut for chain.rpc_url. Values are read as TOML literals when they
parse as such (numbers, booleans, arrays), otherwise as strings.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError

USD_E8 = 10**8  # USD amounts are integers with 8 decimals, like Aave's base currency
_ADDR = re.compile(r"^0x[0-9a-fA-F]{40}$")
DEFAULT_MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"


def usd_to_e8(value: Decimal) -> int:
    return int((value * USD_E8).to_integral_value())


def gwei_to_wei(value: Decimal) -> int:
    return int((value * 10**9).to_integral_value())


class Section:
    """Reads one table and remembers which keys were used, to reject unknown ones."""

    def __init__(self, data: Any, path: str):
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: must be a table, got {type(data).__name__}")
        self.data = data
        self.path = path
        self.used: set[str] = set()

    def _where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

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
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise ConfigError(f"{self._where(unknown[0])}: unknown key (check the spelling)")


# -- field kinds ----------------------------------------------------------------------
def string(where: str, v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where}: must be a non-empty string")
    return v


def url(where: str, v: Any) -> str:
    s = string(where, v)
    if not re.match(r"^https?://[^\s/]+", s):
        raise ConfigError(f"{where}: must be an http(s):// URL, got {s[:40]!r}")
    return s


def address(where: str, v: Any) -> str:
    if not isinstance(v, str) or not _ADDR.match(v):
        raise ConfigError(f"{where}: must be a 0x-prefixed 20-byte hex address, got {str(v)[:50]!r}")
    from eth_utils import to_checksum_address

    return to_checksum_address(v)


def integer(minimum: int | None = None) -> Callable[[str, Any], int]:
    def parse(where: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}: must be an integer, got {v!r}")
        if minimum is not None and v < minimum:
            raise ConfigError(f"{where}: must be ≥ {minimum}, got {v}")
        return v

    return parse


def decimal(minimum: Decimal | None = None, positive: bool = False) -> Callable[[str, Any], Decimal]:
    def parse(where: str, v: Any) -> Decimal:
        if isinstance(v, bool) or not isinstance(v, (int, Decimal, float, str)):
            raise ConfigError(f"{where}: must be a number, got {v!r}")
        try:
            d = Decimal(str(v))
        except InvalidOperation:
            raise ConfigError(f"{where}: must be a number, got {v!r}") from None
        if not d.is_finite():
            raise ConfigError(f"{where}: must be a finite number")
        if positive and d <= 0:
            raise ConfigError(f"{where}: must be > 0, got {v}")
        if minimum is not None and d < minimum:
            raise ConfigError(f"{where}: must be ≥ {minimum}, got {v}")
        return d

    return parse


def subset_of(*choices: str) -> Callable[[str, Any], tuple[str, ...]]:
    """A non-empty list drawn from `choices` (e.g. execution routes)."""

    def parse(where: str, v: Any) -> tuple[str, ...]:
        if not isinstance(v, list) or not v or any(x not in choices for x in v):
            raise ConfigError(f"{where}: must be a non-empty list of {' and/or '.join(repr(c) for c in choices)}")
        return tuple(v)

    return parse


def boolean(where: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{where}: must be true or false, got {v!r}")
    return v


def one_of(*choices: str) -> Callable[[str, Any], str]:
    def parse(where: str, v: Any) -> str:
        if v not in choices:
            raise ConfigError(f"{where}: must be one of {', '.join(repr(c) for c in choices)}, got {v!r}")
        return v

    return parse


def int_list(allowed: set[int] | None = None) -> Callable[[str, Any], tuple[int, ...]]:
    def parse(where: str, v: Any) -> tuple[int, ...]:
        if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            raise ConfigError(f"{where}: must be a non-empty list of integers")
        if allowed is not None:
            bad = [x for x in v if x not in allowed]
            if bad:
                raise ConfigError(f"{where}: {bad[0]} is not one of {sorted(allowed)}")
        return tuple(v)

    return parse


# -- the configuration ----------------------------------------------------------------
@dataclass(frozen=True)
class ChainConfig:
    rpc_url: str
    chain_id: int | None
    multicall3: str
    poll_interval_s: float
    log_chunk_blocks: int
    rpc_timeout_s: float
    native_usd_feed: str | None


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


@dataclass(frozen=True)
class RelayConfig:
    urls: tuple[str, ...]
    auth_key_env: str
    target_blocks: int
    fallback_public: bool


@dataclass(frozen=True)
class SwapConfig:
    kind: str
    quoter_v2: str | None
    fee_tiers: tuple[int, ...]
    router: str | None = None  # Uniswap V3 SwapRouter: used by the flash liquidator contract


@dataclass(frozen=True)
class Config:
    chain: ChainConfig
    keeper: KeeperConfig
    swap: SwapConfig
    protocols: tuple[Any, ...]  # each protocol's own frozen config dataclass
    relay: RelayConfig | None = None
    source: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}", parse_float=Decimal)["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Apply KEEPER_SECTION__KEY overrides onto the parsed TOML (returns the same dict)."""
    if "KEEPER_RPC_URL" in environ:
        data.setdefault("chain", {})["rpc_url"] = environ["KEEPER_RPC_URL"]
    for name, raw in environ.items():
        if not name.startswith("KEEPER_") or "__" not in name:
            continue
        parts = [p.lower() for p in name[len("KEEPER_"):].split("__")]
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{name}: no {'.'.join(parts[:i])}[{part}] to override")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"{name}: {'.'.join(parts[:i + 1])} is not a table")
        if isinstance(node, list):
            raise ConfigError(f"{name}: cannot override a list element's whole value")
        node[parts[-1]] = _parse_env_value(raw)
    return data


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config file: {e.strerror}") from None
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    data = apply_env(data, environ)
    return parse_config(data, source=str(p))


def parse_config(data: dict[str, Any], source: str = "<config>") -> Config:
    from .protocols import parse_protocol

    root = Section(data, "")
    ch = root.sub("chain")
    chain = ChainConfig(
        rpc_url=ch.get("rpc_url", url),
        chain_id=ch.get("chain_id", integer(1), None),
        multicall3=ch.get("multicall3", address, DEFAULT_MULTICALL3),
        poll_interval_s=float(ch.get("poll_interval_s", decimal(positive=True), Decimal("1"))),
        log_chunk_blocks=ch.get("log_chunk_blocks", integer(1), 2000),
        rpc_timeout_s=float(ch.get("rpc_timeout_s", decimal(positive=True), Decimal("10"))),
        native_usd_feed=ch.get("native_usd_feed", address, None),
    )
    ch.done()

    kp = root.sub("keeper")
    keystore = kp.get("keystore", string, None)
    password_file = kp.get("password_file", string, None)
    if keystore and not password_file:
        raise ConfigError("keeper.password_file: required when keeper.keystore is set")
    max_fee = kp.get("max_fee_gwei", decimal(positive=True), Decimal("100"))
    prio = kp.get("priority_fee_gwei", decimal(minimum=Decimal(0)), Decimal("1"))
    if prio > max_fee:
        raise ConfigError(f"keeper.priority_fee_gwei: {prio} is above keeper.max_fee_gwei {max_fee}")
    keeper = KeeperConfig(
        address=kp.get("address", address, None),
        private_key_env=kp.get("private_key_env", string, "KEEPER_PRIVATE_KEY"),
        keystore=Path(keystore) if keystore else None,
        password_file=Path(password_file) if password_file else None,
        min_profit_usd_e8=usd_to_e8(kp.get("min_profit_usd", decimal(minimum=Decimal(0)), Decimal("1"))),
        max_fee_wei=gwei_to_wei(max_fee),
        priority_fee_wei=gwei_to_wei(prio),
        receipt_timeout_s=float(kp.get("receipt_timeout_s", decimal(positive=True), Decimal("5"))),
        priority_fee_profit_share_bps=int(kp.get("priority_fee_profit_share", decimal(minimum=Decimal(0)), Decimal(0))
                                          * 10_000),
        replace_after_blocks=kp.get("replace_after_blocks", integer(1), 3),
        confirmations=kp.get("confirmations", integer(1), 1),
        journal=_opt_path(kp.get("journal", string, None)),
        max_gas_spend_wei_per_hour=_opt_eth(kp.get("max_gas_spend_eth_per_hour", decimal(positive=True), None)),
        max_gas_spend_wei_per_day=_opt_eth(kp.get("max_gas_spend_eth_per_day", decimal(positive=True), None)),
        max_consecutive_failures=kp.get("max_consecutive_failures", integer(0), 5),
        kill_switch_file=_opt_path(kp.get("kill_switch_file", string, None)),
        profit_tolerance_bps=int(kp.get("profit_tolerance_pct", decimal(minimum=Decimal(0)), Decimal(1)) * 100),
    )
    if keeper.priority_fee_profit_share_bps > 10_000:
        raise ConfigError("keeper.priority_fee_profit_share: must be between 0 and 1")
    kp.done()

    sw = root.sub("swap")
    swap = SwapConfig(
        kind=sw.get("kind", one_of("uniswap_v3")),
        quoter_v2=sw.get("quoter_v2", address),
        fee_tiers=sw.get("fee_tiers", int_list({100, 500, 3000, 10000}), (500, 3000, 10000)),
        router=sw.get("router", address, None),
    )
    sw.done()

    relay = None
    if "relay" in data:
        rl = root.sub("relay")
        urls = rl.get("urls", lambda w, v: v if isinstance(v, list) and v else fail(w, "must be a non-empty list of URLs"))
        relay = RelayConfig(
            urls=tuple(url(f"relay.urls[{i}]", u) for i, u in enumerate(urls)),
            auth_key_env=rl.get("auth_key_env", string, "KEEPER_RELAY_AUTH_KEY"),
            target_blocks=rl.get("target_blocks", integer(1), 3),
            fallback_public=rl.get("fallback_public", boolean, False),
        )
        rl.done()

    root.used.add("protocols")
    plist = data.get("protocols")
    if not isinstance(plist, list) or not plist:
        raise ConfigError("protocols: add at least one [[protocols]] table")
    protocols = tuple(parse_protocol(Section(p, f"protocols[{i}]")) for i, p in enumerate(plist))
    names = [p.name for p in protocols]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"protocols: name {sorted(dup)[0]!r} is used twice")
    root.done()
    return Config(chain=chain, keeper=keeper, swap=swap, protocols=protocols, relay=relay, source=source, raw=data)


def fail(where: str, msg: str):
    raise ConfigError(f"{where}: {msg}")


def _opt_path(v: str | None) -> Path | None:
    return Path(v) if v else None


def _opt_eth(v: Decimal | None) -> int | None:
    return None if v is None else int((v * 10**18).to_integral_value())


# -- secrets --------------------------------------------------------------------------
def load_relay_signer(cfg: RelayConfig, environ: Mapping[str, str] | None = None):
    """The relay auth key (signs X-Flashbots-Signature; holds no funds). Never echoed."""
    from eth_account import Account

    environ = os.environ if environ is None else environ
    raw = environ.get(cfg.auth_key_env, "").strip()
    if not raw:
        raise ConfigError(f"relay.auth_key_env: environment variable {cfg.auth_key_env} is not set")
    try:
        return Account.from_key(raw)
    except Exception:
        raise ConfigError(f"{cfg.auth_key_env}: not a valid private key (expected 32 bytes of hex)") from None


def load_signer(cfg: KeeperConfig, environ: Mapping[str, str] | None = None):
    """Load the signing account (live mode only). Never echoes the key."""
    from eth_account import Account

    environ = os.environ if environ is None else environ
    if cfg.keystore is not None:
        try:
            keystore = cfg.keystore.read_text()
        except OSError as e:
            raise ConfigError(f"keeper.keystore: cannot read {cfg.keystore}: {e.strerror}") from None
        try:
            password = cfg.password_file.read_text().rstrip("\n") if cfg.password_file else ""
        except OSError as e:
            raise ConfigError(f"keeper.password_file: cannot read {cfg.password_file}: {e.strerror}") from None
        try:
            key = Account.decrypt(keystore, password)
        except ValueError:
            raise ConfigError("keeper.keystore: cannot decrypt (wrong password or not a keystore file)") from None
        acct = Account.from_key(key)
    else:
        raw = environ.get(cfg.private_key_env, "").strip()
        if not raw:
            raise ConfigError(
                f"keeper.private_key_env: environment variable {cfg.private_key_env} is not set; "
                "live mode needs a signing key (or use --dry-run to watch without one)"
            )
        try:
            acct = Account.from_key(raw)
        except Exception:
            raise ConfigError(f"{cfg.private_key_env}: not a valid private key (expected 32 bytes of hex)") from None
    if cfg.address is not None and acct.address != cfg.address:
        raise ConfigError(f"keeper.address: {cfg.address} does not match the signing key's address {acct.address}")
    return acct
