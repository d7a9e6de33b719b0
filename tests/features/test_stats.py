"""Ingest counters and worker heartbeats in the real embedded Valkey."""

from __future__ import annotations

import time

import orjson
import pytest
from redis.asyncio import Redis

from engine.core.settings import Settings
from features.stats import (
    HEARTBEAT_FORGOTTEN_AFTER_S,
    HEARTBEAT_STALE_AFTER_S,
    IngestCounts,
    IngestStats,
    StreamHealth,
    WorkerStatus,
)


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


# --- whether the stream keeps up (StreamHealth.judge) -------------------------------------

NOW = 1_000_000.0


def status(name: str, partitions: list[int], **fields: object) -> WorkerStatus:
    values: dict[str, object] = {"heartbeat_ts": NOW - 1, "progress_ts": NOW - 1, "lag": {}}
    values |= fields
    return WorkerStatus(name=name, partitions=partitions, **values)  # type: ignore[arg-type]


def test_workers_caught_up_or_progressing_are_ready() -> None:
    workers = [
        status("a", [0, 1], lag={0: 0, 1: 0}, progress_ts=NOW - 500),  # idle, caught up
        status("b", [2], lag={2: 900}, progress_ts=NOW - 2),  # behind, but applying
    ]
    health = StreamHealth.judge(workers, now=NOW, stall_s=30)
    assert (health.ready, health.problems) == (True, [])
    assert [worker.name for worker in health.live] == ["a", "b"]


def test_a_worker_behind_without_progress_past_the_limit_is_a_stall() -> None:
    workers = [status("a", [0, 1], lag={0: 7, 1: 0}, progress_ts=NOW - 31)]
    [problem] = StreamHealth.judge(workers, now=NOW, stall_s=30).problems
    assert problem == (
        "worker a has 7 messages waiting on partitions [0, 1] and has made no progress "
        "for 31 s (NBA_STALL_S=30)"
    )
    assert StreamHealth.judge(workers, now=NOW - 2, stall_s=30).ready  # not yet past it


def test_a_lag_not_known_yet_counts_as_behind() -> None:
    workers = [status("a", [0], lag={0: None}, progress_ts=NOW - 60)]
    assert not StreamHealth.judge(workers, now=NOW, stall_s=30).ready


def test_partitions_of_a_silent_worker_nobody_took_are_a_stall() -> None:
    silent = status("gone", [2, 3], heartbeat_ts=NOW - 40, lag={2: 0, 3: 0})
    taker = status("live", [0, 1, 3], lag={0: 0, 1: 0, 3: 0})
    [problem] = StreamHealth.judge([silent, taker], now=NOW, stall_s=30).problems
    assert problem == (
        "worker gone has been silent for 40 s and no live worker has taken its partitions "
        "[2] (NBA_STALL_S=30)"
    )
    recently = status("gone", [2, 3], heartbeat_ts=NOW - 20)
    assert StreamHealth.judge([recently, taker], now=NOW, stall_s=30).ready  # rebalancing


def test_no_live_worker_is_a_stall() -> None:
    [problem] = StreamHealth.judge([], now=NOW, stall_s=30).problems
    assert problem == "no live worker: nothing applies events"
    frozen = status("frozen", [0, 1], heartbeat_ts=NOW - 31, lag={0: 0, 1: 0})
    [problem] = StreamHealth.judge([frozen], now=NOW, stall_s=30).problems
    assert problem == "no live worker: nothing applies events"


async def test_heartbeat_keeps_lag_and_progress_and_forgets_long_silent_workers(
    stats: IngestStats, redis: Redis
) -> None:
    old = {"partitions": [0], "heartbeat_ts": time.time() - HEARTBEAT_FORGOTTEN_AFTER_S - 1}
    await redis.hset(stats._workers_key, "long-gone", orjson.dumps(old))
    await stats.heartbeat("worker-a", [0, 1], lag={0: 5, 1: None}, progress_ts=123.0)
    [worker] = await stats.workers()
    assert (worker.name, worker.lag, worker.progress_ts) == ("worker-a", {0: 5, 1: None}, 123.0)
