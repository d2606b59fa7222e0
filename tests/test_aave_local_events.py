"""The running keeper's Aave model, kept up to date from events only, equals the chain.

tests/test_aave_local_health.py shows local.account_data equals getUserAccountData for
states read fresh. This shows the adapter keeps those states current the way it runs: a
dry-run keeper (health = "local", the periodic full check pushed out of the way) follows a
random history (supplies, variable and stable borrows, repays, withdrawals, collateral
toggles, eMode changes, rate swaps, aToken transfers, liquidations, price moves, time) block
by block with sync() + refresh_local(), re-reading only the accounts an event marked. After
every step, for every account with debt on chain:

- it is tracked (discovered from its Borrow event);
- its position in the model equals a fresh read (configuration, eMode, scaled balances,
  stable debt data): no event was missed;
- its health from the model at that block equals getUserAccountData to the wei;
- the adapter counted no disagreement.
"""

from __future__ import annotations

import random
import tomllib

from keeper import abi
from keeper.protocols.aave_v3 import local
from keeper.protocols.aave_v3.chainstate import read_accounts

from .conftest import DEVNET_CONFIG
from .test_aave_local_health import ERC20, F_ACCOUNT, POOL, WHALE, World, open_user, random_step, set_up_market

AAVE = "aave-v3-devnet"
N_STEPS = 60
SEED = 0xE7E475


async def _follow(keeper, adapter) -> int:
    head = await keeper.read_head()
    await adapter.sync(head)
    await adapter.refresh_local(head)
    return head.number


async def test_events_keep_the_model_equal_to_the_chain_through_a_random_history(chain, make_keeper, steady_clock):
    names = [p["name"] for p in tomllib.loads(DEVNET_CONFIG.read_text())["protocols"]]
    keeper = await make_keeper(dry_run=True, only=AAVE,
                               **{f"KEEPER_PROTOCOLS__{names.index(AAVE)}__FULL_CHECK_BLOCKS": "1000000"})
    adapter = keeper.adapters[AAVE]
    w = World(chain, keeper.mc)
    rng = random.Random(SEED)
    set_up_market(w, rng)
    w.initial_prices = {s: w.price(s) for s in w.by_sym}
    for n in range(8):
        open_user(w, rng, n)
    await _follow(keeper, adapter)  # the first refresh reads every account once (and checks them)
    candidates = list(dict.fromkeys(abi.to_checksum(u) for u in w.users + [WHALE] + list(chain.dep.borrowers)))
    transfers = 0
    recomputed: list[int] = []
    for step in range(N_STEPS):
        if step % 7 == 3:  # aTokens change hands: the aToken's BalanceTransfer marks both sides
            a, b = rng.sample(w.users, 2)
            held = [r for r in w.reserves if w.view(r.a_token, ERC20.fn("balanceOf"), a)[0]]
            if held:
                r = rng.choice(held)
                bal = w.view(r.a_token, ERC20.fn("balanceOf"), a)[0]
                if w.tx(a, r.a_token, ERC20.fn("transfer").encode(b, bal // 3), "aToken transfer"):
                    transfers += 1
        else:
            random_step(w, rng)
            if w.pending_restore:
                for s, p in w.pending_restore.items():
                    w.set_price(s, p)
                w.pending_restore = {}
        block = await _follow(keeper, adapter)
        recomputed.append(adapter.recomputed)
        onchain = await keeper.mc.run([abi_call(w, u) for u in candidates], block)
        with_debt = [u for u, (ok, d) in zip(candidates, onchain) if ok and F_ACCOUNT.decode(d)[1] > 0]
        assert set(with_debt) <= adapter.accounts, f"step {step}: untracked borrowers {set(with_debt) - adapter.accounts}"
        fresh = await read_accounts(keeper.mc, adapter.pool, adapter.reserves, with_debt, block)
        ts = int(chain.call("eth_getBlockByNumber", [hex(block), False])["timestamp"], 16)
        prices = {r.id: r.price for r in adapter.reserves}
        for u, (ok, data) in zip(candidates, onchain):
            if u not in with_debt:
                continue
            mine = adapter.model[u]
            assert (mine.config, mine.emode_category, dict(mine.collateral), dict(mine.variable_debt),
                    dict(mine.stable_debt)) == (fresh[u].config, fresh[u].emode_category, dict(fresh[u].collateral),
                                                dict(fresh[u].variable_debt), dict(fresh[u].stable_debt)), \
                f"step {step}: the model of {u} missed an event"
            d = local.account_data(mine, adapter.rstates, prices, adapter.emode_cats, adapter._emode_prices, ts)
            assert d.as_chain_tuple() == F_ACCOUNT.decode(data), f"step {step}: health of {u}"
        assert adapter.disagreements == 0
    print(f"events model: {w.counts}, transfers {transfers}, recomputed per block {recomputed}")
    assert transfers >= 3
    assert min(recomputed) < len(adapter.accounts)  # blocks without a price move recompute few accounts
    assert w.counts.get("liquidationCall", 0) >= 1 and w.counts.get("repay", 0) >= 1, w.counts


def abi_call(w: World, user: str):
    from keeper.multicall import Call

    return Call(w.pool, POOL.fn("getUserAccountData").encode(user))
