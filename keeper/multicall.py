"""Multicall3 aggregate3: many eth_calls in one, many aggregate3 calls in one HTTP batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
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


class Multicall:
    def __init__(self, rpc: Rpc, address: str = MULTICALL3, chunk: int = 400):
        self.rpc = rpc
        self.address = address
        self.chunk = chunk

    def encode(self, calls: Sequence[Call]) -> bytes:
        return _AGG3 + abi_encode(["(address,bool,bytes)[]"], [[(c.target, c.allow_failure, c.data) for c in calls]])

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
                (results,) = abi_decode(["(bool,bytes)[]"], raw)
            except Exception as e:  # garbage from the node
                raise BadResponseError(f"aggregate3: cannot decode answer ({e.__class__.__name__})") from None
            if len(results) != len(ch):
                raise BadResponseError(f"aggregate3: {len(results)} results for {len(ch)} calls")
            out.extend(results)
        return out
