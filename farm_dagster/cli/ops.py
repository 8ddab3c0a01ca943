"""Operator commands: `farm ui` (Dagster UI + daemon on the local data) and `farm backfill`."""

from __future__ import annotations

import os
import shutil
import sys

import typer
from rich.console import Console

from farm_dagster import PROJECT_ROOT
from farm_dagster.agents import AGENTS, BacktestRequest
from farm_dagster.cli import app
from farm_dagster.instance import ensure_dagster_home
from farm_dagster.settings import get_settings

console = Console()


def _dagster_bin(name: str) -> str:
    local = os.path.join(os.path.dirname(sys.executable), name)
    return local if os.path.exists(local) else (shutil.which(name) or name)


@app.command()
def ui(
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(3000, help="Port of the Dagster UI."),
) -> None:
    """Start the Dagster UI and daemon (`dagster dev`) on the local data home."""
    home = ensure_dagster_home(get_settings())
    console.print(f"DAGSTER_HOME={home}; UI at http://{host}:{port}")
    os.chdir(PROJECT_ROOT)
    os.execv(
        _dagster_bin("dagster"),
        ["dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", host, "-p", str(port)],
    )


@app.command()
def backfill(
    start: str | None = typer.Option(None, help="New window start (YYYY-MM-DD) for every agent."),
    end: str | None = typer.Option(None, help="New window end (YYYY-MM-DD) for every agent."),
    in_process: bool = typer.Option(
        False,
        "--in-process",
        help="Run the partitions here, one after another, instead of queueing a backfill.",
    ),
) -> None:
    """Re-run every agent partition (a new window and/or the current data version).

    By default this submits a Dagster backfill of `backtest_agent_job` over all `agents` partitions;
    the daemon started by `farm ui` executes it and the UI shows its progress.
    """
    import subprocess

    from farm_dagster.resources.factory import build_resources

    settings = get_settings()
    home = ensure_dagster_home(settings)
    opstore = build_resources(settings)["opstore"]
    agents = opstore.query(AGENTS)
    if start or end:
        for doc in agents:
            request = dict(doc["request"])
            request.update({k: v for k, v in (("start", start), ("end", end)) if v})
            opstore.update(
                AGENTS, doc["id"], {"request": BacktestRequest.model_validate(request).model_dump()}
            )
        console.print(
            f"window set to {start or '(unchanged)'}..{end or '(unchanged)'} for {len(agents)} agents"
        )
    if in_process:
        from farm_dagster.definitions import build_definitions
        from farm_dagster.instance import local_instance

        instance = local_instance(settings)
        job = build_definitions(settings).resolve_job_def("backtest_agent_job")
        keys = instance.get_dynamic_partitions("agents")
        failed = 0
        for key in keys:
            ok = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False).success
            failed += not ok
            console.print(f"{key}: {'[green]ok' if ok else '[red]failed'}")
        raise typer.Exit(1 if failed else 0)
    cmd = [
        _dagster_bin("dagster"),
        "job",
        "backfill",
        "-w",
        str(PROJECT_ROOT / "workspace.yaml"),
        "-j",
        "backtest_agent_job",
        "--all",
        "yes",
        "--noprompt",
    ]
    console.print(f"DAGSTER_HOME={home}\n$ {' '.join(cmd)}")
    raise typer.Exit(subprocess.call(cmd, cwd=PROJECT_ROOT, env={**os.environ, "DAGSTER_HOME": str(home)}))
