"""The pipeline end to end on an ephemeral Dagster instance: submissions -> sensor -> backtests ->
FMEL analytics -> leaderboard, against real DuckDB/SQLite files and a real Redis."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from farm_dagster.agents import AGENTS, AgentStatus, BacktestRequest, submit_agent
from farm_dagster.definitions import build_definitions
from farm_dagster.leaderboard import RANKINGS, cache_key
from farm_dagster.metrics import compute_metrics
from farm_dagster.results_store import EQUITY, METRICS, TRADES
from sensors.submissions import agent_submission_sensor

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

AGENTS_UNDER_TEST = [
    ("ma_crossover.py", "MA crossover", ["AAPL", "MSFT", "IBM"]),
    ("rsi_mean_reversion.py", "RSI", ["AAPL", "IBM"]),
    ("buy_and_hold.py", "Buy and hold", ["SPX"]),
    ("momentum_rotation.py", "Momentum", ["AAPL", "MSFT", "IBM", "GOOG", "SPX", "COMP"]),
]


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"opstore": defs.resources["opstore"], "bus": defs.resources["bus"]},
    )
    return agent_submission_sensor(context)


@pytest.fixture
def pipeline(settings):
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    loaded = defs.resolve_job_def("market_data_job").execute_in_process(instance=instance)
    assert loaded.success
    return defs, instance


def test_submissions_become_ranked_backtests(pipeline):
    defs, instance = pipeline
    opstore, objects = defs.resources["opstore"], defs.resources["object_store"]
    ids = {}
    for file, name, symbols in AGENTS_UNDER_TEST:
        doc = submit_agent(
            opstore,
            objects,
            code=(REPO / "examples" / file).read_text(),
            name=name,
            user_id="alice",
            filename=file,
            request=BacktestRequest(symbols=symbols, start="2004-01-01", end="2011-12-31"),
        )
        ids[doc["id"]] = file
    failing = submit_agent(
        opstore,
        objects,
        code=(REPO / "tests/agents/raises_midway.py").read_text(),
        name="Raises",
        user_id="bob",
        filename="raises_midway.py",
        request=BacktestRequest(symbols=["AAPL"], start="2004-01-01", end="2011-12-31"),
    )

    result = _tick(defs, instance, None)
    assert isinstance(result, dg.SensorResult)
    requested = [r.partition_key for r in result.run_requests]
    assert sorted(requested) == sorted([*ids, failing["id"]])
    assert len({r.run_key for r in result.run_requests}) == len(requested)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))

    job = defs.resolve_job_def("backtest_agent_job")
    outcomes = {
        r.partition_key: job.execute_in_process(
            instance=instance, partition_key=r.partition_key, tags=r.tags, raise_on_error=False
        )
        for r in result.run_requests
    }
    # The failing agent fails alone, with its own line number; the others complete.
    assert not outcomes[failing["id"]].success
    bad = opstore.get(AGENTS, failing["id"])
    assert bad["status"] == AgentStatus.FAILED
    assert "raises_midway.py" in bad["error"] and "line 17" in bad["error"], bad["error"]
    assert "farm_dagster" not in bad["error"], "the user sees their traceback, not ours"
    for agent_id in ids:
        assert outcomes[agent_id].success, agent_id
        assert opstore.get(AGENTS, agent_id)["status"] == AgentStatus.COMPLETED
        checks = outcomes[agent_id].get_asset_check_evaluations()
        assert checks and all(c.passed for c in checks), [(c.check_name, c.metadata) for c in checks]

    # Decisions made before the crash are kept, and the run is marked failed.
    warehouse = defs.resources["warehouse"]
    kept = warehouse.query(
        "SELECT count(*) AS n FROM {fmel.trading_decisions} WHERE agent_id = @agent", {"agent": failing["id"]}
    )
    assert int(kept["n"].iloc[0]) >= 29
    failed_row = warehouse.read(METRICS, where={"agent_id": failing["id"]})
    assert list(failed_row["status"]) == ["failed"]

    refresh = defs.resolve_job_def("refresh_leaderboard_job").execute_in_process(instance=instance)
    assert refresh.success

    # Rankings agree with metrics recomputed independently from the stored equity curves.
    equity = warehouse.read(EQUITY)
    trades = warehouse.read(TRADES)
    board = warehouse.read(
        RANKINGS, where={"board_type": "backtest", "metric": "sharpe", "timeframe": "all_time"}
    )
    assert set(board["agent_id"]) == set(ids)
    recomputed = {}
    for agent_id in ids:
        curve = equity[equity["agent_id"] == agent_id].sort_values("timestamp")
        series = pd.Series(curve["equity"].to_numpy(), index=pd.DatetimeIndex(curve["timestamp"]))
        recomputed[agent_id] = compute_metrics(series, trades=trades[trades["agent_id"] == agent_id])[
            "sharpe"
        ]
    expected_order = sorted(ids, key=lambda a: (-recomputed[a], a))
    assert board.sort_values("rank")["agent_id"].tolist() == expected_order
    stored = warehouse.read(METRICS).set_index("agent_id")
    for row in board.itertuples():
        assert math.isclose(row.value, recomputed[row.agent_id], rel_tol=1e-9)
        # The board's all-time Sharpe and the run's own metrics describe the same curve (the run's
        # metrics also count the first bar against the initial cash, hence the loose tolerance).
        assert math.isclose(row.value, stored.loc[row.agent_id, "sharpe"], rel_tol=0.05, abs_tol=0.05)

    returns_board = warehouse.read(
        RANKINGS, where={"board_type": "backtest", "metric": "returns", "timeframe": "all_time"}
    )
    for row in returns_board.itertuples():
        curve = equity[equity["agent_id"] == row.agent_id].sort_values("timestamp")["equity"].to_numpy()
        assert math.isclose(row.value, curve[-1] / curve[0] - 1.0, rel_tol=1e-9)

    # The cache holds the same board, in the replaced platform's field names.
    cached = json.loads(defs.resources["cache"].get(cache_key("backtest", "sharpe", "all_time")))
    assert [e["agentId"] for e in cached["entries"]] == expected_order
    assert 0 < defs.resources["cache"].ttl(cache_key("backtest", "sharpe", "all_time")) <= 30

    # Ticking again requests nothing new.
    again = _tick(defs, instance, result.cursor)
    assert isinstance(again, dg.SkipReason)


def test_sensor_is_exactly_once_across_restarts_and_reads_the_bus(pipeline, settings):
    defs, instance = pipeline
    opstore, objects, bus = defs.resources["opstore"], defs.resources["object_store"], defs.resources["bus"]
    code = (REPO / "examples" / "buy_and_hold.py").read_text()
    request = BacktestRequest(symbols=["SPX"], start="2010-01-01", end="2010-12-31")
    first = submit_agent(opstore, objects, code=code, name="A", user_id="u", request=request)

    tick1 = _tick(defs, instance, None)
    assert [r.partition_key for r in tick1.run_requests] == [first["id"]]
    # A "restarted daemon" resumes from the stored cursor: nothing is requested twice.
    assert isinstance(_tick(defs, instance, tick1.cursor), dg.SkipReason)

    # Finished agent + a re-run request on the bus -> exactly one new run with a new run key.
    opstore.update(AGENTS, first["id"], {"status": AgentStatus.COMPLETED.value})
    bus.ensure_subscription(settings.topic_backtest_requests, "dagster-submission-sensor")
    bus.publish(settings.topic_backtest_requests, {"agent_id": first["id"]})
    bus.publish(settings.topic_backtest_requests, {"agent_id": "does-not-exist"})
    tick2 = _tick(defs, instance, tick1.cursor)
    assert [r.partition_key for r in tick2.run_requests] == [first["id"]]
    assert tick2.run_requests[0].run_key != tick1.run_requests[0].run_key
    assert isinstance(_tick(defs, instance, tick2.cursor), dg.SkipReason)
