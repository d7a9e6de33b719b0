"""Redis memory per customer for the whole feature set, at steady state.

A customer's features are one MessagePack string (features.state), whose size grows with
history until the 90 daily buckets and the allowed lateness's event ids are full, then
stays flat. So the benchmark simulates 90 days of the bank's events for every customer,
folds them in this process with the store's own fold (`FeatureFold.apply_all`, exactly
what `RedisFeatureStore.apply` runs per customer — checked below on a sample of customers
applied through the real store), writes the resulting states to a fresh Valkey, and
measures `INFO memory` used_memory before and after, per customer.

Baseline, in the same Valkey: the same keys each holding a one-byte string — the floor
Redis charges for a customer's key whatever it holds. `MEMORY USAGE` of a sample of keys
and the encoded sizes (median, p90, p99; the share of event ids and daily buckets) are
reported too.

Run: `python -m benchmarks.memory_per_customer [--quick]`.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import msgspec
from redis.asyncio import Redis

from benchmarks.common import (
    Result,
    Target,
    benchmark_main,
    flush,
    fresh_servers,
    isolated_settings,
    median_of,
    server_version,
    simulated_bank,
)
from engine.core.clients import connect_redis
from engine.core.settings import Settings
from features.events import Channel, Event, EventType
from features.registry import STORED, Kind
from features.state import CustomerState, FeatureFold
from features.store import RedisFeatureStore

NAME = "memory_per_customer"
TARGET_BYTES_PER_CUSTOMER = 1536  # 1.5 KB, named by the features issue
DAYS = 90  # the daily buckets' retention: the state is at its steady size after it
SAMPLE = 1_000  # keys measured with MEMORY USAGE
CHECKED_CUSTOMERS = 100  # applied through the real store to confirm the fold's bytes
SETTLE_INTERVAL_S = 0.25
SETTLE_POLLS = 20
SETTLED_WITHIN_BYTES = 1024
#: (customers, repeats)
FULL = (100_000, 3)
QUICK = (1_000, 3)


def run(quick: bool = False) -> Result:
    """Measure memory per customer; return the result (not yet written)."""
    customers, repeats = QUICK if quick else FULL
    with fresh_servers(kafka=False) as services:
        settings = isolated_settings(services)
        fold = FeatureFold(settings.feature_config())
        print(f"{NAME}: {customers:,} customers, {DAYS} simulated days each", flush=True)
        states, events_applied, checked = _steady_states(fold, customers, settings)
        encoded = {customer: fold.encode(state) for customer, state in states.items()}
        print(f"  {events_applied:,} events folded; {repeats} repeats of the measure", flush=True)
        figures = median_of(repeats, lambda: asyncio.run(_one_repeat(settings, fold, encoded)))
        valkey_version = asyncio.run(server_version(settings))
    sizes = sorted(len(raw) for raw in encoded.values())
    parts = _part_shares(fold, states)
    return Result(
        name=NAME,
        parameters={
            "quick": quick,
            "customers": len(states),
            "simulated_days": DAYS,
            "events": events_applied,
            "events_per_customer_day": events_applied / len(states) / DAYS,
            "allowed_lateness_s": settings.allowed_lateness_s,
            "stored_features": len(STORED),
            "repeats": repeats,
            "checked_through_the_store": checked,
            "valkey_version": valkey_version,
        },
        figures=figures,
        subject="features_bytes_per_customer",
        baseline="one_byte_string_bytes_per_customer",
        targets=[Target("features_bytes_per_customer", at_most=TARGET_BYTES_PER_CUSTOMER)],
        notes=[
            "subject: used_memory delta per customer after writing every customer's state "
            "(all features, event ids within the allowed lateness); baseline: the same keys "
            "each holding a one-byte string",
            f"encoded state: median {_quantile(sizes, 0.5):,} B, p90 {_quantile(sizes, 0.9):,} "
            f"B, p99 {_quantile(sizes, 0.99):,} B; of the bytes, event ids "
            f"{parts['seen']:.0%}, daily buckets {parts['daily']:.0%}",
            f"{checked} customers applied through RedisFeatureStore.apply stored the same "
            "bytes as the in-process fold",
        ],
    )


def _trusted_event(raw: dict[str, Any]) -> Event:
    """An event from the simulator, built without validation (it is valid by construction;
    validating 24 million events would take longer than measuring them)."""
    return Event.model_construct(
        event_id=raw["event_id"],
        customer_id=raw["customer_id"],
        type=EventType(raw["type"]),
        channel=Channel(raw["channel"]),
        ts=datetime.fromisoformat(raw["ts"]),
        amount=raw.get("amount"),
        product=raw.get("product"),
        action_id=None,
        decision_id=None,
        attrs=raw.get("attrs", {}),
    )


def _days_of_events(bank_customers: int) -> Iterator[list[Event]]:
    bank = simulated_bank(bank_customers)
    for day in range(DAYS):
        yield [_trusted_event(raw) for raw in bank.events_for_day(day)]


def _steady_states(
    fold: FeatureFold, customers: int, settings: Settings
) -> tuple[dict[str, CustomerState], int, int]:
    """Every customer's state after 90 days; a sample also applied through the real store."""
    states: dict[str, CustomerState] = {}
    checked_ids = {f"C{i:06d}" for i in range(1, CHECKED_CUSTOMERS + 1)}
    checked_events: list[list[Event]] = []
    applied = 0
    for day, events in enumerate(_days_of_events(customers)):
        groups: dict[str, list[Event]] = {}
        for event in events:
            groups.setdefault(event.customer_id, []).append(event)
        for customer, customer_events in groups.items():
            state = states.get(customer)
            if state is None:
                states[customer] = state = fold.new_state()
            fold.apply_all(state, customer_events)
        applied += len(events)
        checked_events.append([e for e in events if e.customer_id in checked_ids])
        if day % 15 == 14:
            print(f"  day {day + 1}/{DAYS}: {applied:,} events", flush=True)
    checked = asyncio.run(_check_against_store(settings, fold, states, checked_events))
    return states, applied, checked


