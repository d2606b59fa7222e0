"""Plain data passed between the stages. On-chain amounts are integers in raw units."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Head:
    number: int
    timestamp: int
    base_fee_wei: int
    hash: str
    gas_used: int = 0
    gas_limit: int = 0
    seen_at: float = 0.0  # time.monotonic() when the keeper read it: stage latencies count from here

    @property
    def next_base_fee_wei(self) -> int:
        """The base fee of the next block by EIP-1559 (elasticity 2, change denominator 8),
        exactly as the chain computes it; this block's base fee when gas figures are unknown."""
        target = self.gas_limit // 2
        if not target or self.gas_used == target:
            return self.base_fee_wei
        if self.gas_used > target:
            return self.base_fee_wei + max(self.base_fee_wei * (self.gas_used - target) // target // 8, 1)
        return self.base_fee_wei - self.base_fee_wei * (target - self.gas_used) // target // 8


@dataclass(frozen=True, slots=True)
class Approval:
    token: str
    spender: str
    amount: int  # token base units


@dataclass(frozen=True, slots=True)
class TxPlan:
    """A call the keeper would make: built by an adapter, sent only by an executor."""

    to: str
    data: bytes
    gas_limit: int  # upper bound for this call
    value: int = 0
    approvals: tuple[Approval, ...] = ()  # ERC20 allowances the live executor makes sure of first
    prerequisites: tuple["TxPlan", ...] = ()  # one-time set-up calls (e.g. vat.hope) sent first, once
    description: str = ""
    sender: str | None = None  # simulated as sent by this address (someone else's pending transaction)


@dataclass(frozen=True, slots=True)
class Opportunity:
    """One way to earn from one account, valued in USD with 8 decimals (usd_e8)."""

    protocol: str  # the adapter's configured name
    kind: str  # the protocol kind, e.g. "aave_v3"
    account: str
    block: int
    gross_profit_usd_e8: int  # what the action pays after protocol fee and swap cost, before gas
    gas_units: int  # expected gas (refined by simulation)
    plan: TxPlan
    spend: tuple[tuple[str, int], ...] = ()  # (token, base units) taken from inventory
    detail: Any = None  # protocol-specific sizing (e.g. AaveLiquidation)
    risk_e18: int = 0  # ties broken by the larger risk (e.g. lower health factor)
    # the swaps the plan executes (keeper.pricing.book.Route), in order: applied to the shared
    # pool book so the opportunities ranked after this one are priced after its market impact
    routes: tuple[Any, ...] = ()
    # the pending transaction (keeper.oracles.PendingTx) this action must land right behind, in
    # the same block: an oracle update that makes the account liquidatable. None: any block
    behind: Any = None

    @property
    def key(self) -> str:
        """At most one action per protocol and account is in flight at a time."""
        return f"{self.protocol}:{self.account.lower()}"


@dataclass(frozen=True, slots=True)
class Priced:
    """An opportunity after gas: what the ranking acts on."""

    opp: Opportunity
    gas_cost_usd_e8: int
    net_profit_usd_e8: int


@dataclass(slots=True)
class Outcome:
    """What happened to one opportunity once the executor handled it."""

    opp: Opportunity
    status: str  # confirmed | failed | skipped | dry_run
    reason: str = ""
    tx_hash: str | None = None
    gas_used: int = 0
    gas_cost_wei: int = 0
    expected_profit_usd_e8: int = 0
    realized: dict[str, Any] = field(default_factory=dict)  # protocol-reported amounts
    simulated: dict[str, int] = field(default_factory=dict)  # token -> simulated change of the keeper's balance


@dataclass(frozen=True, slots=True)
class ChainLiquidation:
    """A liquidation (bark, take, perps liquidation) that happened on chain in a watched
    protocol, whoever did it: what the keeper classifies as ours, raced, filtered or unseen."""

    protocol: str  # the adapter's configured name
    kind: str  # liquidation | bark | take | ...
    account: str  # as the adapter names it (borrower, urn, auction key, perps account)
    liquidator: str  # who did it ("" when the log does not say)
    block: int
    tx_hash: str
    log_index: int
    detail: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)  # amounts (raw units)
    value_usd_e8: int | None = None  # what it paid the liquidator, when known
