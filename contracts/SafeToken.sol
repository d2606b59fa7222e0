// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import "SwapInterfaces.sol";

/// ERC-20 calls that work with every token the keeper may meet: tokens that return `true`,
/// tokens that return nothing (USDT and its kind), and tokens whose `approve` reverts when an
/// allowance goes from non-zero to non-zero (USDT again).
library SafeToken {
    error TokenCallFailed(address token);

    function safeTransfer(address token, address to, uint256 value) internal {
        _call(token, abi.encodeCall(IERC20Min.transfer, (to, value)));
    }

    function safeTransferFrom(address token, address from, address to, uint256 value) internal {
        _call(token, abi.encodeCall(IERC20Min.transferFrom, (from, to, value)));
    }

    /// Set the allowance of `spender` to exactly `value`: approve(0) first when the current
    /// allowance is not zero, then approve(value) unless value is zero. Never relies on, and
    /// never adds to, whatever allowance was left over.
    function forceApprove(address token, address spender, uint256 value) internal {
        if (IERC20Min(token).allowance(address(this), spender) != 0) {
            _call(token, abi.encodeCall(IERC20Min.approve, (spender, 0)));
        }
        if (value != 0) _call(token, abi.encodeCall(IERC20Min.approve, (spender, value)));
    }

    /// The call must succeed and return nothing (from a contract) or exactly `true`.
    function _call(address token, bytes memory data) private {
        (bool ok, bytes memory ret) = token.call(data);
        if (!ok) revert TokenCallFailed(token);
        if (ret.length == 0) {
            if (token.code.length == 0) revert TokenCallFailed(token);
        } else if (ret.length < 32 || abi.decode(ret, (uint256)) != 1) {
            revert TokenCallFailed(token);
        }
    }
}

/// Executes a swap route: `bytes route = abi.encode(Hop[])`, the format the keeper's Python
/// side builds. Venues:
///   1 Uniswap V3: SwapRouter.exactInputSingle(tokenIn, tokenOut, fee, this, block.timestamp,
///     amountIn, 0, 0) (`pool` is informational: the router finds the pool from tokens and fee)
///   2 Uniswap V2 pair `pool`: send amountIn to the pair, amount out as
///     UniswapV2Library.getAmountOut (997/1000) of what the pair received, pair.swap(.., this, "")
/// Every hop's output is measured as this contract's balance delta of its tokenOut and is the
/// next hop's input. The route has one minimum, on the last output. An empty route (empty
/// bytes or an empty array) only when the token sold is the token wanted.
abstract contract RouteSwapper {
    using SafeToken for address;

    uint8 internal constant UNISWAP_V3 = 1;
    uint8 internal constant UNISWAP_V2 = 2;

    struct Hop {
        uint8 venue;
        address pool;
        address tokenIn;
        address tokenOut;
        uint24 fee;
    }

    error BadRoute();
    error SwapOutputTooLow(uint256 out, uint256 minOut);

    /// the Uniswap V3 SwapRouter used by venue 1 hops
    address public immutable router;

    constructor(address router_) {
        router = router_;
    }

    /// Sell `amountIn` of `tokenIn` for `tokenOut` along `route`; reverts BadRoute before any
    /// swap if the route does not chain tokenIn -> ... -> tokenOut, SwapOutputTooLow at the end.
    function _swapRoute(bytes memory route, address tokenIn, address tokenOut, uint256 amountIn, uint256 minOut)
        internal
        returns (uint256 out)
    {
        Hop[] memory hops = _decodeRoute(route, tokenIn, tokenOut);
        out = amountIn;
        for (uint256 i; i < hops.length; ++i) {
            out = _hop(hops[i], out);
        }
        if (out < minOut) revert SwapOutputTooLow(out, minOut);
    }

    /// Decode and validate without abi.decode (which reverts without data on malformed input):
    /// every malformed or mis-chained route is BadRoute.
    function _decodeRoute(bytes memory route, address tokenIn, address tokenOut)
        internal
        pure
        returns (Hop[] memory hops)
    {
        uint256 n;
        if (route.length != 0) {
            // abi.encode(Hop[]): offset 0x20, length n, then n static tuples of 5 words
            if (route.length < 64 || (route.length - 64) % 160 != 0) revert BadRoute();
            n = (route.length - 64) / 160;
            if (_word(route, 0) != 32 || _word(route, 32) != n) revert BadRoute();
        }
        hops = new Hop[](n);
        address t = tokenIn;
        for (uint256 i; i < n; ++i) {
            uint256 at = 64 + i * 160;
            uint256 venue = _word(route, at);
            uint256 pool = _word(route, at + 32);
            uint256 tIn = _word(route, at + 64);
            uint256 tOut = _word(route, at + 96);
            uint256 fee = _word(route, at + 128);
            if (
                (venue != UNISWAP_V3 && venue != UNISWAP_V2) || pool >> 160 != 0 || tIn >> 160 != 0
                    || tOut >> 160 != 0 || fee >> 24 != 0
            ) revert BadRoute();
            Hop memory h = Hop(uint8(venue), address(uint160(pool)), address(uint160(tIn)), address(uint160(tOut)), uint24(fee));
            if (h.tokenIn != t || h.tokenOut == h.tokenIn || (venue == UNISWAP_V2 && h.pool == address(0))) {
                revert BadRoute();
            }
            hops[i] = h;
            t = h.tokenOut;
        }
        if (t != tokenOut) revert BadRoute();
    }

    function _hop(Hop memory h, uint256 amountIn) private returns (uint256) {
        uint256 before = IERC20Min(h.tokenOut).balanceOf(address(this));
        if (h.venue == UNISWAP_V3) {
            h.tokenIn.forceApprove(router, amountIn);
            ISwapRouterMin(router).exactInputSingle(
                ISwapRouterMin.ExactInputSingleParams({
                    tokenIn: h.tokenIn,
                    tokenOut: h.tokenOut,
                    fee: h.fee,
                    recipient: address(this),
                    deadline: block.timestamp,
                    amountIn: amountIn,
                    amountOutMinimum: 0,
                    sqrtPriceLimitX96: 0
                })
            );
        } else {
            h.tokenIn.safeTransfer(h.pool, amountIn);
            (uint256 r0, uint256 r1,) = IUniswapV2PairMin(h.pool).getReserves();
            bool inIs0 = h.tokenIn < h.tokenOut; // the pair's token0 is the lower address
            (uint256 rIn, uint256 rOut) = inIs0 ? (r0, r1) : (r1, r0);
            // what the pair received (UniswapV2Router's fee-on-transfer rule; == amountIn otherwise)
            uint256 got = IERC20Min(h.tokenIn).balanceOf(h.pool) - rIn;
            uint256 inWithFee = got * 997;
            uint256 amountOut = (inWithFee * rOut) / (rIn * 1000 + inWithFee);
            IUniswapV2PairMin(h.pool).swap(inIs0 ? 0 : amountOut, inIs0 ? amountOut : 0, address(this), "");
        }
        return IERC20Min(h.tokenOut).balanceOf(address(this)) - before;
    }

    function _word(bytes memory b, uint256 at) private pure returns (uint256 w) {
        assembly {
            w := mload(add(add(b, 32), at))
        }
    }
}
