"""Churn risk: an online classifier whose label is known only a horizon after the snapshot.

The label. A *snapshot* of a customer at time t0 records x, the model input at t0
(`vectorise(features, now=t0)`), and opens the horizon (t0, t0 + horizon_s]. It is

- positive, "closed": the customer closes a product (a `product_closed` event) at a
  time within the horizon — known as soon as that event arrives;
- positive, "dormant": the customer is dormant when the horizon ends, i.e. initiated no
  event in its last `dormant_after_s` seconds, (t0 + horizon_s − dormant_after_s,
  t0 + horizon_s]. The dormancy window lies inside the horizon (dormant_after_s ≤
  horizon_s is enforced), so only activity after the snapshot counts; with
  dormant_after_s = horizon_s, dormant means "no activity at all after the snapshot";
- negative, "active": otherwise, once the horizon has passed.

Activity is any event the customer initiated: every type except
`features.events.BANK_INITIATED_TYPES` (an offer shown by SMS reaches a dormant customer
too). Every time is event time in Unix seconds, passed in by the caller — `now` of
`snapshot` and `expire_due`, and the events' own `ts` — never the wall clock, so a
replayed stream gives the same labels and tests can drive the clock. Pass `expire_due`
the stream's event-time watermark minus the lateness you tolerate: an activity event
arriving after its snapshot expired no longer counts.

Redis layout (`{prefix}` is the key prefix):

- `{prefix}cust:{<id>}:churn`, a hash: the customer's pending snapshot — `t0`,
  `deadline` (t0 + horizon_s), `active` (latest activity seen in the horizon, t0 when
  none) and `x` (JSON). One pending snapshot per customer: a new one is taken only once
  the previous one is resolved, so a customer yields at most one label per horizon
  (sooner only after a closure). Resolution deletes the key; as a safety net it also
  expires horizon_s + ttl_slack_s (wall-clock) seconds after it was written. The
  customer's hash tag keeps it in their slot, and deleting a customer's keys
  (`cust:{<id>}:*`) deletes it.
- `{prefix}nba:churn:resolved`, a list: labels resolved by events (closures) in any
  worker, waiting for the one learner (`queue_resolved`, `take_resolved`).
- `{prefix}nba:churn:watermark`: the latest event time seen (`on_events_many`), the
  clock `expire_due` is driven by.
- `{prefix}nba:churn:due`, a sorted set: customer id → deadline, the index `expire_due`
  reads. A global key is acceptable here because it is off the event path: it is written
  once per snapshot (at most one per customer per horizon), read in batches by the
  expirer, and never touched by `on_events`; it costs one small member per pending
  customer. No script spans it and a customer's key. If it ever outgrows one slot,
  split it into N keys by a hash of the id.

Redis Cluster: `on_events_many` runs one script over a batch's customers' keys (one
command instead of one per customer: the per-command client cost dominated the worker),
so, like the feature store's batch write, it needs a standalone Redis or Valkey; a
Cluster deployment must split batches per slot.

Exactly once. A label is produced only by the script that deletes its snapshot —
`on_events` for a closure, the per-customer resolution of `expire_due` for the others —
atomically in the customer's slot. Whatever repeats — a replayed `product_closed`, a
second `expire_due`, two expirers racing, a closure after the horizon was resolved —
finds no snapshot and produces nothing, so no label is learned twice. (`expire_due` is
therefore not one script over the index: a script touching many customers' keys is
cross-slot, refused by Redis Cluster; the index is only a to-do list, and a stale entry,
e.g. of a snapshot a closure resolved, resolves to nothing and is dropped.) The caller
learns each returned label once; a crash between a resolution and the model's next
checkpoint loses that label rather than learning it twice. A snapshot is written to the
customer's key before its index entry (two round trips): a crash in between leaves a
snapshot that yields no label and blocks that customer's next one until its key
expires — a lost label, never a doubled one.

>>> model = ChurnModel(prior=0.05)
>>> round(model.churn_risk({"days_since_login": 2.0}), 3)  # before any label: the prior
0.05
>>> for _ in range(200):
...     model.learn_one({"days_since_login": 30.0}, churned=True)
...     model.learn_one({"days_since_login": 1.0}, churned=False)
>>> model.churn_risk({"days_since_login": 30.0}) > 0.5 > model.churn_risk({"days_since_login": 1.0})
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
from redis.asyncio import Redis
from river import linear_model, optim, preprocessing

from features.events import BANK_INITIATED_TYPES, Event, EventType, iter_customer_groups
from features.reading import read_features
from features.store import RedisFeatureStore
from models.checkpoints import SignedModelStore, StaleCheckpointError
from models.cooperative import SLICE_S, in_slices
from models.features_vector import vectorise
from models.segments import Segmenter, SegmentSample, SegmentSamples

Reason = Literal["closed", "dormant", "active"]

_ACTIVITY_TYPES = frozenset(EventType) - BANK_INITIATED_TYPES

# KEYS: the customer's churn key. ARGV: t0, deadline, x (JSON), TTL seconds.
_SNAPSHOT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 't0', ARGV[1], 'deadline', ARGV[2], 'active', ARGV[1], 'x', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: the watermark, then the churn keys of a batch's customers. ARGV: the batch's latest
# event time (the watermark keeps the larger), then per churn key in order: c, c closure
# times (ascending), a, a activity times. Per churn key, returns 0 (no pending snapshot),
# 1 (pending, activity recorded) or {t0, x, closure time} when a closure resolved it.
# x (a few KB) is read only then: copying it into Lua for every pending customer of every
# batch cost ~12% of the script's Valkey CPU.
_EVENTS_SCRIPT = """
local watermark = tonumber(redis.call('GET', KEYS[1]) or '-inf')
if tonumber(ARGV[1]) > watermark then redis.call('SET', KEYS[1], ARGV[1]) end
local replies, at = {}, 2
for k = 2, #KEYS do
  local closures = tonumber(ARGV[at])
  local first_closure = at + 1
  local activities = tonumber(ARGV[at + closures + 1])
  local first_activity = at + closures + 2
  at = first_activity + activities
  local t0, deadline, active = unpack(redis.call('HMGET', KEYS[k], 't0', 'deadline', 'active'))
  local reply = 0
  if t0 then
    local start, stop = tonumber(t0), tonumber(deadline)
    reply = 1
    for i = first_closure, first_closure + closures - 1 do
      local t = tonumber(ARGV[i])
      if t > start and t <= stop then
        reply = {t0, redis.call('HGET', KEYS[k], 'x'), ARGV[i]}
        redis.call('DEL', KEYS[k])
        break
      end
    end
    if reply == 1 then
      local latest, latest_text = tonumber(active), nil
      for i = first_activity, first_activity + activities - 1 do
        local t = tonumber(ARGV[i])
        if t > latest and t <= stop then latest, latest_text = t, ARGV[i] end
      end
      if latest_text then redis.call('HSET', KEYS[k], 'active', latest_text) end
    end
  end
  replies[k - 1] = reply
