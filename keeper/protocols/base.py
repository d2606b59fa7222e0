"""What every protocol adapter shares: the skip record, and following event logs in chunks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Collection, Protocol

from ..errors import BadResponseError, ConfigError, RpcError
from ..progress import MIN_CHUNKS, Progress
from ..rpc import Rpc
from ..sizing import last_true
from ..types import ChainLiquidation, Head, Opportunity

if TYPE_CHECKING:
    from ..pricing.book import Book, SwapVenues


@dataclass(slots=True)
class Skip:
    """An account or auction the adapter looked at and will not act on, and why."""

    account: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


def _range_refused(e: RpcError) -> bool:
    msg = e.rpc_message.lower()
    return "range" in msg or "limit" in msg or "too many" in msg or e.code in (-32005, -32602)


async def log_chunks(rpc: Rpc, address: str | list[str], topics: list[Any], start: int, end: int,
                     chunk_blocks: int, log: Any, what: str = "events",
                     found: Callable[[], int] | None = None) -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
    """eth_getLogs from `start` to `end` in chunks, yielding (last block of the chunk, logs).

    Backfill and following use the same path: the caller records the yielded block as synced
    only after it has processed the chunk, so a failure never skips logs. When the node
    refuses a range (too many results, range limits), the chunk is halved and retried. A long
    range reports its progress (keeper/progress.py: a bar on a terminal, log lines otherwise;
    `found` counts what the caller has found so far)."""
    chunk = chunk_blocks
    progress = Progress(what, start, end, log, found, min_blocks=MIN_CHUNKS * chunk_blocks)
    try:
        while start <= end:
            stop = min(start + chunk - 1, end)
            try:
                logs = await rpc.call("eth_getLogs", [{"address": address, "fromBlock": hex(start), "toBlock": hex(stop),
                                                       "topics": topics}])
            except RpcError as e:
                if chunk > 1 and _range_refused(e):
                    chunk = max(1, chunk // 2)
                    log.info("log_chunk_reduced", chunk_blocks=chunk, reason=e.rpc_message[:80])
                    continue
                raise
            if not isinstance(logs, list):
                raise BadResponseError(f"eth_getLogs: expected a list, got {str(logs)[:80]!r}")
            yield stop, logs
            progress.update(stop)
            start = stop + 1
    finally:
        progress.finish()


async def has_code(rpc: Rpc, address: str) -> bool:
    code = await rpc.call("eth_getCode", [address, "latest"])
    return isinstance(code, str) and len(code) > 2


async def require_code(rpc: Rpc, address: str, where: str, hint: str = "") -> None:
    """A configured address must hold a contract on this chain, or start-up stops naming the key."""
    if not await has_code(rpc, address):
        raise ConfigError(f"{where}: no contract at {address} on this chain{f' ({hint})' if hint else ''}")


def breaking_price(breaks: Callable[[int], bool], now: int, broken_now: bool) -> tuple[str, int | None]:
    """Where a position breaks as one feed's answer falls (keeper risk): ("liquidatable_now",
    now), ("safe", None) when no positive answer breaks it, or ("at_risk", the highest answer at
    which `breaks` holds), found by bisection so one step above it does not break."""
    if broken_now:
        return "liquidatable_now", now
    if now <= 1 or not breaks(1):
        return "safe", None
    return "at_risk", last_true(breaks, 1, now)


def note_break(row: dict[str, Any], status: str, lp: int | None, now: int) -> bool:
    """A risk row's status, liquidation price and distance to it from `now` (in %); with no
    liquidation price (nothing breaks the position) also no loss and no bonus. True when
    there is one (the caller adds what the position looks like there)."""
    if lp is None:
        row.update(status=status, liquidation_price=None, distance_pct=None, loss_usd_e8=0, bonus_usd_e8=0)
        return False
    row.update(status=status, liquidation_price=lp, distance_pct=(lp - now) * 100 / now if now else None)
    return True


def native_price_usd_e8(adapters: Any) -> int | None:
    """The native token's USD price (e8) from the first adapter that prices it, if any."""
    for a in adapters:
        p = a.native_price_usd_e8()
        if p:
            return p
    return None


def trigger_tag(trigger: Any) -> str:
    """What names a reaction's pending trigger in the sizing records: its hash."""
    return getattr(trigger, "hash", "pending")


class Resizing:
    """Mixed into the actions of adapters whose liquidations swap: each opportunity's sizing
    record, (block, candidate) in `_candidates` under `_record_key(opp)` (plus the trigger's
    tag for a reaction), is sized again on another book (the keeper's own earlier swaps
    applied). Pure: no I/O."""

    _candidates: dict[tuple[Any, ...], tuple[int, Any]]

    def _size(self, block: int, k: Any, book: Any) -> Opportunity | str:
        raise NotImplementedError

    def _record_key(self, opp: Opportunity) -> tuple[Any, ...]:
        raise NotImplementedError

    def resize(self, opp: Opportunity, book: Any) -> Opportunity | None:
        """Sized again on `book` (the swaps ranked before it applied): no I/O."""
        key = self._record_key(opp) + (() if opp.behind is None else (trigger_tag(opp.behind),))
        found = self._candidates.get(key)
        if found is None:
            return opp
        block, k = found
        again = self._size(block, k, book)
        if isinstance(again, str):
            return None
        return again if opp.behind is None else replace(again, behind=opp.behind)


