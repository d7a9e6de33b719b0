"""Ingest counters and worker heartbeats in the real embedded Valkey."""

from __future__ import annotations

import time

import orjson
import pytest
from redis.asyncio import Redis

from engine.settings import Settings
from features.stats import HEARTBEAT_STALE_AFTER_S, IngestCounts, IngestStats


@pytest.fixture
def stats(redis: Redis, settings: Settings) -> IngestStats:
    return IngestStats(redis, key_prefix=settings.key_prefix)


async def test_counts_start_at_zero(stats: IngestStats) -> None:
    counts = await stats.read()
    assert counts == IngestCounts(applied=0, duplicates=0, dead_lettered=0)
    assert counts.processed == 0


async def test_added_counts_sum(stats: IngestStats) -> None:
    await stats.add(IngestCounts(applied=3, duplicates=1, dead_lettered=2))
    await stats.add(IngestCounts(applied=4, dead_lettered=1))
    await stats.add(IngestCounts())
    counts = await stats.read()
    assert counts == IngestCounts(applied=7, duplicates=1, dead_lettered=3)
    assert counts.processed == 11


async def test_counts_are_isolated_by_prefix(
    redis: Redis, settings: Settings, stats: IngestStats
) -> None:
    await stats.add(IngestCounts(applied=5))
    other = IngestStats(redis, key_prefix=f"{settings.key_prefix}other:")
    assert await other.read() == IngestCounts()


async def test_heartbeat_lists_a_live_worker(stats: IngestStats) -> None:
    before = time.time()
    await stats.heartbeat("worker-b", [3, 1, 2])
    await stats.heartbeat("worker-a", [0])
    workers = await stats.live_workers()
    assert [(worker.name, worker.partitions) for worker in workers] == [
        ("worker-a", [0]),
        ("worker-b", [1, 2, 3]),
    ]
    assert all(before <= worker.heartbeat_ts <= time.time() for worker in workers)


async def test_a_new_heartbeat_replaces_the_previous_one(stats: IngestStats) -> None:
    await stats.heartbeat("worker-a", [0, 1])
    await stats.heartbeat("worker-a", [2])
    assert [worker.partitions for worker in await stats.live_workers()] == [[2]]


async def test_a_stale_heartbeat_is_not_listed(
    redis: Redis, settings: Settings, stats: IngestStats
) -> None:
    stale = {"partitions": [0], "heartbeat_ts": time.time() - HEARTBEAT_STALE_AFTER_S - 5}
    await redis.hset(f"{settings.key_prefix}nba:workers", "worker-gone", orjson.dumps(stale))
    await stats.heartbeat("worker-live", [1])
    assert [worker.name for worker in await stats.live_workers()] == ["worker-live"]


async def test_forget_removes_a_worker(stats: IngestStats) -> None:
    await stats.heartbeat("worker-a", [0])
    await stats.heartbeat("worker-b", [1])
    await stats.forget("worker-a")
    assert [worker.name for worker in await stats.live_workers()] == ["worker-b"]
    await stats.forget("worker-b")
    await stats.forget("never-there")  # harmless
    assert await stats.live_workers() == []
