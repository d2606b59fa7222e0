// SPDX-License-Identifier: MIT
pragma solidity 0.8.24;

interface IPriceFeed {
    function latestAnswer() external view returns (int256);
    function decimals() external view returns (uint8);
}

interface IERC20Min {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title PerpsMarket
/// @notice A perpetual futures market written for the keeper's devnet, with the external
///         interface of Synthetix v3 perps (ILiquidationModule, IPerpsAccountModule, the market
///         and configuration views, and the events keepers read). One contract, USD margin
///         (snxUSD-like token, collateral id 0), index prices from Chainlink-style feeds.
///
/// Rules (Synthetix v3 formulas, wad = 1e18, DecimalMath rounding = truncation):
///   impactOnSkew = |size| / skewScale
///   initialMarginRatio = impactOnSkew * initialMarginRatioD18 + minimumInitialMarginRatioD18
///   maintenanceMarginRatio = initialMarginRatio * maintenanceMarginScalarD18
///   notional = |size| * price
///   initialMargin = notional * initialMarginRatio + minimumPositionMargin          (per position)
///   maintenanceMargin = notional * maintenanceMarginRatio + minimumPositionMargin  (per position)
///   flagReward = notional * flagRewardRatioD18                                     (per position)
///   possibleLiquidationReward = keeperReward(sum flagReward, flagCost, collateral)
///                               + (windows - 1) * keeperReward(0, liquidateCost, 0)
///   requiredMaintenanceMargin = sum maintenanceMargin + possibleLiquidationReward
///   availableMargin = collateral + sum size * (price - entryPrice)
///   liquidatable  <=>  requiredMaintenanceMargin > availableMargin
///   keeperReward(r, cost, margin) = min(max(minCap, r + cost), maxCap),
///     minCap = max(cost + minKeeperRewardUsd, cost * (1 + minKeeperProfitRatioD18)),
///     maxCap = margin == 0 ? maxKeeperRewardUsd : min(margin * maxKeeperScalingRatioD18, maxKeeperRewardUsd)
///   maxLiquidationInWindow = (makerFee + takerFee) * skewScale * maxLiquidationLimitAccumulationMultiplier
///                            * maxSecondsInLiquidationWindow   (size units per window)
///
/// Simplifications versus Synthetix: no funding, no interest, no order fees, orders fill at
/// the index price (no skew premium), one settlement step (commitOrder then settleOrder by
/// anyone, no delay), keeper costs are fixed USD amounts set by the owner (Synthetix reads a
/// gas-price oracle node), no maxLiquidationPd / endorsed liquidator, snxUSD collateral only.
/// On flagging, the account's whole available margin (collateral + PnL) goes to the
/// insurance fund, which pays the keeper rewards and absorbs shortfalls (negative margin);
/// the fund then holds the positions until they are closed window by window.
contract PerpsMarket {
    uint256 private constant UNIT = 1e18;

    // ---- Synthetix v3 perps events ------------------------------------------------------
    event AccountCreated(uint128 indexed accountId, address indexed owner);
    event MarketCreated(uint128 indexed perpsMarketId, string marketName, string marketSymbol);
    event CollateralModified(uint128 indexed accountId, uint128 indexed collateralId, int256 amountDelta, address indexed sender);
    event OrderCommitted(
        uint128 indexed marketId, uint128 indexed accountId, uint8 orderType, int128 sizeDelta, uint256 acceptablePrice,
        uint256 commitmentTime, uint256 expectedPriceTime, uint256 settlementTime, uint256 expirationTime,
        bytes32 indexed trackingCode, address sender
    );
    event OrderSettled(
        uint128 indexed marketId, uint128 indexed accountId, uint256 fillPrice, int256 pnl, int256 accruedFunding,
        int128 sizeDelta, int128 newSize, uint256 totalFees, uint256 referralFees, uint256 collectedFees,
        uint256 settlementReward, bytes32 indexed trackingCode, address settler
    );
    event PositionLiquidated(uint128 indexed accountId, uint128 indexed marketId, uint256 amountLiquidated, int128 currentPositionSize);
    event AccountLiquidationAttempt(uint128 indexed accountId, uint256 reward, bool fullLiquidation);
    event AccountFlaggedForLiquidation(
        uint128 indexed accountId, int256 availableMargin, uint256 requiredMaintenanceMargin, uint256 liquidationReward, uint256 flagReward
    );

    // ---- Synthetix v3 perps errors ------------------------------------------------------
    error NotEligibleForLiquidation(uint128 accountId);
    error InvalidMarket(uint128 marketId);
    error AccountNotFound(uint128 accountId);
    error InvalidAccountId(uint128 accountId);
    error PermissionDenied(uint128 accountId, bytes32 permission, address target);
    error InvalidAmountDelta(int256 amountDelta);
    error SynthNotEnabledForCollateral(uint128 collateralId);
    error InsufficientCollateral(uint128 collateralId, uint256 collateralAmount, uint256 withdrawAmount);
    error InsufficientCollateralAvailableForWithdraw(int256 withdrawableMarginUsd, uint256 requestedMarginUsd);
    error InsufficientMargin(int256 availableMargin, uint256 minMargin);
    error AccountLiquidatable(uint128 accountId);
    error ZeroSizeOrder();
    error PendingOrderExists();
    error OrderNotValid();
    error AcceptablePriceExceeded(uint256 fillPrice, uint256 acceptablePrice);
    error InvalidSettlementStrategy(uint256 settlementStrategyId);
    error InvalidPrice(uint128 marketId);
    error Unauthorized(address addr);

    struct OrderCommitmentRequest {
        uint128 marketId;
        uint128 accountId;
        int128 sizeDelta;
        uint128 settlementStrategyId;
        uint256 acceptablePrice;
        bytes32 trackingCode;
        address referrer;
    }

    struct OrderData {
        uint256 commitmentTime;
        OrderCommitmentRequest request;
    }

    struct MarketConfig {
        address feed;
        uint256 priceScale; // 10**(18 - feed decimals)
        string name;
        string symbol;
        uint256 initialMarginRatioD18;
        uint256 minimumInitialMarginRatioD18;
        uint256 maintenanceMarginScalarD18;
        uint256 flagRewardRatioD18;
        uint256 minimumPositionMargin;
        uint256 skewScale;
        uint256 maxFundingVelocity;
        uint256 makerFee;
        uint256 takerFee;
        uint256 maxLiquidationLimitAccumulationMultiplier;
        uint256 maxSecondsInLiquidationWindow;
    }

    struct Position {
        int128 size;
        uint256 entryPrice; // price of the last settlement (wad)
    }

    struct LiquidationWindow {
        uint256 timestamp;
        uint256 amount;
    }

    struct MarketState {
        int256 skew;
        uint256 size;
        LiquidationWindow[] liquidationData;
    }

    struct Account {
        address owner;
        uint256 collateral; // snxUSD, wad
        uint128[] openMarkets;
    }

    address public owner;
    IERC20Min public immutable usdToken;
    int256 public insuranceFund; // snxUSD, wad

    uint256 public minKeeperRewardUsd;
    uint256 public minKeeperProfitRatioD18;
    uint256 public maxKeeperRewardUsd;
    uint256 public maxKeeperScalingRatioD18;
    uint256 public flagKeeperCostUsd;
    uint256 public liquidateKeeperCostUsd;

    uint128[] private _marketIds;
    mapping(uint128 => MarketConfig) private _config;
    mapping(uint128 => MarketState) private _market;
    mapping(uint128 => mapping(uint128 => Position)) private _positions; // market => account => position
    mapping(uint128 => Account) private _accounts;
    mapping(uint128 => OrderData) private _orders;
    uint128 private _nextAccountId = 1 << 64;

    uint256[] private _flagged;
    mapping(uint128 => uint256) private _flaggedIndex; // 1-based

    constructor(address usdToken_) {
        owner = msg.sender;
        usdToken = IERC20Min(usdToken_);
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert Unauthorized(msg.sender);
        _;
    }

    // =====================================================================================
    // administration
    // =====================================================================================

    function createMarket(uint128 marketId, string calldata marketName, string calldata marketSymbol, address feed) external onlyOwner {
        if (marketId == 0 || _config[marketId].feed != address(0)) revert InvalidMarket(marketId);
        MarketConfig storage c = _config[marketId];
        c.feed = feed;
        c.priceScale = 10 ** (18 - uint256(IPriceFeed(feed).decimals()));
        c.name = marketName;
        c.symbol = marketSymbol;
        _marketIds.push(marketId);
        emit MarketCreated(marketId, marketName, marketSymbol);
    }

    function setLiquidationParameters(
        uint128 marketId, uint256 initialMarginRatioD18, uint256 minimumInitialMarginRatioD18,
        uint256 maintenanceMarginScalarD18, uint256 flagRewardRatioD18, uint256 minimumPositionMargin
    ) external onlyOwner {
        MarketConfig storage c = _loadMarket(marketId);
        c.initialMarginRatioD18 = initialMarginRatioD18;
        c.minimumInitialMarginRatioD18 = minimumInitialMarginRatioD18;
        c.maintenanceMarginScalarD18 = maintenanceMarginScalarD18;
        c.flagRewardRatioD18 = flagRewardRatioD18;
        c.minimumPositionMargin = minimumPositionMargin;
    }

    function setMaxLiquidationParameters(
        uint128 marketId, uint256 maxLiquidationLimitAccumulationMultiplier, uint256 maxSecondsInLiquidationWindow,
        uint256, address
    ) external onlyOwner {
        MarketConfig storage c = _loadMarket(marketId);
        c.maxLiquidationLimitAccumulationMultiplier = maxLiquidationLimitAccumulationMultiplier;
        c.maxSecondsInLiquidationWindow = maxSecondsInLiquidationWindow;
    }

    function setFundingParameters(uint128 marketId, uint256 skewScale, uint256 maxFundingVelocity) external onlyOwner {
        MarketConfig storage c = _loadMarket(marketId);
        c.skewScale = skewScale;
        c.maxFundingVelocity = maxFundingVelocity;
    }

    function setOrderFees(uint128 marketId, uint256 makerFeeRatio, uint256 takerFeeRatio) external onlyOwner {
        MarketConfig storage c = _loadMarket(marketId);
        c.makerFee = makerFeeRatio;
        c.takerFee = takerFeeRatio;
    }

    function setKeeperRewardGuards(
        uint256 minKeeperRewardUsd_, uint256 minKeeperProfitRatioD18_, uint256 maxKeeperRewardUsd_, uint256 maxKeeperScalingRatioD18_
    ) external onlyOwner {
        minKeeperRewardUsd = minKeeperRewardUsd_;
        minKeeperProfitRatioD18 = minKeeperProfitRatioD18_;
        maxKeeperRewardUsd = maxKeeperRewardUsd_;
        maxKeeperScalingRatioD18 = maxKeeperScalingRatioD18_;
    }

    /// @notice Not in Synthetix (it prices keeper costs with a gas-price oracle node).
    function setKeeperCosts(uint256 flagCostUsd, uint256 liquidateCostUsd) external onlyOwner {
        flagKeeperCostUsd = flagCostUsd;
        liquidateKeeperCostUsd = liquidateCostUsd;
    }

    /// @notice Adds snxUSD to the insurance fund (the counterparty of every position).
    function depositInsuranceFund(uint256 amount) external {
        usdToken.transferFrom(msg.sender, address(this), amount);
        insuranceFund += int256(amount);
    }

    // =====================================================================================
    // accounts and collateral
    // =====================================================================================

    function createAccount() external returns (uint128 accountId) {
        accountId = _nextAccountId++;
        _create(accountId);
    }

    function createAccount(uint128 requestedAccountId) external {
        if (requestedAccountId == 0 || requestedAccountId >= (1 << 64)) revert InvalidAccountId(requestedAccountId);
        _create(requestedAccountId);
    }

    function _create(uint128 accountId) private {
        if (_accounts[accountId].owner != address(0)) revert InvalidAccountId(accountId);
        _accounts[accountId].owner = msg.sender;
        emit AccountCreated(accountId, msg.sender);
    }

    function getAccountOwner(uint128 accountId) external view returns (address) {
        return _accounts[accountId].owner;
    }

    function modifyCollateral(uint128 accountId, uint128 collateralId, int256 amountDelta) external {
        Account storage a = _ownedAccount(accountId);
        if (collateralId != 0) revert SynthNotEnabledForCollateral(collateralId);
        if (amountDelta == 0) revert InvalidAmountDelta(amountDelta);
        if (_flaggedIndex[accountId] != 0) revert AccountLiquidatable(accountId);
        if (amountDelta > 0) {
            usdToken.transferFrom(msg.sender, address(this), uint256(amountDelta));
            a.collateral += uint256(amountDelta);
        } else {
            uint256 amount = uint256(-amountDelta);
            if (amount > a.collateral) revert InsufficientCollateral(collateralId, a.collateral, amount);
            a.collateral -= amount;
            if (a.openMarkets.length > 0) {
                (uint256 im, , ) = _requiredMargins(accountId);
                int256 am = _availableMargin(accountId);
                if (am < int256(im)) revert InsufficientCollateralAvailableForWithdraw(am - int256(im), amount);
            }
            usdToken.transfer(msg.sender, amount);
        }
        emit CollateralModified(accountId, collateralId, amountDelta, msg.sender);
    }

    function getCollateralAmount(uint128 accountId, uint128 collateralId) external view returns (uint256) {
        return collateralId == 0 ? _accounts[accountId].collateral : 0;
    }

    function getAccountCollateralIds(uint128 accountId) external view returns (uint256[] memory ids) {
        if (_accounts[accountId].collateral > 0) {
            ids = new uint256[](1);
        }
    }

    function totalCollateralValue(uint128 accountId) external view returns (uint256) {
        return _accounts[accountId].collateral;
    }

    function getAccountOpenPositions(uint128 accountId) external view returns (uint256[] memory ids) {
        uint128[] storage m = _accounts[accountId].openMarkets;
        ids = new uint256[](m.length);
        for (uint256 i = 0; i < m.length; i++) ids[i] = m[i];
    }

    function getOpenPosition(uint128 accountId, uint128 marketId)
        external
        view
        returns (int256 totalPnl, int256 accruedFunding, int128 positionSize, uint256 owedInterest)
    {
        Position storage p = _positions[marketId][accountId];
        positionSize = p.size;
        if (positionSize != 0) totalPnl = _pnl(p, indexPrice(marketId));
        return (totalPnl, 0, positionSize, 0);
    }

    function getOpenPositionSize(uint128 accountId, uint128 marketId) external view returns (int128) {
        return _positions[marketId][accountId].size;
    }

    function getAvailableMargin(uint128 accountId) external view returns (int256) {
        return _availableMargin(accountId);
    }

    function getWithdrawableMargin(uint128 accountId) external view returns (int256) {
        (uint256 im, , ) = _requiredMargins(accountId);
        return _availableMargin(accountId) - int256(im);
    }

    function getRequiredMargins(uint128 accountId)
        external
        view
        returns (uint256 requiredInitialMargin, uint256 requiredMaintenanceMargin, uint256 maxLiquidationReward)
    {
        return _requiredMargins(accountId);
    }

    function totalAccountOpenInterest(uint128 accountId) external view returns (uint256 total) {
        uint128[] storage m = _accounts[accountId].openMarkets;
        for (uint256 i = 0; i < m.length; i++) {
            total += _abs(_positions[m[i]][accountId].size) * indexPrice(m[i]) / UNIT;
        }
    }

    // =====================================================================================
    // orders
    // =====================================================================================

    function commitOrder(OrderCommitmentRequest calldata commitment) external returns (OrderData memory retOrder, uint256 fees) {
        _ownedAccount(commitment.accountId);
        _loadMarket(commitment.marketId);
        if (commitment.sizeDelta == 0) revert ZeroSizeOrder();
        if (commitment.settlementStrategyId != 0) revert InvalidSettlementStrategy(commitment.settlementStrategyId);
        if (_flaggedIndex[commitment.accountId] != 0) revert AccountLiquidatable(commitment.accountId);
        OrderData storage o = _orders[commitment.accountId];
        if (o.request.sizeDelta != 0) revert PendingOrderExists();
        o.commitmentTime = block.timestamp;
        o.request = commitment;
        emit OrderCommitted(
            commitment.marketId, commitment.accountId, 0, commitment.sizeDelta, commitment.acceptablePrice,
            block.timestamp, block.timestamp, block.timestamp, block.timestamp + 3600, commitment.trackingCode, msg.sender
        );
        return (o, 0);
    }

    function getOrder(uint128 accountId) external view returns (OrderData memory) {
        return _orders[accountId];
    }

    /// @notice Fills the account's committed order at the current index price (anyone may call).
    function settleOrder(uint128 accountId) external {
        OrderData memory o = _orders[accountId];
        OrderCommitmentRequest memory r = o.request;
        if (r.sizeDelta == 0) revert OrderNotValid();
        delete _orders[accountId];
        uint256 fill = indexPrice(r.marketId);
        if (r.sizeDelta > 0 ? fill > r.acceptablePrice : fill < r.acceptablePrice) {
            revert AcceptablePriceExceeded(fill, r.acceptablePrice);
        }
        Account storage a = _accounts[accountId];
        Position storage p = _positions[r.marketId][accountId];
        int128 oldSize = p.size;
        int256 pnl = oldSize == 0 ? int256(0) : _pnl(p, fill);
        int256 coll = int256(a.collateral) + pnl;
        if (coll < 0) revert InsufficientMargin(coll, 0);
        a.collateral = uint256(coll);
        insuranceFund -= pnl;
        int128 newSize = oldSize + r.sizeDelta;
        p.size = newSize;
        p.entryPrice = fill;
        MarketState storage m = _market[r.marketId];
        m.size = m.size + _abs(newSize) - _abs(oldSize);
        m.skew += r.sizeDelta;
        _updateOpenMarkets(a, r.marketId, oldSize, newSize);
        if (_abs(newSize) > _abs(oldSize) || (newSize != 0 && (newSize > 0) != (oldSize > 0))) {
            (uint256 im, , ) = _requiredMargins(accountId);
            int256 am = _availableMargin(accountId);
            if (am < int256(im)) revert InsufficientMargin(am, im);
        }
        emit OrderSettled(r.marketId, accountId, fill, pnl, 0, r.sizeDelta, newSize, 0, 0, 0, 0, r.trackingCode, msg.sender);
    }

    // =====================================================================================
    // markets
    // =====================================================================================

    function getMarkets() external view returns (uint256[] memory ids) {
        ids = new uint256[](_marketIds.length);
        for (uint256 i = 0; i < ids.length; i++) ids[i] = _marketIds[i];
    }

    function metadata(uint128 marketId) external view returns (string memory name, string memory symbol) {
        MarketConfig storage c = _config[marketId];
        return (c.name, c.symbol);
    }

    function getPriceFeed(uint128 marketId) external view returns (address) {
        return _loadMarket(marketId).feed;
    }

    function indexPrice(uint128 marketId) public view returns (uint256) {
        MarketConfig storage c = _loadMarket(marketId);
        int256 answer = IPriceFeed(c.feed).latestAnswer();
        if (answer <= 0) revert InvalidPrice(marketId);
        return uint256(answer) * c.priceScale;
    }

    function size(uint128 marketId) external view returns (uint256) {
        return _market[marketId].size;
    }

    function skew(uint128 marketId) external view returns (int256) {
        return _market[marketId].skew;
    }

    function getLiquidationParameters(uint128 marketId)
        external
        view
        returns (
            uint256 initialMarginRatioD18, uint256 minimumInitialMarginRatioD18, uint256 maintenanceMarginScalarD18,
            uint256 flagRewardRatioD18, uint256 minimumPositionMargin
        )
    {
        MarketConfig storage c = _loadMarket(marketId);
        return (c.initialMarginRatioD18, c.minimumInitialMarginRatioD18, c.maintenanceMarginScalarD18, c.flagRewardRatioD18, c.minimumPositionMargin);
    }

    function getMaxLiquidationParameters(uint128 marketId)
        external
        view
        returns (
            uint256 maxLiquidationLimitAccumulationMultiplier, uint256 maxSecondsInLiquidationWindow,
            uint256 maxLiquidationPd, address endorsedLiquidator
        )
    {
        MarketConfig storage c = _loadMarket(marketId);
        return (c.maxLiquidationLimitAccumulationMultiplier, c.maxSecondsInLiquidationWindow, 0, address(0));
    }

    function getFundingParameters(uint128 marketId) external view returns (uint256 skewScale, uint256 maxFundingVelocity) {
        MarketConfig storage c = _loadMarket(marketId);
        return (c.skewScale, c.maxFundingVelocity);
    }

    function getOrderFees(uint128 marketId) external view returns (uint256 makerFee, uint256 takerFee) {
        MarketConfig storage c = _loadMarket(marketId);
        return (c.makerFee, c.takerFee);
    }

    function getKeeperRewardGuards()
        external
        view
        returns (uint256, uint256, uint256, uint256)
    {
        return (minKeeperRewardUsd, minKeeperProfitRatioD18, maxKeeperRewardUsd, maxKeeperScalingRatioD18);
    }

    /// @notice Not in Synthetix: the fixed keeper costs (USD, wad) used in place of its gas oracle.
    function getKeeperCosts() external view returns (uint256 flagCost, uint256 liquidateCost) {
        return (flagKeeperCostUsd, liquidateKeeperCostUsd);
    }

    // =====================================================================================
    // liquidation (ILiquidationModule)
    // =====================================================================================

    function canLiquidate(uint128 accountId) external view returns (bool isEligible) {
        if (_flaggedIndex[accountId] != 0) return true;
        (isEligible, , , ) = _eligibility(accountId);
    }

    function flaggedAccounts() external view returns (uint256[] memory accountIds) {
        return _flagged;
    }

    function liquidationCapacity(uint128 marketId)
        external
        view
        returns (uint256 capacity, uint256 maxLiquidationInWindow, uint256 latestLiquidationTimestamp)
    {
        return _capacity(marketId);
    }

    function liquidate(uint128 accountId) external returns (uint256 liquidationReward) {
        if (_flaggedIndex[accountId] != 0) {
            return _liquidateAccount(accountId, false, 0, 0);
        }
        (bool eligible, int256 am, uint256 mm, uint256 possibleReward) = _eligibility(accountId);
        if (!eligible) revert NotEligibleForLiquidation(accountId);
        Account storage a = _accounts[accountId];
        uint256 collateral = a.collateral;
        uint256 flagRewards;
        for (uint256 i = 0; i < a.openMarkets.length; i++) {
            uint128 m = a.openMarkets[i];
            uint256 price = indexPrice(m);
            Position storage p = _positions[m][accountId];
            flagRewards += _abs(p.size) * price / UNIT * _config[m].flagRewardRatioD18 / UNIT;
            p.entryPrice = price; // the fund takes the position over at this price
        }
        // the whole available margin (collateral + PnL) goes to the insurance fund
        a.collateral = 0;
        insuranceFund += am;
        _flagged.push(accountId);
        _flaggedIndex[accountId] = _flagged.length;
        uint256 flagPayout = keeperReward(flagRewards, flagKeeperCostUsd, collateral);
        emit AccountFlaggedForLiquidation(accountId, am, mm, possibleReward, flagPayout);
        return _liquidateAccount(accountId, true, flagRewards, collateral);
    }

    function liquidateFlagged(uint256 maxNumberOfAccounts) external returns (uint256 liquidationReward) {
        uint256[] memory ids = _flagged;
        uint256 n = maxNumberOfAccounts < ids.length ? maxNumberOfAccounts : ids.length;
        for (uint256 i = 0; i < n; i++) {
            liquidationReward += _liquidateAccount(uint128(ids[i]), false, 0, 0);
        }
    }

    function liquidateFlaggedAccounts(uint128[] calldata accountIds) external returns (uint256 liquidationReward) {
        for (uint256 i = 0; i < accountIds.length; i++) {
            if (_flaggedIndex[accountIds[i]] == 0) continue;
            liquidationReward += _liquidateAccount(accountIds[i], false, 0, 0);
        }
    }

    function keeperReward(uint256 keeperRewards, uint256 costOfExecutionInUsd, uint256 availableMarginInUsd) public view returns (uint256) {
        uint256 a = costOfExecutionInUsd + minKeeperRewardUsd;
        uint256 b = costOfExecutionInUsd * (minKeeperProfitRatioD18 + UNIT) / UNIT;
        uint256 minCap = a > b ? a : b;
        uint256 maxCap = maxKeeperRewardUsd;
        if (availableMarginInUsd != 0) {
            uint256 scaled = availableMarginInUsd * maxKeeperScalingRatioD18 / UNIT;
            if (scaled < maxCap) maxCap = scaled;
        }
        uint256 r = keeperRewards + costOfExecutionInUsd;
        if (r < minCap) r = minCap;
        return r < maxCap ? r : maxCap;
    }

    // =====================================================================================
    // internals
    // =====================================================================================

    function _liquidateAccount(uint128 accountId, bool flagTx, uint256 flagRewards, uint256 collateral)
        private
        returns (uint256 reward)
    {
        Account storage a = _accounts[accountId];
        uint128[] memory markets = a.openMarkets;
        uint256 totalLiquidated;
        for (uint256 i = 0; i < markets.length; i++) {
            totalLiquidated += _liquidatePosition(a, accountId, markets[i]);
        }
        bool full;
        if (flagTx || totalLiquidated > 0) {
            reward = flagTx ? keeperReward(flagRewards, flagKeeperCostUsd, collateral) : keeperReward(0, liquidateKeeperCostUsd, 0);
            full = a.openMarkets.length == 0;
            if (full) _removeFlagged(accountId);
            if (reward > 0) {
                insuranceFund -= int256(reward);
                usdToken.transfer(msg.sender, reward);
            }
        }
        emit AccountLiquidationAttempt(accountId, reward, full);
    }

    /// @dev closes as much of one position as the market's window capacity allows
    function _liquidatePosition(Account storage a, uint128 accountId, uint128 m) private returns (uint256 amount) {
        Position storage p = _positions[m][accountId];
        int128 oldSize = p.size;
        uint256 absSize = _abs(oldSize);
        (uint256 cap, , ) = _capacity(m);
        amount = absSize < cap ? absSize : cap;
        if (amount == 0) return 0;
        int128 newSize = oldSize > 0 ? oldSize - int128(uint128(amount)) : oldSize + int128(uint128(amount));
        p.size = newSize;
        MarketState storage ms = _market[m];
        ms.size -= amount;
        ms.skew -= (oldSize > 0 ? int256(amount) : -int256(amount));
        _recordLiquidation(ms, amount);
        if (newSize == 0) _updateOpenMarkets(a, m, oldSize, 0);
        emit PositionLiquidated(accountId, m, amount, newSize);
    }

    function _recordLiquidation(MarketState storage ms, uint256 amount) private {
        uint256 n = ms.liquidationData.length;
        if (n > 0 && ms.liquidationData[n - 1].timestamp == block.timestamp) {
            ms.liquidationData[n - 1].amount += amount;
        } else {
            ms.liquidationData.push(LiquidationWindow({timestamp: block.timestamp, amount: amount}));
        }
    }

    function _capacity(uint128 marketId) private view returns (uint256 capacity, uint256 maxInWindow, uint256 latest) {
        MarketConfig storage c = _loadMarket(marketId);
        maxInWindow = _maxInWindow(c);
        LiquidationWindow[] storage data = _market[marketId].liquidationData;
        uint256 n = data.length;
        if (n == 0) return (maxInWindow, maxInWindow, 0);
        latest = data[n - 1].timestamp;
        uint256 start = block.timestamp > c.maxSecondsInLiquidationWindow ? block.timestamp - c.maxSecondsInLiquidationWindow : 0;
        uint256 used;
        for (uint256 i = n; i > 0; i--) {
            if (data[i - 1].timestamp <= start) break;
            used += data[i - 1].amount;
        }
        capacity = used >= maxInWindow ? 0 : maxInWindow - used;
    }

    function _maxInWindow(MarketConfig storage c) private view returns (uint256) {
        return (c.makerFee + c.takerFee) * c.skewScale / UNIT * c.maxLiquidationLimitAccumulationMultiplier / UNIT
            * c.maxSecondsInLiquidationWindow;
    }

    function _eligibility(uint128 accountId)
        private
        view
        returns (bool eligible, int256 availableMargin, uint256 requiredMaintenanceMargin, uint256 possibleReward)
    {
        availableMargin = _availableMargin(accountId);
        if (_accounts[accountId].openMarkets.length == 0) return (false, availableMargin, 0, 0);
        (, requiredMaintenanceMargin, possibleReward) = _requiredMargins(accountId);
        eligible = int256(requiredMaintenanceMargin) > availableMargin;
    }

    function _availableMargin(uint128 accountId) private view returns (int256 margin) {
        Account storage a = _accounts[accountId];
        margin = int256(a.collateral);
        for (uint256 i = 0; i < a.openMarkets.length; i++) {
            uint128 m = a.openMarkets[i];
            margin += _pnl(_positions[m][accountId], indexPrice(m));
        }
    }

    function _requiredMargins(uint128 accountId) private view returns (uint256 im, uint256 mm, uint256 possibleReward) {
        Account storage a = _accounts[accountId];
        uint256 n = a.openMarkets.length;
        if (n == 0) return (0, 0, 0);
        uint256 flagRewards;
        uint256 windows;
        for (uint256 i = 0; i < n; i++) {
            uint128 m = a.openMarkets[i];
            MarketConfig storage c = _config[m];
            uint256 sizeAbs = _abs(_positions[m][accountId].size);
            uint256 impact = c.skewScale == 0 ? 0 : sizeAbs * UNIT / c.skewScale;
            uint256 imr = impact * c.initialMarginRatioD18 / UNIT + c.minimumInitialMarginRatioD18;
            uint256 mmr = imr * c.maintenanceMarginScalarD18 / UNIT;
            uint256 notional = sizeAbs * indexPrice(m) / UNIT;
            im += notional * imr / UNIT + c.minimumPositionMargin;
            mm += notional * mmr / UNIT + c.minimumPositionMargin;
            flagRewards += notional * c.flagRewardRatioD18 / UNIT;
            uint256 maxW = _maxInWindow(c);
            uint256 w = maxW == 0 ? 1 : (sizeAbs + maxW - 1) / maxW;
            if (w > windows) windows = w;
        }
        possibleReward = keeperReward(flagRewards, flagKeeperCostUsd, a.collateral);
        if (windows > 1) possibleReward += (windows - 1) * keeperReward(0, liquidateKeeperCostUsd, 0);
        im += possibleReward;
        mm += possibleReward;
    }

    function _pnl(Position storage p, uint256 price) private view returns (int256) {
        return int256(p.size) * (int256(price) - int256(p.entryPrice)) / int256(UNIT);
    }

    function _updateOpenMarkets(Account storage a, uint128 marketId, int128 oldSize, int128 newSize) private {
        if (oldSize == 0 && newSize != 0) {
            a.openMarkets.push(marketId);
        } else if (oldSize != 0 && newSize == 0) {
            uint256 n = a.openMarkets.length;
            for (uint256 i = 0; i < n; i++) {
                if (a.openMarkets[i] == marketId) {
                    a.openMarkets[i] = a.openMarkets[n - 1];
                    a.openMarkets.pop();
                    break;
                }
            }
        }
    }

    function _removeFlagged(uint128 accountId) private {
        uint256 idx = _flaggedIndex[accountId];
        if (idx == 0) return;
        uint256 last = _flagged[_flagged.length - 1];
        _flagged[idx - 1] = last;
        _flaggedIndex[uint128(last)] = idx;
        _flagged.pop();
        delete _flaggedIndex[accountId];
    }

    function _ownedAccount(uint128 accountId) private view returns (Account storage a) {
        a = _accounts[accountId];
        if (a.owner == address(0)) revert AccountNotFound(accountId);
        if (a.owner != msg.sender) revert PermissionDenied(accountId, "PERPS_COMMIT_ASYNC_ORDER", msg.sender);
    }

    function _loadMarket(uint128 marketId) private view returns (MarketConfig storage c) {
        c = _config[marketId];
        if (c.feed == address(0)) revert InvalidMarket(marketId);
    }

    function _abs(int128 x) private pure returns (uint256) {
        return x >= 0 ? uint256(uint128(x)) : uint256(uint128(-x));
    }
}
