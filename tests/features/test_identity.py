"""Identity resolution on the real embedded Valkey: identifiers, links, merges, deletion."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.core.settings import Settings
from features.config import FeatureConfig
from features.events import Event
from features.reading import read_features
from features.state import FeatureFold
from features.stats import IngestCounts, IngestStats
from features.store import RedisFeatureStore

T0 = 1767605400.0
FOLD = FeatureFold(FeatureConfig())


def event(event_id: str, customer: str, kind: str = "login", **fields: Any) -> Event:
    return Event.model_validate(
        {
            "event_id": event_id,
            "customer_id": customer,
            "type": kind,
            "channel": fields.pop("channel", "mobile"),
            "ts": T0 + fields.pop("offset", 0),
            **fields,
        }
    )


def store_for(redis: Redis, settings: Settings, cached_states: int = 0) -> RedisFeatureStore:
    return RedisFeatureStore(
        redis, FOLD, key_prefix=settings.key_prefix, cached_states=cached_states
    )


async def count(store: RedisFeatureStore, customer: str) -> int:
    features = await store.read(customer, now=T0 + 60)
    return 0 if features is None else int(features["event_count"])


async def test_linking_an_identifier_merges_its_history_into_the_customer(
    redis: Redis, settings: Settings
) -> None:
    store = store_for(redis, settings)
    device = [event(f"d{i}", "device:ab12", offset=i) for i in range(3)]
    customer = [event(f"c{i}", "C1", "transaction", amount=10.0, offset=i) for i in range(2)]
    await store.apply(device + customer)
    result = await store.link("C1", "device:ab12")
    assert (result.customer_id, result.merged, result.already_linked) == ("C1", True, False)
    one_customer = FOLD.new_state()
    FOLD.apply_all(
        one_customer, [e.model_copy(update={"customer_id": "C1"}) for e in device + customer]
    )
    assert await store.read("C1", now=T0 + 60) == read_features(FOLD, one_customer, T0 + 60)
    assert await store.resolve("device:ab12") == "C1"
    assert await store.read("device:ab12", now=T0 + 60) == await store.read("C1", now=T0 + 60)
    await store.apply([event("d9", "device:ab12", offset=9)])  # later events follow the link
    assert await count(store, "C1") == 6
    assert (await store.link("C1", "device:ab12")).already_linked
    assert await count(store, "C1") == 6


async def test_linking_two_known_customers_makes_them_one(redis: Redis, settings: Settings) -> None:
    store = store_for(redis, settings)
    await store.apply(
        [event("a", "C1"), event("b", "C2", offset=1), event("c", "phone:447700", offset=2)]
    )
    await store.link("C2", "phone:447700")
    result = await store.link("C1", "C2")
    assert (result.customer_id, result.merged) == ("C1", True)
    assert await count(store, "C1") == 3
    assert await store.resolve("phone:447700") == "C1"  # C2's identifiers follow C2
    await store.apply([event("d", "phone:447700", offset=3)])
    assert await count(store, "C1") == 4


async def test_deleting_a_customer_removes_its_links(redis: Redis, settings: Settings) -> None:
    store = store_for(redis, settings)
    await store.apply([event("a", "C1"), event("b", "card:4111", offset=1)])
    await store.link("C1", "card:4111")
    assert await store.delete("card:4111")  # any identifier of the customer will do
    assert await store.read_state("C1") is None
    assert await store.resolve("card:4111") == "card:4111"
    assert await redis.keys(f"{settings.key_prefix}*") == []


async def test_a_batch_naming_a_linked_identifier_is_counted_once(
    redis: Redis, settings: Settings
) -> None:
    store = store_for(redis, settings)
    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    await store.link("C1", "card:4111")
    batch = [event("a", "card:4111"), event("b", "C1", offset=1)]
    await store.apply(batch, count_into=stats, rejected=1)
    await store.apply(batch, count_into=stats)
    assert await stats.read() == IngestCounts(applied=2, duplicates=2, dead_lettered=1)
    assert await count(store, "C1") == 2


async def test_an_identifier_linked_while_its_batch_is_folded_is_followed(
    redis: Redis, settings: Settings
) -> None:
    """The race the store's conditional write closes: a batch finds a new identifier with
    neither state nor link, the link lands before the batch writes; the batch must not
    create a state under what is now a link, and its events go to the customer."""
    store, linker = store_for(redis, settings), store_for(redis, settings)
    write = store._write_if_unchanged
    links = []

    async def link_then_write(**arguments: Any) -> Any:
        if not links:  # only once: the retry then meets the link
            links.append(await linker.link("C1", "device:new"))
        return await write(**arguments)

    store._write_if_unchanged = link_then_write  # type: ignore[method-assign]
    await store.apply([event("a", "C1"), event("b", "device:new", offset=1)])
    assert links[0].merged is False
    assert await redis.get(store.state_key("device:new")) is None
    assert await count(store, "C1") == 2


@pytest.mark.parametrize("cached_states", [0, 100])
async def test_events_racing_a_link_are_never_lost(
    redis: Redis, settings: Settings, cached_states: int
) -> None:
    store = store_for(redis, settings, cached_states)
    batches = [[event(f"e{b}-{i}", "device:x1", offset=b) for i in range(5)] for b in range(20)]
    results = await asyncio.gather(
        *(store.apply(batch) for batch in batches[:10]),
        store.link("C1", "device:x1"),
        *(store.apply(batch) for batch in batches[10:]),
    )
    applied = sum(r.applied for r in results if hasattr(r, "applied"))
    assert applied == 100
    assert await count(store, "C1") == 100
    assert await store.read_state("device:x1") is not None  # it reads as C1 now
    assert await redis.get(store.state_key("device:x1")) is None
