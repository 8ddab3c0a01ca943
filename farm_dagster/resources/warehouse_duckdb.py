"""Warehouse on a DuckDB file (local profile).

DuckDB admits one writing process at a time. Every call opens a short-lived connection and closes
it, so a Dagster run holds the file only while it writes; a writer that finds the file locked
retries with backoff instead of failing (the design's known hazard). Readers use the same path.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from pydantic import Field

from farm_dagster.resources.base import Warehouse
from farm_dagster.resources.tables import TableSpec

_DUCK_TYPES = {
    "STRING": "VARCHAR",
    "FLOAT": "DOUBLE",
    "INT": "BIGINT",
    "BOOL": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMPTZ",
    "JSON": "VARCHAR",
}
_PARAM = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")
_LOCK_MARKERS = ("could not set lock", "conflicting lock", "database is locked")


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return any(marker in text for marker in _LOCK_MARKERS)


class DuckDBWarehouse(Warehouse):
    path: str = Field(description="DuckDB database file")
    lock_timeout_seconds: float = Field(
        120.0, description="how long a writer waits for another process's lock"
    )

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection, retried while another process holds the file lock."""
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_seconds
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(self.path, read_only=read_only and Path(self.path).exists())
                break
            except (duckdb.IOException, duckdb.ConnectionException) as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        try:
            con.execute("SET TimeZone = 'UTC'")
            yield con
        finally:
            con.close()

    def ensure_table(self, spec: TableSpec) -> None:
        with self.connect() as con:
            self._ensure(con, spec)

    @staticmethod
    def _ensure(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> None:
        """Create the table, or add the columns a newer spec declares (additive changes only).

        Why: a data home outlives a release; a table created by an older version must keep
        accepting writes once its spec gains a column (old rows read NULL there).
        """
        cols = ", ".join(f'"{name}" {_DUCK_TYPES[kind]}' for name, kind in spec.columns)
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{spec.schema}"')
        con.execute(f'CREATE TABLE IF NOT EXISTS "{spec.schema}"."{spec.table}" ({cols})')
        present = {
            row[0]
            for row in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ?",
                [spec.schema, spec.table],
            ).fetchall()
        }
        for name, kind in spec.columns:
            if name not in present:
                con.execute(
                    f'ALTER TABLE "{spec.schema}"."{spec.table}" ADD COLUMN "{name}" {_DUCK_TYPES[kind]}'
                )

    def write(
        self,
        spec: TableSpec,
        frame: pd.DataFrame,
        *,
        replace_where: dict[str, Any] | None = None,
        replace_all: bool = False,
    ) -> int:
        data = self.conform(spec, frame)
        with self.connect() as con:
            self._ensure(con, spec)
            con.execute("BEGIN TRANSACTION")
            try:
                if replace_all:
                    con.execute(f'DELETE FROM "{spec.schema}"."{spec.table}"')
                elif replace_where:
                    clause, params = _where_clause(replace_where)
                    con.execute(f'DELETE FROM "{spec.schema}"."{spec.table}" WHERE {clause}', params)
                if len(data):
                    con.register("_farm_incoming", data)
                    cols = ", ".join(f'"{c}"' for c in spec.column_names)
                    con.execute(
                        f'INSERT INTO "{spec.schema}"."{spec.table}" ({cols}) SELECT {cols} FROM _farm_incoming'
                    )
                    con.unregister("_farm_incoming")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        return len(data)

    def read(
        self,
        spec: TableSpec,
        where: dict[str, Any] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        cols = ", ".join(f'"{c}"' for c in (columns or spec.column_names))
        sql = f'SELECT {cols} FROM "{spec.schema}"."{spec.table}"'
        params: list[Any] = []
        if where:
            clause, params = _where_clause(where)
            sql += f" WHERE {clause}"
        with self.connect(read_only=True) as con:
            if not _exists(con, spec):
                return pd.DataFrame(columns=list(columns or spec.column_names))
            return _utc(con.execute(sql, params).df())

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        text = self.qualify_tables(sql, lambda schema, table: f'"{schema}"."{table}"')
        text = _PARAM.sub(lambda m: f"${m.group(1)}", text)  # BigQuery-style @name -> DuckDB $name
        with self.connect(read_only=True) as con:
            return _utc(con.execute(text, params or {}).df())

    def table_exists(self, spec: TableSpec) -> bool:
        if not Path(self.path).exists():
            return False
        with self.connect(read_only=True) as con:
            return _exists(con, spec)


def _exists(con: duckdb.DuckDBPyConnection, spec: TableSpec) -> bool:
    row = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
        [spec.schema, spec.table],
    ).fetchone()
    return bool(row and row[0])


def _where_clause(where: dict[str, Any]) -> tuple[str, list[Any]]:
    parts, params = [], []
    for column, value in where.items():
        if isinstance(value, list | tuple | set):
            values = list(value)
            if not values:
                parts.append("FALSE")
                continue
            parts.append(f'"{column}" IN ({", ".join("?" for _ in values)})')
            params.extend(values)
        elif value is None:
            parts.append(f'"{column}" IS NULL')
        else:
            parts.append(f'"{column}" = ?')
            params.append(value)
    return " AND ".join(parts), params


def _utc(frame: pd.DataFrame) -> pd.DataFrame:
    """DuckDB hands TIMESTAMPTZ back in the session zone; make every such column explicit UTC."""
    for col in frame.columns:
        if isinstance(frame[col].dtype, pd.DatetimeTZDtype):
            frame[col] = frame[col].dt.tz_convert("UTC")
    return frame
