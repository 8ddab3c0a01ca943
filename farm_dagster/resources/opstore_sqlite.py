"""Operational store on SQLite in WAL mode (local profile).

Documents are JSON in one table keyed by (collection, id). WAL lets the API read while a Dagster
run writes; `BEGIN IMMEDIATE` makes status transitions a compare-and-set across processes.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import Field

from farm_dagster.resources.base import Filter, NotFoundError, OperationalStore

_OPS = {"==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (collection, id)
)
"""


class SQLiteOperationalStore(OperationalStore):
    path: str = Field(description="SQLite database file")
    busy_timeout_ms: int = Field(30_000, description="how long a writer waits for another writer")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            con.execute(_SCHEMA)
            yield con
        finally:
            con.close()

    def put(self, collection: str, doc_id: str, doc: dict[str, Any]) -> None:
        body = json.dumps({k: v for k, v in doc.items() if k != "id"}, default=str)
        with self._connect() as con:
            con.execute(
                "INSERT INTO documents (collection, id, data) VALUES (?, ?, ?) "
                "ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data",
                (collection, doc_id, body),
            )

    def get(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        with self._connect() as con:
            row = con.execute(
                "SELECT data FROM documents WHERE collection = ? AND id = ?", (collection, doc_id)
            ).fetchone()
        return None if row is None else {**json.loads(row[0]), "id": doc_id}

    def update(self, collection: str, doc_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                doc = self._locked_get(con, collection, doc_id)
                doc.update({k: v for k, v in fields.items() if k != "id"})
                self._locked_put(con, collection, doc_id, doc)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return {**doc, "id": doc_id}

    def transition(
        self,
        collection: str,
        doc_id: str,
        field_name: str,
        allowed_from: Iterable[Any],
        to_value: Any,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        allowed = list(allowed_from)
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                doc = self._locked_get(con, collection, doc_id)
                if doc.get(field_name) not in allowed:
                    con.execute("ROLLBACK")
                    return False
                doc[field_name] = to_value
                doc.update({k: v for k, v in (extra or {}).items() if k != "id"})
                self._locked_put(con, collection, doc_id, doc)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return True

    def query(
        self,
        collection: str,
        filters: Sequence[Filter] = (),
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        sql = ["SELECT id, data FROM documents WHERE collection = ?"]
        params: list[Any] = [collection]
        for field_name, op, value in filters:
            path = _json_path(field_name)
            if op == "in":
                values = list(value)
                if not values:
                    return []
                sql.append(f"AND json_extract(data, ?) IN ({', '.join('?' for _ in values)})")
                params.extend([path, *values])
            elif op in _OPS:
                sql.append(f"AND json_extract(data, ?) {_OPS[op]} ?")
                params.extend([path, value])
            else:
                raise ValueError(f"unsupported filter operator {op!r}")
        if order_by:
            sql.append(f"ORDER BY json_extract(data, ?) {'DESC' if descending else 'ASC'}, id")
            params.append(_json_path(order_by))
        else:
            sql.append("ORDER BY id")
        if limit is not None:
            sql.append("LIMIT ?")
            params.append(int(limit))
        with self._connect() as con:
            rows = con.execute(" ".join(sql), params).fetchall()
        return [{**json.loads(data), "id": doc_id} for doc_id, data in rows]

    def delete(self, collection: str, doc_id: str) -> None:
        with self._connect() as con:
            con.execute("DELETE FROM documents WHERE collection = ? AND id = ?", (collection, doc_id))

    @staticmethod
    def _locked_get(con: sqlite3.Connection, collection: str, doc_id: str) -> dict[str, Any]:
        row = con.execute(
            "SELECT data FROM documents WHERE collection = ? AND id = ?", (collection, doc_id)
        ).fetchone()
        if row is None:
            raise NotFoundError(f"{collection}/{doc_id}")
        return json.loads(row[0])

    @staticmethod
    def _locked_put(con: sqlite3.Connection, collection: str, doc_id: str, doc: dict[str, Any]) -> None:
        con.execute(
            "UPDATE documents SET data = ? WHERE collection = ? AND id = ?",
            (json.dumps({k: v for k, v in doc.items() if k != "id"}, default=str), collection, doc_id),
        )


def _json_path(field_name: str) -> str:
    if not field_name.replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"invalid field name {field_name!r}")
    return "$." + field_name
