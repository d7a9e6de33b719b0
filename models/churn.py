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
- `{prefix}nba:churn:due`, a sorted set: customer id → deadline, the index `expire_due`
  reads. A global key is acceptable here because it is off the event path: it is written
  once per snapshot (at most one per customer per horizon), read in batches by the
  expirer, and never touched by `on_events`; it costs one small member per pending
  customer. No script spans it and a customer's key, so the layout works on Redis
  Cluster. If it ever outgrows one slot, split it into N keys by a hash of the id.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson
from redis.asyncio import Redis
from river import linear_model, optim, preprocessing

from features.events import BANK_INITIATED_TYPES, Event, EventType, iter_customer_groups

Reason = Literal["closed", "dormant", "active"]

_ACTIVITY_TYPES = frozenset(EventType) - BANK_INITIATED_TYPES

# KEYS: the customer's churn key. ARGV: t0, deadline, x (JSON), TTL seconds.
_SNAPSHOT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 't0', ARGV[1], 'deadline', ARGV[2], 'active', ARGV[1], 'x', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: the customer's churn key. ARGV: n, n closure times (ascending), activity times.
# Returns {t0, x, closure time} when a closure resolves the snapshot, else nil.
_EVENTS_SCRIPT = """
local t0, deadline, active, x = unpack(
  redis.call('HMGET', KEYS[1], 't0', 'deadline', 'active', 'x'))
if not t0 then return nil end
local start, stop = tonumber(t0), tonumber(deadline)
local closures = tonumber(ARGV[1])
for i = 2, closures + 1 do
  local t = tonumber(ARGV[i])
  if t > start and t <= stop then
    redis.call('DEL', KEYS[1])
    return {t0, x, ARGV[i]}
  end
end
local latest, latest_text = tonumber(active), nil
for i = closures + 2, #ARGV do
  local t = tonumber(ARGV[i])
  if t > latest and t <= stop then latest, latest_text = t, ARGV[i] end
end
if latest_text then redis.call('HSET', KEYS[1], 'active', latest_text) end
return nil
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

    def learn(self, resolutions: Iterable[Resolution]) -> int:
        """Learn every resolution, in order; how many were learned."""
        learned = 0
        for resolution in resolutions:
            self.learn_one(resolution.x, resolution.churned)
            learned += 1
        return learned

    def churn_risk(self, x: Mapping[str, float]) -> float:
        """The probability that the customer churns within the horizon."""
        risk: float = self._pipeline.predict_proba_one(dict(x))[True]
        return risk

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[bool, float]:
        """River's shape: {False: 1 − risk, True: risk}."""
        risk = self.churn_risk(x)
        return {False: 1.0 - risk, True: risk}


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
        resolutions = await self.on_events_many(events)
        return resolutions[0] if resolutions else None

    async def on_events_many(self, events: Sequence[Event]) -> list[Resolution]:
        """`on_events` for a batch of many customers' events, in one round trip."""
        by_customer = dict(iter_customer_groups(list(events)))
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id, customer_events in by_customer.items():
                await self._events_script(
                    keys=[self.customer_key(customer_id)],
                    args=_event_args(customer_events),
                    client=pipe,
                )
            replies = await pipe.execute()
        resolutions = []
        for customer_id, reply in zip(by_customer, replies, strict=True):
            if reply is not None:
                t0, x, closed_ts = reply
                resolutions.append(_resolution(customer_id, t0, x, closed_ts, "closed"))
        return resolutions

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


def _event_args(events: Sequence[Event]) -> list[str | int]:
    """ARGV of the events script: closure times (ascending), then activity times."""
    closures = sorted(e.epoch_seconds for e in events if e.type is EventType.PRODUCT_CLOSED)
    activity = [e.epoch_seconds for e in events if e.type in _ACTIVITY_TYPES]
    return [len(closures), *map(repr, closures), *map(repr, activity)]


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
