"""The keeper's FlashLiquidator on the devnet, deployed by the keeper account itself (so the
keeper owns it) right after the keeper is funded: its address is deterministic."""

from __future__ import annotations

from pathlib import Path

from eth_abi import encode as abi_encode

from ..solidity import compile_files
from .artifacts import CONTRACTS_DIR
from .deploy import KEEPER, Deployment
from .jsonrpc import JsonRpc, checksum


def deploy_flash_liquidator(url: str, dep: Deployment) -> str:
    art = compile_files([Path(CONTRACTS_DIR) / "FlashLiquidator.sol"])["FlashLiquidator"]
    data = art["bytecode"] + abi_encode(["address", "address"], [dep.pool, dep.uniswap_router]).hex()
    with JsonRpc(url) as rpc:
        rc = rpc.send({"from": KEEPER, "data": data if data.startswith("0x") else "0x" + data},
                      what="deploy FlashLiquidator")
    return checksum(rc["contractAddress"])
