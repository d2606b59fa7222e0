"""`keeper report` on a store filled through its write API with realistic rows: the numbers,
the JSON and CSV formats, --since, a missing store."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from calendar import timegm
from time import strptime

import pytest

from keeper import cli
from keeper.missed import AccountHistory, ChainLiquidation, classify
from keeper.report import parse_since
from keeper.store import Store, StoreReader

from .conftest import DEVNET_CONFIG, KEEPER, REPO

D1 = timegm(strptime("2026-11-01", "%Y-%m-%d"))
D2 = D1 + 86_400
OURS = {KEEPER.lower(), "0x" + "fa" * 20}  # the EOA and its liquidator contract
COMP = "0x" + "c0" * 20
ETH = 10**18


class Quiet:
    def info(self, *a, **k):
        pass

    warning = error = info


def acct(n: int) -> str:
    return "0x" + f"{n:02x}" * 20


def h(n: int) -> str:
    return "0x" + f"{n:02x}" * 32


def send(s: Store, iid: str, proto: str, account: str, tx_hash: str, nonce: int, block: int, ts: int,
         expected: int, route: str = "flash") -> None:
    s.tx(iid, f"{proto}:{account}", proto, account, tx_hash, nonce, 60 * 10**9, 2 * 10**9, 700_000, route, "public",
         expected, block, ts)


def fill(s: Store) -> None:
    """Six sends over two days on two protocols (included, reverted, replaced then included,
    pending, cancelled), skips, opportunities, and six liquidations seen on chain."""
    usd = 10**8
    for i, (proto, kind) in enumerate((("aave", "aave_v3"), ("maker", "maker"))):
        s.seen(1000, D1 + 90, proto, kind, acct(1 + i), "flash", {"debt_to_cover": 51_440_148_300, "swap_route":
                                                                   "WETH >v3 0.05%> USDC"}, 2100 * usd, 12 * usd,
               2088 * usd)
    # day 1
    send(s, "i1", "aave", acct(1), h(1), 0, 1000, D1 + 100, 2000 * usd)
    s.decided(1000, D1 + 100, "aave", acct(1), "sent", "", 2000 * usd)
    s.outcome("i1", h(1), "aave", acct(1), "included", 1001, D1 + 112, 531_686, ETH // 100, 2000 * usd, 1990 * usd,
              {"profit": 1_990_000_000, "token": "0xusdc"})
    send(s, "i2", "aave", acct(2), h(2), 1, 1002, D1 + 200, 500 * usd)
    s.outcome("i2", h(2), "aave", acct(2), "reverted", 1003, D1 + 212, 300_000, 5 * ETH // 1000, 500 * usd, -15 * usd,
              {})
    send(s, "i3", "maker", acct(3), h(3), 2, 1004, D1 + 300, 300 * usd, route="take")
    send(s, "i3", "maker", acct(3), h(4), 2, 1007, D1 + 336, 298 * usd, route="take")  # replacement, same nonce
    s.outcome("i3", h(3), "maker", acct(3), "replaced", 1008, D1 + 348, 0, 0, 300 * usd, None, {})
    s.outcome("i3", h(4), "maker", acct(3), "included", 1008, D1 + 348, 400_000, 2 * ETH // 100, 298 * usd,
              310 * usd, {"dai": 310 * ETH})
    for b, a, r in ((1000, 5, "below_min_profit"), (1001, 5, "below_min_profit"), (1001, 6, "below_min_profit"),
                    (1002, 7, "no_swap_route")):
        s.decided(b, D1 + 12 * (b - 1000), "aave", acct(a), "skipped", r, -2 * usd)
    # day 2
    send(s, "i4", "aave", acct(4), h(5), 3, 8200, D2 + 50, 1000 * usd, route="inventory")
    s.outcome("i4", h(5), "aave", acct(4), "included", 8201, D2 + 62, 500_000, ETH // 100, 1000 * usd, 900 * usd, {})
    send(s, "i5", "maker", acct(8), h(6), 4, 8205, D2 + 100, 120 * usd)  # not mined yet: pending
    send(s, "i6", "aave", acct(9), h(7), 5, 8210, D2 + 150, 50 * usd)
    s.outcome("i6", h(8), "aave", acct(9), "cancelled", 8212, D2 + 170, 21_000, 21_000 * 20 * 10**9, 50 * usd,
              -1 * usd, {})
    s.decided(8210, D2 + 150, "maker", acct(8), "skipped", "simulation_reverted", None)

    # on chain: classified by missed.classify, as the app will
    def chain(liq: ChainLiquidation, ts: int, history: AccountHistory | None):
        klass, why = classify(liq, ours=OURS, history=history)
        s.chain_liquidation(liq.protocol, liq.kind, liq.account, liq.liquidator, liq.block, ts, liq.tx_hash,
                            liq.log_index, liq.detail, liq.value_usd_e8, klass, why)

    L = ChainLiquidation
    chain(L("aave", "liquidation_call", acct(1), "0x" + "fa" * 20, 1001, h(1), 7, {}, 2000 * usd), D1 + 112, None)
    chain(L("maker", "take", acct(3), KEEPER, 1008, h(4), 2, {}, 300 * usd), D1 + 348, None)
    chain(L("aave", "liquidation_call", acct(4), "0x" + "fa" * 20, 8201, h(5), 1, {}, 1000 * usd), D2 + 62, None)
    chain(L("aave", "liquidation_call", acct(2), COMP, 1003, h(20), 0, {}, 480 * usd), D1 + 212,
          AccountHistory(first_seen_block=1001, last_seen_block=1002, sent=True, sent_block=1002, tx_hash=h(2)))
    chain(L("aave", "liquidation_call", acct(5), COMP, 1005, h(21), 3, {}, 3 * usd), D1 + 240,
          AccountHistory(first_seen_block=1000, last_seen_block=1004, last_skip_reason="below_min_profit",
                         last_skip_block=1004))
    chain(L("maker", "bark", acct(10), COMP, 8220, h(22), 0, {}, 90 * usd), D2 + 290, None)


@pytest.fixture
def filled(tmp_path):
    """A config pointing at tmp_path (the journal, hence the store beside it) and a filled store."""
    path = tmp_path / f"store-{KEEPER.lower()}.sqlite"
    s = Store(path, Quiet())
    fill(s)
    assert s.close() == 27  # 2 seen, 6 decisions, 7 tx, 6 outcomes, 6 on chain
    return path


def run_report(monkeypatch, capsys, tmp_path, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("KEEPER_KEEPER__JOURNAL", str(tmp_path / "journal.jsonl"))
    try:
        code = cli.main(["report", "--config", str(DEVNET_CONFIG), *args])
    except SystemExit as e:  # argparse's usage errors exit
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_numbers(filled):
    r = StoreReader(filled)
    s = r.summary(0)
    assert s["actions"] == {"sent": 6, "included": 3, "reverted": 1, "cancelled": 1, "dropped": 0, "pending": 1}
    assert s["success_rate"] == 3 / 5
    assert s["realized_usd_e8"] == (1990 - 15 + 310 + 900 - 1) * 10**8
    assert s["expected_usd_e8"] == (2000 + 298 + 1000) * 10**8
    assert s["gas_cost_wei"] == ETH // 100 + 5 * ETH // 1000 + 2 * ETH // 100 + ETH // 100 + 21_000 * 20 * 10**9
    assert s["classes"] == {"ours": 3, "raced": 1, "filtered": 1, "unseen": 1}
    assert s["chain_liquidations"] == 6 and s["capture_rate"] == 0.5
    assert [a["intent_id"] for a in s["best"]] == ["i1", "i4", "i3"]
    assert [a["intent_id"] for a in s["worst"]] == ["i2", "i6"] and s["worst"][0]["realized_usd_e8"] == -15 * 10**8
    assert s["decisions"] == {"sent": 1, "skipped": 5} and s["skips"] == 5 and s["opportunities_seen"] == 2

    acts = {a["intent_id"]: a for a in r.actions(0)}
    assert acts["i3"]["status"] == "included" and acts["i3"]["tx_hash"] == h(4) and acts["i3"]["replacements"] == 1
    assert acts["i5"]["status"] == "pending" and acts["i5"]["tx_hash"] == h(6) and acts["i5"]["realized_usd_e8"] is None
    assert acts["i6"]["status"] == "cancelled" and acts["i6"]["tx_hash"] == h(8)

    by_p = {p["protocol"]: p for p in r.pnl_by_protocol(0)}
    assert (by_p["aave"]["sent"], by_p["aave"]["included"], by_p["aave"]["success_rate"]) == (4, 2, 0.5)
    assert by_p["aave"]["realized_usd_e8"] == 2874 * 10**8 and by_p["maker"]["realized_usd_e8"] == 310 * 10**8
    assert (by_p["aave"]["chain_liquidations"], by_p["aave"]["ours"], by_p["aave"]["capture_rate"]) == (4, 2, 0.5)
    assert (by_p["maker"]["success_rate"], by_p["maker"]["pending"], by_p["maker"]["capture_rate"]) == (1.0, 1, 0.5)

    days = r.pnl_by_day(0)
    assert [(d["day"], d["sent"], d["included"], d["realized_usd_e8"]) for d in days] == [
        ("2026-11-01", 3, 2, 2285 * 10**8), ("2026-11-02", 3, 1, 899 * 10**8)]

    assert [(x["reason"], x["count"], x["accounts"]) for x in r.skips(0)] == [
        ("below_min_profit", 3, 2), ("no_swap_route", 1, 1), ("simulation_reverted", 1, 1)]
    misses = {m["klass"]: m for m in r.misses(0)}
    assert set(misses) == {"raced", "filtered", "unseen"}
    assert misses["raced"]["why"]["competitor"] == COMP and misses["raced"]["why"]["blocks_behind"] == 2
    assert misses["filtered"]["why"]["reason"] == "below_min_profit"

    # since day 2: only what happened from then
    s2 = r.summary(D2)
    assert s2["actions"]["sent"] == 3 and s2["realized_usd_e8"] == 899 * 10**8
    assert s2["classes"] == {"ours": 1, "raced": 0, "filtered": 0, "unseen": 1}
    r.close()


def test_human_json_and_csv(filled, monkeypatch, capsys, tmp_path):
    code, out, err = run_report(monkeypatch, capsys, tmp_path)
    assert code == 0, err
    assert "realized $3,184.00 after gas" in out and "success rate 60.0%" in out and "capture rate 50.0%" in out
    assert "below_min_profit" in out and f"by {COMP} 2 blocks after first seen" in out
    assert "2026-11-01" in out and "aave" in out

    code, out, err = run_report(monkeypatch, capsys, tmp_path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["summary"]["realized_usd"] == 3184.0 and doc["summary"]["gas_cost_wei"] == str(45_420_000_000_000_000)
    assert len(doc["actions"]) == 6 and doc["actions"][0]["expected_usd"] == 2000.0
    assert {p["protocol"] for p in doc["by_protocol"]} == {"aave", "maker"}
    assert doc["best"][0]["intent_id"] == "i1" and doc["misses"][0]["klass"] == "raced"

    code, out, err = run_report(monkeypatch, capsys, tmp_path, "--csv", "--since", "2026-11-02")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["intent_id"] for r in rows] == ["i4", "i5", "i6"]
    assert rows[0]["status"] == "included" and float(rows[0]["realized_usd"]) == 900.0
    assert rows[0]["sent_ts"] == "2026-11-02T00:00:50Z" and rows[1]["status"] == "pending"

    code, _, err = run_report(monkeypatch, capsys, tmp_path, "--json", "--csv")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_since_parsing():
    now = D2 + 3600
    assert parse_since("2026-11-01") == D1
    assert parse_since("2026-11-01T12:30") == D1 + 12 * 3600 + 1800
    assert parse_since("24h", now=now) == now - 86_400
    assert parse_since("7d", now=now) == now - 7 * 86_400
    assert parse_since("30m", now=now) == now - 1800
    assert parse_since(None) == 0 and parse_since("all") == 0
    for bad in ("yesterday", "7x", "2026-13-01", "-3d"):
        with pytest.raises(ValueError, match="not a date or a span"):
            parse_since(bad)


def test_bad_since_and_missing_store_are_one_line(tmp_path, monkeypatch, capsys):
    code, out, err = run_report(monkeypatch, capsys, tmp_path, "--since", "yesterday")
    assert code == 2 and err.startswith("error: argument --since: not a date or a span") and err.count("\n") == 1
    code, out, err = run_report(monkeypatch, capsys, tmp_path)
    assert code == 2 and out == ""
    assert err.startswith("error: keeper.store_path: no store at") and err.count("\n") == 1
    assert not list(tmp_path.glob("*.sqlite"))  # a report never creates a store


def test_report_as_a_process(filled, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "KEEPER_KEEPER__JOURNAL": str(tmp_path / "journal.jsonl")}
    p = subprocess.run([sys.executable, "-m", "keeper", "report", "--config", str(DEVNET_CONFIG), "--json"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["summary"]["actions"]["sent"] == 6
    env["KEEPER_KEEPER__JOURNAL"] = str(tmp_path / "elsewhere" / "journal.jsonl")
    (tmp_path / "elsewhere").mkdir()
    p = subprocess.run([sys.executable, "-m", "keeper", "report", "--config", str(DEVNET_CONFIG)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("error: keeper.store_path: no store at")
    assert "Traceback" not in p.stderr
