"""The one learner of churn risk and segments, whichever process holds its Redis lock.

Workers feed it (`models.snapshots`): closure labels and segment samples queued in
Redis, snapshots whose horizon the watermark passes. It learns them and checkpoints the
models (`models.customer_model_stores`) that the API serves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis

from features.keys import Keys
from features.locks import RedisLock
from models.checkpoints import SignedModelStore, StaleCheckpointError
from models.churn_labels import PendingChurnLabels
from models.churn_model import ChurnModel
from models.cooperative import SLICE_S, in_slices
from models.segments import Segmenter, SegmentSamples


@dataclass(frozen=True, slots=True)
class LearnStep:
    """What one step of the learner did, and the versions serving after it."""

    churn_labels: int
    segment_samples: int
    churn_version: int
    segments_version: int


class CustomerModelsLearner:
    """The one learner of churn risk and segments, whichever worker holds its Redis lock.

    Each `step` (a worker timer) takes the lock `{prefix}nba:lock:customer-models` or
    renews it (it lapses `lock_ttl_s` after its holder stops stepping, and another
    worker takes over), loads the stored checkpoints if they moved (a new holder, or
    another writer), learns the queued closure labels, the labels due by the watermark
    minus `lateness_s`, and the queued segment samples, and saves a new version of each
    model that learned. Labels and samples are removed from Redis before they are
    learned: a crash before the save loses them, never learns them twice (see the
    module doc). A save that finds the version moved (two holders after a lock lapse)
    stores nothing; the next step reloads the winner's models. A step learns in slices
    of `slice_s` seconds (`models.cooperative`): the worker's events are applied in
    between, not held back for the whole step.
    """

    def __init__(
        self,
        redis: Redis,
        labels: PendingChurnLabels,
        samples: SegmentSamples,
        churn_store: SignedModelStore[ChurnModel],
        segments_store: SignedModelStore[Segmenter],
        *,
        new_segmenter: Callable[[], Segmenter],
        owner: str,
        key_prefix: str = "",
        lateness_s: float = 0.0,
        lock_ttl_s: float = 10.0,
        batch: int = 1000,
        slice_s: float = SLICE_S,
    ) -> None:
        self._labels = labels
        self._samples = samples
        self._churn_store = churn_store
        self._segments_store = segments_store
        self._new_segmenter = new_segmenter
        self._lateness_s = lateness_s
        self._batch = batch
        self._slice_s = slice_s
        self.lock_key = Keys(key_prefix).customer_models_lock
        self._lock = RedisLock(redis, self.lock_key, owner=owner, ttl_s=lock_ttl_s)
        self.churn, self.churn_version = ChurnModel(), -1  # -1: not loaded yet
        self.segmenter, self.segments_version = new_segmenter(), -1

    async def step(self) -> LearnStep | None:
        """One round of learning; None when another worker holds the lock."""
        if not await self._lock.hold():
            return None
        await self._load_if_moved()
        resolutions = await self._labels.take_resolved(self._batch)
        watermark = await self._labels.watermark()
        if watermark is not None:
            now = watermark - self._lateness_s
            resolutions += await self._labels.expire_due(now, limit=self._batch)
        samples = await self._samples.pop(self._batch)
        async for resolution in in_slices(resolutions, self._slice_s):
            self.churn.learn_one(resolution.x, resolution.churned)
        async for sample in in_slices(samples, self._slice_s):
            self.segmenter.learn_one(sample.features, now=sample.ts)
        try:
            if resolutions:
                saved_churn = await self._churn_store.save(
                    self.churn, expected_version=self.churn_version
                )
                self.churn_version = saved_churn.version
            if samples:
                saved_segments = await self._segments_store.save(
                    self.segmenter, expected_version=self.segments_version
                )
                self.segments_version = saved_segments.version
        except StaleCheckpointError:
            self.churn_version = self.segments_version = -1  # reload the winner's next step
            raise
        return LearnStep(len(resolutions), len(samples), self.churn_version, self.segments_version)

    async def _load_if_moved(self) -> None:
        """Load each stored model whose version is not the one in memory (fresh if none)."""
        if await self._churn_store.version() != self.churn_version:
            stored = await self._churn_store.latest()
            self.churn = stored.model if stored is not None else ChurnModel()
            self.churn_version = stored.version if stored is not None else 0
        if await self._segments_store.version() != self.segments_version:
            saved = await self._segments_store.latest()
            self.segmenter = saved.model if saved is not None else self._new_segmenter()
            self.segments_version = saved.version if saved is not None else 0
