"""Refresh the leaderboard when a backtest run finishes (successfully or not: a failed agent leaves the board)."""

import dagster as dg

from jobs.definitions import backtest_agent_job, refresh_leaderboard_job


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[backtest_agent_job],
    request_job=refresh_leaderboard_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=10,
    description="A finished backtest -> one leaderboard refresh run.",
)
def leaderboard_after_backtest(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    # run_key = the backtest's run id: the same finished run never triggers two refreshes.
    return dg.RunRequest(run_key=f"after:{context.dagster_run.run_id}")
