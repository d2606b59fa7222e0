"""`keeper deploy-liquidator --config FILE [--protocol NAME ...]`: deploy the keeper's own
contracts from the keeper's key (the deployer is the owner), one per enabled protocol that
needs one (keeper/liquidators.py): the FlashLiquidator of each Aave V3 pool, the
MorphoLiquidator of Morpho Blue, the TakeCallee of Maker. Prints each address with the config
line that names it."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from . import abi, liquidators
from .config import Config, load_signer
from .errors import ConfigError, KeeperError
from .redact import redact_url


class _Node:
    """One-shot JSON-RPC calls to the config's node; failures are one line naming the host only."""

    def __init__(self, url: str, timeout_s: float):
        self.url, self.timeout_s, self.shown = url, timeout_s, redact_url(url)

    def __call__(self, method: str, params: list[Any]) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                reply = json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise KeeperError(f"chain.rpc_url: {self.shown} answered HTTP {e.code} to {method}") from None
        except (urllib.error.URLError, OSError) as e:
            raise KeeperError(f"chain.rpc_url: cannot reach {self.shown}: {type(getattr(e, 'reason', e)).__name__}") from None
        except ValueError:
            raise KeeperError(f"chain.rpc_url: {self.shown} did not answer JSON-RPC to {method}") from None
        if not isinstance(reply, dict):
            raise KeeperError(f"chain.rpc_url: {self.shown} gave a malformed answer to {method}")
        if "error" in reply:
            err = reply["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            raise KeeperError(f"{method}: {str(msg)[:200]}")
        return reply.get("result")

    def eth_call(self, to: str, data: bytes) -> bytes:
        out = self("eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])
        return bytes.fromhex(out[2:]) if isinstance(out, str) and out.startswith("0x") else b""

    def number(self, value: Any, what: str) -> int:
        try:
            return int(value, 16)
        except (TypeError, ValueError):
            raise KeeperError(f"chain.rpc_url: bad {what} from the node: {str(value)[:40]!r}") from None


def deploy_liquidator(cfg: Config, only: list[str] | None = None) -> list[tuple[liquidators.Target, str]]:
    """Deploy each target, one after the other, each waited for; returns (target, address)."""
    liquidators.choose(cfg, only)  # names and sources first: no key or node needed to be told
    signer = load_signer(cfg.keeper)
    node = _Node(cfg.chain.rpc_url, cfg.chain.rpc_timeout_s)
    targets = liquidators.targets(cfg, node.eth_call, signer.address, only)
    chain_id = node.number(node("eth_chainId", []), "chain id")
    if cfg.chain.chain_id is not None and chain_id != cfg.chain.chain_id:
        raise ConfigError(f"chain.chain_id is {cfg.chain.chain_id} but {node.shown} is chain {chain_id}")
    out = []
    for t in targets:
        code = t.code(liquidators.bytecode(t))
        nonce = node.number(node("eth_getTransactionCount", [signer.address, "pending"]), "nonce")
        blk = node("eth_getBlockByNumber", ["latest", False]) or {}
        base = node.number(blk.get("baseFeePerGas", "0x0"), "base fee")
        prio = cfg.keeper.priority_fee_wei
        max_fee = min(2 * base + prio, cfg.keeper.max_fee_wei)
        gas = node.number(node("eth_estimateGas", [{"from": signer.address, "data": code}]), "gas estimate")
        tx = {"type": 2, "chainId": chain_id, "nonce": nonce, "data": code, "value": 0, "gas": gas * 12 // 10,
              "maxFeePerGas": max_fee, "maxPriorityFeePerGas": min(prio, max_fee)}
        raw = bytes(signer.sign_transaction(tx).raw_transaction)
        tx_hash = node("eth_sendRawTransaction", ["0x" + raw.hex()])
        for _ in range(600):
            rc = node("eth_getTransactionReceipt", [tx_hash])
            if isinstance(rc, dict) and rc.get("blockNumber"):
                break
            time.sleep(0.5)
        else:
            raise KeeperError(f"{t.contract} for {t.name}: deployment {tx_hash} not mined after 5 minutes")
        if rc.get("status") != "0x1":
            raise KeeperError(f"{t.contract} for {t.name}: deployment {tx_hash} reverted")
        out.append((t, abi.to_checksum(rc["contractAddress"])))
    return out
