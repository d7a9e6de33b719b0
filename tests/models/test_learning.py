"""The learner against the real embedded Valkey: batches checkpointed, writers never overwritten."""

from __future__ import annotations

import doctest

import pytest
from redis.asyncio import Redis

import models.learning
from engine.settings import Settings
from models.checkpoints import CheckpointStore
from models.learning import Learner, Outcome, decode_outcomes, encode_outcomes
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
    assert stored.model.pipeline("a")["StandardScaler"].means["f0"] == pytest.approx(4.0)
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
    batch = [outcome(1, f0=0.5), outcome(2, "b", 0)]
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
