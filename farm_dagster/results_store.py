"""Backtest results in the warehouse: ``backtests.metrics``, ``backtests.equity``, ``backtests.trades``,
``backtests.fills`` (plus FMEL rows, written by :mod:`farm_dagster.fmel.writer`).

Every row carries agent id, run id, code hash and data version, so any number on the leaderboard
can be traced to the exact code and data that produced it. Writes replace the rows of the same
(agent, run): re-materializing a partition never duplicates results.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from farm_dagster.resources.base import Warehouse
from farm_dagster.resources.tables import BOOL, FLOAT, INT, STRING, TIMESTAMP, TableSpec, register

IDENTITY = (
    ("agent_id", STRING),
    ("run_id", STRING),
    ("code_hash", STRING),
    ("data_version", STRING),
)

# Metrics kept as columns (the leaderboard ranks on them); every metric is also in metrics_json.
METRIC_COLUMNS = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "max_drawdown_duration_days",
    "calmar",
    "win_rate",
    "profit_factor",
    "n_trades",
    "exposure",
    "turnover",
    "deflated_sharpe",
    "total_pnl",
)

METRICS = register(
    TableSpec(
        name="backtests.metrics",
        columns=(
            *IDENTITY,
            ("user_id", STRING),
            ("agent_name", STRING),
            ("result_id", STRING),
            ("status", STRING),
            ("error", STRING),
            ("symbols", STRING),
            ("window_start", TIMESTAMP),
            ("window_end", TIMESTAMP),
            ("initial_value", FLOAT),
            ("final_value", FLOAT),
            *((name, FLOAT) for name in METRIC_COLUMNS),
            ("winning_trades", INT),
            ("losing_trades", INT),
            ("n_trials", INT),
            ("tamper_suspected", BOOL),
            ("metrics_json", STRING),
            ("finished_at", TIMESTAMP),
        ),
        partition_by="finished_at",
        cluster_by=("agent_id",),
        description="One row per backtest run.",
    )
)

EQUITY = register(
    TableSpec(
        name="backtests.equity",
        columns=(
            *IDENTITY,
            ("timestamp", TIMESTAMP),
            ("cash", FLOAT),
            ("positions_value", FLOAT),
            ("equity", FLOAT),
        ),
        partition_by="timestamp",
        cluster_by=("agent_id", "run_id"),
        description="Equity curve of each run, one row per bar, valued at the bar's close.",
    )
)

TRADES = register(
    TableSpec(
        name="backtests.trades",
        columns=(
            *IDENTITY,
            ("symbol", STRING),
            ("direction", STRING),
            ("entry_time", TIMESTAMP),
            ("exit_time", TIMESTAMP),
            ("quantity", FLOAT),
            ("entry_price", FLOAT),
            ("exit_price", FLOAT),
            ("pnl", FLOAT),
            ("return_pct", FLOAT),
            ("status", STRING),
        ),
        partition_by="entry_time",
        cluster_by=("agent_id", "symbol"),
        description="Round-trip trades; status 'open' = still held at the end, P&L marked at the last close.",
    )
)

FILLS = register(
    TableSpec(
        name="backtests.fills",
        columns=(
            *IDENTITY,
            ("order_id", STRING),
            ("decision_id", STRING),
            ("timestamp", TIMESTAMP),
            ("symbol", STRING),
            ("side", STRING),
            ("quantity", FLOAT),
            ("price", FLOAT),
            ("commission", FLOAT),
            ("slippage_cost", FLOAT),
        ),
        partition_by="timestamp",
        cluster_by=("agent_id", "symbol"),
        description="Every fill of every run, at the price the trusted broker filled it.",
    )
)


def _with_identity(frame: pd.DataFrame, identity: dict[str, str]) -> pd.DataFrame:
    out = frame.copy()
    for key, value in identity.items():
        out[key] = value
    return out


def write_run_tables(
    warehouse: Warehouse,
    *,
    identity: dict[str, str],
    metrics_row: dict[str, Any],
    equity: pd.DataFrame,
    trades: pd.DataFrame,
    fills: pd.DataFrame,
) -> dict[str, int]:
    """Write one run's rows to the four tables (idempotent per agent and run). Returns row counts."""
    key = {"agent_id": identity["agent_id"], "run_id": identity["run_id"]}
    metrics_frame = pd.DataFrame([{**identity, **metrics_row}])
    for name in METRIC_COLUMNS:
        if name not in metrics_frame:
            metrics_frame[name] = float("nan")
    counts = {
        "equity": warehouse.write(EQUITY, _with_identity(equity, identity), replace_where=key),
        "trades": warehouse.write(TRADES, _with_identity(trades, identity), replace_where=key),
        "fills": warehouse.write(FILLS, _with_identity(fills, identity), replace_where=key),
        # Metrics last: a reader that sees the metrics row can rely on the curve being there.
        "metrics": warehouse.write(METRICS, metrics_frame, replace_where=key),
    }
    return counts


def latest_runs(warehouse: Warehouse) -> pd.DataFrame:
    """The newest completed run of every agent (what the leaderboard ranks)."""
    if not warehouse.table_exists(METRICS):
        return pd.DataFrame(columns=METRICS.column_names)
    return warehouse.query(
        """
        SELECT * FROM (
            SELECT *, ROW_NUMBER() OVER (PARTITION BY agent_id ORDER BY finished_at DESC, run_id DESC) AS rn
            FROM {backtests.metrics}
            WHERE status = 'completed'
        ) WHERE rn = 1
        """
    ).drop(columns=["rn"])
