"""The Redis feature store: applies events to customer features and reads them back.

Layout: one hash per customer, `{prefix}cust:{<id>}:f`, and one short-lived marker per
applied event, `{prefix}cust:{<id>}:e:<event_id>`. Both carry the customer's hash tag.

Writing: a batch of events is applied by one call of a Lua script compiled from the
feature registry. Per event the client sends four short values (type, channel, event
time, amount in whole 1/AMOUNT_SCALE units, so that sums are exact in any order); the
script skips events whose marker exists (`SET NX EX`), folds each customer's new events
into one delta per feature, and writes each customer with one HMGET and one HSET. That
keeps both the client's and the server's work per event small, which is what
throughput on a shared machine depends on (benchmarks/ingest_store.py).

Idempotency: a replayed event finds its marker and changes nothing, so at-least-once
delivery has an exactly-once effect for as long as markers live (`dedup_ttl_seconds`).
Order: sums do not depend on order, and `max`/`min` features keep the latest/earliest
event time whatever the arrival order.

Redis Cluster: every key the script touches for one customer shares that customer's
hash tag, and the script's arguments are grouped by customer; a cluster deployment must
split a batch into one call per customer (or per slot). The store makes one call per
batch, which suits a standalone Redis or Valkey.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from features.events import Event, iter_customer_groups
from features.redis_text import as_text
from features.registry import AMOUNT_SCALE, FEATURES, FeatureDef, Op, Source, decode_features

_LUA_SAFE = re.compile(r"[a-z0-9_]+")
_SOURCE_EXPRESSION = {Source.ONE: "1", Source.EVENT_TIME: "ts", Source.AMOUNT: "amount"}
_FOLD = {
    Op.ADD: "d[{f}] = (d[{f}] or 0) + {v}",
    Op.MAX: "if d[{f}] == nil or {v} > d[{f}] then d[{f}] = {v} end",
    Op.MIN: "if d[{f}] == nil or {v} < d[{f}] then d[{f}] = {v} end",
}


def _lua_string(text: str) -> str:
    """A Lua string literal of a feature name or enum value (plain identifiers only)."""
    if not _LUA_SAFE.fullmatch(text):
        raise ValueError(f"{text!r} cannot be used in the feature script: use [a-z0-9_]")
    return f"'{text}'"


def _fold_statement(feature: FeatureDef) -> str:
    """The Lua statement folding one event into the customer's delta for this feature."""
    conditions = []
    if feature.event_types is not None:
        types = " or ".join(f"etype == {_lua_string(t.value)}" for t in sorted(feature.event_types))
        conditions.append(f"({types})")
    if feature.channel is not None:
        conditions.append(f"channel == {_lua_string(feature.channel.value)}")
    fold = _FOLD[feature.op].format(
        f=_lua_string(feature.name), v=_SOURCE_EXPRESSION[feature.source]
    )
    return f"if {' and '.join(conditions)} then {fold} end" if conditions else fold


def compile_apply_script(features: Sequence[FeatureDef]) -> str:
    """The Lua script applying a batch of events to the given features.

    KEYS, per customer: the features hash, then one marker key per event.
    ARGV: dedup TTL, number of customers, then per customer: its number of events and,
    per event, type, channel, event time, amount ('' when absent). Returns the number of
    events applied (not already seen).
    """
    ops = ", ".join(f"[{_lua_string(f.name)}] = {_lua_string(f.op.value)}" for f in features)
    folds = "\n      ".join(_fold_statement(feature) for feature in features)
    return f"""
local ops = {{{ops}}}
local ttl = ARGV[1]
local k, a, applied = 1, 3, 0
for _ = 1, tonumber(ARGV[2]) do
  local features_key = KEYS[k]
  local n = tonumber(ARGV[a])
  k, a = k + 1, a + 1
  local d = {{}}
  for _ = 1, n do
    if redis.call('SET', KEYS[k], '1', 'NX', 'EX', ttl) then
      applied = applied + 1
      local etype, channel, ts, amount = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]),
        tonumber(ARGV[a + 3])
      {folds}
    end
    k, a = k + 1, a + 4
  end
  local fields = {{}}
  for field in pairs(d) do fields[#fields + 1] = field end
  if #fields > 0 then
    local current = redis.call('HMGET', features_key, unpack(fields))
    local writes = {{}}
    for i, field in ipairs(fields) do
      local old, new, op = tonumber(current[i]), d[field], ops[field]
      if op == 'add' then
        new = (old or 0) + new
      elseif old ~= nil and ((op == 'max' and old >= new) or (op == 'min' and old <= new)) then
        new = nil
      end
      if new ~= nil then
        writes[#writes + 1] = field
        writes[#writes + 1] = string.format('%.17g', new)
      end
    end
    if #writes > 0 then redis.call('HSET', features_key, unpack(writes)) end
  end
end
return applied
"""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """How many events changed features, and how many were already applied before."""

    applied: int
    duplicates: int


class RedisFeatureStore:
    """Customer features in Redis; all I/O of the features package happens here."""

    def __init__(self, redis: Redis, *, key_prefix: str = "", dedup_ttl_seconds: int) -> None:
        self._redis = redis
        self._key_prefix = key_prefix
        self._dedup_ttl_seconds = dedup_ttl_seconds
        self._apply_script = redis.register_script(compile_apply_script(FEATURES))

    def customer_key(self, customer_id: str, suffix: str) -> str:
        """A key of one customer; the `{id}` hash tag keeps all of them in one slot."""
        return f"{self._key_prefix}cust:{{{customer_id}}}:{suffix}"

    async def apply(self, events: Sequence[Event]) -> ApplyResult:
        """Apply events in one round trip; each customer's events in the order given.

        Duplicates (an event_id applied before, in this batch or earlier) change nothing.
        """
        if not events:
            return ApplyResult(applied=0, duplicates=0)
        groups = list(iter_customer_groups(list(events)))
        keys: list[str] = []
        args: list[str | int] = [self._dedup_ttl_seconds, len(groups)]
        for customer_id, customer_events in groups:
            prefix = f"{self._key_prefix}cust:{{{customer_id}}}:"
            keys.append(prefix + "f")
            args.append(len(customer_events))
            for event in customer_events:
                keys.append(f"{prefix}e:{event.event_id}")
                amount = "" if event.amount is None else str(round(event.amount * AMOUNT_SCALE))
                args += (event.type.value, event.channel.value, repr(event.epoch_seconds), amount)
        applied = int(await self._apply_script(keys=keys, args=args))
        return ApplyResult(applied=applied, duplicates=len(events) - applied)

    async def read(self, customer_id: str) -> dict[str, float | int] | None:
        """The customer's features, or None for a customer never seen."""
        stored = await self._redis.hgetall(self.customer_key(customer_id, "f"))
        if not stored:
            return None
        return decode_features(
            {as_text(field): as_text(value) for field, value in stored.items()}
        )
