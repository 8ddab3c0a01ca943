"""Bus on Redis Streams (local profile): one stream per topic, one consumer group per subscription.

At-least-once like Pub/Sub: a pulled message stays pending in its group until acknowledged; when
its ack deadline passes (or it is nacked) the next pull claims it again.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from typing import Any

import redis
from pydantic import Field, PrivateAttr

from farm_dagster.resources.base import Bus, BusMessage


class RedisStreamsBus(Bus):
    url: str = Field("redis://127.0.0.1:6379/0", description="redis:// URL")
    stream_prefix: str = Field("bus:", description="stream key prefix")
    ack_deadline_seconds: float = Field(30.0, description="unacked messages are redelivered after this")
    max_len: int = Field(1_000_000, description="approximate cap on a stream's length")

    _client: redis.Redis | None = PrivateAttr(default=None)
    _consumer: str = PrivateAttr(default_factory=lambda: f"{socket.gethostname()}-{id(object())}")

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(self.url, socket_timeout=10, socket_connect_timeout=5)
        return self._client

    def _stream(self, topic: str) -> str:
        return f"{self.stream_prefix}{topic}"

    def ensure_subscription(self, topic: str, subscription: str) -> None:
        try:
            # "$": like a new Pub/Sub subscription, it receives messages published from now on.
            self.client.xgroup_create(self._stream(topic), subscription, id="$", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def publish(self, topic: str, payload: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
        fields = {"payload": json.dumps(payload, default=str), "attributes": json.dumps(attributes or {})}
        msg_id = self.client.xadd(self._stream(topic), fields, maxlen=self.max_len, approximate=True)
        return msg_id.decode() if isinstance(msg_id, bytes) else str(msg_id)

    def pull(
        self, topic: str, subscription: str, max_messages: int = 100, timeout_seconds: float = 1.0
    ) -> list[BusMessage]:
        stream = self._stream(topic)
        idle_ms = int(self.ack_deadline_seconds * 1000)
        # Expired or nacked messages first, so nothing pending is starved by new traffic.
        _, claimed, _ = self.client.xautoclaim(
            stream, subscription, self._consumer, idle_ms, "0-0", count=max_messages
        )
        entries = list(claimed)
        if len(entries) < max_messages:
            block = max(1, int(timeout_seconds * 1000)) if not entries else None
            got = self.client.xreadgroup(
                subscription, self._consumer, {stream: ">"}, count=max_messages - len(entries), block=block
            )
            for _, items in got or []:
                entries.extend(items)
        return [_decode(msg_id, fields) for msg_id, fields in entries if fields]

    def ack(self, topic: str, subscription: str, message_ids: Sequence[str]) -> None:
        if message_ids:
            self.client.xack(self._stream(topic), subscription, *message_ids)

    def nack(self, topic: str, subscription: str, message_ids: Sequence[str]) -> None:
        if message_ids:
            # Mark them idle beyond the deadline: the next pull's XAUTOCLAIM takes them again.
            idle = int(self.ack_deadline_seconds * 1000) + 1
            self.client.xclaim(
                self._stream(topic), subscription, self._consumer, 0, list(message_ids), idle=idle
            )


def _decode(msg_id: bytes | str, fields: dict[bytes, bytes]) -> BusMessage:
    ident = msg_id.decode() if isinstance(msg_id, bytes) else str(msg_id)
    return BusMessage(
        id=ident,
        payload=json.loads(fields[b"payload"]),
        attributes=json.loads(fields.get(b"attributes", b"{}")),
    )
