// SPDX-License-Identifier: MIT
pragma solidity 0.8.24;

/// Written here for the keeper's devnet (not from an npm package): a Morpho Blue oracle in the
/// shape of morpho-blue-oracles' ChainlinkOracle, reduced to one base and one quote feed.
///
/// price() is the price of 1 raw unit of the collateral (base) token in raw units of the loan
/// (quote) token, scaled by 1e36 (Morpho's ORACLE_PRICE_SCALE):
///     price = SCALE_FACTOR * baseAnswer / quoteAnswer
///     SCALE_FACTOR = 10 ** (36 + quoteTokenDecimals + quoteFeedDecimals - baseTokenDecimals - baseFeedDecimals)
/// as ChainlinkOracle does (its getPrice() refuses negative answers; so does this one). The
/// feeds are Chainlink-style aggregators (`latestRoundData`, `decimals`): on the devnet the
/// SettableAggregator USD feeds the Aave oracle reads too, so one price move moves both.
interface IChainlinkFeed {
    function latestRoundData() external view returns (uint80, int256, uint256, uint256, uint80);
    function decimals() external view returns (uint8);
}

contract MorphoChainlinkOracle {
    IChainlinkFeed public immutable BASE_FEED_1;
    IChainlinkFeed public immutable QUOTE_FEED_1;
    uint256 public immutable SCALE_FACTOR;

    error NegativeAnswer(address feed, int256 answer);

    constructor(address baseFeed, address quoteFeed, uint256 baseTokenDecimals, uint256 quoteTokenDecimals) {
        BASE_FEED_1 = IChainlinkFeed(baseFeed);
        QUOTE_FEED_1 = IChainlinkFeed(quoteFeed);
        SCALE_FACTOR = 10 ** (36 + quoteTokenDecimals + IChainlinkFeed(quoteFeed).decimals() - baseTokenDecimals
            - IChainlinkFeed(baseFeed).decimals());
    }

    function price() external view returns (uint256) {
        return SCALE_FACTOR * _answer(BASE_FEED_1) / _answer(QUOTE_FEED_1);
    }

    function _answer(IChainlinkFeed feed) private view returns (uint256) {
        (, int256 answer,,,) = feed.latestRoundData();
        if (answer < 0) revert NegativeAnswer(address(feed), answer);
        return uint256(answer);
    }
}
