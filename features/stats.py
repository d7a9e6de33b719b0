"""Ingest status kept in Redis, so any process can tell what the stream has done.

Two things: cumulative counters (events applied, duplicates, dead-lettered) and one
heartbeat per running worker with the partitions it owns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from features.redis_text import as_text

#: A worker whose last heartbeat is older than this is reported as gone.
HEARTBEAT_STALE_AFTER_S = 15.0


@dataclass(frozen=True, slots=True)
class IngestCounts:
    """Events the workers applied, found already applied, and sent to the dead letters."""

    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0

    @property
    def processed(self) -> int:
        return self.applied + self.duplicates + self.dead_lettered


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """A live worker: its name, the partitions it owns, and when it last said so."""

    name: str
    partitions: list[int]
    heartbeat_ts: float


class IngestStats:
    """Counters in `{prefix}nba:ingest`, worker heartbeats in `{prefix}nba:workers`."""

    def __init__(self, redis: Redis, *, key_prefix: str = "") -> None:
        self._redis = redis
        #: The hash of the counters, one field per `IngestCounts` field (the feature
        #: store's conditional write increments it in its own script).
        self.counts_key = f"{key_prefix}nba:ingest"
        self._workers_key = f"{key_prefix}nba:workers"

    async def add(self, counts: IngestCounts) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            self.queue_add(pipe, counts)
            await pipe.execute()

    def queue_add(self, pipe: Pipeline, counts: IngestCounts) -> None:
        """Queue the counting on a pipeline or transaction someone else executes (the
        feature store counts a batch in the same transaction that applies it)."""
        pipe.hincrby(self.counts_key, "applied", counts.applied)
        pipe.hincrby(self.counts_key, "duplicates", counts.duplicates)
        pipe.hincrby(self.counts_key, "dead_lettered", counts.dead_lettered)

    async def read(self) -> IngestCounts:
        stored = await self._redis.hgetall(self.counts_key)
        return IngestCounts(**{as_text(key): int(value) for key, value in stored.items()})

    async def heartbeat(self, worker: str, partitions: list[int]) -> None:
        """Record that `worker` is alive and owns `partitions`."""
        status = {"partitions": sorted(partitions), "heartbeat_ts": time.time()}
        await self._redis.hset(self._workers_key, worker, orjson.dumps(status))

    async def forget(self, worker: str) -> None:
        """Remove a worker that stops cleanly."""
        await self._redis.hdel(self._workers_key, worker)

    async def live_workers(self) -> list[WorkerStatus]:
        """Workers whose heartbeat is recent, by name."""
        now = time.time()
        workers = []
        for name, raw in sorted((await self._redis.hgetall(self._workers_key)).items()):
            status = orjson.loads(raw)
            if now - status["heartbeat_ts"] <= HEARTBEAT_STALE_AFTER_S:
                workers.append(WorkerStatus(name=as_text(name), **status))
        return workers
