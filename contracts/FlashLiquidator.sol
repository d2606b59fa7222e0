// SPDX-License-Identifier: MIT
pragma solidity 0.8.24;

import "SwapInterfaces.sol";

/// Zero-inventory Aave V3 liquidations: flash-borrow the debt asset (flashLoanSimple), call
/// liquidationCall, sell the seized collateral back on Uniswap V3 along the path the keeper
/// passes in, repay the loan plus premium, require profit >= minProfit, send the profit to
/// the owner. Holds nothing between calls.
///
/// Safety: only the owner may start a liquidation; the flash callback accepts only the
/// expected pool as caller, this contract as initiator, and only while a liquidation that
/// the owner started is in progress. A swap that leaves less than minProfit reverts.

interface IAavePool {
    function flashLoanSimple(address receiver, address asset, uint256 amount, bytes calldata params, uint16 referral)
        external;
    function liquidationCall(address collateral, address debt, address user, uint256 debtToCover, bool receiveAToken)
        external;
}

contract FlashLiquidator {
    address public immutable owner;
    IAavePool public immutable pool;
    ISwapRouterMin public immutable router;

    uint256 private constant IDLE = 1;
    uint256 private constant BUSY = 2;
    uint256 private state = IDLE;

    error NotOwner();
    error NotPool();
    error BadInitiator();
    error NotInProgress();
    error ProfitTooLow(uint256 profit, uint256 minProfit);
    error TransferFailed();

    event Liquidated(address indexed user, address indexed collateral, address indexed debt, uint256 profit);

    struct Job {
        address collateral;
        address user;
        uint256 debtToCover;
        bytes path; // collateral -> ... -> debt asset, Uniswap V3 packed path; empty if collateral == debt
    }

    constructor(address pool_, address router_) {
        owner = msg.sender;
        pool = IAavePool(pool_);
        router = ISwapRouterMin(router_);
    }

    /// @return profit in debt asset base units, sent to the owner
    function liquidate(
        address collateral,
        address debt,
        address user,
        uint256 debtToCover,
        uint256 flashAmount,
        bytes calldata path,
        uint256 minProfit
    ) external returns (uint256 profit) {
        if (msg.sender != owner) revert NotOwner();
        state = BUSY;
        pool.flashLoanSimple(address(this), debt, flashAmount, abi.encode(Job(collateral, user, debtToCover, path)), 0);
        state = IDLE;
        profit = IERC20Min(debt).balanceOf(address(this));
        if (profit < minProfit) revert ProfitTooLow(profit, minProfit);
        if (profit > 0 && !IERC20Min(debt).transfer(owner, profit)) revert TransferFailed();
        emit Liquidated(user, collateral, debt, profit);
    }

    /// Aave V3 IFlashLoanSimpleReceiver callback
    function executeOperation(address asset, uint256 amount, uint256 premium, address initiator, bytes calldata params)
        external
        returns (bool)
    {
        if (msg.sender != address(pool)) revert NotPool();
        if (initiator != address(this)) revert BadInitiator();
        if (state != BUSY) revert NotInProgress();
        Job memory job = abi.decode(params, (Job));
        IERC20Min(asset).approve(address(pool), type(uint256).max); // liquidationCall and the repayment pull from here
        uint256 collBefore = IERC20Min(job.collateral).balanceOf(address(this));
        pool.liquidationCall(job.collateral, asset, job.user, job.debtToCover, false);
        if (job.collateral != asset) {
            uint256 seized = IERC20Min(job.collateral).balanceOf(address(this)) - collBefore;
            _swapBack(job.path, job.collateral, asset, seized, amount + premium);
        }
        return true; // the pool pulls amount + premium; what stays here is the profit
    }

    function _swapBack(bytes memory path, address collateral, address asset, uint256 seized, uint256 owed) private {
        uint256 have = IERC20Min(asset).balanceOf(address(this));
        IERC20Min(collateral).approve(address(router), seized);
        router.exactInput(
            ISwapRouterMin.ExactInputParams({
                path: path,
                recipient: address(this),
                deadline: block.timestamp,
                amountIn: seized,
                amountOutMinimum: owed > have ? owed - have : 0
            })
        );
    }
}
