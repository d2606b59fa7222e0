"""Devnet extension: a Maker/Sky Liquidation 2.0 system (contracts/dss/, written here from
the published dss interfaces and rules, mainnet units: wad 1e18, ray 1e27, rad 1e45).

Deployed from anvil account 5 only (MAKER_DEPLOYER), in a fixed order, so the addresses are
deterministic and independent of the other extensions:

    Vat, Dai, DaiJoin, Vow, Spotter, Dog, then per ilk ("ETH-A": devnet WETH, LinearDecrease;
    "WBTC-A": devnet WBTC, StairstepExponentialDecrease): an AggregatorPip on the devnet's
    Chainlink-style aggregator, GemJoin, abacus, Clipper; rates folded to ~1.02 so the
    Vat's own units matter; 12 seeded vaults per ilk with collateralization spread from
    just above `mat` to 2x `mat`; Uniswap V3 pools DAI/WETH and DAI/WBTC (0.3%) with about
    $50M of depth at the oracle price; the keeper (account 1) gets 1,000,000 DAI of Vat dai
    (it must `vat.hope(clipper)` itself) and deploys its own TakeCallee (flash-take
    executor), so it owns it.

`after_shock(url, dep, symbol)` pokes the Spotter for every ilk whose gem is `symbol` and
arbitrages the DAI pools holding it to the new oracle price.
"""

from __future__ import annotations


from eth_abi import encode as abi_encode
from eth_utils import keccak

from .artifacts import CONTRACTS_DIR
from .deploy import KEEPER, MAX_TICK, TICK_SPACING, Deployment, sqrt_price_x96
from .jsonrpc import JsonRpc, checksum, encode_call

MAKER_DEPLOYER = "0x9965507D1a55bcC2695C58ba16FB37d819B0A4dc"  # anvil account 5
WAD = 10**18
RAY = 10**27
RAD = 10**45
DAI_PRICE_8DEC = 10**8  # DAI = $1 on the devnet

# name -> parameters (mainnet-like; units in the comments)
ILKS: dict[str, dict] = {
    "ETH-A": {
        "gem": "WETH",
        "calc": "LinearDecrease",
        "tau": 3_600,                  # seconds to zero price
        "mat": 145 * RAY // 100,       # [ray] 145%
        "chop": 113 * WAD // 100,      # [wad] 13% penalty
        "dust": 5_000 * RAD,           # [rad]
        "line": 500_000_000 * RAD,     # [rad]
        "hole": 20_000_000 * RAD,      # [rad]
        "buf": 120 * RAY // 100,       # [ray]
        "tail": 1_800,                 # [s]
        "cusp": 40 * RAY // 100,       # [ray]
        "chip": WAD // 1000,           # [wad] 0.1%
        "tip": 300 * RAD,              # [rad]
        "rate": 10234 * RAY // 10000,  # [ray] accumulated stability fee
        "vault_gem_range": (10 * WAD, 100 * WAD),  # token base units
    },
    "WBTC-A": {
        "gem": "WBTC",
        "calc": "StairstepExponentialDecrease",
        "cut": 99 * RAY // 100,        # [ray] -1% per step
        "step": 90,                    # [s]
        "mat": 150 * RAY // 100,
        "chop": 113 * WAD // 100,
        "dust": 5_000 * RAD,
        "line": 500_000_000 * RAD,
        "hole": 15_000_000 * RAD,
        "buf": 120 * RAY // 100,
        "tail": 4_800,
        "cusp": 40 * RAY // 100,
        "chip": WAD // 1000,
        "tip": 300 * RAD,
        "rate": 10157 * RAY // 10000,
        "vault_gem_range": (50_000_000, 500_000_000),  # 0.5 .. 5 WBTC (8 decimals)
    },
}
HOLE = 50_000_000 * RAD
LINE = 1_000_000_000 * RAD
VAULTS_PER_ILK = 12
RATIO_LO_BP, RATIO_HI_BP = 10_300, 20_000  # collateralization / mat, in basis points
KEEPER_VAT_DAI = 1_000_000 * RAD
POOL_FEE = 3000
CALLEE_NONCE = 1_000  # the keeper's nonce when it deploys its TakeCallee
POOL_SIDE_USD = 25_000_000


def vault_owner(ilk: str, i: int) -> str:
    return checksum("0x" + keccak(b"keeper-devnet-maker-vault" + ilk.encode() + i.to_bytes(4, "big"))[-20:].hex())


def ilk_id(name: str) -> bytes:
    return name.encode().ljust(32, b"\0")


def contracts() -> dict[str, dict]:
    from keeper.solidity import compile_files

    return compile_files(sorted((CONTRACTS_DIR / "dss").glob("*.sol")))


