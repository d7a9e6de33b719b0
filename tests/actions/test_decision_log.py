"""The decision log on the real embedded Valkey: round trip, TTL, attribution, the leakage rule."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from actions.catalog import Catalog, load_catalog
from actions.decide import Decision, decide
from actions.decision_log import DecisionLog, LoggedDecision, OutcomeCounts, ShownAction
from engine.settings import DEFAULT_CATALOG, Settings
from features.events import Channel, Event
from features.store import RedisFeatureStore
from models.exploration import ThompsonSampling
from models.features_vector import vectorise
from models.online import OnlinePropensity

NOW = 1_767_605_400.0
TTL = 3600


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(DEFAULT_CATALOG)


@pytest.fixture
def log(redis: Redis, settings: Settings) -> DecisionLog:
    return DecisionLog(redis, key_prefix=settings.key_prefix, ttl_seconds=TTL)


@pytest.fixture
def store(redis: Redis, settings: Settings) -> RedisFeatureStore:
    return RedisFeatureStore(redis, key_prefix=settings.key_prefix, dedup_ttl_seconds=TTL)


def event(event_id: str, **fields: Any) -> Event:
    item = {"event_id": event_id, "customer_id": "C1", "channel": "web",
            "ts": "2026-01-05T09:30:00Z"} | fields  # fmt: skip
    return Event.model_validate(item)


def answer(event_id: str, decision: Decision, action_id: str, accepted: bool = True) -> Event:
    kind = "offer_accepted" if accepted else "offer_declined"
    return event(event_id, type=kind, action_id=action_id, decision_id=decision.decision_id)


async def decided(store: RedisFeatureStore, catalog: Catalog, n: int = 3) -> Decision:
    """A decision for C1 on the web from the features in the store, as the API makes it."""
    features = await store.read("C1")
    assert features is not None
    policy = ThompsonSampling(OnlinePropensity(catalog.base_rates()), seed=1)
    return decide(customer_id="C1", channel=Channel.WEB, features=features, catalog=catalog,
                  policy=policy, n=n, now=NOW)  # fmt: skip


@pytest.fixture
async def decision(store: RedisFeatureStore, catalog: Catalog, log: DecisionLog) -> Decision:
    await store.apply([event(f"t{i}", type="transaction", amount=600.0) for i in range(6)])
    decision = await decided(store, catalog)
    await log.record(decision)
    return decision


async def test_a_decision_round_trips_under_the_customers_hash_tag_with_a_ttl(
    decision: Decision, log: DecisionLog, redis: Redis, settings: Settings
) -> None:
    key = log.decision_key("C1", decision.decision_id)
    assert key == f"{settings.key_prefix}cust:{{C1}}:d:{decision.decision_id}"
    assert 0 < await redis.ttl(key) <= TTL
    logged = await log.fetch("C1", decision.decision_id)
    assert logged == LoggedDecision.of(decision)
    assert logged is not None
    assert logged.x == decision.x
    assert logged.ts == NOW
    assert logged.channel == "web"
    assert logged.candidates == decision.candidates
    assert logged.policy.startswith("thompson")
    assert logged.shown == [
        ShownAction(action.action_id, action.rank, action.probability)
        for action in decision.actions
    ]
    assert await log.fetch("C1", "nope") is None


async def test_an_expired_decision_is_gone_and_its_answer_counted_as_unknown(
    decision: Decision, log: DecisionLog, redis: Redis
) -> None:
    await redis.pexpire(log.decision_key("C1", decision.decision_id), 1)
    await asyncio.sleep(0.01)
    assert await log.fetch("C1", decision.decision_id) is None
    attribution = await log.attribute([answer("a1", decision, decision.actions[0].action_id)])
    assert attribution.outcomes == []
    assert [e.event_id for e in attribution.unknown_decision] == ["a1"]


async def test_answers_become_outcomes_with_the_stored_x_not_later_features(
    decision: Decision, log: DecisionLog, store: RedisFeatureStore, catalog: Catalog
) -> None:
    # After the decision the customer keeps living: features move on.
    await store.apply([event(f"late{i}", type="transaction", amount=50.0) for i in range(30)])
    later = await store.read("C1")
    assert later is not None
    assert vectorise(later, now=NOW, channel=Channel.WEB) != decision.x
    first, second = decision.actions[0].action_id, decision.actions[1].action_id
    events = [
        event("i1", type="offer_impression", action_id=first, decision_id=decision.decision_id),
        answer("a1", decision, first, accepted=True),
        answer("a2", decision, second, accepted=False),
        event("nodecision", type="offer_accepted", action_id=first),  # not learnable: no decision
    ]
    attribution = await log.attribute(events)
    assert [(o.event_id, o.action_id, o.reward) for o in attribution.outcomes] == [
        ("a1", first, 1),
        ("a2", second, 0),
    ]
    for outcome, shown in zip(attribution.outcomes, decision.actions, strict=False):
        assert outcome.x == decision.x  # the leakage rule
        assert (outcome.rank, outcome.probability) == (shown.rank, shown.probability)
        assert outcome.decision_id == decision.decision_id
        assert outcome.customer_id == "C1"
    assert attribution.counts() == OutcomeCounts(forwarded=2)


async def test_each_shown_action_is_learned_once_and_unusable_answers_are_counted(
    decision: Decision, log: DecisionLog, catalog: Catalog
) -> None:
    shown = decision.actions[0].action_id
    not_shown = next(a.id for a in catalog.actions if a.id not in decision.candidates)
    batch = [
        answer("a1", decision, shown, accepted=True),
        answer("a2", decision, shown, accepted=False),  # a second answer in the same batch
        answer("a3", decision, not_shown),
        event("a4", type="offer_accepted", action_id=shown, decision_id="never-recorded"),
    ]
    attribution = await log.attribute(batch)
    assert [o.event_id for o in attribution.outcomes] == ["a1"]
    assert [e.event_id for e in attribution.duplicates] == ["a2"]
    assert [e.event_id for e in attribution.not_shown] == ["a3"]
    assert [e.event_id for e in attribution.unknown_decision] == ["a4"]
    await log.settle(attribution)
    # a replay of the batch, and a later answer to the same action, are duplicates
    replay = await log.attribute([*batch, answer("a5", decision, shown, accepted=False)])
    assert replay.outcomes == []
    assert [e.event_id for e in replay.duplicates] == ["a1", "a2", "a5"]
    await log.settle(replay)
    assert await log.counts() == OutcomeCounts(
        forwarded=1, duplicates=4, unknown_decision=2, not_shown=2
    )


async def test_events_without_answers_cost_no_round_trip(log: DecisionLog) -> None:
    attribution = await log.attribute([event("l1", type="login")])
    assert attribution.counts() == OutcomeCounts()
    await log.settle(attribution)  # nothing to write
    assert await log.counts() == OutcomeCounts()
