"""EventPublisher against the real embedded Kafka: exactly once, per-customer order, chunks."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from collections import Counter, defaultdict

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from engine.core.settings import Settings
from engine.stream.topics import ensure_topics
from features.events import Event, decode_message, encode_envelope
from features.publisher import EventPublisher

MAX_PER_MESSAGE = 7
EVENT_COUNT = 200
CUSTOMER_COUNT = 30
CONSUME_TIMEOUT_S = 20.0


def make_events() -> list[Event]:
    rng = random.Random(11)
    customers = [f"C{n:03d}" for n in range(CUSTOMER_COUNT)]
    return [
        Event.model_validate(
            {
                "event_id": f"e{i:04d}",
                "customer_id": rng.choice(customers),
                "type": "login",
                "channel": "mobile",
                "ts": 1767605400 + i,
                "attrs": {"seq": i},
            }
        )
        for i in range(EVENT_COUNT)
    ]


async def consume_all(
    settings: Settings, expected_events: int
) -> list[tuple[int, int, list[Event]]]:
    """Every message of the events topic as (partition, offset, events), in partition order."""
    assert settings.kafka_bootstrap is not None
    consumer = AIOKafkaConsumer(
        settings.events_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,  # the least a Kafka broker accepts (noida-db too)
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    messages: list[tuple[int, int, list[Event]]] = []
    try:
        async with asyncio.timeout(CONSUME_TIMEOUT_S):
            seen = 0
            while seen < expected_events:
                batch = await consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for record in records:
                        assert record.value is not None
                        events, rejections, _ = decode_message(record.value)
                        assert rejections == []
                        messages.append((tp.partition, record.offset, events))
                        seen += len(events)
        # anything more (a duplicate) would arrive now
        extra = await consumer.getmany(timeout_ms=300)
        assert sum(len(records) for records in extra.values()) == 0
    finally:
        await consumer.stop()
    return sorted(messages, key=lambda message: (message[0], message[1]))


async def test_published_events_arrive_once_in_order_in_one_partition_per_customer(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    events = make_events()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        publisher = EventPublisher(
            producer, settings.events_topic, max_events_per_message=MAX_PER_MESSAGE
        )
        sent_messages = await publisher.publish(events)
        assert await publisher.publish([]) == 0
    finally:
        await producer.stop()

    messages = await consume_all(settings, EVENT_COUNT)
    received = [event for _, _, message_events in messages for event in message_events]

    # every event exactly once, unchanged
    assert Counter(event.event_id for event in received) == Counter(
        event.event_id for event in events
    )
    assert sorted(received, key=lambda event: event.event_id) == events

    # each customer in exactly one partition
    partitions_of: dict[str, set[int]] = defaultdict(set)
    for partition, _, message_events in messages:
        for event in message_events:
            partitions_of[event.customer_id].add(partition)
    assert len(partitions_of) == CUSTOMER_COUNT
    assert all(len(partitions) == 1 for partitions in partitions_of.values())
    used = {partition for partitions in partitions_of.values() for partition in partitions}
    assert len(used) > 1, "all customers in one partition: the test would prove nothing"
    assert used <= set(range(settings.topic_partitions))

    # per-customer order (and per-partition order) preserved
    for customer in partitions_of:
        sent = [event.event_id for event in events if event.customer_id == customer]
        got = [event.event_id for event in received if event.customer_id == customer]
        assert got == sent, customer

    # chunking: no envelope above the limit, and as few envelopes as the limit allows
    assert len(messages) == sent_messages
    assert all(1 <= len(message_events) <= MAX_PER_MESSAGE for _, _, message_events in messages)
    per_partition = Counter(partition for partition, _, _ in messages)
    events_per_partition = Counter(
        partition for partition, _, message_events in messages for _ in message_events
    )
    for partition, count in events_per_partition.items():
        assert per_partition[partition] == math.ceil(count / MAX_PER_MESSAGE)
    assert sent_messages < EVENT_COUNT


async def test_large_events_are_packed_under_the_byte_limit_in_order(settings: Settings) -> None:
    await ensure_topics(settings)
    padding = {f"a{n}": "x" * 200 for n in range(31)}  # ~7 KB per event, with "seq"
    events = [
        event.model_copy(update={"attrs": padding | {"seq": index}})
        for index, event in enumerate(make_events())
    ]
    limit = 64 * 1024
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        publisher = EventPublisher(producer, settings.events_topic, max_message_bytes=limit)
        await publisher.publish(events)  # ~1.4 MB in all: one message per partition would fail
    finally:
        await producer.stop()
    messages = await consume_all(settings, EVENT_COUNT)
    received = [event for _, _, message_events in messages for event in message_events]
    assert sorted(received, key=lambda event: event.event_id) == events
    for customer in {event.customer_id for event in events}:
        sent = [event.event_id for event in events if event.customer_id == customer]
        assert [event.event_id for event in received if event.customer_id == customer] == sent
    assert all(len(encode_envelope(message_events)) <= limit for _, _, message_events in messages)
    assert len(messages) > settings.topic_partitions
