"""The propensity model's signed checkpoints in Redis, with a version that only moves forward.

One writer (the worker that owns the `outcomes` partition) saves the model it learns; any
number of readers (API replicas) follow the version and load each new checkpoint. All of
it lives in one Redis hash, `{prefix}nba:model:propensity`, with the fields `version`
(1, 2, … ; absent means no checkpoint yet), `saved_ts` (Unix seconds), `checkpoint`
(the model), `state` (the learner's `LearnerState`: progressive-validation metrics,
drift detectors, the last no-answer negative learned) and `report` (that state's
figures as a plain dict, for readers). The three blobs are `models.persistence` bytes,
HMAC-signed; one key and one `HSET`, so a save is atomic — a reader never sees the
figures of one version beside the model of another — and the layout works on Redis
Cluster. Readers load the small `report`; only the learner loads the `state`, whose
rolling windows are most of a checkpoint's size.

`SignedModelStore` keeps any other signed model the same way under its own key,
`{prefix}nba:model:<name>` (e.g. `churn`, `segments`), with the fields `version`,
`saved_ts` and `checkpoint` only: one writer, versions that only move forward, readers
following the version, signatures checked before unpickling — the propensity path's
rules, without its learner state.

A save names the version it builds on and fails if another writer got there first
(`StaleCheckpointError`): after a Kafka rebalance a worker that lost the partition can
never overwrite what the new owner learned. A checkpoint whose signature does not match
the key is refused before anything is unpickled (`CheckpointRefusedError`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis

from features.keys import Keys
from models import persistence
from models.drift import DriftDetector
from models.metrics import ProgressiveValidation
from models.online import OnlinePropensity

_T = TypeVar("_T")
_M = TypeVar("_M")
#: The position of "no no-answer negative learned yet" (Redis stream ids start above it).
NO_STREAM_ID = "0-0"

_SAVE_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
redis.call('HSET', KEYS[1], 'version', current + 1, 'saved_ts', ARGV[2], 'checkpoint', ARGV[3],
           'state', ARGV[4], 'report', ARGV[5])
return {1, current + 1}
"""


# KEYS: the model's hash. ARGV: expected version, saved_ts, checkpoint.
_SAVE_MODEL_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
redis.call('HSET', KEYS[1], 'version', current + 1, 'saved_ts', ARGV[2], 'checkpoint', ARGV[3])
return {1, current + 1}
"""


class StaleCheckpointError(RuntimeError):
    """The stored version moved on since the model being saved was loaded."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(
            f"checkpoint not saved: it builds on version {expected}, but version {current} "
            "was saved meanwhile"
        )
        self.current = current


class CheckpointRefusedError(ValueError):
    """The stored checkpoint failed its signature (or type) check and was not loaded."""

    def __init__(self, version: int, reason: str) -> None:
        super().__init__(f"checkpoint version {version} refused: {reason}")
        self.version = version
        self.reason = reason


