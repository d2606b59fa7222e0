"""Devnet extensions: further systems deployed on top of the Aave V3 + Uniswap V3 base.

Each extension is a module in keeper/devnet/ listed in EXTENSIONS that provides
    deploy_extension(url: str, dep: Deployment) -> dict
        deploys and seeds its system and returns what it wants stored in dep.extras[name]
        (addresses etc., JSON-serialisable). It must deploy from its OWN anvil account
        (see ACCOUNTS) so its addresses never depend on another extension.
and optionally
    after_shock(url: str, dep: Deployment, symbol: str) -> None
        called by prices.shock/set_price after an oracle price moved (e.g. poke a spotter).
Missing modules are skipped, so an extension can be developed on its own.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Iterator

EXTENSIONS = ("maker", "perps", "venues", "morpho", "aave32")
# anvil default-mnemonic accounts reserved per extension (index: address)
ACCOUNTS = {
    "maker": "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc",  # account 5
    "perps": "0x976EA74026E726554dB657fA54763abd0C3a0aa9",  # account 6
    "venues": "0x14dC79964da2C08b23698B3D3cc7Ca32193d9955",  # account 7
    "morpho": "0x23618e81E3f5cdF7f54C3d65f7FBc0aBf5B21E8f",  # account 8
    "aave32": "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720",  # account 9
}


def modules() -> Iterator[tuple[str, ModuleType]]:
    for name in EXTENSIONS:
        try:
            mod = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__package__}.{name}":
                continue
            raise
        yield name, mod


def deploy_all(url: str, dep) -> None:
    for name, mod in modules():
        if hasattr(mod, "deploy_extension"):
            dep.extras[name] = mod.deploy_extension(url, dep)


def after_shock(url: str, dep, symbol: str) -> None:
    for _, mod in modules():
        if hasattr(mod, "after_shock"):
            mod.after_shock(url, dep, symbol)
