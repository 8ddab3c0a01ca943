"""In-memory stand-ins for the *client library surface* BigQueryWarehouse and GCSObjectStore call.

There is no BigQuery or Cloud Storage emulator here, so the contract tests inject these through
``with_client``. They implement exactly the methods the resources use, take and return the real
google-cloud objects (``bigquery.Table``, ``QueryJobConfig`` with ``ScalarQueryParameter`` ...),
raise the library's exceptions (``NotFound``, ``Conflict``), and record every call so tests can
assert on what would have been sent. The BigQuery fake executes the emitted GoogleSQL on DuckDB
after a small, strict translation: SQL the translation does not understand fails the test.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import duckdb
import pandas as pd
from google.api_core import exceptions as gexc
from google.cloud import bigquery

_DUCK = {
    "STRING": "VARCHAR",
    "FLOAT64": "DOUBLE",
    "INT64": "BIGINT",
    "BOOL": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMPTZ",
    "JSON": "JSON",
}
_PY = {
    "STRING": (str,),
    "FLOAT64": (float, int),
    "INT64": (int,),
    "BOOL": (bool,),
    "TIMESTAMP": (dt.datetime,),
    "DATE": (dt.date,),
    "NUMERIC": (Decimal,),
    "BYTES": (bytes,),
}
_TABLE_REF = re.compile(r"`([a-z][a-z0-9-]*)\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)`")
_COLUMN_REF = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")
_UNNEST = re.compile(r"IN UNNEST\(@([A-Za-z_][A-Za-z0-9_]*)\)")
_PARAM = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")


@dataclass
class _Result:
    frame: pd.DataFrame
    num_dml_affected_rows: int | None = None
    to_dataframe_kwargs: list[dict[str, Any]] = field(default_factory=list)

    def to_dataframe(self, **kwargs: Any) -> pd.DataFrame:
        self.to_dataframe_kwargs.append(kwargs)
        return self.frame.copy()


@dataclass
class _Job:
    outcome: _Result | Exception

    def result(self) -> _Result:
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


class FakeBigQueryClient:
    """``bigquery.Client`` surface: create_dataset, create_table, update_table, get_table, query,
    load_table_from_dataframe."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET TimeZone = 'UTC'")
        self.datasets: dict[str, bigquery.Dataset] = {}
        self.tables: dict[str, bigquery.Table] = {}
        self.queries: list[tuple[str, bigquery.QueryJobConfig, str | None]] = []
        self.loads: list[tuple[str, bigquery.LoadJobConfig]] = []
        self.results: list[_Result] = []

    def create_dataset(self, dataset: bigquery.Dataset, exists_ok: bool = False) -> bigquery.Dataset:
        assert isinstance(dataset, bigquery.Dataset)
        if dataset.project != self.project:
            raise gexc.Forbidden(f"dataset {dataset.full_dataset_id} is not in project {self.project}")
        if dataset.dataset_id in self.datasets:
            if not exists_ok:
                raise gexc.Conflict(f"Already Exists: Dataset {dataset.full_dataset_id}")
            return self.datasets[dataset.dataset_id]
        self.con.execute(f'CREATE SCHEMA "{dataset.dataset_id}"')
        self.datasets[dataset.dataset_id] = dataset
        return dataset

    def create_table(self, table: bigquery.Table, exists_ok: bool = False) -> bigquery.Table:
        assert isinstance(table, bigquery.Table)
        key = f"{table.project}.{table.dataset_id}.{table.table_id}"
        if table.dataset_id not in self.datasets:
            raise gexc.NotFound(f"Not found: Dataset {table.project}:{table.dataset_id}")
        if key in self.tables:
            if not exists_ok:
                raise gexc.Conflict(f"Already Exists: Table {key}")
            return self.tables[key]
        cols = ", ".join(f'"{f.name}" {_DUCK[f.field_type]}' for f in table.schema)
        self.con.execute(f'CREATE TABLE "{table.dataset_id}"."{table.table_id}" ({cols})')
        self.tables[key] = table
        return table

    def update_table(self, table: bigquery.Table, fields: list[str]) -> bigquery.Table:
        """Schema updates as BigQuery allows them: NULLABLE columns appended, nothing dropped or changed."""
        key = f"{table.project}.{table.dataset_id}.{table.table_id}"
        if key not in self.tables:
            raise gexc.NotFound(f"Not found: Table {key}")
        if fields != ["schema"]:
            raise AssertionError(f"the fake updates the schema only, got {fields}")
        # The stored columns (the caller may have mutated the Table object this fake handed out).
        old = [
            row[0]
            for row in self.con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
                "ORDER BY ordinal_position",
                [table.dataset_id, table.table_id],
            ).fetchall()
        ]
        new = list(table.schema)
        if [f.name for f in new[: len(old)]] != old:
            raise gexc.BadRequest(f"Provided Schema does not match Table {key}: fields may only be appended")
        for added in new[len(old) :]:
            if added.mode == "REQUIRED":
                raise gexc.BadRequest(f"Cannot add REQUIRED field {added.name} to an existing table")
            self.con.execute(
                f'ALTER TABLE "{table.dataset_id}"."{table.table_id}" ADD COLUMN "{added.name}" {_DUCK[added.field_type]}'
            )
        self.tables[key] = table
        return table

    def get_table(self, table: str) -> bigquery.Table:
        if table not in self.tables:
            raise gexc.NotFound(f"Not found: Table {table}")
        return self.tables[table]

    def query(
        self, query: str, job_config: bigquery.QueryJobConfig | None = None, location: str | None = None
    ) -> _Job:
        config = job_config or bigquery.QueryJobConfig()
        self.queries.append((query, config, location))
        try:
            sql, params = self._translate(query, config.query_parameters)
            result = _Result(self.con.execute(sql, params).df())
        except (gexc.GoogleAPICallError, duckdb.Error) as exc:
            return _Job(exc if isinstance(exc, gexc.GoogleAPICallError) else gexc.BadRequest(str(exc)))
        self.results.append(result)
        return _Job(result)

    def load_table_from_dataframe(
        self, dataframe: pd.DataFrame, destination: str, job_config: bigquery.LoadJobConfig | None = None
    ) -> _Job:
        config = job_config or bigquery.LoadJobConfig()
        self.loads.append((destination, config))
        if destination not in self.tables:
            return _Job(gexc.NotFound(f"Not found: Table {destination}"))
        truncate = config.write_disposition == bigquery.WriteDisposition.WRITE_TRUNCATE
        if config.write_disposition != bigquery.WriteDisposition.WRITE_APPEND and not truncate:
            raise AssertionError(
                f"the fake implements WRITE_APPEND and WRITE_TRUNCATE, got {config.write_disposition}"
            )
        table = self.tables[destination]
        # Parquet loads match columns by name: the job's schema must name the table's columns.
        if config.schema is not None and sorted(f.name for f in config.schema) != sorted(
            f.name for f in table.schema
        ):
            return _Job(gexc.BadRequest(f"schema of the load does not match {destination}"))
        self.con.register("_incoming", dataframe)
        try:
            if truncate:
                self.con.execute(f'DELETE FROM "{table.dataset_id}"."{table.table_id}"')
            self.con.execute(
                f'INSERT INTO "{table.dataset_id}"."{table.table_id}" BY NAME SELECT * FROM _incoming'
            )
        finally:
            self.con.unregister("_incoming")
        return _Job(_Result(pd.DataFrame()))

    def _translate(self, query: str, parameters: list[Any]) -> tuple[str, dict[str, Any]]:
        """GoogleSQL as the resource emits it -> DuckDB SQL, checking every parameter's type."""
        values: dict[str, Any] = {}
        for param in parameters:
            if isinstance(param, bigquery.ArrayQueryParameter):
                for item in param.values:
                    _check_type(param.name, param.array_type, item)
                values[param.name] = list(param.values)
            elif isinstance(param, bigquery.ScalarQueryParameter):
                _check_type(param.name, param.type_, param.value)
                values[param.name] = param.value
            else:
                raise AssertionError(f"unexpected query parameter {param!r}")

        def table(match: re.Match[str]) -> str:
            project, dataset, name = match.groups()
            key = f"{project}.{dataset}.{name}"
            if key not in self.tables:
                raise gexc.NotFound(f"Not found: Table {key}")
            return f'"{dataset}"."{name}"'

        sql = _TABLE_REF.sub(table, query)
        if "`" in _COLUMN_REF.sub("", sql):
            raise gexc.BadRequest(f"unexpected backtick quoting in {query!r}")
        sql = _COLUMN_REF.sub(lambda m: f'"{m.group(1)}"', sql)
        used = set(_PARAM.findall(sql))
        missing = used - set(values)
        if missing:
            raise gexc.BadRequest(f"Query parameter(s) {sorted(missing)} not found")
        sql = _UNNEST.sub(lambda m: f"IN (SELECT UNNEST(${m.group(1)}))", sql)
        sql = _PARAM.sub(lambda m: f"${m.group(1)}", sql)
        if "$" in query:
            raise gexc.BadRequest(f"GoogleSQL has no $name parameters: {query!r}")
        return sql, {name: value for name, value in values.items() if name in used}


