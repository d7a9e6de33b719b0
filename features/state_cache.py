"""Decoded customer states kept between batches, each with the stored bytes it came from.

Why: decoding a customer's MessagePack state costs about as much as folding an event into
it, and a worker meets the same customers again and again (a session is a burst of events;
a partition's customers belong to one worker). Nothing is trusted blindly: the store writes
a state folded from a cached one only if Redis still holds exactly the bytes it was decoded
from or encoded to (a conditional write, or a read under WATCH), so a change made by anyone
else (another worker after a rebalance, an identity merge, a deletion) is seen.

The cache is bounded (least recently written first out) and holds only states whose write
succeeded. A state handed out leaves the cache until its batch is written and it is kept
again: batches applied concurrently (by one store) never fold into the same object, and a
batch whose write fails has nothing to undo — the store forgets its customers.
"""

from __future__ import annotations

from collections.abc import Iterable

from features.state import CustomerState, FeatureFold


class StateCache:
    """Up to `capacity` decoded states by Redis key; 0 disables caching."""

    def __init__(self, fold: FeatureFold, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("the state cache capacity must be zero or positive")
        self._fold = fold
        self._capacity = capacity
        self._entries: dict[str, tuple[bytes, CustomerState]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def state(self, key: str, raw: bytes | None) -> CustomerState:
        """The state stored as `raw` under `key` (a new one if None), decoded only if not cached.

        The caller owns the state returned (it is no longer in the cache) until it `keep`s it.
        """
        if raw is None:
            return self._fold.new_state()
        entry = self._entries.pop(key, None)
        if entry is not None and entry[0] == raw:
            self.hits += 1
            return entry[1]
        self.misses += 1
        return self._fold.decode(raw)

    def take(self, key: str) -> tuple[bytes, CustomerState] | None:
        """The cached state of `key` with the bytes it was stored as, or None if not cached.

        The caller owns the state returned (it is no longer in the cache) until it `keep`s it.
        """
        entry = self._entries.pop(key, None)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def keep(self, written: Iterable[tuple[str, bytes, CustomerState]]) -> None:
        """Remember states just written (key, stored bytes, state), evicting the oldest."""
        if not self._capacity:
            return
        entries = self._entries
        for key, raw, state in written:
            entries.pop(key, None)
            entries[key] = (raw, state)
        while len(entries) > self._capacity:
            del entries[next(iter(entries))]

    def forget(self, keys: Iterable[str]) -> None:
        """Drop the states of these keys (their in-memory state may differ from Redis)."""
        for key in keys:
            self._entries.pop(key, None)
