"""Market-data assets: the real bars shipped with the project, synthetic bars for scale, and checks.

Why one ``market_data_ohlcv`` asset for all real sources: the asset is the table
``market_data.ohlcv`` that backtests read, and the checks judge that table as a whole (a duplicate
bar is a property of the table, not of one package). The per-source breakdown lives in the
materialization's metadata. Re-materializing replaces each source's rows (idempotent).

``synthetic_ohlcv`` writes seeded random-walk bars to its own table
``market_data.ohlcv_synthetic`` (same columns, ``source = "synthetic (seeded, seed=...)"``), so
the real table never holds invented prices. It is excluded from ``market_data_job``.

Checks: ``ohlc_consistency``, ``no_duplicates``, ``positive_prices`` are blocking with ERROR
severity (corrupt bars must not reach a backtest); ``calendar_gaps`` (real table only, XNYS)
fails with WARN severity and does not block (see :mod:`farm_dagster.market_data.checks`).
"""

# No `from __future__ import annotations`: Dagster inspects the context/config/resource annotations.
from collections.abc import Callable

import dagster as dg
import pandas as pd
from pydantic import Field

from farm_dagster.market_data.checks import (
    CheckOutcome,
    Severity,
    check_calendar_gaps,
    check_no_duplicates,
    check_ohlc_consistency,
    check_positive_prices,
)
from farm_dagster.market_data.schema import DAILY
from farm_dagster.market_data.sources import load_real_ohlcv, sources_markdown
from farm_dagster.market_data.store import replace_synthetic, write_ohlcv
from farm_dagster.market_data.synthetic import synthetic_ohlcv as generate_synthetic
from farm_dagster.market_data.synthetic import synthetic_source
from farm_dagster.resources.base import Warehouse
from farm_dagster.resources.tables import OHLCV, OHLCV_SYNTHETIC, TableSpec

GROUP = "market_data"
PREVIEW_ROWS = 40


def _column_schema(spec: TableSpec) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, kind.lower()) for name, kind in spec.columns])


def per_symbol(frame: pd.DataFrame) -> pd.DataFrame:
    """symbol, rows, first, last, source, close_only of a long frame (for metadata previews)."""
    grouped = frame.groupby(frame["symbol"].astype(str), sort=True)
    out = pd.DataFrame(
        {
            "rows": grouped.size(),
            "first": grouped["timestamp"].min().dt.strftime("%Y-%m-%d"),
            "last": grouped["timestamp"].max().dt.strftime("%Y-%m-%d"),
            "source": grouped["source"].first().astype(str),
            "close_only": grouped["close_only"].any(),
        }
    )
    return out.rename_axis("symbol").reset_index()


def ohlcv_metadata(frame: pd.DataFrame, spec: TableSpec) -> dict[str, object]:
    """Rows, symbols, date range, rows per source and a per-symbol markdown preview."""
    table = per_symbol(frame)
    by_source = frame.groupby(frame["source"].astype(str)).agg(
        rows=("symbol", "size"), symbols=("symbol", "nunique")
    )
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    preview = table.head(PREVIEW_ROWS).to_markdown(index=False)
    if len(table) > PREVIEW_ROWS:
        preview += f"\n\n... and {len(table) - PREVIEW_ROWS} more symbols"
    return {
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "dagster/column_schema": _column_schema(spec),
        "table": dg.MetadataValue.text(spec.name),
        "rows": dg.MetadataValue.int(len(frame)),
        "symbols": dg.MetadataValue.int(len(table)),
        "symbol_list": dg.MetadataValue.text(", ".join(table["symbol"])),
        "close_only_symbols": dg.MetadataValue.int(int(table["close_only"].sum())),
        "first_bar": dg.MetadataValue.text(stamps.min().isoformat() if len(frame) else ""),
        "last_bar": dg.MetadataValue.text(stamps.max().isoformat() if len(frame) else ""),
        "rows_per_source": dg.MetadataValue.json(
            {str(k): {"rows": int(v.rows), "symbols": int(v.symbols)} for k, v in by_source.iterrows()}
        ),
        "preview": dg.MetadataValue.md(preview),
    }