end
return replies
"""

# KEYS: the customer's churn key. ARGV: now, dormant_after_s.
# Returns {t0, x, deadline, dormant 0/1} when the snapshot is due, else nil.
_RESOLVE_SCRIPT = """
local t0, deadline, active, x = unpack(
  redis.call('HMGET', KEYS[1], 't0', 'deadline', 'active', 'x'))
if not t0 or tonumber(deadline) > tonumber(ARGV[1]) then return nil end
redis.call('DEL', KEYS[1])
local dormant = tonumber(active) <= tonumber(deadline) - tonumber(ARGV[2])
return {t0, x, deadline, dormant and 1 or 0}
"""

# KEYS: the index. ARGV: member, score, member, score, ... as read before.
# Removes each member still at the score read: a newer snapshot's entry stays.
_FORGET_SCRIPT = """
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A customer's model input `x` at event time `ts`, waiting for its churn label."""

    customer_id: str
    x: dict[str, float]
    ts: float


@dataclass(frozen=True, slots=True)
class EventsOutcome:
    """What a batch of events did to pending snapshots: the closures it resolved, and the
    batch's customers left without a pending snapshot (in the batch's order)."""

    resolutions: list[Resolution]
    without_pending: list[str]


@dataclass(frozen=True, slots=True)
class Resolution:
    """A snapshot's label: `churned` is True for "closed" and "dormant", False for "active".

    `resolved_ts` is the event time that decided it: the closure, or the horizon's end.
    """

    customer_id: str
    x: dict[str, float]
    snapshot_ts: float
    resolved_ts: float
    churned: bool
    reason: Reason


