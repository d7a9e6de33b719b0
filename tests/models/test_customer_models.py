"""Churn and segment wiring against the real embedded Valkey: signed stores, feed, learner."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from engine.core.settings import Settings
from features.events import Event
from features.state import FeatureFold
from features.store import RedisFeatureStore
from models.checkpoints import (
    CheckpointRefusedError,
    CheckpointStore,
    SignedModelStore,
    StaleCheckpointError,
)
from models.churn_labels import PendingChurnLabels
from models.churn_model import ChurnModel
from models.cooperative import SLICE_S
from models.customer_model_stores import CustomerModelStores
from models.customer_models import CustomerModelsLearner, LearnStep
from models.segments import Segmenter, SegmentSamples
from models.snapshots import CustomerModelsFeed, SnapshotBudget

KEY = b"k" * 32
DAY = 86_400.0
T0 = 1_767_605_400.0  # 2026-01-05T09:30:00Z


def churn_store(redis: Redis, settings: Settings, key: bytes = KEY) -> SignedModelStore[ChurnModel]:
    return CustomerModelStores.open(redis, key_prefix=settings.key_prefix, signing_key=key).churn


async def test_a_signed_model_store_versions_its_own_key_beside_the_propensity_one(
    redis: Redis, settings: Settings
) -> None:
    stores = CustomerModelStores.open(redis, key_prefix=settings.key_prefix, signing_key=KEY)
    store = stores.churn
    assert store.key == f"{settings.key_prefix}nba:model:churn"
    assert stores.segments.key == f"{settings.key_prefix}nba:model:segments"
    assert (await store.version(), await store.latest()) == (0, None)
    model = ChurnModel()
    model.learn_one({"f": 1.0}, churned=True)
    assert (await store.save(model, expected_version=0)).version == 1
    assert (await store.save(model, expected_version=1)).version == 2
    loaded = await store.latest()
    assert loaded is not None
    assert (loaded.version, loaded.model.labels_learned) == (2, 1)
    assert loaded.saved_ts is not None
    with pytest.raises(StaleCheckpointError):
        await store.save(model, expected_version=1)
    propensity = CheckpointStore(redis, key_prefix=settings.key_prefix, signing_key=KEY)
    assert await propensity.version() == 0  # untouched


async def test_a_model_signed_under_another_key_or_of_another_type_is_refused(
    redis: Redis, settings: Settings
) -> None:
    await churn_store(redis, settings, b"o" * 32).save(ChurnModel(), expected_version=0)
    with pytest.raises(CheckpointRefusedError, match="version 1 refused"):
        await churn_store(redis, settings).latest()
    as_segments = SignedModelStore(
        redis, key_prefix=settings.key_prefix, signing_key=b"o" * 32, name="churn",
        model_type=Segmenter,
    )  # fmt: skip
    with pytest.raises(CheckpointRefusedError):
        await as_segments.latest()


def event(event_id: str, customer_id: str, kind: str, ts: float, **fields: object) -> Event:
    return Event.model_validate(
        {"event_id": event_id, "customer_id": customer_id, "type": kind, "channel": "mobile",
         "ts": ts} | fields
    )  # fmt: skip


class Wiring:
    """A store, a feed and two learners (two workers) on one test's keys."""

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        budget: SnapshotBudget | None = None,
        slice_s: float = SLICE_S,
    ) -> None:
        prefix = settings.key_prefix
        self.store = RedisFeatureStore(
            redis, FeatureFold(settings.feature_config()), key_prefix=prefix
        )
        self.labels = PendingChurnLabels(
            redis, key_prefix=prefix, horizon_s=10 * DAY, dormant_after_s=5 * DAY
        )
        self.samples = SegmentSamples(redis, key_prefix=prefix)
        self.feed = CustomerModelsFeed(
            self.labels, self.samples, self.store, budget or SnapshotBudget(1000.0)
        )
        self.segments_store = CustomerModelStores.open(
            redis, key_prefix=prefix, signing_key=KEY
        ).segments
        self.learners = [
            CustomerModelsLearner(
                redis,
                self.labels,
                self.samples,
                churn_store(redis, settings),
                self.segments_store,
                new_segmenter=lambda: Segmenter(2, warmup=2),
                owner=owner,
                key_prefix=prefix,
                slice_s=slice_s,
            )
            for owner in ("w1", "w2")
        ]

    async def apply(self, events: list[Event]) -> int:
        await self.store.apply(events)
        return await self.feed.observe(events, {})


