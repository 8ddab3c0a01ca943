"""Backtest assets: one `agents` partition = one agent run in the sandbox over its universe and window.

The asset moves the agent through validating -> backtesting -> completed | failed, writes the
results (metrics, equity, trades, fills, FMEL decisions) to the warehouse and the artifacts
(equity curve, tearsheet, result summary) to the object store, and checks its own output: equity
never NaN, fills inside the bar's range, cash + positions reconciling to equity at every bar.
"""

import json
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from assets.partitions import agents_partitions
from farm_dagster.agents import AgentStatus, BacktestRequest, get_agent, load_code, set_status
from farm_dagster.engine.costs import BacktestSettings, CostModel
from farm_dagster.engine.runner import run_backtest
from farm_dagster.fmel.writer import write_decisions
from farm_dagster.market_data.panel import BarPanel
from farm_dagster.market_data.store import load_panel
from farm_dagster.metrics import metrics_to_json
from farm_dagster.resources.base import ObjectStore, OperationalStore, Warehouse
from farm_dagster.results_store import write_run_tables
from farm_dagster.sandbox.limits import SandboxLimits
from farm_dagster.settings import get_settings
from farm_dagster.tearsheet import equity_png, tearsheet_png
from farm_dagster.validation import validate_agent_code

RECONCILE_TOLERANCE = 1e-6  # relative: cash + positions vs equity, per bar

CHECKS = [
    dg.AssetCheckSpec(
        "equity_never_nan", asset="agent_backtest", description="Equity is finite at every bar."
    ),
    dg.AssetCheckSpec(
        "fills_within_bar_range",
        asset="agent_backtest",
        description="Every fill price lies inside its bar's [low, high].",
    ),
    dg.AssetCheckSpec(
        "cash_positions_reconcile",
        asset="agent_backtest",
        description="cash + value of positions == equity at every bar.",
    ),
]


def backtest_settings(request: BacktestRequest) -> BacktestSettings:
    return BacktestSettings(
        initial_cash=request.initial_cash,
        costs=CostModel(commission_pct=request.commission_bps / 10_000, slippage_bps=request.slippage_bps),
    )


def check_results(result: Any, panel: BarPanel) -> list[dg.AssetCheckResult]:
    """The three integrity checks, computed from the trusted result and the trusted bars."""
    equity = result.equity
    nan_bars = equity.index[~np.isfinite(equity["equity"].to_numpy(dtype=float))]
    outside = _fills_outside_range(result.fills, panel)
    gap = (equity["cash"] + equity["positions_value"] - equity["equity"]).abs()
    scale = equity["equity"].abs().clip(lower=1.0)
    bad_reconcile = equity.index[(gap / scale > RECONCILE_TOLERANCE).to_numpy()]
    return [
        dg.AssetCheckResult(
            check_name="equity_never_nan",
            passed=len(nan_bars) == 0,
            metadata={
                "bars": len(equity),
                "nan_bars": len(nan_bars),
                "first_nan": str(nan_bars[0]) if len(nan_bars) else "none",
            },
        ),
        dg.AssetCheckResult(
            check_name="fills_within_bar_range",
            passed=len(outside) == 0,
            metadata={
                "fills": len(result.fills),
                "outside": len(outside),
                "examples": dg.MetadataValue.json(outside[:5]),
            },
        ),
        dg.AssetCheckResult(
            check_name="cash_positions_reconcile",
            passed=len(bad_reconcile) == 0,
            metadata={
                "bars": len(equity),
                "mismatched_bars": len(bad_reconcile),
                "max_relative_gap": float((gap / scale).max()) if len(equity) else 0.0,
            },
        ),
    ]


def _fills_outside_range(fills: pd.DataFrame, panel: BarPanel) -> list[dict[str, Any]]:
    if fills.empty:
        return []
    cols = {s: i for i, s in enumerate(panel.symbols)}
    stamps = pd.to_datetime(fills["timestamp"], utc=True).dt.as_unit("ns").astype("int64").to_numpy()
    rows = np.searchsorted(panel.timestamps, stamps)
    bad = []
    for (symbol, price, stamp), row in zip(
        fills[["symbol", "price", "timestamp"]].itertuples(index=False), rows, strict=True
    ):
        col = cols[symbol]
        low, high = panel.low[row, col], panel.high[row, col]
        if not (low - 1e-9 <= price <= high + 1e-9):
            bad.append(
                {
                    "symbol": symbol,
                    "timestamp": str(stamp),
                    "price": float(price),
                    "low": float(low),
                    "high": float(high),
                }
            )
    return bad


