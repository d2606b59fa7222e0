"""Move devnet oracle prices: the SettableAggregator behind each Aave oracle source."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from .deploy import DEPLOYER, Deployment
from .jsonrpc import JsonRpc, encode_call


def get_price(url: str, deployment: Deployment, symbol: str) -> int:
    """Current aggregator answer (USD, 8 decimals)."""
    with JsonRpc(url) as rpc:
        (answer,) = rpc.view(_aggregator(deployment, symbol), "latestAnswer()", [], ["int256"])
        return answer


def set_price(url: str, deployment: Deployment, symbol: str, answer_8dec: int) -> int:
    """Set the aggregator answer (USD, 8 decimals) from account 0; returns the block number."""
    if not isinstance(answer_8dec, int) or isinstance(answer_8dec, bool):
        raise TypeError(f"answer_8dec must be an int (USD with 8 decimals), got {answer_8dec!r}")
    if answer_8dec <= 0:
        raise ValueError(f"price must be positive, got {answer_8dec}")
    agg = _aggregator(deployment, symbol)
    with JsonRpc(url) as rpc:
        r = rpc.send(
            {"from": DEPLOYER, "to": agg, "data": encode_call("setAnswer(int256)", answer_8dec), "gas": hex(100_000)},
            what=f"setAnswer {symbol}",
        )
        return int(r["blockNumber"], 16)


def shock(url: str, deployment: Deployment, symbol: str, pct: Decimal | float | int | str) -> tuple[int, int]:
    """Move `symbol`'s price by `pct` percent (e.g. -12): new = old * (100 + pct) / 100,
    exact rational arithmetic, rounded down. Returns (old, new) answers (USD, 8 decimals)."""
    frac = Fraction(str(pct)) if isinstance(pct, float) else Fraction(pct)
    if frac <= -100:
        raise ValueError(f"shock of {pct}% would make the price non-positive")
    old = get_price(url, deployment, symbol)
    new = int(old * (100 + frac) // 100)
    set_price(url, deployment, symbol, new)
    return old, new


def _aggregator(deployment: Deployment, symbol: str) -> str:
    try:
        return deployment.aggregators[symbol]
    except KeyError:
        raise KeyError(f"no aggregator for {symbol!r}; known: {sorted(deployment.aggregators)}") from None
