"""Bus on Cloud Pub/Sub (gcp profile): one topic per bus topic, one subscription per consumer group.

Pub/Sub subscriptions are project-wide while the bus names a subscription per topic (like a Redis
consumer group), so the subscription id is ``<topic>--<subscription>``. Pulls are synchronous
(``subscriber.pull``) because the callers are batch loops (ingester, sensors), not servers.
Pub/Sub acknowledges by *ack id*, which changes on every delivery, while the bus acknowledges by
message id: the resource remembers the latest ack id of every message it pulled.
``PUBSUB_EMULATOR_HOST`` is honoured by the client library itself.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import pubsub_v1
from pydantic import Field, PrivateAttr

from farm_dagster.resources.base import Bus, BusMessage

# Pub/Sub's bounds for a subscription's ack deadline; modifyAckDeadline accepts 0..600 per message.
_SUBSCRIPTION_MIN_DEADLINE, _MAX_DEADLINE = 10, 600
_MAX_TRACKED_ACK_IDS = 100_000


class PubSubBus(Bus):
    project: str = Field(description="GCP project id holding the topics (any id works on the emulator)")
    ack_deadline_seconds: float = Field(
        30.0, description="unacked messages are redelivered after this (below 10 s: set per message)"
    )
    publish_timeout_seconds: float = Field(30.0, description="how long publish waits for the server's id")

    _publisher: Any = PrivateAttr(default=None)
    _subscriber: Any = PrivateAttr(default=None)
    _ack_ids: OrderedDict[tuple[str, str], str] = PrivateAttr(default_factory=OrderedDict)
    _known_topics: set[str] = PrivateAttr(default_factory=set)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def with_clients(self, publisher: Any, subscriber: Any) -> PubSubBus:
        """Use the given client objects (tests, or a caller sharing one channel)."""
        self._publisher, self._subscriber = publisher, subscriber
        return self

    @property
    def publisher(self) -> pubsub_v1.PublisherClient:
        if self._publisher is None:
            self._publisher = pubsub_v1.PublisherClient()
        return self._publisher

    @property
    def subscriber(self) -> pubsub_v1.SubscriberClient:
        if self._subscriber is None:
            self._subscriber = pubsub_v1.SubscriberClient()
        return self._subscriber

    def topic_path(self, topic: str) -> str:
        return self.publisher.topic_path(self.project, topic)

    def subscription_path(self, topic: str, subscription: str) -> str:
        return self.subscriber.subscription_path(self.project, f"{topic}--{subscription}")

    def _ensure_topic(self, topic: str) -> str:
        path = self.topic_path(topic)
        if path not in self._known_topics:
            with contextlib.suppress(gexc.AlreadyExists):
                self.publisher.create_topic(name=path)
            self._known_topics.add(path)
        return path

    def ensure_subscription(self, topic: str, subscription: str) -> None:
        topic_path = self._ensure_topic(topic)
        deadline = min(_MAX_DEADLINE, max(_SUBSCRIPTION_MIN_DEADLINE, math.ceil(self.ack_deadline_seconds)))
        with contextlib.suppress(gexc.AlreadyExists):
            self.subscriber.create_subscription(
                request={
                    "name": self.subscription_path(topic, subscription),
                    "topic": topic_path,
                    "ack_deadline_seconds": deadline,
                }
            )

    def publish(self, topic: str, payload: dict[str, Any], attributes: dict[str, str] | None = None) -> str:
        # Same encoding as the Redis bus: JSON, non-JSON scalars (timestamps) as strings.
        data = json.dumps(payload, default=str).encode()
        attrs = {str(k): str(v) for k, v in (attributes or {}).items()}
        future = self.publisher.publish(self._ensure_topic(topic), data, **attrs)
        return str(future.result(timeout=self.publish_timeout_seconds))

    def pull(
        self, topic: str, subscription: str, max_messages: int = 100, timeout_seconds: float = 1.0
    ) -> list[BusMessage]:
        """Wait up to ``timeout_seconds`` for a first batch, then take what is already there."""
        path = self.subscription_path(topic, subscription)
        deadline = time.monotonic() + max(timeout_seconds, 0.0)
        received: list[Any] = []
        while len(received) < max_messages:
            remaining = deadline - time.monotonic()
            wait = remaining if not received and remaining > 0 else 0.0
            batch = self._pull_once(path, max_messages - len(received), wait_seconds=wait)
            received.extend(batch)
            if not batch:
                if received or remaining <= 0:
                    break
                # The server may answer a long poll early and empty; wait a little, then ask again.
                time.sleep(min(0.05, remaining))
        if not received:
            return []
        ack_ids = [item.ack_id for item in received]
        if self.ack_deadline_seconds < _SUBSCRIPTION_MIN_DEADLINE:
            self.subscriber.modify_ack_deadline(
                request={
                    "subscription": path,
                    "ack_ids": ack_ids,
                    "ack_deadline_seconds": max(1, math.ceil(self.ack_deadline_seconds)),
                }
            )
        with self._lock:
            for item in received:
                key = (path, item.message.message_id)
                self._ack_ids[key] = item.ack_id
                self._ack_ids.move_to_end(key)
            # Messages a consumer never acks would pile up here; the oldest ack ids are long expired.
            while len(self._ack_ids) > _MAX_TRACKED_ACK_IDS:
                self._ack_ids.popitem(last=False)
        return [_decode(item.message) for item in received]

    def _pull_once(self, path: str, count: int, wait_seconds: float) -> list[Any]:
        """One pull: a long poll of ``wait_seconds``, or an immediate answer when it is 0."""
        request: dict[str, Any] = {"subscription": path, "max_messages": count}
        if wait_seconds <= 0:
            request["return_immediately"] = True
        try:
            response = self.subscriber.pull(
                request=request, timeout=wait_seconds if wait_seconds > 0 else 5.0
            )
        except gexc.DeadlineExceeded:
            return []
        return list(response.received_messages)

    def _take_ack_ids(self, path: str, message_ids: Sequence[str]) -> list[str]:
        with self._lock:
            found = [self._ack_ids.pop((path, mid), None) for mid in message_ids]
        # A message this process never pulled (or already acked) has no ack id here; Pub/Sub will
        # redeliver it after its deadline, which at-least-once consumers tolerate.
        return [ack_id for ack_id in found if ack_id]

    def ack(self, topic: str, subscription: str, message_ids: Sequence[str]) -> None:
        path = self.subscription_path(topic, subscription)
        ack_ids = self._take_ack_ids(path, message_ids)
        if ack_ids:
            self.subscriber.acknowledge(request={"subscription": path, "ack_ids": ack_ids})

    def nack(self, topic: str, subscription: str, message_ids: Sequence[str]) -> None:
        path = self.subscription_path(topic, subscription)
        ack_ids = self._take_ack_ids(path, message_ids)
        if ack_ids:
            # Deadline 0 is Pub/Sub's nack: the message is eligible for redelivery at once.
            self.subscriber.modify_ack_deadline(
                request={"subscription": path, "ack_ids": ack_ids, "ack_deadline_seconds": 0}
            )


def _decode(message: Any) -> BusMessage:
    return BusMessage(
        id=str(message.message_id),
        payload=json.loads(message.data.decode() if message.data else "{}"),
        attributes=dict(message.attributes),
    )
