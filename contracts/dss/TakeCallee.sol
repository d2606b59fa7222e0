// SPDX-License-Identifier: AGPL-3.0-or-later
pragma solidity ^0.8.24;

import "SwapInterfaces.sol";
import "SafeToken.sol";

/// TakeCallee: the keeper's flash-take executor for Liquidation 2.0 auctions. It needs no
/// capital: the Clipper sends the collateral first (vat.flux) and calls clipperCall; the
/// callee exits the collateral, sells it for DAI along the route the keeper passes
/// (SafeToken.sol's RouteSwapper: abi.encode(Hop[]) of Uniswap V3 / V2 hops, gem first, DAI
/// last), joins just enough DAI into the Vat to pay `owe`, and the Clipper then takes it
/// (vat.move). The rest, at least `minProfit` DAI, goes to the owner. Tokens are called
/// through SafeToken; allowances are set exactly before each use.
///
/// Safety: only the owner may start a take; clipperCall is accepted only from the Clipper
/// this very take was sent to, only during that take, and only for a take this contract
/// made itself (sender == this).

interface CalleeVatLike {
    function hope(address) external;
    function can(address, address) external view returns (uint256);
}

interface CalleeClipperLike {
    function take(uint256 id, uint256 amt, uint256 max, address who, bytes calldata data) external;
}

interface CalleeGemJoinLike {
    function dec() external view returns (uint256);
    function gem() external view returns (address);
    function exit(address, uint256) external;
}

interface CalleeDaiJoinLike {
    function dai() external view returns (address);
    function join(address, uint256) external;
}


contract TakeCallee is RouteSwapper {
    using SafeToken for address;

    address public immutable owner;
    CalleeVatLike public immutable vat;
    CalleeDaiJoinLike public immutable daiJoin;
    IERC20Min public immutable dai;

    address private expected;  // the Clipper of the take in progress (zero otherwise)

    uint256 constant RAY = 10 ** 27;

    event FlashTake(address indexed clipper, uint256 indexed id, uint256 owe, uint256 slice, uint256 daiOut, uint256 profit);

    constructor(address vat_, address daiJoin_, address router_) RouteSwapper(router_) {
        owner = msg.sender;
        vat = CalleeVatLike(vat_);
        daiJoin = CalleeDaiJoinLike(daiJoin_);
        dai = IERC20Min(CalleeDaiJoinLike(daiJoin_).dai());
    }

    modifier onlyOwner() {
        require(msg.sender == owner, "TakeCallee/not-owner");
        _;
    }

    /// Take up to `amt` [wad] of auction `id` at a price of at most `max` [ray], paying
    /// with the collateral itself sold along `route` (abi.encode(Hop[]), gem first, DAI
    /// last); reverts unless at least `minProfit` DAI [wad] is left for the owner.
    function flashTake(
        address clipper,
        address gemJoin,
        uint256 id,
        uint256 amt,
        uint256 max,
        bytes calldata route,
        uint256 minProfit
    ) external onlyOwner {
        if (vat.can(address(this), clipper) == 0) vat.hope(clipper);
        expected = clipper;
        CalleeClipperLike(clipper).take(id, amt, max, address(this), abi.encode(gemJoin, route, minProfit, id));
        expected = address(0);
        uint256 bal = dai.balanceOf(address(this));
        if (bal > 0) address(dai).safeTransfer(owner, bal);
    }

    function clipperCall(address sender, uint256 owe, uint256 slice, bytes calldata data) external {
        require(msg.sender == expected && expected != address(0), "TakeCallee/bad-caller");
        require(sender == address(this), "TakeCallee/bad-sender");
        (address gemJoin, bytes memory route, uint256 minProfit, uint256 id) = abi.decode(data, (address, bytes, uint256, uint256));

        // collateral out of the Vat (GemJoin5-style joins take token units); sell what arrived
        address gem = CalleeGemJoinLike(gemJoin).gem();
        uint256 before = IERC20Min(gem).balanceOf(address(this));
        CalleeGemJoinLike(gemJoin).exit(address(this), slice / 10 ** (18 - CalleeGemJoinLike(gemJoin).dec()));
        uint256 got = IERC20Min(gem).balanceOf(address(this)) - before;

        // sell it for at least owe + minProfit DAI
        uint256 daiOwe = (owe + RAY - 1) / RAY;
        uint256 out = _swapRoute(route, gem, address(dai), got, daiOwe + minProfit);

        // pay: the Clipper moves `owe` of this contract's Vat dai right after this call
        address(dai).forceApprove(address(daiJoin), daiOwe);
        daiJoin.join(address(this), daiOwe);
        emit FlashTake(msg.sender, id, owe, slice, out, out - daiOwe);
    }

    /// Sweep any token (e.g. a rounding remainder) to the owner.
    function sweep(address token) external onlyOwner {
        uint256 bal = IERC20Min(token).balanceOf(address(this));
        if (bal > 0) token.safeTransfer(owner, bal);
    }
}
