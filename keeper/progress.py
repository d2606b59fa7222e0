"""Progress of long work (event backfills): a bar on a terminal, `backfill_progress` lines in
the logs otherwise. Only long work reports: a range of a few chunks stays silent."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, TextIO

MIN_CHUNKS = 10  # a range of fewer eth_getLogs chunks says nothing
LOG_EVERY_S = 5.0
BAR_EVERY_S = 0.2
BAR_WIDTH = 30


class Progress:
    def __init__(self, what: str, start: int, end: int, log: Any, found: Callable[[], int] | None = None,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic, min_blocks: int = 20_000):
        self.what = what
        self.start = start
        self.end = end
        self.total = max(end - start + 1, 0)
        self.log = log
        self.found = found or (lambda: 0)
        self.stream = stream if stream is not None else sys.stderr
        self.clock = clock
        self.t0 = clock()
        self.last = 0.0
        self.enabled = self.total >= min_blocks
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.drawn = False

    def update(self, done_to: int) -> None:
        """`done_to`: the last block processed."""
        if not self.enabled:
            return
        now = self.clock()
        if now - self.last < (BAR_EVERY_S if self.tty else LOG_EVERY_S) and done_to < self.end:
            return
        self.last = now
        done = min(max(done_to - self.start + 1, 0), self.total)
        rate = done / max(now - self.t0, 1e-9)
        if self.tty:
            filled = BAR_WIDTH * done // self.total
            eta = (self.total - done) / rate if rate > 0 else 0
            self.stream.write(f"\r{self.what} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {100 * done // self.total:3d}% "
                              f"blocks {done:,}/{self.total:,}  found {self.found():,}  {rate:,.0f} blocks/s  "
                              f"eta {eta:,.0f}s ")
            self.stream.flush()
            self.drawn = True
        else:
            self.log.info("backfill_progress", what=self.what, blocks_done=done, blocks_total=self.total,
                          found=self.found(), blocks_per_s=round(rate), to_block=done_to)

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
