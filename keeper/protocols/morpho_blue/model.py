"""What the Morpho Blue adapter keeps: markets (parameters, stored state, oracle price, rate,
the loan token's USD price), positions (borrow shares, collateral), and the sizing records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from . import math as mm


@dataclass(frozen=True, slots=True)
class OracleFeeds:
    scale: int  # SCALE_FACTOR
    base: tuple[str, ...]  # BASE_FEED_1, BASE_FEED_2 that are set (checksummed)
    quote: tuple[str, ...]

    @property
    def feeds(self) -> tuple[str, ...]:
        return self.base + self.quote

    def price(self, answers: dict[str, int]) -> int | None:
        """The oracle's price at these feed answers (keys lowercase); None when one is
        missing or negative (the oracle reverts on a negative answer)."""
        num, den = self.scale, 1
        for f in self.base:
            a = answers.get(f.lower())
            if a is None or a < 0:
                return None
            num *= a
        for f in self.quote:
            a = answers.get(f.lower())
            if a is None or a < 0:
                return None
            den *= a
        return num // den if den else None


@dataclass(slots=True)
class Market:
    id: str  # 0x + 64 hex, lowercase
    loan_token: str
    collateral_token: str
    oracle: str
    irm: str
    lltv: int
    loan_symbol: str = "?"
    collateral_symbol: str = "?"
    loan_decimals: int = 18
    collateral_decimals: int = 18
    usd_feed: str = ""  # the loan token's USD feed ("" when not known)
    # refreshed every block
    state: mm.MarketState | None = None
    price: int = 0  # oracle price (1e36 scale); 0: unavailable
    price_problem: str | None = None
    rate: int = 0  # the IRM's borrow rate for the stored state (per second, WAD)
    loan_usd_e8: int = 0  # one whole loan token in USD e8 (0: unknown)
    # the oracle as feeds (MorphoChainlinkOracle(V2) without vaults): price = SCALE_FACTOR *
    # b1 * b2 / (q1 * q2), floor; None when the oracle is not of that shape. `oracle_exact`:
    # that formula over the block's feed answers gave the oracle's own price() (checked
    # every block), so a pending feed answer can be turned into the market's next price.
    oracle_feeds: OracleFeeds | None = None
    oracle_exact: bool = False

    @property
    def params(self) -> tuple[str, str, str, str, int]:
        return (self.loan_token, self.collateral_token, self.oracle, self.irm, self.lltv)

    @property
    def label(self) -> str:
        return f"{self.collateral_symbol}/{self.loan_symbol} {self.lltv / 1e16:g}%"

    def accrued(self, ts: int) -> mm.MarketState:
        """The market as Morpho sees it in a block at `ts` (interest accrued first)."""
        assert self.state is not None
        if ts <= self.state.last_update:
            return self.state
        return mm.accrue_interest(self.state, self.rate, ts, has_irm=int(self.irm, 16) != 0).market

    def loan_usd_e8_of(self, amount: int) -> int:
        """`amount` loan token base units in USD e8 (signed)."""
        sign = 1 if amount >= 0 else -1
        return sign * (abs(amount) * self.loan_usd_e8 // 10**self.loan_decimals)


@dataclass(slots=True)
class Position:
    borrow_shares: int = 0
    collateral: int = 0


@dataclass(frozen=True, slots=True)
class Candidate:
    """A liquidatable position as priced for one block (what resize() sizes again)."""

    market: Market
    borrower: str
    borrow_shares: int
    collateral: int
    state: mm.MarketState  # accrued to the time the action is priced for
    price: int
    health_factor_wad: int
    max_seize: int  # the largest seizedAssets the contract accepts
    underwater: bool  # seizing all the collateral leaves bad debt


@dataclass(frozen=True, slots=True)
class MorphoLiquidation:
    """One sized liquidation: what Morpho takes and gives (its Liquidate event), the swap back
    and what the keeper receives."""

    market_id: str
    market_label: str
    borrower: str
    loan_token: str
    collateral_token: str
    loan_symbol: str
    collateral_symbol: str
    mode: str  # "seized_assets" | "repaid_shares" (which of the two is passed)
    seized_assets_arg: int
    repaid_shares_arg: int
    seized_assets: int
    repaid_shares: int
    repaid_assets: int
    bad_debt_shares: int
    bad_debt_assets: int
    swap_out: int  # loan token the collateral sells for
    profit: int  # loan token base units the keeper receives: swap_out - repaid_assets
    min_profit: int
    loan_usd_e8: int  # the price the profit was valued at (USD e8 per whole loan token)
    loan_decimals: int
    health_factor_wad: int
    incentive_factor_wad: int
    swap_route: str
    route: str = "callback"
    extra: dict[str, Any] = field(default_factory=dict)

    def log_fields(self) -> dict[str, Any]:
        return {"market": self.market_label, "mode": self.mode, "seized": self.seized_assets,
                "repaid_assets": self.repaid_assets, "bad_debt_assets": self.bad_debt_assets,
                "swap": self.swap_route, "health_factor": self.health_factor_wad / 1e18}
