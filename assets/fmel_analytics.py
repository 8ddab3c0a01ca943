"""FMEL analytics assets: decisions by action and symbol, confidence distribution, outcome by confidence."""

import dagster as dg
import pandas as pd

from farm_dagster.fmel.analytics import (
    CONFIDENCE_DISTRIBUTION,
    CONFIDENCE_OUTCOMES,
    DECISION_COUNTS,
    analytics_tables,
)
from farm_dagster.fmel.schema import FMEL_DECISIONS
from farm_dagster.market_data.store import load_panel
from farm_dagster.resources.base import Warehouse
from farm_dagster.results_store import latest_runs


def latest_decisions(warehouse: Warehouse) -> pd.DataFrame:
    """FMEL rows of each agent's newest completed backtest run (what the analytics describe)."""
    runs = latest_runs(warehouse)
    if runs.empty or not warehouse.table_exists(FMEL_DECISIONS):
        return pd.DataFrame(columns=FMEL_DECISIONS.column_names)
    return warehouse.read(
        FMEL_DECISIONS,
        where={"run_id": runs["run_id"].tolist(), "mode": "backtest"},
        columns=["agent_id", "run_id", "timestamp", "symbol", "action", "confidence"],
    )


@dg.asset(
    group_name="fmel_analytics",
    deps=[dg.AssetKey("agent_backtest")],
    pool="warehouse_writer",
    kinds={"duckdb"},
    description="Per agent and platform-wide: decisions by action/symbol, confidence buckets, outcome by bucket.",
)
def fmel_analytics(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    decisions = latest_decisions(warehouse)
    symbols = sorted(s for s in decisions["symbol"].dropna().unique()) if len(decisions) else []
    panel = None
    if symbols:
        stamps = pd.to_datetime(decisions["timestamp"], utc=True)
        panel = load_panel(warehouse, symbols, stamps.min(), None)
    tables = analytics_tables(decisions, panel)

    for spec, frame in (
        (DECISION_COUNTS, tables["counts"]),
        (CONFIDENCE_DISTRIBUTION, tables["distribution"]),
        (CONFIDENCE_OUTCOMES, tables["outcomes"]),
    ):
        # Each refresh replaces the whole table: analytics describe the current latest runs only.
        warehouse.write(spec, frame, replace_all=True)
    platform = tables["outcomes"][tables["outcomes"]["scope"] == "*"]
    return dg.MaterializeResult(
        metadata={
            "decisions": len(decisions),
            "agents": int(decisions["agent_id"].nunique()) if len(decisions) else 0,
            "platform_outcome_by_confidence": dg.MetadataValue.md(platform.to_markdown(index=False))
            if len(platform)
            else "no scored decisions",
        }
    )
