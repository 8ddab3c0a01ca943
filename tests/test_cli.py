"""The `farm` commands as a user runs them: main job, backtest of a newcomer's file, backfill."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm_dagster.agents import AGENTS
from farm_dagster.cli import app
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


@pytest.mark.slow
def test_demo_then_backfill_over_a_new_window(settings):
    demo = runner.invoke(app, ["demo"])
    assert demo.exit_code == 0, demo.output
    assert re.search(r"market_data\.ohlcv: (\d+) symbols", demo.output)
    assert int(re.search(r"market_data\.ohlcv: (\d+) symbols", demo.output).group(1)) >= 27
    assert "Leaderboard: backtest / sharpe / all_time" in demo.output
    assert demo.output.count("FMEL ") == 5

    warehouse = build_resources(settings)["warehouse"]
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
