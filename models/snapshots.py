"""Each worker's part of the customer models: after a batch is applied, resolve closures
and take new churn snapshots (and segment samples), within a per-second budget.

The labels and their Redis layout are `models.churn_labels`; the one learner that
learns what this feeds is `models.customer_models`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from features.events import Event
from features.reading import read_features
from features.store import RedisFeatureStore
from models.churn_labels import PendingChurnLabels, Snapshot
from models.features_vector import vectorise
from models.segments import SegmentSample, SegmentSamples


class SnapshotBudget:
    """How many snapshots may be taken now: `per_s` per second, saved up to one second's worth.

    Why: a snapshot reads and vectorises the customer's features, and its segment sample
    is learned later (together about a millisecond). In steady state few are due (one per
    customer per horizon), but on a fresh start every customer is new, and snapshotting
    each at its first event would stall the stream; the customers left out are
    snapshotted at a later batch of theirs. When more are wanted than the budget holds, it
    grants them a second's worth at a time, so that their Redis round trips are shared.
    """

    def __init__(self, per_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not per_s > 0.0:
            raise ValueError(f"snapshots per second must be positive, got {per_s}")
        self._per_s = per_s
        self._clock = clock
        self._available = per_s
        self._at = clock()

    def take(self, wanted: int) -> int:
        """Up to `wanted` snapshots allowed now (and counted as taken)."""
        now = self._clock()
        self._available = min(self._per_s, self._available + (now - self._at) * self._per_s)
        self._at = now
        if self._available < min(wanted, self._per_s):
            return 0
        granted = min(wanted, int(self._available))
        self._available -= granted
        return granted


class CustomerModelsFeed:
    """What every worker does after the store applied a batch of events (any partition).

    1. `on_events_many`: closures resolve pending snapshots; those labels are queued for
       the learner, the other events record activity, the watermark moves to the batch's
       latest event time. The same script says which customers have no pending snapshot.
    2. Customers of the batch without a pending snapshot get one, as the budget allows,
       at the time of their latest event in the batch, with
       x = `vectorise(features, now=that time)` (no channel); each snapshot taken also
       queues the customer's features as a segment sample. So a customer is sampled at
       most once per horizon, and only the features of those customers are read.
    """

    def __init__(
        self,
        labels: PendingChurnLabels,
        samples: SegmentSamples,
        store: RedisFeatureStore,
        budget: SnapshotBudget,
    ) -> None:
        self._labels = labels
        self._samples = samples
        self._store = store
        self._budget = budget

    async def observe(
        self, events: Sequence[Event], rfm_edges: Mapping[str, tuple[float, ...]]
    ) -> int:
        """Feed one applied batch; returns how many snapshots were taken."""
        if not events:
            return 0
        outcome = await self._labels.on_events_many(events)
        await self._labels.queue_resolved(outcome.resolutions)
        due = outcome.without_pending
        new = due[: self._budget.take(len(due))] if due else []
        if not new:
            return 0
        latest: dict[str, float] = {}
        for event in events:
            latest[event.customer_id] = max(latest.get(event.customer_id, 0.0), event.epoch_seconds)
        states = await self._store.read_states(new)
        snapshots, features_of = [], {}
        for customer_id, state in zip(new, states, strict=True):
            if state is not None:
                ts = latest[customer_id]
                features = read_features(self._store.fold, state, ts, rfm_edges)
                features_of[customer_id] = features
                snapshots.append(Snapshot(customer_id, vectorise(features, now=ts), ts))
        taken = await self._labels.snapshot_many(snapshots) if snapshots else []
        kept = [s for s, created in zip(snapshots, taken, strict=True) if created]
        await self._samples.push([SegmentSample(features_of[s.customer_id], s.ts) for s in kept])
        return len(kept)