class ChurnModel:
    """Churn probability within the horizon, learned online: `StandardScaler | LogisticRegression`.

    Learns from `Resolution`s (or `learn_one`); `churn_risk(x)` is meant to become a
    customer feature. Picklable: save and load it with `models.persistence`.

    Parameters
    ----------
    prior
        The churn rate assumed before any label: the intercept starts at logit(prior).
    learning_rate
        SGD step size of the weights and the intercept (inputs are standardised first).
    l2
        L2 penalty pulling the weights towards zero at every step.
    """

    def __init__(self, *, prior: float = 0.05, learning_rate: float = 0.02, l2: float = 0.0):
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior must be within (0, 1), got {prior}")
        if not learning_rate > 0.0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        if not l2 >= 0.0:
            raise ValueError(f"l2 must be zero or positive, got {l2}")
        self.prior = prior
        self.learning_rate = learning_rate
        self.l2 = l2
        self.labels_learned = 0
        self._pipeline = preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate),
            l2=l2,
            intercept_init=math.log(prior / (1.0 - prior)),
            intercept_lr=learning_rate,
        )

    def learn_one(self, x: Mapping[str, float], churned: bool) -> None:
        """Learn one label; `x` must be the snapshot's input, never later features."""
        self._pipeline.learn_one(dict(x), bool(churned))
        self.labels_learned += 1

    def churn_risk(self, x: Mapping[str, float]) -> float:
        """The probability that the customer churns within the horizon."""
        risk: float = self._pipeline.predict_proba_one(dict(x))[True]
        return risk

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[bool, float]:
        """River's shape: {False: 1 − risk, True: risk}."""
        risk = self.churn_risk(x)
        return {False: 1.0 - risk, True: risk}


@dataclass(frozen=True, slots=True)
class CustomerModelStores:
    """The signed checkpoints of the churn and segments models: the worker saves, the API reads."""

    churn: SignedModelStore[ChurnModel]
    segments: SignedModelStore[Segmenter]

    @classmethod
    def open(cls, redis: Redis, *, key_prefix: str, signing_key: bytes) -> CustomerModelStores:
        """Both stores, under the keys every worker and API replica agree on."""
        return cls(
            churn=SignedModelStore(
                redis,
                key_prefix=key_prefix,
                signing_key=signing_key,
                name="churn",
                model_type=ChurnModel,
            ),
            segments=SignedModelStore(
                redis,
                key_prefix=key_prefix,
                signing_key=signing_key,
                name="segments",
                model_type=Segmenter,
            ),
        )


