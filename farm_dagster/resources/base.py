"""The five infrastructure interfaces. Each has a ``local`` and a ``gcp`` implementation.

Every implementation is a Dagster ``ConfigurableResource`` (so assets receive it by key) and also a
plain object the API, the ingester and the paper traders construct from settings
(:func:`farm_dagster.resources.factory.build_resources`). Code that uses a resource depends only
on the methods declared here; the contract tests in ``tests/test_resource_contracts.py`` run the
same assertions against both implementations.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd
from dagster import ConfigurableResource

from farm_dagster.resources.tables import TableSpec

# `{schema.table}` in SQL handed to Warehouse.query; each backend qualifies the name its own way.
TABLE_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)\}")

FilterOp = Literal["==", "!=", "<", "<=", ">", ">=", "in"]
Filter = tuple[str, FilterOp, Any]


class NotFoundError(KeyError):
    """The document or object does not exist."""


class Warehouse(ConfigurableResource):
    """Analytical tables (``schema.table`` names, see :mod:`farm_dagster.resources.tables`)."""

    @staticmethod
    def conform(spec: TableSpec, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame``'s columns in the table's order; a missing column is an error, not a NULL."""
        missing = [c for c in spec.column_names if c not in frame.columns]
        if missing:
            raise ValueError(f"{spec.name}: frame lacks column(s) {', '.join(missing)}")
        return frame[spec.column_names]

    def ensure_table(self, spec: TableSpec) -> None:
        raise NotImplementedError

    def write(
        self,
        spec: TableSpec,
        frame: pd.DataFrame,
        *,
        replace_where: dict[str, Any] | None = None,
        replace_all: bool = False,
    ) -> int:
        """Append ``frame``; with ``replace_where`` first delete rows equal on those columns.

        ``replace_where`` makes partition writes idempotent: re-running a backtest for the same
        agent and run replaces its rows instead of duplicating them. ``replace_all`` replaces the
        whole table (snapshot tables such as the current rankings). Returns rows written.
        """
        raise NotImplementedError

    def read(
        self,
        spec: TableSpec,
        where: dict[str, Any] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Rows whose columns equal ``where``'s values (a list value means IN)."""
        raise NotImplementedError

    @staticmethod
    def qualify_tables(sql: str, qualify: Callable[[str, str], str]) -> str:
        """Replace every ``{schema.table}`` with ``qualify(schema, table)``."""
        return TABLE_PLACEHOLDER.sub(lambda m: qualify(m.group(1), m.group(2)), sql)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Run SQL; write table names as ``{schema.table}`` so each backend can qualify them, and
        parameters as ``@name`` (BigQuery's style; the DuckDB backend translates) with ``params``."""
        raise NotImplementedError

    def table_exists(self, spec: TableSpec) -> bool:
        raise NotImplementedError


class ObjectStore(ConfigurableResource):
    """Blobs by key (``agents/<id>/code.py``, ``backtests/<run>/equity.png``)."""

    @staticmethod
    def clean_key(key: str) -> str:
        """The one key rule of every backend: relative, no empty, '.' or '..' segment."""
        clean = key.strip("/")
        if not clean or any(part in ("", ".", "..") for part in clean.split("/")):
            raise ValueError(f"invalid object key {key!r}")
        return clean

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        """Store ``data`` under ``key``; returns the object's URI."""
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        """Raises :class:`NotFoundError` when missing."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def list_keys(self, prefix: str = "") -> list[str]:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def uri(self, key: str) -> str:
        raise NotImplementedError


class OperationalStore(ConfigurableResource):
    """Small JSON documents in collections: agents, backtest runs, paper sessions."""

    def put(self, collection: str, doc_id: str, doc: dict[str, Any]) -> None:
        """Create or overwrite a document."""
        raise NotImplementedError

    def get(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def update(self, collection: str, doc_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Merge ``fields`` into an existing document and return it; raises NotFoundError."""
        raise NotImplementedError

    def transition(
        self,
        collection: str,
        doc_id: str,
        field_name: str,
        allowed_from: Iterable[Any],
        to_value: Any,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Atomically set ``field_name`` to ``to_value`` if its current value is in ``allowed_from``.

        Returns False (and changes nothing) otherwise: two sensors or API calls racing on the
        same status cannot both win.
        """
        raise NotImplementedError

    def query(
        self,
        collection: str,
        filters: Sequence[Filter] = (),
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Documents matching every filter (each document includes its ``id``)."""
        raise NotImplementedError

    def delete(self, collection: str, doc_id: str) -> None:
        raise NotImplementedError


class Cache(ConfigurableResource):
    """Key/value with TTL (leaderboards, rate limits)."""

    def get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def set(self, key: str, value: bytes | str, ttl_seconds: int | None = None) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def ttl(self, key: str) -> int | None:
        """Seconds left, None when the key is missing or has no expiry."""
        raise NotImplementedError

    def ping(self) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class BusMessage:
    id: str
    payload: dict[str, Any]
    attributes: dict[str, str] = field(default_factory=dict)


class Bus(ConfigurableResource):
    """Topics with durable subscriptions (market-data, news-data, backtest-requests).

    At-least-once: a pulled message is redelivered until acknowledged.
    """

    def ensure_subscription(self, topic: str, subscription: str) -> None:
        """Create the topic and the subscription when missing (messages published afterwards reach it)."""
        raise NotImplementedError

    def publish(self, topic: str, payload: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
        raise NotImplementedError

    def pull(
        self, topic: str, subscription: str, max_messages: int = 100, timeout_seconds: float = 1.0
    ) -> list[BusMessage]:
        raise NotImplementedError

    def ack(self, topic: str, subscription: str, message_ids: Sequence[str]) -> None:
        raise NotImplementedError

    def nack(self, topic: str, subscription: str, message_ids: Sequence[str]) -> None:
        """Hand messages back for immediate redelivery (a consumer that cannot process them now)."""
        raise NotImplementedError
