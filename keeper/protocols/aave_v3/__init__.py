"""Aave V3: liquidationCall on accounts with health factor below 1."""
