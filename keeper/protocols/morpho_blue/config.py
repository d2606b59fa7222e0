"""The `[[protocols]]` section of kind "morpho_blue": keys, defaults and their validation."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ...config import Section, address, boolean, decimal, fail, integer


@dataclass(frozen=True)
class MorphoBlueConfig:
    kind: str
    name: str
    morpho: str  # the Morpho Blue singleton
    start_block: int
    # the keeper's MorphoLiquidator (contracts/morpho/MorphoLiquidator.sol, owned by the keeper):
    # without it the adapter only watches (no route)
    liquidator: str | None = None
    # token -> Chainlink-style USD feed: prices the loan token for the ranking (USD e8) and WETH
    # for gas. A loan token without an entry is priced by its market oracle's QUOTE_FEED_1()
    # when the oracle has one (morpho-blue-oracles' ChainlinkOracle and the devnet's oracles do)
    usd_feeds: tuple[tuple[str, str], ...] = ()
    markets: tuple[str, ...] = ()  # market ids to watch (empty: every market created)
    gas_estimate: int = 450_000
    gas_limit: int = 1_500_000
    min_profit_share_bps: int = 5_000  # on-chain minProfit: this share of the expected profit
    full_check_blocks: int = 100  # every position read again from the node this often
    enabled: bool = True
    path: str = "protocols[?]"


def _feeds(where: str, v: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, dict):
        fail(where, "must be a table of token address = USD feed address")
    return tuple((address(f"{where}.{k}", k), address(f"{where}.{k}", f)) for k, f in v.items())


def _ids(where: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list):
        fail(where, "must be a list of market ids (0x + 64 hex digits)")
    out = []
    for i, x in enumerate(v):
        if not isinstance(x, str) or len(x) != 66 or not x.startswith("0x"):
            fail(f"{where}[{i}]", "must be a market id (0x + 64 hex digits)")
        try:
            int(x, 16)
        except ValueError:
            fail(f"{where}[{i}]", "must be a market id (0x + 64 hex digits)")
        out.append(x.lower())
    return tuple(out)


def parse_config(s: Section) -> MorphoBlueConfig:
    from ...config import block_number, gas_fits, gas_units, label

    cfg = MorphoBlueConfig(
        kind="morpho_blue",
        name=s.get("name", label),
        morpho=s.get("morpho", address),
        start_block=s.get("start_block", block_number, 0),
        liquidator=s.get("liquidator", address, None),
        usd_feeds=s.get("usd_feeds", _feeds, ()),
        markets=s.get("markets", _ids, ()),
        gas_estimate=s.get("gas_estimate", gas_units, 450_000),
        gas_limit=s.get("gas_limit", gas_units, 1_500_000),
        # above 1 the on-chain check asks for more than the trade makes: only useful in tests
        min_profit_share_bps=int(s.get("min_profit_share", decimal(minimum=0, maximum=10), Decimal("0.5")) * 10_000),
        full_check_blocks=s.get("full_check_blocks", integer(1, 10**6), 100),
        enabled=s.get("enabled", boolean, True),
        path=s.path,
    )
    gas_fits(s.path, cfg.gas_estimate, "gas_estimate", cfg.gas_limit, "gas_limit")
    return cfg
