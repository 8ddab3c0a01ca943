"""Warehouse on BigQuery (gcp profile).

A table ``schema.table`` lives in dataset ``<dataset_prefix><schema>``; tables are created from
their :class:`TableSpec` with day partitioning on ``partition_by`` and clustering on ``cluster_by``
(the ohlcv table: by date, by symbol), so a query for a few symbols over a date range scans only
those partitions and blocks.

SQL keeps one dialect across backends: table names as ``{schema.table}`` and named parameters as
``$name`` (DuckDB's spelling), which this class rewrites to BigQuery's ``project.dataset.table``
and ``@name`` with typed query parameters. Values are never spliced into SQL text.

``replace_where`` runs a parameterized DELETE, then a load job (WRITE_APPEND). BigQuery cannot
put a load job inside a DML transaction, so a failure between the two leaves the rows deleted;
re-running the same write repairs it (the write is idempotent by construction).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from google.api_core import exceptions as gexc
from google.cloud import bigquery
from pydantic import Field, PrivateAttr

from farm_dagster.resources.base import Warehouse
from farm_dagster.resources.tables import TableSpec

BQ_TYPES = {
    "STRING": "STRING",
    "FLOAT": "FLOAT64",
    "INT": "INT64",
    "BOOL": "BOOL",
    "TIMESTAMP": "TIMESTAMP",
    # JSON as text, like the DuckDB warehouse: a load from pandas needs no conversion, and
    # BigQuery's JSON_VALUE / JSON_QUERY accept STRING arguments.
    "JSON": "STRING",
}
_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


class BigQueryWarehouse(Warehouse):
    project: str = Field(description="GCP project id holding the datasets")
    dataset_prefix: str = Field("", description="prefix of every dataset, e.g. 'dev_' -> dev_market_data")
    location: str = Field("US", description="BigQuery location of datasets and jobs")

    _client: Any = PrivateAttr(default=None)
    _ensured: set[tuple[str, tuple[str, ...]]] = PrivateAttr(default_factory=set)  # (table, its columns)

    def with_client(self, client: Any) -> BigQueryWarehouse:
        """Use the given ``bigquery.Client`` (tests inject a fake of the same surface)."""
        self._client = client
        return self

    @property
    def client(self) -> bigquery.Client:
        if self._client is None:
            self._client = bigquery.Client(project=self.project, location=self.location)
        return self._client

    def dataset_id(self, schema: str) -> str:
        return f"{self.project}.{self.dataset_prefix}{schema}"

    def table_id(self, spec: TableSpec) -> str:
        return f"{self.dataset_id(spec.schema)}.{spec.table}"

    def _qualified(self, spec: TableSpec) -> str:
        return f"`{self.table_id(spec)}`"

    def table_definition(self, spec: TableSpec) -> bigquery.Table:
        """The BigQuery table a spec describes: schema, day partitioning, clustering."""
        table = bigquery.Table(self.table_id(spec), schema=bq_schema(spec))
        if spec.partition_by:
            table.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=spec.partition_by
            )
        if spec.cluster_by:
            table.clustering_fields = list(spec.cluster_by)
        if spec.description:
            table.description = spec.description
        return table

    def ensure_table(self, spec: TableSpec) -> None:
        if (spec.name, tuple(spec.column_names)) in self._ensured:
            return
        dataset = bigquery.Dataset(self.dataset_id(spec.schema))
        dataset.location = self.location
        self.client.create_dataset(dataset, exists_ok=True)
        table = self.client.create_table(self.table_definition(spec), exists_ok=True)
        present = {field.name for field in table.schema}
        missing = [field for field in bq_schema(spec) if field.name not in present]
        if missing:  # an older release created it: add the new columns (NULLABLE, appended)
            table.schema = [*table.schema, *missing]
            self.client.update_table(table, ["schema"])
        self._ensured.add((spec.name, tuple(spec.column_names)))

    def write(
        self,
        spec: TableSpec,
        frame: pd.DataFrame,
        *,
        replace_where: dict[str, Any] | None = None,
        replace_all: bool = False,
    ) -> int:
        data = self.conform(spec, frame)
        self.ensure_table(spec)
        if replace_all and not len(data):
            self._run(f"DELETE FROM {self._qualified(spec)} WHERE TRUE", [])
        elif replace_where and not replace_all:
            clause, params = where_clause(spec, replace_where)
            self._run(f"DELETE FROM {self._qualified(spec)} WHERE {clause}", params)
        if len(data):
            # WRITE_TRUNCATE swaps the table's content in one load job: readers never see it empty.
            disposition = (
                bigquery.WriteDisposition.WRITE_TRUNCATE
                if replace_all
                else bigquery.WriteDisposition.WRITE_APPEND
            )
            config = bigquery.LoadJobConfig(write_disposition=disposition, schema=bq_schema(spec))
            self.client.load_table_from_dataframe(data, self.table_id(spec), job_config=config).result()
        return len(data)

    def read(
        self,
        spec: TableSpec,
        where: dict[str, Any] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        names = list(columns or spec.column_names)
        unknown = [c for c in names if c not in spec.column_names]
        if unknown:
            raise ValueError(f"{spec.name}: no column(s) {', '.join(unknown)}")
        sql = f"SELECT {', '.join(f'`{c}`' for c in names)} FROM {self._qualified(spec)}"
        params: list[Any] = []
        if where:
            clause, params = where_clause(spec, where)
            sql += f" WHERE {clause}"
        try:
            return _frame(self._run(sql, params))
        except gexc.NotFound:
            if self.table_exists(spec):
                raise
            return pd.DataFrame(columns=names)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        text = self.qualify_tables(
            sql, lambda schema, table: f"`{self.project}.{self.dataset_prefix}{schema}.{table}`"
        )
        text = _PARAM.sub(lambda m: f"@{m.group(1)}" if m.group(1) in params else m.group(0), text)
        return _frame(self._run(text, [query_parameter(name, value) for name, value in params.items()]))

    def table_exists(self, spec: TableSpec) -> bool:
        try:
            self.client.get_table(self.table_id(spec))
        except gexc.NotFound:
            return False
        return True

    def _run(self, sql: str, params: list[Any]) -> Any:
        config = bigquery.QueryJobConfig(query_parameters=params)
        return self.client.query(sql, job_config=config, location=self.location).result()


def bq_schema(spec: TableSpec) -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField(name, BQ_TYPES[kind], mode="NULLABLE") for name, kind in spec.columns]


def where_clause(spec: TableSpec, where: dict[str, Any]) -> tuple[str, list[Any]]:
    """``col = @p`` / ``col IN UNNEST(@p)`` / ``col IS NULL``, parameters typed from the spec."""
    kinds = dict(spec.columns)
    parts: list[str] = []
    params: list[Any] = []
    for index, (column, value) in enumerate(where.items()):
        if column not in kinds:
            raise ValueError(f"{spec.name}: no column {column!r}")
        kind = BQ_TYPES[kinds[column]]
        name = f"w{index}"
        if isinstance(value, list | tuple | set):
            values = [_plain(v) for v in value]
            if not values:
                parts.append("FALSE")
                continue
            parts.append(f"`{column}` IN UNNEST(@{name})")
            params.append(bigquery.ArrayQueryParameter(name, kind, values))
        elif value is None:
            parts.append(f"`{column}` IS NULL")
        else:
            parts.append(f"`{column}` = @{name}")
            params.append(bigquery.ScalarQueryParameter(name, kind, _plain(value)))
    return " AND ".join(parts), params


def query_parameter(name: str, value: Any) -> Any:
    """A typed query parameter from a Python value (lists become ARRAY parameters)."""
    if isinstance(value, list | tuple | set):
        values = [_plain(v) for v in value]
        if not values:
            raise ValueError(f"parameter {name!r}: cannot infer the type of an empty list")
        return bigquery.ArrayQueryParameter(name, _bq_type(values[0]), values)
    return bigquery.ScalarQueryParameter(name, _bq_type(value), _plain(value))


def _bq_type(value: Any) -> str:
    value = _plain(value)
    # bool before int: bool is a subclass of int.
    for python_type, bq_type in (
        (bool, "BOOL"),
        (int, "INT64"),
        (float, "FLOAT64"),
        (Decimal, "NUMERIC"),
        (str, "STRING"),
        (bytes, "BYTES"),
        (dt.datetime, "TIMESTAMP"),
        (dt.date, "DATE"),
    ):
        if isinstance(value, python_type):
            return bq_type
    raise TypeError(f"no BigQuery type for parameter value {value!r}")


def _plain(value: Any) -> Any:
    """numpy / pandas scalars as the Python values the client library serializes."""
    if isinstance(value, np.datetime64):
        value = pd.Timestamp(value)
    if isinstance(value, pd.Timestamp):
        return value.tz_localize("UTC").to_pydatetime() if value.tzinfo is None else value.to_pydatetime()
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        return value.item()
    return value


def _frame(rows: Any) -> pd.DataFrame:
    """Plain numpy dtypes (not pandas' nullable ones) and UTC timestamps, as DuckDB returns them."""
    frame = rows.to_dataframe(bool_dtype=None, int_dtype=None)
    for col in frame.columns:
        if isinstance(frame[col].dtype, pd.DatetimeTZDtype):
            frame[col] = frame[col].dt.tz_convert("UTC")
    return frame
