"""Leaderboards: rank agents by a metric over a timeframe, per board type.

Boards are keyed ``leaderboard:{type}:{metric}:{timeframe}`` in the cache (30 s TTL) and stored as
rows of ``leaderboard.rankings``. Each timeframe is measured on the window ending at the latest
bar of the agent's equity curve: ``daily`` = the last bar's change, ``weekly`` = the last 7
calendar days, ``monthly`` = the last 30, ``all_time`` = the whole run. Every metric ranks
descending (higher is better; ``max_drawdown`` is <= 0, so closer to zero ranks first). An agent
whose metric is undefined on a window (NaN: e.g. a Sharpe on one bar) is left off that board
rather than ranked on a made-up number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from farm_dagster.metrics import compute_metrics
from farm_dagster.resources.base import Cache
from farm_dagster.resources.tables import FLOAT, INT, STRING, TIMESTAMP, TableSpec, register

BOARD_TYPES = ("backtest", "paper_trading")
# The replaced platform's metrics first (its clients ask for them), then our additions.
BOARD_METRICS = (
    "returns",
    "sharpe",
    "win_rate",
    "total_pnl",
    "sortino",
    "max_drawdown",
    "calmar",
    "deflated_sharpe",
)
TIMEFRAMES = {
    "daily": None,
    "weekly": pd.Timedelta(days=7),
    "monthly": pd.Timedelta(days=30),
    "all_time": None,
}
CACHE_TTL_SECONDS = 30
_METRIC_SOURCE = {"returns": "total_return"}  # board metric name -> compute_metrics key

RANKINGS = register(
    TableSpec(
        name="leaderboard.rankings",
        columns=(
            ("board_type", STRING),
            ("metric", STRING),
            ("timeframe", STRING),
            ("rank", INT),
            ("agent_id", STRING),
            ("agent_name", STRING),
            ("user_id", STRING),
            ("value", FLOAT),
            ("run_id", STRING),
            ("window_start", TIMESTAMP),
            ("window_end", TIMESTAMP),
            ("updated_at", TIMESTAMP),
        ),
        partition_by="updated_at",
        cluster_by=("board_type", "metric", "timeframe"),
        description="Current rankings; the table holds the latest refresh only.",
    )
)


def cache_key(board_type: str, metric: str, timeframe: str) -> str:
    return f"leaderboard:{board_type}:{metric}:{timeframe}"


def window(equity: pd.Series, timeframe: str) -> pd.Series:
    """The part of an equity curve a timeframe measures (ending at its latest bar)."""
    if timeframe not in TIMEFRAMES:
        raise ValueError(f"unknown timeframe {timeframe!r}; one of {', '.join(TIMEFRAMES)}")
    if equity.empty or timeframe == "all_time":
        return equity
    if timeframe == "daily":
        return equity.iloc[-2:]
    span = TIMEFRAMES[timeframe]
    start = equity.index[-1] - span
    # Include the last bar at or before the window start, so the first bar's change is counted.
    first = max(int(equity.index.searchsorted(start, side="right")) - 1, 0)
    return equity.iloc[first:]


def window_metrics(
    equity: pd.Series, trades: pd.DataFrame, timeframe: str, n_trials: int
) -> dict[str, float]:
    part = window(equity, timeframe)
    if len(part) < 2:
        return {}
    closed = trades[trades["status"] == "closed"] if "status" in trades else trades
    if len(closed):
        exits = pd.to_datetime(closed["exit_time"], utc=True)
        closed = closed[(exits > part.index[0]) & (exits <= part.index[-1])]
    return compute_metrics(part, trades=closed, n_trials=max(int(n_trials), 1))


def rank_board(values: Iterable[tuple[dict[str, Any], float]]) -> list[dict[str, Any]]:
    """Sort (agent, value) pairs best first; ties broken by agent id so boards are deterministic."""
    finite = [(agent, float(v)) for agent, v in values if v is not None and math.isfinite(float(v))]
    finite.sort(key=lambda pair: (-pair[1], pair[0]["agent_id"]))
    return [{**agent, "rank": i + 1, "value": value} for i, (agent, value) in enumerate(finite)]


def build_rankings(
    runs: pd.DataFrame, equity: pd.DataFrame, trades: pd.DataFrame, board_type: str = "backtest"
) -> pd.DataFrame:
    """Every (metric, timeframe) board of one board type as rows of ``leaderboard.rankings``.

    runs: one row per agent (agent_id, run_id, agent_name, user_id, n_trials); equity and trades:
    the stored rows of those runs.
    """
    updated_at = pd.Timestamp(datetime.now(UTC))
    rows: list[dict[str, Any]] = []
    per_agent: dict[str, dict[str, dict[str, float]]] = {}
    windows: dict[tuple[str, str], tuple[Any, Any]] = {}
    for run in runs.itertuples(index=False):
        curve = equity[(equity["agent_id"] == run.agent_id) & (equity["run_id"] == run.run_id)]
        series = pd.Series(
            curve["equity"].to_numpy(dtype=float),
            index=pd.DatetimeIndex(pd.to_datetime(curve["timestamp"], utc=True)),
        ).sort_index()
        agent_trades = trades[(trades["agent_id"] == run.agent_id) & (trades["run_id"] == run.run_id)]
        n_trials = int(run.n_trials) if pd.notna(run.n_trials) else 1
        per_agent[run.agent_id] = {}
        for timeframe in TIMEFRAMES:
            part = window(series, timeframe)
            windows[(run.agent_id, timeframe)] = (
                (part.index[0], part.index[-1]) if len(part) else (None, None)
            )
            per_agent[run.agent_id][timeframe] = window_metrics(series, agent_trades, timeframe, n_trials)
    agents = {
        run.agent_id: {
            "agent_id": run.agent_id,
            "agent_name": run.agent_name,
            "user_id": run.user_id,
            "run_id": run.run_id,
        }
        for run in runs.itertuples(index=False)
    }
    for metric in BOARD_METRICS:
        source = _METRIC_SOURCE.get(metric, metric)
        for timeframe in TIMEFRAMES:
            ranked = rank_board(
                (agents[a], per_agent[a][timeframe].get(source, float("nan"))) for a in agents
            )
            for entry in ranked:
                start, end = windows[(entry["agent_id"], timeframe)]
                rows.append(
                    {
                        "board_type": board_type,
                        "metric": metric,
                        "timeframe": timeframe,
                        **entry,
                        "window_start": start,
                        "window_end": end,
                        "updated_at": updated_at,
                    }
                )
    frame = pd.DataFrame(rows, columns=RANKINGS.column_names)
    return frame


def board_payload(rows: pd.DataFrame, board_type: str, metric: str, timeframe: str) -> dict[str, Any]:
    """The cached JSON of one board, in the replaced platform's field names (camelCase)."""
    part = rows[
        (rows["board_type"] == board_type) & (rows["metric"] == metric) & (rows["timeframe"] == timeframe)
    ]
    part = part.sort_values("rank")
    updated = part["updated_at"].max() if len(part) else pd.Timestamp(datetime.now(UTC))
    return {
        "type": board_type,
        "metric": metric,
        "timeframe": timeframe,
        "entries": [
            {
                "rank": int(r.rank),
                "agentId": r.agent_id,
                "agentName": r.agent_name,
                "userId": r.user_id,
                "metric": float(r.value),
                "metricType": metric,
            }
            for r in part.itertuples(index=False)
        ],
        "updated_at": pd.Timestamp(updated).isoformat(),
    }


def push_to_cache(cache: Cache, rows: pd.DataFrame) -> int:
    """Write every board (empty ones too, so readers can tell 'no agents' from 'not computed')."""
    pushed = 0
    for board_type in BOARD_TYPES:
        for metric in BOARD_METRICS:
            for timeframe in TIMEFRAMES:
                payload = board_payload(rows, board_type, metric, timeframe)
                cache.set(cache_key(board_type, metric, timeframe), json.dumps(payload), CACHE_TTL_SECONDS)
                pushed += 1
    return pushed
