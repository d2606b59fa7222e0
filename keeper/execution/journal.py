"""The send journal: every transaction the keeper signs, recorded before it is broadcast.

JSON lines, appended and fsync'ed, so a restarted keeper (even after kill -9) knows what
is still in flight and never sends the same intent twice. Records:

  {"t": "intent", "id", "key", "nonce", "to", "data", "value", "expected_profit_usd_e8", "profit_cap_wei", "block", "ts"}
  {"t": "renonce", "id", "nonce"}                                         the node had used that nonce
  {"t": "signed", "id", "hash", "nonce", "gas", "max_fee", "prio", "raw", "kind"}   before broadcast
  {"t": "broadcast_failed", "id", "hash", "error"}    the broadcast raised; the node may or may not have it
  {"t": "rebroadcast", "id", "hash"}                                      the same signed tx sent again
  {"t": "mined",  "id", "hash", "block", "status", "gas_used", "gas_price"}
  {"t": "unmined", "id"}                                                  reorged out: pending again
  {"t": "final",  "id", "hash", "block"}                                  after N confirmations
  {"t": "dropped", "id", "reason"}                                        nonce used by another tx

A record counts once append() has returned. On open the file is parsed once into memory:
a torn last record (a crash mid-write) is cut off and reported in `Journal.repaired`; a bad
record anywhere else is a ConfigError naming the line. Record types not listed above are
ignored, so an older keeper can read a newer journal.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from ..errors import ConfigError, KeeperError

IN_FLIGHT = ("pending", "mined")

# required fields and their types, per record type; other types are ignored
_REQUIRED: dict[str, dict[str, type]] = {
    "intent": {"id": str, "key": str, "nonce": int, "to": str},
    "renonce": {"id": str, "nonce": int},
    "signed": {"id": str, "hash": str, "gas": int, "max_fee": int, "prio": int},
    "broadcast_failed": {"id": str, "hash": str, "error": str},
    "rebroadcast": {"id": str, "hash": str},
    "mined": {"id": str, "hash": str, "block": int},
    "unmined": {"id": str},
    "final": {"id": str},
    "dropped": {"id": str},
}
# optional fields the gas budget is computed from, checked when present
_OPTIONAL: dict[str, dict[str, type | tuple[type, ...]]] = {
    "mined": {"ts": (int, float), "gas_used": int, "gas_price": int},
}
_KIND: dict[Any, str] = {int: "an integer", str: "a string"}


class JournalWriteError(KeeperError):
    """A record could not be written durably: it does not count, and nothing may be sent on it."""


@dataclass
class IntentState:
    id: str
    key: str
    nonce: int
    to: str
    expected_profit_usd_e8: int
    block: int
    data: str = "0x"
    value: int = 0
    profit_cap_wei: int = 0
    block_hash: str = ""
    hashes: list[str] = field(default_factory=list)
    raws: dict[str, str] = field(default_factory=dict)
    fees: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # hash -> (gas, max_fee, prio)
    kinds: dict[str, str] = field(default_factory=dict)  # hash -> "send" | "replace" | "cancel"
    status: str = "pending"  # pending | mined | final | dropped
    mined_hash: str | None = None
    mined_block: int | None = None
    gas_used: int = 0
    gas_price: int = 0
    receipt_status: int | None = None
    broadcast_errors: list[str] = field(default_factory=list)  # from broadcast_failed records

    def copy(self) -> IntentState:
        return replace(self, hashes=list(self.hashes), raws=dict(self.raws), fees=dict(self.fees),
                       kinds=dict(self.kinds), broadcast_errors=list(self.broadcast_errors))


def record_problem(rec: Any) -> str | None:
    """Why `rec` is not a valid journal record, or None."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    t = rec.get("t")
    if not isinstance(t, str):
        return 'no "t" record type' if t is None else '"t" is not a string'
    required, optional = _REQUIRED.get(t, {}), _OPTIONAL.get(t, {})
    for name, typ in [*required.items(), *optional.items()]:
        if name not in rec:
            if name in required:
                return f'a {t} record without "{name}"'
            continue
        if not isinstance(rec[name], typ) or isinstance(rec[name], bool):
            return f'"{name}" of a {t} record is not {_KIND.get(typ, "a number")}'
    return None


