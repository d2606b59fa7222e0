// SPDX-License-Identifier: MIT
pragma solidity 0.8.24;

import "SwapInterfaces.sol";
import "SafeToken.sol";

/// Morpho Blue liquidations for the keeper with no capital: Morpho.liquidate sends the seized
/// collateral first and calls back `onMorphoLiquidate(repaidAssets, data)` before it pulls the
/// loan token, so inside the callback this contract sells all the seized collateral along
/// `route` (SafeToken.sol's RouteSwapper: the same Uniswap V3 / V2 hops as FlashLiquidator)
/// and approves Morpho for `repaidAssets`; what is left (>= minProfit) goes to the owner.
/// Exactly one of seizedAssets / repaidShares is non-zero (Morpho's own rule).
///
/// Safety: only the owner may start a liquidation; the callback accepts only Morpho as caller
/// and only while a liquidation the owner started is in progress. The swap has a minimum
/// output (repaidAssets + minProfit: SwapOutputTooLow) and the result a minimum profit
/// (ProfitTooLow). Holds nothing between calls (sweep returns strays to the owner).

struct MarketParams {
    address loanToken;
    address collateralToken;
    address oracle;
    address irm;
    uint256 lltv;
}

interface IMorphoLiquidate {
    function liquidate(
        MarketParams memory marketParams,
        address borrower,
        uint256 seizedAssets,
        uint256 repaidShares,
        bytes calldata data
    ) external returns (uint256, uint256);
}

contract MorphoLiquidator is RouteSwapper {
    using SafeToken for address;

    address public immutable owner;
    address public immutable morpho;

    uint256 private constant IDLE = 1;
    uint256 private constant BUSY = 2;
    uint256 private state = IDLE;

    error NotOwner();
    error NotMorpho();
    error NotInProgress();
    error ProfitTooLow(uint256 profit, uint256 minProfit);

    event MorphoLiquidated(
        bytes32 indexed id, address indexed borrower, uint256 seizedAssets, uint256 repaidAssets, uint256 profit
    );

    struct Job {
        address collateral;
        address loan;
        bytes route; // abi.encode(Hop[]) collateral -> ... -> loan token
        uint256 minProfit;
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    constructor(address morpho_, address v3Router_, address owner_) RouteSwapper(v3Router_) {
        morpho = morpho_;
        owner = owner_;
    }

    /// @return profit in loan token base units, sent to the owner
    function liquidate(
        MarketParams calldata marketParams,
        address borrower,
        uint256 seizedAssets,
        uint256 repaidShares,
        bytes calldata route,
        uint256 minProfit
    ) external onlyOwner returns (uint256 profit) {
        bytes memory data = abi.encode(Job(marketParams.collateralToken, marketParams.loanToken, route, minProfit));
        state = BUSY;
        (uint256 seized, uint256 repaid) = _liquidate(marketParams, borrower, seizedAssets, repaidShares, data);
        state = IDLE;
        address loan = marketParams.loanToken;
        loan.forceApprove(morpho, 0);
        profit = IERC20Min(loan).balanceOf(address(this));
        if (profit < minProfit) revert ProfitTooLow(profit, minProfit);
        if (profit > 0) loan.safeTransfer(owner, profit);
        emit MorphoLiquidated(keccak256(abi.encode(marketParams)), borrower, seized, repaid, profit);
    }

    function _liquidate(
        MarketParams memory marketParams,
        address borrower,
        uint256 seizedAssets,
        uint256 repaidShares,
        bytes memory data
    ) private returns (uint256, uint256) {
        return IMorphoLiquidate(morpho).liquidate(marketParams, borrower, seizedAssets, repaidShares, data);
    }

    /// IMorphoLiquidateCallback: the seized collateral is here; Morpho pulls `repaidAssets` of
    /// the loan token right after this returns.
    function onMorphoLiquidate(uint256 repaidAssets, bytes calldata data) external {
        if (msg.sender != morpho) revert NotMorpho();
        if (state != BUSY) revert NotInProgress();
        Job memory job = abi.decode(data, (Job));
        uint256 seized = IERC20Min(job.collateral).balanceOf(address(this));
        uint256 have = IERC20Min(job.loan).balanceOf(address(this));
        uint256 need = repaidAssets + job.minProfit;
        _swapRoute(job.route, job.collateral, job.loan, seized, need > have ? need - have : 0);
        job.loan.forceApprove(morpho, repaidAssets);
    }

    /// Send this contract's whole balance of `token` to the owner.
    function sweep(address token) external onlyOwner {
        uint256 bal = IERC20Min(token).balanceOf(address(this));
        if (bal > 0) token.safeTransfer(owner, bal);
    }
}
