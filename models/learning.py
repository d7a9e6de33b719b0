"""Learning from answers: the outcome record and the one learner that checkpoints the model.

An `Outcome` is one customer's answer to one action a decision showed: reward 1 for an
acceptance, 0 for a decline, with the input `x` *recorded with the decision* — never
features read later, which would leak what happened after the decision (the answer
itself among it) into what the model learns to predict. It also carries the rank and the
logged probability of the placement, so the stream of outcomes is a complete bandit log
(x, action, probability, reward) for off-policy evaluation.

`Learner` is the single writer of the propensity model: it learns a batch of outcomes
and saves a checkpoint before the batch is acknowledged, so a crash loses no outcome.
Before each batch it reloads the stored model if another writer saved a newer version
(after a rebalance), and a save that lost such a race is redone on top of the newer
model, so no writer's learning is overwritten.

>>> import orjson
>>> outcome = Outcome(event_id="e9", customer_id="C1", decision_id="d1", action_id="savings",
...                   reward=1, rank=1, probability=0.8, x={"txn_count": 1.4})
>>> decode_outcomes(encode_outcomes([outcome])) == [outcome]
True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from models.checkpoints import (
    Checkpoint,
    CheckpointRefusedError,
    CheckpointStore,
    StaleCheckpointError,
    with_priors,
)
from models.online import OnlinePropensity, UnknownActionError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One answer to one shown action, with the x its decision was scored with."""

    event_id: str
    customer_id: str
    decision_id: str
    action_id: str
    reward: int
    rank: int
    probability: float
    x: dict[str, float]


def encode_outcomes(outcomes: Sequence[Outcome]) -> bytes:
    """The wire form of outcomes travelling together in one Kafka message (a JSON array)."""
    return orjson.dumps([asdict(outcome) for outcome in outcomes])


def decode_outcomes(payload: bytes) -> list[Outcome]:
    """The outcomes of one message; `ValueError` naming the problem when it is malformed."""
    try:
        items = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        raise ValueError(f"outcomes message is not valid JSON: {error}") from error
    if not isinstance(items, list):
        raise ValueError(f"outcomes message must be a JSON array, got {type(items).__name__}")
    return [_outcome(item) for item in items]


def _outcome(item: Any) -> Outcome:
    try:
        outcome = Outcome(**item)
    except TypeError as error:
        raise ValueError(f"not an outcome: {item!r}: {error}") from error
    if outcome.reward not in (0, 1) or not isinstance(outcome.x, dict):
        raise ValueError(f"not an outcome (reward 0 or 1 and an x object expected): {item!r}")
    for name, value in outcome.x.items():
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"outcome {outcome.event_id!r}: x[{name!r}] is not a finite number")
    return outcome


@dataclass(frozen=True, slots=True)
class LearnedBatch:
    """What one `Learner.learn` call did: outcomes learned, skipped, and the version saved."""

    learned: int
    skipped: int
    checkpoint: Checkpoint


class Learner:
    """Learns outcomes into the propensity model and checkpoints it after every batch.

    `priors` (the catalog's base rates) start a model when there is no checkpoint, and
    start any action a loaded checkpoint does not know yet.
    """

    def __init__(self, store: CheckpointStore, priors: Mapping[str, float]) -> None:
        self._store = store
        self._priors = dict(priors)
        self._model: OnlinePropensity | None = None
        self._version = 0

    async def learn(self, outcomes: Sequence[Outcome]) -> LearnedBatch:
        """Learn `outcomes` in order on the latest model and save it as the next version.

        An outcome of an action unknown to the model (a catalog the deciding API had and
        this process has not) is skipped with a log line. Safe to call again after it
        raised: a batch that was not saved is learned again from the stored model.
        """
        while True:
            model, version = await self._latest()
            self._model = None  # in case of a failure before the save: reload next time
            learned = 0
            for outcome in outcomes:
                try:
                    model.learn_one(outcome.x, outcome.action_id, bool(outcome.reward))
                    learned += 1
                except UnknownActionError:
                    log.warning(
                        "outcome %s of decision %s: action %r is not in the catalog; skipped",
                        outcome.event_id,
                        outcome.decision_id,
                        outcome.action_id,
                    )
            try:
                checkpoint = await self._store.save(model, expected_version=version)
            except StaleCheckpointError as error:
                log.warning("%s; learning the batch again on the newer model", error)
                continue
            self._model, self._version = model, checkpoint.version
            return LearnedBatch(learned, len(outcomes) - learned, checkpoint)

    async def _latest(self) -> tuple[OnlinePropensity, int]:
        """The model to learn on and the version it is: ours if still the latest, else reloaded."""
        if self._model is not None and await self._store.version() == self._version:
            return self._model, self._version
        try:
            checkpoint = await self._store.latest()
        except CheckpointRefusedError as error:
            log.error("%s; learning starts over from the priors", error)
            return OnlinePropensity(self._priors), error.version
        if checkpoint is None:
            return OnlinePropensity(self._priors), 0
        return with_priors(checkpoint.model, self._priors), checkpoint.version
