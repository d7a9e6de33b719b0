"""Ingest status kept in Redis, so any process can tell what the stream has done.

Two things: cumulative counters (events applied, duplicates, dead-lettered) and one
heartbeat per running worker with the partitions it owns, how far behind it is on each
(messages on the broker it has not applied) and when it last made progress. From those,
`StreamHealth` says whether the stream is keeping up: a worker with messages waiting that
has applied nothing for `stall_s` seconds, or partitions last owned by a worker that went
silent, make it not ready (`GET /readyz`), so that a stall is never silent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from features.keys import Keys
from features.redis_text import as_text

#: A worker whose last heartbeat is older than this is reported as gone.
HEARTBEAT_STALE_AFTER_S = 15.0
#: Heartbeats older than this are removed (a restarted worker heartbeats under a new name).
HEARTBEAT_FORGOTTEN_AFTER_S = 3600.0


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
    """A worker's last heartbeat: its name, the partitions it owns, when it said so, its
    lag per partition (messages not applied yet; None before it knows) and when it last
    made progress (applied a batch, or found nothing waiting)."""

    name: str
    partitions: list[int]
    heartbeat_ts: float
    lag: dict[int, int | None] = field(default_factory=dict)
    progress_ts: float = 0.0

    @property
    def behind(self) -> bool:
        """Messages are waiting for it on one of its partitions (or it does not know yet)."""
        return any(lag is None or lag > 0 for lag in self.lag.values())

    def stalled_for(self, now: float) -> float:
        """Seconds it has had messages waiting without progress (0 when not behind)."""
        return max(0.0, now - self.progress_ts) if self.behind else 0.0

    def to_dict(self, now: float) -> dict[str, object]:
        """The JSON form `/healthz` and `/readyz` show."""
        return {
            "name": self.name,
            "partitions": self.partitions,
            "lag": {str(partition): lag for partition, lag in sorted(self.lag.items())},
            "total_lag": sum(lag or 0 for lag in self.lag.values()),
            "heartbeat_ts": self.heartbeat_ts,
            "last_progress_ts": self.progress_ts,
            "seconds_since_progress": round(max(0.0, now - self.progress_ts), 1),
        }


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """Whether the workers keep up: `problems` names each worker that does not."""

    live: list[WorkerStatus]
    problems: list[str]

    @property
    def ready(self) -> bool:
        return not self.problems

    @classmethod
    def judge(cls, workers: list[WorkerStatus], *, now: float, stall_s: float) -> StreamHealth:
        """Judge the workers' last heartbeats (live and silent ones) at `now`.

        A worker that reported within `stall_s` is judged by its own report (messages
        waiting, no progress for `stall_s`); one silent for longer (stopped, frozen, its
        event loop blocked) is a problem while no reporting worker has taken its partitions.
        """
        live = [w for w in workers if now - w.heartbeat_ts <= HEARTBEAT_STALE_AFTER_S]
        reporting = [w for w in workers if now - w.heartbeat_ts <= stall_s]
        problems = []
        if not reporting:
            problems.append("no live worker: nothing applies events")
        for worker in reporting:
            stalled = worker.stalled_for(now)
            if stalled > stall_s:
                waiting = sum(lag or 0 for lag in worker.lag.values())
                problems.append(
                    f"worker {worker.name} has {waiting:,} messages waiting on partitions "
                    f"{worker.partitions} and has made no progress for {stalled:.0f} s "
                    f"(NBA_STALL_S={stall_s:g})"
                )
        taken = {partition for worker in reporting for partition in worker.partitions}
        for worker in workers:
            silent = now - worker.heartbeat_ts
            orphaned = sorted(set(worker.partitions) - taken)
            if silent > stall_s and orphaned and reporting:
                problems.append(
                    f"worker {worker.name} has been silent for {silent:.0f} s and no live "
                    f"worker has taken its partitions {orphaned} (NBA_STALL_S={stall_s:g})"
                )
        return cls(live=live, problems=problems)


class IngestStats:
    """Counters in `{prefix}nba:ingest`, worker heartbeats in `{prefix}nba:workers`."""

    def __init__(self, redis: Redis, *, key_prefix: str = "") -> None:
        self._redis = redis
        #: The hash of the counters, one field per `IngestCounts` field (the feature
        #: store's conditional write increments it in its own script).
        self.counts_key = Keys(key_prefix).ingest_counts
        self._workers_key = Keys(key_prefix).workers

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

    async def heartbeat(
        self,
        worker: str,
        partitions: list[int],
        *,
        lag: dict[int, int | None] | None = None,
        progress_ts: float | None = None,
    ) -> None:
        """Record that `worker` is alive, owns `partitions`, is `lag` messages behind on
        each and last made progress at `progress_ts` (now, if not given); forget the
        heartbeats of workers silent for HEARTBEAT_FORGOTTEN_AFTER_S."""
        now = time.time()
        status = {
            "partitions": sorted(partitions),
            "heartbeat_ts": now,
            "lag": {str(partition): value for partition, value in (lag or {}).items()},
            "progress_ts": now if progress_ts is None else progress_ts,
        }
        await self._redis.hset(self._workers_key, worker, orjson.dumps(status))
        forgotten = [
            status.name
            for status in await self.workers()
            if now - status.heartbeat_ts > HEARTBEAT_FORGOTTEN_AFTER_S
        ]
        if forgotten:
            await self._redis.hdel(self._workers_key, *forgotten)

    async def forget(self, worker: str) -> None:
        """Remove a worker that stops cleanly."""
        await self._redis.hdel(self._workers_key, worker)

    async def workers(self) -> list[WorkerStatus]:
        """Every worker's last heartbeat, silent ones included, by name."""
        workers = []
        for name, raw in sorted((await self._redis.hgetall(self._workers_key)).items()):
            status = orjson.loads(raw)
            lag = {int(partition): value for partition, value in status.get("lag", {}).items()}
            workers.append(
                WorkerStatus(
                    name=as_text(name),
                    partitions=status["partitions"],
                    heartbeat_ts=status["heartbeat_ts"],
                    lag=lag,
                    progress_ts=status.get("progress_ts", status["heartbeat_ts"]),
                )
            )
        return workers

    async def live_workers(self) -> list[WorkerStatus]:
        """Workers whose heartbeat is recent, by name."""
        now = time.time()
        return [w for w in await self.workers() if now - w.heartbeat_ts <= HEARTBEAT_STALE_AFTER_S]

    async def health(self, *, stall_s: float) -> StreamHealth:
        """Whether the workers keep up, judged now (`StreamHealth.judge`)."""
        return StreamHealth.judge(await self.workers(), now=time.time(), stall_s=stall_s)
