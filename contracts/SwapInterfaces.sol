// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// The slices of ERC-20 and the Uniswap V3 SwapRouter that the keeper's executor contracts
/// (FlashLiquidator, dss/TakeCallee) call.

interface IERC20Min {
    function balanceOf(address) external view returns (uint256);
    function approve(address, uint256) external returns (bool);
    function transfer(address, uint256) external returns (bool);
}

interface ISwapRouterMin {
    struct ExactInputParams {
        bytes path;
        address recipient;
        uint256 deadline;
        uint256 amountIn;
        uint256 amountOutMinimum;
    }

    function exactInput(ExactInputParams calldata params) external payable returns (uint256 amountOut);
}
