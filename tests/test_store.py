"""The store (keeper/store.py) on real SQLite files, and the miss classifier (keeper/missed.py)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from keeper import store as st
from keeper.missed import AccountHistory, ChainLiquidation, Tracker, classify
from keeper.store import Store, StoreError, StoreReader

from .conftest import REPO

WEI_BIG = 3 * 10**30  # above int64: stored as text, read back exact
A, B = "0x" + "aa" * 20, "0x" + "bb" * 20
OURS = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"


class Log:
    """Collects log calls (event, fields) from any thread."""

    def __init__(self):
        self.events: list[tuple[str, str, dict]] = []
        self._lock = threading.Lock()

    def _add(self, level: str, event: str, **kw):
        with self._lock:
            self.events.append((level, event, kw))

    def info(self, event, **kw):
        self._add("info", event, **kw)

    def warning(self, event, **kw):
        self._add("warning", event, **kw)

    def error(self, event, **kw):
        self._add("error", event, **kw)

    def named(self, event: str) -> list[dict]:
        with self._lock:
            return [kw for _, e, kw in self.events if e == event]


class HeldStore(Store):
    """The writer thread stops inside its commit until `release` is set."""

    def __init__(self, *a, **kw):
        self.entered = threading.Event()
        self.release = threading.Event()
        super().__init__(*a, **kw)

    def _commit_batch(self, batch):
        self.entered.set()
        assert self.release.wait(30)
        super()._commit_batch(batch)


def count(path, table: str) -> int:
    c = sqlite3.connect(path)
    try:
        return c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        c.close()


def fill_one_of_each(s: Store) -> None:
    s.seen(100, 1_700_000_000, "aave", "aave_v3", A, "flash", {"debt_to_cover": WEI_BIG, "swap_route": "WETH>USDC"},
           5_000_00000000, 12_00000000, 4_988_00000000)
    s.decided(100, 1_700_000_000, "aave", B, "skipped", "below_min_profit", -3_00000000)
    s.tx("i-1", "aave:" + A, "aave", A, "0x" + "11" * 32, 7, WEI_BIG, 2 * 10**9, 600_000, "flash", "public",
         4_988_00000000, 100, 1_700_000_000)
    s.outcome("i-1", "0x" + "11" * 32, "aave", A, "included", 101, 1_700_000_012, 550_000, WEI_BIG, 4_988_00000000,
              4_980_00000000, {"profit": WEI_BIG, "token": B}, gas_usd_e8=8_00000000)
    s.chain_liquidation("aave", "liquidation_call", B, "0x" + "cc" * 20, 102, 1_700_000_024, "0x" + "22" * 32, 3,
                        {"debt_repaid": WEI_BIG}, 75_00000000, "raced",
                        {"competitor": "0x" + "cc" * 20, "blocks_behind": 2})


def test_rows_round_trip_exact(tmp_path):
    path = tmp_path / "s.sqlite"
    s = Store(path, Log())
    fill_one_of_each(s)
    assert s.flush(5) == 5
    [a] = s.actions(0)
    assert a["status"] == "included" and a["tx_hash"] == "0x" + "11" * 32 and a["nonce"] == 7
    assert a["gas_cost_wei"] == WEI_BIG and a["realized"] == {"profit": WEI_BIG, "token": B}
    assert a["expected_usd_e8"] == 4_988_00000000 and a["realized_usd_e8"] == 4_980_00000000
    assert a["gas_usd_e8"] == 8_00000000 and a["route"] == "flash" and a["replacements"] == 0
    assert s.skips(0) == [{"protocol": "aave", "reason": "below_min_profit", "count": 1, "accounts": 1,
                           "last_block": 100, "last_ts": 1_700_000_000}]
    [m] = s.misses(0)
    assert m["klass"] == "raced" and m["detail"] == {"debt_repaid": WEI_BIG} and m["why"]["blocks_behind"] == 2
    c = sqlite3.connect(path)
    detail, = c.execute("SELECT detail FROM seen").fetchone()
    assert str(WEI_BIG) in detail
    assert c.execute("SELECT max_fee_wei, typeof(max_fee_wei) FROM tx").fetchone() == (str(WEI_BIG), "text")
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c.close()
    assert s.close() == 5
    # reopened: same rows, nothing migrated again
    log = Log()
    s2 = Store(path, log)
    assert s2.actions(0)[0]["gas_cost_wei"] == WEI_BIG and not log.named("store_migrated")
    s2.close()


def test_migrates_an_empty_file_and_a_version_1_store(tmp_path):
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    log = Log()
    Store(empty, log).close()
    assert log.named("store_migrated") == [{"store": str(empty), "from_version": 0, "to_version": st.SCHEMA_VERSION}]

    v1 = tmp_path / "v1.sqlite"
    c = sqlite3.connect(v1, isolation_level=None)
    st.migrate(c, upto=1)
    c.execute("INSERT INTO outcome (intent_id, tx_hash, protocol, account, status, block, ts, gas_used, gas_cost_wei,"
              " expected_usd_e8, realized_usd_e8, realized) VALUES ('i', '0x1', 'aave', ?, 'included', 5, 60, 1, '7',"
              " 100, 90, '{}')", (A,))
    assert st.schema_version(c) == 1
    assert not c.execute("SELECT 1 FROM sqlite_master WHERE name='chain_liquidation'").fetchone()
    c.close()
    log = Log()
    s = Store(v1, log)
    assert log.named("store_migrated")[0]["from_version"] == 1
    [a] = s.actions(0)  # the version-1 row is kept, the new column is empty
    assert (a["status"], a["realized_usd_e8"], a["gas_cost_wei"], a["gas_usd_e8"]) == ("included", 90, 7, None)
    s.chain_liquidation("aave", "liquidation_call", A, B, 6, 72, "0x2", 0, {}, None, "unseen", {})
    s.close()
    c = sqlite3.connect(v1)
    assert st.schema_version(c) == st.SCHEMA_VERSION and count(v1, "chain_liquidation") == 1
    assert [r[0] for r in c.execute("SELECT version FROM schema_version ORDER BY version")] == \
        list(range(1, st.SCHEMA_VERSION + 1))
    c.close()


def test_newer_schema_corrupt_file_and_locked_store_are_one_clear_error(tmp_path):
    newer = tmp_path / "newer.sqlite"
    Store(newer, Log()).close()
    c = sqlite3.connect(newer)
    c.execute("INSERT INTO schema_version VALUES (?, 0)", (st.SCHEMA_VERSION + 1,))
    c.commit()
    c.close()
    with pytest.raises(StoreError, match="newer keeper"):
        Store(newer, Log())

    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite" * 500)
    with pytest.raises(StoreError, match="not a valid SQLite database") as e:
        Store(bad, Log())
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    with pytest.raises(StoreError, match="not a valid SQLite database"):
        StoreReader(bad)

    locked = tmp_path / "locked.sqlite"
    other = sqlite3.connect(locked, isolation_level=None)
    other.execute("CREATE TABLE x (a)")
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreError, match="locked by another process"):
            Store(locked, Log(), open_timeout_s=0.2)
    finally:
        other.execute("ROLLBACK")
        other.close()

    with pytest.raises(StoreError, match="no store at"):
        StoreReader(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()


async def test_writes_from_the_event_loop_only_enqueue(tmp_path):
    path = tmp_path / "s.sqlite"
    s = HeldStore(path, Log())
    try:
        s.decided(1, 10, "aave", A, "sent", "", 5)
        assert await asyncio.to_thread(s.entered.wait, 10)  # the writer holds row 1 inside its commit

        async def cycle(block: int):
            for i in range(200):
                s.seen(block, block * 12, "aave", "aave_v3", A, "inventory", {"i": i}, 10, 1, 9)
                s.decided(block, block * 12, "aave", B, "skipped", "below_min_profit", -1)

        await asyncio.gather(*(cycle(b) for b in range(2, 7)))
        # every write returned while the writer had committed nothing: they only queued
        assert s.written == 0 and s.queued == 2000
        assert count(path, "decision") == 0 and count(path, "seen") == 0
        assert s.flush(0.05) == 0  # flush cannot finish while the commit is held
        s.release.set()
        assert await asyncio.to_thread(s.flush, 10) == 2001
        assert count(path, "decision") == 1001 and count(path, "seen") == 1000
    finally:
        s.release.set()
        s.close()


def test_full_queue_drops_the_oldest_and_counts_it(tmp_path):
    path = tmp_path / "s.sqlite"
    log = Log()
    s = HeldStore(path, log, max_queue=10)
    try:
        s.decided(0, 0, "p", A, "sent", "", 0)
        assert s.entered.wait(10)
        for block in range(1, 26):
            s.decided(block, block, "p", A, "skipped", "r", 0)
        assert s.dropped == 15 and s.queued == 10
        s.release.set()
        assert s.flush(10) == 11
    finally:
        s.release.set()
        s.close()
    c = sqlite3.connect(path)
    assert [r[0] for r in c.execute("SELECT block FROM decision ORDER BY id")] == [0, *range(16, 26)]
    c.close()
    assert log.named("store_dropped")[-1]["dropped"] == 15


def test_a_failing_write_is_retried_logged_and_never_raises(tmp_path):
    path = tmp_path / "s.sqlite"
    log = Log()
    s = Store(path, log, open_timeout_s=0.05, retry_delays_s=(0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05))
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        s.decided(1, 1, "p", A, "sent", "", 0)
        deadline = time.monotonic() + 10
        while not log.named("store_write_failed") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert log.named("store_write_failed")[0]["error"].startswith("OperationalError")
        blocker.execute("ROLLBACK")  # the lock goes away before the retries run out: the row lands
        assert s.flush(10) == 1 and s.failed == 0

        # retries exhausted while still locked: the rows are let go and counted; later rows are fine
        blocker.execute("BEGIN EXCLUSIVE")
        s.decided(2, 2, "p", A, "sent", "", 0)
        s.decided(3, 3, "p", A, "sent", "", 0)
        assert s.flush(30) == 1
        assert s.failed == 2 and log.named("store_write_failed")[-1]["gave_up"] is True
        blocker.execute("ROLLBACK")
        s.decided(4, 4, "p", A, "sent", "", 0)
        assert s.flush(10) == 2
    finally:
        if blocker.in_transaction:
            blocker.execute("ROLLBACK")
        blocker.close()
        s.close()


def test_disk_full_is_logged_and_the_keeper_goes_on(tmp_path):
    class TinyDisk(Store):
        def _connect_writer(self, timeout_s):
            conn = super()._connect_writer(timeout_s)
            self.tiny = conn
            return conn

    path = tmp_path / "s.sqlite"
    log = Log()
    s = TinyDisk(path, log, retry_delays_s=(0.01,))
    pages = s.tiny.execute("PRAGMA page_count").fetchone()[0]
    s.tiny.execute(f"PRAGMA max_page_count = {pages + 2}")  # the disk is full a few pages on
    for i in range(300):
        s.seen(i, i, "p", "k", A, "r", {"pad": "x" * 500}, 1, 1, 0)
    s.flush(10)
    assert 0 < s.failed and s.written + s.failed == 300
    assert any("full" in e["error"] for e in log.named("store_write_failed"))
    s.close()
    assert count(path, "seen") == s.written


KILL_SCRIPT = r"""
import sys, time
from keeper.store import Store
class Quiet:
    def info(self, *a, **k): pass
    warning = error = info
