"""Market data in the warehouse: idempotent writes, the engine's BarPanel out, a per-symbol summary.

Why only the :class:`~farm_dagster.resources.base.Warehouse` interface (``write``/``read``/
``query``): the same calls run on DuckDB locally and on BigQuery in the gcp profile.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from farm_dagster.market_data.checks import check_no_duplicates
from farm_dagster.market_data.panel import BarPanel, utc_timestamp
from farm_dagster.market_data.schema import DAILY, OHLCV_COLUMNS, require_columns
from farm_dagster.resources.base import Warehouse
from farm_dagster.resources.tables import OHLCV, OHLCV_SYNTHETIC, TableSpec

SUMMARY_COLUMNS = ("symbol", "rows", "first", "last", "source", "close_only")
TimeBound = pd.Timestamp | str | None


def write_ohlcv(warehouse: Warehouse, frame: pd.DataFrame, spec: TableSpec = OHLCV) -> dict[str, int]:
    """Write bars, replacing the rows of each ``source`` present in ``frame`` (idempotent re-runs).

    Other sources' rows (e.g. live bars an ingester appended) stay untouched. Returns rows per source.
    """
    require_columns(frame)
    written: dict[str, int] = {}
    for source, rows in frame.groupby(frame["source"].astype(str), sort=True):
        written[str(source)] = warehouse.write(
            spec, _plain(rows[list(OHLCV_COLUMNS)]), replace_where={"source": str(source)}
        )
    return written


def replace_synthetic(warehouse: Warehouse, frame: pd.DataFrame) -> int:
    """Make ``market_data.ohlcv_synthetic`` hold exactly ``frame`` (one generator config at a time,
    so two seeds never leave duplicate (symbol, timestamp) keys behind)."""
    require_columns(frame)
    return warehouse.write(OHLCV_SYNTHETIC, _plain(frame[list(OHLCV_COLUMNS)]), replace_all=True)


def read_ohlcv(
    warehouse: Warehouse,
    symbols: Sequence[str] | None = None,
    start: TimeBound = None,
    end: TimeBound = None,
    *,
    timeframe: str = DAILY,
    spec: TableSpec = OHLCV,
) -> pd.DataFrame:
    """Long rows for ``symbols`` (all when None) with start <= timestamp <= end, sorted.

    ``end`` given as a date (midnight) covers that whole day, so intraday bars of the last day
    are included. The time filter runs after the read to stay within the portable ``read`` API;
    reads are per symbol, and the widest real symbol has ~8,300 daily rows.
    """
    where: dict[str, object] = {"timeframe": timeframe}
    if symbols is not None:
        where["symbol"] = list(symbols)
    frame = warehouse.read(spec, where=where)
    if frame.empty:
        return frame.reindex(columns=list(OHLCV_COLUMNS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    keep = pd.Series(True, index=frame.index)
    if start is not None:
        keep &= frame["timestamp"] >= utc_timestamp(start)
    if end is not None:
        stop = utc_timestamp(end)
        if stop == stop.normalize():
            keep &= frame["timestamp"] < stop + pd.Timedelta(days=1)
        else:
            keep &= frame["timestamp"] <= stop
    frame = frame.loc[keep]
    return frame.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)


def load_panel(
    warehouse: Warehouse,
    symbols: Sequence[str],
    start: TimeBound = None,
    end: TimeBound = None,
    *,
    timeframe: str = DAILY,
    spec: TableSpec = OHLCV,
) -> BarPanel:
    """The engine's dense panel for ``symbols`` over [start, end] (inclusive, UTC).

    Raises ValueError naming the symbols without bars in the window, or the duplicated bars
    (a duplicate would otherwise surface as an opaque pivot error).
    """
    wanted = list(dict.fromkeys(symbols))
    if not wanted:
        raise ValueError("load_panel needs at least one symbol")
    frame = read_ohlcv(warehouse, wanted, start, end, timeframe=timeframe, spec=spec)
    present = set(frame["symbol"].unique())
    missing = [s for s in wanted if s not in present]
    if missing:
        window = f"{start or '-inf'}..{end or '+inf'}"
        raise ValueError(
            f"no {timeframe} bars in {spec.name} for symbol(s) {', '.join(missing)} in {window}; "
            f"see farm_dagster.market_data.store.summary() for what is loaded"
        )
    dupes = check_no_duplicates(frame)
    if not dupes.passed:
        raise ValueError(f"{spec.name}: {dupes.message}")
    return BarPanel.from_long(frame, symbols=wanted)


def summary(warehouse: Warehouse, spec: TableSpec = OHLCV) -> pd.DataFrame:
    """One row per symbol: symbol, rows, first, last, source, close_only (sorted by symbol)."""
    if not warehouse.table_exists(spec):
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    # Aggregates and aliases valid in both DuckDB and BigQuery; renamed below (rows/first/last
    # are keywords or functions in some dialects).
    table = "{" + spec.name + "}"
    out = warehouse.query(
        "SELECT symbol, COUNT(*) AS n_rows, MIN(timestamp) AS first_ts, MAX(timestamp) AS last_ts, "
        f"MIN(source) AS source_name, MAX(close_only) AS any_close_only FROM {table} "
        "GROUP BY symbol ORDER BY symbol"
    )
    out = out.rename(
        columns={
            "n_rows": "rows",
            "first_ts": "first",
            "last_ts": "last",
            "source_name": "source",
            "any_close_only": "close_only",
        }
    )
    out["rows"] = out["rows"].astype("int64")
    out["close_only"] = out["close_only"].astype(bool)
    for col in ("first", "last"):
        out[col] = pd.to_datetime(out[col], utc=True)
    return out[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Categorical columns (the synthetic generator's symbols/labels) as plain strings, which every
    backend's loader accepts (BigQuery's does not take dictionary-encoded columns for STRING)."""
    cats = [c for c in frame.columns if isinstance(frame[c].dtype, pd.CategoricalDtype)]
    return frame.astype(dict.fromkeys(cats, str)) if cats else frame