class PendingChurnLabels:
    """Pending churn snapshots in Redis, resolved by the stream (see the module doc)."""

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str = "",
        horizon_s: float,
        dormant_after_s: float,
        ttl_slack_s: float = 30 * 86_400.0,
    ) -> None:
        if not 0.0 < dormant_after_s <= horizon_s:
            raise ValueError(
                f"dormant_after_s must be within (0, horizon_s = {horizon_s}], "
                f"got {dormant_after_s}: dormancy is judged inside the horizon"
            )
        if not ttl_slack_s >= 0.0:
            raise ValueError(f"ttl_slack_s must be zero or positive, got {ttl_slack_s}")
        self._redis = redis
        self._key_prefix = key_prefix
        self.horizon_s = horizon_s
        self.dormant_after_s = dormant_after_s
        self._ttl_s = math.ceil(horizon_s + ttl_slack_s)
        self.index_key = f"{key_prefix}nba:churn:due"
        self.resolved_key = f"{key_prefix}nba:churn:resolved"
        self.watermark_key = f"{key_prefix}nba:churn:watermark"
        self._snapshot_script = redis.register_script(_SNAPSHOT_SCRIPT)
        self._events_script = redis.register_script(_EVENTS_SCRIPT)
        self._resolve_script = redis.register_script(_RESOLVE_SCRIPT)
        self._forget_script = redis.register_script(_FORGET_SCRIPT)

    def customer_key(self, customer_id: str) -> str:
        """The customer's pending snapshot; the `{id}` hash tag keeps it in their slot."""
        return f"{self._key_prefix}cust:{{{customer_id}}}:churn"

    # -- snapshots -------------------------------------------------------------------------

    async def snapshot(self, customer_id: str, x: Mapping[str, float], *, now: float) -> bool:
        """Take a snapshot at event time `now` unless one is pending; whether it was taken."""
        taken = await self.snapshot_many([Snapshot(customer_id, dict(x), now)])
        return taken[0]

    async def snapshot_many(self, snapshots: Sequence[Snapshot]) -> list[bool]:
        """`snapshot` for many customers in two round trips; whether each was taken.

        Call it after `on_events` for the same events, with x computed from the features
        those events produced and `ts` the latest of their times: the snapshot then
        learns only from what happens strictly after it.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            for snapshot in snapshots:
                args = [repr(snapshot.ts), repr(snapshot.ts + self.horizon_s)]
                args += [_encode_x(snapshot.x), self._ttl_s]
                await self._snapshot_script(
                    keys=[self.customer_key(snapshot.customer_id)], args=args, client=pipe
                )
            taken = [bool(created) for created in await pipe.execute()]
        deadlines = {
            snapshot.customer_id: snapshot.ts + self.horizon_s
            for snapshot, created in zip(snapshots, taken, strict=True)
            if created
        }
        if deadlines:
            await self._redis.zadd(self.index_key, deadlines)
        return taken

    # -- resolution by events --------------------------------------------------------------

    async def on_events(self, customer_id: str, events: Sequence[Event]) -> Resolution | None:
        """Apply one customer's events to their pending snapshot.

        A `product_closed` within the horizon resolves it as churned ("closed") and
        returns it; any customer-initiated event within the horizon records activity.
        """
        strangers = {event.customer_id for event in events} - {customer_id}
        if strangers:
            raise ValueError(f"events of other customers than {customer_id!r}: {strangers}")
        resolutions = (await self.on_events_many(events)).resolutions
        return resolutions[0] if resolutions else None

    async def on_events_many(self, events: Sequence[Event]) -> EventsOutcome:
        """`on_events` for a batch of many customers' events: one script, one round trip.

        The watermark moves to the batch's latest event time. Also says which of the
        batch's customers have no pending snapshot after it (none before, or one a closure
        just resolved), so that the caller knows whom to snapshot.
        The script spans the batch's customers: standalone Redis or Valkey, as the
        feature store's batch write (a Cluster deployment must split the batch per
        slot).
        """
        by_customer = dict(iter_customer_groups(list(events)))
        if not by_customer:
            return EventsOutcome([], [])
        args: list[str | int] = [repr(max(event.epoch_seconds for event in events))]
        for customer_events in by_customer.values():
            args += _event_args(customer_events)
        keys = [self.watermark_key, *map(self.customer_key, by_customer)]
        replies = await self._events_script(keys=keys, args=args)
        resolutions, without_pending = [], []
        for customer_id, reply in zip(by_customer, replies, strict=True):
            if isinstance(reply, list):
                t0, x, closed_ts = reply
                resolutions.append(_resolution(customer_id, t0, x, closed_ts, "closed"))
            if reply != 1:
                without_pending.append(customer_id)
        return EventsOutcome(resolutions, without_pending)

    async def queue_resolved(self, resolutions: Sequence[Resolution]) -> None:
        """Hand labels resolved by events to the learner (`take_resolved`)."""
        if resolutions:
            await self._redis.rpush(self.resolved_key, *map(_encode_resolution, resolutions))

    async def take_resolved(self, limit: int) -> list[Resolution]:
        """Up to `limit` queued labels, oldest first, removed: each is taken once."""
        raw = await self._redis.lpop(self.resolved_key, limit)
        return [_decode_resolution(item) for item in raw or ()]

    async def watermark(self) -> float | None:
        """The latest event time noted, None before any."""
        raw = await self._redis.get(self.watermark_key)
        return float(raw) if raw is not None else None

    # -- resolution at the horizon ---------------------------------------------------------

    async def expire_due(self, now: float, *, limit: int = 1000) -> list[Resolution]:
        """Resolve up to `limit` snapshots whose horizon ended by event time `now`.

        Returns their labels ("dormant" or "active"); each is returned by exactly one
        call, whatever the retries or concurrent callers. Call again while `due(now)`
        is not 0.
        """
        entries = await self._redis.zrangebyscore(
            self.index_key, "-inf", repr(now), start=0, num=limit, withscores=True
        )
        if not entries:
            return []
        customer_ids = [_text(member) for member, _ in entries]
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id in customer_ids:
                await self._resolve_script(
                    keys=[self.customer_key(customer_id)],
                    args=[repr(now), repr(self.dormant_after_s)],
                    client=pipe,
                )
            replies = await pipe.execute()
        forget = [item for member, score in entries for item in (member, repr(score))]
        await self._forget_script(keys=[self.index_key], args=forget)
        resolutions = []
        for customer_id, reply in zip(customer_ids, replies, strict=True):
            if reply is not None:
                t0, x, deadline, dormant = reply
                reason: Reason = "dormant" if int(dormant) else "active"
                resolutions.append(_resolution(customer_id, t0, x, deadline, reason))
        return resolutions

    async def due(self, now: float) -> int:
        """How many index entries are due by event time `now` (stale ones included)."""
        count: int = await self._redis.zcount(self.index_key, "-inf", repr(now))
        return count


def _encode_x(x: Mapping[str, float]) -> bytes:
    """x as JSON, every value a finite float (JSON has no NaN; numpy scalars become floats)."""
    values = {name: float(value) for name, value in x.items()}
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"feature {name!r} is {value}: features must be finite numbers")
    return orjson.dumps(values)


# -- wiring: workers feed, one learner learns ------------------------------------------------

# KEYS: the lock. ARGV: owner, TTL ms. Takes the lock, or renews it for its owner.
_LOCK_SCRIPT = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


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
        self._owner = owner
        self._lateness_s = lateness_s
        self._lock_ttl_ms = math.ceil(lock_ttl_s * 1000)
        self._batch = batch
        self._slice_s = slice_s
        self.lock_key = f"{key_prefix}nba:lock:customer-models"
        self._lock_script = redis.register_script(_LOCK_SCRIPT)
        self.churn, self.churn_version = ChurnModel(), -1  # -1: not loaded yet
        self.segmenter, self.segments_version = new_segmenter(), -1

    async def step(self) -> LearnStep | None:
        """One round of learning; None when another worker holds the lock."""
        if not await self._lock_script(keys=[self.lock_key], args=[self._owner, self._lock_ttl_ms]):
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


def _encode_resolution(resolution: Resolution) -> bytes:
    return orjson.dumps(
        {
            "customer_id": resolution.customer_id,
            "x": resolution.x,
            "snapshot_ts": resolution.snapshot_ts,
            "resolved_ts": resolution.resolved_ts,
            "reason": resolution.reason,
        }
    )


def _decode_resolution(raw: bytes | str) -> Resolution:
    item = orjson.loads(raw)
    return Resolution(
        customer_id=item["customer_id"],
        x=item["x"],
        snapshot_ts=float(item["snapshot_ts"]),
        resolved_ts=float(item["resolved_ts"]),
        churned=item["reason"] != "active",
        reason=item["reason"],
    )


def _event_args(events: Sequence[Event]) -> list[str | int]:
    """One customer's part of the events script's ARGV: its closure times (ascending), then
    its activity times, each list after its length."""
    closures: list[float] = []
    activity: list[str] = []
    for event in events:
        if event.type in _ACTIVITY_TYPES:
            activity.append(repr(event.epoch_seconds))
        if event.type is EventType.PRODUCT_CLOSED:
            closures.append(event.epoch_seconds)
    return [len(closures), *map(repr, sorted(closures)), len(activity), *activity]


def _resolution(
    customer_id: str, t0: bytes | str, x: bytes | str, resolved_ts: bytes | str, reason: Reason
) -> Resolution:
    """A resolution from a script's reply (bytes, or text with `decode_responses`)."""
    return Resolution(
        customer_id=customer_id,
        x=orjson.loads(x),
        snapshot_ts=float(t0),
        resolved_ts=float(resolved_ts),
        churned=reason != "active",
        reason=reason,
    )


def _text(value: bytes | str) -> str:
    """A reply as text, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else value
