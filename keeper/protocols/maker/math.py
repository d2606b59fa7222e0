"""Maker/Sky Liquidation 2.0 rules as integer functions, checked against dss dog.sol,
clip.sol and abaci.sol. Units as on chain: wad 1e18 (ink, art, lot, chop, chip), ray 1e27
(rate, spot, mat, prices, buf, cusp, cut), rad 1e45 (dai, tab, owe, dust, chost, tip,
Hole, hole, Dirt, dirt). Solidity rounds down; so does everything here unless noted.
"""

from __future__ import annotations

from dataclasses import dataclass

WAD = 10**18
RAY = 10**27
RAD = 10**45


def is_unsafe(ink: int, art: int, spot: int, rate: int) -> bool:
    """Dog.bark's test: spot > 0 and ink * spot < art * rate (both sides rad)."""
    return spot > 0 and ink * spot < art * rate


def collateralization_over_mat(ink: int, art: int, spot: int, rate: int) -> float:
    """ink * spot / (art * rate): collateral value / (debt * mat); < 1 means unsafe (floats:
    display only)."""
    debt = art * rate
    return float("inf") if debt == 0 else ink * spot / debt


@dataclass(frozen=True, slots=True)
class BarkSize:
    dink: int  # collateral sent to the Clipper [wad]
    dart: int  # normalised debt confiscated [wad]
    due: int  # debt confiscated [rad] = dart * rate
    tab: int  # DAI the auction must raise [rad] = due * chop / WAD


def bark_size(ink: int, art: int, rate: int, dust: int, chop: int, Hole: int, Dirt: int, hole: int,
              dirt: int) -> BarkSize | str:
    """What Dog.bark(ilk, urn, kpr) does to an unsafe urn, or the revert reason it would give."""
    if not (Hole > Dirt and hole > dirt):
        return "Dog/liquidation-limit-hit"
    room = min(Hole - Dirt, hole - dirt)
    dart = min(art, room * WAD // rate // chop)
    if art > dart:
        if (art - dart) * rate < dust:
            dart = art  # the leftover would be dusty: liquidate it all
        elif dart * rate < dust:
            return "Dog/dusty-auction-from-partial-liquidation"
    dink = ink * dart // art
    if dink == 0:
        return "Dog/null-auction"
    due = dart * rate
    return BarkSize(dink=dink, dart=dart, due=due, tab=due * chop // WAD)


def incentive(tip: int, chip: int, tab: int) -> int:
    """Clipper keeper reward on kick (and on redo when it pays): tip + wmul(tab, chip) [rad]."""
    if tip == 0 and chip == 0:
        return 0
    return tip + tab * chip // WAD


def redo_incentive(tip: int, chip: int, tab: int, lot: int, feed_price: int, chost: int) -> int:
    """Clipper.redo pays the incentive only when tab >= chost and lot * feedPrice >= chost."""
    if tab >= chost and lot * feed_price >= chost:
        return incentive(tip, chip, tab)
    return 0


@dataclass(frozen=True, slots=True)
class TakeSize:
    slice: int  # collateral bought [wad]
    owe: int  # DAI paid [rad]
    tab_left: int  # [rad]
    lot_left: int  # [wad]


def take_size(lot: int, tab: int, amt: int, price: int, chost: int) -> TakeSize | str:
    """Clipper.take's sizing: at most amt, never more than tab of DAI, and a partial purchase
    must leave at least chost of tab (else it is cut down to leave exactly chost; if tab <=
    chost only the whole lot can be bought)."""
    if price <= 0:
        return "zero_price"
    slice_ = min(lot, amt)
    owe = slice_ * price
    if owe > tab:
        owe = tab
        slice_ = owe // price
    elif owe < tab and slice_ < lot:
        if tab - owe < chost:
            if tab <= chost:
                return "Clipper/no-partial-purchase"
            owe = tab - chost
            slice_ = owe // price
    return TakeSize(slice=slice_, owe=owe, tab_left=tab - owe, lot_left=lot - slice_)


def full_slice(lot: int, tab: int, price: int) -> int:
    """Collateral a take of the whole lot receives at `price` [wad]."""
    return lot if lot * price <= tab else tab // price


# -- price curves (abaci.sol) -----------------------------------------------------------
def rpow(x: int, n: int, b: int = RAY) -> int:
    """dss rpow: exponentiation by squaring, rounding half up at each step."""
    if n == 0:
        return b
    if x == 0:
        return 0
    z = b if n % 2 == 0 else x
    half = b // 2
    n //= 2
    while n:
        x = (x * x + half) // b
        if n % 2:
            z = (z * x + half) // b
        n //= 2
    return z


def linear_price(top: int, dur: int, tau: int) -> int:
    if dur >= tau:
        return 0
    return top * ((tau - dur) * RAY // tau) // RAY


def stairstep_price(top: int, dur: int, cut: int, step: int) -> int:
    return top * rpow(cut, dur // step) // RAY


@dataclass(frozen=True, slots=True)
class Curve:
    kind: str  # "linear" | "stairstep" | "unknown"
    tau: int = 0
    cut: int = 0
    step: int = 0

    def price(self, top: int, dur: int) -> int | None:
        if self.kind == "linear":
            return linear_price(top, dur, self.tau)
        if self.kind == "stairstep" and self.step:
            return stairstep_price(top, dur, self.cut, self.step)
        return None

    def seconds_until(self, top: int, target: int, max_dur: int = 10**7) -> int | None:
        """Smallest auction age (seconds since tic) at which price(top, age) <= target."""
        if target >= top:
            return 0
        if self.kind == "linear" and self.tau:
            # price = top * (tau - dur) / tau <= target  =>  dur >= tau * (top - target) / top
            dur = max(0, self.tau * (top - target) // top - 2)
            while dur < self.tau and linear_price(top, dur, self.tau) > target:
                dur += 1
            return dur
        if self.kind == "stairstep" and self.step and 0 < self.cut < RAY:
            n = 0
            while n * self.step <= max_dur:
                if stairstep_price(top, n * self.step, self.cut, self.step) <= target:
                    return n * self.step
                n += 1
        return None


def needs_redo(dur: int, price: int, top: int, tail: int, cusp: int) -> bool:
    """Clipper.status: done when dur > tail or rdiv(price, top) < cusp."""
    return dur > tail or price * RAY // top < cusp


def limit_price(proceeds_wad: int, gas_dai_wad: int, slice_wad: int, margin_bps: int) -> int:
    """The most the keeper pays per unit [ray, DAI per wad of collateral] for `slice_wad`:
    what the slice sells for (DAI wad), minus gas (DAI wad), divided by (1 + margin), so the
    collateral is worth at least the margin more than it costs after gas. Rounded down."""
    if slice_wad <= 0:
        return 0
    net = proceeds_wad - gas_dai_wad
    if net <= 0:
        return 0
    return net * RAY * 10_000 // (slice_wad * (10_000 + margin_bps))


def rad_to_wad_up(rad: int) -> int:
    return -(-rad // RAY)
