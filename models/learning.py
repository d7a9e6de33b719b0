"""Learning from answers: the outcome record and the one learner that checkpoints the model.

An `Outcome` is one customer's answer to one action a decision showed: reward 1 for an
acceptance, 0 for a decline or for no answer within the window
(`actions.decision_log`), with the input `x` *recorded with the decision* — never
features read later, which would leak what happened after the decision (the answer
itself among it) into what the model learns to predict. It also carries the rank, the
logged probability of the placement and the decision's candidates, so the stream of
outcomes is a complete bandit log (x, candidates, action, probability, reward) for
off-policy evaluation. A no-answer negative also carries `expiry_id`, its position in
the decision log's expiry stream.

`Learner` is the single writer of the propensity model: it learns a batch of outcomes
and saves a checkpoint before the batch is acknowledged, so a crash loses no outcome.
Before each batch it reloads the stored model if another writer saved a newer version
(after a rebalance), and a save that lost such a race is redone on top of the newer
model, so no writer's learning is overwritten.

Predict, then learn: before learning an outcome the learner scores it with the model as
it is (its scaler having taken in x, never the answer), and feeds that prediction to the
progressive-validation figures (`models.metrics`) and the answer to the drift detectors
(`models.drift`); an alert is logged as a warning. Both are saved with the model
(`LearnerState`), so every API replica shows the same figures for the same version. So
is the position of the latest no-answer negative learned: a negative at or before it is
a replay (forwarded twice, or learned again after a crash) and is skipped, which makes
each one learned exactly once.
Rank-1 outcomes then go to the capped bandit log (`models.offpolicy.BanditLog`) for
off-policy reports.

>>> import orjson
>>> outcome = Outcome(event_id="e9", customer_id="C1", decision_id="d1", action_id="savings",
...                   reward=1, rank=1, probability=0.8, x={"txn_count": 1.4})
>>> decode_outcomes(encode_outcomes([outcome])) == [outcome]
True
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from features.wire import pack_json_arrays
from models.checkpoints import (
    Checkpoint,
    CheckpointRefusedError,
    CheckpointStore,
    LearnerState,
    StaleCheckpointError,
    with_priors,
)
from models.cooperative import in_slices
from models.drift import DriftAlert
from models.offpolicy import BanditLog, LoggedDecision
from models.online import OnlinePropensity, UnknownActionError

log = logging.getLogger(__name__)

_STREAM_ID = re.compile(r"[0-9]+-[0-9]+")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One answer to one shown action, with the x its decision was scored with.

    `candidates` are the actions the decision chose among (empty when unknown: such an
    outcome is learned but cannot serve off-policy evaluation); `expiry_id` is set on
    no-answer negatives only.
    """

    event_id: str
    customer_id: str
    decision_id: str
    action_id: str
    reward: int
    rank: int
    probability: float
    x: dict[str, float]
    candidates: list[str] = field(default_factory=list)
    expiry_id: str | None = None

    def logged(self) -> LoggedDecision:
        """The outcome as a record of the bandit log."""
        return LoggedDecision(
            features=self.x,
            candidates=self.candidates,
            action_id=self.action_id,
            propensity=self.probability,
            reward=float(self.reward),
        )


def encode_outcomes(outcomes: Sequence[Outcome]) -> bytes:
    """The wire form of outcomes travelling together in one Kafka message (a JSON array)."""
    return orjson.dumps([asdict(outcome) for outcome in outcomes])


def pack_outcomes(outcomes: Sequence[Outcome], *, max_bytes: int) -> list[bytes]:
    """Outcomes as messages of at most `max_bytes` each, in order (`features.wire`).

    An answer batch can carry thousands of outcomes, each with its decision's x: one
    message for all of them would outgrow what the broker takes. Raises
    `features.wire.OversizedItemError` if one outcome alone does not fit.
    """
    return list(
        pack_json_arrays((orjson.dumps(asdict(item)) for item in outcomes), max_bytes=max_bytes)
    )


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
    if not isinstance(outcome.candidates, list) or not all(
        isinstance(candidate, str) for candidate in outcome.candidates
    ):
        raise ValueError(f"outcome {outcome.event_id!r}: candidates must be a list of ids")
    if outcome.expiry_id is not None and not _is_stream_id(outcome.expiry_id):
        raise ValueError(f"outcome {outcome.event_id!r}: expiry_id is not a stream id")
    for name, value in outcome.x.items():
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"outcome {outcome.event_id!r}: x[{name!r}] is not a finite number")
    return outcome


def _is_stream_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_STREAM_ID.fullmatch(value))


def _stream_position(stream_id: str) -> tuple[int, int]:
    """A Redis stream id, `<ms>-<seq>`, as a tuple that sorts as the stream does."""
    milliseconds, sequence = stream_id.split("-")
    return int(milliseconds), int(sequence)


@dataclass(frozen=True, slots=True)
class LearnedBatch:
    """What one `Learner.learn` call did: outcomes learned, skipped (unknown action),
    replayed (no-answer negatives already learned), the drift alerts raised, and the
    version saved."""

    learned: int
    skipped: int
    replayed: int
    alerts: list[DriftAlert]
    checkpoint: Checkpoint


