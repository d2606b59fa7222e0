// SPDX-License-Identifier: MIT
pragma solidity 0.8.24;

import "SwapInterfaces.sol";
import "SafeToken.sol";

/// Aave V3 liquidations for the keeper, two ways:
///  - liquidate: zero inventory. Flash-borrow the debt asset (flashLoanSimple), call
///    liquidationCall, sell all the seized collateral along `route` (SafeToken.sol's
///    RouteSwapper: Uniswap V3 / V2 hops), repay loan + premium, send the rest (>= minProfit)
///    to the owner.
///  - liquidateWithInventory: the owner's own debt asset. Pull `pullAmount` from the owner,
///    liquidationCall, sell the collateral along `route`, send everything back to the owner
///    (>= pullAmount + minProfit). The owner never holds the seized collateral.
/// Holds nothing between calls (sweep returns strays to the owner).
///
/// Safety: only the owner may start a liquidation; the flash callback accepts only the
/// expected pool as caller, this contract as initiator, and only while a liquidation that
/// the owner started is in progress. The route output has a minimum (SwapOutputTooLow) and
/// the result a minimum profit (ProfitTooLow). Tokens are called through SafeToken (tokens
/// without return values, approve non-zero -> non-zero refused); allowances are set exactly
/// before each use, never relied on from before.

interface IAavePool {
    function flashLoanSimple(address receiver, address asset, uint256 amount, bytes calldata params, uint16 referral)
        external;
    function liquidationCall(address collateral, address debt, address user, uint256 debtToCover, bool receiveAToken)
        external;
}

contract FlashLiquidator is RouteSwapper {
    using SafeToken for address;

    address public immutable owner;
    IAavePool public immutable pool;

    uint256 private constant IDLE = 1;
    uint256 private constant BUSY = 2;
    uint256 private state = IDLE;

    error NotOwner();
    error NotPool();
    error BadInitiator();
    error NotInProgress();
    error ProfitTooLow(uint256 profit, uint256 minProfit);

    event Liquidated(address indexed user, address indexed collateral, address indexed debt, uint256 profit);

    struct Job {
        address collateral;
        address user;
        uint256 debtToCover;
        bytes route; // abi.encode(Hop[]) collateral -> ... -> debt asset; empty if collateral == debt
        uint256 minProfit;
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner();
        _;
    }

    constructor(address pool_, address v3Router_) RouteSwapper(v3Router_) {
        owner = msg.sender;
        pool = IAavePool(pool_);
    }

    /// Flash-loan liquidation. @return profit in debt asset base units, sent to the owner
    function liquidate(
        address collateral,
        address debt,
        address user,
        uint256 debtToCover,
        uint256 flashAmount,
        bytes calldata route,
        uint256 minProfit
    ) external onlyOwner returns (uint256 profit) {
        state = BUSY;
        pool.flashLoanSimple(
            address(this), debt, flashAmount, abi.encode(Job(collateral, user, debtToCover, route, minProfit)), 0
        );
        state = IDLE;
        profit = IERC20Min(debt).balanceOf(address(this));
        if (profit < minProfit) revert ProfitTooLow(profit, minProfit);
        if (profit > 0) debt.safeTransfer(owner, profit);
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
        uint256 owed = amount + premium;
        asset.forceApprove(address(pool), amount); // liquidationCall pulls the debt repaid from here
        _liquidateAndSell(job.collateral, asset, job.user, job.debtToCover, job.route, owed + job.minProfit);
        asset.forceApprove(address(pool), owed); // the pool pulls amount + premium; what stays is the profit
        return true;
    }

    /// Liquidation with the owner's own debt asset (the owner approved this contract for
    /// `pullAmount`). Everything comes back to the owner in this call.
    /// @return profit = what came back - pullAmount, in debt asset base units
    function liquidateWithInventory(
        address collateral,
        address debt,
        address user,
        uint256 debtToCover,
        uint256 pullAmount,
        bytes calldata route,
        uint256 minProfit
    ) external onlyOwner returns (uint256 profit) {
        debt.safeTransferFrom(msg.sender, address(this), pullAmount);
        debt.forceApprove(address(pool), pullAmount);
        _liquidateAndSell(collateral, debt, user, debtToCover, route, pullAmount + minProfit);
        debt.forceApprove(address(pool), 0); // what liquidationCall did not pull
        uint256 fin = IERC20Min(debt).balanceOf(address(this));
        if (fin < pullAmount + minProfit) revert ProfitTooLow(fin > pullAmount ? fin - pullAmount : 0, minProfit);
        debt.safeTransfer(msg.sender, fin);
        profit = fin - pullAmount;
        emit Liquidated(user, collateral, debt, profit);
    }

    /// liquidationCall, then sell all the collateral it seized (balance delta) along `route`
    /// for at least `need` - (debt asset held before the swap). Same asset: nothing to sell.
    function _liquidateAndSell(
        address collateral,
        address debt,
        address user,
        uint256 debtToCover,
        bytes memory route,
        uint256 need
    ) private {
        uint256 collBefore = IERC20Min(collateral).balanceOf(address(this));
        pool.liquidationCall(collateral, debt, user, debtToCover, false);
        if (collateral == debt) {
            if (_decodeRoute(route, collateral, debt).length != 0) revert BadRoute();
            return;
        }
        uint256 seized = IERC20Min(collateral).balanceOf(address(this)) - collBefore;
        uint256 have = IERC20Min(debt).balanceOf(address(this));
        _swapRoute(route, collateral, debt, seized, need > have ? need - have : 0);
    }

    /// Send this contract's whole balance of `token` to the owner.
    function sweep(address token) external onlyOwner {
        uint256 bal = IERC20Min(token).balanceOf(address(this));
        if (bal > 0) token.safeTransfer(owner, bal);
    }
}
