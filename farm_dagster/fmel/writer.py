"""Write FMEL rows to the warehouse in columnar batches, idempotently per run."""

from __future__ import annotations

import pandas as pd

from farm_dagster.fmel.schema import FMEL_DECISIONS
from farm_dagster.resources.base import Warehouse

BATCH_ROWS = 100_000


def write_decisions(warehouse: Warehouse, frame: pd.DataFrame, *, batch_rows: int = BATCH_ROWS) -> int:
    """Replace each run's rows with ``frame``'s, in batches of ``batch_rows``; returns rows written.

    The first batch of a run deletes that run's old rows (``replace_where``), later batches append,
    so re-running a backtest never duplicates its decisions.
    """
    missing = [c for c in FMEL_DECISIONS.column_names if c not in frame.columns]
    if missing:
        raise ValueError(f"FMEL frame lacks columns: {', '.join(missing)}")
    warehouse.ensure_table(FMEL_DECISIONS)
    written = 0
    for run_id, rows in frame[FMEL_DECISIONS.column_names].groupby("run_id", sort=True):
        rows = rows.reset_index(drop=True)
        for start in range(0, len(rows), batch_rows):
            batch = rows.iloc[start : start + batch_rows]
            replace = {"run_id": run_id} if start == 0 else None
            written += warehouse.write(FMEL_DECISIONS, batch, replace_where=replace)
    return written
