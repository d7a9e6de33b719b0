"""The engine's topics on the real embedded broker: creation, and trimming what was consumed."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from engine.core.settings import Settings
from engine.stream.topics import ensure_topics, trim_consumed


async def test_trimming_deletes_what_the_workers_committed_and_nothing_more(
    settings: Settings,
) -> None:
    await ensure_topics(settings)
    events = TopicPartition(settings.events_topic, 0)
    outcomes = TopicPartition(settings.outcomes_topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for n in range(20):
            await producer.send_and_wait(settings.events_topic, b"%d" % n, partition=0)
            await producer.send_and_wait(settings.outcomes_topic, b"[]", partition=0)
    finally:
        await producer.stop()
    # the workers' group (its id is the worker id) has applied 12 events and 5 outcomes
    group = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.worker_id,
        enable_auto_commit=False,
    )
    await group.start()
    try:
        group.assign([events, outcomes])
        await group.commit({events: OffsetAndMetadata(12, ""), outcomes: OffsetAndMetadata(5, "")})
    finally:
        await group.stop()

    assert await trim_consumed(settings) == 2

    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await reader.start()
    try:
        starts = await reader.beginning_offsets([events, outcomes])
        ends = await reader.end_offsets([events, outcomes])
    finally:
        await reader.stop()
    assert starts == {events: 12, outcomes: 5}
    assert ends == {events: 20, outcomes: 20}  # what waits is all still there


async def test_nothing_committed_is_nothing_trimmed(settings: Settings) -> None:
    await ensure_topics(settings)
    assert await trim_consumed(settings) == 0
