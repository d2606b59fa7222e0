// SPDX-License-Identifier: AGPL-3.0-or-later
pragma solidity ^0.8.24;

/// Spotter (dss spot.sol): poke(ilk) reads the ilk's pip and files
/// spot = val * 1e9 / par / mat [ray] into the Vat.

interface SpotVatLike {
    function file(bytes32, bytes32, uint256) external;
}

interface SpotPipLike {
    function peek() external returns (bytes32, bool);
}

contract Spotter {
    // --- Auth ---
    mapping (address => uint256) public wards;
    function rely(address guy) external auth { wards[guy] = 1; }
    function deny(address guy) external auth { wards[guy] = 0; }
    modifier auth { require(wards[msg.sender] == 1, "Spotter/not-authorized"); _; }

    // --- Data ---
    struct Ilk {
        SpotPipLike pip;  // Price Feed
        uint256 mat;      // Liquidation ratio [ray]
    }

    mapping (bytes32 => Ilk) public ilks;

    SpotVatLike public vat;  // CDP Engine
    uint256 public par;      // ref per dai [ray]

    uint256 public live;

    // --- Events ---
    event Poke(
      bytes32 ilk,
      bytes32 val,  // [wad]
      uint256 spot  // [ray]
    );

    // --- Init ---
    constructor(address vat_) {
        wards[msg.sender] = 1;
        vat = SpotVatLike(vat_);
        par = ONE;
        live = 1;
    }

    // --- Math ---
    uint256 constant ONE = 10 ** 27;

    function rdiv(uint256 x, uint256 y) internal pure returns (uint256 z) {
        z = x * ONE / y;
    }

    // --- Administration ---
    function file(bytes32 ilk, bytes32 what, address pip_) external auth {
        require(live == 1, "Spotter/not-live");
        if (what == "pip") ilks[ilk].pip = SpotPipLike(pip_);
        else revert("Spotter/file-unrecognized-param");
    }
    function file(bytes32 what, uint256 data) external auth {
        require(live == 1, "Spotter/not-live");
        if (what == "par") par = data;
        else revert("Spotter/file-unrecognized-param");
    }
    function file(bytes32 ilk, bytes32 what, uint256 data) external auth {
        require(live == 1, "Spotter/not-live");
        if (what == "mat") ilks[ilk].mat = data;
        else revert("Spotter/file-unrecognized-param");
    }

    // --- Update value ---
    function poke(bytes32 ilk) external {
        (bytes32 val, bool has) = ilks[ilk].pip.peek();
        uint256 spot = has ? rdiv(rdiv(uint256(val) * 10 ** 9, par), ilks[ilk].mat) : 0;
        vat.file(ilk, "spot", spot);
        emit Poke(ilk, val, spot);
    }

    function cage() external auth {
        live = 0;
    }
}
