"""Cache on Redis: the local profile's server, or Memorystore in gcp (it speaks the same protocol)."""

from __future__ import annotations

import redis
from pydantic import Field, PrivateAttr

from farm_dagster.resources.base import Cache


class RedisCache(Cache):
    url: str = Field("redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL")
    key_prefix: str = Field("", description="namespace for every key (tests, tenants)")
    socket_timeout_seconds: float = Field(2.0, description="a dead cache must fail fast, not hang the API")

    _client: redis.Redis | None = PrivateAttr(default=None)

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.url,
                socket_timeout=self.socket_timeout_seconds,
                socket_connect_timeout=self.socket_timeout_seconds,
            )
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.key_prefix}{key}"

    def get(self, key: str) -> bytes | None:
        return self.client.get(self._key(key))

    def set(self, key: str, value: bytes | str, ttl_seconds: int | None = None) -> None:
        self.client.set(self._key(key), value, ex=ttl_seconds)

    def delete(self, key: str) -> None:
        self.client.delete(self._key(key))

    def ttl(self, key: str) -> int | None:
        left = self.client.ttl(self._key(key))
        return None if left is None or left < 0 else int(left)

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False
