"""Minimal synchronous JSON-RPC client for devnet setup (deploy, seed, shock).

Kept separate from the keeper's async client on purpose: devnet setup is a script-like
sequence of calls where a blocking keep-alive HTTP connection is the simplest and fastest.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any, Iterable, Sequence
from urllib.parse import urlsplit

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

def decode_revert(data: str | bytes | None) -> str:
    """Human-readable revert reason, with Aave's numeric codes named."""
    from ..abi import decode_revert as decode
    from ..protocols.aave_v3.errors import explain

    if data is None:
        return "no revert data"
    if isinstance(data, str):
        data = bytes.fromhex(data[2:] if data.startswith("0x") else data)
    reason = decode(data)
    return explain(reason) if reason.isdigit() else reason


class RpcError(RuntimeError):
    def __init__(self, method: str, error: dict):
        self.method = method
        self.error = error
        data = error.get("data")
        reason = ""
        if isinstance(data, str) and data.startswith("0x"):
            reason = f" [revert: {decode_revert(data)}]"
        super().__init__(f"{method}: {error.get('message')} (code {error.get('code')}){reason}")


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def encode_call(signature: str, *args: Any) -> str:
    """'transfer(address,uint256)', to, amount -> '0x…' calldata."""
    types = signature[signature.index("(") + 1 : -1]
    types_list = _split_types(types)
    data = selector(signature) + (abi_encode(types_list, list(args)) if types_list else b"")
    return "0x" + data.hex()


def _split_types(types: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in types:
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        cur += ch
    if cur:
        out.append(cur)
    return out


class JsonRpc:
    """Blocking JSON-RPC over one keep-alive HTTP connection."""

    def __init__(self, url: str, timeout_s: float = 120.0):
        self.url = url
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._path = parts.path or "/"
        self._timeout = timeout_s
        self._conn: http.client.HTTPConnection | None = None
        self._id = 0

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "JsonRpc":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _post(self, payload: Any) -> Any:
        body = json.dumps(payload).encode()
        for attempt in range(2):
            reused = self._conn is not None
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            try:
                self._conn.request("POST", self._path, body, {"Content-Type": "application/json"})
                resp = self._conn.getresponse()
                raw = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status} from {self.url}: {raw[:300]!r}")
                return json.loads(raw)
            except (http.client.HTTPException, ConnectionError, OSError) as e:
                self.close()
                # retry once only on a stale keep-alive connection; a fresh one failing is real
                if attempt == 1 or not reused:
                    raise ConnectionError(f"JSON-RPC to {self.url} failed: {e}") from e
        raise AssertionError("unreachable")

    def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        self._id += 1
        resp = self._post({"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)})
        if "error" in resp:
            raise RpcError(method, resp["error"])
        return resp["result"]

    def batch(self, requests: Iterable[tuple[str, Sequence[Any]]], *, raise_errors: bool = True) -> list[Any]:
        """Send one JSON array; results in request order. Errors raise unless raise_errors=False,
        in which case the error dict is returned in place as {"error": ...}."""
        reqs = []
        for method, params in requests:
            self._id += 1
            reqs.append({"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)})
        if not reqs:
            return []
        resp = self._post(reqs)
        if isinstance(resp, dict):  # whole batch rejected
            raise RpcError("batch", resp.get("error", {"message": str(resp)}))
        by_id = {r["id"]: r for r in resp}
        out = []
        for r in reqs:
            a = by_id.get(r["id"])
            if a is None:
                raise RuntimeError(f"batch answer lacks id {r['id']} ({r['method']})")
            if "error" in a:
                if raise_errors:
                    raise RpcError(r["method"], a["error"])
                out.append({"error": a["error"]})
            else:
                out.append(a["result"])
        return out

    # ---- helpers -------------------------------------------------------------------------

    def eth_call(self, to: str, data: str, block: str = "latest", sender: str | None = None) -> bytes:
        tx = {"to": to, "data": data}
        if sender:
            tx["from"] = sender
        return bytes.fromhex(self.call("eth_call", [tx, block])[2:])

    def view(self, to: str, signature: str, args: Sequence[Any], out_types: Sequence[str]) -> tuple:
        return abi_decode(list(out_types), self.eth_call(to, encode_call(signature, *args)))

    def wait_receipt(self, tx_hash: str, timeout_s: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout_s
        delay = 0.001
        while True:
            r = self.call("eth_getTransactionReceipt", [tx_hash])
            if r is not None:
                return r
            if time.monotonic() > deadline:
                raise TimeoutError(f"no receipt for {tx_hash} after {timeout_s}s ({self._why_pending(tx_hash)})")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _why_pending(self, tx_hash: str) -> str:
        """What the node says of a transaction that never got a receipt (for the error)."""
        out = []
        for label, method, params in (("automine", "anvil_getAutomine", []),
                                      ("tx", "eth_getTransactionByHash", [tx_hash]),
                                      ("pending base fee", "eth_getBlockByNumber", ["pending", False]),
                                      ("txpool", "txpool_status", [])):
            try:
                r = self.call(method, params)
            except Exception as e:  # noqa: BLE001 - a diagnostic: say what failed and go on
                out.append(f"{label}: {e.__class__.__name__}")
                continue
            if method == "eth_getTransactionByHash" and isinstance(r, dict):
                r = {k: r.get(k) for k in ("nonce", "maxFeePerGas", "maxPriorityFeePerGas", "blockNumber")}
            elif method == "eth_getBlockByNumber" and isinstance(r, dict):
                r = r.get("baseFeePerGas")
            out.append(f"{label}: {r}")
        return "; ".join(out)

    def send(self, tx: dict, *, what: str = "transaction") -> dict:
        """eth_sendTransaction from an unlocked/impersonated account, wait, check status.

        Without "gas" anvil estimates, and an estimation failure reports the revert reason."""
        try:
            if "gas" not in tx:
                # anvil's estimate can be a hair short for calls with callbacks (Uniswap mint):
                # the transaction then runs out of gas on chain while a replay succeeds
                est = int(self.call("eth_estimateGas", [tx]), 16)
                tx = {**tx, "gas": hex(est * 13 // 10 + 50_000)}
            h = self.call("eth_sendTransaction", [tx])
        except RpcError as e:
            raise RuntimeError(f"{what} failed: {e}") from e
        r = self.wait_receipt(h)
        if int(r["status"], 16) != 1:
            reason = self.replay_revert(tx, r)
            raise RuntimeError(f"{what} reverted (tx {h}): {reason}")
        return r

    def replay_revert(self, tx: dict, receipt: dict) -> str:
        call = {k: v for k, v in tx.items() if k in ("from", "to", "data", "value", "gas")}
        try:
            blk = int(receipt["blockNumber"], 16)
            self.call("eth_call", [call, hex(blk - 1)])
            return "reverted on chain, but the replay succeeded"
        except RpcError as e:
            data = e.error.get("data")
            return decode_revert(data) if isinstance(data, str) else str(e)


def checksum(addr: str) -> str:
    return to_checksum_address(addr)
