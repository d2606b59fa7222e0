"""`keeper stress`: a price path applied on a fork, the real keeper liquidating live at each
step, with or without the liquidations' own price impact feeding back into the oracle.

    keeper stress --config FILE --asset WETH --path -5,-5,-10 [--impact on|off]
                  [--fork-url URL] [--json] [--png FILE]

Covered: Aave V3, Morpho Blue, Maker/Sky Liquidation 2.0 (kind "maker": Dog/Clipper) and
Synthetix-v3-style perps (kind "synthetix_perps"). Any other kind is listed in `not_covered`.

1. Fork the source (--fork-url, default the config's chain.rpc_url) at its head
   (keeper/fork.py ForkAnvil, automine on) and start the real keeper on it, live, with no
   store, a temporary journal, no HTTP server. Its key: keeper.private_key_env (on a devnet
   fork, chain id 31337, anvil's public test account #1 when that variable is unset); its
   address gets 10,000 ETH on the fork.
2. The asset's feeds: the price source of every Aave reserve whose symbol is --asset, the
   base feed of every Morpho market (ChainlinkOracle shape) whose collateral is that token,
   and the `src()` of the pip (AggregatorPip shape) of every Maker ilk whose gem is that token.
   A feed is set with `setAnswer(int256)` sent from its `owner()`, impersonated (the devnet's
   SettableAggregator). A feed that is not settable that way gets the project's
   SettableAggregator code in its place (anvil_setCode, owner slot set to the stress account):
   latestAnswer/latestRoundData keep working, at the answers the path sets.
   Every Maker ilk whose pip reads a moved feed (pip.src()) sees it: the Spotter is poked for
   it (Spotter.poke(ilk), permissionless, sent by the stress account) after every feed update
   (each step, and each impact update). Every perps market whose getPriceFeed(id) is a moved
   feed moves by itself (its indexPrice reads the feed); both lists are in the report
   (`maker_ilks`, `perps_markets`).
3. The market: every Uniswap V3 pool (swap.router's factory, swap.fee_tiers) and Uniswap V2
   pair (swap.uniswap_v2_factory) of the asset against another Aave reserve (at its feed) or
   against a Maker adapter's DAI (at $1). At the start of each step the feeds are set to the
   step's price (old answer * (100 + pct) / 100) and every such pool is arbitraged to the
   feeds' ratio (the market moved): a stress account gets the tokens it sells by writing its
   balance slot (found by probing) and swaps through the router (V3, with the target as
   sqrtPriceLimitX96) or the pair (V2). The deepest pool is the one holding most of the asset;
   its price (pool ratio x the other token's price) is the step's pool price.
4. Then the keeper runs cycle after cycle until a cycle confirms nothing (at most --cycles per
   step, default 50; a step cut short is flagged `capped`). Its liquidation routes sell the
   seized collateral in the same transaction, so the pools move. With --impact on, after each
   cycle that sent something the asset's feeds are set to the deepest pool's price (and the
   Spotter poked): liquidations can cause more liquidations.
   Time: Maker auctions start above the market and fall with time, perps liquidations are
   capped per window. When a cycle confirms nothing while a Clipper has active auctions or
   the perps market has flagged accounts, fork time is advanced (evm_increaseTime + evm_mine)
   and the keeper runs again: by the seconds until the first auction reaches the keeper's
   limit (the Maker adapter's own figure, plus one block; 60 s for an auction already under
   the limit but not taken, its price keeps falling), until an auction needs `redo` (tail),
   or until a full perps window frees capacity, else by 60 s; at least chain.block_time_s.
   Per step the time advanced is bounded by the longest `tail` of the Clippers that had
   active auctions (at least 10 perps windows when accounts are flagged), at most 2 hours
   (`time_advanced_s`, `time_advances`).
5. Per step, read from the fork (all in the step's blocks, by anyone):
   - Aave / Morpho: the liquidations (LiquidationCall, Liquidate events), the collateral seized
     in the asset, the part of it sold (seized minus what the keeper's address and liquidator
     contracts still hold of it), its USD value at the feed's answer of each liquidation's
     block, the pool price before and after, the bad debt created (Aave: the debt of accounts
     liquidated in the step left with zero collateral, getUserAccountData; Morpho:
     badDebtAssets of the Liquidate events). These keep their field names (`seized_raw`,
     `sold_raw`, `sold_usd_e8`, `bad_debt_aave_usd_e8`, `bad_debt_morpho_usd_e8`).
   - Maker (`maker`): barks (Dog Bark events), takes (Clipper Take events) and redos; the gem
     sold by the auctions (each take's slice = owe / price, exact in dss; in the asset's raw
     units for ilks whose gem is the asset, `gem_sold_raw`; every ilk in USD at its pip's feed
     answer of the take's block, or spot * mat for a pip without a feed, `gem_sold_usd_e8`),
     the DAI raised (sum of owe, rad); the uncovered tab: a take that leaves lot = 0 with
     tab > 0 ends the auction with that tab not covered (the Maker bad debt reported,
     `uncovered_tab_rad`; the tab includes the liquidation penalty, so `uncovered_debt_rad` is
     its debt part, max(0, tab left - (tab at kick - Bark's due)), for auctions barked during
     the run, else counted in `uncovered_debt_unknown`); auctions still open at the end of
     the step, with their remaining tab and lot (`open_auctions`, `open_tab_rad`; not counted
     as bad debt: they may still be covered later). DAI counts as $1: USD e8 = rad // 10**37.
   - Perps (`perps`): accounts flagged (AccountFlaggedForLiquidation), liquidation attempts
     (AccountLiquidationAttempt), positions closed (PositionLiquidated: size and its notional
     at the market's indexPrice of the block), the shortfall the insurance fund takes: the
     negative part of each flag's availableMargin (snxUSD wad, $1: USD e8 = wad // 10**10),
     and PerpsMarket.insuranceFund() before the step's price move and after its last cycle.
   - Totals per step over every covered protocol: `positions_liquidated` (Aave and Morpho
     liquidations + Maker barks + perps accounts flagged; per protocol kind in
     `positions_liquidated_by`), `volume_usd_e8` (Aave/Morpho sold + Maker gem sold + perps
     notional closed), `bad_debt_usd_e8` (Aave + Morpho + Maker uncovered tab + perps
     shortfall, each also on its own; `bad_debt_accounts` lists the lending accounts, the
     uncovered auctions as "ILK#id" and the perps account ids) and the keeper's PnL (the
     executor's realized profit of each confirmed or failed send). `totals` sums them (Maker's
     open auctions: those of the last step); `series` holds them cumulated per step.

The fork is always stopped. Integers for amounts (raw units: wad, ray, rad; USD e8).
"""

from .chain import _answer, give, set_feed
from .report import png, table
from .run import main, parse_path, stress

__all__ = ["_answer", "give", "main", "parse_path", "png", "set_feed", "stress", "table"]
