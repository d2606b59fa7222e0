"""Swap quotes from the Uniswap V3 QuoterV2, batched through Multicall3.

Each request is quoted at every configured fee tier in one aggregate3; the best
amountOut wins. A tier with no pool simply fails inside the multicall.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .. import abi
from ..multicall import Call, Multicall

_QUOTER = abi.load("UniswapV3QuoterV2")
_QUOTE_SINGLE = _QUOTER.fn("quoteExactInputSingle")


@dataclass(frozen=True, slots=True)
class QuoteRequest:
    token_in: str
    token_out: str
    amount_in: int  # token_in base units


@dataclass(frozen=True, slots=True)
class Quote:
    amount_out: int  # token_out base units
    fee_tier: int  # pool fee in hundredths of a bip (500 = 0.05%); 0 for a same-token "swap"
    gas_estimate: int


class UniswapV3Quoter:
    def __init__(self, multicall: Multicall, quoter_v2: str, fee_tiers: Sequence[int]):
        self.mc = multicall
        self.quoter = quoter_v2
        self.fee_tiers = tuple(fee_tiers)

    def calls(self, req: QuoteRequest) -> list[Call]:
        return [
            Call(self.quoter, _QUOTE_SINGLE.encode((req.token_in, req.token_out, req.amount_in, fee, 0)))
            for fee in self.fee_tiers
        ]

    def best(self, results: Sequence[tuple[bool, bytes]]) -> Quote | None:
        best: Quote | None = None
        for fee, (ok, data) in zip(self.fee_tiers, results):
            if not ok or len(data) < 128:
                continue
            amount_out, _sqrt_after, _ticks, gas = _QUOTE_SINGLE.decode(data)
            if best is None or amount_out > best.amount_out:
                best = Quote(amount_out=amount_out, fee_tier=fee, gas_estimate=gas)
        return best

    async def quote_many(self, reqs: Sequence[QuoteRequest], block: int | str = "latest") -> list[Quote | None]:
        """Best quote for each request (None when no configured tier can fill it)."""
        out: list[Quote | None] = [None] * len(reqs)
        calls: list[Call] = []
        index: list[int] = []
        for i, r in enumerate(reqs):
            if r.amount_in <= 0:
                continue
            if r.token_in.lower() == r.token_out.lower():
                out[i] = Quote(amount_out=r.amount_in, fee_tier=0, gas_estimate=0)
                continue
            calls.extend(self.calls(r))
            index.append(i)
        if calls:
            results = await self.mc.run(calls, block)
            n = len(self.fee_tiers)
            for k, i in enumerate(index):
                out[i] = self.best(results[k * n:(k + 1) * n])
        return out
