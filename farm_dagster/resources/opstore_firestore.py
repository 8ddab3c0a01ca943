"""Operational store on Firestore (gcp profile): one collection per store collection.

Documents hold the same JSON as the SQLite store (values go through ``json`` with ``default=str``,
so a timestamp is stored as text in both backends and queries behave alike). ``update`` and
``transition`` are Firestore transactions: a concurrent writer makes the transaction retry on a
fresh read, so a compare-and-set cannot be won twice. ``FIRESTORE_EMULATOR_HOST`` is honoured by
the client library itself.

Production note: Firestore needs a composite index for a query that filters on one field and orders
by another; the emulator does not. Create those indexes with the queries that need them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath
from pydantic import Field, PrivateAttr

from farm_dagster.resources.base import Filter, NotFoundError, OperationalStore

_OPS = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=", "in": "in"}
_INEQUALITIES = frozenset({"<", "<=", ">", ">=", "!="})
_MAX_IN_VALUES = 30  # Firestore's limit on the values of one "in" filter


class FirestoreStore(OperationalStore):
    project: str = Field(description="GCP project id (any id works on the emulator)")
    database: str = Field("(default)", description="Firestore database id")
    collection_prefix: str = Field("", description="namespace for every collection (environments, tests)")
    max_transaction_attempts: int = Field(20, ge=1, description="retries of a contended transaction")

    _client: Any = PrivateAttr(default=None)

    def with_client(self, client: Any) -> FirestoreStore:
        """Use the given ``firestore.Client`` (tests, or a caller sharing one)."""
        self._client = client
        return self

    @property
    def client(self) -> firestore.Client:
        if self._client is None:
            self._client = firestore.Client(project=self.project, database=self.database)
        return self._client

    def _ref(self, collection: str, doc_id: str) -> firestore.DocumentReference:
        return self.client.collection(f"{self.collection_prefix}{collection}").document(doc_id)

    def put(self, collection: str, doc_id: str, doc: dict[str, Any]) -> None:
        self._ref(collection, doc_id).set(_as_json(doc))

    def get(self, collection: str, doc_id: str) -> dict[str, Any] | None:
        snap = self._ref(collection, doc_id).get()
        return _doc(snap) if snap.exists else None

    def update(self, collection: str, doc_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        ref = self._ref(collection, doc_id)
        changes = _as_json(fields)

        @firestore.transactional
        def merge(transaction: firestore.Transaction) -> dict[str, Any]:
            doc = _read(transaction, ref, collection, doc_id)
            doc.update(changes)
            # set(), not update(): update() would read dotted keys as nested field paths.
            transaction.set(ref, doc)
            return doc

        doc = merge(self.client.transaction(max_attempts=self.max_transaction_attempts))
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
        ref = self._ref(collection, doc_id)
        allowed = list(allowed_from)
        changes = _as_json({**(extra or {}), field_name: to_value})

        @firestore.transactional
        def compare_and_set(transaction: firestore.Transaction) -> bool:
            doc = _read(transaction, ref, collection, doc_id)
            if doc.get(field_name) not in allowed:
                return False
            doc.update(changes)
            transaction.set(ref, doc)
            return True

        return compare_and_set(self.client.transaction(max_attempts=self.max_transaction_attempts))

    def query(
        self,
        collection: str,
        filters: Sequence[Filter] = (),
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        query: Any = self.client.collection(f"{self.collection_prefix}{collection}")
        for field_name, op, value in filters:
            if op not in _OPS:
                raise ValueError(f"unsupported filter operator {op!r}")
            if op == "in":
                value = list(value)
                if not value:
                    return []
                if len(value) > _MAX_IN_VALUES:
                    raise ValueError(
                        f"Firestore 'in' takes at most {_MAX_IN_VALUES} values, got {len(value)}"
                    )
            query = query.where(filter=FieldFilter(field_name, _OPS[op], _as_json({"v": value})["v"]))
        inequality = {name for name, op, _ in filters if op in _INEQUALITIES}
        if inequality - {order_by}:
            # Firestore orders by the inequality fields first, so the store's order (order_by, then
            # id) cannot come from the server: sort the (small) filtered set here.
            docs = [_doc(snap) for snap in query.stream()]
            docs.sort(key=lambda doc: doc["id"])
            if order_by:
                docs = [doc for doc in docs if order_by in doc]
                docs.sort(key=lambda doc: doc[order_by], reverse=descending)
            return docs if limit is None else docs[: int(limit)]
        if order_by:
            direction = firestore.Query.DESCENDING if descending else firestore.Query.ASCENDING
            query = query.order_by(order_by, direction=direction)
        # Ties (and unordered queries) by document id, like the SQLite store.
        query = query.order_by(FieldPath.document_id(), direction=firestore.Query.ASCENDING)
        if limit is not None:
            query = query.limit(int(limit))
        return [_doc(snap) for snap in query.stream()]

    def delete(self, collection: str, doc_id: str) -> None:
        self._ref(collection, doc_id).delete()


def _read(
    transaction: firestore.Transaction, ref: firestore.DocumentReference, collection: str, doc_id: str
) -> dict[str, Any]:
    snap = ref.get(transaction=transaction)
    if not snap.exists:
        raise NotFoundError(f"{collection}/{doc_id}")
    return snap.to_dict() or {}


def _doc(snap: Any) -> dict[str, Any]:
    return {**(snap.to_dict() or {}), "id": snap.id}


def _as_json(doc: dict[str, Any]) -> dict[str, Any]:
    """The document as JSON would carry it (the ``id`` key belongs to the reference, not the body)."""
    return json.loads(json.dumps({k: v for k, v in doc.items() if k != "id"}, default=str))
