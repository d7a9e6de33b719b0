"""The propensity model an API process serves, following the worker's checkpoints.

At start the latest checkpoint is loaded (or the catalog's priors serve, version 0); a
background task then reads the stored version every `POLL_INTERVAL_S` (one small Redis
call) and, when it moved, loads the new checkpoint and swaps it in with its exploration
policy in one assignment: a request reads `current` once and decides with one consistent
(model, policy, version). A checkpoint whose signature does not match the key is refused
before it is unpickled; it is logged and counted, and the previous model keeps serving.

Each version comes with the learner's figures saved beside it (progressive validation,
drift alerts; `models.checkpoints`), so every replica serving a version shows the same.

`LiveSignedModel` follows any other model of a `SignedModelStore` (churn risk, segments)
the same way: an initial model serves as version 0 until a checkpoint exists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from redis.exceptions import RedisError

from models.checkpoints import (
    Checkpoint,
    CheckpointRefusedError,
    CheckpointStore,
    LearnerState,
    SignedModelStore,
    with_priors,
)
from models.exploration import ExplorationPolicy
from models.online import OnlinePropensity

log = logging.getLogger(__name__)

#: How often the stored version is read: a new checkpoint serves within this (plus its load).
POLL_INTERVAL_S = 0.5

PolicyFactory = Callable[[OnlinePropensity], ExplorationPolicy]
M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class ServingModel:
    """One model version with the policy that ranks with it and the learner's figures for
    it; replaced whole, never in part."""

    version: int
    checkpoint_ts: float | None
    loaded_ts: float
    model: OnlinePropensity
    policy: ExplorationPolicy
    report: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The last checkpoint refused, and why."""

    version: int
    reason: str
    ts: float


class LiveModel:
    """The latest verified model version, kept current by `follow()`."""

    def __init__(
        self, store: CheckpointStore, priors: Mapping[str, float], make_policy: PolicyFactory
    ) -> None:
        self._store = store
        self._priors = dict(priors)
        self._make_policy = make_policy
        priors_only = Checkpoint(
            version=0,
            saved_ts=None,
            model=OnlinePropensity(self._priors),
            report=LearnerState().report(self._priors),
        )
        self.current = self._serve(priors_only)
        self.refused = 0
        self.last_refusal: Refusal | None = None

    def _serve(self, checkpoint: Checkpoint) -> ServingModel:
        model = with_priors(checkpoint.model, self._priors)
        return ServingModel(
            version=checkpoint.version,
            checkpoint_ts=checkpoint.saved_ts,
            loaded_ts=time.time(),
            model=model,
            policy=self._make_policy(model),
            report=checkpoint.report,
        )

    async def refresh(self) -> None:
        """Serve the stored checkpoint if its version is not the one serving.

        A refused version is not tried again; a later version is.
        """
        version = await self._store.version()
        refused = self.last_refusal.version if self.last_refusal is not None else None
        if version in (self.current.version, refused):
            return
        try:
            checkpoint = await self._store.latest()
        except CheckpointRefusedError as error:
            self.refused += 1
            self.last_refusal = Refusal(error.version, error.reason, time.time())
            log.error("%s; still serving version %d", error, self.current.version)
            return
        if checkpoint is not None and checkpoint.version != self.current.version:
            self.current = self._serve(checkpoint)

    async def follow(self, interval_s: float = POLL_INTERVAL_S) -> None:
        """Refresh every `interval_s` until cancelled; a Redis outage is logged once, waited out."""
        await _follow(self.refresh, lambda: self.current.version, "propensity", interval_s)

    def describe(self) -> dict[str, Any]:
        """The serving model for `GET /v1/models`: name, version, times, outcomes, the
        learner's progressive validation and drift figures for this version, refusals."""
        serving = self.current
        model = serving.model
        return {
            "model": model.name,
            "version": serving.version,
            "checkpoint_ts": serving.checkpoint_ts,
            "loaded_ts": serving.loaded_ts,
            "outcomes_learned": {action: model.outcomes(action) for action in model.actions},
            "validation": serving.report["validation"],
            "drift": serving.report["drift"],
            "refused_checkpoints": {
                "count": self.refused,
                "last": None
                if self.last_refusal is None
                else {
                    "version": self.last_refusal.version,
                    "reason": self.last_refusal.reason,
                    "ts": self.last_refusal.ts,
                },
            },
        }


async def _follow(
    refresh: Callable[[], Awaitable[None]],
    serving_version: Callable[[], int],
    name: str,
    interval_s: float,
) -> None:
    """Call `refresh` every `interval_s` until cancelled; a Redis outage is logged once."""
    unavailable = False
    while True:
        try:
            await refresh()
            if unavailable:
                log.warning("%s model checkpoints readable again", name)
            unavailable = False
        except RedisError as error:
            if not unavailable:
                log.warning(
                    "cannot read %s model checkpoints (%s); serving version %d",
                    name,
                    error,
                    serving_version(),
                )
            unavailable = True
        await asyncio.sleep(interval_s)


@dataclass(frozen=True, slots=True)
class ServingSigned(Generic[M]):
    """One version of a model followed by `LiveSignedModel`; replaced whole."""

    version: int
    checkpoint_ts: float | None
    loaded_ts: float
    model: M


class LiveSignedModel(Generic[M]):
    """The latest verified version of one `SignedModelStore` model, kept current by `follow()`.

    `initial` (an unlearned model) serves as version 0 until a checkpoint exists; a
    refused checkpoint is logged and counted, and the previous version keeps serving.
    """

    def __init__(self, store: SignedModelStore[M], initial: M, name: str) -> None:
        self._store = store
        self.name = name
        self.current: ServingSigned[M] = ServingSigned(0, None, time.time(), initial)
        self.refused = 0
        self.last_refusal: Refusal | None = None

    async def refresh(self) -> None:
        """Serve the stored checkpoint if its version is not the one serving (nor refused)."""
        version = await self._store.version()
        refused = self.last_refusal.version if self.last_refusal is not None else None
        if version in (self.current.version, refused):
            return
        try:
            saved = await self._store.latest()
        except CheckpointRefusedError as error:
            self.refused += 1
            self.last_refusal = Refusal(error.version, error.reason, time.time())
            log.error("%s %s; still serving version %d", self.name, error, self.current.version)
            return
        if saved is not None and saved.version != self.current.version:
            self.current = ServingSigned(saved.version, saved.saved_ts, time.time(), saved.model)

    async def follow(self, interval_s: float = POLL_INTERVAL_S) -> None:
        """Refresh every `interval_s` until cancelled; a Redis outage is logged once, waited out."""
        await _follow(self.refresh, lambda: self.current.version, self.name, interval_s)
