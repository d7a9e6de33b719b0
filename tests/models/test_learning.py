"""The learner against the real embedded Valkey: batches checkpointed, writers never overwritten."""

from __future__ import annotations

import copy
import doctest
import logging
import math
import random
from dataclasses import replace

import pytest
from redis.asyncio import Redis
from river import compose

import models.learning
from engine.core.settings import Settings
from models.checkpoints import CheckpointStore
from models.learning import Learner, Outcome, decode_outcomes, encode_outcomes
from models.offpolicy import BanditLog
from models.online import OnlinePropensity

KEY = b"k" * 32
PRIORS = {"a": 0.05, "b": 0.1}


def outcome(index: int, action_id: str = "a", reward: int = 1, **x: float) -> Outcome:
    return Outcome(
        event_id=f"e{index}",
        customer_id="C1",
        decision_id=f"d{index}",
        action_id=action_id,
        reward=reward,
        rank=1,
        probability=0.5,
        x=x or {"f0": float(index)},
    )


@pytest.fixture
def checkpoints(redis: Redis, settings: Settings) -> CheckpointStore:
    return CheckpointStore(redis, key_prefix=settings.key_prefix, signing_key=KEY)


async def test_a_batch_is_learned_from_the_given_x_and_checkpointed(
    checkpoints: CheckpointStore,
) -> None:
    learner = Learner(checkpoints, PRIORS)
    batch = [outcome(1, f0=2.0), outcome(2, "b", 0, f0=4.0), outcome(3, f0=6.0)]
    result = await learner.learn(batch)
    assert (result.learned, result.skipped, result.checkpoint.version) == (3, 0, 1)
    stored = await checkpoints.latest()
    assert stored is not None
    assert (stored.model.outcomes("a"), stored.model.outcomes("b")) == (2, 1)
    # exactly these x were learned: the scaler of "a" saw f0 = 2 and 6
    assert stored.model.pipeline("a")["FlooredStandardScaler"].means["f0"] == pytest.approx(4.0)
    reference = OnlinePropensity(PRIORS)
    for item in batch:
        reference.learn_one(item.x, item.action_id, bool(item.reward))
    assert stored.model.score({"f0": 3.0}, ["a", "b"]) == reference.score({"f0": 3.0}, ["a", "b"])
    again = await learner.learn([outcome(4)])
    assert again.checkpoint.version == 2
    assert again.checkpoint.model.outcomes("a") == 3


async def test_a_second_writer_never_overwrites_the_first(checkpoints: CheckpointStore) -> None:
    first, second = Learner(checkpoints, PRIORS), Learner(checkpoints, PRIORS)
    await first.learn([outcome(1)])
    await second.learn([outcome(2)])  # loads version 1 before learning
    await first.learn([outcome(3)])  # its model is stale: reloaded, then learned on top
    stored = await checkpoints.latest()
    assert stored is not None
    assert stored.version == 3
    assert stored.model.outcomes("a") == 3


async def test_unknown_actions_are_skipped_and_new_catalog_actions_start_from_their_prior(
    checkpoints: CheckpointStore,
) -> None:
    await Learner(checkpoints, PRIORS).learn([outcome(1)])
    learner = Learner(checkpoints, {**PRIORS, "c": 0.3})
    result = await learner.learn([outcome(2, "c"), outcome(3, "gone")])
    assert (result.learned, result.skipped) == (1, 1)
    model = result.checkpoint.model
    assert (model.outcomes("a"), model.outcomes("c")) == (1, 1)


async def test_a_refused_checkpoint_is_replaced_by_learning_from_the_priors(
    checkpoints: CheckpointStore, redis: Redis, settings: Settings
) -> None:
    forged = CheckpointStore(redis, key_prefix=settings.key_prefix, signing_key=b"f" * 32)
    forged_model = OnlinePropensity(PRIORS)
    for _ in range(50):
        forged_model.learn_one({"f0": 1.0}, "b", True)
    await forged.save(forged_model, expected_version=0)
    result = await Learner(checkpoints, PRIORS).learn([outcome(1)])
    assert result.checkpoint.version == 2
    stored = await checkpoints.latest()
    assert stored is not None
    assert (stored.model.outcomes("a"), stored.model.outcomes("b")) == (1, 0)


