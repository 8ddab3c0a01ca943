"""Dagster assets: market data, backtests (one partition per agent), FMEL analytics, leaderboards."""
