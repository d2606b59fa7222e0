"""keeper.sizing: the size search finds the best size of a unimodal profit within a hair of
brute force, honours infeasible sizes and single feasible points, and stays cheap."""

from __future__ import annotations

import math
import random

import pytest

from keeper import sizing


def _whale(bonus_ppm: int, depth: int):
    """Profit of liquidating x against a constant-product pool of `depth`: linear bonus minus
    the price impact of selling x (concave: one maximum)."""
    def profit(x: int) -> int:
        out = x * depth // (depth + x)  # what selling x returns
        return x * bonus_ppm // 1_000_000 - (x - out)
    return profit


@pytest.mark.parametrize("seed", range(40))
def test_best_size_is_within_a_hair_of_brute_force(seed):
    rng = random.Random(seed)
    depth = rng.randrange(10**6, 10**12)
    bonus = rng.randrange(5_000, 150_000)
    hi = rng.randrange(10**3, 10**13)
    f = _whale(bonus, depth)
    best = sizing.maximize(lambda x: (f(x), x), 1, hi)
    assert best is not None
    grid = [max(1, hi * k // 4000) for k in range(1, 4001)]
    brute = max(f(x) for x in grid)
    assert best.profit >= brute - max(1, abs(brute) // 500), (best, brute)
    assert best.evaluations < 80


def test_infeasible_sizes_are_never_chosen_and_extra_points_count():
    # a dust rule: partial sizes above 900 leave dust; only 1000 (everything) is allowed above
    def f(x: int):
        if 900 < x < 1000:
            return None
        return (x if x <= 900 else 2_000), x
    best = sizing.maximize(f, 1, 999, extra=(1000,))
    assert best.size == 1000 and best.profit == 2_000
    best = sizing.maximize(lambda x: None if 900 < x < 1000 else (x, x), 1, 999)
    assert 890 <= best.size <= 900  # the edge of the feasible sizes, within the search tolerance


def test_nothing_feasible_is_none():
    assert sizing.maximize(lambda x: None, 1, 10**9) is None


def test_a_falling_profit_picks_the_smallest_slice_it_tried():
    best = sizing.maximize(lambda x: (-x, x), 1, 10**18)
    assert best.size <= 10**18 >> 12 or best.size == 1
    assert math.isfinite(best.profit)
