"""The Redis feature store: applies events to customer features and reads them back.

Layout: one hash per customer, `{prefix}cust:{<id>}:f`, and one short-lived marker per
applied event, `{prefix}cust:{<id>}:e:<event_id>`. Both carry the customer's hash tag, so
one customer's update is a single-slot script that also runs on Redis Cluster.

Idempotency: the script sets the event's marker with `SET NX EX` and applies the event's
updates only when the marker was new, so at-least-once delivery has an exactly-once
effect for as long as the marker lives (`dedup_ttl_seconds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from features.events import Event, iter_customer_groups
from features.registry import decode_features, updates_for

_APPLY_SCRIPT = """
local ttl = ARGV[1]
local features = KEYS[1]
local pos = 2
local applied = 0
for i = 2, #KEYS do
  local n = tonumber(ARGV[pos])
  pos = pos + 1
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ttl) then
    applied = applied + 1
    for _ = 1, n do
      local field, op, value = ARGV[pos], ARGV[pos + 1], ARGV[pos + 2]
      if op == 'add' then
        redis.call('HINCRBYFLOAT', features, field, value)
      else
        local current = tonumber(redis.call('HGET', features, field))
        local candidate = tonumber(value)
        if current == nil or (op == 'max' and candidate > current)
            or (op == 'min' and candidate < current) then
          redis.call('HSET', features, field, value)
        end
      end
      pos = pos + 3
    end
  else
    pos = pos + 3 * n
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
        self._apply_script = redis.register_script(_APPLY_SCRIPT)

    def customer_key(self, customer_id: str, suffix: str) -> str:
        """A key of one customer; the `{id}` hash tag keeps all of them in one slot."""
        return f"{self._key_prefix}cust:{{{customer_id}}}:{suffix}"

    async def apply(self, events: Sequence[Event]) -> ApplyResult:
        """Apply events in one round trip: one script call per customer, pipelined.

        Each customer's events are applied in the order given; duplicates (an event_id
        applied before) change nothing.
        """
        if not events:
            return ApplyResult(applied=0, duplicates=0)
        async with self._redis.pipeline(transaction=False) as pipe:
            for customer_id, customer_events in iter_customer_groups(list(events)):
                keys = [self.customer_key(customer_id, "f")]
                args: list[str | float | int] = [self._dedup_ttl_seconds]
                for event in customer_events:
                    keys.append(self.customer_key(customer_id, f"e:{event.event_id}"))
                    updates = updates_for(event)
                    args.append(len(updates))
                    for update in updates:
                        args.extend((update.field, update.op.value, repr(update.value)))
                await self._apply_script(keys=keys, args=args, client=pipe)
            results = await pipe.execute()
        applied = sum(int(result) for result in results)
        return ApplyResult(applied=applied, duplicates=len(events) - applied)

    async def read(self, customer_id: str) -> dict[str, float | int] | None:
        """The customer's features, or None for a customer never seen."""
        stored = await self._redis.hgetall(self.customer_key(customer_id, "f"))
        if not stored:
            return None
        return decode_features(
            {_text(field): _text(value) for field, value in stored.items()}
        )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
