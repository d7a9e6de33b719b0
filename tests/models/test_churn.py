"""Churn labels resolved later, in the real embedded Valkey; the model learns from them."""

from __future__ import annotations

import asyncio
import doctest
import itertools
import math

import numpy as np
import pytest
from redis.asyncio import Redis

import models.churn_model
from engine.core.settings import Settings
from features.events import Event
from models import persistence
from models.churn_labels import PendingChurnLabels, Resolution, Snapshot
from models.churn_model import ChurnModel
from models.snapshots import SnapshotBudget

T0 = 1_767_605_400.0
DAY = 86_400.0
HORIZON = 30 * DAY
DORMANT_AFTER = 14 * DAY
X = {"txn_count": 2.3, "last_seen_days": 0.7}
KEY = b"a checkpoint key of 32 bytes...."
_ids = itertools.count()


@pytest.fixture
def labels(redis: Redis, settings: Settings) -> PendingChurnLabels:
    return PendingChurnLabels(
        redis,
        key_prefix=settings.key_prefix,
        horizon_s=HORIZON,
        dormant_after_s=DORMANT_AFTER,
    )


def event(customer_id: str, type_: str, ts: float, channel: str = "mobile") -> Event:
    """A valid event of any type, at event time `ts`."""
    fields: dict[str, object] = {}
    if type_ in {"product_closed", "product_opened", "product_view", "balance"}:
        fields["product"] = "savings"
    if type_ in {"transaction", "deposit", "withdrawal", "transfer", "salary", "balance"}:
        fields["amount"] = 10.0
    if type_.startswith("offer_"):
        fields["action_id"] = "gold_card"
    return Event.model_validate(
        {
            "event_id": f"e{next(_ids)}",
            "customer_id": customer_id,
            "type": type_,
            "channel": channel,
            "ts": ts,
            **fields,
        }
    )


async def test_keys_carry_the_customer_hash_tag_and_the_prefix(
    labels: PendingChurnLabels, settings: Settings
) -> None:
    assert labels.customer_key("C1") == f"{settings.key_prefix}cust:{{C1}}:churn"
    assert labels.index_key == f"{settings.key_prefix}nba:churn:due"


async def test_a_snapshot_is_pending_until_resolved_and_taken_once(
    labels: PendingChurnLabels, redis: Redis
) -> None:
    assert await labels.snapshot("C1", X, now=T0)
    assert not await labels.snapshot("C1", {"other": 1.0}, now=T0 + DAY)
    stored = await redis.hgetall(labels.customer_key("C1"))
    assert float(stored[b"t0"]) == T0
    assert float(stored[b"deadline"]) == T0 + HORIZON
    assert await redis.zscore(labels.index_key, "C1") == T0 + HORIZON
    assert 0 < await redis.ttl(labels.customer_key("C1")) <= HORIZON + 30 * DAY


async def test_a_product_closed_within_the_horizon_resolves_positive_at_once(
    labels: PendingChurnLabels, redis: Redis
) -> None:
    await labels.snapshot("C1", X, now=T0)
    closed_ts = T0 + 3 * DAY
    resolution = await labels.on_events(
        "C1", [event("C1", "login", T0 + DAY), event("C1", "product_closed", closed_ts)]
    )
    assert resolution == Resolution(
        customer_id="C1",
        x=X,
        snapshot_ts=T0,
        resolved_ts=closed_ts,
        churned=True,
        reason="closed",
    )
    assert not await redis.exists(labels.customer_key("C1"))
    replayed = await labels.on_events("C1", [event("C1", "product_closed", closed_ts)])
    assert replayed is None
    assert await labels.expire_due(T0 + HORIZON) == []
    assert await redis.zcard(labels.index_key) == 0  # the stale entry is dropped


async def test_a_closure_outside_the_horizon_resolves_nothing(
    labels: PendingChurnLabels, redis: Redis
) -> None:
    await labels.snapshot("C1", X, now=T0)
    late_old_event = event("C1", "product_closed", T0 - DAY)  # arrives late, happened before
    at_snapshot = event("C1", "product_closed", T0)  # already in the snapshot's x
    after_horizon = event("C1", "product_closed", T0 + HORIZON + 1)
    assert await labels.on_events("C1", [late_old_event, at_snapshot, after_horizon]) is None
    assert await redis.exists(labels.customer_key("C1"))


async def test_activity_in_the_last_dormancy_window_resolves_negative_at_the_horizon(
    labels: PendingChurnLabels,
) -> None:
    await labels.snapshot("C1", X, now=T0)
    assert await labels.on_events("C1", [event("C1", "login", T0 + 20 * DAY)]) is None
    assert await labels.expire_due(T0 + HORIZON - 1) == []
    [resolution] = await labels.expire_due(T0 + HORIZON)
    assert (resolution.churned, resolution.reason) == (False, "active")
    assert (resolution.snapshot_ts, resolution.resolved_ts, resolution.x) == (
        T0,
        T0 + HORIZON,
        X,
    )