def _check_type(name: str, bq_type: str, value: Any) -> None:
    if value is None:
        return
    allowed = _PY.get(bq_type)
    if allowed is None or not isinstance(value, allowed) or (bq_type != "BOOL" and isinstance(value, bool)):
        raise gexc.BadRequest(f"query parameter {name}: {value!r} is not a {bq_type}")


class FakeBlob:
    def __init__(self, bucket: FakeBucket, name: str) -> None:
        self.bucket, self.name = bucket, name

    @property
    def content_type(self) -> str | None:
        stored = self.bucket.objects.get(self.name)
        return stored[1] if stored else None

    def upload_from_string(self, data: bytes | str, content_type: str = "text/plain") -> None:
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self.bucket.objects[self.name] = (payload, content_type)

    def download_as_bytes(self) -> bytes:
        if self.name not in self.bucket.objects:
            raise gexc.NotFound(f"No such object: {self.bucket.name}/{self.name}")
        return self.bucket.objects[self.name][0]

    def exists(self) -> bool:
        return self.name in self.bucket.objects

    def delete(self) -> None:
        if self.bucket.objects.pop(self.name, None) is None:
            raise gexc.NotFound(f"No such object: {self.bucket.name}/{self.name}")


class FakeBucket:
    def __init__(self, name: str) -> None:
        self.name = name
        self.objects: dict[str, tuple[bytes, str]] = {}

    def blob(self, blob_name: str) -> FakeBlob:
        return FakeBlob(self, blob_name)


class FakeStorageClient:
    """``storage.Client`` surface: bucket(name).blob(name) and list_blobs(bucket, prefix)."""

    def __init__(self, bucket_names: tuple[str, ...]) -> None:
        self.buckets = {name: FakeBucket(name) for name in bucket_names}

    def bucket(self, bucket_name: str) -> FakeBucket:
        if bucket_name not in self.buckets:
            raise gexc.NotFound(f"bucket {bucket_name} does not exist")
        return self.buckets[bucket_name]

    def list_blobs(self, bucket_or_name: str | FakeBucket, prefix: str | None = None) -> list[FakeBlob]:
        bucket = self.bucket(bucket_or_name if isinstance(bucket_or_name, str) else bucket_or_name.name)
        # Cloud Storage lists in lexicographic order of names.
        return [bucket.blob(name) for name in sorted(bucket.objects) if name.startswith(prefix or "")]
