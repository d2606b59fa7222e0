// SPDX-License-Identifier: MIT
pragma solidity 0.8.24;

import "SafeToken.sol";

/// Test-only (tests/test_liquidator_contract.py): SafeToken and RouteSwapper called directly,
/// no access control. Not deployed anywhere but the test's devnet snapshot.
contract SafeTokenProbe is RouteSwapper {
    using SafeToken for address;

    constructor(address v3Router_) RouteSwapper(v3Router_) {}

    function approveTwice(address token, address spender, uint256 first, uint256 second) external {
        token.forceApprove(spender, first);
        token.forceApprove(spender, second);
    }

    function send(address token, address to, uint256 value) external {
        token.safeTransfer(to, value);
    }

    function pull(address token, address from, uint256 value) external {
        token.safeTransferFrom(from, address(this), value);
    }

    function swap(bytes calldata route, address tokenIn, address tokenOut, uint256 amountIn, uint256 minOut)
        external
        returns (uint256)
    {
        return _swapRoute(route, tokenIn, tokenOut, amountIn, minOut);
    }
}

/// A token whose transfer returns false instead of reverting.
contract FalseToken {
    function transfer(address, uint256) external pure returns (bool) {
        return false;
    }
}