class ProtocolAdapter(Protocol):
    """What the app, the executor, the CLI and the status page use of an adapter: every
    adapter implements it (BaseAdapter gives the defaults)."""

    kind: str
    name: str
    accounts: Collection[Any]  # what it tracks (borrowers, vaults, perps accounts)
    inventory: dict[str, int] | None  # token -> the keeper's balance (None: not known)
    last_skips: list[Skip]
    sizing: str
    block_time_s: int

    async def start(self) -> None: ...
    async def sync(self, head: Head) -> int: ...
    async def opportunities(self, head: Head) -> list[Opportunity]: ...
    def resize(self, opp: Opportunity, book: Book) -> Opportunity | None: ...
    def measure_tokens(self, opp: Opportunity) -> tuple[str, ...]: ...
    def measured_profit_usd_e8(self, opp: Opportunity, deltas: dict[str, int], return_data: bytes) -> int | None: ...
    def explain_revert(self, reason: str) -> str: ...
    def parse_outcome(self, receipt: dict[str, Any]) -> dict[str, Any]: ...
    def realized_gross_usd_e8(self, opp: Opportunity, realized: dict[str, Any]) -> int | None: ...
    def describe(self, opp: Opportunity) -> str: ...
    def native_price_usd_e8(self) -> int | None: ...
    def can_price_native(self) -> bool: ...
    def positions(self) -> list[dict[str, Any]]: ...
    def drain_liquidations(self) -> list[ChainLiquidation]: ...
    def liquidation_log_filter(self) -> tuple[list[str], list[str]]: ...
    def liquidations_from_logs(self, logs: list[dict[str, Any]]) -> list[ChainLiquidation]: ...
    def liquidator_addresses(self) -> set[str]: ...
    def oracle_sources(self) -> set[str]: ...
    def price_update_targets(self) -> set[str]: ...
    async def react(self, head: Head, answers: dict[str, int], trigger: Any) -> list[Opportunity]: ...


class BaseAdapter:
    """What every adapter holds: its config, the shared RPC/Multicall/swap venues, the keeper's
    address, the log sync position and what the last refresh decided."""

    kind = ""

    def __init__(self, cfg: Any, *, rpc: Rpc, multicall: Any, swaps: SwapVenues | None = None,
                 keeper_address: str | None = None, chunk_blocks: int = 2000, log: Any):
        self.cfg = cfg
        self.name: str = cfg.name
        self.rpc = rpc
        self.mc = multicall
        self.swaps = swaps  # the shared pool book (keeper.pricing.book); None: no swap venue configured
        self.sizing = "profit"  # [keeper] sizing, set by the app: "profit" | "max"
        self.block_time_s = 12  # [chain] block_time_s, set by the app: the next block's time is priced
        self.keeper = keeper_address
        self.chunk_blocks = chunk_blocks
        self.log = log.bind(protocol=cfg.name)
        self.synced_to: int = cfg.start_block - 1
        self.inventory: dict[str, int] | None = None  # token -> keeper balance (None: not known)
        self.last_skips: list[Skip] = []
        self.last_opportunities: list[Any] = []

    def resize(self, opp: Opportunity, book: Book) -> Opportunity | None:
        """`opp` sized and priced again against `book`, which already holds the swaps of the
        opportunities ranked before it in this block (the keeper's own market impact). Pure:
        no I/O. None when no size pays any more. Adapters whose actions swap override it."""
        return opp

    def measure_tokens(self, opp: Opportunity) -> tuple[str, ...]:
        """ERC20 balances of the keeper the simulation should measure around the call."""
        return ()

    def measured_profit_usd_e8(self, opp: Opportunity, deltas: dict[str, int], return_data: bytes) -> int | None:
        """The profit the simulation measured (balance deltas), in USD e8; None: not measurable."""
        return None

    def explain_revert(self, reason: str) -> str:
        return reason

    def parse_outcome(self, receipt: dict[str, Any]) -> dict[str, Any]:
        return {}

    def describe(self, opp: Opportunity) -> str:
        return opp.plan.description

    def native_price_usd_e8(self) -> int | None:
        return None

    def can_price_native(self) -> bool:
        """Whether this adapter prices the native token (gas) once refreshed."""
        return False

    def positions(self) -> list[dict[str, Any]]:
        return []

    def drain_liquidations(self) -> list[ChainLiquidation]:
        """The liquidations that happened on chain in this protocol (by anyone) since the last
        call, from the events sync follows. Adapters that follow them override it."""
        return []

    def liquidation_log_filter(self) -> tuple[list[str], list[str]]:
        """(addresses, topic0s) of every log this protocol's liquidation records are built
        from (`keeper replay` reads them from another chain); ([], []): not covered."""
        return [], []

    def liquidations_from_logs(self, logs: list[dict[str, Any]]) -> list[ChainLiquidation]:
        """The liquidation records of these logs (those the filter selects, whole
        transactions, in block/log order), valued at the adapter's current prices."""
        return []

    def liquidator_addresses(self) -> set[str]:
        """The keeper's own contracts that act in this protocol (lowercase)."""
        return set()

    def oracle_sources(self) -> set[str]:
        """The price feeds this adapter reads (addresses): a pending transaction updating one
        of them is handed to react()."""
        return set()

    def price_update_targets(self) -> set[str]:
        """The contracts whose transactions move the prices this adapter acts on (`keeper
        replay` replays the source's transactions to them): its oracle sources by default."""
        return self.oracle_sources()

    async def react(self, head: Head, answers: dict[str, int], trigger: Any) -> list[Opportunity]:
        """The actions a pending oracle update opens (answers: feed address, lowercase ->
        the answer it sets), each carrying `behind=trigger` so it lands right after it.
        Adapters that keep health locally override it."""
        return []

    def realized_gross_usd_e8(self, opp: Opportunity, realized: dict[str, Any]) -> int | None:
        """What a confirmed action really paid before gas, in USD e8, from the amounts
        parse_outcome read off its receipt (the same terms as gross_profit_usd_e8). None:
        the receipt does not say."""
        return None
