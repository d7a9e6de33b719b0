"""How fast one process applies events to the Redis feature store.

The simulated bank's events (validated beforehand) applied in batches of 500: the full
feature set of the registry and the event-id deduplication, by whatever means the store
uses, two ways in each repeat, each from the same history:

- subject, `bulk`: `RedisFeatureStore.apply_batches`, as a history load or a replay runs
  from one process: each batch's write in flight while the next batch is folded, so this
  process and Valkey work at the same time instead of taking turns;
- `store`: `RedisFeatureStore.apply` batch by batch, as a worker applies the envelopes it
  took together (it acknowledges them only once written, so it cannot fold ahead).

Both must leave identical states in Valkey, which the benchmark checks. The customers come
with a history: the bank's first `history_days` days of traffic are folded into the store
once, kept, and put back before each timed section, whose events are the days after it
(each event's cost grows with the state it folds into and writes).

Baseline, in the same run: the same batches applied as ONE trivial EVALSHA per batch doing
one HINCRBY per event — the ceiling of one round trip per batch from this client to this
server. The ratio says how much of that ceiling the store reaches.

Besides events/s, each side reports the CPU time per event of this process (the client) and
of Valkey (the server), which tells who the bottleneck is: on two shared cores, a client
whose CPU time per event is close to its wall time per event is client-bound. The client's
share is broken down, without Redis, into the fold (applying events to decoded states) and
the MessagePack codec (decoding and encoding each customer's state once per batch).

Run: `python -m benchmarks.ingest_store [--quick]`.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from benchmarks.common import (
    FIRST_TRAFFIC_DAY,
    Result,
    Stopwatch,
    Target,
    batches,
    benchmark_main,
    flush,
    fresh_servers,
    history_snapshot,
    isolated_settings,
    median_of,
    restore_snapshot,
    server_version,
    simulated_events,
)
from engine.core.clients import connect_redis
from engine.core.settings import Settings
from engine.stream.runtime import tune_garbage_collector
from features.derived import FEATURES
from features.events import Event, iter_customer_groups
from features.keys import Keys
from features.registry import STORED
from features.state import FeatureFold
from features.store import RedisFeatureStore

NAME = "ingest_store"
BATCH_SIZE = 500
TARGET_EVENTS_PER_S = 50_000  # named by the benchmarks issue, for the full feature set
#: (customers, events, repeats, days of history folded in first: 90 fills the longest
#: window, the daily buckets)
FULL = (20_000, 200_000, 5, 90)
QUICK = (10_000, 50_000, 3, 10)

_BASELINE_SCRIPT = """
for i = 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], 'n', 1)
end
return #KEYS
"""


def run(quick: bool = False) -> Result:
    """Measure store and baseline throughput; return the result (not yet written)."""
    customers, count, repeats, history_days = QUICK if quick else FULL
    events = simulated_events(customers, limit=count, first_day=FIRST_TRAFFIC_DAY + history_days)
    event_batches = batches(events, BATCH_SIZE)
    # the collector as in a worker; the pre-built events leave its view, as a worker holds
    # one batch at a time, not the run
    tune_garbage_collector()
    with fresh_servers(kafka=False) as services:
        settings = isolated_settings(services)
        print(
            f"{NAME}: {len(events):,} events of {customers:,} customers after "
            f"{history_days} days of history, batches of {BATCH_SIZE}, {repeats} repeats",
            flush=True,
        )
        history_events, history = asyncio.run(history_snapshot(settings, customers, history_days))
        figures = median_of(
            repeats, lambda: asyncio.run(_one_repeat(settings, event_batches, history))
        )
        valkey_version = asyncio.run(server_version(settings))
    customers_per_batch = [len(list(iter_customer_groups(batch))) for batch in event_batches]
    store_rate = figures["store_events_per_s"].median
    bulk_rate = figures["bulk_events_per_s"].median
    wall_us = 1e6 / store_rate
    client_us = figures["store_client_cpu_us_per_event"].median
    server_us = figures["store_server_cpu_us_per_event"].median
    return Result(
        name=NAME,
        parameters={
            "quick": quick,
            "events": len(events),
            "customers": customers,
            "history_days": history_days,
            "history_events": history_events,
            "history_state_bytes_mean": statistics.fmean(map(len, history.values())),
            "batch_size": BATCH_SIZE,
            "store_writes_in_flight": 1,
            "bulk_writes_in_flight": "1, while the next batch is folded",
            "repeats": repeats,
            "stored_features": len(STORED),
            "flat_features": len(FEATURES),
            "customers_per_batch_mean": statistics.fmean(customers_per_batch),
            "event_loop": "asyncio (as in the Faust worker)",
            "state_cache_size": settings.state_cache_size,
            "valkey_version": valkey_version,
        },
        figures=figures,
        subject="bulk_events_per_s",
        baseline="baseline_events_per_s",
        targets=[
            Target("bulk_events_per_s", at_least=TARGET_EVENTS_PER_S),
            Target("store_events_per_s", at_least=TARGET_EVENTS_PER_S),
        ],
        notes=[
            "baseline: one EVALSHA per batch doing one HINCRBY per event (ceiling of one "
            "round trip per batch); subject (bulk): RedisFeatureStore.apply_batches, each "
            "batch's write in flight while the next is folded; store: RedisFeatureStore.apply, "
            "one batch at a time, as a worker applies its envelopes",
            f"bulk: {1e6 / bulk_rate:.1f} µs wall per event, this process "
            f"{figures['bulk_client_cpu_us_per_event'].median:.1f} µs CPU and Valkey "
            f"{figures['bulk_server_cpu_us_per_event'].median:.1f} µs CPU, at the same time; "
            f"{bulk_rate / store_rate:.2f}× the events/s of one batch at a time (medians)",
            f"store: {wall_us:.1f} µs wall per event, of which this process used "
            f"{client_us:.1f} µs CPU and Valkey {server_us:.1f} µs CPU (2 shared cores); "
            f"{figures['state_cache_hit_rate'].median:.0%} of the customers' states came from "
            "the store's cache, neither read nor decoded (features.state_cache; the "
            "conditional write checked them); "
            f"without Redis, the fold took {figures['fold_us_per_event'].median:.1f} µs per "
            f"event and the codec {figures['codec_us_per_customer'].median:.1f} µs per "
            "customer and batch",
        ],
    )


async def _one_repeat(
    settings: Settings, event_batches: list[list[Event]], history: dict[str, bytes]
) -> dict[str, float]:
    """Apply every batch through the baseline script, then through the store one batch at a
    time and in bulk, each from the history; check both left the same states."""
    redis = connect_redis(str(settings.redis_url))
    try:
        await flush(redis)
        count = sum(len(batch) for batch in event_batches)
        stopwatch = Stopwatch(redis)
        baseline = redis.register_script(_BASELINE_SCRIPT)
        await baseline(keys=["warm-up"])  # load the script outside the timed section
        await stopwatch.start()
        for batch in event_batches:
            keys = [f"{settings.key_prefix}base:{{{event.customer_id}}}:f" for event in batch]
            await baseline(keys=keys)
        base_wall, base_client, base_server = await stopwatch.stop()

        one_at_a_time, store = await _timed_store(
            redis, settings, event_batches, history, bulk=False
        )
        one_at_a_time_states = await _stored_states(redis, settings.key_prefix)
        bulk, _ = await _timed_store(redis, settings, event_batches, history, bulk=True)
        if await _stored_states(redis, settings.key_prefix) != one_at_a_time_states:
            raise AssertionError("the bulk load stored other states than one batch at a time")
        cache = store.state_cache
        return {
            "state_cache_hit_rate": cache.hits / max(1, cache.hits + cache.misses),
            **_client_parts(store, event_batches, history, settings.key_prefix),
            "bulk_events_per_s": count / bulk.wall_s,
            "store_events_per_s": count / one_at_a_time.wall_s,
            "baseline_events_per_s": count / base_wall,
            "bulk_client_cpu_us_per_event": bulk.client_s / count * 1e6,
            "bulk_server_cpu_us_per_event": bulk.server_s / count * 1e6,
            "store_client_cpu_us_per_event": one_at_a_time.client_s / count * 1e6,
            "store_server_cpu_us_per_event": one_at_a_time.server_s / count * 1e6,
            "baseline_client_cpu_us_per_event": base_client / count * 1e6,
            "baseline_server_cpu_us_per_event": base_server / count * 1e6,
        }
    finally:
        await redis.aclose()


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall time, and the CPU time of this process and of Valkey, of one timed section."""

    wall_s: float
    client_s: float
    server_s: float


