"""Events through the real broker and a real Faust worker into Redis, checked exactly."""

from __future__ import annotations

import asyncio
import random
import subprocess
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from engine.core.settings import Settings
from features.events import Event
from features.publisher import EventPublisher
from features.state import FeatureFold
from features.stats import IngestCounts, IngestStats
from features.store import RedisFeatureStore

CHANNELS = ("branch", "atm", "mobile", "web", "call_centre", "pos")
#: The features the batch reference below computes.
REFERENCE_FEATURES = {
    "event_count", "first_seen_ts", "last_seen_ts", "txn_count", "txn_amount",
    *(f"ch_{channel}_{suffix}" for channel in CHANNELS for suffix in ("count", "last_ts")),
}  # fmt: skip
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DRAIN_TIMEOUT_S = 60.0


def generate_events(count: int, customers: int, seed: int) -> list[dict[str, Any]]:
    """A shuffled-in-time mix of transactions and logins on six channels."""
    rng = random.Random(seed)
    events = []
    for index in range(count):
        channel = rng.choice(CHANNELS)
        event: dict[str, Any] = {
            "event_id": f"e{seed}-{index}",
            "customer_id": f"C{rng.randrange(customers):03d}",
            "channel": channel,
            # event time deliberately out of arrival order (within the allowed lateness of
            # two days): features go by event time
            "ts": (START + timedelta(minutes=rng.randrange(0, 60 * 40))).isoformat(),
        }
        if channel in ("pos", "web") and rng.random() < 0.7:
            event |= {"type": "transaction", "amount": rng.randrange(100, 50_000) / 100}
        elif channel == "atm":
            event |= {"type": "withdrawal", "amount": 20.0 * rng.randrange(1, 10)}
        else:
            event["type"] = "login"
        events.append(event)
    return events