class _Sender:
    def __init__(self, rpc: JsonRpc, sender: str):
        self.rpc = rpc
        self.sender = sender

    def create(self, what: str, bytecode: str, types: list[str] = (), args: list = ()) -> str:
        data = bytecode + (abi_encode(list(types), list(args)).hex() if types else "")
        r = self.rpc.send({"from": self.sender, "data": data}, what=f"deploy {what}")
        return checksum(r["contractAddress"])

    def tx(self, to: str, sig: str, *args, gas: int = 500_000, what: str | None = None) -> dict:
        return self.rpc.send({"from": self.sender, "to": to, "data": encode_call(sig, *args), "gas": hex(gas)},
                             what=what or sig.split("(")[0])


def deploy_extension(url: str, dep: Deployment) -> dict:
    with JsonRpc(url) as rpc:
        return _deploy(rpc, dep)


def _deploy(rpc: JsonRpc, dep: Deployment) -> dict:
    own = contracts()
    m = _Sender(rpc, MAKER_DEPLOYER)
    rpc.call("anvil_setBalance", [MAKER_DEPLOYER, hex(10_000 * 10**18)])

    vat = m.create("Vat", own["Vat"]["bytecode"])
    dai = m.create("Dai", own["Dai"]["bytecode"])
    dai_join = m.create("DaiJoin", own["DaiJoin"]["bytecode"], ["address", "address"], [vat, dai])
    vow = m.create("Vow", own["Vow"]["bytecode"], ["address"], [vat])
    spotter = m.create("Spotter", own["Spotter"]["bytecode"], ["address"], [vat])
    dog = m.create("Dog", own["Dog"]["bytecode"], ["address"], [vat])
    m.tx(dai, "rely(address)", dai_join)
    m.tx(vat, "rely(address)", spotter)
    m.tx(vat, "rely(address)", dog)
    m.tx(vow, "rely(address)", dog)
    m.tx(vat, "file(bytes32,uint256)", b"Line".ljust(32, b"\0"), LINE)
    m.tx(dog, "file(bytes32,address)", b"vow".ljust(32, b"\0"), vow)
    m.tx(dog, "file(bytes32,uint256)", b"Hole".ljust(32, b"\0"), HOLE)

    ilks_out: dict[str, dict] = {}
    for name, p in ILKS.items():
        ilk = ilk_id(name)
        gem = dep.tokens[p["gem"]]
        m.tx(vat, "init(bytes32)", ilk)
        m.tx(vat, "file(bytes32,bytes32,uint256)", ilk, b"line".ljust(32, b"\0"), p["line"])
        m.tx(vat, "file(bytes32,bytes32,uint256)", ilk, b"dust".ljust(32, b"\0"), p["dust"])
        pip = m.create(f"{name} pip", own["AggregatorPip"]["bytecode"], ["address"], [dep.aggregators[p["gem"]]])
        m.tx(spotter, "file(bytes32,bytes32,address)", ilk, b"pip".ljust(32, b"\0"), pip)
        m.tx(spotter, "file(bytes32,bytes32,uint256)", ilk, b"mat".ljust(32, b"\0"), p["mat"])
        m.tx(spotter, "poke(bytes32)", ilk)
        gem_join = m.create(f"{name} GemJoin", own["GemJoin"]["bytecode"], ["address", "bytes32", "address"], [vat, ilk, gem])
        m.tx(vat, "rely(address)", gem_join)
        calc = m.create(f"{name} {p['calc']}", own[p["calc"]]["bytecode"])
        if p["calc"] == "LinearDecrease":
            m.tx(calc, "file(bytes32,uint256)", b"tau".ljust(32, b"\0"), p["tau"])
        else:
            m.tx(calc, "file(bytes32,uint256)", b"cut".ljust(32, b"\0"), p["cut"])
            m.tx(calc, "file(bytes32,uint256)", b"step".ljust(32, b"\0"), p["step"])
        clip = m.create(f"{name} Clipper", own["Clipper"]["bytecode"], ["address", "address", "address", "bytes32"],
                        [vat, spotter, dog, ilk])
        m.tx(clip, "file(bytes32,address)", b"calc".ljust(32, b"\0"), calc)
        m.tx(clip, "file(bytes32,address)", b"vow".ljust(32, b"\0"), vow)
        for what in ("buf", "tail", "cusp", "chip", "tip"):
            m.tx(clip, "file(bytes32,uint256)", what.encode().ljust(32, b"\0"), p[what])
        m.tx(clip, "rely(address)", dog)
        m.tx(dog, "rely(address)", clip)
        m.tx(vat, "rely(address)", clip)
        m.tx(dog, "file(bytes32,bytes32,address)", ilk, b"clip".ljust(32, b"\0"), clip)
        m.tx(dog, "file(bytes32,bytes32,uint256)", ilk, b"chop".ljust(32, b"\0"), p["chop"])
        m.tx(dog, "file(bytes32,bytes32,uint256)", ilk, b"hole".ljust(32, b"\0"), p["hole"])
        m.tx(clip, "upchost()")
        m.tx(vat, "fold(bytes32,address,int256)", ilk, vow, p["rate"] - RAY)
        ilks_out[name] = {"gem": gem, "gem_symbol": p["gem"], "gem_join": gem_join, "clipper": clip,
                          "calc": calc, "calc_kind": p["calc"], "pip": pip}

    vaults = _seed_vaults(rpc, m, dep, vat, ilks_out)
    m.tx(vat, "hope(address)", dai_join)  # the deployer exits DAI it sucks (backed DAI only)
    core = {"vat": vat, "vow": vow, "dai_join": dai_join, "dai": dai}
    pools = _pools(rpc, m, dep, core)
    # the keeper: Vat dai to bid with (no vat.hope: the keeper does that itself)
    m.tx(vat, "suck(address,address,uint256)", vow, KEEPER, KEEPER_VAT_DAI)
    # the keeper deploys its own TakeCallee (so it owns it) at a fixed nonce, so the address
    # does not depend on what else the keeper account did while the devnet was built
    nonce = int(rpc.call("eth_getTransactionCount", [KEEPER, "latest"]), 16)
    if nonce > CALLEE_NONCE:
        raise RuntimeError(f"keeper nonce {nonce} is past the TakeCallee deploy nonce {CALLEE_NONCE}")
    rpc.call("anvil_setNonce", [KEEPER, hex(CALLEE_NONCE)])
    k = _Sender(rpc, KEEPER)
    callee = k.create("TakeCallee", own["TakeCallee"]["bytecode"], ["address", "address", "address"],
                      [vat, dai_join, dep.uniswap_router])
    return {"deployer": MAKER_DEPLOYER, "vat": vat, "dog": dog, "spotter": spotter, "dai": dai,
            "dai_join": dai_join, "vow": vow, "ilks": ilks_out, "pools": pools, "vaults": vaults,
            "take_callee": callee, "keeper_vat_dai": KEEPER_VAT_DAI,
            "block": int(rpc.call("eth_blockNumber"), 16)}


