"""The Redis feature store against the real embedded Valkey."""

from __future__ import annotations

import asyncio
import math
import random
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.core.settings import Settings
from features.config import FeatureConfig
from features.events import Channel, Event
from features.reading import read_features
from features.state import FeatureFold
from features.stats import IngestCounts, IngestStats
from features.store import ApplyResult, RedisFeatureStore

CUSTOMERS = ["C1", "C2", "C3", "user@example.com", "K-9.x"]
TYPES = ["transaction", "login", "deposit", "page_view", "transaction", "withdrawal"]
T0 = 1767605400.0
FOLD = FeatureFold(FeatureConfig())


def make_events(count: int, seed: int = 7, prefix: str = "e") -> list[Event]:
    """Events over ~30 hours in time order (within the allowed lateness of each other)."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        event_type = rng.choice(TYPES)
        fields = {
            "event_id": f"{prefix}{i:04d}",
            "customer_id": rng.choice(CUSTOMERS),
            "type": event_type,
            "channel": rng.choice(list(Channel)).value,
            "ts": T0 + i * 60 + rng.choice([0.0, 0.25, 0.5]),
        }
        if event_type in ("transaction", "deposit", "withdrawal"):
            fields["amount"] = rng.randrange(0, 100_000) / 100
        events.append(Event.model_validate(fields))
    return events


def reference(events: list[Event]) -> dict[str, bytes]:
    """Each customer's encoded state, folded in this process without Redis."""
    states = {}
    for event in events:
        FOLD.apply(states.setdefault(event.customer_id, FOLD.new_state()), event)
    for state in states.values():
        FOLD.prune(state)
    return {customer: FOLD.encode(state) for customer, state in states.items()}


def store_for(
    redis: Redis, settings: Settings, suffix: str = "", cached_states: int = 0
) -> RedisFeatureStore:
    return RedisFeatureStore(
        redis, FOLD, key_prefix=settings.key_prefix + suffix, cached_states=cached_states
    )


async def stored_states(store: RedisFeatureStore) -> dict[str, bytes]:
    states = {}
    for customer in CUSTOMERS:
        state = await store.read_state(customer)
        if state is not None:
            states[customer] = FOLD.encode(state)
    return states


async def test_apply_then_read_equals_the_in_process_fold(redis: Redis, settings: Settings) -> None:
    store = store_for(redis, settings)
    events = make_events(300)
    for start in range(0, 300, 50):
        result = await store.apply(events[start : start + 50])
        assert (result.applied, result.duplicates, result.late) == (50, 0, [])
    assert await stored_states(store) == reference(events)
    features = await store.read("C1", now=T0 + 86_400)
    assert features == read_features(FOLD, await store.read_state("C1"), T0 + 86_400)
    assert features is not None
    assert features["event_count"] > 0


async def test_replays_and_duplicates_change_nothing(redis: Redis, settings: Settings) -> None:
    store = store_for(redis, settings)
    events = make_events(120)
    await store.apply(events)
    before = await stored_states(store)
    replay = events[40:] + events[:10] + events[:10]
    result = await store.apply(replay)
    assert (result.applied, result.duplicates) == (0, len(replay))
    assert await stored_states(store) == before


async def test_late_events_are_returned_with_their_reason(redis: Redis, settings: Settings) -> None:
    store = store_for(redis, settings)
    now = Event.model_validate(
        {"event_id": "n", "customer_id": "C1", "type": "login", "channel": "web", "ts": T0}
    )
    old = now.model_copy(update={"event_id": "o", "ts": now.ts.replace(year=2025)})
    result = await store.apply([now, old])
    assert result.applied == 1
    assert [late.event.event_id for late in result.late] == ["o"]
    assert "allowed lateness" in result.late[0].reason


@pytest.mark.parametrize("cached_states", [0, 100])
async def test_concurrent_writers_lose_no_update(
    redis: Redis, settings: Settings, cached_states: int
) -> None:
    """Two writers applying to the same customers at once (a rebalance hand-over): every
    event counts once — the optimistic transaction retries the loser."""
    events = make_events(400)
    first = store_for(redis, settings, cached_states=cached_states)
    second = store_for(redis, settings, cached_states=cached_states)
    batches = [events[i : i + 20] for i in range(0, 400, 20)]
    results = await asyncio.gather(
        *((first if index % 2 else second).apply(batch) for index, batch in enumerate(batches))
    )
    assert sum(result.applied for result in results) == 400
    counts = [await first.read(customer, now=T0) for customer in CUSTOMERS]
    assert sum(features["event_count"] for features in counts if features) == 400


