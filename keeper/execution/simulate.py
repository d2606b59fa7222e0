"""Simulation: the exact call, against the latest block, before anything is sent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import abi
from ..errors import RpcError
from ..rpc import Rpc, parse_int
from ..types import TxPlan


@dataclass(frozen=True, slots=True)
class SimResult:
    ok: bool
    gas_used: int = 0
    reason: str = ""


def decode_revert(err: RpcError) -> str:
    data = err.data
    if data and data.startswith("0x") and len(data) >= 10:
        try:
            return abi.decode_revert(bytes.fromhex(data[2:]))
        except ValueError:
            pass
    msg = err.rpc_message
    for prefix in ("execution reverted: ", "execution reverted"):
        if msg.startswith(prefix):
            return msg[len(prefix):] or "reverted without reason"
    return msg


def tx_fields(plan: TxPlan, sender: str) -> dict[str, Any]:
    tx: dict[str, Any] = {"from": plan.sender or sender, "to": plan.to, "data": "0x" + plan.data.hex(), "gas": hex(plan.gas_limit)}
    if plan.value:
        tx["value"] = hex(plan.value)
    return tx


async def simulate(rpc: Rpc, plan: TxPlan, sender: str, block: int | str = "latest") -> SimResult:
    """eth_call and eth_estimateGas of the exact transaction in one round trip."""
    tag = hex(block) if isinstance(block, int) else block
    tx = tx_fields(plan, sender)
    est = {k: v for k, v in tx.items() if k != "gas"}
    call_res, gas_res = await rpc.batch([("eth_call", [tx, tag]), ("eth_estimateGas", [est, tag])], return_errors=True)
    if isinstance(call_res, RpcError):
        return SimResult(ok=False, reason=decode_revert(call_res))
    if isinstance(gas_res, RpcError):
        return SimResult(ok=False, reason=decode_revert(gas_res))
    return SimResult(ok=True, gas_used=parse_int(gas_res, "eth_estimateGas"))


@dataclass(frozen=True, slots=True)
class MeasuredSim:
    ok: bool
    gas_used: int = 0
    reason: str = ""
    return_data: bytes = b""
    deltas: dict[str, int] | None = None  # token -> change in the sender's balance (base units)


class Simulator:
    """eth_simulateV1 when the node has it: the keeper's token balances, the exact call, the
    balances again, in one simulated block, so profit is measured as a balance difference.
    Falls back to eth_call + eth_estimateGas (no measurement) on nodes without it."""

    def __init__(self, rpc: Rpc, multicall3: str):
        self.rpc = rpc
        self.multicall3 = multicall3
        self.has_simulate_v1: bool | None = None

    async def run(self, plan: TxPlan, sender: str, tokens: tuple[str, ...] = (), pre: tuple[TxPlan, ...] = (),
                  block: str = "latest") -> MeasuredSim:
        """Simulate `plan` from `sender` on `block` ("pending" includes the keeper's own
        transactions not mined yet), after the set-up calls `pre` in the same simulated block."""
        if (tokens or pre) and self.has_simulate_v1 is not False:
            try:
                res = await self._simulate_v1(plan, sender, tokens, pre, block)
                self.has_simulate_v1 = True
                return res
            except RpcError as e:
                if self.has_simulate_v1 is None and (e.code in (-32601, -32600) or "not" in e.rpc_message.lower()):
                    self.has_simulate_v1 = False
                else:
                    raise
        r = await simulate(self.rpc, plan, sender, block)
        return MeasuredSim(ok=r.ok, gas_used=r.gas_used, reason=r.reason)

    async def _simulate_v1(self, plan: TxPlan, sender: str, tokens: tuple[str, ...], pre: tuple[TxPlan, ...],
                           block: str) -> MeasuredSim:
        from ..multicall import Call, decode_aggregate3, encode_aggregate3

        bal = abi.load("ERC20").fn("balanceOf")
        probe = "0x" + encode_aggregate3([Call(t, bal.encode(sender)) for t in tokens]).hex()
        tx = tx_fields(plan, sender)
        calls = [tx_fields(p, sender) for p in pre]
        calls += [{"from": sender, "to": self.multicall3, "data": probe}, tx,
                  {"from": sender, "to": self.multicall3, "data": probe}]
        blocks = await self.rpc.call("eth_simulateV1", [{"blockStateCalls": [{"calls": calls}], "validation": False},
                                                        block])
        try:
            before, main, after = blocks[0]["calls"][len(pre):]
        except (TypeError, KeyError, IndexError, ValueError):
            from ..errors import BadResponseError

            raise BadResponseError(f"eth_simulateV1: malformed answer {str(blocks)[:120]!r}") from None
        if main.get("status") != "0x1":
            err = main.get("error") or {}
            data = err.get("data") if isinstance(err, dict) else None
            if isinstance(data, str) and len(data) >= 10:
                reason = abi.decode_revert(bytes.fromhex(data[2:]))
            elif main.get("returnData", "0x") not in ("0x", None):
                reason = abi.decode_revert(bytes.fromhex(main["returnData"][2:]))
            else:
                reason = (err.get("message") if isinstance(err, dict) else None) or "reverted"
            return MeasuredSim(ok=False, reason=reason)
        b = decode_aggregate3(bytes.fromhex(before["returnData"][2:]))
        a = decode_aggregate3(bytes.fromhex(after["returnData"][2:]))
        deltas = {t: int.from_bytes(y, "big") - int.from_bytes(x, "big") for t, (_, x), (_, y) in zip(tokens, b, a)}
        return MeasuredSim(ok=True, gas_used=parse_int(main.get("gasUsed", "0x0"), "gasUsed"),
                           return_data=bytes.fromhex(main.get("returnData", "0x")[2:]), deltas=deltas)
