"""The send journal: every transaction the keeper signs, recorded before it is broadcast.

JSON lines, appended and fsync'ed, so a restarted keeper (even after kill -9) knows what
is still in flight and never sends the same intent twice. Records:

  {"t": "intent", "id", "key", "nonce", "to", "data", "value", "expected_profit_usd_e8", "profit_cap_wei", "block", "ts"}
  {"t": "renonce", "id", "nonce"}                                         the node had used that nonce
  {"t": "signed", "id", "hash", "nonce", "gas", "max_fee", "prio", "raw", "kind"}   before broadcast
  {"t": "mined",  "id", "hash", "block", "status", "gas_used", "gas_price"}
  {"t": "final",  "id", "hash", "block"}                                  after N confirmations
  {"t": "dropped", "id", "reason"}                                        nonce used by another tx
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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


class Journal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def append(self, rec: dict[str, Any]) -> None:
        rec = {"ts": round(time.time(), 3), **rec}
        self._fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def records(self) -> list[dict[str, Any]]:
        out = []
        try:
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        continue  # a torn last line after a crash: the record was never acted on
        except FileNotFoundError:
            pass
        return out

    def states(self) -> dict[str, IntentState]:
        states: dict[str, IntentState] = {}
        for r in self.records():
            t, iid = r.get("t"), r.get("id")
            if t == "intent":
                states[iid] = IntentState(id=iid, key=r["key"], nonce=r["nonce"], to=r["to"],
                                          expected_profit_usd_e8=r.get("expected_profit_usd_e8", 0),
                                          block=r.get("block", 0), data=r.get("data", "0x"),
                                          value=r.get("value", 0), profit_cap_wei=r.get("profit_cap_wei", 0),
                                          block_hash=r.get("block_hash", ""))
                continue
            s = states.get(iid)
            if s is None:
                continue
            if t == "signed":
                s.hashes.append(r["hash"])
                s.raws[r["hash"]] = r.get("raw", "")
                s.fees[r["hash"]] = (r["gas"], r["max_fee"], r["prio"])
                s.kinds[r["hash"]] = r.get("kind", "send")
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
        return states

    def in_flight(self) -> list[IntentState]:
        return [s for s in self.states().values() if s.status in ("pending", "mined")]

    def gas_spent_wei_since(self, since_ts: float) -> int:
        total = 0
        for r in self.records():
            if r.get("t") == "mined" and r.get("ts", 0) >= since_ts:
                total += r.get("gas_used", 0) * r.get("gas_price", 0)
        return total
