// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// The slices of ERC-20, the Uniswap V3 SwapRouter and the Uniswap V2 pair that the keeper's
/// executor contracts (FlashLiquidator, dss/TakeCallee, through SafeToken.sol) call.
///
/// IERC20Min declares the standard `bool` returns; call tokens through SafeToken (low-level
/// calls that also accept tokens returning nothing, like USDT), never through this interface
/// for transfer/transferFrom/approve.

interface IERC20Min {
    function balanceOf(address) external view returns (uint256);
    function allowance(address owner, address spender) external view returns (uint256);
    function approve(address, uint256) external returns (bool);
    function transfer(address, uint256) external returns (bool);
    function transferFrom(address, address, uint256) external returns (bool);
}

interface ISwapRouterMin {
    struct ExactInputParams {
        bytes path;
        address recipient;
        uint256 deadline;
        uint256 amountIn;
        uint256 amountOutMinimum;
    }

    struct ExactInputSingleParams {
        address tokenIn;
        address tokenOut;
        uint24 fee;
        address recipient;
        uint256 deadline;
        uint256 amountIn;
        uint256 amountOutMinimum;
        uint160 sqrtPriceLimitX96;
    }

    function exactInput(ExactInputParams calldata params) external payable returns (uint256 amountOut);

    function exactInputSingle(ExactInputSingleParams calldata params) external payable returns (uint256 amountOut);
}

interface IUniswapV2PairMin {
    function getReserves() external view returns (uint112 reserve0, uint112 reserve1, uint32 blockTimestampLast);
    function swap(uint256 amount0Out, uint256 amount1Out, address to, bytes calldata data) external;
}
