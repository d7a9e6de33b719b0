"""RFM quintile edges of the whole customer base, kept current by a walk over all customers.

A value tier says how a customer compares with everyone else, so it needs the
distribution of recency, frequency and monetary value over the base. `BaseWalker` walks
every customer state with SCAN, a few thousand keys per step (the stream never pauses
for it), reading each purchasing customer's recency (days since the last purchase),
decayed frequency and decayed value *as of the walk*, into a uniform reservoir sample
(at most `sample_size` customers, so memory stays bounded at any base size). When a
pass completes, the quintile edges of the sample are published to Redis
(`{prefix}rfm:edges`) and the next pass starts: edges are at most one pass old.
`read_edges` is what readers (the API) use; `features.derived` turns edges into scores.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from dataclasses import dataclass, field

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from features.config import SECONDS_PER_DAY
from features.keys import Keys
from features.locks import RedisLock
from features.registry import AMOUNT_SCALE, STORED, STORED_BY_NAME
from features.state import CustomerState, FeatureFold, PartialState, SlotReader

DIMENSIONS = {"r": "purchase_recency_days", "f": "txn_decayed_count", "m": "txn_decayed_amount"}
QUINTILES = 5
#: The slots an RFM row is read from: lifetime purchases, last purchase, decayed F and M.
RFM_SLOTS = _TXN_COUNT, _TXN_LAST, _TXN_FREQUENCY, _TXN_VALUE = tuple(
    STORED.index(STORED_BY_NAME[name])
    for name in ("txn_count", "txn_last_ts", "txn_decayed_count", "txn_decayed_amount")
)
#: A pass holds the walker lock this long at most; a crashed walker frees it by expiry.
LOCK_TTL_S = 300


@dataclass
class _Pass:
    """One walk over the base: the SCAN cursor and the reservoir of (r, f, m) values."""

    cursor: int = 0
    seen: int = 0
    sample: list[tuple[float, float, float]] = field(default_factory=list)


class BaseWalker:
    """Walks the customer base and publishes RFM quintile edges after each full pass."""

    def __init__(
        self,
        redis: Redis,
        fold: FeatureFold,
        *,
        key_prefix: str = "",
        owner: str,
        sample_size: int = 50_000,
        keys_per_step: int = 2_000,
        seed: int = 0,
        lock_ttl_s: float = LOCK_TTL_S,
    ) -> None:
        self._redis = redis
        self._fold = fold
        self._prefix = key_prefix
        self._sample_size = sample_size
        self._keys_per_step = keys_per_step
        self._random = random.Random(seed)
        self._reader = SlotReader(fold.stored, RFM_SLOTS)
        self._pass: _Pass | None = None
        self._lock = RedisLock(
            redis, Keys(key_prefix).rfm_walker_lock, owner=owner, ttl_s=lock_ttl_s
        )

    @property
    def edges_key(self) -> str:
        return Keys(self._prefix).rfm_edges

    async def step(self, now: float | None = None) -> dict[str, list[float]] | None:
        """Read the next keys of the pass; the edges published if this step ended a pass.

        Only one process walks at a time (a lock with expiry): the others' steps do
        nothing, so every worker can call this on a timer. A walker whose lock lapsed
        (it stalled past `lock_ttl_s`) drops its pass and leaves the lock, and whoever
        took it, alone; its next step starts a new pass if the lock is free.
        """
        if self._pass is None:
            if not await self._lock.acquire():
                return None
            self._pass = _Pass()
        now = time.time() if now is None else now
        walk = self._pass
        cursor, keys = await self._redis.scan(
            walk.cursor, match=Keys(self._prefix).states_pattern, count=self._keys_per_step
        )
        if keys:
            for raw in await self._redis.mget(keys):
                if raw is not None:
                    self._observe(walk, raw, now)
        walk.cursor = int(cursor)
        if not await self._lock.extend():
            self._pass = None
            return None
        if walk.cursor != 0:
            return None
        self._pass = None
        edges = quintile_edges(walk.sample)
        if edges:
            payload = {**edges, "customers": walk.seen, "computed_ts": now}
            await self._redis.set(self.edges_key, orjson.dumps(payload))
        await self._lock.release()
        return edges

    def _observe(self, walk: _Pass, raw: bytes, now: float) -> None:
        row = rfm_values(self._fold, self._reader.read(raw), now)
        if row is None:
            return
        walk.seen += 1
        if len(walk.sample) < self._sample_size:
            walk.sample.append(row)  # type: ignore[arg-type]
        else:  # reservoir sampling: every customer of the pass equally likely kept
            slot = self._random.randrange(walk.seen)
            if slot < self._sample_size:
                walk.sample[slot] = row  # type: ignore[assignment]


def rfm_values(
    fold: FeatureFold, state: CustomerState | PartialState, now: float
) -> tuple[float, float, float] | None:
    """(days since the last purchase, decayed frequency, decayed value) as of `now`, read
    straight from the `RFM_SLOTS` (a full read costs ten times more); None without a
    purchase."""
    slots = state.slots
    if not slots[_TXN_COUNT]:
        return None
    recency = max(0.0, (now - slots[_TXN_LAST]) / SECONDS_PER_DAY)
    frequency = slots[_TXN_FREQUENCY] * fold.decay_factor(state, _TXN_FREQUENCY, now)
    value = slots[_TXN_VALUE] * fold.decay_factor(state, _TXN_VALUE, now) / AMOUNT_SCALE
    return recency, frequency, value


def quintile_edges(sample: list[tuple[float, float, float]]) -> dict[str, list[float]]:
    """The four inner quintile edges of each dimension; empty below two customers."""
    if len(sample) < 2:
        return {}
    columns = list(zip(*sample, strict=True))
    return {
        dimension: statistics.quantiles(column, n=QUINTILES, method="inclusive")
        for dimension, column in zip(DIMENSIONS, columns, strict=True)
    }


async def read_edges(redis: Redis, *, key_prefix: str = "") -> dict[str, tuple[float, ...]]:
    """The latest published edges, empty before the first pass completed."""
    raw = await redis.get(Keys(key_prefix).rfm_edges)
    if raw is None:
        return {}
    stored = orjson.loads(raw)
    return {dimension: tuple(stored[dimension]) for dimension in DIMENSIONS if dimension in stored}


class EdgesCache:
    """The latest published edges held in memory by a reader (an API replica), refreshed
    every `interval_s` by `follow()`; reads never wait on Redis for them."""

    def __init__(self, redis: Redis, *, key_prefix: str = "", interval_s: float = 5.0) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._interval_s = interval_s
        self.current: dict[str, tuple[float, ...]] = {}

    async def refresh(self) -> None:
        self.current = await read_edges(self._redis, key_prefix=self._prefix)

    async def follow(self) -> None:
        """Refresh forever (cancel to stop); a Redis error keeps the last edges."""
        while True:
            await asyncio.sleep(self._interval_s)
            with contextlib.suppress(RedisError):
                await self.refresh()
