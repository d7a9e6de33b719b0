"""Churn labels: pending snapshots in Redis, each resolved by the stream a horizon later.

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

The model that learns these labels is `models.churn_model.ChurnModel`; the worker's feed
that takes the snapshots is `models.snapshots`, the learner that resolves due ones and
learns them is `models.customer_models`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
from redis.asyncio import Redis

from features.events import BANK_INITIATED_TYPES, Event, EventType, iter_customer_groups
from features.keys import Keys

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
        self.index_key = Keys(key_prefix).churn("due")
        self.resolved_key = Keys(key_prefix).churn("resolved")
        self.watermark_key = Keys(key_prefix).churn("watermark")
        self._snapshot_script = redis.register_script(_SNAPSHOT_SCRIPT)
        self._events_script = redis.register_script(_EVENTS_SCRIPT)
        self._resolve_script = redis.register_script(_RESOLVE_SCRIPT)
        self._forget_script = redis.register_script(_FORGET_SCRIPT)

    def customer_key(self, customer_id: str) -> str:
        """The customer's pending snapshot; the `{id}` hash tag keeps it in their slot."""
        return Keys(self._key_prefix).churn_snapshot(customer_id)

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
