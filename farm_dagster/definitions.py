"""The Dagster code location: market data -> backtests -> FMEL analytics -> leaderboard.

Resources come from :func:`farm_dagster.resources.factory.build_resources`, so ``FARM_PROFILE``
alone decides whether this location talks to DuckDB/files/SQLite/Redis or to
BigQuery/GCS/Firestore/Memorystore/Pub-Sub. Steps run in the run's own process
(``in_process_executor``): the run launcher already gives every run a process (locally) or a pod
(dagster-k8s), and each agent gets its own sandbox process on top.
"""

from __future__ import annotations

import dagster as dg

from assets import backtests, fmel_analytics, leaderboard, market_data
from farm_dagster.resources.factory import build_resources
from farm_dagster.settings import FarmSettings
from jobs.definitions import (
    backtest_agent_job,
    leaderboard_schedule,
    market_data_job,
    refresh_leaderboard_job,
)
from sensors.leaderboard import leaderboard_after_backtest
from sensors.submissions import agent_submission_sensor

_MODULES = [market_data, backtests, fmel_analytics, leaderboard]


def build_definitions(settings: FarmSettings | None = None) -> dg.Definitions:
    """The code location for ``settings`` (default: the environment's); tests pass their own."""
    return dg.Definitions(
        assets=dg.load_assets_from_modules(_MODULES),
        asset_checks=dg.load_asset_checks_from_modules(_MODULES),
        jobs=[market_data_job, backtest_agent_job, refresh_leaderboard_job],
        schedules=[leaderboard_schedule],
        sensors=[agent_submission_sensor, leaderboard_after_backtest],
        resources=build_resources(settings),
        executor=dg.in_process_executor,
    )


defs = build_definitions()
