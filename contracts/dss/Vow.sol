// SPDX-License-Identifier: AGPL-3.0-or-later
pragma solidity ^0.8.24;

/// Vow, reduced to what Liquidation 2.0 touches: it receives the confiscated debt (sin,
/// through vat.grab), the bad-debt queue entry (fess) and the auction proceeds (vat.move),
/// and it is the `u` of vat.suck for keeper incentives. No flap/flop auctions here.
contract Vow {
    mapping (address => uint256) public wards;
    function rely(address usr) external auth { wards[usr] = 1; }
    function deny(address usr) external auth { wards[usr] = 0; }
    modifier auth { require(wards[msg.sender] == 1, "Vow/not-authorized"); _; }

    address public immutable vat;
    mapping (uint256 => uint256) public sin;  // debt queue [rad] by era
    uint256 public Sin;                       // queued debt [rad]

    constructor(address vat_) {
        vat = vat_;
        wards[msg.sender] = 1;
    }

    function fess(uint256 tab) external auth {
        sin[block.timestamp] = sin[block.timestamp] + tab;
        Sin = Sin + tab;
    }
}
