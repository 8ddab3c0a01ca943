"""The code location loads the way `dagster dev` loads it, with the lineage the UI must show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from farm_dagster.definitions import build_definitions

REPO = Path(__file__).resolve().parent.parent


def test_lineage_market_data_to_leaderboard(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    key = dg.AssetKey
    assert key("market_data_ohlcv") in graph.get(key("agent_backtest")).parent_keys
    assert key("agent_backtest") in graph.get(key("fmel_analytics")).parent_keys
    assert {key("agent_backtest"), key("fmel_analytics")} <= graph.get(key("leaderboard")).parent_keys
    backtest = graph.get(key("agent_backtest"))
    assert isinstance(backtest.partitions_def, dg.DynamicPartitionsDefinition)
    assert backtest.partitions_def.name == "agents"
    checks = {c.name for c in graph.asset_check_keys if c.asset_key == key("agent_backtest")}
    assert checks == {"equity_never_nan", "fills_within_bar_range", "cash_positions_reconcile"}


def test_jobs_sensors_and_schedule_are_registered(settings):
    defs = build_definitions(settings)
    for job in ("market_data_job", "backtest_agent_job", "refresh_leaderboard_job"):
        assert defs.resolve_job_def(job).name == job
    assert defs.resolve_sensor_def("agent_submission_sensor").job_name == "backtest_agent_job"
    assert defs.resolve_sensor_def("leaderboard_after_backtest")
    assert defs.resolve_schedule_def("leaderboard_schedule").job_name == "refresh_leaderboard_job"


def test_workspace_validates_with_the_dagster_cli(settings, tmp_path):
    """`dagster definitions validate -w workspace.yaml`, exactly as the README says (a subprocess)."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "dagster-home")}
    (tmp_path / "dagster-home").mkdir()
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Validation successful for code location farm" in done.stdout + done.stderr


@pytest.mark.slow
def test_dagster_ui_serves_the_lineage(settings, tmp_path):
    """The webserver `farm ui` runs (dagster-webserver on workspace.yaml) lists the assets and their lineage."""
    import json
    import time
    import urllib.request

    from farm_dagster.local_services import background_process, free_port

    port = free_port()
    home = tmp_path / "dagster-home"
    home.mkdir()
    webserver = Path(sys.executable).with_name("dagster-webserver")
    query = json.dumps({"query": "{ assetNodes { assetKey { path } groupName dependencyKeys { path } } }"})
    nodes = None
    with background_process(
        [str(webserver), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        log_path=tmp_path / "webserver.log",
    ):
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and nodes is None:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=query.encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    payload = json.loads(response.read())
                nodes = payload["data"]["assetNodes"] or None
            except (OSError, KeyError, TypeError, ValueError):
                time.sleep(1)
        assert nodes, (tmp_path / "webserver.log").read_text()[-3000:]
        deps = {
            "/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes
        }
        groups = {"/".join(n["assetKey"]["path"]): n["groupName"] for n in nodes}
        assert groups["market_data_ohlcv"] == "market_data"
        assert "market_data_ohlcv" in deps["agent_backtest"]
        assert "agent_backtest" in deps["fmel_analytics"]
        assert {"agent_backtest", "fmel_analytics"} <= deps["leaderboard"]
