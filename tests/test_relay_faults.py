"""Private relays that fail: a relay that hangs, is down, answers a JSON-RPC error or HTTP 500
garbage. The keeper contacts every relay for every target block at once, is never held up by
a slow relay, backs off a failing one and tries it again, keeps a submission nobody accepted
and sends it again on the next block, and never logs a relay URL whole."""

from __future__ import annotations

import asyncio
import json
import time

import contextlib

import pytest
import structlog
from eth_account import Account
from eth_utils import keccak
from structlog import testing as structlog_testing

from keeper.errors import RpcError, TransientError
from keeper.execution.relay import RelayBroadcaster
from keeper.rpc import Rpc
from keeper.types import Head

from .conftest import KEEPER
from .faultproxy import JsonLogs, LocalRelay as FakeRelay, assert_clean_events, assert_trustworthy

AAVE = "aave-v3-devnet"
TOKEN = "secret-token-abc"
pytestmark = pytest.mark.asyncio(loop_scope="session")
_CAPTURED: list[list[dict]] = []  # every log line a test captured (capture_logs below)
_SECRETS: list[str] = []  # the relay auth keys the test made (relay_auth below)


@contextlib.contextmanager
def capture_logs():
    """structlog's capture_logs, remembered: every line a test captures is checked at its end
    for tracebacks and secrets (the autouse fixture below)."""
    with structlog_testing.capture_logs() as logs:
        _CAPTURED.append(logs)
        yield logs


def relay_auth():
    """A fresh relay auth key; it must never appear in any captured log line."""
    acct = Account.create()
    _SECRETS.append(acct.key.hex())
    return acct


@pytest.fixture(autouse=True)
def _no_traceback_and_no_secret_in_what_was_logged():
    _CAPTURED.clear()
    _SECRETS.clear()
    yield
    try:
        assert_clean_events([e for logs in _CAPTURED for e in logs], TOKEN, *_SECRETS)
    finally:
        _CAPTURED.clear()
        _SECRETS.clear()


class FakePublic:
    """A public-mempool stand-in with the send_raw_transaction the keeper's Rpc may offer."""

    def __init__(self, error: str | None = None):
        self.sent: list[str] = []
        self.error = error

    async def send_raw_transaction(self, raw_hex: str) -> str:
        self.sent.append(raw_hex)
        if self.error:
            raise RpcError("eth_sendRawTransaction", -32000, self.error)
        return "0x" + keccak(hexstr=raw_hex).hex()


def head_of(chain) -> Head:
    blk = chain.call("eth_getBlockByNumber", ["latest", False])
    return Head(number=int(blk["number"], 16), timestamp=int(blk["timestamp"], 16),
                base_fee_wei=int(blk["baseFeePerGas"], 16), hash=blk["hash"])


def signed_transfer(chain, acct=None, nonce: int | None = None, tip_gwei: int = 1) -> tuple[bytes, str, str]:
    """A funded throw-away account's 1-wei self-transfer: (raw, tx hash, sender)."""
    acct = acct or Account.create()
    chain.call("anvil_setBalance", [acct.address, hex(10**19)])
    base = head_of(chain).base_fee_wei
    tx = {"type": 2, "chainId": int(chain.call("eth_chainId"), 16),
          "nonce": chain.nonce(acct.address) if nonce is None else nonce, "to": acct.address, "value": 1,
          "data": b"", "gas": 21_000, "maxFeePerGas": 2 * base + tip_gwei * 10**9,
          "maxPriorityFeePerGas": tip_gwei * 10**9}
    raw = bytes(acct.sign_transaction(tx).raw_transaction)
    return raw, "0x" + keccak(raw).hex(), acct.address


async def receipt(chain, tx_hash: str, timeout_s: float = 5.0) -> dict | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rc = chain.call("eth_getTransactionReceipt", [tx_hash])
        if rc:
            return rc
        await asyncio.sleep(0.02)
    return None


def journal_lines(path) -> list[dict]:
    return [json.loads(x) for x in open(path).read().splitlines() if x.strip()]