def _price(rpc: JsonRpc, dep: Deployment, symbol: str) -> int:
    (answer,) = rpc.view(dep.aggregators[symbol], "latestAnswer()", [], ["int256"])
    return answer


def _seed_vaults(rpc: JsonRpc, m: _Sender, dep: Deployment, vat: str, ilks: dict[str, dict]) -> list[dict]:
    """12 vaults per ilk: account 5 mints and joins the gem to each owner, the owner frobs."""
    out = []
    rpc.call("anvil_autoImpersonateAccount", [True])
    try:
        for name, info in ilks.items():
            p = ILKS[name]
            ilk = ilk_id(name)
            gem, gem_join = info["gem"], info["gem_join"]
            dec = dep.decimals[p["gem"]]
            lo, hi = p["vault_gem_range"]
            plans = []
            for i in range(VAULTS_PER_ILK):
                h = int.from_bytes(keccak(b"keeper-devnet-maker-size" + name.encode() + i.to_bytes(4, "big"))[:8], "big")
                plans.append((vault_owner(name, i), lo + h % (hi - lo + 1),
                              RATIO_LO_BP + (RATIO_HI_BP - RATIO_LO_BP) * i // (VAULTS_PER_ILK - 1)))
            total = sum(amt for _, amt, _ in plans)
            m.tx(gem, "mint(uint256)", total, gas=200_000)
            m.tx(gem, "approve(address,uint256)", gem_join, total, gas=100_000)
            _, rate, spot, _, _ = rpc.view(vat, "ilks(bytes32)", [ilk], ["uint256"] * 5)
            for owner, amt, ratio_bp in plans:
                ink = amt * 10 ** (18 - dec)  # [wad]
                # art * rate * ratio = ink * spot  (ratio = collateralization / mat)
                art = ink * spot * 10_000 // (rate * ratio_bp)
                m.tx(gem_join, "join(address,uint256)", owner, amt, gas=200_000)
                rpc.call("anvil_setBalance", [owner, hex(10**18)])
                rpc.send({"from": owner, "to": vat, "gas": hex(300_000),
                          "data": encode_call("frob(bytes32,address,address,address,int256,int256)",
                                              ilk, owner, owner, owner, ink, art)}, what=f"frob {name} {owner}")
                out.append({"ilk": name, "urn": owner, "ink": ink, "art": art, "ratio_bp": ratio_bp})
    finally:
        rpc.call("anvil_autoImpersonateAccount", [False])
    return out


def _mint_dai(m: _Sender, core: dict, wad: int) -> None:
    """DAI the way the system creates it: Vat dai (suck, the deployer is a ward) exited
    through the DaiJoin, so every DAI token is backed by the DaiJoin's Vat dai and can
    be joined back (a ward `mint` would break DaiJoin.join)."""
    m.tx(core["vat"], "suck(address,address,uint256)", core["vow"], m.sender, wad * RAY, gas=200_000)
    m.tx(core["dai_join"], "exit(address,uint256)", m.sender, wad, gas=200_000)


def _pools(rpc: JsonRpc, m: _Sender, dep: Deployment, core: dict) -> list[dict]:
    dai = core["dai"]
    npm = dep.uniswap_position_manager
    pools = []
    for sym in ("WETH", "WBTC"):
        tok = dep.tokens[sym]
        price = _price(rpc, dep, sym)
        amounts = {dai: POOL_SIDE_USD * 10**18, tok: POOL_SIDE_USD * 10**8 * 10 ** dep.decimals[sym] // price}
        m.tx(tok, "mint(uint256)", amounts[tok], gas=200_000)
        _mint_dai(m, core, amounts[dai])
        for t in (tok, dai):
            m.tx(t, "approve(address,uint256)", npm, amounts[t], gas=100_000)
        t0, t1 = sorted((tok, dai), key=lambda a: int(a, 16))
        p0 = DAI_PRICE_8DEC if t0 == dai else price
        p1 = DAI_PRICE_8DEC if t1 == dai else price
        d0 = 18 if t0 == dai else dep.decimals[sym]
        d1 = 18 if t1 == dai else dep.decimals[sym]
        m.tx(npm, "createAndInitializePoolIfNecessary(address,address,uint24,uint160)", t0, t1, POOL_FEE,
             sqrt_price_x96(p0, d0, p1, d1), gas=6_000_000, what=f"create pool DAI/{sym}")
        tick = MAX_TICK // TICK_SPACING[POOL_FEE] * TICK_SPACING[POOL_FEE]
        m.tx(npm, "mint((address,address,uint24,int24,int24,uint256,uint256,uint256,uint256,address,uint256))",
             (t0, t1, POOL_FEE, -tick, tick, amounts[t0], amounts[t1], 0, 0, MAKER_DEPLOYER, 2**63),
             gas=1_000_000, what=f"mint liquidity DAI/{sym}")
        (addr,) = rpc.view(dep.uniswap_factory, "getPool(address,address,uint24)", [t0, t1, POOL_FEE], ["address"])
        pools.append({"token0": t0, "token1": t1, "fee": POOL_FEE, "address": checksum(addr), "symbol": sym})
    return pools


def after_shock(url: str, dep: Deployment, symbol: str) -> None:
    ext = dep.extras.get("maker")
    if not ext:
        return
    with JsonRpc(url) as rpc:
        m = _Sender(rpc, MAKER_DEPLOYER)
        for name, info in ext["ilks"].items():
            if info["gem_symbol"] == symbol:
                m.tx(ext["spotter"], "poke(bytes32)", ilk_id(name), gas=200_000)
        _arbitrage(rpc, m, dep, ext, symbol)


def _arbitrage(rpc: JsonRpc, m: _Sender, dep: Deployment, ext: dict, symbol: str) -> None:
    """Swap each DAI pool holding `symbol` to the oracle price (DAI = $1)."""
    price = _price(rpc, dep, symbol)
    if price <= 0:
        return
    dai = ext["dai"]
    for pool in ext["pools"]:
        if pool["symbol"] != symbol:
            continue
        t0, t1 = pool["token0"], pool["token1"]
        tok = dep.tokens[symbol]
        p0 = DAI_PRICE_8DEC if t0 == dai else price
        p1 = DAI_PRICE_8DEC if t1 == dai else price
        d0 = 18 if t0 == dai else dep.decimals[symbol]
        d1 = 18 if t1 == dai else dep.decimals[symbol]
        target = sqrt_price_x96(p0, d0, p1, d1)
        (current,) = rpc.view(pool["address"], "slot0()", [], ["uint160"])
        if current == target:
            continue
        zero_for_one = target < current
        tin, tout = (t0, t1) if zero_for_one else (t1, t0)
        amount = 10 ** ((18 if tin == dai else dep.decimals[symbol]) + 12)
        if tin == dai:
            _mint_dai(m, ext, amount)
        else:
            m.tx(tok, "mint(uint256)", amount, gas=200_000)
        m.tx(tin, "approve(address,uint256)", dep.uniswap_router, amount, gas=100_000)
        m.tx(dep.uniswap_router, "exactInputSingle((address,address,uint24,address,uint256,uint256,uint256,uint160))",
             (tin, tout, pool["fee"], MAKER_DEPLOYER, 2**255, amount, 0, target), gas=1_000_000,
             what=f"arbitrage DAI/{symbol}")
