// SPDX-License-Identifier: AGPL-3.0-or-later
pragma solidity ^0.8.24;

/// Token adapters (dss join.sol): GemJoin moves an ERC20 into / out of the Vat's gem
/// balance; for tokens with fewer than 18 decimals it converts like mainnet's GemJoin5
/// (join/exit take token units, the Vat holds wad). DaiJoin mints / burns DAI against
/// Vat dai (rad).

interface JoinGemLike {
    function decimals() external view returns (uint8);
    function transfer(address, uint256) external returns (bool);
    function transferFrom(address, address, uint256) external returns (bool);
}

interface JoinDaiLike {
    function mint(address, uint256) external;
    function burn(address, uint256) external;
}

interface JoinVatLike {
    function slip(bytes32, address, int256) external;
    function move(address, address, uint256) external;
}

contract GemJoin {
    mapping (address => uint256) public wards;
    function rely(address usr) external auth { wards[usr] = 1; emit Rely(usr); }
    function deny(address usr) external auth { wards[usr] = 0; emit Deny(usr); }
    modifier auth { require(wards[msg.sender] == 1, "GemJoin/not-authorized"); _; }

    JoinVatLike public immutable vat;  // CDP Engine
    bytes32     public immutable ilk;  // Collateral Type
    JoinGemLike public immutable gem;
    uint256     public immutable dec;
    uint256     public live;  // Active Flag

    event Rely(address indexed usr);
    event Deny(address indexed usr);
    event Join(address indexed usr, uint256 amt);
    event Exit(address indexed usr, uint256 amt);
    event Cage();

    constructor(address vat_, bytes32 ilk_, address gem_) {
        uint256 d = JoinGemLike(gem_).decimals();
        require(d <= 18, "GemJoin/decimals-18-or-lower");
        wards[msg.sender] = 1;
        live = 1;
        vat = JoinVatLike(vat_);
        ilk = ilk_;
        gem = JoinGemLike(gem_);
        dec = d;
        emit Rely(msg.sender);
    }

    function cage() external auth {
        live = 0;
        emit Cage();
    }

    // amt: token base units; the Vat is credited amt * 10**(18 - dec) [wad]
    function join(address usr, uint256 amt) external {
        require(live == 1, "GemJoin/not-live");
        uint256 wad = amt * 10 ** (18 - dec);
        require(int256(wad) >= 0, "GemJoin/overflow");
        vat.slip(ilk, usr, int256(wad));
        require(gem.transferFrom(msg.sender, address(this), amt), "GemJoin/failed-transfer");
        emit Join(usr, amt);
    }

    function exit(address usr, uint256 amt) external {
        uint256 wad = amt * 10 ** (18 - dec);
        require(wad <= 2 ** 255, "GemJoin/overflow");
        vat.slip(ilk, msg.sender, -int256(wad));
        require(gem.transfer(usr, amt), "GemJoin/failed-transfer");
        emit Exit(usr, amt);
    }
}

contract DaiJoin {
    mapping (address => uint256) public wards;
    function rely(address usr) external auth { wards[usr] = 1; emit Rely(usr); }
    function deny(address usr) external auth { wards[usr] = 0; emit Deny(usr); }
    modifier auth { require(wards[msg.sender] == 1, "DaiJoin/not-authorized"); _; }

    JoinVatLike public immutable vat;  // CDP Engine
    JoinDaiLike public immutable dai;  // Stablecoin Token
    uint256     public live;           // Active Flag

    event Rely(address indexed usr);
    event Deny(address indexed usr);
    event Join(address indexed usr, uint256 wad);
    event Exit(address indexed usr, uint256 wad);
    event Cage();

    constructor(address vat_, address dai_) {
        wards[msg.sender] = 1;
        live = 1;
        vat = JoinVatLike(vat_);
        dai = JoinDaiLike(dai_);
        emit Rely(msg.sender);
    }

    function cage() external auth {
        live = 0;
        emit Cage();
    }

    uint256 constant RAY = 10 ** 27;

    function join(address usr, uint256 wad) external {
        vat.move(address(this), usr, RAY * wad);
        dai.burn(msg.sender, wad);
        emit Join(usr, wad);
    }

    function exit(address usr, uint256 wad) external {
        require(live == 1, "DaiJoin/not-live");
        vat.move(msg.sender, address(this), RAY * wad);
        dai.mint(usr, wad);
        emit Exit(usr, wad);
    }
}