def events(logs: list[dict], name: str) -> list[dict]:
    return [e for e in logs if e["event"] == name]


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def test_a_hanging_relay_does_not_hold_up_the_healthy_one(chain):
    auth = relay_auth()
    good = await FakeRelay(chain.url, auth.address).start()
    hang = await FakeRelay(chain.url, auth.address, mode="hanging").start()
    timeout_s = 1.0
    br = RelayBroadcaster((hang.url, good.url), auth, 3, structlog.get_logger(), timeout_s=timeout_s)
    try:
        raw, h, _ = signed_transfer(chain)
        head = head_of(chain)
        with capture_logs() as logs:
            t0 = time.monotonic()
            await br.broadcast(raw, h, head)
            took = time.monotonic() - t0
        # returned while the hanging relay still holds every request (it answers only when released)
        assert took < 3 * timeout_s
        assert hang.answered == 0
        rc = await receipt(chain, h)
        assert rc and rc["status"] == "0x1"
        assert sorted(int(b["blockNumber"], 16) for b in good.accepted) == [head.number + 1, head.number + 2,
                                                                            head.number + 3]
        assert all(b["txs"] == ["0x" + raw.hex()] for b in good.accepted)
        assert events(logs, "bundle_sent")[0]["tx"] == h
        # the hanging posts end on their own, bounded by the timeout, and are counted
        t0 = time.monotonic()
        with capture_logs() as later:
            await br.settle()
        assert time.monotonic() - t0 < 3 * timeout_s
        assert hang.requests == 3 and hang.answered == 0
        assert br.stats[hang.redacted] == {"accepted": 0, "errors": 0, "timeouts": 3,
                                           "last_error": f"no answer within {timeout_s:g} s"}
        assert br.stats[good.redacted]["accepted"] == 3
        err = events(later, "relay_error")
        assert len(err) == 1 and err[0]["relay"] == hang.redacted and err[0]["timeouts"] == 3
        assert err[0]["block"] in (head.number + 1, head.number + 2, head.number + 3)
        st = {s["relay"]: s for s in br.status()}
        assert st[hang.redacted]["consecutive_failures"] == 1 and st[good.redacted]["consecutive_failures"] == 0
    finally:
        await br.close()
        await hang.stop()
        await good.stop()


async def test_when_every_relay_hangs_broadcast_gives_up_within_the_timeout_and_keeps_the_submission(chain):
    auth = relay_auth()
    relays = [await FakeRelay(chain.url, auth.address, mode="hanging").start() for _ in range(2)]
    br = RelayBroadcaster(tuple(r.url for r in relays), auth, 3, structlog.get_logger(), timeout_s=0.5)
    try:
        raw, h, _ = signed_transfer(chain)
        head = head_of(chain)
        t0 = time.monotonic()
        with capture_logs() as logs, pytest.raises(TransientError, match="no relay accepted"):
            await br.broadcast(raw, h, head)
        assert time.monotonic() - t0 < 3 * 0.5
        assert br.submissions[h] == (raw, head.number)  # due again on the next block
        assert events(logs, "bundle_not_accepted")[0]["tx"] == h
        assert [br.stats[r.redacted]["timeouts"] for r in relays] == [3, 3]
    finally:
        await br.close()
        for r in relays:
            await r.stop()


