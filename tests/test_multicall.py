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


class _LateNode:
    """Answers aggregate3 eth_calls at a block number as a node that sometimes runs them in a
    later block (anvil does when it mines meanwhile): the Multicall3.getBlockNumber() each
    chunk carries says so."""

    max_request_bytes = 1 << 20

    def __init__(self, answered_at: list[int]):
        self.answered_at = answered_at  # the block each successive batch really runs in
        self.batches = 0

    async def batch(self, reqs):
        from keeper.multicall import _BLOCK_NUMBER

        ran = self.answered_at[min(self.batches, len(self.answered_at) - 1)]
        self.batches += 1
        out = []
        for _method, (tx, _tag) in reqs:
            data = bytes.fromhex(tx["data"][2:])
            from eth_abi import decode as abi_decode

            (calls,) = abi_decode(["(address,bool,bytes)[]"], data[4:])
            res = [(True, ran.to_bytes(32, "big")) if cd[:4] == _BLOCK_NUMBER else (True, cd[-32:].rjust(32, b"\0"))
                   for _t, _f, cd in calls]
            out.append("0x" + encode(["(bool,bytes)[]"], [res]).hex())
        return out


async def test_a_batch_answered_at_a_later_block_is_asked_again():
    from keeper.multicall import Multicall

    node = _LateNode([101, 100])
    calls = [Call("0x" + "11" * 20, (7).to_bytes(32, "big")), Call("0x" + "22" * 20, (9).to_bytes(32, "big"))]
    out = await Multicall(node, "0x" + "ca" * 20).run(calls, 100)
    assert node.batches == 2 and [int.from_bytes(d, "big") for _, d in out] == [7, 9]


async def test_a_node_that_keeps_answering_later_blocks_is_refused():
    import pytest

    from keeper.errors import BadResponseError
    from keeper.multicall import Multicall

    node = _LateNode([101])
    with pytest.raises(BadResponseError, match="answered at block 101"):
        await Multicall(node, "0x" + "ca" * 20).run([Call("0x" + "11" * 20, b"\0" * 32)], 100)


async def test_latest_reads_and_earlier_block_numbers_are_taken_as_they_come():
    from keeper.multicall import Multicall

    node = _LateNode([5])  # an L2 whose block.number is the L1 block: lower, never a race
    out = await Multicall(node, "0x" + "ca" * 20).run([Call("0x" + "11" * 20, (3).to_bytes(32, "big"))], 100)
    assert node.batches == 1 and int.from_bytes(out[0][1], "big") == 3