async def _check_against_store(
    settings: Settings,
    fold: FeatureFold,
    states: dict[str, CustomerState],
    days: list[list[Event]],
) -> int:
    """Apply the sample's events through the store, day by day; the bytes must match."""
    redis = connect_redis(str(settings.redis_url))
    try:
        await flush(redis)
        store = RedisFeatureStore(redis, fold, key_prefix=settings.key_prefix)
        for events in days:
            await store.apply(events)
        checked = 0
        for customer in {event.customer_id for events in days for event in events}:
            stored = await store.read_state(customer)
            if stored is None or fold.encode(stored) != fold.encode(states[customer]):
                raise AssertionError(f"the store's state of {customer} differs from the fold's")
            checked += 1
        return checked
    finally:
        await redis.aclose()


async def _one_repeat(
    settings: Settings, fold: FeatureFold, encoded: dict[str, bytes]
) -> dict[str, float]:
    """Baseline one-byte strings, then the states, each from an empty Valkey."""
    redis = connect_redis(str(settings.redis_url))
    try:
        store = RedisFeatureStore(redis, fold, key_prefix=settings.key_prefix)
        keyed = {store.state_key(customer): raw for customer, raw in encoded.items()}
        keys = list(keyed)
        await flush(redis)
        empty = await _used_memory(redis)
        await _write(redis, dict.fromkeys(keys, b"1"))
        one_byte = (await _used_memory(redis) - empty) / len(keys)

        await flush(redis)
        empty = await _used_memory(redis)
        await _write(redis, keyed)
        features = (await _used_memory(redis) - empty) / len(keys)
        sample = random.Random(0).sample(keys, min(SAMPLE, len(keys)))
        usages = [await redis.memory_usage(key, samples=0) or 0 for key in sample]
        return {
            "features_bytes_per_customer": features,
            "one_byte_string_bytes_per_customer": one_byte,
            "state_memory_usage_bytes": statistics.median(usages),
            "encoded_state_bytes": statistics.fmean(len(raw) for raw in encoded.values()),
        }
    finally:
        await redis.aclose()


async def _write(redis: Redis, values: dict[str, bytes]) -> None:
    items = list(values.items())
    for start in range(0, len(items), 1_000):
        await redis.mset(dict(items[start : start + 1_000]))


def _part_shares(fold: FeatureFold, states: dict[str, CustomerState]) -> dict[str, float]:
    """The share of encoded bytes taken by event ids and by daily buckets."""
    daily_index = next(i for i, f in enumerate(STORED) if f.kind is Kind.DAILY)
    total = seen = daily = 0
    for state in states.values():
        total += len(fold.encode(state))
        seen += len(msgspec.msgpack.encode({day: ids.tobytes() for day, ids in state.seen.items()}))
        daily += len(msgspec.msgpack.encode(state.slots[daily_index].packed()))
    return {"seen": seen / total, "daily": daily / total}


def _quantile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def _used_memory(redis: Redis) -> int:
    """`used_memory` once it has settled: Valkey resizes its key tables in its background
    cron after mass writes and deletes, which moves a few hundred KB a moment later."""
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