async def test_a_relay_that_is_down_is_backed_off_and_retried(chain):
    auth = relay_auth()
    good = await FakeRelay(chain.url, auth.address).start()
    down = FakeRelay(chain.url, auth.address)  # nothing listens on its port yet
    clock = Clock()
    br = RelayBroadcaster((down.url, good.url), auth, 3, structlog.get_logger(), timeout_s=1.0,
                          fail_threshold=3, backoff_initial_s=2.0, backoff_max_s=60.0, clock=clock)
    try:
        raw, h, _ = signed_transfer(chain)
        head = head_of(chain)

        async def round_() -> None:
            await br.broadcast(raw, h, head)  # the healthy relay accepts: never raises here
            await br.settle()

        with capture_logs() as logs:
            for _ in range(3):
                await round_()
        assert br.stats[down.redacted]["errors"] == 9  # 3 rounds x 3 target blocks
        assert br.stats[down.redacted]["accepted"] == 0 and "unreachable" in br.stats[down.redacted]["last_error"]
        err = events(logs, "relay_error")
        assert [e["consecutive_failures"] for e in err] == [1, 2, 3]
        assert all(e["relay"] == down.redacted and e["block"] >= head.number + 1 and e["error"] for e in err)
        backed = events(logs, "relay_backed_off")
        assert len(backed) == 1 and backed[0]["relay"] == down.redacted and backed[0]["retry_in_s"] == 2.0
        assert {s["relay"]: s["backed_off_s"] for s in br.status()} == {down.redacted: 2.0, good.redacted: 0.0}

        # while backed off it is skipped; the healthy relay carries on
        await round_()
        assert br.stats[down.redacted]["errors"] == 9
        assert br.stats[good.redacted]["accepted"] == 12

        # the interval passed: tried again, still down: skipped for twice as long
        clock.t += 2.1
        with capture_logs() as logs:
            await round_()
        assert br.stats[down.redacted]["errors"] == 12
        assert [e["retry_in_s"] for e in events(logs, "relay_backed_off")] == [4.0]

        # it comes back up: after the interval it is tried, accepts, and the recovery is logged
        await down.start()
        await round_()
        assert br.stats[down.redacted]["errors"] == 12 and not down.accepted  # still skipped
        clock.t += 4.1
        with capture_logs() as logs:
            await round_()
        assert len(down.accepted) == 3 and br.stats[down.redacted]["accepted"] == 3
        rec = events(logs, "relay_recovered")
        assert len(rec) == 1 and rec[0]["relay"] == down.redacted and rec[0]["after_failed_rounds"] == 4
        st = {s["relay"]: s for s in br.status()}[down.redacted]
        assert st["consecutive_failures"] == 0 and st["backed_off_s"] == 0.0
        assert (await receipt(chain, h))["status"] == "0x1"
    finally:
        await br.close()
        await down.stop()
        await good.stop()


async def test_when_every_relay_is_backed_off_they_are_still_tried(chain):
    auth = relay_auth()
    down = FakeRelay(chain.url, auth.address)
    br = RelayBroadcaster((down.url,), auth, 1, structlog.get_logger(), timeout_s=1.0, clock=Clock())
    try:
        raw, h, _ = signed_transfer(chain)
        head = head_of(chain)
        with capture_logs() as logs:
            for _ in range(4):
                with pytest.raises(TransientError):
                    await br.broadcast(raw, h, head)
        assert events(logs, "relay_backed_off")
        assert len(events(logs, "relay_all_backed_off")) == 1
        assert br.stats[down.redacted]["errors"] == 4  # the fourth round was not skipped
    finally:
        await br.close()


