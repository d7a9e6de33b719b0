"""Events/s through the whole pipeline: Kafka → one real Faust worker process → Redis features.

Each repeat publishes the simulated bank's events with `EventPublisher` to a fresh topic of
8 partitions, in requests of 2,000 events as the demo posts them (so envelopes are packed
exactly as the API packs them), then drains the topic twice, one after the other:

- baseline: a plain aiokafka consumer (`getmany` loop) in this process doing the worker's
  work per message — decode, `RedisFeatureStore.apply` with its counting — under its own
  consumer group and key prefix: the ceiling of the same work without Faust;
- subject: `python -m engine.cli worker` (one process, environment from
  `Settings.as_environment()`), timed from the first applied event to the last one by
  polling `IngestStats`, so the group join and start-up are left out (reported apart).

The customers come with a history: the bank's first `history_days` days of traffic are
folded into the store once, kept, and put back (under each side's key prefix) after the
flush before each drain, so both start from the same months-old states, as at a bank's
steady state; the published events are the days after it.

Run: `python -m benchmarks.ingest_pipeline [--quick]`.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from benchmarks.common import (
    FIRST_TRAFFIC_DAY,
    SESSION_TIMEOUT_S,
    BenchmarkError,
    Result,
    Target,
    batches,
    benchmark_main,
    engine_process,
    ensure_running,
    flush,
    fresh_servers,
    history_snapshot,
    isolated_settings,
    median_of,
    process_cpu_seconds,
    restore_snapshot,
    server_cpu_seconds,
    server_version,
    simulated_events,
)
from engine.core.clients import connect_redis
from engine.core.settings import Settings
from engine.stream.embedded import EmbeddedServices
from engine.stream.runtime import tune_garbage_collector
from engine.stream.topics import ensure_topics
from features.events import Event, decode_message
from features.publisher import EventPublisher
from features.state import FeatureFold
from features.stats import IngestStats
from features.store import RedisFeatureStore

NAME = "ingest_pipeline"
PARTITIONS = 8
EVENTS_PER_PUBLISH = 2_000  # the demo's events per POST /v1/events
TARGET_EVENTS_PER_S = 20_000  # named by the benchmarks issue, through Faust
POLL_INTERVAL_S = 0.02
#: (customers, events, repeats, days of history folded in first: 90 fills the longest
#: window, the daily buckets)
FULL = (20_000, 200_000, 3, 90)
QUICK = (10_000, 30_000, 3, 10)


def run(quick: bool = False) -> Result:
    """Measure the worker and the in-process baseline; return the result (not yet written)."""
    customers, count, repeats, history_days = QUICK if quick else FULL
    events = simulated_events(customers, limit=count, first_day=FIRST_TRAFFIC_DAY + history_days)
    # the collector as in a worker; the in-process baseline holds the whole run's events,
    # which leave its view
    tune_garbage_collector()
    with fresh_servers() as services, tempfile.TemporaryDirectory(prefix="nba-bench-") as logs:
        print(
            f"{NAME}: {len(events):,} events of {customers:,} customers after {history_days} "
            f"days of history, {PARTITIONS} partitions, {repeats} repeats",
            flush=True,
        )
        history_events, history = asyncio.run(
            history_snapshot(isolated_settings(services), customers, history_days)
        )
        figures = median_of(
            repeats, lambda: asyncio.run(_one_repeat(services, events, history, Path(logs)))
        )
        valkey_version = asyncio.run(server_version(isolated_settings(services)))
    worker_rate = figures["worker_events_per_s"].median
    return Result(
        name=NAME,
        parameters={
            "quick": quick,
            "events": len(events),
            "customers": customers,
            "partitions": PARTITIONS,
            "events_per_publish_call": EVENTS_PER_PUBLISH,
            "repeats": repeats,
            "history_days": history_days,
            "history_events": history_events,
            "history_state_bytes_mean": statistics.fmean(map(len, history.values())),
            "kafka_session_timeout_s": SESSION_TIMEOUT_S,
            "valkey_version": valkey_version,
        },
        figures=figures,
        subject="worker_events_per_s",
        baseline="baseline_events_per_s",
        targets=[Target("worker_events_per_s", at_least=TARGET_EVENTS_PER_S)],
        notes=[
            "baseline: aiokafka getmany loop in-process doing decode + store.apply (with its "
            "counting) per message (the ceiling without Faust); subject: one "
            "`nba worker` process, timed from its first applied event to the last",
            f"worker: {1e6 / worker_rate:.0f} µs wall per event; it used "
            f"{figures['worker_cpu_share'].median:.0%} of a core and Valkey "
            f"{figures['worker_server_cpu_share'].median:.0%} meanwhile",
        ],
    )


async def _one_repeat(
    services: EmbeddedServices, events: list[Event], history: dict[str, bytes], logs: Path
) -> dict[str, float]:
    """Publish to a fresh topic, drain it with the baseline, then with a worker process,
    each from the history's states."""
    settings = isolated_settings(services, topic_partitions=PARTITIONS)
    await ensure_topics(settings)
    published = time.perf_counter()
    messages = await _publish(settings, events)
    publish_rate = len(events) / (time.perf_counter() - published)
    redis = connect_redis(str(settings.redis_url))
    try:
        await flush(redis)
        await restore_snapshot(redis, history, _baseline_prefix(settings))
        baseline_rate = await _drain_in_process(settings, redis, len(events))
        await flush(redis)
        await restore_snapshot(redis, history, settings.key_prefix)
        worker = await _drain_with_worker(settings, redis, len(events), logs)
    finally:
        await redis.aclose()
    return {
        "worker_events_per_s": worker["events_per_s"],
        "baseline_events_per_s": baseline_rate,
        "publish_events_per_s": publish_rate,
        "events_per_kafka_message": len(events) / messages,
        "worker_startup_s": worker["startup_s"],
        "worker_cpu_share": worker["cpu_share"],
        "worker_server_cpu_share": worker["server_cpu_share"],
    }


