"""The worker's main job under the failures that once stalled it, on the real servers.

A real `nba worker` process, the session's embedded Valkey and Kafka, the API in-process:
answers whose outcomes outgrow one Kafka message, Redis dropping the worker's
connections mid-stream, a worker frozen while events wait.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from engine.core.settings import Settings
from features.events import MAX_ATTR_NAME_CHARS, MAX_ATTR_TEXT_CHARS, MAX_ATTRS, Event
from features.publisher import EventPublisher
from features.state import FeatureFold
from features.stats import IngestCounts, IngestStats
from features.store import RedisFeatureStore
from tests.integration.test_learning import serve
from tests.integration.test_pipeline import generate_events, wait_for_processed

WAIT_S = 60.0
CUSTOMERS = 150
ACTIONS_PER_DECISION = 20  # n=20: every action a customer may get on the web


async def outcome_messages(settings: Settings, expected_outcomes: int) -> list[bytes]:
    """The messages on the outcomes topic, once they carry `expected_outcomes` outcomes."""
    consumer = AIOKafkaConsumer(
        settings.outcomes_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"outcomes-reader-{settings.worker_id}",
    )
    await consumer.start()
    messages: list[bytes] = []
    try:
        async with asyncio.timeout(WAIT_S):
            while sum(len(orjson.loads(value)) for value in messages) < expected_outcomes:
                batches = await consumer.getmany(timeout_ms=500)
                messages += [record.value for batch in batches.values() for record in batch]
    finally:
        await consumer.stop()
    return messages


async def test_answers_whose_outcomes_outgrow_a_message_are_learned_in_full(
    settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    async with serve(settings) as api:
        decisions = []
        for index in range(CUSTOMERS):
            response = await api.get(
                f"/v1/customers/K{index}/next-best-actions",
                params={"channel": "web", "n": ACTIONS_PER_DECISION},
            )
            assert response.status_code == 200
            decisions.append((f"K{index}", response.json()))
        answers = [
            {"event_id": f"d-{customer}-{action['action_id']}", "customer_id": customer,
             "type": "offer_declined", "channel": "web", "ts": "2026-11-02T12:00:00Z",
             "action_id": action["action_id"], "decision_id": decision["decision_id"]}
            for customer, decision in decisions
            for action in decision["actions"]
        ]  # fmt: skip
        response = await api.post("/v1/events", json=answers)  # one request, one batch
        assert response.status_code == 202, response.text

        async with asyncio.timeout(WAIT_S):
            while True:
                models = (await api.get("/v1/models")).json()
                if sum(models["propensity"]["outcomes_learned"].values()) >= len(answers):
                    break
                await asyncio.sleep(0.2)
    assert sum(models["propensity"]["outcomes_learned"].values()) == len(answers)
    assert models["attribution"]["forwarded"] == len(answers)
    assert models["propensity"]["version"] >= 1

    messages = await outcome_messages(settings, len(answers))
    assert sum(map(len, messages)) > 1_000_000  # what once went as one refused message
    assert max(map(len, messages)) <= settings.max_message_bytes
    assert worker.poll() is None


async def test_redis_dropping_the_workers_connections_loses_and_doubles_nothing(
    settings: Settings, redis: Redis, worker: subprocess.Popen[bytes]
) -> None:
    raw_events = generate_events(6000, customers=200, seed=5)
    events = [Event.model_validate(raw) for raw in raw_events]
    killer = Redis.from_url(str(settings.redis_url))
    kills = 0

    async def drop_connections() -> None:
        nonlocal kills
        while True:
            await asyncio.sleep(0.25)
            kills += await killer.execute_command("CLIENT KILL TYPE normal SKIPME yes")

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    dropping = asyncio.create_task(drop_connections())
    try:
        publisher = EventPublisher(producer, settings.events_topic, max_events_per_message=100)
        for start in range(0, len(events), 500):
            await publisher.publish(events[start : start + 500])
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # a few more kills while the worker catches up
    finally:
        dropping.cancel()
        await producer.stop()
        await killer.aclose()
    assert kills >= 5

    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    counts = await wait_for_processed(stats, expected=len(events))
    assert counts.applied == len(events)
    assert counts.dead_lettered == 0
    store = RedisFeatureStore(
        redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
    )
    sent = Counter(raw["customer_id"] for raw in raw_events)
    for customer, count in sent.items():
        features = await store.read(customer)
        assert features is not None
        assert features["event_count"] == count, customer
    assert worker.poll() is None


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test settings with the shortest stall limit allowed."""
    return settings.model_copy(update={"stall_s": 5.0})


async def test_a_frozen_worker_turns_readyz_to_503_within_the_stall_limit(
    settings: Settings, redis: Redis, worker: subprocess.Popen[bytes]
) -> None:
    async with serve(settings) as api:
        async with asyncio.timeout(WAIT_S):
            while (await api.get("/readyz")).status_code != 200:
                await asyncio.sleep(0.2)
        os.kill(worker.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            response = await api.post("/v1/events", json=generate_events(50, 5, seed=6))
            assert response.status_code == 202
            async with asyncio.timeout(WAIT_S):
                while (ready := await api.get("/readyz")).status_code == 200:
                    await asyncio.sleep(0.2)
            noticed = time.monotonic() - frozen
            assert ready.status_code == 503
            assert ready.json()["status"] == "stalled"
            [problem] = ready.json()["problems"]
            assert "no live worker" in problem
            # its last heartbeat may be up to one interval old when it froze
            assert noticed <= settings.stall_s + 3.0
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        async with asyncio.timeout(WAIT_S):
            while (await api.get("/readyz")).status_code != 200:
                await asyncio.sleep(0.2)
    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    assert await wait_for_processed(stats, expected=50) == IngestCounts(applied=50)


def maximal_event(index: int) -> dict[str, object]:
    """A valid page view carrying 32 attributes with the longest names and texts."""
    return {
        "event_id": f"big-{index}", "customer_id": f"B{index % 40}", "type": "page_view",
        "channel": "web", "ts": "2026-11-02T12:00:00Z",
        "attrs": {f"{n:02d}".ljust(MAX_ATTR_NAME_CHARS, "k"): f"{index}".ljust(
            MAX_ATTR_TEXT_CHARS, "v") for n in range(MAX_ATTRS)},
    }  # fmt: skip


async def test_a_request_at_the_byte_limit_with_maximal_attributes_is_applied_in_full(
    settings: Settings, redis: Redis, worker: subprocess.Popen[bytes]
) -> None:
    events: list[dict[str, object]] = []
    body = b"[]"
    while len(body) < settings.max_request_bytes - 20_000:
        events.append(maximal_event(len(events)))
        body = orjson.dumps(events)
    assert settings.max_request_bytes - 20_000 <= len(body) <= settings.max_request_bytes
    async with serve(settings) as api:
        response = await api.post(
            "/v1/events", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == len(events)
        over = await api.post(
            "/v1/events",
            content=body + b" " * (settings.max_request_bytes - len(body) + 1),
            headers={"content-type": "application/json"},
        )
        assert over.status_code == 413
        assert "NBA_MAX_REQUEST_BYTES" in over.json()["detail"]
    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    counts = await wait_for_processed(stats, expected=len(events))
    assert counts == IngestCounts(applied=len(events))
    store = RedisFeatureStore(
        redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
    )
    sent = Counter(str(event["customer_id"]) for event in events)
    for customer, count in sent.items():
        features = await store.read(customer)
        assert features is not None
        assert features["event_count"] == count