def reference_features(events: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The expected features, computed directly from the events (a batch reference)."""
    expected: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for raw in events:
        features = expected[raw["customer_id"]]
        ts = datetime.fromisoformat(raw["ts"]).timestamp()
        channel = raw["channel"]
        features["event_count"] += 1
        features["first_seen_ts"] = min(features.get("first_seen_ts") or ts, ts)
        features["last_seen_ts"] = max(features["last_seen_ts"], ts)
        features[f"ch_{channel}_count"] += 1
        features[f"ch_{channel}_last_ts"] = max(features[f"ch_{channel}_last_ts"], ts)
        if raw["type"] == "transaction":
            features["txn_count"] += 1
            features["txn_amount"] += raw["amount"]
    return expected


async def wait_for_processed(stats: IngestStats, expected: int) -> IngestCounts:
    async with asyncio.timeout(DRAIN_TIMEOUT_S):
        while (counts := await stats.read()).processed < expected:
            await asyncio.sleep(0.1)
    return counts


async def read_dead_letters(settings: Settings, expected: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        settings.dlq_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"dlq-reader-{settings.worker_id}",
    )
    await consumer.start()
    records: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            while len(records) < expected:
                batches = await consumer.getmany(timeout_ms=500)
                records += [orjson.loads(m.value) for batch in batches.values() for m in batch]
    finally:
        await consumer.stop()
    return records


async def test_thousand_events_reach_features_exactly_and_bad_ones_dead_letter(
    settings: Settings, redis: Redis, worker: subprocess.Popen[bytes]
) -> None:
    raw_events = generate_events(1000, customers=40, seed=1)
    assert len({raw["channel"] for raw in raw_events}) >= 4
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        publisher = EventPublisher(producer, settings.events_topic, max_events_per_message=50)
        await publisher.publish([Event.model_validate(raw) for raw in raw_events[:500]])
        # a contact point writing straight to Kafka: one bad item amid good neighbours,
        # and one message that is not JSON at all
        neighbours = [
            {"event_id": "n1", "customer_id": "N1", "type": "login", "channel": "sms",
             "ts": START.isoformat()},
            {"event_id": "bad1", "customer_id": "N1", "type": "transaction", "channel": "pos",
             "ts": START.isoformat()},
            {"event_id": "n2", "customer_id": "N1", "type": "login", "channel": "email",
             "ts": (START + timedelta(hours=1)).isoformat()},
            {"event_id": "late1", "customer_id": "N1", "type": "login", "channel": "web",
             "ts": (START - timedelta(days=10)).isoformat()},
        ]  # fmt: skip
        await producer.send_and_wait(settings.events_topic, orjson.dumps(neighbours), partition=0)
        await producer.send_and_wait(settings.events_topic, b"{not json", partition=1)
        await publisher.publish([Event.model_validate(raw) for raw in raw_events[500:]])
    finally:
        await producer.stop()

    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    counts = await wait_for_processed(stats, expected=1000 + 3 + 2)
    assert counts == IngestCounts(applied=1002, duplicates=0, dead_lettered=3)

    store = RedisFeatureStore(
        redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
    )
    expected = reference_features(raw_events)
    for customer_id, expected_features in expected.items():
        stored = await store.read(customer_id)
        assert stored is not None, customer_id
        for name, value in expected_features.items():
            assert round(stored[name], 2) == round(value, 2), (customer_id, name)
        touched = {name for name in REFERENCE_FEATURES if stored[name]}
        assert touched == set(expected_features), customer_id

    neighbour = await store.read("N1")
    assert neighbour is not None
    assert neighbour["event_count"] == 2
    assert neighbour["ch_sms_count"] == 1
    assert neighbour["ch_email_count"] == 1
    assert neighbour["txn_count"] == 0

    dead = await read_dead_letters(settings, expected=3)
    reasons = {record["item"]["event_id"] if isinstance(record["item"], dict) else "raw":
               record["reason"] for record in dead}  # fmt: skip
    assert "amount is required" in reasons["bad1"]
    assert "not valid JSON" in reasons["raw"]
    assert "allowed lateness" in reasons["late1"]


async def test_replaying_the_stream_changes_nothing(
    settings: Settings, redis: Redis, worker: subprocess.Popen[bytes]
) -> None:
    events = [Event.model_validate(raw) for raw in generate_events(300, customers=20, seed=2)]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    store = RedisFeatureStore(
        redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
    )
    customers = sorted({event.customer_id for event in events})
    try:
        publisher = EventPublisher(producer, settings.events_topic)
        await publisher.publish(events)
        await wait_for_processed(stats, expected=300)
        now = START.timestamp() + 3 * 86_400  # one reading time: features decay with time
        once = [await store.read(customer, now=now) for customer in customers]
        await publisher.publish(list(reversed(events)))
        counts = await wait_for_processed(stats, expected=600)
    finally:
        await producer.stop()
    assert counts == IngestCounts(applied=300, duplicates=300, dead_lettered=0)
    assert [await store.read(customer, now=now) for customer in customers] == once


async def test_an_event_ahead_of_the_clock_written_to_kafka_is_dead_lettered(
    settings: Settings, redis: Redis, worker: subprocess.Popen[bytes]
) -> None:
    """A producer writing straight to Kafka bypasses the API's check; the worker makes it."""
    now = datetime.now(UTC)
    envelope = [
        {"event_id": "f0", "customer_id": "F1", "type": "login", "channel": "web",
         "ts": now.isoformat()},
        {"event_id": "f1", "customer_id": "F1", "type": "login", "channel": "web",
         "ts": "2099-01-01T00:00:00Z"},
    ]  # fmt: skip
    following = {"event_id": "f2", "customer_id": "F1", "type": "login", "channel": "mobile",
                 "ts": (now + timedelta(seconds=1)).isoformat()}  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(settings.events_topic, orjson.dumps(envelope), partition=0)
        await producer.send_and_wait(settings.events_topic, orjson.dumps(following), partition=0)
    finally:
        await producer.stop()

    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    counts = await wait_for_processed(stats, expected=3)
    assert counts == IngestCounts(applied=2, duplicates=0, dead_lettered=1)
    [dead] = await read_dead_letters(settings, expected=1)
    assert dead["item"]["event_id"] == "f1"
    assert dead["reason"].startswith("ts: 2099-01-01T00:00:00Z is ")
    assert "at most 300 s ahead is accepted (NBA_MAX_CLOCK_SKEW_S)" in dead["reason"]
    store = RedisFeatureStore(
        redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
    )
    features = await store.read("F1")
    assert features is not None
    assert (features["ch_web_count"], features["ch_mobile_count"]) == (1, 1)
