"""Gas per execution route on the devnet: the same liquidations (WETH -12%, 40 borrowers),
once from the keeper's own inventory and once through the FlashLiquidator (zero inventory).

Usage: python bench/routes.py
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil test account 1


def rpc(url, method, params=()):
    req = urllib.request.Request(url, json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode(),
                                 {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req).read())["result"]


async def run(url: str, routes: str, journal: str) -> list[tuple[str, str, int, float]]:
    import os

    from keeper import log as logmod
    from keeper.app import Keeper
    from keeper.config import load_config

    logmod.setup("error", json_lines=True, stream=sys.stderr)
    os.environ["KEEPER_PRIVATE_KEY"] = KEY
    env = {"KEEPER_RPC_URL": url, "KEEPER_PRIVATE_KEY": KEY, "KEEPER_PROTOCOLS__0__ROUTES": routes,
           "KEEPER_KEEPER__JOURNAL": journal}
    import tomllib

    names = [p["name"] for p in tomllib.loads((REPO / "config" / "devnet.toml").read_text())["protocols"]]
    env.update({f"KEEPER_PROTOCOLS__{i}__ENABLED": "true" if n == "aave-v3-devnet" else "false" for i, n in enumerate(names)})
    k = Keeper(load_config(REPO / "config" / "devnet.toml", environ=env), dry_run=False)
    await k.start()
    try:
        outs = await k.cycle(await k.read_head())
        return [(o.opp.account, f"{o.opp.detail.collateral_symbol}/{o.opp.detail.debt_symbol}", o.gas_used,
                 o.expected_profit_usd_e8 / 1e8) for o in outs if o.status == "confirmed"]
    finally:
        await k.close()


def main() -> int:
    from keeper.devnet import shock, start_devnet

    node, dep = start_devnet(port=0, n_borrowers=40, log_path=REPO / ".devnet" / "bench-routes.log")
    try:
        shock(node.url, dep, "WETH", -12)
        snap = rpc(node.url, "evm_snapshot")
        with tempfile.TemporaryDirectory() as tmp:
            inv = asyncio.run(run(node.url, '["inventory"]', f"{tmp}/a.jsonl"))
            rpc(node.url, "evm_revert", [snap])
            # zero inventory: the flash route is the only one that can act
            for sym, tok in dep.tokens.items():
                bal = int(rpc(node.url, "eth_call", [{"to": tok, "data": "0x70a08231" + "0" * 24 + dep.keeper[2:]}, "latest"]), 16)
                data = "0xa9059cbb" + "0" * 24 + dep.depositor[2:].lower() + f"{bal:064x}"
                rpc(node.url, "eth_sendTransaction", [{"from": dep.keeper, "to": tok, "data": data}])
            fl = asyncio.run(run(node.url, '["flash"]', f"{tmp}/b.jsonl"))
    finally:
        node.stop()
    by = {a: (p, g, e) for a, p, g, e in fl}
    print(f"{'account':<44} {'pair':<10} {'inventory gas':>13} {'flash gas':>10} {'inv. net $':>11} {'flash net $':>11}")
    for a, pair, g, e in inv:
        fp, fg, fe = by.get(a, (pair, 0, 0.0))
        print(f"{a:<44} {pair:<10} {g:>13,} {fg:>10,} {e:>11,.2f} {fe:>11,.2f}")
    gi = sum(g for *_, g, _ in inv) / max(len(inv), 1)
    gf = sum(g for *_, g, _ in fl) / max(len(fl), 1)
    print(f"mean gas: inventory {gi:,.0f}, flash loan {gf:,.0f} (+{gf - gi:,.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
