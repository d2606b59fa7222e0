"""Morpho Blue: liquidate unhealthy positions with no capital through the onMorphoLiquidate callback."""