@dg.asset(
    name="market_data_ohlcv",
    group_name=GROUP,
    kinds={"pandas"},
    pool="warehouse_writer",
    description=(
        "Real daily bars from data shipped inside installed packages (no network): "
        "bokeh-sampledata stocks (OHLCV), arch indices SPX/COMP (OHLCV), skfolio S&P 500 stocks, "
        "index and factor ETFs (adjusted close only: open/high/low NULL). Table market_data.ohlcv."
    ),
    metadata={
        "table": OHLCV.name,
        "sources": dg.MetadataValue.md(sources_markdown()),
    },
)
def market_data_ohlcv(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    frame = load_real_ohlcv()
    written = write_ohlcv(warehouse, frame, OHLCV)
    context.log.info(f"wrote {sum(written.values())} rows to {OHLCV.name}: {written}")
    return dg.MaterializeResult(metadata=ohlcv_metadata(frame, OHLCV))


class SyntheticOhlcvConfig(dg.Config):
    """Size and seed of the synthetic universe (the whole table is replaced on each run)."""

    n_symbols: int = Field(20, ge=1, le=5_000, description="symbols SYN0001..SYNnnnn")
    n_bars: int = Field(2_520, ge=1, le=1_000_000, description="bars per symbol")
    seed: int = Field(42, description="same seed, same bars")
    timeframe: str = Field(DAILY, pattern="^(1d|1m)$", description="'1d' (Mon-Fri) or '1m' (09:30-16:00 NY)")


@dg.asset(
    name="synthetic_ohlcv",
    group_name=GROUP,
    kinds={"pandas"},
    pool="warehouse_writer",
    description=(
        "SYNTHETIC bars (seeded geometric random walk, NOT market data) for scale tests, written to "
        "market_data.ohlcv_synthetic with source 'synthetic (seeded, seed=...)'. Never read by backtests "
        "of submitted agents; not part of market_data_job."
    ),
    metadata={"table": OHLCV_SYNTHETIC.name, "synthetic": True},
)
def synthetic_ohlcv(
    context: dg.AssetExecutionContext, config: SyntheticOhlcvConfig, warehouse: Warehouse
) -> dg.MaterializeResult:
    frame = generate_synthetic(config.n_symbols, config.n_bars, config.seed, config.timeframe)
    rows = replace_synthetic(warehouse, frame)
    context.log.info(f"wrote {rows} synthetic rows ({config.n_symbols} x {config.n_bars} {config.timeframe})")
    metadata = ohlcv_metadata(frame, OHLCV_SYNTHETIC)
    metadata.update(
        {
            "synthetic": dg.MetadataValue.bool(True),
            "source": dg.MetadataValue.text(synthetic_source(config.seed)),
            "seed": dg.MetadataValue.int(config.seed),
            "timeframe": dg.MetadataValue.text(config.timeframe),
        }
    )
    return dg.MaterializeResult(metadata=metadata)


# --- checks -------------------------------------------------------------------------------------

_DESCRIPTIONS = {
    "ohlc_consistency": "low <= open, close <= high on every OHLCV bar; close-only bars keep open/high/low "
    "NULL (never invented); close never NULL. ERROR, blocking.",
    "no_duplicates": "At most one bar per (symbol, timestamp). ERROR, blocking.",
    "positive_prices": "Every open/high/low/close present is finite and > 0; volume, when known, >= 0. "
    "ERROR, blocking.",
    "calendar_gaps": "Daily bars against the NYSE (XNYS) sessions between each symbol's first and last bar: "
    "missing sessions and bars on non-sessions, per symbol with counts and examples. Fails with WARN "
    "severity (reported, not blocking).",
}


def to_check_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    """A pure :class:`CheckOutcome` as Dagster's result: message as description, evidence as metadata."""
    metadata: dict[str, object] = {"message": dg.MetadataValue.text(outcome.message)}
    for key, value in outcome.metadata.items():
        metadata[key] = dg.MetadataValue.json(value) if isinstance(value, dict | list) else value
    if len(outcome.failing_rows):
        metadata["failing_rows_sample"] = dg.MetadataValue.md(outcome.failing_rows.to_markdown(index=False))
    severity = (
        dg.AssetCheckSeverity.WARN if outcome.severity is Severity.WARN else dg.AssetCheckSeverity.ERROR
    )
    return dg.AssetCheckResult(
        passed=outcome.passed, severity=severity, description=outcome.message, metadata=metadata
    )


def build_ohlcv_checks(
    asset: dg.AssetsDefinition, spec: TableSpec, checks: dict[str, Callable[[pd.DataFrame], CheckOutcome]]
) -> list[dg.AssetChecksDefinition]:
    """One ``@asset_check`` per pure check, each reading ``spec``'s table through the warehouse."""
    return [
        dg.asset_check(
            asset=asset,
            name=name,
            description=f"{_DESCRIPTIONS[name]} Table {spec.name}.",
            blocking=name != "calendar_gaps",
        )(_check_fn(spec, check))
        for name, check in checks.items()
    ]


def _check_fn(
    spec: TableSpec, check: Callable[[pd.DataFrame], CheckOutcome]
) -> Callable[[Warehouse], dg.AssetCheckResult]:
    def _run(warehouse: Warehouse) -> dg.AssetCheckResult:
        return to_check_result(check(warehouse.read(spec)))

    return _run


_CORE_CHECKS = {
    "ohlc_consistency": check_ohlc_consistency,
    "no_duplicates": check_no_duplicates,
    "positive_prices": check_positive_prices,
}

market_data_ohlcv_checks = build_ohlcv_checks(
    market_data_ohlcv, OHLCV, {**_CORE_CHECKS, "calendar_gaps": check_calendar_gaps}
)
# Synthetic daily bars use a Mon-Fri calendar by design, so they are not compared with XNYS.
synthetic_ohlcv_checks = build_ohlcv_checks(synthetic_ohlcv, OHLCV_SYNTHETIC, _CORE_CHECKS)

MARKET_DATA_ASSETS: list[dg.AssetsDefinition] = [market_data_ohlcv, synthetic_ohlcv]
MARKET_DATA_CHECKS: list[dg.AssetChecksDefinition] = [*market_data_ohlcv_checks, *synthetic_ohlcv_checks]