async def _timed_store(
    redis: Redis,
    settings: Settings,
    event_batches: list[list[Event]],
    history: dict[str, bytes],
    *,
    bulk: bool,
) -> tuple[Timing, RedisFeatureStore]:
    """The batches applied to the history by a new store: `apply` batch by batch as a
    worker does, or `apply_batches` (each write in flight while the next batch is folded)."""
    await flush(redis)
    await restore_snapshot(redis, history, settings.key_prefix)
    fold = FeatureFold(settings.feature_config())
    store = RedisFeatureStore(
        redis, fold, key_prefix=settings.key_prefix, cached_states=settings.state_cache_size
    )
    count = sum(len(batch) for batch in event_batches)
    stopwatch = Stopwatch(redis)
    await stopwatch.start()
    if bulk:
        applied = (await store.apply_batches(event_batches)).applied
    else:
        applied = 0
        for batch in event_batches:
            applied += (await store.apply(batch)).applied
    timing = Timing(*await stopwatch.stop())
    if applied != count:
        raise AssertionError(f"the store applied {applied} of {count} events")
    return timing, store


async def _stored_states(redis: Redis, key_prefix: str) -> dict[bytes, bytes]:
    """Every customer state in the store, by key."""
    keys = [
        key async for key in redis.scan_iter(match=Keys(key_prefix).states_pattern, count=5_000)
    ]
    return dict(zip(keys, await redis.mget(keys), strict=True)) if keys else {}


def _client_parts(
    store: RedisFeatureStore,
    event_batches: list[list[Event]],
    history: dict[str, bytes],
    key_prefix: str,
) -> dict[str, float]:
    """The fold and the codec alone, in this process, on the same batches and history
    (no Redis; `history` by key without `key_prefix`)."""
    fold = store.fold
    encoded = {
        customer_id: history[key]
        for customer_id in {event.customer_id for batch in event_batches for event in batch}
        if (key := store.state_key(customer_id).removeprefix(key_prefix)) in history
    }
    fold_s = codec_s = 0.0
    decodes = 0
    for batch in event_batches:
        for customer_id, customer_events in iter_customer_groups(batch):
            started = time.perf_counter()
            raw = encoded.get(customer_id)
            state = fold.new_state() if raw is None else fold.decode(raw)
            decoded = time.perf_counter()
            fold.apply_all(state, customer_events)
            folded = time.perf_counter()
            encoded[customer_id] = fold.encode(state)
            codec_s += (decoded - started) + (time.perf_counter() - folded)
            fold_s += folded - decoded
            decodes += 1
    count = sum(len(batch) for batch in event_batches)
    return {
        "fold_us_per_event": fold_s / count * 1e6,
        "codec_us_per_customer": codec_s / decodes * 1e6,
    }


def main() -> None:
    benchmark_main(run, __doc__ or NAME)


if __name__ == "__main__":
    main()
