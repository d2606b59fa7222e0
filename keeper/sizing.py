"""Size search: the amount that maximizes an integer profit function. Pure, no I/O.

What it relies on: profit in size is unimodal on an interval (it rises while the bonus
grows faster than the swap cost, then falls). For one constant-product or concentrated
liquidity pool the swap output is concave in the input, the bonus is linear, so
bonus - swap cost is concave and the maximum is unique; rounding makes it only *nearly*
unimodal, and a route through several pools or across initialized ticks keeps it concave
(piecewise). A coarse grid first (geometric at the small end, linear above) brackets the
maximum, so a plateau or a small bump cannot trap the search at the wrong end; a
golden-section search then narrows the bracket. The caller passes sizes that are only
feasible as single points (e.g. "close the whole position" under a dust rule) as `extra`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")

GRID = 24
INV_PHI_NUM, INV_PHI_DEN = 618_034, 1_000_000


@dataclass(frozen=True, slots=True)
class Best:
    size: int
    profit: int
    value: object  # what the profit function returned alongside (e.g. the sized opportunity)
    evaluations: int


def last_true(pred: Callable[[int], bool], lo: int, hi: int) -> int:
    """The largest x in [lo, hi) with pred(x), for a pred true at lo and false at hi that
    changes once between them (integer bisection)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pred(mid):
            lo = mid
        else:
            hi = mid
    return lo


def grid(lo: int, hi: int, n: int = GRID) -> list[int]:
    """Sizes from lo to hi: a geometric run over the lowest decades (small slices of a whale)
    and an even spread above, always including both ends."""
    if hi <= lo:
        return [lo]
    pts = {lo, hi}
    half = n // 2
    for k in range(1, half + 1):  # hi / 2**k for the small end
        x = hi >> k
        if x > lo:
            pts.add(x)
    for k in range(1, n - half):
        pts.add(lo + (hi - lo) * k // (n - half))
    return sorted(pts)


def maximize(evaluate: Callable[[int], tuple[int, T] | None], lo: int, hi: int, *, extra: Iterable[int] = (),
             rel_tol_ppm: int = 2_000, n_grid: int = GRID) -> Best | None:
    """The size in [lo, hi] (or one of `extra`) with the largest profit.

    `evaluate(size)` returns (profit, value) or None when that size is not allowed or cannot
    be priced. The search stops when the bracket is narrower than rel_tol_ppm of the sizes in
    it (0.2% by default) or one unit. Returns None when no size is feasible."""
    seen: dict[int, tuple[int, T] | None] = {}

    def f(x: int) -> int | None:
        if x not in seen:
            seen[x] = evaluate(x)
        r = seen[x]
        return None if r is None else r[0]

    best_x: int | None = None
    best_p: int | None = None

    def consider(x: int) -> None:
        nonlocal best_x, best_p
        p = f(x)
        if p is not None and (best_p is None or p > best_p):
            best_x, best_p = x, p

    for x in extra:
        consider(x)
    if hi >= lo >= 0:
        pts = grid(lo, hi, n_grid)
        for x in pts:
            consider(x)
        feasible = [x for x in pts if f(x) is not None]
        if feasible:
            top = max(feasible, key=lambda x: f(x))  # type: ignore[arg-type, return-value]
            i = pts.index(top)
            a, b = pts[max(i - 1, 0)], pts[min(i + 1, len(pts) - 1)]
            # golden-section on integers within the bracket around the best grid point, down to
            # rel_tol_ppm of the sizes in the bracket
            while b - a > max(1, b * rel_tol_ppm // 1_000_000):
                c = b - (b - a) * INV_PHI_NUM // INV_PHI_DEN
                d = a + (b - a) * INV_PHI_NUM // INV_PHI_DEN
                if c >= d:
                    break
                fc, fd = f(c), f(d)
                if fc is None and fd is None:
                    break
                if fd is None or (fc is not None and fc >= fd):
                    b = d
                else:
                    a = c
            for x in (a, (a + b) // 2, b):
                consider(x)
    if best_x is None or best_p is None:
        return None
    r = seen[best_x]
    assert r is not None
    return Best(size=best_x, profit=best_p, value=r[1], evaluations=len(seen))
