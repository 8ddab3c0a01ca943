"""Object store on Cloud Storage (gcp profile): keys are object names under an optional prefix."""

from __future__ import annotations

import contextlib
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import storage
from pydantic import Field, PrivateAttr

from farm_dagster.resources.base import NotFoundError, ObjectStore


class GCSObjectStore(ObjectStore):
    bucket: str = Field(description="Cloud Storage bucket name (without gs://)")
    project: str | None = Field(None, description="GCP project id billed for the requests")
    prefix: str = Field("", description="folder inside the bucket for every key, e.g. 'farm/'")

    _client: Any = PrivateAttr(default=None)

    def with_client(self, client: Any) -> GCSObjectStore:
        """Use the given ``storage.Client`` (tests inject a fake of the same surface)."""
        self._client = client
        return self

    @property
    def client(self) -> storage.Client:
        if self._client is None:
            self._client = storage.Client(project=self.project)
        return self._client

    def _name(self, key: str) -> str:
        return f"{self.prefix}{self.clean_key(key)}"

    def _blob(self, key: str) -> storage.Blob:
        return self.client.bucket(self.bucket).blob(self._name(key))

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> str:
        # A single-request upload replaces the object atomically: readers see the old or the new bytes.
        self._blob(key).upload_from_string(data, content_type=content_type or "application/octet-stream")
        return self.uri(key)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._blob(key).download_as_bytes()
        except gexc.NotFound:
            raise NotFoundError(key) from None

    def exists(self, key: str) -> bool:
        return bool(self._blob(key).exists())

    def list_keys(self, prefix: str = "") -> list[str]:
        blobs = self.client.list_blobs(self.bucket, prefix=f"{self.prefix}{prefix}")
        return sorted(blob.name[len(self.prefix) :] for blob in blobs if not blob.name.endswith("/"))

    def delete(self, key: str) -> None:
        # Deleting a missing object is a no-op, as in the directory store.
        with contextlib.suppress(gexc.NotFound):
            self._blob(key).delete()

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket}/{self._name(key)}"