async def test_the_stream_resolves_labels_and_one_learner_learns_and_checkpoints_them(
    redis: Redis, settings: Settings
) -> None:
    wiring = Wiring(redis, settings)
    # a snapshot per customer, once per horizon: a second batch takes none
    assert await wiring.apply([event("a1", "A", "login", T0), event("b1", "B", "login", T0)]) == 2
    assert await wiring.apply([event("a2", "A", "login", T0 + DAY)]) == 0
    # B closes a product: labelled at once, and B gets a new snapshot after it
    closed = event("b2", "B", "product_closed", T0 + 2 * DAY, product="savings")
    assert await wiring.apply([closed]) == 1
    first, second = wiring.learners
    step = await first.step()
    assert step is not None
    assert (step.churn_labels, step.segment_samples) == (1, 3)
    assert (step.churn_version, step.segments_version) == (1, 1)
    assert await second.step() is None  # the lock is held by the first
    # C's event moves the watermark past A's horizon: A is dormant (last activity day 1)
    assert await wiring.apply([event("c1", "C", "login", T0 + 11 * DAY)]) == 1
    step = await first.step()
    assert step is not None
    assert (step.churn_labels, step.segment_samples, step.churn_version) == (1, 1, 2)
    assert await first.step() == LearnStep(0, 0, 2, 2)  # nothing new: no new versions
    stored = await churn_store(redis, settings).latest()
    assert stored is not None
    assert stored.model.labels_learned == 2
    segments = await wiring.segments_store.latest()
    assert segments is not None
    assert segments.model.ready
    assert segments.model.customers_learned == 4


async def test_snapshots_wait_for_the_budget_and_come_at_a_later_batch(
    redis: Redis, settings: Settings
) -> None:
    now = [0.0]
    wiring = Wiring(redis, settings, SnapshotBudget(2.0, clock=lambda: now[0]))
    customers = "ABCDE"
    first = [event(f"{c}1", c, "login", T0) for c in customers]
    assert await wiring.apply(first) == 2
    assert await wiring.apply([event(f"{c}2", c, "login", T0 + 60) for c in customers]) == 0
    now[0] = 1.0
    assert await wiring.apply([event(f"{c}3", c, "login", T0 + 120) for c in customers]) == 2
    pending = [await redis.exists(wiring.labels.customer_key(c)) for c in customers]
    assert pending == [1, 1, 1, 1, 0]
    t0 = await redis.hget(wiring.labels.customer_key("C"), "t0")
    assert t0 is not None
    assert float(t0) == T0 + 120  # taken at the customer's latest event of that batch


async def test_a_new_lock_holder_builds_on_the_stored_models(
    redis: Redis, settings: Settings
) -> None:
    wiring = Wiring(redis, settings)
    first, second = wiring.learners
    await wiring.apply([event("a1", "A", "login", T0)])
    assert (await first.step()) is not None
    await redis.delete(first.lock_key)  # the first worker died: its lock lapsed
    await wiring.apply([event("b1", "B", "login", T0 + 11 * DAY)])
    step = await second.step()
    assert step is not None
    assert (step.churn_labels, step.churn_version, step.segments_version) == (1, 1, 2)
    assert second.segmenter.customers_learned == 2  # the first's sample, loaded, plus B


async def test_a_step_lets_the_event_loop_run_between_the_samples_it_learns(
    redis: Redis, settings: Settings
) -> None:
    wiring = Wiring(redis, settings, slice_s=0.0)  # a pause after every sample
    learner = wiring.learners[0]
    customers = [f"C{i}" for i in range(6)]
    await wiring.apply([event(f"{c}-1", c, "login", T0) for c in customers])
    seen: list[int] = []
    stepping = asyncio.create_task(learner.step())
    while not stepping.done():  # another task on the loop, as the worker's events are
        seen.append(learner.segmenter.customers_learned)
        await asyncio.sleep(0)
    step = await stepping
    assert step is not None
    assert step.segment_samples == len(customers)
    assert set(range(1, len(customers))) <= set(seen)  # it ran after each sample


async def test_a_learner_whose_lock_lapsed_leaves_the_new_holders_lock_alone(
    redis: Redis, settings: Settings
) -> None:
    wiring = Wiring(redis, settings)
    first, second = wiring.learners
    assert await first.step() is not None
    await redis.delete(first.lock_key)  # the first stalled past its TTL: the lock lapsed
    assert await second.step() is not None
    assert await first.step() is None  # back from its stall: the lock is the second's
    assert await redis.get(first.lock_key) == b"w2"
    assert await second.step() is not None  # renewed by its holder, step after step
