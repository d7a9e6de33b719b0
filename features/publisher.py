"""Publishing events to Kafka, packed so the stream pays Kafka's per-message cost rarely.

Events are grouped by the partition their customer hashes to (Kafka's default
murmur2 partitioner on the customer id, the same one a keyed producer uses), then sent as
envelopes: one message per partition holds up to `max_events_per_message` events, in
their original order, so every customer's events stay ordered, and at most
`max_message_bytes` bytes (`features.wire`), so no batch, however large its events, makes
a message the broker refuses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from features.events import Event
from features.wire import pack_json_arrays

#: Below Kafka's default 1 MB message limit with room for the record's own overhead.
DEFAULT_MAX_MESSAGE_BYTES = 512 * 1024
#: How far above the packing limit a producer's own limit (`max_request_size`) is set: a
#: packed message plus the record's overhead always passes it.
PRODUCER_HEADROOM_BYTES = 64 * 1024


class EventPublisher:
    """Sends validated events to the events topic; returns once the broker has them."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        max_events_per_message: int = 500,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._max_events_per_message = max_events_per_message
        self._max_message_bytes = max_message_bytes
        self._partitioner = DefaultPartitioner()

    async def publish(self, events: Sequence[Event]) -> int:
        """Publish events; returns how many Kafka messages carried them.

        Raises `features.wire.OversizedItemError` before sending anything if one event
        alone is larger than a message may be.
        """
        if not events:
            return 0
        partitions = sorted(await self._producer.partitions_for(self._topic))
        by_partition: dict[int, list[Event]] = {}
        for event in events:
            partition = self._partitioner(event.customer_id.encode(), partitions, partitions)
            by_partition.setdefault(partition, []).append(event)
        envelopes = [
            (partition, envelope)
            for partition, partition_events in by_partition.items()
            for envelope in self._envelopes(partition_events)
        ]
        sends = [
            await self._producer.send(self._topic, envelope, partition=partition)
            for partition, envelope in envelopes
        ]
        await asyncio.gather(*sends)
        return len(sends)

    def _envelopes(self, events: list[Event]) -> list[bytes]:
        """One partition's events as envelopes, in order, under both limits."""
        encoded = [orjson.dumps(event.to_wire()) for event in events]
        return [
            envelope
            for start in range(0, len(encoded), self._max_events_per_message)
            for envelope in pack_json_arrays(
                encoded[start : start + self._max_events_per_message],
                max_bytes=self._max_message_bytes,
            )
        ]
