// SPDX-License-Identifier: MIT
pragma solidity 0.8.24;

/// @title SettableAggregator
/// @notice Chainlink-style price feed for the local devnet. The owner sets the answer;
///         every set opens a new round whose updatedAt is the block timestamp of the set.
contract SettableAggregator {
    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);
    event NewRound(uint256 indexed roundId, address indexed startedBy, uint256 startedAt);
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    uint8 public constant decimals = 8;
    uint256 public constant version = 4;

    address public owner;
    string public description;

    int256 private _answer;
    uint80 private _roundId;
    uint256 private _updatedAt;

    error NotOwner();

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    constructor(int256 initialAnswer, string memory description_) {
        owner = msg.sender;
        description = description_;
        emit OwnershipTransferred(address(0), msg.sender);
        _set(initialAnswer);
    }

    function setAnswer(int256 answer) external onlyOwner {
        _set(answer);
    }

    function transferOwnership(address newOwner) external onlyOwner {
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    function latestAnswer() external view returns (int256) {
        return _answer;
    }

    function latestTimestamp() external view returns (uint256) {
        return _updatedAt;
    }

    function latestRound() external view returns (uint256) {
        return _roundId;
    }

    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound)
    {
        return (_roundId, _answer, _updatedAt, _updatedAt, _roundId);
    }

    function _set(int256 answer) private {
        unchecked {
            _roundId += 1;
        }
        _answer = answer;
        _updatedAt = block.timestamp;
        emit NewRound(_roundId, msg.sender, block.timestamp);
        emit AnswerUpdated(answer, _roundId, block.timestamp);
    }
}
