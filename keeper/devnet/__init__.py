"""Local devnet: anvil with REAL Aave V3, Uniswap V3 and Uniswap V2 bytecode from npm artifacts.

Deterministic addresses (fixed deploy order from anvil account 0 on a fresh chain; the
extensions in extensions.py from their own accounts: maker, perps, venues = USDT-like and LINK
reserves with V2 pairs), seeded borrowers, and a cached anvil state so later starts take well
under a second.

Public API (all amounts are integers in raw token units; prices are USD with 8 decimals)::

    ensure_state(n_borrowers: int, cache_dir: Path | None = None, *, verbose: bool = False) -> Path
        Path of .devnet/cache/state-<key>.json; built on first use (deploy + seed + fund
        keeper, ~0.6 s for 40 borrowers, ~15 s for 2000). Key = sha256 of keeper/devnet/*.py,
        keeper/solidity.py, contracts/*.sol, package-lock.json and n_borrowers. The
        Deployment is stored beside it as deployment-<key>.json.

    start_devnet(port: int = 8545, n_borrowers: int = 200, log_path: Path | None = None,
                 cache_dir: Path | None = None, extra_args: tuple[str, ...] = (), *,
                 die_with_parent: bool = True) -> tuple[Anvil, Deployment]
        Starts anvil with --load-state on 127.0.0.1:port (port 0 = a free port), also writes
        .devnet/deployment.json. Stop it with anvil.stop() (or use it as a context manager).
        die_with_parent=False leaves anvil running if this process dies (devnet up --detach).

    load_deployment(path: Path | None = None, n_borrowers: int | None = None,
                    cache_dir: Path | None = None) -> Deployment
        From `path`; else the cached deployment for n_borrowers; else .devnet/deployment.json;
        else the newest deployment-*.json in the cache.

    Anvil(port: int = 8545, state_load: Path | None = None, state_dump: Path | None = None,
          log_path: Path | None = None, extra_args: Sequence[str] = (), *,
          start_timeout_s: float = 20.0, die_with_parent: bool = True)
        .start() -> Anvil, .stop(), .url, .running; context manager. Binary from $ANVIL_BIN,
        else node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil, else PATH.

    deploy(url: str, *, write_to: Path | None = .devnet/deployment.json) -> Deployment
        Fresh chain only (account 0 at nonce 0).

    seed_borrowers(url: str, deployment: Deployment, n: int, *, start_index: int = 0,
                   depositor: bool = True) -> list[str]
        Borrower i = last 20 bytes of keccak(b"keeper-devnet-borrower" + i.to_bytes(4, "big")).
        Profiles cycle with i % 5: WETH->USDC, WBTC->USDC, USDC->WETH, WETH+WBTC->USDC,
        WETH+USDC->WBTC; collateral $5k..$200k; health factors spread evenly (golden-ratio
        sequence per profile) from the lowest the LTV allows (~1.032 for WETH) to 1.60.
        depositor=True first has account 2 supply $20M + $150k*n of each asset.

    fund_keeper(url: str, deployment: Deployment, address: str = KEEPER) -> None
        1,000 ETH, 2,000,000 USDC, 1,000 WETH, 50 WBTC, max approval of the Aave Pool.

    shock(url: str, deployment: Deployment, symbol: str, pct: Decimal | float | int | str) -> tuple[int, int]
        new = old * (100 + pct) / 100 (exact, rounded down); returns (old, new).
    set_price(url: str, deployment: Deployment, symbol: str, answer_8dec: int) -> int  (block number)
    get_price(url: str, deployment: Deployment, symbol: str) -> int

Deployment fields: chain_id, deployer, keeper, depositor, treasury, provider, pool,
pool_configurator, oracle, data_provider, acl_manager, interest_rate_strategy,
tokens/decimals/aggregators/a_tokens/variable_debt_tokens ({symbol: ...}), uniswap_factory,
uniswap_router, uniswap_position_manager, uniswap_quoter_v2, uniswap_pools
[UniPool(token0, token1, fee, address)], multicall3, deploy_block, borrowers, seeded_block.
"""

from .anvil import Anvil, find_anvil, free_port
from .deploy import DEPLOYER, DEPOSITOR, KEEPER, MULTICALL3, TREASURY, Deployment, UniPool, deploy
from .prices import get_price, set_price, shock
from .seed import borrower_address, fund_keeper, plan_borrowers, seed_borrowers, seed_depositor
from .state import DEFAULT_BORROWERS, ensure_state, load_deployment, start_devnet, state_key

__all__ = [
    "Anvil",
    "DEFAULT_BORROWERS",
    "DEPLOYER",
    "DEPOSITOR",
    "Deployment",
    "KEEPER",
    "MULTICALL3",
    "TREASURY",
    "UniPool",
    "borrower_address",
    "deploy",
    "ensure_state",
    "find_anvil",
    "free_port",
    "fund_keeper",
    "get_price",
    "load_deployment",
    "plan_borrowers",
    "seed_borrowers",
    "seed_depositor",
    "set_price",
    "shock",
    "start_devnet",
    "state_key",
]
