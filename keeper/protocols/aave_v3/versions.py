"""Which Aave V3 the adapter talks to, and which of its rules follow from that.

Detected at start-up from the Pool itself, in one Multicall3 batch (each probe may fail):
POOL_REVISION(), and whether the Pool answers getEModeCategoryCollateralBitmap(0) (v3.2+:
eMode categories as reserve bitmaps), getLiquidationGracePeriod(0x0) (v3.1+: per-reserve
liquidation grace period) and getReserveDeficit(0x0) (v3.3+: deficit accounting, with the
$2,000 close-factor threshold and the $1,000 dust rule). A function the Pool lacks reverts
(no fallback), a present one answers one word.

What each version means for the keeper (checked against the sources of the bytecode it
runs on the devnet, see keeper/devnet/aave32_artifacts.py):

| version | found as | eMode | stable debt | grace period | rule set (math.py) | local model |
| --- | --- | --- | --- | --- | --- | --- |
| v3.0 | @aave/core-v3 1.19.3 (revision 1) | reserve bits 168-175, category price source | yes | no | v3.0 | yes |
| v3.1 | grace period, no bitmaps | reserve bits, price source | yes | yes | v3.0 | no: chain |
| v3.2 | aave-v3-origin 3.2.0 (revision 5) | category collateral bitmap, no price source | no | yes | v3.0 | yes |
| v3.3+ | getReserveDeficit | bitmap | no | yes | v3.3 | no: chain |

v3.2.0's LiquidationLogic sizes exactly as v3.0's (close factor 50% of the user's debt in the
reserve, 100% at HF ≤ 0.95; same collateral, bonus and protocol-fee arithmetic and fee clamp),
except that only variable debt exists and the bonus is the category's when the collateral's
bit is set in the user's category collateral bitmap; its GenericLogic computes health as
1.19.3 does (floor averages, percentMul, wadDiv, no rounding up of debt) with the same
bitmap change and no category price. Hence the same "v3.0" rule set and the local model with
bitmaps. The rounding changes (debt rounded up, HF without the floored average) came later
(3.4/3.5): the local model does not implement them, so versions it was not checked against
use health = "chain".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ... import abi
from ...multicall import Call

F_REVISION = abi.Function("POOL_REVISION", [], ["uint256"])
F_EMODE_COLLATERAL_BITMAP = abi.Function("getEModeCategoryCollateralBitmap", ["uint8"], ["uint128"])
F_GRACE_PERIOD = abi.Function("getLiquidationGracePeriod", ["address"], ["uint40"])
F_DEFICIT = abi.Function("getReserveDeficit", ["address"], ["uint256"])
ZERO = "0x" + "00" * 20


@dataclass(frozen=True, slots=True)
class AaveVersion:
    name: str  # v3.0 | v3.1 | v3.2 | v3.3+
    revision: int | None  # POOL_REVISION(), None when the pool does not answer it
    rules: str  # the math.py rule set its LiquidationLogic follows
    emode: str  # "reserve": configuration bits 168-175 (+ category price source); "bitmap": category collateral bitmap
    grace_period: bool  # per-reserve liquidation grace period (getLiquidationGracePeriod)
    stable_debt: bool
    local_model: bool  # local.py computes its getUserAccountData exactly (checked against its bytecode)

    def describe(self) -> dict[str, Any]:
        return {"version": self.name, "revision": self.revision, "rules": self.rules, "emode": self.emode,
                "grace_period": self.grace_period, "stable_debt": self.stable_debt, "local_model": self.local_model}


V3_0 = AaveVersion("v3.0", None, "v3.0", "reserve", False, True, True)


def classify(revision: int | None, has_bitmap: bool, has_grace: bool, has_deficit: bool) -> AaveVersion:
    """The version from what the pool answers (pure)."""
    if has_deficit:
        return AaveVersion("v3.3+", revision, "v3.3", "bitmap", True, False, False)
    if has_bitmap:
        return AaveVersion("v3.2", revision, "v3.0", "bitmap", True, False, True)
    if has_grace:
        return AaveVersion("v3.1", revision, "v3.0", "reserve", True, True, False)
    return AaveVersion("v3.0", revision, "v3.0", "reserve", False, True, True)


def probe_calls(pool: str) -> list[Call]:
    return [Call(pool, F_REVISION.encode()), Call(pool, F_EMODE_COLLATERAL_BITMAP.encode(0)),
            Call(pool, F_GRACE_PERIOD.encode(ZERO)), Call(pool, F_DEFICIT.encode(ZERO))]


def from_probes(res: list[tuple[bool, bytes]]) -> AaveVersion:
    (ok_r, rev), (ok_b, bm), (ok_g, gp), (ok_d, de) = res
    revision = int.from_bytes(rev, "big") if ok_r and len(rev) == 32 else None
    return classify(revision, ok_b and len(bm) == 32, ok_g and len(gp) == 32, ok_d and len(de) == 32)


async def detect(mc: Any, pool: str) -> AaveVersion:
    """One Multicall3 batch against `pool` (failures allowed): its AaveVersion."""
    return from_probes(await mc.run(probe_calls(pool)))


async def read_emode_bitmaps(mc: Any, pool: str, block: int | str = "latest") -> dict[int, int]:
    """Category id -> collateral bitmap for every category 1..255 that has one (v3.2+), one batch."""
    ids = list(range(1, 256))
    res = await mc.run([Call(pool, F_EMODE_COLLATERAL_BITMAP.encode(i)) for i in ids], block)
    return {i: int.from_bytes(d, "big") for i, (ok, d) in zip(ids, res) if ok and len(d) == 32 and int.from_bytes(d, "big")}


def bonus_and_prices_bitmap(pos: dict[str, Any], c: Any, d: Any, collateral_bitmap: int) -> tuple[int, int, int]:
    """v3.2+ LiquidationLogic: the user's category bonus when the collateral's bit is set in
    the category's collateral bitmap, else the reserve's own; prices are always the assets'
    own (no category price source)."""
    bonus = c.liquidation_bonus_bps
    emode = pos.get("emode")
    if pos.get("emode_id") and emode and (collateral_bitmap >> c.id) & 1:
        bonus = emode[0]
    return bonus, c.price, d.price
