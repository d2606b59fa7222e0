"""The hand encoders on the sizing hot path (keeper/abi.py words + `bytes`, Route.encode of
keeper/pricing/book.py) give exactly eth_abi's bytes, for random arguments, and refuse what
eth_abi refuses (values over their type's width)."""

from __future__ import annotations

import random

import pytest
from eth_abi import encode as abi_encode

from keeper import abi
from keeper.pricing.book import _ROUTE_TYPE, Hop, Route
from keeper.protocols.aave_v3.calls import F_FLASH, F_INVENTORY


def _addr(rnd: random.Random) -> str:
    return abi.to_checksum("0x" + rnd.getrandbits(160).to_bytes(20, "big").hex())


def test_liquidator_calls_encode_exactly_as_eth_abi():
    rnd = random.Random(7)
    for fn in (F_INVENTORY, F_FLASH):
        assert fn._fast_bytes  # the shape the hot path takes
        for _ in range(300):
            route = bytes(rnd.getrandbits(8) for _ in range(rnd.choice([0, 1, 31, 32, 33, 160, 320, 333])))
            args = (_addr(rnd), _addr(rnd), _addr(rnd), rnd.getrandbits(rnd.choice([1, 64, 128, 256])),
                    rnd.getrandbits(rnd.choice([1, 64, 256])), route, rnd.getrandbits(rnd.choice([1, 100, 256])))
            assert fn.encode(*args) == fn.selector + abi_encode(fn.input_types, args)


def test_routes_encode_exactly_as_eth_abi():
    rnd = random.Random(11)
    for n in range(0, 4):
        for _ in range(100):
            hops = tuple(Hop(venue=rnd.choice([0, 1, 2, 255]), pool=_addr(rnd), token_in=_addr(rnd),
                             token_out=_addr(rnd), fee=rnd.choice([0, 100, 500, 3000, 10000, (1 << 24) - 1]))
                         for _ in range(n))
            r = Route(hops, 1, 1)
            want = b"" if not hops else abi_encode(
                _ROUTE_TYPE, [[(h.venue, h.pool, h.token_in, h.token_out, h.fee) for h in hops]])
            assert r.encode() == want


@pytest.mark.parametrize("t, v", [("uint24", 1 << 24), ("uint8", 256), ("uint256", 1 << 256), ("uint256", -1)])
def test_a_value_over_its_width_is_refused(t, v):
    with pytest.raises(ValueError):
        abi._word(t, v)
    with pytest.raises(Exception):
        abi_encode([t], [v])