@dg.asset(
    partitions_def=agents_partitions,
    group_name="backtests",
    deps=[dg.AssetKey("market_data_ohlcv")],
    check_specs=CHECKS,
    kinds={"python", "duckdb"},
    description="The agent backtested in the sandbox; results in backtests.* and fmel.trading_decisions.",
)
def agent_backtest(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    object_store: ObjectStore,
    opstore: OperationalStore,
):
    agent_id = context.partition_key
    run_id = context.run_id
    agent = get_agent(opstore, agent_id)
    request = BacktestRequest.model_validate(agent["request"])
    set_status(opstore, agent_id, AgentStatus.VALIDATING, last_run_id=run_id, error=None)

    code = load_code(object_store, agent)
    report = validate_agent_code(code, agent.get("filename", "agent.py"))
    if not report.ok:
        message = "\n".join(report.messages())
        set_status(opstore, agent_id, AgentStatus.FAILED, error=message)
        raise dg.Failure(
            description=f"agent {agent_id} rejected by validation:\n{message}", allow_retries=False
        )

    set_status(opstore, agent_id, AgentStatus.BACKTESTING)
    panel = load_panel(warehouse, request.symbols, request.start, request.end)
    settings = backtest_settings(request)
    context.log.info(
        f"backtesting {agent_id} ({report.kind}) on {panel.n_symbols} symbols x {panel.n_bars} bars "
        f"({request.start}..{request.end}), data version {panel.data_version}"
    )
    step = max(panel.n_bars // 10, 1)

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            context.log.info(f"{agent_id}: bar {done}/{total}")

    result = run_backtest(
        code,
        panel,
        settings,
        agent_id=agent_id,
        run_id=run_id,
        user_id=agent.get("user_id", "local"),
        filename=agent.get("filename", "agent.py"),
        limits=SandboxLimits.from_settings(get_settings()),
        progress=progress,
        n_trials=int(agent.get("n_trials", 1)),
    )
    identity = {
        "agent_id": agent_id,
        "run_id": run_id,
        "code_hash": result.code_hash,
        "data_version": result.data_version,
    }
    # FMEL first: what the agent decided before any crash is kept, whatever happens next.
    n_decisions = write_decisions(warehouse, result.decisions)
    error_text = _describe_error(result, agent.get("filename", "agent.py"))
    metrics = dict(result.metrics)
    closed = result.trades[result.trades["status"] == "closed"]
    metrics_row = {
        "user_id": agent.get("user_id", "local"),
        "agent_name": agent.get("name", agent_id),
        "result_id": result.result_id,
        "status": "completed" if result.status == "completed" else "failed",
        "error": error_text,
        "symbols": ",".join(panel.symbols),
        "window_start": pd.Timestamp(panel.timestamps[0], tz="UTC") if panel.n_bars else pd.NaT,
        "window_end": pd.Timestamp(panel.timestamps[-1], tz="UTC") if panel.n_bars else pd.NaT,
        "initial_value": settings.initial_cash,
        "final_value": float(result.equity["equity"].iloc[-1])
        if len(result.equity)
        else settings.initial_cash,
        **{k: v for k, v in metrics.items() if isinstance(v, int | float)},
        "winning_trades": int((closed["pnl"] > 0).sum()),
        "losing_trades": int((closed["pnl"] < 0).sum()),
        "n_trials": int(agent.get("n_trials", 1)),
        "tamper_suspected": bool(result.tamper_suspected),
        "metrics_json": json.dumps(metrics_to_json(metrics), sort_keys=True),
        "finished_at": pd.Timestamp.now(tz="UTC"),
    }
    counts = write_run_tables(
        warehouse,
        identity=identity,
        metrics_row=metrics_row,
        equity=result.equity.reset_index(),
        trades=result.trades,
        fills=result.fills,
    )
    artifacts = _store_artifacts(object_store, agent, run_id, result, metrics)

    if result.status != "completed":
        set_status(opstore, agent_id, AgentStatus.FAILED, error=error_text, last_run_id=run_id)
        raise dg.Failure(
            description=f"agent {agent_id} {result.status}: {error_text}",
            metadata={"decisions_kept": n_decisions, "run_id": run_id},
            allow_retries=False,
        )
    set_status(
        opstore,
        agent_id,
        AgentStatus.COMPLETED,
        last_run_id=run_id,
        metrics=metrics_to_json(metrics),
        result_id=result.result_id,
    )
    yield from check_results(result, panel)
    yield dg.MaterializeResult(
        metadata={
            "agent_id": agent_id,
            "code_hash": result.code_hash,
            "data_version": result.data_version,
            "result_id": result.result_id,
            "bars": panel.n_bars,
            "symbols": ",".join(panel.symbols),
            "decisions": n_decisions,
            **{f"rows_{k}": v for k, v in counts.items()},
            **{
                k: dg.MetadataValue.float(float(v))
                for k, v in metrics_to_json(metrics).items()
                if isinstance(v, int | float)
            },
            "tamper_suspected": bool(result.tamper_suspected),
            **{k: dg.MetadataValue.url(v) for k, v in artifacts.items()},
            "timings": dg.MetadataValue.json(result.timings),
        }
    )


def _describe_error(result: Any, filename: str) -> str | None:
    """The user's view of a failure: `file:line: Error: message` and their own traceback lines."""
    if result.error is None:
        return None
    lines = [result.error.render(filename), *result.error.user_traceback]
    return "\n".join(lines)


def _store_artifacts(
    object_store: ObjectStore, agent: dict[str, Any], run_id: str, result: Any, metrics: dict[str, Any]
) -> dict[str, str]:
    prefix = f"backtests/{agent['id']}/{run_id}"
    uris = {}
    if len(result.equity):
        curve = result.equity["equity"]
        title = f"{agent.get('name', agent['id'])} ({agent['id']})"
        uris["equity_png"] = object_store.put_bytes(
            f"{prefix}/equity.png", equity_png(curve, title), "image/png"
        )
        uris["tearsheet_png"] = object_store.put_bytes(
            f"{prefix}/tearsheet.png", tearsheet_png(curve, metrics_to_json(metrics), title), "image/png"
        )
    summary = {
        "agent_id": agent["id"],
        "run_id": run_id,
        "status": result.status,
        "error": _describe_error(result, agent.get("filename", "agent.py")),
        "metrics": metrics_to_json(metrics),
        "code_hash": result.code_hash,
        "data_version": result.data_version,
        "result_id": result.result_id,
    }
    uris["result_json"] = object_store.put_bytes(
        f"{prefix}/result.json", json.dumps(summary, indent=2).encode(), "application/json"
    )
    return uris