async def test_when_no_relay_accepts_the_submission_is_kept_and_retried_next_block(chain):
    auth = relay_auth()
    down = FakeRelay(chain.url, auth.address)
    error = await FakeRelay(chain.url, auth.address, mode="error").start()
    garbage = await FakeRelay(chain.url, auth.address, mode="garbage").start()
    br = RelayBroadcaster((down.url, error.url, garbage.url), auth, 2, structlog.get_logger(), timeout_s=1.0)
    try:
        raw, h, _ = signed_transfer(chain)
        head = head_of(chain)
        with capture_logs() as logs, pytest.raises(TransientError, match="no relay accepted"):
            await br.broadcast(raw, h, head)
        assert h in br.submissions
        assert chain.call("eth_getTransactionReceipt", [h]) is None
        assert {e["relay"] for e in events(logs, "relay_error")} == {down.redacted, error.redacted, garbage.redacted}
        assert "HTTP 500" in br.stats[garbage.redacted]["last_error"]
        assert "-32000" in br.stats[error.redacted]["last_error"]

        # the next block, still nobody: on_block does not raise and keeps it
        chain.call("evm_mine")
        with capture_logs() as logs:
            await br.on_block(head_of(chain), {h})
        assert h in br.submissions and events(logs, "bundle_not_accepted")

        # a relay comes back; on the next block the submission goes out again and lands
        error.mode = "ok"
        chain.call("evm_mine")
        nxt = head_of(chain)
        with capture_logs() as logs:
            await br.on_block(nxt, {h})
        assert events(logs, "bundle_retargeted")[0]["tx"] == h
        assert events(logs, "relay_recovered")[0]["relay"] == error.redacted
        assert sorted(int(b["blockNumber"], 16) for b in error.accepted) == [nxt.number + 1, nxt.number + 2]
        rc = await receipt(chain, h)
        assert rc and rc["status"] == "0x1"
        assert br.submissions[h][1] == nxt.number + 2
        # before its new target blocks have passed nothing is sent again; once mined it is dropped
        await br.on_block(nxt, {h})
        assert len(error.accepted) == 2
        await br.on_block(head_of(chain), set())
        assert h not in br.submissions
    finally:
        await br.close()
        await error.stop()
        await garbage.stop()


async def test_due_bundles_go_to_the_public_mempool_and_already_known_is_fine(chain):
    auth = relay_auth()
    down = FakeRelay(chain.url, auth.address)
    public = Rpc(chain.url)
    br = RelayBroadcaster((down.url,), auth, 2, structlog.get_logger(), public=public, timeout_s=1.0)
    try:
        raw, h, _ = signed_transfer(chain)
        head = head_of(chain)
        with pytest.raises(TransientError):
            await br.broadcast(raw, h, head)
        with capture_logs() as logs:
            await br.on_block(head_of(chain), {h})  # due at once: nobody accepted it
        assert events(logs, "bundle_fallback_public")[0]["tx"] == h
        assert (await receipt(chain, h))["status"] == "0x1"
        assert h not in br.submissions

        # the public node says the transaction is known / its nonce is used: fine, logged, forgotten
        for answer in ("already known", "nonce too low: next nonce 5, tx nonce 4"):
            fake = FakePublic(error=answer)
            br.public = fake
            raw2, h2, _ = signed_transfer(chain)
            with pytest.raises(TransientError):
                await br.broadcast(raw2, h2, head_of(chain))
            with capture_logs() as logs:
                await br.on_block(head_of(chain), {h2})
            assert fake.sent == ["0x" + raw2.hex()]
            ev = events(logs, "bundle_fallback_public")
            assert ev and ev[0]["tx"] == h2 and answer in ev[0]["note"]
            assert not events(logs, "bundle_fallback_failed") and h2 not in br.submissions
    finally:
        await br.close()
        await public.close()


async def test_a_replacement_supersedes_the_older_submission_on_the_same_nonce(chain):
    auth = relay_auth()
    good = await FakeRelay(chain.url, auth.address).start()
    br = RelayBroadcaster((good.url,), auth, 1, structlog.get_logger(), timeout_s=1.0)
    try:
        chain.call("evm_setAutomine", [False])  # nothing is mined: both stay pending
        acct = Account.create()
        raw1, h1, _ = signed_transfer(chain, acct, nonce=0)
        await br.broadcast(raw1, h1, head_of(chain))
        raw2, h2, _ = signed_transfer(chain, acct, nonce=0, tip_gwei=2)  # the same nonce, higher fees
        assert h2 != h1
        await br.broadcast(raw2, h2, head_of(chain))
        assert set(br.submissions) == {h2}
    finally:
        chain.call("evm_setAutomine", [True])
        await br.close()
        await good.stop()


