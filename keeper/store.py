"""The operator's record: an embedded SQLite store of what the keeper saw, decided, sent and
earned, and of every liquidation seen on chain (with its class: ours, raced, filtered, unseen).

Writes never block the hot path: `seen`, `decided`, `tx`, `outcome` and `chain_liquidation`
only put a row on a bounded in-memory queue (a lock and an append); ONE writer thread takes
everything queued, at most every `batch_window_s` (50 ms), and commits it in one transaction
(WAL, synchronous=FULL). A row counts as written only once committed: `written` and the
`store_flushed` log line (at most once a second) follow commits, so whatever was reported
written survives `kill -9` (and, with synchronous=FULL, a power loss).

A failing commit (disk full, database locked) is logged (`store_write_failed`) and retried
with a bounded backoff; a batch that still fails is written row by row once and what cannot be
written is counted (`failed`) and let go: nothing ever raises into the caller. A full queue
drops its oldest rows (`dropped`, logged `store_dropped`).

The schema is created and migrated at open (`schema_version` table, `MIGRATIONS` in order, each
in one transaction). A file that is not a SQLite database, that a newer keeper wrote, or that is
locked by another process is one `StoreError` (a ConfigError: one line, exit 2) at open.

Units: usd_e8 columns are INTEGER (they fit int64); amounts that can exceed int64 (wei, token
base units) are decimal TEXT; `detail`, `realized` and `why` are JSON (ints kept exact).
Times are block timestamps (unix seconds, UTC).

Reads (`actions`, `skips`, `pnl_by_day`, `pnl_by_protocol`, `misses`, `summary`) run on their own
connection (`StoreReader`, also usable alone, read-mostly, by `keeper report` while a keeper
writes) and may block.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError

BATCH_WINDOW_S = 0.05
MAX_QUEUE = 100_000
MAX_BATCH = 5_000
RETRY_DELAYS_S = (0.05, 0.1, 0.25, 0.5, 1.0)  # then the batch is written row by row once, the rest let go
LOG_EVERY_S = 1.0
PRUNE_EVERY_S = 3600.0
OPEN_TIMEOUT_S = 5.0

OUTCOME_STATUSES = ("included", "reverted", "replaced", "cancelled", "dropped")
FINAL_STATUSES = ("included", "reverted", "cancelled", "dropped")  # "replaced" is about one hash, not the intent
DECISIONS = ("sent", "skipped", "dry_run")
CLASSES = ("ours", "raced", "filtered", "unseen")


class StoreError(ConfigError):
    """The store cannot be opened (missing for a reader, not a database, newer schema, locked)."""


# -- schema -----------------------------------------------------------------------------
# Each migration is a list of statements run in one transaction; the store's version is the
# number of migrations applied. Append only: never edit a migration that has shipped.
MIGRATIONS: list[list[str]] = [
    # 1: the keeper's own record
    [
        """CREATE TABLE seen (
            id INTEGER PRIMARY KEY, block INTEGER NOT NULL, ts INTEGER NOT NULL, protocol TEXT NOT NULL,
            kind TEXT NOT NULL, account TEXT NOT NULL, route TEXT NOT NULL, detail TEXT NOT NULL,
            gross_usd_e8 INTEGER NOT NULL, gas_usd_e8 INTEGER NOT NULL, net_usd_e8 INTEGER NOT NULL)""",
        "CREATE INDEX seen_ts ON seen (ts)",
        "CREATE INDEX seen_account ON seen (protocol, account, block)",
        """CREATE TABLE decision (
            id INTEGER PRIMARY KEY, block INTEGER NOT NULL, ts INTEGER NOT NULL, protocol TEXT NOT NULL,
            account TEXT NOT NULL, decision TEXT NOT NULL, reason TEXT NOT NULL, net_usd_e8 INTEGER)""",
        "CREATE INDEX decision_ts ON decision (ts)",
        """CREATE TABLE tx (
            id INTEGER PRIMARY KEY, intent_id TEXT NOT NULL, key TEXT NOT NULL, protocol TEXT NOT NULL,
            account TEXT NOT NULL, tx_hash TEXT NOT NULL, nonce INTEGER NOT NULL, max_fee_wei TEXT NOT NULL,
            priority_fee_wei TEXT NOT NULL, gas_limit INTEGER NOT NULL, route TEXT NOT NULL,
            broadcaster TEXT NOT NULL, expected_usd_e8 INTEGER NOT NULL, block INTEGER NOT NULL,
            ts INTEGER NOT NULL)""",
        "CREATE INDEX tx_intent ON tx (intent_id)",
        "CREATE INDEX tx_ts ON tx (ts)",
        """CREATE TABLE outcome (
            id INTEGER PRIMARY KEY, intent_id TEXT, tx_hash TEXT, protocol TEXT NOT NULL, account TEXT NOT NULL,
            status TEXT NOT NULL, block INTEGER NOT NULL, ts INTEGER NOT NULL, gas_used INTEGER NOT NULL,
            gas_cost_wei TEXT NOT NULL, expected_usd_e8 INTEGER NOT NULL, realized_usd_e8 INTEGER,
            realized TEXT NOT NULL)""",
        "CREATE INDEX outcome_intent ON outcome (intent_id)",
        "CREATE INDEX outcome_ts ON outcome (ts)",
    ],
    # 2: liquidations seen on chain and their class; gas in USD on outcomes
    [
        """CREATE TABLE chain_liquidation (
            id INTEGER PRIMARY KEY, protocol TEXT NOT NULL, kind TEXT NOT NULL, account TEXT NOT NULL,
            liquidator TEXT NOT NULL, block INTEGER NOT NULL, ts INTEGER NOT NULL, tx_hash TEXT NOT NULL,
            log_index INTEGER NOT NULL, detail TEXT NOT NULL, value_usd_e8 INTEGER, klass TEXT NOT NULL,
            why TEXT NOT NULL, UNIQUE (tx_hash, log_index))""",
        "CREATE INDEX chain_liquidation_ts ON chain_liquidation (ts)",
        "ALTER TABLE outcome ADD COLUMN gas_usd_e8 INTEGER",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)


def _json(v: Any) -> str:
    return json.dumps(v if v is not None else {}, default=str, separators=(",", ":"))


def _big(v: int) -> str:
    return str(int(v))


# table -> (INSERT statement, row converter run on the writer thread)
_INSERT: dict[str, tuple[str, Callable[[tuple], tuple]]] = {
    "seen": ("INSERT INTO seen (block, ts, protocol, kind, account, route, detail, gross_usd_e8, gas_usd_e8, "
             "net_usd_e8) VALUES (?,?,?,?,?,?,?,?,?,?)",
             lambda r: (*r[:6], _json(r[6]), *r[7:])),
    "decision": ("INSERT INTO decision (block, ts, protocol, account, decision, reason, net_usd_e8) "
                 "VALUES (?,?,?,?,?,?,?)", lambda r: r),
    "tx": ("INSERT INTO tx (intent_id, key, protocol, account, tx_hash, nonce, max_fee_wei, priority_fee_wei, "
           "gas_limit, route, broadcaster, expected_usd_e8, block, ts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
           lambda r: (*r[:6], _big(r[6]), _big(r[7]), *r[8:])),
    "outcome": ("INSERT INTO outcome (intent_id, tx_hash, protocol, account, status, block, ts, gas_used, "
                "gas_cost_wei, expected_usd_e8, realized_usd_e8, realized, gas_usd_e8) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                lambda r: (*r[:8], _big(r[8]), r[9], r[10], _json(r[11]), r[12])),
    # a liquidation seen again (restart, reorg re-mined) replaces the earlier row
    "chain_liquidation": ("INSERT OR REPLACE INTO chain_liquidation (protocol, kind, account, liquidator, block, "
                          "ts, tx_hash, log_index, detail, value_usd_e8, klass, why) "
                          "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                          lambda r: (*r[:8], _json(r[8]), r[9], r[10], _json(r[11]))),
}


def _open_error(path: Path, e: BaseException) -> StoreError:
    msg = str(e)
    if "locked" in msg or "busy" in msg:
        return StoreError(f"keeper.store_path: {path} is locked by another process ({msg}); "
                          "one keeper per store, or wait for the other writer")
    if "not a database" in msg or "malformed" in msg or "encrypted" in msg:
        return StoreError(f"keeper.store_path: {path} is not a valid SQLite database ({msg}); "
                          "move it aside and a new store is created")
    if isinstance(e, OSError):
        return StoreError(f"keeper.store_path: cannot open {path}: {e.strerror or e}")
    return StoreError(f"keeper.store_path: cannot open {path}: {msg}")


def _connect(path: Path, timeout_s: float, readonly: bool = False) -> sqlite3.Connection:
    uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rwc'}"
    conn = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    has = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'").fetchone()
    if not has:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, upto: int = SCHEMA_VERSION) -> tuple[int, int]:
    """Bring the database to version `upto` (each migration in one transaction, under the write
    lock). Returns (version before, version after). Raises StoreError for a newer schema."""
    conn.execute("BEGIN IMMEDIATE")  # the write lock: a locked database fails here, at open
    try:
        before = schema_version(conn)
        if before > SCHEMA_VERSION:
            raise StoreError(f"keeper.store_path: schema version {before} was written by a newer keeper "
                             f"(this one knows up to {SCHEMA_VERSION}); upgrade the keeper")
        if before == 0:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                         "applied_ts INTEGER NOT NULL)")
        for v in range(before + 1, upto + 1):
            for stmt in MIGRATIONS[v - 1]:
                conn.execute(stmt)
            conn.execute("INSERT INTO schema_version (version, applied_ts) VALUES (?, ?)", (v, int(time.time())))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return before, max(before, upto)


def default_store_path(journal: Path | None, address: str | None) -> Path:
    """`store-<address>.sqlite` beside the journal (`.keeper/` by default); `store-dry-run.sqlite`
    when the keeper has no address."""
    folder = journal.parent if journal is not None else Path(".keeper")
    return folder / f"store-{address.lower() if address else 'dry-run'}.sqlite"


def store_path_for(cfg: Any, address: str | None = None) -> Path:
    """The configured `keeper.store_path`, else the default beside the journal."""
    configured = getattr(cfg.keeper, "store_path", None)
    if configured:
        return Path(configured)
    return default_store_path(cfg.keeper.journal, address or cfg.keeper.address)


# -- reads --------------------------------------------------------------------------------
def _loads(text: str | None) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {"unparsed": text}


def _rows(cur: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def _empty_group() -> dict[str, Any]:
    return {"sent": 0, "included": 0, "reverted": 0, "cancelled": 0, "dropped": 0, "pending": 0,
            "expected_usd_e8": 0, "realized_usd_e8": 0, "unpriced": 0, "gas_cost_wei": 0, "gas_usd_e8": 0}


def _rate(g: dict[str, Any]) -> dict[str, Any]:
    """success_rate: included / finished sends (pending ones not counted yet); None: none finished."""
    done = g["sent"] - g["pending"]
    g["success_rate"] = g["included"] / done if done else None
    return g


class StoreReader:
    """The read side: its own connection, safe to use while a keeper writes (WAL). Opening a
    missing file is a StoreError (a reader never creates a store); an older schema is migrated."""

    def __init__(self, path: Path | str, timeout_s: float = OPEN_TIMEOUT_S, *, _conn: sqlite3.Connection | None = None):
        self.path = Path(path)
        self._lock = threading.Lock()
        if _conn is not None:
            self.conn = _conn
            return
        if not self.path.exists():
            raise StoreError(f"keeper.store_path: no store at {self.path} (the keeper creates it when it runs)")
        if self.path.is_dir():
            raise StoreError(f"keeper.store_path: {self.path} is a directory; give the store file's path")
        try:
            self.conn = _connect(self.path, timeout_s)
            if schema_version(self.conn) != SCHEMA_VERSION:
                migrate(self.conn)
        except sqlite3.Error as e:
            raise _open_error(self.path, e) from None

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def _q(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            return _rows(self.conn.execute(sql, args))

    # what a trade (one intent: a signed transaction and its replacements) came to
    def actions(self, since_ts: int = 0) -> list[dict[str, Any]]:
        """One row per intent sent (oldest first), with its final outcome: status (included,
        reverted, cancelled, dropped; pending while none), tx_hash (the one mined), expected and
        realized USD e8 (after gas), gas used and paid (wei), replacements, route, broadcaster,
        realized token amounts; plus outcomes of transactions the store has no send for
        (restored from the journal). Filtered by the time it was first sent (or its outcome)."""
        sends = self._q(
            "SELECT intent_id, key, protocol, account, route, broadcaster, MIN(ts) AS sent_ts, MIN(block) AS sent_block,"
            " COUNT(*) - 1 AS replacements, MAX(id) AS last_id FROM tx GROUP BY intent_id"
            " HAVING MIN(ts) >= ? ORDER BY MIN(ts), MIN(id)", (since_ts,))
        last_tx = {r["intent_id"]: r for r in self._q(
            "SELECT intent_id, tx_hash, nonce, expected_usd_e8, max_fee_wei, priority_fee_wei, gas_limit FROM tx"
            " WHERE id IN (SELECT MAX(id) FROM tx GROUP BY intent_id)")}
        finals = self._final_outcomes()
        out: list[dict[str, Any]] = []
        for s in sends:
            iid = s["intent_id"]
            t = last_tx.get(iid, {})
            o = finals.pop(iid, None)
            out.append(self._action(s["protocol"], s["account"], iid, s["route"], s["broadcaster"], s["sent_ts"],
                                    s["sent_block"], s["replacements"], t, o))
        for key, o in finals.items():  # outcomes without a send in the store
            if o["ts"] >= since_ts and (o["intent_id"] is None or o["intent_id"] not in last_tx):
                out.append(self._action(o["protocol"], o["account"], o["intent_id"], "", "", o["ts"], o["block"], 0,
                                        {}, o))
        out.sort(key=lambda a: (a["sent_ts"], a["sent_block"]))
        return out

    def _final_outcomes(self) -> dict[Any, dict[str, Any]]:
        """Per intent (or tx hash when no intent), its latest final outcome (a reorg re-mined
        or a restart re-reported: the latest row wins)."""
        rows = self._q(
            "SELECT * FROM outcome WHERE id IN (SELECT MAX(id) FROM outcome WHERE status != 'replaced'"
            " GROUP BY COALESCE(intent_id, tx_hash, 'row:' || id))")
        return {(r["intent_id"] or r["tx_hash"] or f"row:{r['id']}"): r for r in rows}

    @staticmethod
    def _action(protocol: str, account: str, intent_id: Any, route: str, broadcaster: str, sent_ts: int,
                sent_block: int, replacements: int, t: dict[str, Any], o: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "intent_id": intent_id, "protocol": protocol, "account": account, "route": route,
            "broadcaster": broadcaster, "sent_ts": sent_ts, "sent_block": sent_block, "replacements": replacements,
            "nonce": t.get("nonce"),
            "status": o["status"] if o else "pending",
            "tx_hash": (o["tx_hash"] if o and o["tx_hash"] else t.get("tx_hash")),
            "block": o["block"] if o else None, "ts": o["ts"] if o else None,
            "expected_usd_e8": o["expected_usd_e8"] if o else t.get("expected_usd_e8"),
            "realized_usd_e8": o["realized_usd_e8"] if o else None,
            "gas_used": o["gas_used"] if o else 0,
            "gas_cost_wei": int(o["gas_cost_wei"]) if o else 0,
            "gas_usd_e8": o["gas_usd_e8"] if o else None,
            "realized": _loads(o["realized"]) if o else {},
        }

    def skips(self, since_ts: int = 0) -> list[dict[str, Any]]:
        """Skip counts per (protocol, reason), most frequent first: count, distinct accounts,
        the last block and time."""
        return self._q(
            "SELECT protocol, reason, COUNT(*) AS count, COUNT(DISTINCT account) AS accounts, MAX(block) AS last_block,"
            " MAX(ts) AS last_ts FROM decision WHERE decision = 'skipped' AND ts >= ?"
            " GROUP BY protocol, reason ORDER BY count DESC, protocol, reason", (since_ts,))

    def decisions(self, since_ts: int = 0) -> dict[str, int]:
        return {r["decision"]: r["n"] for r in self._q(
            "SELECT decision, COUNT(*) AS n FROM decision WHERE ts >= ? GROUP BY decision", (since_ts,))}

    def _pnl(self, since_ts: int, key: Callable[[dict[str, Any]], str]) -> dict[str, dict[str, Any]]:
        groups: dict[str, dict[str, Any]] = {}
        for a in self.actions(since_ts):
            g = groups.setdefault(key(a), _empty_group())
            g["sent"] += 1
            g[a["status"]] = g.get(a["status"], 0) + 1
            g["gas_cost_wei"] += a["gas_cost_wei"]
            g["gas_usd_e8"] += a["gas_usd_e8"] or 0
            if a["status"] == "pending":
                continue
            if a["status"] == "included":
                g["expected_usd_e8"] += a["expected_usd_e8"] or 0
            if a["realized_usd_e8"] is None:
                g["unpriced"] += 1 if a["status"] == "included" else 0
            else:
                g["realized_usd_e8"] += a["realized_usd_e8"]
        for g in groups.values():
            _rate(g)
        return groups

    def pnl_by_day(self, since_ts: int = 0) -> list[dict[str, Any]]:
        """Per UTC day of the outcome (sent day while pending): sent, included, reverted,
        cancelled, dropped, pending, expected (included only) and realized USD e8 after gas
        (a reverted send's realized is minus its gas), gas paid (wei, and USD e8 where known),
        unpriced (included without a realized value), success_rate (included / finished)."""
        day = lambda a: time.strftime("%Y-%m-%d", time.gmtime(a["ts"] if a["ts"] is not None else a["sent_ts"]))  # noqa: E731
        return [{"day": d, **g} for d, g in sorted(self._pnl(since_ts, day).items())]

    def pnl_by_protocol(self, since_ts: int = 0) -> list[dict[str, Any]]:
        """Per protocol, the same figures as pnl_by_day, plus the on-chain liquidations seen
        (all, ours) and the capture rate (ours / all)."""
        groups = self._pnl(since_ts, lambda a: a["protocol"])
        chain = {r["protocol"]: r for r in self._q(
            "SELECT protocol, COUNT(*) AS chain_liquidations, SUM(klass = 'ours') AS ours FROM chain_liquidation"
            " WHERE ts >= ? GROUP BY protocol", (since_ts,))}
        out = []
        for p in sorted(set(groups) | set(chain)):
            g = groups.get(p) or _rate(_empty_group())
            c = chain.get(p, {"chain_liquidations": 0, "ours": 0})
            n, ours = int(c["chain_liquidations"] or 0), int(c["ours"] or 0)
            out.append({"protocol": p, **g, "chain_liquidations": n, "ours": ours,
                        "capture_rate": ours / n if n else None})
        return out

    def misses(self, since_ts: int = 0) -> list[dict[str, Any]]:
        """Liquidations on chain that were not the keeper's (oldest first), with their class and
        why (raced: competitor, blocks_behind; filtered: reason)."""
        rows = self._q("SELECT * FROM chain_liquidation WHERE klass != 'ours' AND ts >= ? ORDER BY block, log_index",
                       (since_ts,))
        for r in rows:
            r["detail"], r["why"] = _loads(r["detail"]), _loads(r["why"])
        return rows

    def chain_classes(self, since_ts: int = 0) -> dict[str, int]:
        return {r["klass"]: r["n"] for r in self._q(
            "SELECT klass, COUNT(*) AS n FROM chain_liquidation WHERE ts >= ? GROUP BY klass", (since_ts,))}

    def summary(self, since_ts: int = 0, top: int = 5) -> dict[str, Any]:
        """Totals: actions by status, success_rate (included / finished sends), expected and
        realized USD e8, gas (wei, USD e8 where known), on-chain liquidations by class and the
        capture rate (ours / all), decisions by kind, skips, opportunities seen, the best and
        worst trades (by realized), the time span covered."""
        acts = self.actions(since_ts)
        g = self._pnl(since_ts, lambda a: "all").get("all") or _rate(_empty_group())
        classes = {k: 0 for k in CLASSES}
        classes.update(self.chain_classes(since_ts))
        n_chain = sum(classes.values())
        priced = sorted((a for a in acts if a["realized_usd_e8"] is not None and a["status"] != "pending"),
                        key=lambda a: a["realized_usd_e8"])
        seen = self._q("SELECT COUNT(*) AS n, COUNT(DISTINCT protocol || ':' || account) AS accounts,"
                       " MIN(ts) AS first_ts, MAX(ts) AS last_ts FROM seen WHERE ts >= ?", (since_ts,))[0]
        span = self._q(
            "SELECT MIN(t) AS first_ts, MAX(t) AS last_ts FROM (SELECT ts AS t FROM seen WHERE ts >= ?1"
            " UNION ALL SELECT ts FROM decision WHERE ts >= ?1 UNION ALL SELECT ts FROM tx WHERE ts >= ?1"
            " UNION ALL SELECT ts FROM outcome WHERE ts >= ?1 UNION ALL SELECT ts FROM chain_liquidation"
            " WHERE ts >= ?1)", (since_ts,))[0]
        return {
            "since_ts": since_ts, "first_ts": span["first_ts"], "last_ts": span["last_ts"],
            "actions": {k: g[k] for k in ("sent", "included", "reverted", "cancelled", "dropped", "pending")},
            "success_rate": g["success_rate"],
            "expected_usd_e8": g["expected_usd_e8"], "realized_usd_e8": g["realized_usd_e8"],
            "unpriced": g["unpriced"], "gas_cost_wei": g["gas_cost_wei"], "gas_usd_e8": g["gas_usd_e8"],
            "chain_liquidations": n_chain, "classes": classes,
            "capture_rate": classes["ours"] / n_chain if n_chain else None,
            "decisions": self.decisions(since_ts),
            "skips": sum(r["count"] for r in self.skips(since_ts)),
            "opportunities_seen": seen["n"], "accounts_seen": seen["accounts"],
            # best and worst never overlap: with few trades, the better half and the worse half
            "best": list(reversed(priced[len(priced) - min(top, (len(priced) + 1) // 2):])),
            "worst": priced[:min(top, len(priced) // 2)],
        }


# -- writes -------------------------------------------------------------------------------
class Store:
    """See the module docstring. `path`'s folder is created. Public write methods never raise
    and never wait for the disk; reads go through `self.reader` (also exposed as methods)."""

    def __init__(self, path: Path | str, log: Any, *, max_queue: int = MAX_QUEUE,
                 batch_window_s: float = BATCH_WINDOW_S, retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
                 open_timeout_s: float = OPEN_TIMEOUT_S, retention_days: float = 90.0):
        self.path = Path(path)
        # opportunities seen and decisions (a row per opportunity per block) older than this,
        # counted back from the newest, are pruned hourly; sends, outcomes and on-chain
        # liquidations are kept. 0: keep everything.
        self.retention_s = int(retention_days * 86_400)
        self._last_prune = -float("inf")
        self.log = log
        self.max_queue = max(1, max_queue)
        self.batch_window_s = batch_window_s
        self.retry_delays_s = tuple(retry_delays_s)
        self.written = 0  # rows committed (only ever counts what is on disk)
        self.dropped = 0  # rows dropped because the queue was full
        self.failed = 0  # rows let go after the retries
        self._q: deque[tuple[int, str, tuple]] = deque()
        self._seq = 0  # rows ever queued
        self._resolved = 0  # every row with seq <= this is committed, dropped or let go
        self._cond = threading.Condition()
        self._stopping = False
        self._flush_wanted = False
        self._last_commit = 0.0
        self._logged_written = 0
        self._logged_dropped = 0
        self._last_log = 0.0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _open_error(self.path, e) from None
        if self.path.is_dir():
            raise StoreError(f"keeper.store_path: {self.path} is a directory; give the store file's path")
        try:
            self.conn = self._connect_writer(open_timeout_s)
            mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL (journal_mode is {mode})")
            self.conn.execute("PRAGMA synchronous = FULL")
            before, after = migrate(self.conn)
            self.reader = StoreReader(self.path, _conn=_connect(self.path, open_timeout_s))
        except sqlite3.Error as e:
            try:
                self.conn.close()
            except Exception:
                pass
            raise _open_error(self.path, e) from None
        if before != after:
            log.info("store_migrated", store=str(self.path), from_version=before, to_version=after)
        self._thread = threading.Thread(target=self._writer, name="keeper-store", daemon=True)
        self._thread.start()

    # hooks (tests subclass these)
    def _connect_writer(self, timeout_s: float) -> sqlite3.Connection:
        return _connect(self.path, timeout_s)

    def _commit_batch(self, batch: list[tuple[int, str, tuple]]) -> None:
        """One transaction with every row of the batch."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for _, table, row in batch:
                sql, conv = _INSERT[table]
                conn.execute(sql, conv(row))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            raise

    # -- the write API (hot path: enqueue only) --------------------------------------------
    def _put(self, table: str, row: tuple) -> None:
        try:
            with self._cond:
                if self._stopping:
                    return
                self._seq += 1
                if len(self._q) >= self.max_queue:
                    self._q.popleft()
                    self.dropped += 1
                self._q.append((self._seq, table, row))
                if len(self._q) == 1:
                    self._cond.notify()
        except Exception:  # never into the caller
            pass

    def seen(self, block: int, ts: int, protocol: str, kind: str, account: str, route: str, detail: dict,
             gross_usd_e8: int, gas_usd_e8: int, net_usd_e8: int) -> None:
        self._put("seen", (block, ts, protocol, kind, account, route or "", dict(detail or {}), gross_usd_e8,
                           gas_usd_e8, net_usd_e8))

    def decided(self, block: int, ts: int, protocol: str, account: str, decision: str, reason: str,
                net_usd_e8: int | None) -> None:
        self._put("decision", (block, ts, protocol, account, decision, reason or "", net_usd_e8))

    def tx(self, intent_id: str, key: str, protocol: str, account: str, tx_hash: str, nonce: int, max_fee_wei: int,
           priority_fee_wei: int, gas_limit: int, route: str, broadcaster: str, expected_usd_e8: int, block: int,
           ts: int) -> None:
        self._put("tx", (intent_id, key, protocol, account, tx_hash, nonce, max_fee_wei, priority_fee_wei, gas_limit,
                         route or "", broadcaster or "", expected_usd_e8, block, ts))

    def outcome(self, intent_id: str | None, tx_hash: str | None, protocol: str, account: str, status: str, block: int,
                ts: int, gas_used: int, gas_cost_wei: int, expected_usd_e8: int, realized_usd_e8: int | None,
                realized: dict, gas_usd_e8: int | None = None) -> None:
        self._put("outcome", (intent_id, tx_hash, protocol, account, status, block, ts, gas_used, gas_cost_wei,
                              expected_usd_e8, realized_usd_e8, dict(realized or {}), gas_usd_e8))

    def chain_liquidation(self, protocol: str, kind: str, account: str, liquidator: str, block: int, ts: int,
                          tx_hash: str, log_index: int, detail: dict, value_usd_e8: int | None, klass: str,
                          why: dict) -> None:
        self._put("chain_liquidation", (protocol, kind, account, liquidator, block, ts, tx_hash, log_index,
                                        dict(detail or {}), value_usd_e8, klass, dict(why or {})))

    # -- flushing and closing ---------------------------------------------------------------
    @property
    def queued(self) -> int:
        return len(self._q)

    def flush(self, timeout_s: float = 5.0) -> int:
        """Wait (at most timeout_s) until every row queued before this call is committed (or
        dropped / let go); returns `written`, the rows committed so far."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            target = self._seq
            self._flush_wanted = True
            self._cond.notify_all()
            while self._resolved < target and self._thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self.written

    def close(self, timeout_s: float = 5.0) -> int:
        """Flush, stop the writer, close the connections; returns `written`. Idempotent."""
        if self._thread.is_alive():
            self.flush(timeout_s)
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            self._thread.join(timeout_s)
        try:
            self.reader.close()
        except Exception:
            pass
        return self.written

    # -- the writer thread ---------------------------------------------------------------
    def _writer(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._q and not self._stopping:
                        wait = None
                        if self.written != self._logged_written or self.dropped != self._logged_dropped:
                            wait = max(self._last_log + LOG_EVERY_S - time.monotonic(), 0.001)
                        if not self._cond.wait(wait) and wait is not None:
                            break  # time to log what was committed
                    if not self._q and self._stopping:
                        break
                    # a small batch window after the previous commit, unless a flush waits
                    until = self._last_commit + self.batch_window_s
                    while self._q and not self._flush_wanted and not self._stopping and time.monotonic() < until:
                        self._cond.wait(until - time.monotonic())
                    n = min(len(self._q), MAX_BATCH)
                    batch = [self._q.popleft() for _ in range(n)]
                    if not self._q:
                        self._flush_wanted = False
                if batch:
                    self._write(batch)
                    self._last_commit = time.monotonic()
                    self._prune()
                with self._cond:
                    self._resolved = self._q[0][0] - 1 if self._q else self._seq
                    self._cond.notify_all()
                self._maybe_log()
        finally:
            self._maybe_log(force=True)
            try:
                self.conn.close()
            except Exception:
                pass
            with self._cond:
                self._cond.notify_all()

    def _prune(self) -> None:
        """Drop `seen` and `decision` rows older than the retention (writer thread only)."""
        if not self.retention_s or time.monotonic() - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = time.monotonic()
        try:
            newest = self.conn.execute("SELECT MAX(ts) FROM seen").fetchone()[0]
            if not newest:
                return
            cutoff = int(newest) - self.retention_s
            with self.conn:
                n = sum(self.conn.execute(f"DELETE FROM {t} WHERE ts < ?", (cutoff,)).rowcount
                        for t in ("seen", "decision"))
            if n:
                self.log.info("store_pruned", rows=n, older_than_ts=cutoff)
        except sqlite3.Error as e:
            self.log.warning("store_prune_failed", error=str(e))

    def _write(self, batch: list[tuple[int, str, tuple]]) -> None:
        err: BaseException | None = None
        for attempt, delay in enumerate((*self.retry_delays_s, None)):
            try:
                self._commit_batch(batch)
                self.written += len(batch)
                return
            except Exception as e:  # disk full, locked, I/O error, a bad value
                err = e
                self.log.warning("store_write_failed", store=str(self.path), rows=len(batch), attempt=attempt + 1,
                                 error=f"{e.__class__.__name__}: {e}",
                                 retry_in_s=delay if delay is not None else None)
                if delay is None or not isinstance(e, sqlite3.Error):
                    break
                with self._cond:  # a stop cuts the backoff short (the rows are still tried once more)
                    if not self._stopping:
                        self._cond.wait(delay)
        # one last time row by row: what can be written is, the rest is let go and counted
        lost = 0
        for item in batch:
            try:
                self._commit_batch([item])
                self.written += 1
            except Exception:
                lost += 1
        if lost:
            self.failed += lost
            self.log.error("store_write_failed", store=str(self.path), rows=lost, gave_up=True, failed=self.failed,
                           error=f"{err.__class__.__name__}: {err}" if err else "")

    def _maybe_log(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_log < LOG_EVERY_S:
            return
        try:
            if self.written != self._logged_written:
                self.log.info("store_flushed", store=str(self.path), written=self.written,
                              new=self.written - self._logged_written)
                self._logged_written = self.written
            dropped = self.dropped
            if dropped != self._logged_dropped:
                self.log.warning("store_dropped", store=str(self.path), dropped=dropped,
                                 new=dropped - self._logged_dropped, max_queue=self.max_queue)
                self._logged_dropped = dropped
        except Exception:
            pass
        self._last_log = now

    # -- reads (on the reader's connection) -----------------------------------------------------
    def actions(self, since_ts: int = 0) -> list[dict[str, Any]]:
        return self.reader.actions(since_ts)

    def skips(self, since_ts: int = 0) -> list[dict[str, Any]]:
        return self.reader.skips(since_ts)

    def pnl_by_day(self, since_ts: int = 0) -> list[dict[str, Any]]:
        return self.reader.pnl_by_day(since_ts)

    def pnl_by_protocol(self, since_ts: int = 0) -> list[dict[str, Any]]:
        return self.reader.pnl_by_protocol(since_ts)

    def misses(self, since_ts: int = 0) -> list[dict[str, Any]]:
        return self.reader.misses(since_ts)

    def summary(self, since_ts: int = 0) -> dict[str, Any]:
        return self.reader.summary(since_ts)