async def _publish(settings: Settings, events: list[Event]) -> int:
    """Publish as the API does; returns the number of Kafka messages sent."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=2
    )  # as api/services.py configures it
    await producer.start()
    try:
        publisher = EventPublisher(producer, settings.events_topic)
        sent = 0
        for chunk in batches(events, EVENTS_PER_PUBLISH):
            sent += await publisher.publish(chunk)
        return sent
    finally:
        await producer.stop()


async def _drain_in_process(settings: Settings, redis: Redis, count: int) -> float:
    """Events/s of the worker's per-message work in a plain aiokafka loop, first to last."""
    prefix = _baseline_prefix(settings)
    store = RedisFeatureStore(
        redis,
        FeatureFold(settings.feature_config()),
        key_prefix=prefix,
        cached_states=settings.state_cache_size,  # as the worker
    )
    stats = IngestStats(redis, key_prefix=prefix)
    consumer = AIOKafkaConsumer(
        settings.events_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"{settings.worker_id}-baseline",
        auto_offset_reset="earliest",
        session_timeout_ms=int(settings.kafka_session_timeout_s * 1000),
        heartbeat_interval_ms=2000,
    )
    await consumer.start()
    processed, first = 0, None
    try:
        async with asyncio.timeout(_drain_timeout(count)):
            while processed < count:
                fetched = await consumer.getmany(timeout_ms=500)
                for records in fetched.values():
                    for record in records:
                        events, rejections, _ = decode_message(record.value)
                        await store.apply(events, count_into=stats, rejected=len(rejections))
                        processed += len(events) + len(rejections)
                        if first is None:
                            first = (time.perf_counter(), processed)
    finally:
        await consumer.stop()
    assert first is not None
    return (count - first[1]) / (time.perf_counter() - first[0])


async def _drain_with_worker(
    settings: Settings, redis: Redis, count: int, logs: Path
) -> dict[str, float]:
    """Start `nba worker`; events/s from its first applied event to all, and its CPU use."""
    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    log_path = logs / f"worker-{settings.worker_id}.log"
    started = time.perf_counter()
    with engine_process("worker", settings, log_path) as worker:
        first: tuple[float, int, float, float] | None = None
        async with asyncio.timeout(_drain_timeout(count) + 60):  # + start-up and group join
            while True:
                ensure_running(worker, log_path)
                processed = (await stats.read()).processed
                now = time.perf_counter()
                if processed and first is None:
                    cpu = process_cpu_seconds(worker.pid)
                    first = (now, processed, cpu, await server_cpu_seconds(redis))
                if processed >= count:
                    break
                await asyncio.sleep(POLL_INTERVAL_S)
        assert first is not None
        elapsed = now - first[0]
        worker_cpu = process_cpu_seconds(worker.pid) - first[2]
        server_cpu = await server_cpu_seconds(redis) - first[3]
    if processed != count:
        raise BenchmarkError(f"the worker processed {processed} events, expected {count}")
    if elapsed <= 0:
        raise BenchmarkError("the worker applied everything between two polls: use more events")
    return {
        "events_per_s": (count - first[1]) / elapsed,
        "startup_s": first[0] - started,
        "cpu_share": worker_cpu / elapsed,
        "server_cpu_share": server_cpu / elapsed,
    }


def _baseline_prefix(settings: Settings) -> str:
    """The key prefix of the in-process baseline's store, apart from the worker's."""
    return f"{settings.key_prefix}base:"


def _drain_timeout(count: int) -> float:
    """Generous: 60 s plus 1 ms per event (1,000 events/s would be a broken pipeline)."""
    return 60.0 + count / 1000


def main() -> None:
    benchmark_main(run, __doc__ or NAME)


if __name__ == "__main__":
    main()