async def test_relay_errors_never_leak_the_relay_url_token(chain):
    auth = relay_auth()
    path = f"/{TOKEN}/"
    ok = await FakeRelay(chain.url, auth.address, path=path).start()
    hang = await FakeRelay(chain.url, auth.address, mode="hanging", path=path).start()
    error = await FakeRelay(chain.url, auth.address, mode="error", path=path).start()  # echoes the URL back
    garbage = await FakeRelay(chain.url, auth.address, mode="garbage", path=path).start()
    down = FakeRelay(chain.url, auth.address, path=path)
    relays = [ok, hang, error, garbage, down]
    clock = Clock()
    br = RelayBroadcaster(tuple(r.url for r in relays), auth, 2, structlog.get_logger(), timeout_s=0.5, clock=clock)
    try:
        with capture_logs() as logs:
            for _ in range(4):  # enough rounds for backoffs
                raw, h, _ = signed_transfer(chain)
                await br.broadcast(raw, h, head_of(chain))
                await br.settle()
            ok.mode = "garbage"
            raw, h, _ = signed_transfer(chain)
            with pytest.raises(TransientError) as exc:
                await br.broadcast(raw, h, head_of(chain))
            await br.settle()
            chain.call("evm_mine")
            clock.t += 100
            await br.on_block(head_of(chain), {h})
            await br.settle()
        text = json.dumps(logs, default=str) + str(exc.value) + json.dumps(br.status()) + json.dumps(br.stats)
        assert TOKEN not in text
        assert auth.key.hex().removeprefix("0x") not in text
        errs = events(logs, "relay_error")
        assert {e["relay"] for e in errs} == {r.redacted for r in relays}
        assert all(e["relay"].endswith("/***") for e in errs)
        assert any("/***" in e["error"] for e in errs if e["relay"] == error.redacted)  # the echoed URL, redacted
        assert events(logs, "relay_backed_off")
    finally:
        await br.close()
        for r in relays:
            await r.stop()


async def test_a_keeper_cycle_with_one_relay_hanging_lands_the_liquidations_without_waiting_for_it(
        chain, make_keeper, monkeypatch):
    out = JsonLogs()  # the keeper's real output
    auth = relay_auth()
    good = await FakeRelay(chain.url, auth.address).start()
    hang = await FakeRelay(chain.url, auth.address, mode="hanging", path=f"/{TOKEN}/").start()
    try:
        chain.shock("WETH", -12)
        monkeypatch.setenv("KEEPER_RELAY_AUTH_KEY", auth.key.hex())
        keeper = await make_keeper(only=AAVE, KEEPER_RELAY__URLS=json.dumps([hang.url, good.url]),
                                   KEEPER_RELAY__TIMEOUT_S="0.5", KEEPER_RELAY__TARGET_BLOCKS="3")
        assert keeper.cfg.relay.timeout_s == 0.5
        t0 = time.monotonic()
        outs = await keeper.cycle(await keeper.read_head())
        took = time.monotonic() - t0
        confirmed = [o for o in outs if o.status == "confirmed"]
        assert len(confirmed) >= 3
        sent = {raw for b in good.accepted for raw in b["txs"]}
        for o in confirmed:
            assert chain.call("eth_getRawTransactionByHash", [o.tx_hash]) in sent
        # the hanging relay never answered; the old one-block-after-another code waited for it
        # on every block of every send (well over a minute here)
        assert hang.answered == 0 and hang.requests >= 3
        assert took < 30
        br = keeper.executor.tx.broadcaster
        await br.settle()
        st = {s["relay"]: s for s in br.status()}
        assert st[hang.redacted]["timeouts"] >= 3 and st[hang.redacted]["accepted"] == 0
        assert st[good.redacted]["accepted"] >= 3 * len(confirmed)
        # one transaction on chain per intent, each user liquidated once; no traceback; neither
        # the signing key, the relay auth key nor the relay URL's token in the output
        summary = assert_trustworthy(chain, keeper, out, secrets=(auth.key.hex(), TOKEN))
        assert sum(rc is not None for rc in summary["mined"].values()) == len(confirmed)
        raws = [raw for b in good.accepted for raw in b["txs"]]
        assert len(set(raws)) == len(confirmed)  # the same signed transaction for each of its blocks
    finally:
        await hang.stop()
        await good.stop()