@dataclass(slots=True)
class LearnerState:
    """What the learner saves beside the model, in the same atomic write as the model.

    `validation` and `drift` follow every outcome learned (`models.metrics`,
    `models.drift`). `no_answer_through` is the position (a Redis stream id, see
    `actions.decision_log`) of the latest no-answer negative learned: a negative at or
    before it is a replay and is skipped. Saving it with the model is what makes each
    negative learned exactly once, whatever crashes and replays happen around it.
    """

    validation: ProgressiveValidation = field(default_factory=ProgressiveValidation)
    drift: DriftDetector = field(default_factory=DriftDetector)
    no_answer_through: str = NO_STREAM_ID

    def report(self, action_ids: Iterable[str] = ()) -> dict[str, Any]:
        """The figures readers show: `{"validation": …, "drift": …}` (plain numbers)."""
        return {"validation": self.validation.report(action_ids), "drift": self.drift.report()}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified model, the version and time it was saved with (version 0: the priors),
    the figures of its learner state, and that state itself when it was asked for."""

    version: int
    saved_ts: float | None
    model: OnlinePropensity
    report: Mapping[str, Any]
    state: LearnerState | None = None


def with_priors(model: OnlinePropensity, priors: Mapping[str, float]) -> OnlinePropensity:
    """`model`, plus every action of `priors` it does not know yet (e.g. new in the catalog).

    Actions the model knows keep what they learned; new ones start from their prior.
    """
    for action_id, prior in priors.items():
        if action_id not in model.priors:
            model.add_action(action_id, prior)
    return model


def _verified(signing_key: bytes, version: int, data: bytes | str, expected_type: type[_T]) -> _T:
    """One signed blob of version `version`, verified, else `CheckpointRefusedError`."""
    try:
        return persistence.load(
            data if isinstance(data, bytes) else data.encode(),
            key=signing_key,
            expected_type=expected_type,
        )
    except (persistence.SignatureError, TypeError) as error:
        raise CheckpointRefusedError(version, str(error)) from error


def _check_signing_key(signing_key: bytes) -> None:
    """Refuse a key too short to sign with, at construction rather than at the first save."""
    if len(signing_key) < persistence.MIN_KEY_BYTES:
        raise ValueError(f"the checkpoint key must be at least {persistence.MIN_KEY_BYTES} bytes")


class CheckpointStore:
    """Save and load the signed checkpoints of one model, `{key_prefix}nba:model:<name>`."""

    def __init__(
        self, redis: Redis, *, key_prefix: str = "", signing_key: bytes, name: str = "propensity"
    ) -> None:
        _check_signing_key(signing_key)
        self._redis = redis
        self._signing_key = signing_key
        self.key = Keys(key_prefix).model(name)
        self._save_script = redis.register_script(_SAVE_SCRIPT)

    async def version(self) -> int:
        """The latest saved version; 0 when nothing was saved yet. One cheap Redis call."""
        raw = await self._redis.hget(self.key, "version")
        return int(raw) if raw is not None else 0

    async def latest(self, *, with_state: bool = False) -> Checkpoint | None:
        """The latest checkpoint, verified; None when nothing was saved yet.

        `with_state` also loads the learner's `LearnerState` (the learner needs it; readers
        need only the `report`). A checkpoint saved before states were kept gets a fresh
        state and an empty report. Raises `CheckpointRefusedError` (unread: nothing is
        unpickled) when a signature does not match the key, i.e. it was altered or signed
        under another key.
        """
        names = ["version", "saved_ts", "checkpoint", "report", "state"][: 5 if with_state else 4]
        stored = dict(zip(names, await self._redis.hmget(self.key, names), strict=True))
        if stored["version"] is None or stored["checkpoint"] is None:
            return None
        version = int(stored["version"])
        model = self._load(version, stored["checkpoint"], OnlinePropensity)
        report = stored["report"]
        return Checkpoint(
            version=version,
            saved_ts=float(stored["saved_ts"]) if stored["saved_ts"] is not None else None,
            model=model,
            report=self._load(version, report, dict)
            if report is not None
            else LearnerState().report(model.actions),
            state=self._state(version, stored["state"]) if with_state else None,
        )

    def _state(self, version: int, data: bytes | None) -> LearnerState:
        """The stored learner state, verified; a fresh one if the checkpoint has none."""
        return self._load(version, data, LearnerState) if data is not None else LearnerState()

    def _load(self, version: int, data: bytes | str, expected_type: type[_T]) -> _T:
        """One signed blob of version `version`, verified, else `CheckpointRefusedError`."""
        return _verified(self._signing_key, version, data, expected_type)

    async def save(
        self,
        model: OnlinePropensity,
        *,
        expected_version: int,
        state: LearnerState | None = None,
    ) -> Checkpoint:
        """Sign and store `model` and the learner's `state` as version `expected_version` + 1.

        Without a `state`, a fresh one is stored (no figures yet). Raises
        `StaleCheckpointError` (and stores nothing) when the stored version is no longer
        `expected_version`.
        """
        state = state if state is not None else LearnerState()
        report = state.report(model.actions)
        blobs = [persistence.save(item, key=self._signing_key) for item in (model, state, report)]
        saved_ts = time.time()
        saved, version = await self._save_script(
            keys=[self.key], args=[expected_version, repr(saved_ts), *blobs]
        )
        if not saved:
            raise StaleCheckpointError(expected_version, int(version))
        return Checkpoint(
            version=int(version), saved_ts=saved_ts, model=model, report=report, state=state
        )


@dataclass(frozen=True, slots=True)
class SavedModel(Generic[_M]):
    """A verified model of a `SignedModelStore`, with the version and time it was saved."""

    version: int
    saved_ts: float | None
    model: _M


class SignedModelStore(Generic[_M]):
    """Signed, versioned checkpoints of one model of type `model_type` (see the module doc).

    The same contract as `CheckpointStore`: `save` names the version it builds on and
    raises `StaleCheckpointError` if another writer saved meanwhile; `latest` raises
    `CheckpointRefusedError`, unpickling nothing, when a signature does not match, and
    also refuses a verified checkpoint holding another type than `model_type`.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str = "",
        signing_key: bytes,
        name: str,
        model_type: type[_M],
    ) -> None:
        _check_signing_key(signing_key)
        self._redis = redis
        self._signing_key = signing_key
        self.model_type = model_type
        self.key = Keys(key_prefix).model(name)
        self._save_script = redis.register_script(_SAVE_MODEL_SCRIPT)

    async def version(self) -> int:
        """The latest saved version; 0 when nothing was saved yet. One cheap Redis call."""
        raw = await self._redis.hget(self.key, "version")
        return int(raw) if raw is not None else 0

    async def latest(self) -> SavedModel[_M] | None:
        """The latest checkpoint, verified; None when nothing was saved yet."""
        version, saved_ts, data = await self._redis.hmget(
            self.key, ["version", "saved_ts", "checkpoint"]
        )
        if version is None or data is None:
            return None
        return SavedModel(
            version=int(version),
            saved_ts=float(saved_ts) if saved_ts is not None else None,
            model=_verified(self._signing_key, int(version), data, self.model_type),
        )

    async def save(self, model: _M, *, expected_version: int) -> SavedModel[_M]:
        """Sign and store `model` as version `expected_version` + 1, else `StaleCheckpointError`."""
        blob = persistence.save(model, key=self._signing_key)
        saved_ts = time.time()
        saved, version = await self._save_script(
            keys=[self.key], args=[expected_version, repr(saved_ts), blob]
        )
        if not saved:
            raise StaleCheckpointError(expected_version, int(version))
        return SavedModel(version=int(version), saved_ts=saved_ts, model=model)
