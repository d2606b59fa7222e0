"""Seed the devnet Aave market with borrowers, a large depositor and a funded keeper.

Amounts are integers in raw token units (``*_raw``) or USD with 8 decimals (``*_usd8``,
the Aave oracle's base currency). Health factors are in basis points (``hf_bp``, 10000 = 1.0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from eth_utils import keccak

from .deploy import BASE_UNIT, DEPLOYER, DEPOSITOR, KEEPER, MAX_UINT256, RISK, Deployment, usd_to_raw
from .jsonrpc import JsonRpc, checksum, decode_revert, encode_call

BORROWER_SALT = b"keeper-devnet-borrower"
BORROWER_ETH_WEI = 10 * 10**18
HF_MAX_BP = 16000
HF_MIN_BP = 10300
HF_LTV_MARGIN_BP = 15  # stay this far above the lowest HF the LTV check allows
SIZE_MIN_USD = 5_000
SIZE_MAX_USD = 200_000
DEPOSITOR_BASE_USD = 20_000_000
DEPOSITOR_PER_BORROWER_USD = 150_000  # keeps utilisation low so interest barely moves HFs
BATCH_BORROWERS = 150  # borrowers per JSON-RPC batch and per mined block
SEED_BLOCK_GAS_LIMIT = 2_000_000_000  # > BATCH_BORROWERS x max gas limits of one borrower's txs

# per-tx gas limits (explicit: estimation would run against the not-yet-mined state)
GAS = {"mint": 120_000, "approve": 80_000, "supply": 350_000, "borrow": 500_000}

# (collateral symbols with value weights in percent, debt symbol)
PROFILES: list[tuple[tuple[tuple[str, int], ...], str]] = [
    ((("WETH", 100),), "USDC"),
    ((("WBTC", 100),), "USDC"),
    ((("USDC", 100),), "WETH"),
    ((("WETH", 60), ("WBTC", 40)), "USDC"),
    ((("WETH", 60), ("USDC", 40)), "WBTC"),
]


@dataclass
class BorrowerPlan:
    index: int
    address: str
    collateral_raw: dict[str, int]  # symbol -> raw amount supplied
    debt_symbol: str
    debt_raw: int
    target_hf_bp: int


def borrower_address(i: int) -> str:
    return checksum("0x" + keccak(BORROWER_SALT + i.to_bytes(4, "big"))[-20:].hex())


def _min_hf_bp(weights: Sequence[tuple[str, int]]) -> int:
    """Lowest HF reachable at borrow time: Σ w·LT / Σ w·LTV (borrow is capped by LTV)."""
    num = sum(w * RISK[s][1] for s, w in weights)
    den = sum(w * RISK[s][0] for s, w in weights)
    return max(HF_MIN_BP, -(-num * 10000 // den) + HF_LTV_MARGIN_BP)


def plan_borrowers(
    deployment: Deployment, n: int, prices_usd8: dict[str, int], start_index: int = 0
) -> list[BorrowerPlan]:
    """Deterministic borrower plans. Profiles cycle with i % 5; within a profile, the HF
    follows the golden-ratio sequence over [min HF, 1.60], so any prefix is spread evenly."""
    plans = []
    dec = deployment.decimals
    for i in range(start_index, start_index + n):
        weights, debt_sym = PROFILES[i % len(PROFILES)]
        j = i // len(PROFILES)
        lo = _min_hf_bp(weights)
        frac_ppm = (j * 618_034) % 1_000_000
        hf_bp = lo + (HF_MAX_BP - lo) * frac_ppm // 1_000_000
        h = int.from_bytes(keccak(b"keeper-devnet-size" + i.to_bytes(4, "big"))[:8], "big")
        size_usd = SIZE_MIN_USD + h % (SIZE_MAX_USD - SIZE_MIN_USD + 1)
        collateral_raw: dict[str, int] = {}
        weighted_base = 0  # Σ value_usd8 × LT_bps
        for sym, w in weights:
            raw = usd_to_raw(size_usd * w // 100 * BASE_UNIT, prices_usd8[sym], dec[sym])
            collateral_raw[sym] = raw
            value_usd8 = raw * prices_usd8[sym] // 10 ** dec[sym]
            weighted_base += value_usd8 * RISK[sym][1]
        debt_usd8 = weighted_base // hf_bp
        debt_raw = debt_usd8 * 10 ** dec[debt_sym] // prices_usd8[debt_sym]
        plans.append(BorrowerPlan(i, borrower_address(i), collateral_raw, debt_sym, debt_raw, hf_bp))
    return plans


def _oracle_prices(rpc: JsonRpc, d: Deployment) -> dict[str, int]:
    out = {}
    for sym, tok in d.tokens.items():
        (p,) = rpc.view(d.oracle, "getAssetPrice(address)", [tok], ["uint256"])
        out[sym] = p
    return out


def _fee_fields(rpc: JsonRpc) -> tuple[int, dict]:
    blk = rpc.call("eth_getBlockByNumber", ["latest", False])
    base = int(blk.get("baseFeePerGas", "0x0"), 16)
    prio = 10**9
    return base, {"maxFeePerGas": hex(base * 2 + prio), "maxPriorityFeePerGas": hex(prio)}


def _supply_from(rpc: JsonRpc, d: Deployment, who: str, amounts_raw: dict[str, int]) -> None:
    """Mint, approve and supply with automine on (a handful of txs)."""
    for sym, amount in amounts_raw.items():
        tok = d.tokens[sym]
        rpc.send({"from": who, "to": tok, "data": encode_call("mint(uint256)", amount)}, what=f"{who} mint {sym}")
        (allowed,) = rpc.view(tok, "allowance(address,address)", [who, d.pool], ["uint256"])
        if allowed < amount:
            if allowed:  # USDT-like tokens refuse a non-zero -> non-zero approve
                rpc.send({"from": who, "to": tok, "data": encode_call("approve(address,uint256)", d.pool, 0)},
                         what=f"{who} reset approval {sym}")
            rpc.send({"from": who, "to": tok, "data": encode_call("approve(address,uint256)", d.pool, MAX_UINT256)},
                     what=f"{who} approve {sym}")
        rpc.send(
            {"from": who, "to": d.pool, "data": encode_call("supply(address,uint256,address,uint16)", tok, amount, who, 0)},
            what=f"{who} supply {sym}",
        )


def seed_depositor(url: str, deployment: Deployment, usd_per_asset: int = DEPOSITOR_BASE_USD) -> None:
    """Account 2 supplies `usd_per_asset` (whole USD) of every asset so borrows succeed."""
    with JsonRpc(url) as rpc:
        prices = _oracle_prices(rpc, deployment)
        amounts = {
            s: usd_to_raw(usd_per_asset * BASE_UNIT, prices[s], deployment.decimals[s]) for s in deployment.tokens
        }
        _supply_from(rpc, deployment, DEPOSITOR, amounts)


def seed_borrowers(
    url: str, deployment: Deployment, n: int, *, start_index: int = 0, depositor: bool = True
) -> list[str]:
    """Create `n` deterministic borrowers #start_index.. (supply collateral, borrow variable).

    Also has the depositor (account 2) supply liquidity first unless depositor=False.
    Fast path: automine off, transactions sent as JSON-RPC batch arrays, blocks mined with
    evm_mine, receipts checked in batches; automine is restored on exit.
    Returns the borrower addresses (also appended to deployment.borrowers)."""
    with JsonRpc(url) as rpc:
        if depositor:
            usd = DEPOSITOR_BASE_USD + DEPOSITOR_PER_BORROWER_USD * n
            prices = _oracle_prices(rpc, deployment)
            amounts = {s: usd_to_raw(usd * BASE_UNIT, prices[s], deployment.decimals[s]) for s in deployment.tokens}
            _supply_from(rpc, deployment, DEPOSITOR, amounts)
        prices = _oracle_prices(rpc, deployment)
        plans = plan_borrowers(deployment, n, prices, start_index)
        base_fee, fees = _fee_fields(rpc)

        gas_limit = int(rpc.call("eth_getBlockByNumber", ["latest", False])["gasLimit"], 16)
        rpc.call("anvil_autoImpersonateAccount", [True])
        rpc.call("evm_setAutomine", [False])
        # One block per batch: when a block is full, anvil can drop a sender's later txs as
        # "nonce too high" instead of keeping them, so make the block big enough for all.
        rpc.call("evm_setBlockGasLimit", [hex(SEED_BLOCK_GAS_LIMIT)])
        try:
            for start in range(0, len(plans), BATCH_BORROWERS):
                _seed_batch(rpc, deployment, plans[start : start + BATCH_BORROWERS], fees, base_fee)
        finally:
            rpc.call("evm_setBlockGasLimit", [hex(gas_limit)])
            rpc.call("evm_setAutomine", [True])
            rpc.call("anvil_autoImpersonateAccount", [False])
        addrs = [p.address for p in plans]
        known = set(deployment.borrowers)
        deployment.borrowers.extend(a for a in addrs if a not in known)
        deployment.seeded_block = int(rpc.call("eth_blockNumber"), 16)
        return addrs


def _seed_batch(rpc: JsonRpc, d: Deployment, plans: list[BorrowerPlan], fees: dict, base_fee: int) -> None:
    # nonces: continue from the chain (fresh borrowers start at 0; re-seeding works too)
    nonces = [int(x, 16) for x in rpc.batch([("eth_getTransactionCount", [p.address, "latest"]) for p in plans])]
    rpc.batch([("anvil_setBalance", [p.address, hex(BORROWER_ETH_WEI)]) for p in plans])
    reqs: list[tuple[str, list]] = []
    labels: list[tuple[BorrowerPlan, str]] = []
    for p, nonce in zip(plans, nonces):
        def add(to: str, data: str, kind: str, label: str) -> None:
            nonlocal nonce
            tx = {"from": p.address, "to": to, "data": data, "gas": hex(GAS[kind]), "nonce": hex(nonce), **fees}
            reqs.append(("eth_sendTransaction", [tx]))
            labels.append((p, label))
            nonce += 1

        for sym, amount in p.collateral_raw.items():
            tok = d.tokens[sym]
            add(tok, encode_call("mint(uint256)", amount), "mint", f"mint {sym}")
            add(tok, encode_call("approve(address,uint256)", d.pool, amount), "approve", f"approve {sym}")
            add(d.pool, encode_call("supply(address,uint256,address,uint16)", tok, amount, p.address, 0), "supply", f"supply {sym}")
        add(
            d.pool,
            encode_call("borrow(address,uint256,uint256,uint16,address)", d.tokens[p.debt_symbol], p.debt_raw, 2, 0, p.address),
            "borrow",
            f"borrow {p.debt_symbol}",
        )
    answers = rpc.batch(reqs, raise_errors=False)
    hashes = []
    for (p, label), a in zip(labels, answers):
        if isinstance(a, dict) and "error" in a:
            raise RuntimeError(f"seeding borrower #{p.index} {p.address}: {label} rejected: {a['error']}")
        hashes.append(a)

    # mine until the pool is empty; pin the base fee so full blocks do not inflate it
    for _ in range(10_000):
        status = rpc.call("txpool_status")
        if int(status["pending"], 16) == 0 and int(status["queued"], 16) == 0:
            break
        rpc.call("anvil_setNextBlockBaseFeePerGas", [hex(base_fee)])
        rpc.call("evm_mine")
    else:
        raise RuntimeError("seeding: transactions stay pending after mining 10000 blocks")

    receipts = rpc.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
    for (p, label), h, r in zip(labels, hashes, receipts):
        if r is None:
            raise RuntimeError(f"seeding borrower #{p.index} {p.address}: {label} tx {h} was not mined")
        if int(r["status"], 16) != 1:
            reason = _replay(rpc, h, r)
            raise RuntimeError(
                f"seeding borrower #{p.index} {p.address}: {label} reverted (tx {h}): {reason}; "
                f"plan: collateral {p.collateral_raw}, debt {p.debt_raw} {p.debt_symbol}, HF target {p.target_hf_bp} bp"
            )


def _replay(rpc: JsonRpc, tx_hash: str, receipt: dict) -> str:
    tx = rpc.call("eth_getTransactionByHash", [tx_hash])
    call = {"from": tx["from"], "to": tx["to"], "data": tx["input"], "gas": tx["gas"]}
    try:
        rpc.call("eth_call", [call, hex(int(receipt["blockNumber"], 16) - 1)])
        return "replay at the previous block succeeded (depends on same-block ordering)"
    except Exception as e:  # noqa: BLE001 - report whatever the node says
        data = getattr(e, "error", {}).get("data") if hasattr(e, "error") else None
        return decode_revert(data) if isinstance(data, str) else str(e)


# ---- keeper ----------------------------------------------------------------------------

KEEPER_ETH_WEI = 1_000 * 10**18
KEEPER_INVENTORY_RAW = {
    "USDC": 2_000_000 * 10**6,
    "WETH": 1_000 * 10**18,
    "WBTC": 50 * 10**8,
}


def fund_keeper(url: str, deployment: Deployment, address: str = KEEPER) -> None:
    """Give `address` 1,000 ETH, 2,000,000 USDC, 1,000 WETH, 50 WBTC, and approve the Aave Pool
    for each token with max uint."""
    address = checksum(address)
    with JsonRpc(url) as rpc:
        rpc.call("anvil_setBalance", [address, hex(KEEPER_ETH_WEI)])
        for sym, amount in KEEPER_INVENTORY_RAW.items():
            rpc.send(
                {"from": DEPLOYER, "to": deployment.tokens[sym], "data": encode_call("mint(address,uint256)", address, amount)},
                what=f"mint {sym} to keeper",
            )
        unlocked = {a.lower() for a in rpc.call("eth_accounts")}
        impersonate = address.lower() not in unlocked
        if impersonate:
            rpc.call("anvil_impersonateAccount", [address])
        try:
            for sym in KEEPER_INVENTORY_RAW:
                rpc.send(
                    {"from": address, "to": deployment.tokens[sym], "data": encode_call("approve(address,uint256)", deployment.pool, MAX_UINT256)},
                    what=f"keeper approve {sym} to Pool",
                )
        finally:
            if impersonate:
                rpc.call("anvil_stopImpersonatingAccount", [address])
