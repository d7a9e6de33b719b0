"""Redis memory per customer: the feature hash, and apart from it the event-id markers.

Each repeat, on a fresh Valkey:

1. baseline: one hash per customer holding a single field, under the very key the feature
   hash uses — the floor Redis charges for a customer's key whatever it holds;
2. subject: the simulated bank's events of a few days applied through
   `RedisFeatureStore.apply` (features and markers); then the markers are deleted, so
   `INFO memory` used_memory before and after gives the features' bytes per customer and
   the markers' bytes per event. `MEMORY USAGE` of a sample of feature hashes is reported
   too (the hash alone, without the keyspace's own overhead).

Markers live for the dedup TTL (7 days by default), so a customer carries about
`events per day × 7` of them at steady state; that estimate is reported separately because
it depends on activity and TTL, not on the feature set.

Run: `python -m benchmarks.memory_per_customer [--quick]`.
"""

from __future__ import annotations

import asyncio
import random
import statistics

from redis.asyncio import Redis

from benchmarks.common import (
    Result,
    Target,
    batches,
    benchmark_main,
    flush,
    fresh_servers,
    isolated_settings,
    median_of,
    server_version,
    simulated_events,
)
from engine.settings import Settings
from features.events import Event
from features.registry import FEATURES
from features.store import RedisFeatureStore

NAME = "memory_per_customer"
TARGET_BYTES_PER_CUSTOMER = 1536  # 1.5 KB, named by the benchmarks issue
BATCH_SIZE = 500
IN_FLIGHT = 4  # batches applied concurrently: updates commute, only loading speed changes
SAMPLE = 1_000  # feature hashes measured with MEMORY USAGE
SETTLE_INTERVAL_S = 0.25
SETTLE_POLLS = 20
SETTLED_WITHIN_BYTES = 1024
#: (customers, days, repeats)
FULL = (100_000, 3, 3)
QUICK = (20_000, 2, 3)


def run(quick: bool = False) -> Result:
    """Measure memory per customer and per marker; return the result (not yet written)."""
    customers, days, repeats = QUICK if quick else FULL
    events = simulated_events(customers, days=days)
    seen = sorted({event.customer_id for event in events})
    with fresh_servers(kafka=False) as services:
        settings = isolated_settings(services)
        print(
            f"{NAME}: {len(events):,} events of {len(seen):,} customers over {days} days, "
            f"{repeats} repeats",
            flush=True,
        )
        figures = median_of(repeats, lambda: asyncio.run(_one_repeat(settings, events, seen)))
        valkey_version = asyncio.run(server_version(settings))
    ttl_days = settings.dedup_ttl_seconds / 86_400
    events_per_customer_day = len(events) / len(seen) / days
    marker_bytes = figures["marker_bytes_per_event"].median
    return Result(
        name=NAME,
        parameters={
            "quick": quick,
            "customers_with_events": len(seen),
            "days": days,
            "events": len(events),
            "events_per_customer_day": events_per_customer_day,
            "registry_features": len(FEATURES),
            "memory_usage_sample": min(SAMPLE, len(seen)),
            "dedup_ttl_days": ttl_days,
            "repeats": repeats,
            "valkey_version": valkey_version,
        },
        figures=figures,
        subject="features_bytes_per_customer",
        baseline="one_field_hash_bytes_per_customer",
        targets=[Target("features_bytes_per_customer", at_most=TARGET_BYTES_PER_CUSTOMER)],
        notes=[
            "features_bytes_per_customer: INFO used_memory delta / customers with the "
            "markers deleted; baseline: the same keys each holding a one-field hash",
            f"markers at steady state: {marker_bytes:,.0f} bytes per event × "
            f"{events_per_customer_day:.2f} events per customer-day × {ttl_days:g} days of "
            f"TTL ≈ {marker_bytes * events_per_customer_day * ttl_days:,.0f} bytes per "
            "customer, on top of the features",
        ],
    )


async def _one_repeat(settings: Settings, events: list[Event], seen: list[str]) -> dict[str, float]:
    """Baseline hashes, then the store's features and markers, each from an empty Valkey."""
    redis = Redis.from_url(str(settings.redis_url))
    try:
        store = RedisFeatureStore(
            redis, key_prefix=settings.key_prefix, dedup_ttl_seconds=settings.dedup_ttl_seconds
        )
        feature_keys = [store.customer_key(customer_id, "f") for customer_id in seen]

        await flush(redis)
        empty = await _used_memory(redis)
        for keys in batches(feature_keys, 1_000):
            async with redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hset(key, "event_count", 1)
                await pipe.execute()
        one_field = (await _used_memory(redis) - empty) / len(seen)

        await flush(redis)
        empty = await _used_memory(redis)
        pending = batches(events, BATCH_SIZE)
        for start in range(0, len(pending), IN_FLIGHT):
            await asyncio.gather(*(store.apply(b) for b in pending[start : start + IN_FLIGHT]))
        with_markers = await _used_memory(redis)
        sample = random.Random(0).sample(feature_keys, min(SAMPLE, len(feature_keys)))
        usages = [await redis.memory_usage(key, samples=0) or 0 for key in sample]
        fields = [await redis.hlen(key) for key in sample]
        for chunk in batches(events, 5_000):
            await redis.delete(
                *(store.customer_key(e.customer_id, f"e:{e.event_id}") for e in chunk)
            )
        features_only = await _used_memory(redis)
        return {
            "features_bytes_per_customer": (features_only - empty) / len(seen),
            "one_field_hash_bytes_per_customer": one_field,
            "feature_hash_memory_usage_bytes": statistics.median(usages),
            "feature_hash_fields": statistics.median(fields),
            "marker_bytes_per_event": (with_markers - features_only) / len(events),
            "marker_share_of_memory": (with_markers - features_only) / (with_markers - empty),
        }
    finally:
        await redis.aclose()


async def _used_memory(redis: Redis) -> int:
    """`used_memory` once it has settled: Valkey shrinks its key tables in its background
    cron after mass deletes, which moves a few hundred KB a moment after the last DEL."""
    previous = int((await redis.info("memory"))["used_memory"])
    for _ in range(SETTLE_POLLS):
        await asyncio.sleep(SETTLE_INTERVAL_S)
        current = int((await redis.info("memory"))["used_memory"])
        if abs(current - previous) < SETTLED_WITHIN_BYTES:
            return current
        previous = current
    return previous


def main() -> None:
    benchmark_main(run, __doc__ or NAME)


if __name__ == "__main__":
    main()
