"""The decision log on the real embedded Valkey: round trip, TTL, attribution, the leakage rule."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from actions.catalog import Catalog, load_catalog
from actions.decide import Decision, decide
from actions.decision_log import DecisionLog, LoggedDecision, OutcomeCounts, ShownAction
from engine.core.settings import DEFAULT_CATALOG, Settings
from features.events import Channel, Event
from features.state import FeatureFold
from features.store import RedisFeatureStore
from models.checkpoints import CheckpointStore
from models.exploration import ThompsonSampling
from models.features_vector import vectorise
from models.learning import Learner, Outcome
from models.online import OnlinePropensity

NOW = 1_767_605_400.0
TTL = 3600
WINDOW_S = 600.0


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(DEFAULT_CATALOG)


@pytest.fixture
def log(redis: Redis, settings: Settings) -> DecisionLog:
    return DecisionLog(
        redis,
        key_prefix=settings.key_prefix,
        ttl_seconds=TTL,
        no_answer_window_s=WINDOW_S,
        no_answer_mode="negative",
    )


@pytest.fixture
def store(redis: Redis, settings: Settings) -> RedisFeatureStore:
    return RedisFeatureStore(
        redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
    )


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


# --- no-answer windows --------------------------------------------------------------------


def impression(event_id: str, decision: Decision, action_id: str) -> Event:
    return event(event_id, type="offer_impression", action_id=action_id,
                 decision_id=decision.decision_id)  # fmt: skip


def window(decision: Decision, action_id: str) -> str:
    return f"C1 {decision.decision_id} {action_id}"


class Sent:
    """A `send` that keeps what it was given, and can fail once after taking it (a crash)."""

    def __init__(self, fail_once: bool = False) -> None:
        self.batches: list[list[Outcome]] = []
        self._fail = fail_once

    async def __call__(self, outcomes: list[Outcome]) -> None:
        self.batches.append(outcomes)
        if self._fail:
            self._fail = False
            raise RuntimeError("worker killed after the broker took the negatives")

    @property
    def outcomes(self) -> list[Outcome]:
        return [outcome for batch in self.batches for outcome in batch]


async def test_an_unanswered_impression_becomes_a_negative_with_its_decisions_x(
    decision: Decision, log: DecisionLog, redis: Redis
) -> None:
    shown = decision.actions[1]
    opened = await log.attribute([impression("i1", decision, shown.action_id)], now=NOW)
    assert opened.counts() == OutcomeCounts()
    assert await redis.zscore(log.pending_key, window(decision, shown.action_id)) == NOW + WINDOW_S
    assert await log.expire_unanswered(limit=100, now=NOW + WINDOW_S - 1) == 0
    assert await log.expire_unanswered(limit=100, now=NOW + WINDOW_S) == 1
    sent = Sent()
    assert await log.forward_unanswered(sent, limit=100) == 1
    [negative] = sent.outcomes
    assert (negative.action_id, negative.reward, negative.decision_id) == (
        shown.action_id, 0, decision.decision_id)  # fmt: skip
    assert negative.x == decision.x  # the leakage rule holds for negatives too
    assert (negative.rank, negative.probability) == (shown.rank, shown.probability)
    assert negative.candidates == decision.candidates
    assert negative.expiry_id is not None
    assert await redis.xlen(log.outbox_key) == 0
    assert await log.forward_unanswered(sent, limit=100) == 0  # handed on once
    assert len(sent.outcomes) == 1
    # an answer after the window changes nothing: counted as late
    late = await log.attribute([answer("a1", decision, shown.action_id)], now=NOW + WINDOW_S + 5)
    assert late.outcomes == []
    assert [e.event_id for e in late.late] == ["a1"]
    await log.settle(late)
    assert await log.counts() == OutcomeCounts(late=1, no_answer=1)


async def test_an_answer_between_the_close_and_the_hand_on_is_late_too(
    decision: Decision, log: DecisionLog
) -> None:
    action_id = decision.actions[0].action_id
    await log.attribute([impression("i1", decision, action_id)], now=NOW)
    await log.expire_unanswered(limit=100, now=NOW + WINDOW_S)
    late = await log.attribute([answer("a1", decision, action_id)], now=NOW + WINDOW_S)
    assert (late.outcomes, [e.event_id for e in late.late]) == ([], ["a1"])
    sent = Sent()
    await log.forward_unanswered(sent, limit=100)
    assert [outcome.reward for outcome in sent.outcomes] == [0]  # one outcome, not two


async def test_an_answer_within_the_window_closes_it(
    decision: Decision, log: DecisionLog, redis: Redis
) -> None:
    first, second, third = (action.action_id for action in decision.actions)
    # answered in a later batch, in the same batch, and answered before its impression
    await log.attribute([impression("i1", decision, first)], now=NOW)
    answered = await log.attribute([answer("a1", decision, first)], now=NOW + 1)
    assert [o.event_id for o in answered.outcomes] == ["a1"]
    await log.settle(answered)
    same_batch = await log.attribute(
        [impression("i2", decision, second), answer("a2", decision, second, accepted=False),
         answer("a3", decision, third), impression("i3", decision, third)],
        now=NOW + 2,
    )  # fmt: skip
    assert [o.event_id for o in same_batch.outcomes] == ["a2", "a3"]
    await log.settle(same_batch)
    # a replayed impression of an answered action opens nothing either
    await log.attribute([impression("i1", decision, first)], now=NOW + 3)
    assert await redis.zcard(log.pending_key) == 0
    assert await log.expire_unanswered(limit=100, now=NOW + 10 * WINDOW_S) == 0


async def test_impressions_that_cannot_be_learned_open_no_window(
    decision: Decision, log: DecisionLog, redis: Redis, catalog: Catalog
) -> None:
    not_shown = next(a.id for a in catalog.actions if a.id not in decision.candidates)
    unknown = event("i2", type="offer_impression", action_id=decision.actions[0].action_id,
                    decision_id="never-recorded")  # fmt: skip
    attribution = await log.attribute([impression("i1", decision, not_shown), unknown], now=NOW)
    assert attribution.counts() == OutcomeCounts()
    assert await redis.zcard(log.pending_key) == 0


async def test_a_replayed_impression_never_reopens_a_closed_window(
    decision: Decision, log: DecisionLog, redis: Redis
) -> None:
    action_id = decision.actions[0].action_id
    await log.attribute([impression("i1", decision, action_id)], now=NOW)
    await log.expire_unanswered(limit=100, now=NOW + WINDOW_S)
    await log.attribute([impression("i1", decision, action_id)], now=NOW + WINDOW_S)  # closed
    assert await redis.zcard(log.pending_key) == 0
    await log.forward_unanswered(Sent(), limit=100)
    await log.attribute([impression("i1", decision, action_id)], now=NOW + WINDOW_S)  # marked
    assert await redis.zcard(log.pending_key) == 0


async def test_in_ignore_mode_a_closed_window_is_counted_not_learned(
    decision: Decision, redis: Redis, settings: Settings
) -> None:
    log = DecisionLog(redis, key_prefix=settings.key_prefix, ttl_seconds=TTL,
                      no_answer_window_s=WINDOW_S, no_answer_mode="ignore")  # fmt: skip
    action_id = decision.actions[0].action_id
    await log.attribute([impression("i1", decision, action_id)], now=NOW)
    assert await log.expire_unanswered(limit=100, now=NOW + WINDOW_S) == 1
    sent = Sent()
    assert await log.forward_unanswered(sent, limit=100) == 0
    assert sent.batches == []
    late = await log.attribute([answer("a1", decision, action_id)], now=NOW + WINDOW_S)
    assert [e.event_id for e in late.late] == ["a1"]
    await log.settle(late)
    assert await log.counts() == OutcomeCounts(late=1, no_answer_ignored=1)


async def test_a_negative_whose_decision_is_gone_is_counted_not_sent(
    decision: Decision, log: DecisionLog, redis: Redis
) -> None:
    await log.attribute([impression("i1", decision, decision.actions[0].action_id)], now=NOW)
    await log.expire_unanswered(limit=100, now=NOW + WINDOW_S)
    await redis.delete(log.decision_key("C1", decision.decision_id))
    sent = Sent()
    assert await log.forward_unanswered(sent, limit=100) == 0
    assert sent.batches == []
    assert await log.counts() == OutcomeCounts(unknown_decision=1)


async def test_a_worker_killed_mid_sweep_neither_loses_nor_double_counts_a_negative(
    decision: Decision, log: DecisionLog, redis: Redis, settings: Settings, catalog: Catalog
) -> None:
    """Sweeps race and a worker dies after the broker took its negatives: each is learned once."""
    shown = len(decision.actions)
    await log.attribute(
        [impression(f"i{a.rank}", decision, a.action_id) for a in decision.actions], now=NOW
    )
    due = NOW + WINDOW_S
    closed = await asyncio.gather(*(log.expire_unanswered(limit=100, now=due) for _ in range(4)))
    assert sorted(closed) == [0, 0, 0, shown]  # one atomic script closed them all
    crashed = Sent(fail_once=True)
    with pytest.raises(RuntimeError, match="killed"):
        await log.forward_unanswered(crashed, limit=100)
    assert await redis.xlen(log.outbox_key) == shown  # not deleted: handed on again below
    racing = [Sent(), Sent()]
    await asyncio.gather(*(log.forward_unanswered(sent, limit=100) for sent in racing))
    assert await redis.xlen(log.outbox_key) == 0
    deliveries = crashed.outcomes + racing[0].outcomes + racing[1].outcomes
    assert len(deliveries) >= 2 * shown  # on the broker at least twice...
    checkpoints = CheckpointStore(redis, key_prefix=settings.key_prefix, signing_key=b"k" * 32)
    learner = Learner(checkpoints, catalog.base_rates())
    result = await learner.learn(deliveries)
    assert (result.learned, result.replayed) == (shown, len(deliveries) - shown)
    again = await learner.learn(crashed.outcomes)  # ...and learned again after a crash
    assert (again.learned, again.replayed) == (0, shown)
    stored = await checkpoints.latest()
    assert stored is not None
    assert sum(stored.model.outcomes(a.action_id) for a in decision.actions) == shown
    assert await log.counts() == OutcomeCounts(no_answer=shown)


def test_the_window_must_be_shorter_than_the_decision_ttl(redis: Redis) -> None:
    with pytest.raises(ValueError, match="shorter than the decision TTL"):
        DecisionLog(redis, ttl_seconds=600, no_answer_window_s=600.0, no_answer_mode="negative")
