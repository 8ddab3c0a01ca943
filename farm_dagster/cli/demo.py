"""`farm demo`: the main job on the embedded default profile, end to end through Dagster.

1. load the real market data (Dagster job ``market_data_job``, asset checks included);
2. submit the example agents (operational store + object store, status ``submitted``);
3. tick the submission sensor and run every backtest it requests (``backtest_agent_job``);
4. refresh FMEL analytics and the leaderboards (``refresh_leaderboard_job``);
5. print the market-data summary, the leaderboard and each agent's FMEL summary.

Runs are recorded in the persistent Dagster instance under the data home, so `farm ui` shows them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from farm_dagster import PROJECT_ROOT
from farm_dagster.agents import BacktestRequest, submit_agent
from farm_dagster.cli import app
from farm_dagster.instance import local_instance
from farm_dagster.settings import SettingsError, get_settings

console = Console()
# Dagster's console logger at WARNING: the demo shows progress bars; full logs are in `farm ui`.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class ExampleAgent:
    file: str
    name: str
    symbols: tuple[str, ...]
    start: str
    end: str


# The example agents and the real data each one is backtested on (see README "Market data").
EXAMPLES: tuple[ExampleAgent, ...] = (
    ExampleAgent(
        "ma_crossover.py", "MA crossover 10/30", ("AAPL", "MSFT", "IBM", "GOOG"), "2005-01-01", "2012-12-31"
    ),
    ExampleAgent("rsi_mean_reversion.py", "RSI mean reversion", ("SPX", "COMP"), "2003-01-01", "2018-12-31"),
    ExampleAgent(
        "momentum_rotation.py",
        "Momentum rotation top 5",
        (
            "AMD",
            "BAC",
            "BBY",
            "CVX",
            "GE",
            "HD",
            "JNJ",
            "JPM",
            "KO",
            "LLY",
            "MRK",
            "PEP",
            "PFE",
            "PG",
            "RRC",
            "UNH",
            "WMT",
            "XOM",
            "AAPL.ADJ",
            "MSFT.ADJ",
        ),
        "2003-01-01",
        "2018-12-31",
    ),
    ExampleAgent("buy_and_hold.py", "Buy and hold S&P 500", ("SPX",), "2003-01-01", "2018-12-31"),
    ExampleAgent("bt_sma_crossover.py", "Backtrader SMA crossover", ("AAPL",), "2005-01-01", "2012-12-31"),
)


def _defs() -> dg.Definitions:
    from farm_dagster.definitions import build_definitions

    return build_definitions(get_settings())


def _load_market_data(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    with console.status("Loading the real market data through Dagster (market_data_job)..."):
        result = defs.resolve_job_def("market_data_job").execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET
        )
    if not result.success:
        raise typer.Exit(_fail("market_data_job failed; see `farm ui` for the run's logs"))
    failed_checks = [
        evt.asset_check_evaluation_data
        for evt in result.all_events
        if evt.event_type_value == "ASSET_CHECK_EVALUATION" and not evt.asset_check_evaluation_data.passed
    ]
    for check in failed_checks:
        console.print(f"[yellow]check {check.check_name} did not pass[/]: {check.metadata}")


def _print_market_summary(defs: dg.Definitions) -> None:
    from farm_dagster.market_data.store import summary

    frame = summary(defs.resources["warehouse"])
    table = Table(title=f"market_data.ohlcv: {len(frame)} symbols, {int(frame['rows'].sum()):,} rows")
    for col in ("symbol", "rows", "first", "last", "source", "close_only"):
        table.add_column(col, justify="right" if col == "rows" else "left", no_wrap=True)
    for row in frame.itertuples(index=False):
        table.add_row(
            row.symbol,
            f"{int(row.rows):,}",
            pd.Timestamp(row.first).date().isoformat(),
            pd.Timestamp(row.last).date().isoformat(),
            str(row.source).split(" (")[0],
            "yes" if row.close_only else "",
        )
    console.print(table)


def _submit_examples(defs: dg.Definitions, examples_dir: Path) -> list[str]:
    resources = defs.resources
    ids = []
    for example in EXAMPLES:
        code = (examples_dir / example.file).read_text()
        doc = submit_agent(
            resources["opstore"],
            resources["object_store"],
            code=code,
            name=example.name,
            user_id="demo",
            filename=example.file,
            request=BacktestRequest(symbols=list(example.symbols), start=example.start, end=example.end),
        )
        ids.append(doc["id"])
    return ids


def _run_backtests(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[tuple[str, bool, float]]:
    from sensors.submissions import agent_submission_sensor

    resources = defs.resources
    context = dg.build_sensor_context(
        instance=instance, cursor=None, resources={k: resources[k] for k in ("opstore", "bus")}
    )
    result = agent_submission_sensor(context)
    if isinstance(result, dg.SkipReason):
        return []
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    job = defs.resolve_job_def("backtest_agent_job")
    outcomes = []
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        overall = progress.add_task("backtests", total=len(result.run_requests))
        for request in result.run_requests:
            task = progress.add_task(f"  {request.partition_key}", total=1)
            started = time.perf_counter()
            run = job.execute_in_process(
                instance=instance,
                partition_key=request.partition_key,
                tags=request.tags,
                raise_on_error=False,
                run_config=QUIET,
            )
            elapsed = time.perf_counter() - started
            progress.update(
                task,
                completed=1,
                description=f"  {request.partition_key} {'[green]done' if run.success else '[red]failed'}",
            )
            progress.advance(overall)
            outcomes.append((request.partition_key, run.success, elapsed))
    return outcomes


def _print_leaderboard_and_fmel(defs: dg.Definitions) -> None:
    from farm_dagster.fmel.analytics import BUCKET_LABELS, CONFIDENCE_OUTCOMES, DECISION_COUNTS
    from farm_dagster.leaderboard import RANKINGS
    from farm_dagster.results_store import latest_runs

    warehouse = defs.resources["warehouse"]
    runs = latest_runs(warehouse).set_index("agent_id")
    boards = warehouse.read(
        RANKINGS, where={"board_type": "backtest", "metric": "sharpe", "timeframe": "all_time"}
    )
    table = Table(title="Leaderboard: backtest / sharpe / all_time")
    for col in ("rank", "agent", "sharpe", "deflated sharpe", "total return", "max drawdown", "trades"):
        table.add_column(col, justify="left" if col == "agent" else "right")
    for row in boards.sort_values("rank").itertuples(index=False):
        run = runs.loc[row.agent_id]
        table.add_row(
            str(row.rank),
            f"{row.agent_name} ({row.agent_id})",
            f"{row.value:.2f}",
            f"{run.deflated_sharpe:.2f}",
            f"{run.total_return:+.1%}",
            f"{run.max_drawdown:.1%}",
            f"{int(run.n_trades) if pd.notna(run.n_trades) else 0}",
        )
    console.print(table)
    counts = warehouse.read(DECISION_COUNTS)
    outcomes = warehouse.read(CONFIDENCE_OUTCOMES)
    fmel = Table(title="FMEL: decisions, and outcome by confidence (hit rate / mean 5-bar forward return, n)")
    fmel.add_column("agent")
    for action in ("BUY", "SELL", "HOLD"):
        fmel.add_column(action, justify="right")
    for label in BUCKET_LABELS:
        fmel.add_column(f"conf {label}", justify="right")
    for agent_id in runs.index:
        mine = counts[counts["scope"] == agent_id].groupby("action")["n"].sum()
        calib = outcomes[outcomes["scope"] == agent_id].set_index("bucket")
        cells = []
        for label in BUCKET_LABELS:
            row = calib.loc[label] if label in calib.index else None
            scored = int(row["n_scored"]) if row is not None else 0
            cells.append(
                f"{row['hit_rate']:.0%} / {row['mean_forward_return']:+.2%} ({scored})" if scored else ""
            )
        fmel.add_row(
            f"FMEL {agent_id}",
            *(f"{int(mine.get(action, 0)):,}" for action in ("BUY", "SELL", "HOLD")),
            *cells,
        )
    console.print(fmel)


def _fail(message: str) -> int:
    console.print(f"[red]error:[/] {message}")
    return 1


@app.command()
def demo(
    data_only: bool = typer.Option(False, "--data-only", help="Only load and summarize the market data."),
    examples_dir: Path = typer.Option(PROJECT_ROOT / "examples", help="Folder with the example agents."),
) -> None:
    """Load the market data, backtest the example agents through Dagster, print the leaderboard."""
    try:
        settings = get_settings()
    except SettingsError as exc:
        raise typer.Exit(_fail(str(exc))) from None
    instance = local_instance(settings)
    defs = _defs()
    console.print(f"data home: {settings.home_dir}   profile: {settings.profile.value}")
    if not defs.resources["cache"].ping():
        console.print(
            f"[yellow]Redis at {settings.redis_url} is not reachable[/]: the demo still runs; leaderboards go to "
            "the warehouse but not to the cache, and the bus is skipped. Start redis-server or set FARM_REDIS_URL."
        )
    _load_market_data(defs, instance)
    _print_market_summary(defs)
    if data_only:
        return
    ids = _submit_examples(defs, examples_dir)
    console.print(f"submitted {len(ids)} example agents: {', '.join(ids)}")
    outcomes = _run_backtests(defs, instance)
    failed = [agent for agent, ok, _ in outcomes if not ok]
    with console.status("Refreshing FMEL analytics and the leaderboard (refresh_leaderboard_job)..."):
        refresh = defs.resolve_job_def("refresh_leaderboard_job").execute_in_process(
            instance=instance, run_config=QUIET
        )
    if not refresh.success:
        raise typer.Exit(_fail("refresh_leaderboard_job failed; see `farm ui`"))
    _print_leaderboard_and_fmel(defs)
    if failed:
        console.print(f"[red]{len(failed)} backtest(s) failed:[/] {', '.join(failed)}")
        raise typer.Exit(1)
    console.print("Open the Dagster UI on the same data: [bold]farm ui[/] (then http://127.0.0.1:3000)")
