"""The hand-written hot-path encoders agree with eth_abi byte for byte."""

from eth_abi import encode

from keeper import abi
from keeper.multicall import _AGG3, Call, decode_aggregate3, encode_aggregate3

A = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_aggregate3_calldata_matches_eth_abi():
    calls = [Call("0x" + "ab" * 20, b"\x01\x02\x03"), Call("0x" + "cd" * 20, b"", False), Call(A, b"x" * 64)]
    ref = _AGG3 + encode(["(address,bool,bytes)[]"], [[(c.target, c.allow_failure, c.data) for c in calls]])
    assert encode_aggregate3(calls) == ref


def test_aggregate3_results_decode_like_eth_abi():
    res = [(True, b"\x05" * 33), (False, b""), (True, b"abc")]
    assert decode_aggregate3(encode(["(bool,bytes)[]"], [res])) == res


def test_static_argument_fast_path_matches_eth_abi():
    f = abi.load("AavePool").fn("liquidationCall")
    assert f.encode(A, A, A, 5, False) == f.selector + encode(["address", "address", "address", "uint256", "bool"],
                                                             [A, A, A, 5, False])
    g = abi.load("AavePool").fn("getUserAccountData")
    assert g.decode(encode(["uint256"] * 6, [1, 2, 3, 4, 5, 2**256 - 1])) == (1, 2, 3, 4, 5, 2**256 - 1)