def test_outcomes_round_trip_on_the_wire() -> None:
    negative = replace(outcome(3, "b", 0), candidates=["a", "b"], expiry_id="1700000000000-0")
    batch = [outcome(1, f0=0.5), outcome(2, "b", 0), negative]
    assert decode_outcomes(encode_outcomes(batch)) == batch


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"{nope", "not valid JSON"),
        (b'{"event_id": "e1"}', "must be a JSON array"),
        (b'[{"event_id": "e1"}]', "not an outcome"),
        (
            b'[{"event_id":"e","customer_id":"C","decision_id":"d","action_id":"a","reward":2,'
            b'"rank":1,"probability":1.0,"x":{}}]',
            "reward 0 or 1",
        ),
        (
            b'[{"event_id":"e","customer_id":"C","decision_id":"d","action_id":"a","reward":1,'
            b'"rank":1,"probability":1.0,"x":{"f":"1"}}]',
            "not a finite number",
        ),
        (
            b'[{"event_id":"e","customer_id":"C","decision_id":"d","action_id":"a","reward":1,'
            b'"rank":1,"probability":1.0,"x":{},"candidates":"a"}]',
            "candidates must be a list",
        ),
        (
            b'[{"event_id":"e","customer_id":"C","decision_id":"d","action_id":"a","reward":0,'
            b'"rank":1,"probability":1.0,"x":{},"expiry_id":"soon"}]',
            "expiry_id is not a stream id",
        ),
    ],
)
def test_malformed_outcome_messages_are_refused_naming_the_problem(
    payload: bytes, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        decode_outcomes(payload)


def test_the_module_example_runs() -> None:
    result = doctest.testmod(models.learning)
    assert result.attempted > 0
    assert result.failed == 0


def drifting(
    count: int, action_id: str, rate: float, rng: random.Random, start: int = 0
) -> list[Outcome]:
    """`count` outcomes of `action_id`, each accepted with probability `rate`."""
    return [
        outcome(start + i, action_id, int(rng.random() < rate), f0=rng.random())
        for i in range(count)
    ]


async def test_every_outcome_is_predicted_before_it_is_learned(
    checkpoints: CheckpointStore,
) -> None:
    rng = random.Random(1)
    batch = drifting(60, "a", 0.3, rng) + drifting(40, "b", 0.5, rng, start=60)
    rng.shuffle(batch)
    result = await Learner(checkpoints, PRIORS).learn(batch)
    reference, predicted = OnlinePropensity(PRIORS), []
    for item in batch:
        with compose.learn_during_predict():  # as the learner: x in the scaler, not the answer
            pipeline = copy.deepcopy(reference.pipeline(item.action_id))
            predicted.append(pipeline.predict_proba_one(item.x)[True])
        reference.learn_one(item.x, item.action_id, bool(item.reward))
    assert predicted[0] == pytest.approx(PRIORS[batch[0].action_id])  # the prior, unlearned

    def loss(items: list[tuple[Outcome, float]]) -> float:
        return -sum(math.log(p if o.reward else 1 - p) for o, p in items) / len(items)

    pairs = list(zip(batch, predicted, strict=True))
    figures = result.checkpoint.report["validation"]
    assert figures["overall"]["outcomes"] == 100
    assert figures["overall"]["log_loss"] == pytest.approx(loss(pairs))
    for action_id in PRIORS:
        mine = [(o, p) for o, p in pairs if o.action_id == action_id]
        shown = figures["actions"][action_id]
        assert shown["outcomes"] == len(mine)
        assert shown["accepts"] == sum(o.reward for o, _ in mine)
        assert shown["log_loss"] == pytest.approx(loss(mine))
        assert shown["mean_prediction"] == pytest.approx(sum(p for _, p in mine) / len(mine))


async def test_the_figures_carry_on_across_learners_and_versions(
    checkpoints: CheckpointStore,
) -> None:
    rng = random.Random(2)
    await Learner(checkpoints, PRIORS).learn(drifting(30, "a", 0.3, rng))
    result = await Learner(checkpoints, PRIORS).learn(drifting(20, "a", 0.3, rng, start=30))
    assert result.checkpoint.report["validation"]["actions"]["a"]["outcomes"] == 50
    stored = await checkpoints.latest()
    assert stored is not None
    assert stored.report == result.checkpoint.report


async def test_a_change_in_an_accept_rate_is_alerted_logged_and_saved(
    checkpoints: CheckpointStore, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(3)
    stream = drifting(2500, "a", 0.05, rng) + drifting(1500, "a", 0.40, rng, start=2500)
    steady = drifting(4000, "b", 0.2, rng, start=4000)
    learner = Learner(checkpoints, PRIORS)
    alerts = []
    with caplog.at_level(logging.WARNING, logger="models.learning"):
        for start in range(0, 4000, 500):
            batch = stream[start : start + 500] + steady[start : start + 500]
            alerts += (await learner.learn(batch)).alerts
    assert [alert.action_id for alert in alerts] == ["a"]
    assert alerts[0].outcome > 2500
    assert "drift in the accept rate of 'a'" in caplog.text
    stored = await checkpoints.latest()
    assert stored is not None
    drift = stored.report["drift"]
    assert (drift["detected"], drift["by_action"]) == (1, {"a": 1})
    assert drift["alerts"][0]["accept_rate_before"] < drift["alerts"][0]["accept_rate_since"]


async def test_a_steady_stream_raises_no_alert(checkpoints: CheckpointStore) -> None:
    rng = random.Random(4)
    learner = Learner(checkpoints, PRIORS)
    for start in range(0, 4000, 1000):
        result = await learner.learn(drifting(1000, "a", 0.1, rng, start=start))
        assert result.alerts == []
    assert result.checkpoint.report["drift"]["detected"] == 0


def negative(index: int, expiry_id: str) -> Outcome:
    return replace(outcome(index, "b", 0), expiry_id=expiry_id)


async def test_a_no_answer_negative_is_learned_once_whatever_the_replays(
    checkpoints: CheckpointStore,
) -> None:
    first = await Learner(checkpoints, PRIORS).learn(
        [negative(1, "1700000000000-0"), outcome(2), negative(3, "1700000000000-1")]
    )
    assert (first.learned, first.replayed) == (3, 0)
    # forwarded twice, and a batch learned again after a crash, by another learner
    again = await Learner(checkpoints, PRIORS).learn(
        [negative(3, "1700000000000-1"), negative(1, "1700000000000-0"), outcome(2),
         negative(4, "1700000000001-0")]
    )  # fmt: skip
    assert (again.learned, again.skipped, again.replayed) == (2, 0, 2)
    assert again.checkpoint.model.outcomes("b") == 3
    stored = await checkpoints.latest(with_state=True)
    assert stored is not None
    assert stored.state is not None
    assert stored.state.no_answer_through == "1700000000001-0"


async def test_learned_rank_1_outcomes_go_to_the_capped_bandit_log(
    checkpoints: CheckpointStore, redis: Redis, settings: Settings
) -> None:
    log = BanditLog(redis, key_prefix=settings.key_prefix, size=3)
    learner = Learner(checkpoints, PRIORS, bandit_log=log)
    logged = [replace(outcome(i, "a", i % 2), candidates=["a", "b"]) for i in range(4)]
    await learner.learn(
        [
            *logged,
            replace(outcome(5), rank=2, candidates=["a", "b"]),  # not rank 1
            outcome(6),  # no candidates: cannot be evaluated
            replace(outcome(7, "gone"), candidates=["gone", "a"]),  # not learned
        ]
    )
    records = await log.latest(10)
    assert [record.reward for record in records] == [1.0, 0.0, 1.0]  # the latest 3 of 4
    assert records[-1] == logged[-1].logged()