@pytest.mark.parametrize(
    ("activity", "reason"),
    [
        ([], "dormant"),  # nothing at all after the snapshot
        ([("login", T0 + 5 * DAY)], "dormant"),  # active early, then silent for 25 days
        ([("login", T0 + HORIZON - DORMANT_AFTER)], "dormant"),  # exactly 14 days silent
        ([("login", T0 + HORIZON - DORMANT_AFTER + 1)], "active"),
        ([("offer_impression", T0 + 25 * DAY)], "dormant"),  # the bank's doing, not theirs
        ([("login", T0 + HORIZON + 1)], "dormant"),  # after the horizon: too late
        ([("login", T0)], "dormant"),  # at the snapshot itself: not after it
    ],
)
async def test_dormancy_is_no_customer_activity_in_the_horizons_last_window(
    labels: PendingChurnLabels, activity: list[tuple[str, float]], reason: str
) -> None:
    await labels.snapshot("C1", X, now=T0)
    await labels.on_events("C1", [event("C1", type_, ts) for type_, ts in activity])
    [resolution] = await labels.expire_due(T0 + HORIZON + DAY)
    assert resolution.reason == reason
    assert resolution.churned is (reason == "dormant")


async def test_repeated_and_concurrent_expiry_resolve_each_snapshot_once(
    labels: PendingChurnLabels,
) -> None:
    for i in range(5):
        await labels.snapshot(f"C{i}", {"i": float(i)}, now=T0 + i)
    now = T0 + HORIZON + 10
    batches = await asyncio.gather(*(labels.expire_due(now) for _ in range(4)))
    again = await labels.expire_due(now)
    resolved = [r for batch in [*batches, again] for r in batch]
    assert sorted(r.customer_id for r in resolved) == [f"C{i}" for i in range(5)]
    assert await labels.expire_due(now) == []


async def test_an_index_entry_left_behind_by_a_crash_resolves_nothing_again(
    labels: PendingChurnLabels, redis: Redis
) -> None:
    """A crash between the resolution and the index clean-up leaves the entry: harmless."""
    await labels.snapshot("C1", X, now=T0)
    assert len(await labels.expire_due(T0 + HORIZON)) == 1
    await redis.zadd(labels.index_key, {"C1": T0 + HORIZON})
    assert await labels.expire_due(T0 + HORIZON) == []
    assert await redis.zcard(labels.index_key) == 0


async def test_expiry_works_in_batches_of_limit(labels: PendingChurnLabels) -> None:
    await labels.snapshot_many([Snapshot(f"C{i}", X, T0 + i) for i in range(5)])
    now = T0 + HORIZON + 10
    assert await labels.due(now) == 5
    assert [r.customer_id for r in await labels.expire_due(now, limit=2)] == ["C0", "C1"]
    assert await labels.due(now) == 3
    assert len(await labels.expire_due(now, limit=10)) == 3
    assert await labels.due(now) == 0


async def test_a_new_snapshot_after_a_closure_keeps_its_own_deadline(
    labels: PendingChurnLabels, redis: Redis
) -> None:
    await labels.snapshot("C1", X, now=T0)
    assert await labels.on_events("C1", [event("C1", "product_closed", T0 + DAY)])
    later = T0 + 2 * DAY
    assert await labels.snapshot("C1", {"after": 1.0}, now=later)
    assert await labels.expire_due(T0 + HORIZON) == []  # the first deadline: nothing due
    assert await redis.zscore(labels.index_key, "C1") == later + HORIZON
    [resolution] = await labels.expire_due(later + HORIZON)
    assert (resolution.x, resolution.snapshot_ts) == ({"after": 1.0}, later)


async def test_a_batch_of_many_customers_resolves_each_one(labels: PendingChurnLabels) -> None:
    await labels.snapshot_many([Snapshot(c, {"c": float(i)}, T0) for i, c in enumerate("ABC")])
    outcome = await labels.on_events_many(
        [
            event("A", "product_closed", T0 + DAY),
            event("B", "login", T0 + 20 * DAY),
            event("C", "offer_impression", T0 + 20 * DAY),
            event("D", "product_closed", T0 + DAY),  # no snapshot
        ]
    )
    assert [(r.customer_id, r.reason) for r in outcome.resolutions] == [("A", "closed")]
    assert outcome.without_pending == ["A", "D"]  # A's was just resolved
    expired = await labels.expire_due(T0 + HORIZON)
    assert sorted((r.customer_id, r.reason) for r in expired) == [
        ("B", "active"),
        ("C", "dormant"),
    ]


async def test_non_finite_inputs_are_refused_before_anything_is_stored(
    labels: PendingChurnLabels, redis: Redis
) -> None:
    with pytest.raises(ValueError, match="'a'"):
        await labels.snapshot("C1", {"a": math.nan}, now=T0)
    assert not await redis.exists(labels.customer_key("C1"))


async def test_on_events_refuses_events_of_another_customer(labels: PendingChurnLabels) -> None:
    with pytest.raises(ValueError, match="other customers"):
        await labels.on_events("C1", [event("C2", "login", T0)])


