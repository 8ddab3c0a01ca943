"""Leaderboard asset: every board (type x metric x timeframe) to the warehouse and to the cache."""

import dagster as dg
import pandas as pd

from farm_dagster.leaderboard import BOARD_METRICS, RANKINGS, TIMEFRAMES, build_rankings, push_to_cache
from farm_dagster.resources.base import Cache, Warehouse
from farm_dagster.results_store import EQUITY, TRADES, latest_runs


@dg.asset(
    group_name="leaderboard",
    deps=[dg.AssetKey("agent_backtest"), dg.AssetKey("fmel_analytics")],
    pool="warehouse_writer",
    kinds={"duckdb", "redis"},
    description=(
        "Rankings by type (backtest, paper_trading), metric and timeframe; written to leaderboard.rankings "
        "and pushed to cache keys leaderboard:{type}:{metric}:{timeframe} (30 s TTL)."
    ),
)
def leaderboard(
    context: dg.AssetExecutionContext, warehouse: Warehouse, cache: Cache
) -> dg.MaterializeResult:
    runs = latest_runs(warehouse)
    if runs.empty:
        rankings = pd.DataFrame(columns=RANKINGS.column_names)
    else:
        run_ids = runs["run_id"].tolist()
        equity = warehouse.read(EQUITY, where={"run_id": run_ids})
        trades = warehouse.read(TRADES, where={"run_id": run_ids})
        rankings = build_rankings(runs, equity, trades, board_type="backtest")
    # Paper-trading boards come from paper sessions (the live side); until one has run they are
    # published empty, so the API can tell "no agents yet" from "board missing".
    warehouse.write(RANKINGS, rankings, replace_all=True)
    try:
        pushed = push_to_cache(cache, rankings)
    except Exception as exc:  # the warehouse is the source of truth; a cache outage only slows readers
        context.log.warning(f"leaderboard cache push failed, readers fall back to the warehouse: {exc}")
        pushed = 0
    top = rankings[(rankings["metric"] == "sharpe") & (rankings["timeframe"] == "all_time")].sort_values(
        "rank"
    )
    return dg.MaterializeResult(
        metadata={
            "agents_ranked": int(runs["agent_id"].nunique()) if len(runs) else 0,
            "rows": len(rankings),
            "boards_cached": pushed,
            "metrics": ", ".join(BOARD_METRICS),
            "timeframes": ", ".join(TIMEFRAMES),
            "top_by_sharpe_all_time": dg.MetadataValue.md(
                top[["rank", "agent_id", "agent_name", "value"]].head(10).to_markdown(index=False)
            )
            if len(top)
            else "no completed backtests yet",
        }
    )
