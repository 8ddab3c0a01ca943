"""Warehouse table specs: one declaration per table, used by both warehouse backends.

Why declare tables: DuckDB creates them from the column list; BigQuery additionally needs the
partitioning column (day granularity) and clustering columns, which live here next to the columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Logical column types, mapped per backend (see warehouse_duckdb / warehouse_bigquery).
STRING, FLOAT, INT, BOOL, TIMESTAMP, JSON = "STRING", "FLOAT", "INT", "BOOL", "TIMESTAMP", "JSON"


@dataclass(frozen=True)
class TableSpec:
    name: str  # "schema.table", e.g. "market_data.ohlcv"
    columns: tuple[tuple[str, str], ...]
    partition_by: str | None = None  # a TIMESTAMP column, partitioned by day in BigQuery
    cluster_by: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""

    @property
    def schema(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def table(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def column_names(self) -> list[str]:
        return [name for name, _ in self.columns]


OHLCV = TableSpec(
    name="market_data.ohlcv",
    columns=(
        ("symbol", STRING),
        ("timestamp", TIMESTAMP),
        ("open", FLOAT),
        ("high", FLOAT),
        ("low", FLOAT),
        ("close", FLOAT),
        ("volume", FLOAT),
        ("source", STRING),
        ("adjusted", BOOL),
        ("close_only", BOOL),
        ("timeframe", STRING),
    ),
    partition_by="timestamp",
    cluster_by=("symbol",),
    description="Bars of every symbol; close-only series carry NULL open/high/low and close_only=true.",
)

OHLCV_SYNTHETIC = TableSpec(
    name="market_data.ohlcv_synthetic",
    columns=OHLCV.columns,
    partition_by="timestamp",
    cluster_by=("symbol",),
    description="SYNTHETIC seeded random-walk bars (scale tests only), same columns as market_data.ohlcv; "
    "kept out of the real table so no backtest can mistake them for market data.",
)

TABLES: dict[str, TableSpec] = {OHLCV.name: OHLCV, OHLCV_SYNTHETIC.name: OHLCV_SYNTHETIC}


def register(spec: TableSpec) -> TableSpec:
    """Add a table spec to the registry (modules owning a table call this at import)."""
    TABLES[spec.name] = spec
    return spec