def test_the_snapshot_budget_refills_at_its_rate_and_grants_in_chunks() -> None:
    now = [0.0]
    budget = SnapshotBudget(10.0, clock=lambda: now[0])
    assert budget.take(25) == 10
    assert budget.take(5) == 0
    now[0] = 0.35
    assert budget.take(3) == 3  # what is wanted, when the budget holds it
    assert budget.take(25) == 0  # more than it holds: it waits for a second's worth
    now[0] = 1.35
    assert budget.take(25) == 10
    now[0] = 60.0
    assert budget.take(100) == 10  # saved up to one second's worth, not a minute's
    with pytest.raises(ValueError, match="positive"):
        SnapshotBudget(0.0)


def test_dormancy_must_be_judged_inside_the_horizon(redis: Redis) -> None:
    with pytest.raises(ValueError, match="dormant_after_s"):
        PendingChurnLabels(redis, horizon_s=DAY, dormant_after_s=2 * DAY)


def auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties: half)."""
    ranks = np.argsort(np.argsort(scores)) + 1.0
    positives = y.sum()
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * (~y).sum()))


async def test_the_model_learns_a_synthetic_churn_signal_through_redis(
    labels: PendingChurnLabels,
) -> None:
    """Customers churn with P = sigmoid(2·risk − 1.5); half of the churners close a product,
    the others go silent; the rest stay active. Labels go through snapshots and events."""
    rng = np.random.default_rng(7)
    n = 1500
    risk, noise = rng.normal(size=n), rng.normal(size=n)
    churns = rng.random(n) < 1.0 / (1.0 + np.exp(-(2.0 * risk - 1.5)))
    closes = churns & (rng.random(n) < 0.5)
    await labels.snapshot_many(
        [Snapshot(f"C{i}", {"risk": risk[i], "noise": noise[i]}, T0) for i in range(n)]
    )
    events = [
        event(f"C{i}", "product_closed" if closes[i] else "login", T0 + 25 * DAY)
        for i in range(n)
        if closes[i] or not churns[i]
    ]
    resolutions = (await labels.on_events_many(events)).resolutions
    while await labels.due(T0 + HORIZON):
        resolutions += await labels.expire_due(T0 + HORIZON, limit=500)

    reasons = {r.customer_id: r.reason for r in resolutions}
    assert len(resolutions) == len(reasons) == n
    expected = [
        "closed" if c else "dormant" if ch else "active"
        for c, ch in zip(closes, churns, strict=True)
    ]
    assert [reasons[f"C{i}"] for i in range(n)] == expected

    model = ChurnModel(prior=0.3)
    for i in rng.permutation(n):
        model.learn_one(resolutions[i].x, resolutions[i].churned)
    test_risk, test_noise = rng.normal(size=2000), rng.normal(size=2000)
    truth = rng.random(2000) < 1.0 / (1.0 + np.exp(-(2.0 * test_risk - 1.5)))
    scores = np.array(
        [
            model.churn_risk({"risk": r, "noise": z})
            for r, z in zip(test_risk, test_noise, strict=True)
        ]
    )
    assert auc(truth, scores) > 0.75
    assert model.churn_risk({"risk": 2.0, "noise": 0.0}) > model.churn_risk(
        {"risk": -2.0, "noise": 0.0}
    )


def test_before_any_label_the_risk_is_the_prior() -> None:
    assert math.isclose(ChurnModel(prior=0.08).churn_risk({"a": 3.0}), 0.08)
    assert ChurnModel().predict_proba_one({}) == pytest.approx({False: 0.95, True: 0.05})


def test_a_saved_model_loads_back_signed_and_scores_the_same() -> None:
    model = ChurnModel()
    for i in range(50):
        model.learn_one({"a": float(i % 5)}, churned=i % 5 == 4)
    restored = persistence.load(persistence.save(model, key=KEY), key=KEY, expected_type=ChurnModel)
    assert restored.churn_risk({"a": 4.0}) == model.churn_risk({"a": 4.0})
    assert restored.labels_learned == 50


def test_a_checkpoint_saved_before_the_split_of_models_churn_still_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stored checkpoints name the class `models.churn.ChurnModel`: that alias must stay."""
    model = ChurnModel()
    model.learn_one({"a": 1.0}, churned=True)
    with monkeypatch.context() as patch:  # pickle as the class was named before the split
        patch.setattr(ChurnModel, "__module__", "models.churn")
        old = persistence.save(model, key=KEY)
    assert b"models.churn\x94" in old
    assert b"models.churn_model" not in old
    restored = persistence.load(old, key=KEY, expected_type=ChurnModel)
    assert restored.labels_learned == 1
    assert restored.churn_risk({"a": 1.0}) == model.churn_risk({"a": 1.0})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prior": 0.0}, "prior"),
        ({"prior": 1.0}, "prior"),
        ({"learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_invalid_model_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChurnModel(**kwargs)


def test_the_documented_examples_run() -> None:
    result = doctest.testmod(models.churn_model)
    assert result.attempted >= 4
    assert result.failed == 0
