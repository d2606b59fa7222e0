"""`keeper stress`: constants, raw access to the fork (calls, sends, balances) and its price feeds."""

from __future__ import annotations

import time
from typing import Any

from eth_utils import keccak

from .. import abi
from ..errors import KeeperError
from ..fork import REPO, _local, fund


MAX_CYCLES = 50  # keeper cycles per step at most (the devnet's test cascade needs 38)
MAX_STEPS = 50
# anvil's public test account #1: the devnet keeper (local chains only)
DEVNET_KEEPER_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
MOVER = "0x5757e55757E55757e55757E55757e55757e55757"  # the stress account: moves markets and feeds
ZERO = "0x" + "00" * 20
LIQ_AAVE = abi.load("AavePool").event("LiquidationCall")
# Maker / perps events read per step
EV_BARK = abi.load("MakerDog").event("Bark")
_CLIP = abi.load("MakerClipper")
EV_TAKE, EV_KICK, EV_REDO = _CLIP.event("Take"), _CLIP.event("Kick"), _CLIP.event("Redo")
_PERPS = abi.load("PerpsMarket")
EV_FLAGGED = _PERPS.event("AccountFlaggedForLiquidation")
EV_ATTEMPT = _PERPS.event("AccountLiquidationAttempt")
EV_POSITION = _PERPS.event("PositionLiquidated")
WAD, RAY, RAD = 10**18, 10**27, 10**45
RAD_PER_USD_E8 = 10**37  # DAI counted at $1: USD e8 = rad // 10**37
WAD_PER_USD_E8 = 10**10  # snxUSD counted at $1: USD e8 = wad // 10**10
DAI_USD_E8 = 10**8
# fork time advanced while Maker auctions or flagged perps accounts wait (see the docstring)
TIME_STEP_S = 60
MAX_ADVANCE_S = 7_200
PERPS_WINDOWS = 10


# --- raw chain access (the fork) ---------------------------------------------------------------

def _word(v: int) -> str:
    return "0x" + v.to_bytes(32, "big").hex()


def _enc(sig: str, *args: Any) -> str:
    from ..devnet.jsonrpc import encode_call

    return encode_call(sig, *args)


def _call(url: str, to: str, data: str, block: str = "latest") -> bytes | None:
    try:
        out = _local(url, "eth_call", [{"to": to, "data": data}, block])
    except KeeperError:
        return None
    return bytes.fromhex(out[2:])


def _uint(url: str, to: str, sig: str, *args: Any, block: str = "latest") -> int | None:
    out = _call(url, to, _enc(sig, *args), block)
    return int.from_bytes(out[:32], "big") if out and len(out) >= 32 else None


def _addr(url: str, to: str, sig: str, *args: Any) -> str | None:
    v = _uint(url, to, sig, *args)
    return abi.to_checksum("0x" + v.to_bytes(32, "big")[12:].hex()) if v else None


def _answer(url: str, feed: str, block: str = "latest") -> int:
    v = _uint(url, feed, "latestAnswer()", block=block)
    if v is None or not 0 < v < 2**255:
        raise KeeperError(f"stress: feed {feed} has no positive latestAnswer")
    return v


def _send(url: str, sender: str, to: str | None, data: str, what: str, gas: int = 2_000_000) -> dict[str, Any]:
    tx = {"from": sender, "data": data, "gas": hex(gas)}
    if to:
        tx["to"] = to
    h = _local(url, "eth_sendTransaction", [tx])
    rc = None
    for _ in range(600):
        rc = _local(url, "eth_getTransactionReceipt", [h])
        if rc:
            break
        time.sleep(0.02)
    if not rc or rc.get("status") != "0x1":
        raise KeeperError(f"stress: {what} failed on the fork ({h})")
    return rc


def give(url: str, token: str, who: str, amount: int) -> None:
    """Set `who`'s balance of `token` to `amount` by writing its balance slot (a Solidity or
    Vyper mapping in one of the first 20 slots, found by probing; restored when wrong)."""
    pad = bytes.fromhex(who[2:].lower().rjust(64, "0"))
    for slot in range(20):
        s = slot.to_bytes(32, "big")
        for key in (keccak(pad + s), keccak(s + pad)):
            k = "0x" + key.hex()
            old = _local(url, "eth_getStorageAt", [token, k, "latest"])
            _local(url, "anvil_setStorageAt", [token, k, _word(amount)])
            if _uint(url, token, "balanceOf(address)", who) == amount:
                return
            _local(url, "anvil_setStorageAt", [token, k, _word(int(old, 16))])
    raise KeeperError(f"stress: cannot find the balance slot of token {token}")


# --- feeds -------------------------------------------------------------------------------------

def set_feed(url: str, feed: str, answer: int) -> str:
    """Set the feed's answer; returns how ('owner' or 'stub')."""
    owner = _addr(url, feed, "owner()")
    data = _enc("setAnswer(int256)", answer)
    if owner:
        fund(url, owner)
        try:
            _send(url, owner, feed, data, f"setAnswer on {feed}", gas=200_000)
            if _answer(url, feed) == answer:
                return "owner"
        except KeeperError:
            pass
    _install_stub(url, feed)
    _send(url, MOVER, feed, data, f"setAnswer on the stub at {feed}", gas=200_000)
    return "stub"


_STUB_CODE: dict[str, str] = {}


def _install_stub(url: str, feed: str) -> None:
    """The project's SettableAggregator (8 decimals) in place of the feed's code, owned by MOVER."""
    dec = _uint(url, feed, "decimals()")
    if dec not in (None, 8):
        raise KeeperError(f"stress: feed {feed} has {dec} decimals and is not settable (only 8-decimal feeds "
                          "can be replaced)")
    if url not in _STUB_CODE:
        from eth_abi import encode as abi_encode

        from ..solidity import compile_files

        src = REPO / "contracts" / "SettableAggregator.sol"
        art = compile_files([src])["SettableAggregator"]
        code = "0x" + art["bytecode"].removeprefix("0x") + abi_encode(["int256", "string"], [1, "stress"]).hex()
        fund(url, MOVER)
        rc = _send(url, MOVER, None, code, "deploy the feed stub", gas=3_000_000)
        _STUB_CODE[url] = _local(url, "eth_getCode", [rc["contractAddress"], "latest"])
    _local(url, "anvil_setCode", [feed, _STUB_CODE[url]])
    _local(url, "anvil_setStorageAt", [feed, _word(0), _word(int(MOVER, 16))])  # owner
    for slot in (3, 4):  # _roundId, _updatedAt: whatever the old contract kept there
        _local(url, "anvil_setStorageAt", [feed, _word(slot), _word(0)])


