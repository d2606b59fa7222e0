"""Multicall3 aggregate3: many eth_calls in one, many aggregate3 calls in one HTTP batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from eth_utils import keccak

from .errors import BadResponseError
from .rpc import Rpc, parse_bytes

MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
_AGG3 = keccak(text="aggregate3((address,bool,bytes)[])")[:4]


@dataclass(frozen=True, slots=True)
class Call:
    target: str
    data: bytes
    allow_failure: bool = True


_W = 32


def _u(n: int) -> bytes:
    return n.to_bytes(32, "big")


def encode_aggregate3(calls: Sequence[Call]) -> bytes:
    """aggregate3((address,bool,bytes)[]) calldata, by hand: ~20x faster than eth_abi here."""
    n = len(calls)
    offsets: list[bytes] = []
    bodies: list[bytes] = []
    pos = n * _W
    for c in calls:
        data = c.data
        pad = (-len(data)) % _W
        body = b"".join((b"\0" * 12 + bytes.fromhex(c.target[2:]), _u(1 if c.allow_failure else 0), _u(0x60),
                         _u(len(data)), data, b"\0" * pad))
        offsets.append(_u(pos))
        bodies.append(body)
        pos += len(body)
    return b"".join((_AGG3, _u(0x20), _u(n), *offsets, *bodies))


def decode_aggregate3(raw: bytes) -> list[tuple[bool, bytes]]:
    """Decode the (bool,bytes)[] answer of aggregate3, with bounds checks."""
    if len(raw) < 64:
        raise ValueError("short answer")
    base = int.from_bytes(raw[0:32], "big")
    n = int.from_bytes(raw[base:base + 32], "big")
    start = base + 32
    if start + n * 32 > len(raw):
        raise ValueError("truncated offsets")
    out: list[tuple[bool, bytes]] = []
    for i in range(n):
        t = start + int.from_bytes(raw[start + i * 32:start + i * 32 + 32], "big")
        ok = raw[t + 31] == 1
        d = t + int.from_bytes(raw[t + 32:t + 64], "big")
        ln = int.from_bytes(raw[d:d + 32], "big")
        if d + 32 + ln > len(raw):
            raise ValueError("truncated data")
        out.append((ok, raw[d + 32:d + 32 + ln]))
    return out


class Multicall:
    def __init__(self, rpc: Rpc, address: str = MULTICALL3, chunk: int = 400):
        self.rpc = rpc
        self.address = address
        self.chunk = chunk

    def encode(self, calls: Sequence[Call]) -> bytes:
        return encode_aggregate3(calls)

    async def run(self, calls: Sequence[Call], block: int | str = "latest") -> list[tuple[bool, bytes]]:
        """Run calls in aggregate3 chunks sent as one JSON-RPC batch; results in order."""
        if not calls:
            return []
        tag = hex(block) if isinstance(block, int) else block
        chunks = [calls[i:i + self.chunk] for i in range(0, len(calls), self.chunk)]
        reqs = [("eth_call", [{"to": self.address, "data": "0x" + self.encode(ch).hex()}, tag]) for ch in chunks]
        replies = await self.rpc.batch(reqs)
        out: list[tuple[bool, bytes]] = []
        for ch, reply in zip(chunks, replies):
            raw = parse_bytes(reply, "aggregate3")
            try:
                results = decode_aggregate3(raw)
            except Exception as e:  # garbage from the node
                raise BadResponseError(f"aggregate3: cannot decode answer ({e.__class__.__name__})") from None
            if len(results) != len(ch):
                raise BadResponseError(f"aggregate3: {len(results)} results for {len(ch)} calls")
            out.extend(results)
        return out
