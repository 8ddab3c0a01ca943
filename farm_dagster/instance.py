"""The local Dagster instance under the data home, shared by `farm demo`, `farm ui` and the tests.

Why a persistent instance: runs launched by the demo show up in the UI started afterwards
(`farm ui`), with their logs, asset materializations and checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from farm_dagster.settings import FarmSettings

# Local profile: two runs at a time (2 cores), and one writer at a time in the DuckDB pool.
LOCAL_DAGSTER_YAML = """\
# Written by farm_dagster/instance.py for the local profile. The gcp profile uses k8s/dagster-instance-gcp.yaml.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1  # a freed slot takes the next queued backtest within a second
concurrency:
  runs:
    max_concurrent_runs: 2
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def ensure_dagster_home(settings: FarmSettings) -> Path:
    """Create DAGSTER_HOME (with its dagster.yaml) under the data home and export it."""
    home = Path(os.environ.get("DAGSTER_HOME") or settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(LOCAL_DAGSTER_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def local_instance(settings: FarmSettings) -> dg.DagsterInstance:
    ensure_dagster_home(settings)
    return dg.DagsterInstance.get()
