"""The `[[protocols]]` section of kind "aave_v3": keys, defaults and their validation."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ...config import Section, address, boolean, decimal, integer, one_of, subset_of
from . import math as am


@dataclass(frozen=True)
class AaveV3Config:
    kind: str
    name: str
    pool_addresses_provider: str
    start_block: int
    rules: str  # "auto" (the adapter replaces it with the detected version's) or one of math.RULES
    gas_estimate: int  # the inventory route (liquidation + swap back through the keeper's contract)
    gas_limit: int
    max_price_age_s: int | None
    enabled: bool = True
    flash_liquidator: str | None = None
    flash_gas_estimate: int = 800_000
    flash_gas_limit: int = 2_000_000
    flash_min_profit_share_bps: int = 5_000
    routes: tuple[str, ...] = ("inventory", "flash")
    # "local": health computed off-chain from positions kept up to date by events (the node is
    # asked only about accounts near the threshold, and every full_check_blocks about all);
    # "chain": getUserAccountData for every account every block
    health: str = "local"
    near_health_factor_wad: int = 1_050_000_000_000_000_000  # recomputed every block, confirmed below 1.01
    full_check_blocks: int = 100
    path: str = "protocols[?]"  # where this section is in the config, for error messages


def parse_config(s: Section) -> AaveV3Config:
    from ...config import block_number, gas_fits, gas_units, label

    cfg = AaveV3Config(
        kind="aave_v3",
        name=s.get("name", label),
        pool_addresses_provider=s.get("pool_addresses_provider", address),
        start_block=s.get("start_block", block_number, 0),
        # "auto": the rule set of the Aave version the pool is (versions.py, detected at start)
        rules=s.get("rules", one_of("auto", *am.RULES), "auto"),
        gas_estimate=s.get("gas_estimate", gas_units, 650_000),
        gas_limit=s.get("gas_limit", gas_units, 2_000_000),
        max_price_age_s=s.get("max_price_age_s", integer(1, 10**8), None),
        enabled=s.get("enabled", boolean, True),
        flash_liquidator=s.get("flash_liquidator", address, None),
        flash_gas_estimate=s.get("flash_gas_estimate", gas_units, 800_000),
        flash_gas_limit=s.get("flash_gas_limit", gas_units, 2_000_000),
        # above 1 the on-chain check asks for more than the trade makes: only useful in tests
        flash_min_profit_share_bps=int(s.get("flash_min_profit_share", decimal(minimum=0, maximum=10), Decimal("0.5"))
                                       * 10_000),
        routes=s.get("routes", subset_of("inventory", "flash"), ("inventory", "flash")),
        health=s.get("health", one_of("local", "chain"), "local"),
        near_health_factor_wad=int(s.get("near_health_factor", decimal(minimum=1, maximum=10), Decimal("1.05"))
                                   * 10**18),
        full_check_blocks=s.get("full_check_blocks", integer(1, 10**6), 100),
        path=s.path,
    )
    gas_fits(s.path, cfg.gas_estimate, "gas_estimate", cfg.gas_limit, "gas_limit")
    gas_fits(s.path, cfg.flash_gas_estimate, "flash_gas_estimate", cfg.flash_gas_limit, "flash_gas_limit")
    return cfg
