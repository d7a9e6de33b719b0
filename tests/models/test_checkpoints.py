"""Signed checkpoints in the real embedded Valkey: versions, stale writers, refused signatures."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from engine.core.settings import Settings
from models import persistence
from models.checkpoints import (
    CheckpointRefusedError,
    CheckpointStore,
    LearnerState,
    StaleCheckpointError,
    with_priors,
)
from models.online import OnlinePropensity

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
PRIORS = {"a": 0.05, "b": 0.1}
X = {"f0": 1.0}


@pytest.fixture
def checkpoints(redis: Redis, settings: Settings) -> CheckpointStore:
    return CheckpointStore(redis, key_prefix=settings.key_prefix, signing_key=KEY)


def learned(times: int = 3) -> OnlinePropensity:
    model = OnlinePropensity(PRIORS)
    for _ in range(times):
        model.learn_one(X, "a", True)
    return model


async def test_nothing_saved_yet_is_version_0_and_no_checkpoint(
    checkpoints: CheckpointStore, settings: Settings
) -> None:
    assert checkpoints.key == f"{settings.key_prefix}nba:model:propensity"
    assert await checkpoints.version() == 0
    assert await checkpoints.latest() is None


async def test_saves_count_versions_up_and_load_back_verified(
    checkpoints: CheckpointStore,
) -> None:
    first = await checkpoints.save(learned(1), expected_version=0)
    second = await checkpoints.save(learned(3), expected_version=1)
    assert (first.version, second.version) == (1, 2)
    assert await checkpoints.version() == 2
    latest = await checkpoints.latest()
    assert latest is not None
    assert latest.version == 2
    assert latest.saved_ts == pytest.approx(second.saved_ts)
    assert latest.model.outcomes("a") == 3
    assert latest.model.score(X, ["a", "b"]) == learned(3).score(X, ["a", "b"])


async def test_a_stale_writer_cannot_overwrite_a_newer_version(
    checkpoints: CheckpointStore,
) -> None:
    await checkpoints.save(learned(1), expected_version=0)
    await checkpoints.save(learned(2), expected_version=1)
    with pytest.raises(StaleCheckpointError, match="builds on version 1") as caught:
        await checkpoints.save(learned(9), expected_version=1)
    assert caught.value.current == 2
    latest = await checkpoints.latest()
    assert latest is not None
    assert latest.model.outcomes("a") == 2


async def test_a_checkpoint_signed_under_another_key_is_refused_unread(
    checkpoints: CheckpointStore, redis: Redis, settings: Settings
) -> None:
    forger = CheckpointStore(redis, key_prefix=settings.key_prefix, signing_key=OTHER_KEY)
    await forger.save(learned(), expected_version=0)
    with pytest.raises(CheckpointRefusedError, match="version 1 refused: checkpoint signature"):
        await checkpoints.latest()


async def test_an_altered_checkpoint_is_refused(checkpoints: CheckpointStore, redis: Redis) -> None:
    await checkpoints.save(learned(), expected_version=0)
    data = await redis.hget(checkpoints.key, "checkpoint")
    assert data is not None
    await redis.hset(checkpoints.key, "checkpoint", data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CheckpointRefusedError) as caught:
        await checkpoints.latest()
    assert caught.value.version == 1


async def test_a_signed_object_of_another_type_is_refused(
    checkpoints: CheckpointStore, redis: Redis
) -> None:
    await redis.hset(
        checkpoints.key,
        mapping={"version": 1, "saved_ts": 0, "checkpoint": persistence.save({"a": 1}, key=KEY)},
    )
    with pytest.raises(CheckpointRefusedError, match="expected a OnlinePropensity"):
        await checkpoints.latest()


@pytest.mark.parametrize("key", [b"", b"short"])
def test_a_short_key_is_refused(redis: Redis, key: bytes) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        CheckpointStore(redis, signing_key=key)


def test_with_priors_adds_new_actions_and_keeps_what_was_learned() -> None:
    model = with_priors(learned(3), {"a": 0.5, "b": 0.1, "c": 0.2})
    assert model.actions == ("a", "b", "c")
    assert model.outcomes("a") == 3
    assert model.priors["a"] == 0.05  # learned actions keep their own prior
    assert model.score({}, ["c"]) == pytest.approx([0.2])


def state_with_figures() -> LearnerState:
    state = LearnerState(no_answer_through="1700000000000-3")
    for p, accepted in [(0.3, True), (0.1, False), (0.2, False)]:
        state.validation.update("a", p, accepted)
        state.drift.update("a", accepted, ts=1.0)
    return state


async def test_the_learner_state_and_its_report_are_saved_with_the_model(
    checkpoints: CheckpointStore,
) -> None:
    state = state_with_figures()
    saved = await checkpoints.save(learned(), expected_version=0, state=state)
    assert saved.report == state.report(PRIORS)
    assert saved.report["validation"]["actions"]["a"]["outcomes"] == 3
    assert saved.report["validation"]["actions"]["b"]["outcomes"] == 0  # every model action
    read = await checkpoints.latest()
    assert read is not None
    assert (read.report, read.state) == (saved.report, None)  # readers get the figures only
    full = await checkpoints.latest(with_state=True)
    assert full is not None
    assert full.state is not None
    assert full.state.no_answer_through == "1700000000000-3"
    assert full.state.report(PRIORS) == saved.report


async def test_a_save_without_a_state_stores_a_fresh_one(checkpoints: CheckpointStore) -> None:
    await checkpoints.save(learned(), expected_version=0, state=state_with_figures())
    await checkpoints.save(learned(), expected_version=1)
    latest = await checkpoints.latest(with_state=True)
    assert latest is not None
    assert latest.state is not None
    assert latest.state.no_answer_through == "0-0"
    assert latest.report["validation"]["overall"]["outcomes"] == 0


@pytest.mark.parametrize("field", ["report", "state"])
async def test_figures_or_a_state_signed_under_another_key_are_refused(
    checkpoints: CheckpointStore, redis: Redis, field: str
) -> None:
    await checkpoints.save(learned(), expected_version=0, state=state_with_figures())
    forged = persistence.save(
        LearnerState() if field == "state" else {"validation": {}}, key=OTHER_KEY
    )
    await redis.hset(checkpoints.key, field, forged)
    with pytest.raises(CheckpointRefusedError, match="version 1 refused"):
        await checkpoints.latest(with_state=True)
