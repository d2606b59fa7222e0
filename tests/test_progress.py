"""Long backfills say how far they are: a bar on a terminal, `backfill_progress` log lines
otherwise; short ranges stay quiet."""

from __future__ import annotations

import io

import pytest
from structlog.testing import capture_logs

from keeper.progress import Progress

AAVE = "aave-v3-devnet"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.asyncio(loop_scope="session")
async def test_a_long_backfill_logs_its_progress_and_what_it_found(chain, make_keeper):
    # the devnet's few hundred blocks in chunks of 20: a backfill of more than 10 chunks
    with capture_logs() as logs:
        keeper = await make_keeper(only=AAVE, dry_run=True, KEEPER_CHAIN__LOG_CHUNK_BLOCKS="20")
        await keeper.gather(await keeper.read_head())
    lines = [e for e in logs if e["event"] == "backfill_progress"]
    assert lines, [e["event"] for e in logs]
    last = lines[-1]
    assert last["blocks_done"] == last["blocks_total"] == chain.block_number() + 1
    assert last["found"] == len(keeper.adapters[AAVE].accounts) > 0
    assert last["what"] == f"{AAVE} borrowers"


def test_on_a_terminal_progress_is_a_bar_that_ends_with_a_newline():
    out = Terminal()
    now = [0.0]
    p = Progress("aave borrowers", 1, 100_000, log=None, found=lambda: 42, stream=out, clock=lambda: now[0])
    for block in range(1, 100_001, 10_000):
        now[0] += 1.0
        p.update(min(block + 9_999, 100_000))
    p.finish()
    text = out.getvalue()
    assert text.count("\r") == 10 and text.endswith("\n")
    assert "100% blocks 100,000/100,000  found 42" in text and "[##############################]" in text


def test_short_ranges_stay_quiet():
    out = Terminal()
    p = Progress("x", 1, 5_000, log=None, stream=out, min_blocks=20_000)
    p.update(5_000)
    p.finish()
    assert out.getvalue() == ""
