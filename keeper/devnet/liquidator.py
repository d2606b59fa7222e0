"""The keeper's FlashLiquidator on the devnet, deployed by the keeper account itself (so the
keeper owns it) right after the keeper is funded: its address is deterministic. The keeper
then approves it for its inventory tokens, as an operator does once after deploying (the
inventory route pulls the debt asset through it)."""

from __future__ import annotations

from pathlib import Path

from eth_abi import encode as abi_encode

from ..solidity import compile_files
from .artifacts import CONTRACTS_DIR
from .deploy import KEEPER, MAX_UINT256, Deployment
from .jsonrpc import JsonRpc, checksum, encode_call
from .seed import KEEPER_INVENTORY_RAW


def deploy_flash_liquidator(url: str, dep: Deployment) -> str:
    art = compile_files([Path(CONTRACTS_DIR) / "FlashLiquidator.sol"])["FlashLiquidator"]
    data = art["bytecode"] + abi_encode(["address", "address"], [dep.pool, dep.uniswap_router]).hex()
    with JsonRpc(url) as rpc:
        rc = rpc.send({"from": KEEPER, "data": data if data.startswith("0x") else "0x" + data},
                      what="deploy FlashLiquidator")
        liquidator = checksum(rc["contractAddress"])
        for sym in KEEPER_INVENTORY_RAW:
            rpc.send({"from": KEEPER, "to": dep.tokens[sym],
                      "data": encode_call("approve(address,uint256)", liquidator, MAX_UINT256)},
                     what=f"keeper approve {sym} to its FlashLiquidator")
    return liquidator
