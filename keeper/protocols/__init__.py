"""Protocol adapters: one per protocol kind, each knowing how to find accounts, value them
and encode the call. Adapters never send.

How to add one: create `keeper/protocols/<kind>/` with a frozen config dataclass, a
`parse_config(section)` that validates its keys, and an adapter class with
`start()`, `sync(head)`, `opportunities(ctx)`, `positions()` and `parse_outcome(receipt)`;
then register it in KINDS below.
"""

from __future__ import annotations

from typing import Any

from ..config import show
from ..errors import ConfigError


def _kinds() -> dict[str, Any]:
    from .aave_v3 import adapter as aave_v3
    from .perps import adapter as synthetix_perps
    from .maker import adapter as maker
    from .morpho_blue import adapter as morpho_blue

    return {"aave_v3": aave_v3, "synthetix_perps": synthetix_perps, "maker": maker, "morpho_blue": morpho_blue}


def parse_protocol(section) -> Any:
    kinds = _kinds()
    known = ", ".join(sorted(kinds))

    def kind_of(where: str, v: Any) -> str:
        if not isinstance(v, str):
            raise ConfigError(f"{where}: must be a string, one of {known}; got {show(v)}")
        if v not in kinds:
            raise ConfigError(f"{where}: unknown protocol kind {show(v)} (known: {known})")
        return v

    cfg = kinds[section.get("kind", kind_of)].parse_config(section)
    section.done()
    return cfg


def build_adapter(cfg: Any, **deps: Any) -> Any:
    return _kinds()[cfg.kind].Adapter(cfg, **deps)
