"""The keeper's own contracts, one per enabled protocol that needs one: what to deploy, with
which constructor arguments (read from the chain where the config names only an entry point),
and the config key that names it afterwards.

- aave_v3: contracts/FlashLiquidator.sol, FlashLiquidator(pool, swap.router), where pool is
  the addresses provider's getPool(); config key `flash_liquidator`. The deployer owns it.
- morpho_blue: contracts/morpho/MorphoLiquidator.sol, MorphoLiquidator(morpho, swap.router,
  owner); config key `liquidator`.
- maker: contracts/dss/TakeCallee.sol, TakeCallee(vat, dai_join, swap.router), where vat is
  the Dog's vat() and dai_join the entry's (else the daiJoin() of its current take_callee);
  config key `take_callee`. The deployer owns it.

Used by `keeper deploy-liquidator` (signed with the keeper's key, keeper/deploy_liquidator.py)
and `keeper fork --deploy-liquidator` (sent from an impersonated owner on the fork). `call` is
a synchronous eth_call: (to, data) -> return bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from eth_abi import encode as abi_encode

from . import abi
from .errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
KINDS = {  # kind -> (source under contracts/, contract, config key, what it is for)
    "aave_v3": ("FlashLiquidator.sol", "FlashLiquidator", "flash_liquidator", "flash-loan liquidations"),
    "morpho_blue": ("morpho/MorphoLiquidator.sol", "MorphoLiquidator", "liquidator", "callback liquidations"),
    "maker": ("dss/TakeCallee.sol", "TakeCallee", "take_callee", "flash-takes"),
}
F_GET_POOL = abi.load("AavePoolAddressesProvider").fn("getPool")
F_VAT = abi.Function("vat", [], ["address"])
F_DAI_JOIN = abi.Function("daiJoin", [], ["address"])

Call = Callable[[str, bytes], bytes]


@dataclass(frozen=True)
class Target:
    index: int  # in [[protocols]]
    name: str
    kind: str
    contract: str
    source: Path
    key: str  # the config key that names the deployed contract
    types: tuple[str, ...]
    args: tuple[Any, ...]

    def code(self, bytecode: str) -> str:
        return "0x" + bytecode.removeprefix("0x") + abi_encode(list(self.types), list(self.args)).hex()

    def config_line(self, address: str) -> str:
        return f'{self.key} = "{address}"'


def _address(call: Call, to: str, f: abi.Function, where: str, what: str) -> str:
    try:
        out = call(to, f.encode())
    except Exception as e:  # noqa: BLE001 - any node error: one line naming the entry
        raise ConfigError(f"{where}: cannot read {what} from {to} ({e})") from None
    if len(out) != 32 or not int.from_bytes(out, "big"):
        raise ConfigError(f"{where}: {to} gave no {what} (is it the right contract on this chain?)")
    return abi.to_checksum(out[12:32])


def choose(cfg: Any, only: list[str] | None = None) -> list[tuple[int, dict[str, Any], str, str]]:
    """(index, raw entry, name, kind) of each enabled protocol of a covered kind (or the ones
    named in `only`); checked before anything is read from a chain: the names, and that the
    sources are here (an installed keeper says so at once)."""
    entries = [(i, p) for i, p in enumerate(cfg.raw.get("protocols", [])) if isinstance(p, dict)]
    names = {str(p.get("name", f"protocols[{i}]")) for i, p in entries}
    for n in only or []:
        if n not in names:
            raise ConfigError(f"--protocol: no protocol named {n!r} in the config (have: {', '.join(sorted(names))})")
    chosen: list[tuple[int, dict[str, Any], str, str]] = []
    for i, p in entries:
        name, kind = str(p.get("name", f"protocols[{i}]")), p.get("kind")
        if only and name not in only:
            continue
        if kind not in KINDS:
            if only:
                raise ConfigError(f"protocols[{i}] ({name}): kind {kind!r} has no contract of the keeper's to deploy "
                                  f"(covered: {', '.join(KINDS)})")
            continue
        if p.get("enabled", True) or only:  # a disabled entry only when named
            chosen.append((i, p, name, kind))
    if not chosen:
        raise ConfigError(f"protocols: no enabled protocol of a kind the keeper deploys a contract for ({', '.join(KINDS)})")
    for _i, _p, _n, kind in chosen:
        source = REPO / "contracts" / KINDS[kind][0]
        if not source.is_file():  # an installed wheel (pip install, the Docker image) has no contracts/
            raise ConfigError(f"needs a source checkout (contracts/{KINDS[kind][0]} and solc from ./dev setup), "
                              "not found beside this installed keeper; run it from the repository")
    if cfg.swap.router is None:
        raise ConfigError("swap.router: required to deploy the keeper's contracts (the Uniswap V3 SwapRouter they sell through)")
    return chosen


def targets(cfg: Any, call: Call, owner: str, only: list[str] | None = None) -> list[Target]:
    """One Target per protocol choose() picks, its constructor arguments read where needed."""
    out: list[Target] = []
    for i, p, name, kind in choose(cfg, only):
        where = f"protocols[{i}] ({name})"
        if kind == "aave_v3":
            pool = _address(call, str(p["pool_addresses_provider"]), F_GET_POOL, where, "getPool()")
            types, args = ("address", "address"), (pool, cfg.swap.router)
        elif kind == "morpho_blue":
            types, args = ("address", "address", "address"), (str(p["morpho"]), cfg.swap.router, owner)
        else:
            join = str(p["dai_join"]) if p.get("dai_join") else None
            if join is None and p.get("take_callee"):  # a new callee on the DaiJoin of the configured one
                join = _address(call, str(p["take_callee"]), F_DAI_JOIN, where, "daiJoin()")
            if join is None:
                raise ConfigError(f"{where}.dai_join: required to deploy the TakeCallee (the DaiJoin flash-takes repay through)")
            vat = _address(call, str(p["dog"]), F_VAT, where, "vat()")
            types, args = ("address", "address", "address"), (vat, join, cfg.swap.router)
        src, contract, key, _ = KINDS[kind]
        out.append(Target(i, name, kind, contract, REPO / "contracts" / src, key, types,
                          tuple(abi.to_checksum(a) for a in args)))
    return out


def bytecode(t: Target) -> str:
    """The target's creation bytecode (compiled here; needs a source checkout and ./dev setup's solc)."""
    from .solidity import compile_files

    try:
        return compile_files([t.source])[t.contract]["bytecode"]
    except (RuntimeError, KeyError) as e:
        raise ConfigError(f"{t.source.relative_to(REPO)}: cannot compile ({e}); run ./dev setup for solc") from None


def describe(t: Target, address: str, owner: str) -> str:
    return (f"{t.contract} for {t.name} ({KINDS[t.kind][3]}) deployed at {address} (owner {owner})\n"
            f"  add to its [[protocols]] entry (protocols[{t.index}]): {t.config_line(address)}")
