"""RFM quintile edges from a walk over the real embedded Valkey's customer base."""

from __future__ import annotations

import asyncio
import statistics

import pytest
from redis.asyncio import Redis

from engine.core.settings import Settings
from features.config import FeatureConfig
from features.events import Event
from features.reading import read_features
from features.state import FeatureFold
from features.store import RedisFeatureStore
from features.tiers import BaseWalker, EdgesCache, quintile_edges, read_edges, rfm_values

T0 = 1767605400.0
DAY = 86_400
FOLD = FeatureFold(FeatureConfig())


def purchases(customer: int) -> list[Event]:
    """Customer i buys i times, i × 10 each, the last one i hours before T0."""
    return [
        Event.model_validate(
            {
                "event_id": f"p{customer}-{n}",
                "customer_id": f"C{customer}",
                "type": "transaction",
                "channel": "pos",
                "ts": T0 - customer * 3600 - (customer - n) * 60,
                "amount": customer * 10.0,
            }
        )
        for n in range(customer)
    ]


async def test_a_pass_publishes_the_quintiles_of_every_purchasing_customer(
    redis: Redis, settings: Settings
) -> None:
    store = RedisFeatureStore(redis, FOLD, key_prefix=settings.key_prefix)
    for customer in range(1, 41):
        await store.apply(purchases(customer))
    await store.apply(
        [
            Event.model_validate(
                {"event_id": "l", "customer_id": "P", "type": "login", "channel": "web", "ts": T0}
            )
        ]
    )
    walker = BaseWalker(redis, FOLD, key_prefix=settings.key_prefix, owner="a", keys_per_step=7)
    other = BaseWalker(redis, FOLD, key_prefix=settings.key_prefix, owner="b")
    edges = None
    for _ in range(10_000):  # SCAN steps through every key of the shared server, not only ours
        edges = await walker.step(now=T0)
        if edges:
            break
        assert await other.step(now=T0) is None  # one walker at a time: "a" holds the pass
    assert edges is not None
    rows = [rfm_values(FOLD, await store.read_state(f"C{i}"), T0) for i in range(1, 41)]
    expected = quintile_edges([row for row in rows if row is not None])
    assert edges == expected
    assert edges["r"] == statistics.quantiles(
        [(i * 3600 + 60) / DAY for i in range(1, 41)], n=5, method="inclusive"
    )
    assert await read_edges(redis, key_prefix=settings.key_prefix) == {
        d: tuple(v) for d, v in expected.items()
    }
    cache = EdgesCache(redis, key_prefix=settings.key_prefix)
    await cache.refresh()
    tiered = await store.read("C40", now=T0, rfm_edges=cache.current)
    assert tiered is not None
    assert (tiered["rfm_f_score"], tiered["rfm_m_score"]) == (5, 5)
    assert tiered["value_tier"] in {"high", "medium"}


def test_rfm_values_match_the_full_read() -> None:
    state = FOLD.new_state()
    FOLD.apply_all(state, purchases(5))
    values = read_features(FOLD, state, T0 + DAY)
    recency, frequency, value = rfm_values(FOLD, state, T0 + DAY)  # type: ignore[misc]
    assert round(recency, 2) == values["purchase_recency_days"]  # the feature shows 2 decimals
    assert (frequency, value) == pytest.approx(
        (values["txn_decayed_count"], values["txn_decayed_amount"])
    )
    assert rfm_values(FOLD, FOLD.new_state(), T0) is None


async def test_a_walker_whose_lock_lapsed_leaves_the_new_holders_lock_alone(
    redis: Redis, settings: Settings
) -> None:
    store = RedisFeatureStore(redis, FOLD, key_prefix=settings.key_prefix)
    for customer in range(1, 41):
        await store.apply(purchases(customer))
    prefix = settings.key_prefix
    stalled = BaseWalker(redis, FOLD, key_prefix=prefix, owner="a", keys_per_step=1, lock_ttl_s=0.1)
    lock = f"{prefix}rfm:walker"
    assert await stalled.step(now=T0) is None  # a pass begun: one SCAN step of many
    assert await redis.get(lock) == b"a"
    await asyncio.sleep(0.3)  # "a" stalls past its lock's TTL; "b" takes the lock
    other = BaseWalker(redis, FOLD, key_prefix=prefix, owner="b", keys_per_step=5, lock_ttl_s=30.0)
    assert await other.step(now=T0) is None
    # "a" wakes up: its steps neither extend nor free b's lock (it dropped its pass, and
    # b holds the lock, so it cannot start another)
    for _ in range(50):
        assert await stalled.step(now=T0) is None
        assert await redis.get(lock) == b"b"
        assert 1_000 < await redis.pttl(lock) <= 30_000  # b's TTL, set by b only
    edges = None
    for _ in range(10_000):  # SCAN steps through every key of the shared server
        edges = await other.step(now=T0)
        if edges:
            break
    assert edges is not None
    assert await redis.exists(lock) == 0  # b freed its lock at the end of its pass
