"""keeper: an on-chain DeFi liquidation keeper."""

__version__ = "0.1.0"
