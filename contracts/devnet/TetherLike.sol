// SPDX-License-Identifier: MIT
pragma solidity 0.8.24;

/// @title TetherLike
/// @notice Devnet token with mainnet USDT's (TetherToken at 0xdAC17F958D2ee523a2206206994597C13D831ec7)
///         ERC-20 quirks, for testing callers that must cope with them:
///         - `transfer`, `transferFrom` and `approve` return NOTHING (no bool): a caller that
///           decodes a bool from the return data (plain IERC20 in Solidity >= 0.4.22, or
///           web3 expecting a result) fails; SafeERC20-style callers work;
///         - `approve` from a non-zero allowance to a non-zero value reverts (with no data), as
///           mainnet's `require(!((_value != 0) && (allowed[msg.sender][_spender] != 0)))`:
///           set it to 0 first;
///         - an allowance of type(uint256).max is not decreased by `transferFrom` (as mainnet).
///         No fees (mainnet's basisPointsRate is 0), no pause, no blacklist.
///         Devnet minting as Aave's MintableERC20: `mint(uint256)` to msg.sender and
///         `mint(address,uint256)`, open to anyone.
contract TetherLike {
    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    string public name = "Tether USD";
    string public symbol = "USDT";
    uint8 public constant decimals = 6;
    uint256 public totalSupply;

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    uint256 private constant MAX_UINT = type(uint256).max;

    function transfer(address to, uint256 value) external {
        _transfer(msg.sender, to, value);
    }

    function transferFrom(address from, address to, uint256 value) external {
        uint256 allowed = allowance[from][msg.sender];
        require(allowed >= value);
        if (allowed < MAX_UINT) {
            allowance[from][msg.sender] = allowed - value;
        }
        _transfer(from, to, value);
    }

    function approve(address spender, uint256 value) external {
        // mainnet USDT: to change an allowance, first set it to zero (approve race mitigation)
        require(!((value != 0) && (allowance[msg.sender][spender] != 0)));
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
    }

    /// @notice Devnet only: mint `value` to the caller (as Aave's MintableERC20).
    function mint(uint256 value) external returns (bool) {
        _mint(msg.sender, value);
        return true;
    }

    /// @notice Devnet only: mint `value` to `account` (as Aave's MintableERC20).
    function mint(address account, uint256 value) external returns (bool) {
        _mint(account, value);
        return true;
    }

    function _transfer(address from, address to, uint256 value) private {
        require(to != address(0));
        uint256 bal = balanceOf[from];
        require(bal >= value);
        unchecked {
            balanceOf[from] = bal - value;
        }
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }

    function _mint(address account, uint256 value) private {
        require(account != address(0));
        totalSupply += value;
        balanceOf[account] += value;
        emit Transfer(address(0), account, value);
    }
}