async def test_batches_racing_on_one_cached_store_lose_no_update(
    redis: Redis, settings: Settings
) -> None:
    """Concurrent batches of one store share its state cache: none folds into a state
    another is folding, and a batch retried after a conflict starts from Redis."""
    store = store_for(redis, settings, cached_states=100)
    events = make_events(400)
    await asyncio.gather(*(store.apply(events[i : i + 10]) for i in range(0, 400, 10)))
    expected = reference(events)
    for customer in CUSTOMERS:
        got = await store.read(customer, now=T0 + 86_400)
        want = read_features(FOLD, FOLD.decode(expected[customer]), T0 + 86_400)
        assert got is not None
        assert got.keys() == want.keys()
        for name, value in got.items():  # decayed sums: another order, other last bits
            assert value == (
                pytest.approx(want[name], rel=1e-12) if "decayed" in name else want[name]
            )


async def test_a_cached_store_sees_what_other_writers_wrote(
    redis: Redis, settings: Settings
) -> None:
    cached, other = store_for(redis, settings, cached_states=100), store_for(redis, settings)
    events = make_events(300)
    for start in range(0, 300, 30):
        writer = other if start // 30 % 3 == 2 else cached  # cached twice, then the other
        await writer.apply(events[start : start + 30])
    assert await stored_states(cached) == reference(events)
    assert cached.state_cache.hits > 0
    assert cached.state_cache.misses > 0


async def test_a_cached_store_starts_afresh_after_another_deleted_the_customer(
    redis: Redis, settings: Settings
) -> None:
    """The cached state of a deleted customer is not written back: the write finds the
    customer's bytes gone and the batch is applied to what Redis now holds (nothing)."""
    cached, other = store_for(redis, settings, cached_states=100), store_for(redis, settings)
    events = make_events(60)
    await cached.apply(events[:30])
    for customer in CUSTOMERS:
        await other.delete(customer)
    await cached.apply(events[30:])
    assert await stored_states(cached) == reference(events[30:])


async def test_a_batch_of_thousands_of_customers_is_written_whole(
    redis: Redis, settings: Settings
) -> None:
    """The write script compares and writes a thousand keys at a time (Lua cannot pass
    thousands at once): every chunk counts."""
    store = store_for(redis, settings, cached_states=5_000)
    customers = [f"B{i}" for i in range(4_500)]  # unpack() takes 8,000 values at most

    def logins(prefix: str, offset: float) -> list[Event]:
        return [
            Event.model_validate(
                {
                    "event_id": f"{prefix}{i}",
                    "customer_id": customer,
                    "type": "login",
                    "channel": "web",
                    "ts": T0 + offset,
                }
            )
            for i, customer in enumerate(customers)
        ]

    assert (await store.apply(logins("a", 0))).applied == 4_500  # all new: read, then written
    assert (await store.apply(logins("b", 60))).applied == 4_500  # all cached: compared
    await redis.set(store.state_key(customers[-1]), FOLD.encode(FOLD.new_state()))
    assert (await store.apply(logins("c", 120))).applied == 4_500  # the last chunk changed
    states = await store.read_states(customers)
    counts = [read_features(FOLD, state, T0 + 600)["event_count"] for state in states if state]
    assert counts == [3] * 4_499 + [1]
    await redis.delete(*map(store.state_key, customers))  # the server is shared: leave it small


async def test_delete_removes_the_customer(redis: Redis, settings: Settings) -> None:
    store = store_for(redis, settings)
    events = make_events(10)
    await store.apply(events)
    customer = events[0].customer_id
    assert await store.delete(customer)
    assert await store.read_state(customer) is None
    assert not await store.delete(customer)


async def test_a_batch_is_counted_in_its_own_transaction(redis: Redis, settings: Settings) -> None:
    store = store_for(redis, settings)
    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    events = make_events(30)
    await store.apply(events, count_into=stats, rejected=2)
    await store.apply(events[:5], count_into=stats)
    await store.apply([], count_into=stats, rejected=1)  # a message with no valid event
    assert await stats.read() == IngestCounts(applied=30, duplicates=5, dead_lettered=3)


# -- bulk loads: each batch's write in flight while the next is folded ---------------------


