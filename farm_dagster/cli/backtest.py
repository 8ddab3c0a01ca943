"""`farm backtest AGENT.py --symbols ... --start ... --end ...`: one command from file to metrics.

Data comes from the warehouse (``market_data.ohlcv``) when it holds the symbols, otherwise straight
from the real sources shipped with the project, so a newcomer needs no setup step.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from farm_dagster.cli import app
from farm_dagster.engine.costs import BacktestSettings, CostModel
from farm_dagster.engine.result import BacktestResult
from farm_dagster.market_data.panel import BarPanel, utc_timestamp

console = Console()

# How each metric is shown: (label, format).
_METRICS: tuple[tuple[str, str, str], ...] = (
    ("total_return", "Total return", "pct"),
    ("cagr", "CAGR", "pct"),
    ("volatility", "Volatility (ann.)", "pct"),
    ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"),
    ("max_drawdown", "Max drawdown", "pct"),
    ("max_drawdown_duration_days", "Max drawdown duration (days)", "int"),
    ("calmar", "Calmar", "num"),
    ("win_rate", "Win rate", "pct"),
    ("profit_factor", "Profit factor", "num"),
    ("n_trades", "Trades", "int"),
    ("exposure", "Exposure", "pct"),
    ("turnover", "Turnover (per year)", "num"),
    ("deflated_sharpe", "Deflated Sharpe (prob.)", "num"),
)


def _fmt(value: float | None, kind: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "int":
        return f"{value:,.0f}"
    return f"{value:.3f}"


def _parse_params(items: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"--param expects name=value, got {item!r}")
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        params[name.strip()] = value
    return params


def _day(option: str, value: str | None) -> pd.Timestamp | None:
    """A window bound given on the command line; a message naming the option when it is no date."""
    if value is None:
        return None
    try:
        return utc_timestamp(value)
    except ValueError as exc:
        raise ValueError(f"{option} {value!r} is not a date ({exc}); use YYYY-MM-DD") from None


def load_bars(symbols: list[str], start: str | None, end: str | None) -> tuple[BarPanel, str]:
    """(panel, where it came from): the warehouse first, the real sources as the fallback."""
    warehouse_error = ""
    try:
        from farm_dagster.market_data.store import load_panel
        from farm_dagster.resources.factory import build_resources

        warehouse = build_resources()["warehouse"]
        return load_panel(warehouse, symbols, start, end), "warehouse market_data.ohlcv"
    except Exception as exc:  # noqa: BLE001 - any warehouse problem falls back to the shipped data
        warehouse_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    from farm_dagster.market_data.sources import load_real_ohlcv

    frame = load_real_ohlcv()
    known = set(frame["symbol"])
    missing = [s for s in symbols if s not in known]
    if missing:
        raise ValueError(
            f"unknown symbol(s) {', '.join(missing)}; real symbols: {', '.join(sorted(known))}"
            + (f" (warehouse: {warehouse_error})" if warehouse_error else "")
        )
    frame = frame[frame["symbol"].isin(symbols)]
    panel = BarPanel.from_long(frame, symbols=symbols).slice(start, end)
    if panel.n_bars == 0:
        raise ValueError(f"no bars for {', '.join(symbols)} between {start or '-inf'} and {end or '+inf'}")
    return panel, "real sources shipped with the project"


def print_result(result: BacktestResult, filename: str) -> None:
    table = Table(title=f"{filename}: {', '.join(result.symbols)}", show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label, kind in _METRICS:
        if key in result.metrics:
            table.add_row(label, _fmt(result.metrics[key], kind))
    if len(result.equity):
        table.add_row("Final equity", f"{result.equity['equity'].iloc[-1]:,.2f}")
    table.add_row("Bars", f"{len(result.equity):,}")
    table.add_row("Fills", f"{len(result.fills):,}")
    table.add_row("Decisions (FMEL rows)", f"{len(result.decisions):,}")
    table.add_row("Bars per second", f"{result.timings.get('bars_per_s', 0.0):,.0f}")
    console.print(table)
    console.print(
        f"result_id {result.result_id[:16]}  code {result.code_hash[:12]}  data {result.data_version}"
    )


@app.command("backtest")
def backtest(
    agent_file: Path = typer.Argument(..., help="the agent's Python file", exists=True, dir_okay=False),
    symbols: str = typer.Option(..., "--symbols", "-s", help="comma-separated symbols, e.g. AAPL,MSFT"),
    start: str = typer.Option(None, "--start", help="first day (inclusive), e.g. 2005-01-01"),
    end: str = typer.Option(None, "--end", help="last day (inclusive), e.g. 2012-12-31"),
    cash: float = typer.Option(100_000.0, "--cash", help="initial cash"),
    commission_bps: float = typer.Option(
        0.0, "--commission-bps", help="commission, basis points of notional"
    ),
    commission_per_share: float = typer.Option(0.0, "--commission-per-share", help="commission per share"),
    min_commission: float = typer.Option(0.0, "--min-commission", help="minimum commission per fill"),
    slippage_bps: float = typer.Option(0.0, "--slippage-bps", help="slippage, basis points of price"),
    allow_short: bool = typer.Option(False, "--allow-short", help="allow short positions"),
    param: list[str] = typer.Option([], "--param", "-p", help="override a declared parameter: name=value"),
) -> None:
    """Backtest an agent file on historical bars and print its metrics."""
    from farm_dagster.engine.runner import run_backtest, validate

    filename = agent_file.name
    code = agent_file.read_text(encoding="utf-8")
    _, rejection = validate(code, filename)
    if rejection is not None:
        for line in rejection.user_traceback:
            typer.echo(line, err=True)
        raise typer.Exit(2)
    wanted = [s.strip() for s in symbols.split(",") if s.strip()]
    try:
        settings = BacktestSettings(
            initial_cash=cash,
            costs=CostModel(
                commission_pct=commission_bps / 10_000,
                commission_per_share=commission_per_share,
                min_commission=min_commission,
                slippage_bps=slippage_bps,
            ),
            allow_short=allow_short,
            params=_parse_params(param),
        )
        first, last = _day("--start", start), _day("--end", end)
        if first is not None and last is not None and first > last:
            raise ValueError(f"--start {start} is after --end {end}")
        with console.status("loading bars"):
            panel, origin = load_bars(wanted, start, end)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    console.print(f"{panel.n_bars:,} bars x {panel.n_symbols} symbol(s) from the {origin}")
    with Progress(
        TextColumn("[bold]backtest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("bars"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("bars", total=panel.n_bars)
        result = run_backtest(
            code,
            panel,
            settings,
            agent_id=agent_file.stem,
            run_id=f"cli-{uuid.uuid4().hex[:12]}",
            filename=filename,
            progress=lambda done, _total: progress.update(task, completed=done),
        )
    if result.status != "completed":
        error = result.error
        typer.echo(f"run {result.status}: " + (error.render(filename) if error else ""), err=True)
        for line in (error.user_traceback if error else [])[-10:]:
            typer.echo("  " + line, err=True)
        if len(result.equity):
            typer.echo(f"{len(result.decisions):,} decisions before the failure were kept", err=True)
        raise typer.Exit(1)
    if result.tamper_suspected:
        typer.echo(
            "warning: the agent's own view of its account diverged (tamper_suspected); "
            "reported numbers are the engine's",
            err=True,
        )
    print_result(result, filename)
