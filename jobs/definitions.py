"""Jobs and schedules.

* ``market_data_job``: load the real market data into ``market_data.ohlcv`` and check it.
* ``backtest_agent_job``: backtest one agent (one ``agents`` partition). Re-running every agent over a
  new window or data version is one Dagster backfill of this job over all partitions
  (UI: Assets > agent_backtest > Materialize all; CLI: ``farm backfill``).
* ``refresh_leaderboard_job``: FMEL analytics and leaderboards, on a schedule and after backtests.
"""

from __future__ import annotations

import dagster as dg

from assets.partitions import agents_partitions

market_data_job = dg.define_asset_job(
    "market_data_job",
    selection=dg.AssetSelection.groups("market_data") - dg.AssetSelection.keys("synthetic_ohlcv"),
    description="Load the real market data shipped with the project and run its checks.",
)

backtest_agent_job = dg.define_asset_job(
    "backtest_agent_job",
    selection=dg.AssetSelection.groups("backtests"),
    partitions_def=agents_partitions,
    description="Backtest one agent in the sandbox and store its results, FMEL log and artifacts.",
)

refresh_leaderboard_job = dg.define_asset_job(
    "refresh_leaderboard_job",
    selection=dg.AssetSelection.groups("fmel_analytics", "leaderboard"),
    description="Recompute FMEL analytics and every leaderboard, and push the boards to the cache.",
)

leaderboard_schedule = dg.ScheduleDefinition(
    name="leaderboard_schedule",
    job=refresh_leaderboard_job,
    cron_schedule="*/15 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Keeps timeframe boards (daily/weekly/monthly) fresh even when no backtest finishes.",
)