@dataclass(slots=True)
class _Pass:
    """One pass of a batch over a model: what was learned, replayed, and the alerts."""

    learned: list[Outcome] = field(default_factory=list)
    replayed: int = 0
    alerts: list[DriftAlert] = field(default_factory=list)


class Learner:
    """Learns outcomes into the propensity model and checkpoints it after every batch.

    `priors` (the catalog's base rates) start a model when there is no checkpoint, and
    start any action a loaded checkpoint does not know yet. Rank-1 outcomes with their
    candidates are appended to `bandit_log`, when given, once their batch is saved.
    """

    def __init__(
        self,
        store: CheckpointStore,
        priors: Mapping[str, float],
        *,
        bandit_log: BanditLog | None = None,
    ) -> None:
        self._store = store
        self._priors = dict(priors)
        self._bandit_log = bandit_log
        self._model: OnlinePropensity | None = None
        self._state = LearnerState()
        self._version = 0

    async def learn(self, outcomes: Sequence[Outcome]) -> LearnedBatch:
        """Learn `outcomes` in order on the latest model and save it as the next version.

        Each outcome is first predicted and counted in the figures (predict, then learn).
        An outcome of an action unknown to the model (a catalog the deciding API had and
        this process has not) is skipped with a log line; a no-answer negative already
        learned is skipped as a replay. Safe to call again after it raised: a batch that
        was not saved is learned again from the stored model and state.
        """
        while True:
            model, state, version = await self._latest()
            self._model = None  # in case of a failure before the save: reload next time
            done = await _learn_all(model, state, outcomes)
            try:
                checkpoint = await self._store.save(model, expected_version=version, state=state)
            except StaleCheckpointError as error:
                log.warning("%s; learning the batch again on the newer model", error)
                continue
            self._model, self._state, self._version = model, state, checkpoint.version
            for alert in done.alerts:
                log.warning("%s (model version %d)", alert.describe(), checkpoint.version)
            if self._bandit_log is not None:
                await self._bandit_log.append(
                    [item.logged() for item in done.learned if item.rank == 1 and item.candidates]
                )
            skipped = len(outcomes) - len(done.learned) - done.replayed
            return LearnedBatch(len(done.learned), skipped, done.replayed, done.alerts, checkpoint)

    async def _latest(self) -> tuple[OnlinePropensity, LearnerState, int]:
        """The model, state and version to learn on: ours if still the latest, else reloaded."""
        if self._model is not None and await self._store.version() == self._version:
            return self._model, self._state, self._version
        try:
            checkpoint = await self._store.latest(with_state=True)
        except CheckpointRefusedError as error:
            log.error("%s; learning starts over from the priors", error)
            return OnlinePropensity(self._priors), LearnerState(), error.version
        if checkpoint is None or checkpoint.state is None:
            return OnlinePropensity(self._priors), LearnerState(), 0
        return with_priors(checkpoint.model, self._priors), checkpoint.state, checkpoint.version


async def _learn_all(
    model: OnlinePropensity, state: LearnerState, outcomes: Sequence[Outcome]
) -> _Pass:
    """Learn `outcomes` in order into `model` and `state`, skipping replays and unknown actions.

    In slices (`models.cooperative`): the worker applies events on the same event loop.
    """
    done = _Pass()
    async for outcome in in_slices(outcomes):
        if _replayed(outcome, state):
            done.replayed += 1
            continue
        try:
            alert = _learn_one(model, state, outcome)
        except UnknownActionError:
            _log_unknown(outcome)
            continue
        done.learned.append(outcome)
        if alert is not None:
            done.alerts.append(alert)
    return done


def _replayed(outcome: Outcome, state: LearnerState) -> bool:
    """A no-answer negative at or before the latest one learned: already learned."""
    if outcome.expiry_id is None:
        return False
    return _stream_position(outcome.expiry_id) <= _stream_position(state.no_answer_through)


def _learn_one(model: OnlinePropensity, state: LearnerState, outcome: Outcome) -> DriftAlert | None:
    """Predict the outcome, learn it, count the prediction and watch for drift.

    The prediction is made before learning the answer, in the same pass over x as the
    learning (`predict_learn_one`: the scaler learns x first, as river's
    `learn_during_predict` does; the answer plays no part in it). Raises `UnknownActionError`,
    before changing anything, for an unknown action.
    """
    accepted = bool(outcome.reward)
    p = model.predict_learn_one(outcome.x, outcome.action_id, accepted)
    state.validation.update(outcome.action_id, p, accepted)
    alert = state.drift.update(outcome.action_id, accepted, ts=time.time())
    if outcome.expiry_id is not None:
        state.no_answer_through = outcome.expiry_id
    return alert


def _log_unknown(outcome: Outcome) -> None:
    log.warning(
        "outcome %s of decision %s: action %r is not in the catalog; skipped",
        outcome.event_id,
        outcome.decision_id,
        outcome.action_id,
    )