class _GasLedger:
    """Gas paid by mined records, by time: the sum since any time by one bisect."""

    def __init__(self) -> None:
        self._ts: list[float] = []
        self._cum: list[int] = []  # _cum[i]: wei of the records _ts[0..i]

    def add(self, ts: float, wei: int) -> None:
        if not self._ts or ts >= self._ts[-1]:
            self._ts.append(ts)
            self._cum.append((self._cum[-1] if self._cum else 0) + wei)
            return
        i = bisect_right(self._ts, ts)  # a clock that went back: rare, so rebuild the tail
        self._ts.insert(i, ts)
        self._cum.insert(i, wei + (self._cum[i - 1] if i else 0))
        for j in range(i + 1, len(self._cum)):
            self._cum[j] += wei

    def since(self, ts: float) -> int:
        if not self._cum:
            return 0
        i = bisect_left(self._ts, ts)
        return self._cum[-1] - (self._cum[i - 1] if i else 0)


class Journal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.repaired: str | None = None  # what was cut on open, for the caller to log
        self._states: dict[str, IntentState] = {}
        self._open_ids: set[str] = set()  # intents pending or mined
        self._order: dict[str, int] = {}  # intent id -> first-seen index, for in_flight() order
        self._gas = _GasLedger()
        self._fh = self._open()
        try:
            self._end = self._load()  # offset after the last good record
        except BaseException:
            self._fh.close()
            raise
        self._torn = False  # a failed append may have left a partial line after _end

    # -- open ---------------------------------------------------------------------------
    def _open(self) -> BinaryIO:
        """Open for reading and appending; a new file and new directories are fsync'ed into place."""
        try:
            missing = [d for d in self.path.parents if not d.exists()]
            existed = self.path.exists()
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except FileExistsError:  # a file where the directory should be
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from None
            fh: BinaryIO = open(self.path, "a+b", buffering=0)
            try:  # one keeper process per journal: two would each think they own the nonces
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                raise ConfigError(f"keeper.journal: {self.path} is in use by another keeper process "
                                  "(one process per signing key and journal)") from None
            if not existed:
                for d in {self.path.parent, *(d.parent for d in missing)}:
                    _fsync_dir(d)
            return fh
        except OSError as e:
            raise ConfigError(f"keeper.journal: cannot open {self.path}: {e.strerror or e}") from None

    def _load(self) -> int:
        try:
            self._fh.seek(0)
            data = self._fh.read()
        except OSError as e:
            raise ConfigError(f"keeper.journal: cannot read {self.path}: {e.strerror or e}") from None
        *lines, tail = data.split(b"\n")  # tail: after the last newline, b"" when the file ends with one
        last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
        end = offset = 0
        for i, line in enumerate(lines):
            offset += len(line) + 1
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                if i == last and not tail:  # a torn last record that happens to end in a newline
                    return self._cut(end, len(data), i + 1)
                why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
                self._bad(i + 1, f"not JSON: {why}")
            problem = record_problem(rec)
            if problem:
                self._bad(i + 1, problem)
            self._apply(rec)
            end = offset
        if tail:  # the last write never finished
            return self._cut(end, len(data), len(lines) + 1)
        return len(data)

    def _bad(self, line: int, why: str) -> NoReturn:
        raise ConfigError(f"keeper.journal: {self.path} line {line} is not a valid record ({why}); "
                          "move the file aside or fix that line")

    def _cut(self, end: int, size: int, line: int) -> int:
        try:
            self._truncate(end)
        except OSError as e:
            raise ConfigError(f"keeper.journal: cannot cut the torn last record of {self.path}: "
                              f"{e.strerror or e}") from None
        self.repaired = f"cut a torn last record of {size - end} bytes at line {line}"
        return end

    def _truncate(self, end: int) -> None:
        self._fh.truncate(end)
        os.fsync(self._fh.fileno())

    # -- write ----------------------------------------------------------------------------
    def append(self, rec: dict[str, Any]) -> None:
        """Write one record durably (one write, fsync) and apply it; raises JournalWriteError."""
        rec = {"ts": round(time.time(), 3), **rec}
        problem = record_problem(rec)
        if problem:
            raise ValueError(f"keeper.journal: refusing to write an invalid record ({problem})")
        line = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        try:
            if self._torn:  # cut what the last failed write left before adding to it
                self._truncate(self._end)
                self._torn = False
            written = self._fh.write(line)
            if written != len(line):
                raise OSError(errno.EIO, f"short write, {written} of {len(line)} bytes")
            os.fsync(self._fh.fileno())
        except OSError as e:
            self._torn = True
            try:
                self._truncate(self._end)
                self._torn = False
            except OSError:
                pass  # tried again before the next append
            raise JournalWriteError(f"keeper.journal: cannot write {self.path}: {e.strerror or e}") from None
        self._end += len(line)
        self._apply(rec)

    def close(self) -> None:
        self._fh.close()

    # -- state ----------------------------------------------------------------------------
    def _apply(self, r: dict[str, Any]) -> None:
        """The state machine, one valid record at a time."""
        t, iid = r["t"], r.get("id")
        if t == "mined":
            self._gas.add(r.get("ts", 0), r.get("gas_used", 0) * r.get("gas_price", 0))
        if t == "intent":
            self._states[iid] = IntentState(id=iid, key=r["key"], nonce=r["nonce"], to=r["to"],
                                            expected_profit_usd_e8=r.get("expected_profit_usd_e8", 0),
                                            block=r.get("block", 0), data=r.get("data", "0x"),
                                            value=r.get("value", 0), profit_cap_wei=r.get("profit_cap_wei", 0),
                                            block_hash=r.get("block_hash", ""))
            self._order.setdefault(iid, len(self._order))
        s = self._states.get(iid) if isinstance(iid, str) else None
        if s is None:
            return
        if t == "signed":
            s.hashes.append(r["hash"])
            s.raws[r["hash"]] = r.get("raw", "")
            s.fees[r["hash"]] = (r["gas"], r["max_fee"], r["prio"])
            s.kinds[r["hash"]] = r.get("kind", "send")
        elif t == "broadcast_failed":
            s.broadcast_errors.append(r["error"])
        elif t == "renonce":
            s.nonce = r["nonce"]
        elif t == "mined":
            s.status, s.mined_hash, s.mined_block = "mined", r["hash"], r["block"]
            s.gas_used, s.gas_price, s.receipt_status = r.get("gas_used", 0), r.get("gas_price", 0), r.get("status")
        elif t == "unmined":  # reorged out
            s.status, s.mined_hash, s.mined_block = "pending", None, None
        elif t == "final":
            s.status = "final"
        elif t == "dropped":
            s.status = "dropped"
        if s.status in IN_FLIGHT:
            self._open_ids.add(iid)
        else:
            self._open_ids.discard(iid)

    # -- read -----------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Every record in the file (reads it: for tests and tools)."""
        try:
            with open(self.path, "rb") as fh:
                lines = fh.read().split(b"\n")
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def states(self) -> dict[str, IntentState]:
        """Every intent's state (copies)."""
        return {iid: s.copy() for iid, s in self._states.items()}

    def in_flight(self) -> list[IntentState]:
        """Intents pending or mined but not final, in the order they were first written (copies)."""
        return [self._states[i].copy() for i in sorted(self._open_ids, key=self._order.__getitem__)]

    def gas_spent_wei_since(self, since_ts: float) -> int:
        """Gas paid by transactions mined at or after `since_ts` (journal time)."""
        return self._gas.since(since_ts)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
