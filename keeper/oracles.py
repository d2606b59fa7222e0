"""Oracle updates seen before they are mined: pending transactions and what they set.

Pure decoding, no I/O (the source that follows the mempool is keeper/sources/pending.py):

- `PendingTx`: one transaction as `eth_getTransactionByHash` returns it, checked field by field
  (`PendingTx.from_rpc`); `raw` is the signed transaction when the node gave it.
- `effective_tip(tx, base_fee)`: what the transaction pays its block's proposer per gas.
- `decode_update(to, input)`: the contract a call updates and the answer it sets, or None:

  * the devnet's `SettableAggregator.setAnswer(int256)` (contracts/SettableAggregator.sol);
  * Chainlink OCR2 `transmit(bytes32[3] reportContext, bytes report, bytes32[] rs,
    bytes32[] ss, bytes32 rawVs)`, read from smartcontractkit/libocr
    `contract2/OCR2Aggregator.sol` (commit a3c217c1): `_requireExpectedMsgDataLength` wants the
    calldata exactly 4 + 32*3 + 32*4 + 32*3 + len(report) + 32*len(rs) + 32*len(ss) bytes;
    `rs.length == ss.length`; `_decodeReport` is `abi.decode(rawReport, (uint32 observationsTimestamp,
    bytes32 rawObservers, int192[] observations, int192 juelsPerFeeCoin))` with
    `_requireExpectedReportLength` (report exactly 5*32 + 32*n bytes); `_report` requires
    n <= maxNumOracles (31) and f < n, and stores `median = observations[observations.length/2]`
    (integer division: the upper middle for an even n; the observations are NOT checked for
    order in OCR2: the contract takes that element as it is, and so do we);
  * Chainlink OCR1 `transmit(bytes report, bytes32[] rs, bytes32[] ss, bytes32 rawVs)`
    (libocr `contract/OffchainAggregator.sol`, still behind many mainnet feeds): report =
    `abi.decode(_report, (bytes32 rawReportContext, bytes32 rawObservers, int192[] observations))`,
    observations must be sorted ascending (else it reverts), same median
    `observations[observations.length/2]`;
  * any of those wrapped by Chainlink's AuthorizedForwarder `forward(address to, bytes data)` or
    `ownerForward(address to, bytes data)` (smartcontractkit/chainlink
    `contracts/src/v0.8/operatorforwarder/AuthorizedForwarder.sol`: `_forward` does
    `to.call(data)`): the target is then the inner `to`, not the forwarder.
    `multiForward(address[] tos, bytes[] datas)` can carry several: `decode_updates` returns all.

  What cannot be known from the calldata is not checked (signatures, the transmitter's rights,
  config digest and epoch, minAnswer/maxAnswer, f): a decoded answer is what the contract
  WILL store if the transaction does not revert. Malformed input of any kind returns None.
- `FeedMap`: from the address a pending transaction updates (an aggregator) to the price sources
  the protocols read (the aggregator itself, or a proxy in front of it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from eth_abi import decode as abi_decode
from eth_utils import keccak

from .errors import BadResponseError

SET_ANSWER = keccak(text="setAnswer(int256)")[:4]  # 0x99213cd8
OCR2_TRANSMIT = keccak(text="transmit(bytes32[3],bytes,bytes32[],bytes32[],bytes32)")[:4]  # 0xb1dc65a4
OCR1_TRANSMIT = keccak(text="transmit(bytes,bytes32[],bytes32[],bytes32)")[:4]  # 0xc9807539
FORWARD = keccak(text="forward(address,bytes)")[:4]  # 0x6fadcf72
OWNER_FORWARD = keccak(text="ownerForward(address,bytes)")[:4]  # 0x033f49f7
MULTI_FORWARD = keccak(text="multiForward(address[],bytes[])")[:4]  # 0xb64fa9e6
FORWARDERS = frozenset({FORWARD, OWNER_FORWARD, MULTI_FORWARD})

MAX_NUM_ORACLES = 31  # libocr maxNumOracles
# OCR2 TRANSMIT_MSGDATA_CONSTANT_LENGTH_COMPONENT: selector, reportContext, 3 offsets, rawVs, 3 lengths
_OCR2_CONST_LEN = 4 + 32 * 3 + 32 * 3 + 32 + 32 * 3
# OCR1 (OffchainAggregator.expectedMsgDataLength): selector, 3 offsets, rawVs, 3 lengths
_OCR1_CONST_LEN = 4 + 32 * 3 + 32 + 32 * 3
_MAX_FORWARD_DEPTH = 3  # a forwarder calling a forwarder calling ...: enough, and bounded

_MAX_QTY_CHARS = 2 + 64  # a JSON-RPC quantity is at most 256 bits


def _qty(obj: dict[str, Any], key: str, required: bool = True) -> int | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise BadResponseError(f"pending transaction: {key} missing")
        return None
    if type(v) is not str or not v.startswith("0x") or not 2 < len(v) <= _MAX_QTY_CHARS:
        raise BadResponseError(f"pending transaction: {key} is not a hex quantity: {str(v)[:80]!r}")
    try:
        return int(v, 16)
    except ValueError:
        raise BadResponseError(f"pending transaction: {key} is not a hex quantity: {v[:80]!r}") from None


def _hex_fixed(obj: dict[str, Any], key: str, nbytes: int, required: bool = True) -> str | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise BadResponseError(f"pending transaction: {key} missing")
        return None
    if type(v) is not str or len(v) != 2 + 2 * nbytes or not v.startswith("0x"):
        raise BadResponseError(f"pending transaction: {key} is not {nbytes} bytes of hex: {str(v)[:80]!r}")
    try:
        int(v, 16)
    except ValueError:
        raise BadResponseError(f"pending transaction: {key} is not {nbytes} bytes of hex: {v[:80]!r}") from None
    return v.lower()


def _data(v: Any, key: str) -> bytes:
    if type(v) is not str or not v.startswith("0x"):
        raise BadResponseError(f"pending transaction: {key} is not hex data: {str(v)[:80]!r}")
    try:
        return bytes.fromhex(v[2:])
    except ValueError:
        raise BadResponseError(f"pending transaction: {key} is not hex data: {v[:80]!r}") from None


@dataclass(frozen=True, slots=True)
class PendingTx:
    """A transaction as the node reported it (addresses and hash lower-case hex with 0x).
    Fee fields the type does not have are None (legacy: no max fees; EIP-1559: `gas_price` is
    whatever the node reports, anvil reports maxFeePerGas there). `block_number` is None while
    pending (a transaction can be mined between the hash arriving and its body being read).
    `seen_at` is time.monotonic() when the body was read; `raw` the signed transaction (its
    keccak is `hash`) when the node gave it, else None."""

    hash: str
    sender: str
    to: str | None
    input: bytes
    nonce: int
    gas: int
    type: int
    gas_price: int | None
    max_fee_per_gas: int | None
    max_priority_fee_per_gas: int | None
    value: int
    seen_at: float = field(default_factory=time.monotonic)
    raw: bytes | None = field(default=None, repr=False)
    block_number: int | None = None

    @classmethod
    def from_rpc(cls, obj: Any, seen_at: float | None = None, raw: bytes | None = None) -> "PendingTx | None":
        """From an `eth_getTransactionByHash` result: None for null (unknown or dropped);
        BadResponseError (with the field named) for anything malformed."""
        if obj is None:
            return None
        if type(obj) is not dict:
            raise BadResponseError(f"pending transaction: expected an object, got {str(obj)[:80]!r}")
        tx_type = _qty(obj, "type", required=False)
        gas_price = _qty(obj, "gasPrice", required=False)
        max_fee = _qty(obj, "maxFeePerGas", required=False)
        max_tip = _qty(obj, "maxPriorityFeePerGas", required=False)
        if (max_fee is None) != (max_tip is None):
            raise BadResponseError("pending transaction: maxFeePerGas and maxPriorityFeePerGas must come together")
        if gas_price is None and max_fee is None:
            raise BadResponseError("pending transaction: neither gasPrice nor maxFeePerGas")
        data = obj.get("input")
        if data is None:
            data = obj.get("data")  # some older nodes
        if data is None:
            raise BadResponseError("pending transaction: input missing")
        to = obj.get("to")
        return cls(
            hash=_hex_fixed(obj, "hash", 32),  # type: ignore[arg-type]
            sender=_hex_fixed(obj, "from", 20),  # type: ignore[arg-type]
            to=None if to is None else _hex_fixed(obj, "to", 20),
            input=_data(data, "input"),
            nonce=_qty(obj, "nonce"),  # type: ignore[arg-type]
            gas=_qty(obj, "gas"),  # type: ignore[arg-type]
            type=tx_type if tx_type is not None else 0,
            gas_price=gas_price,
            max_fee_per_gas=max_fee,
            max_priority_fee_per_gas=max_tip,
            value=_qty(obj, "value"),  # type: ignore[arg-type]
            seen_at=time.monotonic() if seen_at is None else seen_at,
            raw=raw,
            block_number=_qty(obj, "blockNumber", required=False),
        )

    @property
    def fee_cap(self) -> int:
        """The most it may pay per gas: maxFeePerGas, or gasPrice for legacy/EIP-2930 (what
        anvil orders its pending transactions by: see keeper/sources/pending.py)."""
        return self.max_fee_per_gas if self.max_fee_per_gas is not None else self.gas_price  # type: ignore[return-value]


def effective_tip(tx: PendingTx, base_fee: int) -> int:
    """The priority fee per gas `tx` pays at `base_fee`: min(maxPriorityFeePerGas,
    maxFeePerGas - base_fee) for fee-market transactions (type 2 and later), gasPrice -
    base_fee for legacy and EIP-2930 ones. Negative: the transaction cannot be included at
    that base fee."""
    if tx.max_fee_per_gas is not None and tx.max_priority_fee_per_gas is not None:
        return min(tx.max_priority_fee_per_gas, tx.max_fee_per_gas - base_fee)
    if tx.gas_price is None:
        raise ValueError(f"transaction {tx.hash} has neither gasPrice nor maxFeePerGas")
    return tx.gas_price - base_fee


# -- decoding ------------------------------------------------------------------------------
def _addr(raw: str) -> str:
    return raw.lower()


def _median_ocr2(args: bytes, calldata_len: int) -> int | None:
    _ctx, report, rs, ss, _vs = abi_decode(["bytes32[3]", "bytes", "bytes32[]", "bytes32[]", "bytes32"], args)
    if len(rs) != len(ss):
        return None
    if calldata_len != _OCR2_CONST_LEN + len(report) + 32 * len(rs) + 32 * len(ss):
        return None
    _ts, _observers, obs, _juels = abi_decode(["uint32", "bytes32", "int192[]", "int192"], report)
    n = len(obs)
    if not 0 < n <= MAX_NUM_ORACLES or len(report) != 5 * 32 + 32 * n:
        return None
    return obs[n // 2]


def _median_ocr1(args: bytes, calldata_len: int) -> int | None:
    report, rs, ss, _vs = abi_decode(["bytes", "bytes32[]", "bytes32[]", "bytes32"], args)
    if len(rs) != len(ss) or len(rs) > MAX_NUM_ORACLES:
        return None
    if calldata_len != _OCR1_CONST_LEN + len(report) + 32 * len(rs) + 32 * len(ss):
        return None
    _ctx, _observers, obs = abi_decode(["bytes32", "bytes32", "int192[]"], report)
    n = len(obs)
    if not 0 < n <= MAX_NUM_ORACLES or any(obs[i] > obs[i + 1] for i in range(n - 1)):
        return None
    return obs[n // 2]


def _updates(to: str, data: bytes, depth: int, out: list[tuple[str, int]]) -> None:
    sel = data[:4]
    if sel == SET_ANSWER:
        if len(data) >= 36:
            out.append((to, int.from_bytes(data[4:36], "big", signed=True)))
        return
    if sel == OCR2_TRANSMIT:
        answer = _median_ocr2(data[4:], len(data))
    elif sel == OCR1_TRANSMIT:
        answer = _median_ocr1(data[4:], len(data))
    elif sel in FORWARDERS and depth < _MAX_FORWARD_DEPTH:
        if sel == MULTI_FORWARD:
            tos, datas = abi_decode(["address[]", "bytes[]"], data[4:])
            if len(tos) != len(datas):  # the forwarder reverts
                return
            calls = list(zip(tos, datas))
        else:
            calls = [abi_decode(["address", "bytes"], data[4:])]
        found: list[tuple[str, int]] = []
        for inner_to, inner in calls:
            _updates(_addr(inner_to), inner, depth + 1, found)
        out.extend(found)
        return
    else:
        return
    if answer is not None:
        out.append((to, answer))


def decode_updates(to: str | None, tx_input: bytes) -> list[tuple[str, int]]:
    """Every (target, answer) a call to `to` with `tx_input` sets, in call order (several only
    through multiForward); [] for anything else, malformed input included."""
    if to is None or not isinstance(tx_input, (bytes, bytearray)) or len(tx_input) < 4:
        return []
    out: list[tuple[str, int]] = []
    try:
        _updates(to.lower(), bytes(tx_input), 0, out)
    except Exception:  # untrusted calldata: eth_abi's DecodingError family and anything else it may raise
        return []
    return out


def decode_update(to: str | None, tx_input: bytes) -> tuple[str, int] | None:
    """(target address lower-case, new answer) for a call that sets an oracle answer: `to`
    itself for setAnswer / transmit, the inner target for a forwarder's forward(to, data).
    None for anything else or anything malformed. A multiForward that updates several feeds
    gives the first here: use `decode_updates` for all of them."""
    found = decode_updates(to, tx_input)
    return found[0] if found else None


def call_targets(to: str | None, tx_input: bytes) -> tuple[str, ...]:
    """The contracts a call reaches directly (cheap, no full decoding): `to`, plus the inner
    target(s) when it is a forwarder call. For filtering pending transactions by target when the
    transmitter sends through a forwarder whose address the keeper does not know."""
    if to is None:
        return ()
    to = to.lower()
    if len(tx_input) >= 68 and tx_input[:4] in (FORWARD, OWNER_FORWARD):
        word = tx_input[4:36]
        if not any(word[:12]):
            return (to, "0x" + word[12:].hex())
        return (to,)
    if tx_input[:4] == MULTI_FORWARD:
        try:
            tos, _datas = abi_decode(["address[]", "bytes[]"], bytes(tx_input[4:]))
        except Exception:
            return (to,)
        return (to,) + tuple(_addr(t) for t in tos)
    return (to,)


class FeedMap:
    """Which price sources a pending update moves. `add(source, aggregator)`: the protocol
    reads `source` (e.g. the Chainlink proxy an Aave oracle is configured with); the update
    transactions call `aggregator` (the proxy's `aggregator()`; the source itself when it is
    the aggregator). Re-adding a source with another aggregator (a proxy pointed at a new one)
    replaces the old mapping. Addresses are compared lower-case; lookups return them so."""

    __slots__ = ("_by_agg", "_agg_of")

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()):
        self._by_agg: dict[str, list[str]] = {}
        self._agg_of: dict[str, str] = {}
        for source, aggregator in pairs:
            self.add(source, aggregator)

    def add(self, source: str, aggregator: str | None = None) -> None:
        s = source.lower()
        a = (aggregator or source).lower()
        old = self._agg_of.get(s)
        if old == a:
            return
        if old is not None:
            self._remove(s, old)
        self._agg_of[s] = a
        self._by_agg.setdefault(a, []).append(s)

    def remove(self, source: str) -> None:
        s = source.lower()
        old = self._agg_of.pop(s, None)
        if old is not None:
            self._remove(s, old)

    def _remove(self, s: str, agg: str) -> None:
        lst = self._by_agg.get(agg)
        if lst is not None:
            lst.remove(s) if s in lst else None
            if not lst:
                del self._by_agg[agg]

    def lookup(self, target: str) -> list[str]:
        """The sources an update of `target` moves ([] when none)."""
        return list(self._by_agg.get(target.lower(), ()))

    def aggregator_of(self, source: str) -> str | None:
        return self._agg_of.get(source.lower())

    def targets(self) -> set[str]:
        """Every address whose update matters: pass as PendingWatcher's `targets`
        (`targets=feed_map.targets`, a callable, follows later `add`s)."""
        return set(self._by_agg)

    def __contains__(self, target: object) -> bool:
        return isinstance(target, str) and target.lower() in self._by_agg

    def __len__(self) -> int:
        return len(self._agg_of)
