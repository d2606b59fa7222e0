"""Prometheus metrics of one keeper, on a registry of its own (several keepers may run in one
process, e.g. the tests), served by keeper.server at /metrics.

The names are fixed (dashboards are written against them):

  keeper_head_block                      gauge      the last head a cycle ran on
  keeper_head_lag_seconds                gauge      wall clock - that head's timestamp, computed at scrape time
  keeper_cycle_seconds                   histogram  one cycle, head seen -> cycle returned
  keeper_stage_seconds{stage}            histogram  head seen -> opportunity | simulated | sent | included;
                                                    pending oracle update seen -> reaction (its sends handed over)
  keeper_opportunities_total{protocol}   counter    opportunities found
  keeper_sends_total{protocol,outcome}   counter    executor outcomes (Outcome.status: confirmed | failed | skipped | dry_run)
  keeper_gas_spent_eth_total             counter    gas paid by mined sends, in ETH (native units)
  keeper_realized_profit_usd_total{protocol}
                                         GAUGE      cumulative realized profit after gas, USD; may go down
  keeper_wallet_balance{symbol}          gauge      the keeper's balances as the adapters read them (token units)
  keeper_rpc_errors_total{endpoint}      counter    failed requests per endpoint (redacted URL)
  keeper_rpc_latency_seconds{endpoint}   histogram  request latency per endpoint
  keeper_tracked_accounts{protocol}      gauge      accounts (vaults, auctions, margin accounts) tracked
  keeper_paused                          gauge      1 while sending is paused by a safety limit
  keeper_misses_total{protocol,class}    counter    liquidations on chain by class: ours | raced | filtered | unseen

keeper_realized_profit_usd_total is a Gauge although it ends in _total: a liquidation can lose
money (gas paid, collateral sold below the estimate) and a Prometheus counter must never go
down (prometheus_client refuses a negative inc, and rate()/increase() would read a drop as a
counter reset). It is a running sum that only changes by the realized amounts, so in Grafana
use `delta(keeper_realized_profit_usd_total[1d])` (not increase()) for the profit over a
window, and the raw value for the all-time total. It starts at 0 on each process start.

Floats only here: metrics are for display. Every method is cheap and never raises on a
label value (unknown stage / miss class names raise ValueError: they are programming errors).
"""

from __future__ import annotations

import time
from typing import Any, Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# from the head (or, for "reaction", the pending oracle update) being seen to each stage
STAGES = ("opportunity", "simulated", "sent", "included", "reaction")
MISS_CLASSES = ("ours", "raced", "filtered", "unseen")
CONTENT_TYPE = CONTENT_TYPE_LATEST

