"""Prices and swap quotes."""
