// SPDX-License-Identifier: AGPL-3.0-or-later
pragma solidity ^0.8.24;

/// A Maker pip (DSValue/OSM interface: peek() -> (bytes32 val [wad], bool has), read())
/// reading a Chainlink-style aggregator (latestAnswer with `decimals`) and scaling it to
/// wad. Unlike the mainnet OSM there is no one-hour delay and no whitelist.
interface PipAggregatorLike {
    function latestAnswer() external view returns (int256);
    function decimals() external view returns (uint8);
}

contract AggregatorPip {
    PipAggregatorLike public immutable src;
    uint256 public immutable scale;

    constructor(address src_) {
        src = PipAggregatorLike(src_);
        uint8 d = PipAggregatorLike(src_).decimals();
        require(d <= 18, "AggregatorPip/decimals");
        scale = 10 ** (18 - d);
    }

    function peek() public view returns (bytes32, bool) {
        int256 answer = src.latestAnswer();
        if (answer <= 0) return (bytes32(0), false);
        return (bytes32(uint256(answer) * scale), true);
    }

    function read() external view returns (bytes32) {
        (bytes32 val, bool has) = peek();
        require(has, "AggregatorPip/no-price");
        return val;
    }
}
