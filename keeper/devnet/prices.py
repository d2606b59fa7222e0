"""Move devnet oracle prices: the SettableAggregator behind each Aave oracle source."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from .deploy import DEPLOYER, Deployment, sqrt_price_x96
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
    from . import extensions

    extensions.after_shock(url, deployment, symbol)
    return int(r["blockNumber"], 16)


def shock(url: str, deployment: Deployment, symbol: str, pct: Decimal | float | int | str,
          move_pools: bool = True) -> tuple[int, int]:
    """Move `symbol`'s price by `pct` percent (e.g. -12): new = old * (100 + pct) / 100,
    exact rational arithmetic, rounded down. Returns (old, new) answers (USD, 8 decimals).

    With move_pools (the default) the market follows the oracle: every Uniswap V3 pool
    holding `symbol` is arbitraged to the new oracle price, as it would be on mainnet.
    Without it the pools keep the old price (a pure oracle move)."""
    frac = Fraction(str(pct)) if isinstance(pct, float) else Fraction(pct)
    if frac <= -100:
        raise ValueError(f"shock of {pct}% would make the price non-positive")
    old = get_price(url, deployment, symbol)
    new = int(old * (100 + frac) // 100)
    set_price(url, deployment, symbol, new)
    if move_pools:
        move_pools_to_oracle(url, deployment, symbol)
    return old, new


def move_pools_to_oracle(url: str, deployment: Deployment, symbol: str) -> None:
    """Swap in every pool that holds `symbol` until its price equals the oracle prices' ratio.

    The deployer mints what it sells and swaps through the real SwapRouter with
    sqrtPriceLimitX96 = the target, so the pool stops exactly there."""
    token = deployment.tokens[symbol].lower()
    deadline = 2**255
    with JsonRpc(url) as rpc:
        for pool in deployment.uniswap_pools:
            if token not in (pool.token0.lower(), pool.token1.lower()):
                continue
            s0, s1 = deployment.symbol_of(pool.token0), deployment.symbol_of(pool.token1)
            target = sqrt_price_x96(get_price(url, deployment, s0), deployment.decimals[s0],
                                    get_price(url, deployment, s1), deployment.decimals[s1])
            (current,) = rpc.view(pool.address, "slot0()", [], ["uint160"])
            if current == target:
                continue
            zero_for_one = target < current
            tin, tout = (pool.token0, pool.token1) if zero_for_one else (pool.token1, pool.token0)
            amount = 10 ** (deployment.decimals[deployment.symbol_of(tin)] + 12)
            rpc.send({"from": DEPLOYER, "to": tin, "data": encode_call("mint(address,uint256)", DEPLOYER, amount)},
                     what="mint for arbitrage")
            (allowed,) = rpc.view(tin, "allowance(address,address)", [DEPLOYER, deployment.uniswap_router], ["uint256"])
            if allowed < amount:
                if allowed:  # USDT-like tokens refuse a non-zero -> non-zero approve
                    rpc.send({"from": DEPLOYER, "to": tin,
                              "data": encode_call("approve(address,uint256)", deployment.uniswap_router, 0)},
                             what="reset router allowance")
                rpc.send({"from": DEPLOYER, "to": tin,
                          "data": encode_call("approve(address,uint256)", deployment.uniswap_router, amount)},
                         what="approve router")
            rpc.send({"from": DEPLOYER, "to": deployment.uniswap_router, "gas": hex(1_000_000),
                      "data": encode_call("exactInputSingle((address,address,uint24,address,uint256,uint256,uint256,uint160))",
                                          (tin, tout, pool.fee, DEPLOYER, deadline, amount, 0, target))},
                     what=f"arbitrage {s0}/{s1} {pool.fee}")


def _aggregator(deployment: Deployment, symbol: str) -> str:
    try:
        return deployment.aggregators[symbol]
    except KeyError:
        raise KeyError(f"no aggregator for {symbol!r}; known: {sorted(deployment.aggregators)}") from None