async def test_a_keeper_whose_relays_all_refuse_keeps_one_intent_per_account_and_its_nonces_in_step(
        chain, make_keeper, monkeypatch):
    """Every relay refuses (a JSON-RPC error, HTTP 500 garbage, down) for several blocks: each
    send is kept as maybe sent, nothing new is signed for its account, intents do not pile up,
    the local nonce counts each intent once and nothing reaches the chain (stuck sends are
    replaced on their own nonces, never re-sent on new ones). A relay comes back: the kept
    submissions or their replacements land, one transaction per intent, at consecutive nonces,
    no gap."""
    out = JsonLogs()
    auth = relay_auth()
    error = await FakeRelay(chain.url, auth.address, mode="error", path=f"/{TOKEN}/").start()
    garbage = await FakeRelay(chain.url, auth.address, mode="garbage").start()
    down = FakeRelay(chain.url, auth.address)  # nothing listens on its port
    try:
        chain.shock("WETH", -12)
        monkeypatch.setenv("KEEPER_RELAY_AUTH_KEY", auth.key.hex())
        keeper = await make_keeper(only=AAVE, KEEPER_RELAY__URLS=json.dumps([error.url, garbage.url, down.url]),
                                   KEEPER_RELAY__TIMEOUT_S="0.5", KEEPER_RELAY__TARGET_BLOCKS="2",
                                   KEEPER_KEEPER__RECEIPT_TIMEOUT_S="0.1", KEEPER_KEEPER__MAX_CONSECUTIVE_FAILURES="2")
        tm = keeper.executor.tx
        base = chain.nonce(KEEPER)
        outs = []
        for _ in range(5):
            outs += await keeper.cycle(await keeper.read_head())
            chain.call("evm_mine")
        keys = {t.key for t in tm.in_flight()}
        assert len(keys) >= 3
        assert chain.nonce(KEEPER) == base  # nothing accepted, nothing on chain
        uncertain = out.events("broadcast_uncertain")
        assert uncertain and all("no relay accepted" in e["error"] for e in uncertain)
        # one intent per account, however many blocks pass; the nonce counted each intent once
        intents = [r for r in journal_lines(tm.journal.path) if r["t"] == "intent"]
        assert len(intents) == len(keys) == len({r["key"] for r in intents})
        assert sorted(r["nonce"] for r in intents) == list(range(base, base + len(keys)))
        assert tm.nonce == base + len(keys)
        assert {o.reason for o in outs if o.status == "skipped" and o.opp.key in keys} <= {"in_flight"}
        assert not tm.paused  # refusals that say nothing are not failures
        assert not out.events("tx_dropped")
        nonce_of = {r["id"]: r["nonce"] for r in intents}
        signed = [r for r in journal_lines(tm.journal.path) if r["t"] == "signed"]
        assert all(r["nonce"] == nonce_of[r["id"]] for r in signed)  # replacements stay on the intent's nonce

        # a relay comes back: the kept submissions go out again and land, once each
        error.mode = "ok"
        for _ in range(6):
            chain.call("evm_mine")
            outs += await keeper.cycle(await keeper.read_head())
            if not tm.in_flight():
                break
        assert not tm.in_flight(), [(t.key, t.status, t.nonce) for t in tm.in_flight()]
        intents = [r for r in journal_lines(tm.journal.path) if r["t"] == "intent"]
        assert len(intents) == len(keys)  # still: nothing new was signed for them
        assert chain.nonce(KEEPER) == base + len(keys) and not chain.call("txpool_content")["queued"]
        assert out.events("relay_recovered")
        summary = assert_trustworthy(chain, keeper, out, secrets=(auth.key.hex(), TOKEN))
        mined = [rc for rc in summary["mined"].values() if rc is not None]
        assert len(mined) == len(keys) and {rc["status"] for rc in mined} == {"0x1"}
    finally:
        await error.stop()
        await garbage.stop()
