"""`keeper deploy-liquidator --config FILE`: deploy contracts/FlashLiquidator.sol from the
keeper's own key (the deployer is the owner), for the Aave pool of the first aave_v3
protocol in the config and the Uniswap V3 SwapRouter in swap.router. Prints the address
to put in the config as protocols[].flash_liquidator."""

from __future__ import annotations

import asyncio
from pathlib import Path

from eth_abi import encode as abi_encode

from . import abi
from .config import Config, load_signer
from .errors import ConfigError
from .rpc import Rpc, parse_int

REPO = Path(__file__).resolve().parent.parent


async def deploy_liquidator(cfg: Config) -> str:
    from .solidity import compile_files

    aave = [p for p in cfg.protocols if p.kind == "aave_v3"]
    if not aave:
        raise ConfigError("protocols: no aave_v3 protocol to deploy a flash liquidator for")
    if cfg.swap.router is None:
        raise ConfigError("swap.router: required to deploy the flash liquidator (the Uniswap V3 SwapRouter address)")
    source = REPO / "contracts" / "FlashLiquidator.sol"
    if not source.is_file():  # an installed wheel (pip install, the Docker image) has no contracts/
        raise ConfigError("deploy-liquidator: needs a source checkout (contracts/FlashLiquidator.sol and solc from "
                          "./dev setup), not found beside this installed keeper; run ./dev keeper deploy-liquidator "
                          "--config FILE from the repository")
    signer = load_signer(cfg.keeper)
    try:
        art = compile_files([source])["FlashLiquidator"]
    except RuntimeError as e:
        raise ConfigError(f"contracts/FlashLiquidator.sol: cannot compile ({e}); run ./dev setup for solc") from None
    rpc = Rpc(cfg.chain.rpc_url, cfg.chain.rpc_timeout_s)
    try:
        provider = abi.load("AavePoolAddressesProvider")
        pool = abi.to_checksum(provider.fn("getPool").decode_one(
            await rpc.eth_call(aave[0].pool_addresses_provider, provider.fn("getPool").encode())))
        code = "0x" + art["bytecode"].removeprefix("0x") + abi_encode(["address", "address"], [pool, cfg.swap.router]).hex()
        chain_id = await rpc.chain_id()
        nonce = parse_int(await rpc.call("eth_getTransactionCount", [signer.address, "pending"]), "nonce")
        blk = await rpc.get_block("latest")
        base = parse_int(blk.get("baseFeePerGas", "0x0"), "baseFee")
        prio = cfg.keeper.priority_fee_wei
        max_fee = min(2 * base + prio, cfg.keeper.max_fee_wei)
        gas = parse_int(await rpc.call("eth_estimateGas", [{"from": signer.address, "data": code}]), "gas")
        tx = {"type": 2, "chainId": chain_id, "nonce": nonce, "data": code, "value": 0, "gas": gas * 12 // 10,
              "maxFeePerGas": max_fee, "maxPriorityFeePerGas": min(prio, max_fee)}
        raw = bytes(signer.sign_transaction(tx).raw_transaction)
        tx_hash = await rpc.call("eth_sendRawTransaction", ["0x" + raw.hex()])
        for _ in range(600):
            rc = await rpc.call("eth_getTransactionReceipt", [tx_hash])
            if isinstance(rc, dict) and rc.get("blockNumber"):
                break
            await asyncio.sleep(0.5)
        else:
            raise ConfigError(f"deployment {tx_hash} not mined after 5 minutes")
        if rc.get("status") != "0x1":
            raise ConfigError(f"deployment {tx_hash} reverted")
        return abi.to_checksum(rc["contractAddress"])
    finally:
        await rpc.close()
