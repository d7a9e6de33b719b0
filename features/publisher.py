"""Publishing events to Kafka, packed so the stream pays Kafka's per-message cost rarely.

Events are grouped by the partition their customer hashes to (Kafka's default
murmur2 partitioner on the customer id, the same one a keyed producer uses), then sent as
envelopes: one message per partition holds up to `max_events_per_message` events, in
their original order, so every customer's events stay ordered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from features.events import Event, encode_envelope


class EventPublisher:
    """Sends validated events to the events topic; returns once the broker has them."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, *, max_events_per_message: int = 500
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._max_events_per_message = max_events_per_message
        self._partitioner = DefaultPartitioner()

    async def publish(self, events: Sequence[Event]) -> int:
        """Publish events; returns how many Kafka messages carried them."""
        if not events:
            return 0
        partitions = sorted(await self._producer.partitions_for(self._topic))
        by_partition: dict[int, list[Event]] = {}
        for event in events:
            partition = self._partitioner(event.customer_id.encode(), partitions, partitions)
            by_partition.setdefault(partition, []).append(event)
        sends = []
        for partition, partition_events in by_partition.items():
            for start in range(0, len(partition_events), self._max_events_per_message):
                chunk = partition_events[start : start + self._max_events_per_message]
                sends.append(
                    await self._producer.send(
                        self._topic, encode_envelope(chunk), partition=partition
                    )
                )
        await asyncio.gather(*sends)
        return len(sends)