CYCLE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
STAGE_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0, 60.0, 120.0)
RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The keeper's metrics. Call the small methods below from the app, the executor and the
    RPC client; render() gives the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._head_ts: float | None = None
        self.head_block = Gauge("keeper_head_block", "The last head block a cycle ran on", registry=r)
        self.head_lag = Gauge("keeper_head_lag_seconds", "Wall clock minus the last head's timestamp", registry=r)
        self.head_lag.set_function(self._lag)
        self.cycle_seconds = Histogram("keeper_cycle_seconds", "Duration of one cycle", buckets=CYCLE_BUCKETS,
                                       registry=r)
        self.stage_seconds = Histogram("keeper_stage_seconds", "Seconds from the moment the head was seen to a stage",
                                       ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.opportunities = Counter("keeper_opportunities_total", "Opportunities found", ["protocol"], registry=r)
        self.sends = Counter("keeper_sends_total", "Executor outcomes", ["protocol", "outcome"], registry=r)
        self.gas_spent_eth = Counter("keeper_gas_spent_eth_total", "Gas paid by mined sends (native units)", registry=r)
        self.realized_usd = Gauge("keeper_realized_profit_usd_total",
                                  "Cumulative realized profit after gas in USD (a gauge: it may go down)",
                                  ["protocol"], registry=r)
        self.wallet_balance = Gauge("keeper_wallet_balance", "The keeper's balance per token (token units)",
                                    ["symbol"], registry=r)
        self.rpc_errors = Counter("keeper_rpc_errors_total", "Failed RPC requests per endpoint", ["endpoint"], registry=r)
        self.rpc_latency = Histogram("keeper_rpc_latency_seconds", "RPC request latency per endpoint", ["endpoint"],
                                     buckets=RPC_BUCKETS, registry=r)
        self.tracked_accounts = Gauge("keeper_tracked_accounts", "Accounts tracked per protocol", ["protocol"],
                                      registry=r)
        self.paused_gauge = Gauge("keeper_paused", "1 while sending is paused by a safety limit", registry=r)
        self.misses = Counter("keeper_misses_total", "Liquidations on chain by class", ["protocol", "class"], registry=r)
        for s in STAGES:  # every stage series exists from the start (a dashboard sees 0, not "no data")
            self.stage_seconds.labels(stage=s)

    # -- the chain ------------------------------------------------------------------------
    def head(self, number: int, timestamp: int) -> None:
        """A new head (block number, block timestamp in seconds)."""
        self.head_block.set(number)
        self._head_ts = float(timestamp)

    def _lag(self) -> float:
        return 0.0 if self._head_ts is None else max(time.time() - self._head_ts, 0.0)

    # -- timing ---------------------------------------------------------------------------
    def cycle(self, seconds: float) -> None:
        self.cycle_seconds.observe(max(seconds, 0.0))

    def stage(self, stage: str, seconds: float) -> None:
        """seconds: from the moment the head was seen (time.monotonic() then) to this stage."""
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, not {stage!r}")
        self.stage_seconds.labels(stage=stage).observe(max(seconds, 0.0))

    # -- what the keeper found and did ------------------------------------------------------
    def opportunity(self, protocol: str, n: int = 1) -> None:
        if n > 0:
            self.opportunities.labels(protocol=protocol).inc(n)

    def send(self, protocol: str, outcome: str) -> None:
        """outcome: Outcome.status (confirmed | failed | skipped | dry_run)."""
        self.sends.labels(protocol=protocol, outcome=outcome).inc()

    def gas_spent(self, wei: int) -> None:
        if wei > 0:
            self.gas_spent_eth.inc(wei / 1e18)

    def realized(self, protocol: str, usd_e8: int) -> None:
        """Realized profit after gas of one action (may be negative)."""
        self.realized_usd.labels(protocol=protocol).inc(usd_e8 / 1e8)

    def outcome(self, out: Any, realized_usd_e8: int | None = None) -> None:
        """One executor Outcome: sends_total, gas spent (mined sends), realized profit (if known)."""
        self.send(out.opp.protocol, out.status)
        if out.status in ("confirmed", "failed"):
            self.gas_spent(out.gas_cost_wei)
        if realized_usd_e8 is not None:
            self.realized(out.opp.protocol, realized_usd_e8)

    def miss(self, protocol: str, klass: str) -> None:
        if klass not in MISS_CLASSES:
            raise ValueError(f"miss class must be one of {MISS_CLASSES}, not {klass!r}")
        self.misses.labels(protocol=protocol, **{"class": klass}).inc()

    # -- state ------------------------------------------------------------------------------
    def balance(self, symbol: str, amount: float) -> None:
        self.wallet_balance.labels(symbol=symbol).set(amount)

    def tracked(self, protocol: str, n: int) -> None:
        self.tracked_accounts.labels(protocol=protocol).set(n)

    def paused(self, paused: bool) -> None:
        self.paused_gauge.set(1 if paused else 0)

    def rpc(self, endpoint: str, seconds: float, error: bool = False) -> None:
        """One request to one endpoint (its redacted URL), and whether it failed."""
        self.rpc_latency.labels(endpoint=endpoint).observe(max(seconds, 0.0))
        if error:
            self.rpc_errors.labels(endpoint=endpoint).inc()

    def sync(self, keeper: Any) -> None:
        """Gauges read from a running keeper (call after each cycle): head, tracked accounts,
        paused, wallet balances."""
        from .status import wallet_balances

        h = getattr(keeper, "head", None)
        if h is not None:
            self.head(h.number, h.timestamp)
        for name, a in getattr(keeper, "adapters", {}).items():
            self.tracked(name, len(getattr(a, "accounts", ()) or ()))
        ex = getattr(keeper, "executor", None)
        self.paused(bool(ex is not None and ex.paused))
        for sym, amount in wallet_balances(keeper).items():
            self.balance(sym, amount)

    # -- exposition -------------------------------------------------------------------------
    def render(self) -> bytes:
        return generate_latest(self.registry)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """One sample's value (tests, the status page): e.g. value("keeper_stage_seconds_count",
        {"stage": "sent"})."""
        return self.registry.get_sample_value(name, labels or {})

    def names(self) -> Iterable[str]:
        return (m.name for m in self.registry.collect())
