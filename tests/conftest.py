"""Shared fixtures: one embedded Valkey and one embedded Kafka for the whole session.

Tests never share state on them: each test gets its own Redis key prefix and its own
topic names, so they can run in any order against the same real servers.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from engine.core.settings import Settings
from engine.stream.embedded import EmbeddedServices


@pytest.fixture(scope="session")
def servers() -> Iterator[EmbeddedServices]:
    """Real Valkey and Kafka-compatible servers, started once per test session."""
    with EmbeddedServices() as services:
        yield services


@pytest.fixture
def unique() -> str:
    """A short token unique to this test, for key prefixes, topics and group ids."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings(servers: EmbeddedServices, unique: str) -> Settings:
    """Settings pointing at the session's servers, isolated to this test."""
    assert servers.redis is not None
    assert servers.kafka is not None
    return Settings(
        redis_url=servers.redis.url,
        kafka_bootstrap=servers.kafka.bootstrap,
        key_prefix=f"t{unique}:",
        events_topic=f"events-{unique}",
        dlq_topic=f"events-{unique}.dlq",
        worker_id=f"worker-{unique}",
        outcomes_topic=f"outcomes-{unique}",
        topic_partitions=4,
        kafka_session_timeout_s=6.0,
        # no supervisor trims the session's broker: a short safety net keeps what it holds
        # (and snapshots every second) to the last minutes of the suite
        embedded_kafka_retention_s=120.0,
        model_key=SecretStr(f"test-model-key-{unique}"),
        checkpoint_interval_s=0.5,
    )


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """An asyncio Redis client on the session's Valkey, closed after the test."""
    client = Redis.from_url(str(settings.redis_url))
    yield client
    await client.aclose()
