"""The send journal: torn tails, bad records, paths, failed writes, and state kept in memory."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from keeper.errors import ConfigError
from keeper.execution.journal import Journal, JournalWriteError


def intent(iid: str, nonce: int = 0, **kw: Any) -> dict[str, Any]:
    return {"t": "intent", "id": iid, "key": f"aave:{iid}", "nonce": nonce, "to": "0xabc", "data": "0x",
            "value": 0, "expected_profit_usd_e8": 10**8, "profit_cap_wei": 0, "block": 1, "block_hash": "0xb1", **kw}


def signed(iid: str, h: str, nonce: int = 0, kind: str = "send") -> dict[str, Any]:
    return {"t": "signed", "id": iid, "hash": h, "nonce": nonce, "gas": 21_000, "max_fee": 100, "prio": 2,
            "raw": "0x02", "kind": kind}


def mined(iid: str, h: str, gas_used: int = 21_000, gas_price: int = 50, **kw: Any) -> dict[str, Any]:
    return {"t": "mined", "id": iid, "hash": h, "block": 7, "status": 1, "gas_used": gas_used,
            "gas_price": gas_price, **kw}


def write(path: Path, *recs: dict[str, Any]) -> None:
    j = Journal(path)
    for r in recs:
        j.append(r)
    j.close()


# -- torn tail --------------------------------------------------------------------------------
def test_a_torn_last_record_is_cut_and_the_next_record_survives(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    write(path, intent("a"), signed("a", "0x1"))
    good = path.read_bytes()
    fragment = b'{"ts":1.0,"t":"mined","id":"a","hash":"0x1","blo'
    with open(path, "ab") as fh:
        fh.write(fragment)  # kill -9 in the middle of a write
    j = Journal(path)
    assert j.repaired == f"cut a torn last record of {len(fragment)} bytes at line 3"
    assert path.read_bytes() == good
    j.append(mined("a", "0x1"))
    j.close()
    j = Journal(path)
    assert j.repaired is None
    assert [r["t"] for r in j.records()] == ["intent", "signed", "mined"]
    assert j.states()["a"].status == "mined"
    assert j.in_flight()[0].mined_hash == "0x1"


def test_a_last_line_that_is_not_json_is_cut_even_with_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    write(path, intent("a"))
    good = path.read_bytes()
    with open(path, "ab") as fh:
        fh.write(b'{"t":"signed","id":\x00\x00\n\n')
    j = Journal(path)
    assert j.repaired is not None and "at line 2" in j.repaired
    assert path.read_bytes() == good
    assert list(j.states()) == ["a"]


def test_an_intact_journal_is_opened_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    write(path, intent("a"), signed("a", "0x1"))
    with open(path, "ab") as fh:
        fh.write(b"\n")  # a blank line is not damage
    before = path.read_bytes()
    j = Journal(path)
    assert j.repaired is None
    assert path.read_bytes() == before
    assert j.states()["a"].hashes == ["0x1"]


# -- bad records ------------------------------------------------------------------------------
@pytest.mark.parametrize("line, why", [
    (b'{"t":"signed","id":', "not JSON"),
    (b'["intent"]', "not a JSON object"),
    (b'{"id":"a"}', 'no "t"'),
    (b'{"t":"signed","id":"a","nonce":0,"gas":1,"max_fee":1,"prio":1}', 'a signed record without "hash"'),
    (b'{"t":"mined","id":"a","hash":"0x1","block":7,"gas_used":"21000"}', '"gas_used" of a mined record is not an integer'),
])
def test_a_bad_record_before_the_tail_is_an_error_naming_the_file_and_line(tmp_path: Path, line: bytes,
                                                                            why: str) -> None:
    path = tmp_path / "journal.jsonl"
    write(path, intent("a"))
    with open(path, "ab") as fh:
        fh.write(line + b"\n" + json.dumps(signed("a", "0x2")).encode() + b"\n")  # a good record after it
    with pytest.raises(ConfigError) as e:
        Journal(path)
    msg = str(e.value)
    assert msg.startswith(f"keeper.journal: {path} line 2 is not a valid record (")
    assert why in msg and msg.endswith("; move the file aside or fix that line")
    assert "\n" not in msg


def test_a_complete_last_record_that_is_invalid_is_an_error_not_a_repair(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    write(path, intent("a"))
    with open(path, "ab") as fh:
        fh.write(b'{"id":"a"}\n')
    with pytest.raises(ConfigError, match="line 2 is not a valid record"):
        Journal(path)


def test_unknown_record_types_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    write(path, intent("a"), {"t": "from_the_future", "id": "a", "gas_used": "lots"}, signed("a", "0x1"))
    j = Journal(path)
    assert j.states()["a"].hashes == ["0x1"]
    assert [r["t"] for r in j.records()] == ["intent", "from_the_future", "signed"]


def test_an_invalid_record_is_not_written(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    with pytest.raises(ValueError, match='a signed record without "hash"'):
        j.append({"t": "signed", "id": "a"})
    assert j.records() == []


# -- directory and path -----------------------------------------------------------------------
def test_missing_directories_are_created_and_fsynced_with_a_new_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            synced.extend(str(p) for p in (tmp_path, tmp_path / "a", tmp_path / "a" / "b")
                          if os.stat(p).st_ino == st.st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    path = tmp_path / "a" / "b" / "journal.jsonl"
    Journal(path).close()
    assert path.is_file()
    assert sorted(synced) == sorted(str(p) for p in (tmp_path, tmp_path / "a", tmp_path / "a" / "b"))
    synced.clear()
    Journal(path).close()  # an existing file: nothing new to make durable
    assert synced == []


def _path_is_a_directory(tmp_path: Path) -> Path:
    (tmp_path / "journal.jsonl").mkdir()
    return tmp_path / "journal.jsonl"


def _path_under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "state").write_text("")
    return tmp_path / "state" / "journal.jsonl"


def _path_deeper_under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "state").write_text("")
    return tmp_path / "state" / "keeper" / "journal.jsonl"


def _path_in_a_read_only_directory(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root may write a read-only directory")
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    return d / "journal.jsonl"


@pytest.mark.parametrize("make, strerror", [
    (_path_is_a_directory, "Is a directory"),
    (_path_under_a_file, "Not a directory"),
    (_path_deeper_under_a_file, "Not a directory"),
    (_path_in_a_read_only_directory, "Permission denied"),
])
def test_an_unwritable_path_is_a_one_line_config_error(tmp_path: Path, make: Any, strerror: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError) as e:
        Journal(path)
    assert str(e.value) == f"keeper.journal: cannot open {path}: {strerror}"


# -- durable appends --------------------------------------------------------------------------
class HalfWrite:
    """A file that takes half a line and then is full; its first `cut_fails` truncations fail too."""

    def __init__(self, fh: Any, cut_fails: int = 0):
        self.fh, self.cut_fails = fh, cut_fails

    def write(self, data: bytes) -> int:
        self.fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def truncate(self, size: int) -> int:
        if self.cut_fails:
            self.cut_fails -= 1
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return int(self.fh.truncate(size))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fh, name)


def test_a_failed_write_raises_and_leaves_no_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append(intent("a"))
    good = path.read_bytes()
    real, j._fh = j._fh, HalfWrite(j._fh)  # type: ignore[assignment]
    with pytest.raises(JournalWriteError) as e:
        j.append(signed("a", "0x1"))
    assert str(e.value) == f"keeper.journal: cannot write {path}: No space left on device"
    assert path.read_bytes() == good
    assert j.states()["a"].hashes == []  # a record that failed does not count
    j._fh = real  # type: ignore[assignment]
    j.append(signed("a", "0x2"))
    j.close()
    j = Journal(path)
    assert j.repaired is None
    assert j.states()["a"].hashes == ["0x2"]


def test_a_partial_line_that_could_not_be_cut_is_cut_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append(intent("a"))
    good = path.read_bytes()
    real, j._fh = j._fh, HalfWrite(j._fh, cut_fails=1)  # type: ignore[assignment]
    with pytest.raises(JournalWriteError):
        j.append(signed("a", "0x1"))
    assert path.read_bytes() != good  # the half line is still there
    j._fh = real  # type: ignore[assignment]
    j.append(signed("a", "0x2"))
    j.close()
    j = Journal(path)
    assert j.repaired is None
    assert [r.get("hash") for r in j.records()] == [None, "0x2"]


def test_a_failed_fsync_does_not_count_the_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append(intent("a"))
    good = path.read_bytes()
    real_fsync, calls = os.fsync, []

    def failing_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_once)
    with pytest.raises(JournalWriteError, match="Input/output error"):
        j.append(signed("a", "0x1"))
    assert path.read_bytes() == good
    assert j.states()["a"].hashes == []


# -- state ------------------------------------------------------------------------------------
def test_the_state_follows_every_record_type(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    j.append(intent("a", nonce=3))
    j.append({"t": "renonce", "id": "a", "nonce": 4})
    j.append(signed("a", "0x1", nonce=4))
    j.append({"t": "broadcast_failed", "id": "a", "hash": "0x1", "error": "connection reset"})
    j.append({"t": "rebroadcast", "id": "a", "hash": "0x1"})
    j.append(signed("a", "0x2", nonce=4, kind="replace"))
    s = j.states()["a"]
    assert (s.nonce, s.status, s.hashes, s.broadcast_errors) == (4, "pending", ["0x1", "0x2"], ["connection reset"])
    assert s.kinds == {"0x1": "send", "0x2": "replace"} and s.fees["0x2"] == (21_000, 100, 2)
    j.append(mined("a", "0x2"))
    s = j.states()["a"]
    assert (s.status, s.mined_hash, s.mined_block, s.gas_used, s.gas_price, s.receipt_status) == \
        ("mined", "0x2", 7, 21_000, 50, 1)
    j.append({"t": "unmined", "id": "a"})
    assert [x.id for x in j.in_flight()] == ["a"] and j.in_flight()[0].mined_hash is None
    j.append(mined("a", "0x2"))
    j.append({"t": "final", "id": "a", "hash": "0x2", "block": 7})
    assert j.states()["a"].status == "final" and j.in_flight() == []
    j.append(intent("b", nonce=5))
    j.append({"t": "dropped", "id": "b", "reason": "nonce_used_by_another_transaction"})
    j.append({"t": "signed", "id": "nobody", "hash": "0x9", "gas": 1, "max_fee": 1, "prio": 1})  # no intent: ignored
    assert j.states()["b"].status == "dropped" and set(j.states()) == {"a", "b"}


def test_the_state_kept_in_memory_is_the_state_read_back(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    for i in range(30):
        iid = f"i{i}"
        j.append(intent(iid, nonce=i))
        j.append(signed(iid, f"0x{i}", nonce=i))
        if i % 3 == 0:
            j.append(mined(iid, f"0x{i}"))
        if i % 6 == 0:
            j.append({"t": "final", "id": iid, "hash": f"0x{i}", "block": 7})
        if i % 5 == 4:
            j.append({"t": "dropped", "id": iid, "reason": "x"})
    j.close()
    again = Journal(path)
    assert again.states() == j.states()
    assert [s.id for s in again.in_flight()] == [s.id for s in j.in_flight()] == \
        [f"i{i}" for i in range(30) if i % 6 and i % 5 != 4]


def test_states_are_copies_the_caller_cannot_corrupt(tmp_path: Path) -> None:
    j = Journal(tmp_path / "journal.jsonl")
    j.append(intent("a"))
    j.append(signed("a", "0x1"))
    j.states()["a"].hashes.append("0xbad")
    j.in_flight()[0].status = "final"
    assert j.states()["a"].hashes == ["0x1"] and [s.id for s in j.in_flight()] == ["a"]


def test_gas_spent_counts_mined_records_at_or_after_a_time(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    j = Journal(path)
    j.append(intent("a"))
    j.append(mined("a", "0x1", gas_used=10, gas_price=1, ts=100.0))
    j.append(mined("a", "0x1", gas_used=10, gas_price=10, ts=200.0))
    j.append(mined("a", "0x1", gas_used=10, gas_price=100, ts=150.0))  # the clock went back
    j.append(mined("nobody", "0x2", gas_used=10, gas_price=1000, ts=300.0))  # paid even without an intent
    expected = {0: 11110, 100: 11110, 100.5: 11100, 150: 11100, 150.1: 10100, 200: 10100, 300: 10000, 301: 0}
    assert {ts: j.gas_spent_wei_since(ts) for ts in expected} == expected
    j.close()
    again = Journal(path)
    assert {ts: again.gas_spent_wei_since(ts) for ts in expected} == expected
    assert Journal(tmp_path / "empty.jsonl").gas_spent_wei_since(0) == 0


def test_a_large_journal_is_parsed_once_and_appends_do_not_read_it_again(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.jsonl"
    lines = []
    for i in range(5000):  # 20,000 records
        iid = f"i{i:05d}"
        lines += [intent(iid, nonce=i), signed(iid, f"0x{i}", nonce=i), mined(iid, f"0x{i}", ts=float(i)),
                  {"t": "final", "id": iid, "hash": f"0x{i}", "block": 7}]
    lines[-1] = {"t": "rebroadcast", "id": "i04999", "hash": "0x4999"}  # one left in flight
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))

    parsed, opened = [], []
    real_loads, real_open, real_os_open = json.loads, builtins.open, os.open

    def loads(s: Any, *a: Any, **kw: Any) -> Any:
        parsed.append(1)
        return real_loads(s, *a, **kw)

    def spy_open(file: Any, *a: Any, **kw: Any) -> Any:
        if isinstance(file, (str, os.PathLike)) and Path(file) == path:
            opened.append(1)
        return real_open(file, *a, **kw)

    def spy_os_open(file: Any, *a: Any, **kw: Any) -> int:
        if Path(file) == path:
            opened.append(1)
        return real_os_open(file, *a, **kw)

    monkeypatch.setattr(json, "loads", loads)
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(io, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    j = Journal(path)
    assert len(parsed) == 20_000 and len(opened) == 1  # each record parsed once, the file opened once
    parsed.clear(), opened.clear()
    for i in range(1000):
        j.append(signed("i04999", f"0xr{i}", nonce=4999, kind="replace"))
        assert len(j.in_flight()) == 1
    assert j.gas_spent_wei_since(4990.0) == 10 * 21_000 * 50
    assert j.in_flight()[0].hashes[-1] == "0xr999"
    assert parsed == [] and opened == []


def test_a_second_keeper_on_the_same_journal_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    first = Journal(path)
    with pytest.raises(ConfigError, match="in use by another keeper process") as e:
        Journal(path)
    assert "\n" not in str(e.value)
    first.close()
    Journal(path).close()  # free again once the first is closed