@pytest.mark.parametrize("cached_states", [0, 100])
async def test_bulk_batches_store_what_one_batch_at_a_time_stores(
    redis: Redis, settings: Settings, cached_states: int
) -> None:
    """Batches that share customers, a replayed batch and a late event: the same states,
    results and counts as `apply` called for each batch in turn."""
    events = make_events(300)
    late = events[0].model_copy(update={"event_id": "late", "ts": events[0].ts.replace(year=2025)})
    batches = [events[i : i + 25] for i in range(0, 300, 25)]
    batches += [events[50:75], [], [late]]
    one_by_one = store_for(redis, settings, ":one", cached_states=cached_states)
    bulk = store_for(redis, settings, ":bulk", cached_states=cached_states)
    one_stats = IngestStats(redis, key_prefix=settings.key_prefix + ":one")
    bulk_stats = IngestStats(redis, key_prefix=settings.key_prefix + ":bulk")
    results = [await one_by_one.apply(batch, count_into=one_stats) for batch in batches]

    result = await bulk.apply_batches(iter(batches), count_into=bulk_stats)

    assert (result.applied, result.duplicates) == (300, 25)
    assert result.applied == sum(r.applied for r in results)
    assert [r.event.event_id for r in result.late] == ["late"]
    assert await stored_states(bulk) == await stored_states(one_by_one) == reference(events)
    assert await bulk_stats.read() == await one_stats.read() == IngestCounts(300, 25, 1)


async def test_bulk_batches_racing_another_writer_lose_no_update(
    redis: Redis, settings: Settings
) -> None:
    """Another writer changes the bulk load's customers while writes are in flight: the
    writes that find a change are redone the careful way, with the batch folded after
    them, and every event counts once."""
    events = make_events(600)
    bulk, other = store_for(redis, settings, cached_states=100), store_for(redis, settings)
    bulk_events, other_events = events[::3] + events[1::3], events[2::3]
    redone = 0
    apply_watched = bulk._apply_watched

    async def counting_apply_watched(*args: Any, **kwargs: Any) -> ApplyResult:
        nonlocal redone
        redone += 1
        return await apply_watched(*args, **kwargs)

    bulk._apply_watched = counting_apply_watched  # type: ignore[method-assign]

    async def other_writer() -> None:
        for start in range(0, len(other_events), 5):
            await other.apply(other_events[start : start + 5])

    batches = (bulk_events[i : i + 10] for i in range(0, len(bulk_events), 10))
    result, _ = await asyncio.gather(bulk.apply_batches(batches), other_writer())

    assert result.applied == len(bulk_events)
    assert redone > 0
    counts = [await bulk.read(customer, now=T0) for customer in CUSTOMERS]
    assert sum(features["event_count"] for features in counts if features) == 600


async def test_bulk_batches_follow_linked_identifiers(redis: Redis, settings: Settings) -> None:
    store = store_for(redis, settings, cached_states=100)
    events = make_events(100)
    await store.link("C1", "card:4111")
    on_card = [
        event.model_copy(update={"customer_id": "card:4111"})
        if event.customer_id == "C1"
        else event
        for event in events
    ]

    result = await store.apply_batches(on_card[i : i + 10] for i in range(0, 100, 10))

    assert result.applied == 100
    assert await stored_states(store) == reference(events)


def transaction(event_id: str, at: float, customer_id: str = "C1") -> Event:
    return Event.model_validate(
        {"event_id": event_id, "customer_id": customer_id, "type": "transaction",
         "channel": "pos", "ts": at, "amount": 10.0}
    )  # fmt: skip


FAR_FUTURE = 4_070_908_800.0  # 2099-01-01T00:00:00Z


@pytest.mark.parametrize("cached_states", [0, 100], ids=["uncached", "cached"])
async def test_a_latest_event_time_far_ahead_no_longer_makes_every_event_late(
    redis: Redis, settings: Settings, cached_states: int
) -> None:
    store = store_for(redis, settings, cached_states=cached_states)
    now = time.time()
    # what a stored state could hold before event times were bounded at the door
    await store.apply([transaction("before", now - 3_600), transaction("2099", FAR_FUTURE)])

    result = await store.apply([transaction("today", now)])

    assert (result.applied, result.late) == (1, [])
    assert (await store.apply([transaction("today", now)])).duplicates == 1
    state = await store.read_state("C1")
    assert state is not None
    assert state.watermark <= time.time() + FOLD.config.max_clock_skew_s
    features = await store.read("C1")
    assert features is not None
    assert features["txn_count"] == 3
    assert features["txn_count_7d"] == 1  # today's; the 2099 day is not in a window of now
    assert 1.0 <= features["txn_decayed_count"] <= 2.0  # 2099's at age 0, plus today's


async def test_linking_an_identity_far_ahead_in_time_merges_without_overflow(
    redis: Redis, settings: Settings
) -> None:
    store = store_for(redis, settings)
    now = time.time()
    await store.apply([transaction("mine", now - 60), transaction("theirs", FAR_FUTURE, "D1")])

    await store.link("C1", "D1")

    features = await store.read("C1")
    assert features is not None
    assert features["txn_count"] == 2
    assert all(math.isfinite(v) for v in features.values() if isinstance(v, float))
    assert (await store.apply([transaction("next", now)])).late == []
