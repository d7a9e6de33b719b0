"""The Redis feature store against the real embedded Valkey."""

from __future__ import annotations

import random
import re

import pytest
from redis.asyncio import Redis

from engine.settings import Settings
from features.events import Channel, Event
from features.registry import Op, default_features, updates_for
from features.store import ApplyResult, RedisFeatureStore

CUSTOMERS = ["C1", "C2", "C3", "user@example.com", "K-9.x"]
TYPES = ["transaction", "login", "deposit", "page_view", "transaction", "withdrawal"]
T0 = 1767605400.0


def make_events(count: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    events = []
    for i in range(count):
        event_type = rng.choice(TYPES)
        fields = {
            "event_id": f"e{i:04d}",
            "customer_id": rng.choice(CUSTOMERS),
            "type": event_type,
            "channel": rng.choice(list(Channel)).value,
            "ts": T0 + rng.randrange(0, 86_400 * 30) + rng.choice([0.0, 0.25, 0.5]),
        }
        if event_type in ("transaction", "deposit", "withdrawal"):
            fields["amount"] = rng.randrange(0, 100_000) / 100
        events.append(Event.model_validate(fields))
    return events


def reference(events: list[Event]) -> dict[str, dict[str, float | int]]:
    """The features each customer should have, folded in plain Python."""
    stored: dict[str, dict[str, float]] = {}
    for event in events:
        fields = stored.setdefault(event.customer_id, {})
        for update in updates_for(event):
            current = fields.get(update.field)
            if update.op is Op.ADD:
                fields[update.field] = (current or 0.0) + update.value
            elif current is None:
                fields[update.field] = update.value
            elif update.op is Op.MAX:
                fields[update.field] = max(current, update.value)
            else:
                fields[update.field] = min(current, update.value)
    result = {}
    for customer, fields in stored.items():
        values = default_features()
        for name, value in fields.items():
            values[name] = int(value) if isinstance(values[name], int) else value
        result[customer] = values
    return result


def store_for(
    redis: Redis, settings: Settings, suffix: str = "", ttl: int = 600
) -> RedisFeatureStore:
    return RedisFeatureStore(redis, key_prefix=settings.key_prefix + suffix, dedup_ttl_seconds=ttl)


async def read_all(store: RedisFeatureStore) -> dict[str, dict[str, float | int] | None]:
    return {customer: await store.read(customer) for customer in CUSTOMERS}


async def test_apply_then_read_equals_a_python_reference(redis: Redis, settings: Settings) -> None:
    store = store_for(redis, settings)
    events = make_events(120)
    assert await store.apply(events) == ApplyResult(applied=120, duplicates=0)
    expected = reference(events)
    assert set(expected) == set(CUSTOMERS)
    for customer, features in (await read_all(store)).items():
        assert features is not None
        assert features == pytest.approx(expected[customer], rel=1e-12)
        assert [type(value) for value in features.values()] == [
            type(value) for value in expected[customer].values()
        ]


async def test_apply_in_several_batches_equals_one_batch(redis: Redis, settings: Settings) -> None:
    events = make_events(90)
    whole, batched = store_for(redis, settings, "whole:"), store_for(redis, settings, "batched:")
    await whole.apply(events)
    for start in range(0, len(events), 17):
        await batched.apply(events[start : start + 17])
    assert await read_all(batched) == await read_all(whole)


async def test_applying_the_same_events_twice_changes_nothing(
    redis: Redis, settings: Settings
) -> None:
    store = store_for(redis, settings)
    events = make_events(60)
    assert await store.apply(events) == ApplyResult(applied=60, duplicates=0)
    once = await read_all(store)
    assert await store.apply(events) == ApplyResult(applied=0, duplicates=60)
    assert await read_all(store) == once
    some_again = events[10:20]
    assert await store.apply(some_again) == ApplyResult(applied=0, duplicates=10)
    assert await read_all(store) == once


async def test_a_duplicate_inside_one_batch_is_applied_once(
    redis: Redis, settings: Settings
) -> None:
    store = store_for(redis, settings)
    event = make_events(1)[0]
    assert await store.apply([event, event, event]) == ApplyResult(applied=1, duplicates=2)
    features = await store.read(event.customer_id)
    assert features is not None
    assert features["event_count"] == 1


async def test_reordered_events_give_identical_features(redis: Redis, settings: Settings) -> None:
    events = make_events(150)
    shuffled = list(events)
    random.Random(3).shuffle(shuffled)
    in_order = store_for(redis, settings, "a:")
    reordered = store_for(redis, settings, "b:")
    reversed_ = store_for(redis, settings, "c:")
    await in_order.apply(events)
    await reordered.apply(shuffled)
    await reversed_.apply(list(reversed(events)))
    expected = await read_all(in_order)
    assert await read_all(reordered) == expected
    assert await read_all(reversed_) == expected


async def test_first_and_last_seen_follow_event_time_not_arrival(
    redis: Redis, settings: Settings
) -> None:
    store = store_for(redis, settings)
    late = Event.model_validate(
        {"event_id": "late", "customer_id": "C1", "type": "login", "channel": "web", "ts": T0 + 100}
    )
    early = late.model_copy(update={"event_id": "early", "ts": late.ts.replace(year=2025)})
    await store.apply([late])
    await store.apply([early])  # arrives last, happened first
    features = await store.read("C1")
    assert features is not None
    assert features["last_seen_ts"] == late.epoch_seconds
    assert features["first_seen_ts"] == early.epoch_seconds
    assert features["ch_web_last_ts"] == late.epoch_seconds
    assert features["event_count"] == 2


async def test_applying_nothing_is_a_no_op(redis: Redis, settings: Settings) -> None:
    store = store_for(redis, settings)
    assert await store.apply([]) == ApplyResult(applied=0, duplicates=0)
    assert await redis.keys(f"{settings.key_prefix}*") == []


async def test_read_of_an_unknown_customer_is_none(redis: Redis, settings: Settings) -> None:
    store = store_for(redis, settings)
    await store.apply(make_events(10))
    assert await store.read("never-seen") is None


async def test_keys_carry_the_prefix_and_the_customer_hash_tag(
    redis: Redis, settings: Settings
) -> None:
    store = store_for(redis, settings)
    events = make_events(40)
    await store.apply(events)
    keys = {key.decode() async for key in redis.scan_iter(match=f"{settings.key_prefix}*")}
    expected = {f"{settings.key_prefix}cust:{{{e.customer_id}}}:f" for e in events} | {
        f"{settings.key_prefix}cust:{{{e.customer_id}}}:e:{e.event_id}" for e in events
    }
    assert keys == expected
    by_id = {event.event_id: event.customer_id for event in events}
    for key in keys:
        # Redis Cluster hashes only what is inside the first {...}: the customer id
        tag = re.search(r"\{([^}]*)\}", key)
        assert tag is not None
        assert tag.group(1) in CUSTOMERS
        if ":e:" in key:
            assert tag.group(1) == by_id[key.rsplit(":e:", 1)[1]]
    assert store.customer_key("C1", "f") == f"{settings.key_prefix}cust:{{C1}}:f"


async def test_dedup_markers_expire_within_the_configured_ttl(
    redis: Redis, settings: Settings
) -> None:
    store = store_for(redis, settings, ttl=120)
    events = make_events(20)
    await store.apply(events)
    for event in events:
        ttl = await redis.ttl(store.customer_key(event.customer_id, f"e:{event.event_id}"))
        assert 0 < ttl <= 120
