"""A Redis lock with an owner and an expiry: only its owner can extend or release it.

Jobs that one process at a time must run (the RFM base walk, the customer-models
learner) take a lock that expires, so that a crashed holder frees it by itself. Expiry
has a trap: a holder that stalls past the TTL no longer holds the lock, and if it then
extended or deleted the key blindly (`EXPIRE`, `DEL`) it would extend or release the
lock of whoever took it meanwhile. So the key's value is the owner's name, and extending
or releasing is one small script that acts only if the value is still that name; both
say whether the lock was still ours, which is how a stalled holder learns it lost it.

The owner names the process (e.g. `learner@host:pid`): two `RedisLock`s with the same
owner are the same holder, which lets a restarted process with a stable name take its
lock back at once.
"""

from __future__ import annotations

import math

from redis.asyncio import Redis

# KEYS: the lock. ARGV: owner, TTL ms. Extends the lock if the owner still holds it.
_EXTEND_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: the lock. ARGV: owner. Deletes the lock if the owner still holds it.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RedisLock:
    """The lock `key`, held as `owner` for `ttl_s` seconds after each acquire or extend."""

    def __init__(self, redis: Redis, key: str, *, owner: str, ttl_s: float) -> None:
        if not ttl_s > 0.0:
            raise ValueError(f"a lock's TTL must be positive, got {ttl_s}")
        self._redis = redis
        self.key = key
        self.owner = owner
        self._ttl_ms = math.ceil(ttl_s * 1000)
        self._extend = redis.register_script(_EXTEND_SCRIPT)
        self._release = redis.register_script(_RELEASE_SCRIPT)

    async def acquire(self) -> bool:
        """Take the lock if nobody holds it (`SET NX PX`); False if anyone does, us included."""
        return bool(await self._redis.set(self.key, self.owner, nx=True, px=self._ttl_ms))

    async def extend(self) -> bool:
        """Restart the TTL if we still hold the lock; False (and nothing changed) if not."""
        return bool(await self._extend(keys=[self.key], args=[self.owner, self._ttl_ms]))

    async def hold(self) -> bool:
        """Extend the lock if ours, else take it if free: True while we hold it."""
        return await self.extend() or await self.acquire()

    async def release(self) -> bool:
        """Free the lock if we still hold it; False (and nothing changed) if not."""
        return bool(await self._release(keys=[self.key], args=[self.owner]))

    async def held(self) -> bool:
        """Whether we hold the lock now."""
        value = await self._redis.get(self.key)
        if value is None:
            return False
        return (value.decode() if isinstance(value, bytes) else value) == self.owner