s = Store(sys.argv[1], Quiet())
i = 0
for _ in range(5):
    for _ in range(400):
        s.decided(i, i, "p", "0xacc", "skipped", "r", i)
        i += 1
    time.sleep(0.01)
print(s.flush(10), flush=True)
while True:  # keep writing until killed
    s.decided(i, i, "p", "0xacc", "skipped", "r", i)
    i += 1
    if i % 500 == 0:
        time.sleep(0.001)
"""


def test_kill_9_loses_nothing_reported_written(tmp_path):
    path = tmp_path / "s.sqlite"
    p = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        reported = int(line)
        time.sleep(0.3)  # more commits in flight
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    assert reported == 2000
    c = sqlite3.connect(path)
    blocks = {r[0] for r in c.execute("SELECT block FROM decision")}
    c.close()
    assert len(blocks) >= reported and set(range(reported)) <= blocks
    r = StoreReader(path)  # and it opens cleanly
    assert r.skips(0)[0]["count"] == len(blocks)
    r.close()


def test_store_flushed_is_logged_only_after_commits(tmp_path):
    log = Log()
    s = Store(tmp_path / "s.sqlite", log)
    for i in range(10):
        s.decided(i, i, "p", A, "sent", "", 0)
    s.flush(5)
    deadline = time.monotonic() + 5
    while not log.named("store_flushed") and time.monotonic() < deadline:
        time.sleep(0.02)
    flushed = log.named("store_flushed")
    assert flushed and flushed[-1]["written"] == 10
    assert count(tmp_path / "s.sqlite", "decision") >= flushed[-1]["written"]
    s.close()


def test_default_store_path_is_beside_the_journal(tmp_path):
    assert st.default_store_path(tmp_path / "j.jsonl", "0xAbC") == tmp_path / "store-0xabc.sqlite"
    assert str(st.default_store_path(None, None)) == ".keeper/store-dry-run.sqlite"


# -- missed.classify ------------------------------------------------------------------------
def liq(liquidator: str = B, block: int = 110, account: str = A) -> ChainLiquidation:
    return ChainLiquidation("aave", "liquidation_call", account, liquidator, block, "0x" + "33" * 32, 4,
                            {"debt_repaid": 10**21}, 40_00000000)


def test_classify_each_class():
    assert classify(liq(OURS.upper().replace("0X", "0x")), ours={OURS}, history=None)[0] == "ours"
    assert classify(liq(), ours={OURS}, history=None) == ("unseen", {"competitor": B, "block": 110})
    seen_later = AccountHistory(first_seen_block=120, last_seen_block=120)
    assert classify(liq(), ours={OURS}, history=seen_later)[0] == "unseen"

    k, why = classify(liq(), ours={OURS}, history=AccountHistory(first_seen_block=107, last_seen_block=109, sent=True,
                                                                 sent_block=108, tx_hash="0xours"))
    assert k == "raced" and why["competitor"] == B and why["block"] == 110 and why["blocks_behind"] == 3
    assert why["our_tx"] == "0xours"
    k, why = classify(liq(), ours={OURS}, history=AccountHistory(first_seen_block=109, last_seen_block=109,
                                                                 chosen_block=109))
    assert (k, why["sent"], why["blocks_behind"]) == ("raced", False, 1)

    k, why = classify(liq(), ours={OURS}, history=AccountHistory(first_seen_block=100, last_seen_block=109,
                                                                 last_skip_reason="below_min_profit",
                                                                 last_skip_block=109))
    assert (k, why["reason"], why["blocks_behind"]) == ("filtered", "below_min_profit", 10)
    # chosen after the last skip: raced, not filtered
    h = AccountHistory(first_seen_block=100, last_seen_block=109, last_skip_reason="no_swap_route",
                       last_skip_block=104, chosen_block=108)
    assert classify(liq(), ours={OURS}, history=h)[0] == "raced"


def test_tracker_history_as_of_a_block_and_bounded():
    t = Tracker(forget_blocks=100, episode_gap_blocks=5, max_accounts=3)
    t.saw("aave", A.upper().replace("0X", "0x"), 100)
    t.skipped("aave", A, 101, "below_min_profit")
    t.skipped("aave", A, 102, "below_min_profit")
    t.chose("aave", A, 103)
    t.sent("aave", A, 103, "0xtx")
    t.skipped("aave", A, 104, "in_flight")
    h = t.history("aave", A, upto_block=102)
    assert (h.first_seen_block, h.last_skip_reason, h.last_skip_block, h.sent) == (100, "below_min_profit", 102, False)
    assert classify(liq(block=103), ours=set(), history=h)[0] == "filtered"
    h = t.history("aave", A, upto_block=104)
    assert h.sent and h.tx_hash == "0xtx" and classify(liq(block=105), ours=set(), history=h)[0] == "raced"
    assert t.history("aave", A, upto_block=99) is None and t.history("maker", A) is None
    # a new episode after a gap: first seen again
    t.saw("aave", A, 200)
    assert t.history("aave", A).first_seen_block == 200 and not t.history("aave", A).sent
    # forgotten after forget_blocks without a touch; at most max_accounts kept
    for i, acct in enumerate(("0x01", "0x02", "0x03")):
        t.saw("maker", acct, 201 + i)
    assert len(t) == 3 and t.history("aave", A) is None  # the least recently touched went first
    t.saw("perps", "0x09", 400)
    assert len(t) == 1 and t.history("perps", "0x09").first_seen_block == 400


def test_old_opportunities_and_decisions_are_pruned_but_sends_and_outcomes_kept(tmp_path):
    path = tmp_path / "s.sqlite"
    log = Log()
    s = Store(path, log, retention_days=1)
    day = 86_400
    fill_one_of_each(s)  # everything at ts ~1_700_000_000
    s.flush(5)
    s._last_prune = -float("inf")  # the hourly prune is due with the next commit
    s.seen(200, 1_700_000_000 + 3 * day, "aave", "aave_v3", A, "flash", {}, 1, 0, 1)  # three days later
    s.decided(200, 1_700_000_000 + 3 * day, "aave", A, "sent", "", 1)
    s.flush(5)
    s.close()
    assert count(path, "seen") == 1 and count(path, "decision") == 1  # the old ones are gone
    assert count(path, "tx") == 1 and count(path, "outcome") == 1 and count(path, "chain_liquidation") == 1
    assert log.named("store_pruned") and log.named("store_pruned")[0]["rows"] == 2


def test_retention_zero_keeps_everything(tmp_path):
    path = tmp_path / "s.sqlite"
    s = Store(path, Log(), retention_days=0)
    fill_one_of_each(s)
    s.seen(200, 1_700_000_000 + 10**8, "aave", "aave_v3", A, "flash", {}, 1, 0, 1)
    s.flush(5)
    s.close()
    assert count(path, "seen") == 2 and count(path, "decision") == 1
