"""The `farm` commands as a user runs them: main job, backtest of a newcomer's file, backfill."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm_dagster.agents import AGENTS
from farm_dagster.cli import app
from farm_dagster.fmel.analytics import DECISION_COUNTS
from farm_dagster.leaderboard import RANKINGS
from farm_dagster.resources.factory import build_resources
from farm_dagster.results_store import METRICS

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _readme_agent() -> str:
    """The first agent of the README's SDK page, exactly as a newcomer would copy it."""
    text = (REPO / "README.md").read_text()
    match = re.search(r"Save this as `my_agent.py`:\n\n```python\n(.*?)```", text, re.S)
    assert match, "the README's SDK page lost its first agent"
    return match.group(1)


def test_backtest_a_newcomers_agent_prints_metrics(settings, tmp_path):
    agent = tmp_path / "my_agent.py"
    agent.write_text(_readme_agent())
    result = runner.invoke(
        app, ["backtest", str(agent), "--symbols", "AAPL", "--start", "2005-01-01", "--end", "2008-12-31"]
    )
    assert result.exit_code == 0, result.output
    for label in ("Total return", "Sharpe", "Max drawdown", "Deflated Sharpe", "Trades"):
        assert label in result.output


def test_backtest_rejects_bad_code_with_file_and_line(settings, tmp_path):
    agent = tmp_path / "bad_agent.py"
    agent.write_text(_readme_agent().replace("from farm_dagster.sdk", "import os\nfrom farm_dagster.sdk"))
    result = runner.invoke(
        app, ["backtest", str(agent), "--symbols", "AAPL", "--start", "2005-01-01", "--end", "2006-12-31"]
    )
    assert result.exit_code == 2, result.output
    assert "bad_agent.py:1: forbidden-import" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2011-01-01", "2010-01-01", "--start 2011-01-01 is after --end 2010-01-01"),
        ("2010-13-01", "2011-01-01", "--start '2010-13-01' is not a date"),
        ("2010-01-01", "soon", "--end 'soon' is not a date"),
    ],
)
def test_backtest_names_the_bad_window_bound(settings, tmp_path, start, end, message):
    agent = tmp_path / "my_agent.py"
    agent.write_text(_readme_agent())
    result = runner.invoke(app, ["backtest", str(agent), "--symbols", "AAPL", "--start", start, "--end", end])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_demo_then_backfill_over_a_new_window(settings):
    demo = runner.invoke(app, ["demo"])
    assert demo.exit_code == 0, demo.output
    assert re.search(r"market_data\.ohlcv: (\d+) symbols", demo.output)
    assert int(re.search(r"market_data\.ohlcv: (\d+) symbols", demo.output).group(1)) >= 27
    assert "Leaderboard: backtest / sharpe / all_time" in demo.output
    assert "FMEL: decisions, and outcome by confidence" in demo.output
    agent_ids = [doc["id"] for doc in build_resources(settings)["opstore"].query(AGENTS)]
    assert len(agent_ids) == 5
    # What the two printed tables are read from: every agent ranked, every agent summarized.
    warehouse = build_resources(settings)["warehouse"]
    board = warehouse.read(
        RANKINGS, where={"board_type": "backtest", "metric": "sharpe", "timeframe": "all_time"}
    )
    assert set(board["agent_id"]) == set(agent_ids)
    assert set(agent_ids) <= set(warehouse.read(DECISION_COUNTS)["scope"])

    before = warehouse.read(METRICS)
    backfill = runner.invoke(
        app, ["backfill", "--in-process", "--start", "2006-01-01", "--end", "2010-12-31"]
    )
    assert backfill.exit_code == 0, backfill.output
    after = warehouse.read(METRICS)
    agents = build_resources(settings)["opstore"].query(AGENTS)
    assert len(after) == len(before) + len(agents)  # one new run per agent partition
    newest = after.sort_values("finished_at").groupby("agent_id").tail(1)
    assert (newest["window_start"] >= "2006-01-01").all()
    assert (newest["window_end"] <= "2010-12-31 23:59:59+00:00").all()
    assert set(newest["status"]) == {"completed"}


@pytest.mark.slow
def test_backfill_through_the_dagster_daemon(settings, tmp_path):
    """`farm backfill` submits a real Dagster backfill; the daemon (as `farm ui` runs it) executes it."""
    import os
    import sys
    import time

    import dagster as dg

    from farm_dagster.instance import ensure_dagster_home
    from farm_dagster.local_services import background_process

    demo = runner.invoke(app, ["demo"])
    assert demo.exit_code == 0, demo.output
    home = ensure_dagster_home(settings)
    daemon_bin = Path(sys.executable).with_name("dagster-daemon")
    log = tmp_path / "daemon.log"
    with background_process(
        [str(daemon_bin), "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        log_path=log,
    ):
        backfill = runner.invoke(app, ["backfill", "--start", "2007-01-01", "--end", "2009-12-31"])
        assert backfill.exit_code == 0, backfill.output
        instance = dg.DagsterInstance.get()
        [job_backfill] = instance.get_backfills()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            runs = instance.get_runs(
                filters=dg.RunsFilter(tags={"dagster/backfill": job_backfill.backfill_id})
            )
            if len(runs) == 5 and all(r.is_finished for r in runs):
                break
            time.sleep(2)
        assert len(runs) == 5, log.read_text()[-3000:]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [r.status for r in runs]
        assert {r.tags["dagster/partition"] for r in runs} == set(instance.get_dynamic_partitions("agents"))
        newest = build_resources(settings)["warehouse"].read(METRICS).sort_values("finished_at")
        newest = newest.groupby("agent_id").tail(1)
        assert (newest["window_end"] <= "2009-12-31 23:59:59+00:00").all()
