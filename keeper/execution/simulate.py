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
    tx: dict[str, Any] = {"from": sender, "to": plan.to, "data": "0x" + plan.data.hex(), "gas": hex(plan.gas_limit)}
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
