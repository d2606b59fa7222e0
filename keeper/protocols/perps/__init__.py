"""Perps margin accounts on a market with the Synthetix v3 perps interface."""
