"""The Redis feature store: applies events to customer features and reads them back.

Layout: one string per customer, `{prefix}cust:{<id>}:s`, holding the customer's
`CustomerState` (MessagePack, features.state), and for an identifier that was linked to
a customer, `{prefix}cust:{<identifier>}:alias` holding that customer's id. The `{id}`
hash tag keeps every key of a customer in one Redis Cluster slot.

Identity resolution: an event may name its customer by any identifier (a card number,
a phone, a device or app user id, `card:4111…`). Applying a batch first resolves each
id through its alias key (following at most MAX_ALIAS_HOPS links) and applies the event
to the customer the identifier belongs to; an identifier never linked is a customer of
its own (e.g. an anonymous device's history). `link(customer, identifier)` — what an
`identity_linked` event does — merges the identifier's features into the customer's
(features.state.FeatureFold.merge: counts and sums add, times take min/max, event ids
unite) and points the identifier at the customer; linking two known customers makes
the second an alias of the first. A batch racing a link finds, when it writes, the state
it folded merged away or its id linked, and is redone on the customer the id now means,
never applied to a merged-away state.

Writing a batch: the events are grouped by customer and folded in this process into
each customer's state (features.state: only the features an event touches run); one
script then writes every changed state, all or nothing, and counts the batch. Decoded
states are kept between batches (features.state_cache, `cached_states` of them), so a
worker that meets its customers again reads nothing: only the states not cached (and
the links of those ids) are read, with one MGET. The script writes only if every
customer's stored bytes are still those its state was folded from, and no id taken for
a new customer has been linked meanwhile — a conditional write, so one round trip per
batch in the usual case. If another writer changed one of the customers (a partition
handed over in a rebalance, an identity merge, a deletion) or an id of the batch is a
linked identifier, nothing is written and the batch is applied again the careful way:
states and links read under WATCH, identities resolved, one MULTI/MSET/EXEC, retried
from fresh states until no other writer intervened. Either way no update is ever lost
and none applied twice.

Bulk loads (a history loaded, a stream replayed, from one process): `apply_batches`
keeps each batch's conditional write in flight while it folds the next batch, on from the
states that write carries, so this process and Redis work at the same time instead of
taking turns (more events/s than one batch at a time: `benchmarks.ingest_store`).
A write that finds a change is redone the careful way, and the batch folded after it
too, in order. The worker does not use it: it acknowledges a batch's messages only once
they are written, so it cannot fold ahead. It needs the state cache (`cached_states`):
without it, a batch sharing customers with the one in flight reads their states before
that write lands, fails its own write and is redone the careful way.

Redis Cluster: the write script, like a multi-key WATCH/MGET/MULTI, needs all its keys in
one slot; a cluster deployment must split the batch per slot. The store writes each batch
in one script or transaction over all its customers, which suits a standalone Redis or
Valkey.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, WatchError

from features.events import Event, iter_customer_groups
from features.keys import Keys
from features.reading import Features, read_features
from features.redis_text import as_text
from features.state import Applied, CustomerState, FeatureFold
from features.state_cache import StateCache
from features.stats import IngestCounts, IngestStats

#: Links followed from an identifier to its customer (a merged customer's aliases point to
#: the customer it was merged into, so chains stay short).
MAX_ALIAS_HOPS = 4
#: Rounds of optimistic retries before a batch gives up (each round means another writer
#: changed one of its customers between our read and our write).
MAX_WATCH_ROUNDS = 50

#: Writes a batch's states only if every customer's stored bytes are still those the
#: batch was folded from, and no customer it took for new has become a linked identifier;
#: otherwise writes nothing and returns the position of the first change (0: written).
#: KEYS: the n state keys, the alias keys of the customers taken for new, then optionally
#: the ingest counters. ARGV: n, the number of alias keys, per state key the bytes
#: expected ('' = no state) and the bytes to write ('' = unchanged), then optionally the
#: applied, duplicate and dead-lettered counts.
_WRITE_IF_UNCHANGED = """
local n, aliases = tonumber(ARGV[1]), tonumber(ARGV[2])
local CHUNK = 1000  -- keys per MGET/EXISTS/MSET: unpack's stack is limited
for first = 1, n, CHUNK do
  local last = math.min(first + CHUNK - 1, n)
  local current = redis.call('MGET', unpack(KEYS, first, last))
  for i = first, last do
    if (current[i - first + 1] or '') ~= ARGV[1 + 2 * i] then return i end
  end
end
for first = n + 1, n + aliases, CHUNK do
  if redis.call('EXISTS', unpack(KEYS, first, math.min(first + CHUNK - 1, n + aliases))) > 0 then
    return first
  end
end
local writes = {}
for i = 1, n do
  local state = ARGV[2 + 2 * i]
  if state ~= '' then
    writes[#writes + 1] = KEYS[i]
    writes[#writes + 1] = state
  end
  if #writes >= 2 * CHUNK or (i == n and #writes > 0) then
    redis.call('MSET', unpack(writes))
    writes = {}
  end
end
local counters = KEYS[n + aliases + 1]
if counters then
  local counts = 2 * n + 2
  redis.call('HINCRBY', counters, 'applied', ARGV[counts + 1])
  redis.call('HINCRBY', counters, 'duplicates', ARGV[counts + 2])
  redis.call('HINCRBY', counters, 'dead_lettered', ARGV[counts + 3])
end
return 0
"""


class ContendedBatchError(RuntimeError):
    """Other writers kept changing the batch's customers; the batch was not applied."""


class AliasChainError(RuntimeError):
    """An identifier's links go deeper than MAX_ALIAS_HOPS (a loop or a bug)."""


@dataclass(frozen=True, slots=True)
class LinkResult:
    """What linking an identifier did: the customer it now means, and whether features merged."""

    customer_id: str
    merged: bool
    already_linked: bool


@dataclass(frozen=True, slots=True)
class LateEvent:
    """An event not applied because it arrived after the customer's allowed lateness."""

    event: Event
    reason: str


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What became of a batch: applied, already applied before, or refused as too late."""

    applied: int
    duplicates: int
    late: list[LateEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _ReadBatch:
    """A batch grouped by customer, with each customer's state and the bytes it was stored as
    (b"" for a new customer), ready to fold."""

    groups: list[tuple[str, list[Event]]]
    keys: list[str]
    stored: list[bytes]
    states: list[CustomerState]
    new_customer_aliases: list[str]


@dataclass(frozen=True, slots=True)
class _ConditionalWrite:
    """A folded batch: per customer its key, the bytes expected in Redis, the new bytes (None
    if unchanged) and state; the batch's result; the write script's keys and arguments."""

    keys: list[str]
    stored: list[bytes]
    folded: list[tuple[str, bytes | None, CustomerState]]
    result: ApplyResult
    script_keys: list[str]
    arguments: list[bytes | int]

    def cached(self) -> Iterator[tuple[str, bytes, CustomerState]]:
        """What the state cache keeps once the write landed: each state with its bytes."""
        for (key, raw, state), expected in zip(self.folded, self.stored, strict=True):
            if raw or expected:
                yield key, raw or expected, state


@dataclass(frozen=True, slots=True)
class _InFlight:
    """A bulk batch whose conditional write has been sent and not yet answered."""

    events: list[Event]
    write: _ConditionalWrite
    task: asyncio.Future[bool]


@dataclass(slots=True)
class _Totals:
    """Results of several batches added up."""

    applied: int = 0
    duplicates: int = 0
    late: list[LateEvent] = field(default_factory=list)

    def add(self, result: ApplyResult) -> None:
        self.applied += result.applied
        self.duplicates += result.duplicates
        self.late += result.late

    def result(self) -> ApplyResult:
        return ApplyResult(self.applied, self.duplicates, self.late)


class RedisFeatureStore:
    """Customer features in Redis; all I/O of the features package happens here."""

    def __init__(
        self, redis: Redis, fold: FeatureFold, *, key_prefix: str = "", cached_states: int = 0
    ) -> None:
        self._redis = redis
        self.fold = fold
        self._key_prefix = key_prefix
        self.state_cache = StateCache(fold, cached_states)
        self._write_if_unchanged = redis.register_script(_WRITE_IF_UNCHANGED)

    def customer_key(self, customer_id: str, suffix: str) -> str:
        """A key of one customer; the `{id}` hash tag keeps all of them in one slot."""
        return Keys(self._key_prefix).customer(customer_id, suffix)

    def state_key(self, customer_id: str) -> str:
        return self.customer_key(customer_id, "s")

    def alias_key(self, identifier: str) -> str:
        return self.customer_key(identifier, "alias")

    async def _resolve(self, pipe: Pipeline, ids: list[str]) -> dict[str, str]:
        """The customer each id belongs to; every alias key read is watched."""
        resolved = dict(zip(ids, ids, strict=True))
        pending = ids
        for _ in range(MAX_ALIAS_HOPS):
            targets = sorted({resolved[i] for i in pending})
            keys = [self.alias_key(target) for target in targets]
            await pipe.watch(*keys)
            found = {
                target: as_text(alias)
                for target, alias in zip(targets, await pipe.mget(keys), strict=True)
                if alias is not None
            }
            if not found:
                return resolved
            pending = [i for i in pending if resolved[i] in found]
            for i in pending:
                resolved[i] = found[resolved[i]]
        raise AliasChainError(f"identifiers {pending[:5]} link more than {MAX_ALIAS_HOPS} deep")

    async def apply(
        self, events: Sequence[Event], *, count_into: IngestStats | None = None, rejected: int = 0
    ) -> ApplyResult:
        """Apply events in one atomic write; each customer's events in the order given.

        Duplicates (an event_id applied before, in this batch or earlier) change nothing;
        events older than the customer's allowed lateness are returned as `late`. With
        `count_into`, the batch is counted (applied, duplicates, and as dead-lettered its
        late events plus `rejected` items) in the same atomic write: no extra round trip.
        """
        if not events:
            if count_into is not None and rejected:
                await count_into.add(IngestCounts(dead_lettered=rejected))
            return ApplyResult(applied=0, duplicates=0)
        result = await self._apply_if_unchanged(events, count_into, rejected)
        if result is None:
            result = await self._apply_watched(events, count_into, rejected)
        return result

    async def apply_batches(
        self, batches: Iterable[Sequence[Event]], *, count_into: IngestStats | None = None
    ) -> ApplyResult:
        """Apply batches in order, as `apply` would one after the other, for bulk loads.

        Each batch's write is in flight while the next batch is folded, so that this
        process's folding and Redis's writing overlap instead of taking turns: a history
        loaded or a stream replayed from one process. The next batch folds on from the
        states the write in flight carries and its conditional write expects their bytes,
        so if that write finds a change (another writer, a linked identifier), both
        batches are applied again the careful way, in order. Returns the batches' results
        added up.
        """
        totals = _Totals()
        await self._redis.script_load(_WRITE_IF_UNCHANGED)  # so that `_send` can EVALSHA it
        pending = (list(batch) for batch in batches if batch)
        batch = next(pending, None)
        read = await self._read_cached(batch) if batch is not None else None
        in_flight: _InFlight | None = None
        try:
            while batch is not None:
                write = self._fold_read(read, count_into, 0) if read is not None else None
                if in_flight is not None and not await self._landed(in_flight, count_into, totals):
                    write = None  # folded on from states that never landed: dropped
                if write is None:  # a linked identifier, or the write before did not land
                    totals.add(await self.apply(batch, count_into=count_into))
                else:
                    self.state_cache.keep(write.cached())  # the next batch folds on from these
                following = next(pending, None)
                # read before this batch's write is sent, so that Redis answers it at once
                read = await self._read_cached(following) if following is not None else None
                in_flight = None
                if write is not None:
                    in_flight = _InFlight(batch, write, await self._send(write))
                batch = following
            if in_flight is not None:
                await self._landed(in_flight, count_into, totals)
        finally:
            if in_flight is not None and not in_flight.task.done():
                in_flight.task.cancel()  # an error above: its connection is closed, not reused
        return totals.result()

    async def _send(self, write: _ConditionalWrite) -> asyncio.Future[bool]:
        """Send a conditional write, returning once Redis has it (whether it wrote, to await).

        On a connection of its own from the pool: redis-py's calls return only with the
        reply, and a call left to run as a task may not even have sent its command before
        this process goes back to folding.
        """
        pool = self._redis.connection_pool
        connection = await pool.get_connection()
        script = self._write_if_unchanged
        try:
            await connection.send_command(
                "EVALSHA", script.sha, len(write.script_keys), *write.script_keys, *write.arguments
            )
        except BaseException:
            await pool.release(connection)
            raise
        return asyncio.ensure_future(self._written(connection, write))

    async def _written(self, connection: AbstractConnection, write: _ConditionalWrite) -> bool:
        """The answer to a write `_send` sent; the connection goes back to the pool."""
        try:
            position = await connection.read_response()
        except NoScriptError:  # the script cache was flushed since: run it the usual way
            return await self._write(write)
        finally:
            await self._redis.connection_pool.release(connection)
        return not position

    async def _landed(
        self, in_flight: _InFlight, count_into: IngestStats | None, totals: _Totals
    ) -> bool:
        """Await a bulk write and add up its batch; whether it wrote. If it did not, its
        customers' cached states are dropped and its batch applied the careful way."""
        if await in_flight.task:
            totals.add(in_flight.write.result)
            return True
        self.state_cache.forget(in_flight.write.keys)
        totals.add(await self._apply_watched(in_flight.events, count_into, 0))
        return False

    async def _apply_if_unchanged(
        self, events: Sequence[Event], count_into: IngestStats | None, rejected: int
    ) -> ApplyResult | None:
        """The usual way: fold from cached or freshly read states, write them conditionally.

        Cached states are not read again; the write script checks that every customer's
        stored bytes are still those its state came from, and writes all or nothing.
        None (nothing written) when that check fails or an id of the batch is a linked
        identifier: the caller then applies the batch under WATCH, which resolves
        identities and reads every state afresh.
        """
        read = await self._read_cached(events)
        if read is None:
            return None
        write = self._fold_read(read, count_into, rejected)
        if not await self._write(write):
            return None
        self.state_cache.keep(write.cached())
        return write.result

    async def _read_cached(self, events: Sequence[Event]) -> _ReadBatch | None:
        """The batch grouped by customer, each with its state: cached, or read (one MGET of
        the states not cached and of their ids' alias keys) and decoded.

        None when one of those ids is a linked identifier (the states taken from the cache
        are put back): such a batch is applied under WATCH, which resolves identities.
        """
        groups = list(iter_customer_groups(list(events)))
        keys = [self.state_key(customer_id) for customer_id, _ in groups]
        cache = self.state_cache
        entries = [cache.take(key) for key in keys]
        new_customer_aliases: list[str] = []
        missing = [index for index, entry in enumerate(entries) if entry is None]
        if missing:
            aliases = [self.alias_key(groups[index][0]) for index in missing]
            values = await self._redis.mget([keys[index] for index in missing] + aliases)
            if any(alias is not None for alias in values[len(missing) :]):
                cache.keep((key, *entry) for key, entry in zip(keys, entries, strict=True) if entry)
                return None
            for index, raw, alias in zip(missing, values[: len(missing)], aliases, strict=True):
                if raw is None:
                    entries[index] = (b"", self.fold.new_state())
                    new_customer_aliases.append(alias)
                else:
                    entries[index] = (raw, self.fold.decode(raw))
        taken = [entry for entry in entries if entry]  # every customer has one by now
        return _ReadBatch(
            groups=groups,
            keys=keys,
            stored=[raw for raw, _ in taken],
            states=[state for _, state in taken],
            new_customer_aliases=new_customer_aliases,
        )

    def _fold_read(
        self, read: _ReadBatch, count_into: IngestStats | None, rejected: int
    ) -> _ConditionalWrite:
        """Fold a read batch into its states; the conditional write that stores them."""
        result, folded = self._fold(read.groups, read.keys, read.states)
        script_keys = [*read.keys, *read.new_customer_aliases]
        arguments: list[bytes | int] = [len(read.keys), len(read.new_customer_aliases)]
        for expected, (_, raw, _) in zip(read.stored, folded, strict=True):
            arguments += (expected, raw or b"")
        if count_into is not None:
            script_keys.append(count_into.counts_key)
            arguments += (result.applied, result.duplicates, rejected + len(result.late))
        return _ConditionalWrite(read.keys, read.stored, folded, result, script_keys, arguments)

    async def _write(self, write: _ConditionalWrite) -> bool:
        """Run a conditional write; whether it wrote (False: a customer changed meanwhile, or
        an id taken for a new customer was linked, and nothing was written)."""
        return not await self._write_if_unchanged(keys=write.script_keys, args=write.arguments)

    async def _apply_watched(
        self, events: Sequence[Event], count_into: IngestStats | None, rejected: int
    ) -> ApplyResult:
        """Apply the batch in a transaction over states and aliases read under WATCH."""
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_WATCH_ROUNDS):
                keys: list[str] = []
                try:
                    groups, keys, stored = await self._read_batch(pipe, events)
                    cache = self.state_cache
                    states = [cache.state(key, raw) for key, raw in zip(keys, stored, strict=True)]
                    result, folded = self._fold(groups, keys, states)
                    pipe.multi()
                    writes = {key: raw for key, raw, _ in folded if raw is not None}
                    if writes:
                        pipe.mset(writes)
                    if count_into is not None:
                        dead = rejected + len(result.late)
                        counts = IngestCounts(result.applied, result.duplicates, dead)
                        count_into.queue_add(pipe, counts)
                    await pipe.execute()
                except WatchError:
                    self.state_cache.forget(keys)
                    continue
                except BaseException:
                    self.state_cache.forget(keys)
                    raise
                self.state_cache.keep(
                    (key, raw or stored_raw, state)
                    for (key, raw, state), stored_raw in zip(folded, stored, strict=True)
                    if raw or stored_raw
                )
                return result
        raise ContendedBatchError(
            f"a batch of {len(events)} events kept meeting concurrent changes to its "
            f"customers in {MAX_WATCH_ROUNDS} attempts"
        )

    async def _read_batch(
        self, pipe: Pipeline, events: Sequence[Event]
    ) -> tuple[list[tuple[str, list[Event]]], list[str], list[bytes | None]]:
        """The batch grouped by customer, their state keys and states, all watched.

        One WATCH and one MGET cover both the states and the alias keys of the ids the
        events name; only when one of those ids is a linked identifier (rare) are the
        owners resolved and read in a second round.
        """
        groups = list(iter_customer_groups(list(events)))
        keys = [self.state_key(customer_id) for customer_id, _ in groups]
        aliases = [self.alias_key(customer_id) for customer_id, _ in groups]
        await pipe.watch(*keys, *aliases)
        values = await pipe.mget(keys + aliases)
        if all(alias is None for alias in values[len(keys) :]):
            return groups, keys, values[: len(keys)]
        groups = await self._resolved_groups(pipe, events)
        keys = [self.state_key(customer_id) for customer_id, _ in groups]
        await pipe.watch(*keys)
        return groups, keys, await pipe.mget(keys)

    async def _resolved_groups(
        self, pipe: Pipeline, events: Sequence[Event]
    ) -> list[tuple[str, list[Event]]]:
        """The events grouped by the customer they belong to, after identity resolution."""
        groups = list(iter_customer_groups(list(events)))
        resolved = await self._resolve(pipe, [customer_id for customer_id, _ in groups])
        merged: dict[str, list[Event]] = {}
        for customer_id, customer_events in groups:
            owner = resolved[customer_id]
            if owner != customer_id:
                customer_events = [
                    e.model_copy(update={"customer_id": owner}) for e in customer_events
                ]
            merged.setdefault(owner, []).extend(customer_events)
        return list(merged.items())

    async def link(self, customer_id: str, identifier: str) -> LinkResult:
        """Make `identifier` mean `customer_id` from now on, merging what it had seen.

        Idempotent: linking again changes nothing. If the identifier already belongs to
        another customer, that customer is merged into this one (they are one person).
        """
        async with self._redis.pipeline(transaction=True) as pipe:
            for _ in range(MAX_WATCH_ROUNDS):
                try:
                    resolved = await self._resolve(pipe, [customer_id, identifier])
                    owner, source = resolved[customer_id], resolved[identifier]
                    if owner == source:
                        await pipe.reset()
                        return LinkResult(owner, merged=False, already_linked=True)
                    keys = [self.state_key(owner), self.state_key(source)]
                    source_ids = self.customer_key(source, "ids")
                    await pipe.watch(*keys, source_ids)
                    owner_raw, source_raw = await pipe.mget(keys)
                    known_ids = await pipe.smembers(source_ids)
                    pipe.multi()
                    if source_raw is not None:
                        state = (
                            self.fold.new_state()
                            if owner_raw is None
                            else self.fold.decode(owner_raw)
                        )
                        merged = self.fold.decode(source_raw)
                        for bounded in (state, merged):  # as `_fold` does before applying
                            self.fold.bound_to(bounded, self._horizon())
                        self.fold.merge(state, merged)
                        pipe.set(keys[0], self.fold.encode(state))
                        pipe.delete(keys[1])
                    pipe.set(self.alias_key(source), owner)
                    if identifier != source:
                        pipe.set(self.alias_key(identifier), owner)
                    pipe.sadd(self.customer_key(owner, "ids"), source, identifier, *known_ids)
                    pipe.delete(source_ids)
                    await pipe.execute()
                    return LinkResult(owner, merged=source_raw is not None, already_linked=False)
                except WatchError:
                    continue
        raise ContendedBatchError(f"linking {identifier} to {customer_id} kept being contended")

    def _fold(
        self,
        groups: list[tuple[str, list[Event]]],
        keys: list[str],
        states: list[CustomerState],
    ) -> tuple[ApplyResult, list[tuple[str, bytes | None, CustomerState]]]:
        """Fold each customer's events into its state (in place).

        Returns, per customer in `keys` order, the key, the encoded state if it changed
        (None if every event was a duplicate or late) and the state. A state whose latest
        event time is further ahead of this process's clock than the allowed skew is first
        brought back to it (`FeatureFold.bound_to`), so that it does not make the
        customer's every event late.
        """
        fold = self.fold
        applied = duplicates = 0
        late: list[LateEvent] = []
        folded: list[tuple[str, bytes | None, CustomerState]] = []
        horizon = self._horizon()
        for (_, customer_events), key, state in zip(groups, keys, states, strict=True):
            changed = fold.bound_to(state, horizon)  # a latest event time far ahead: undone
            for event in customer_events:
                outcome = fold.apply(state, event)
                if outcome is Applied.APPLIED:
                    applied += 1
                    changed = True
                elif outcome is Applied.DUPLICATE:
                    duplicates += 1
                else:
                    late.append(LateEvent(event, self._late_reason(event, state)))
            if changed:
                fold.prune(state)
            folded.append((key, fold.encode(state) if changed else None, state))
        return ApplyResult(applied=applied, duplicates=duplicates, late=late), folded

    def _horizon(self) -> float:
        """The latest event time believable now: this process's clock plus the allowed skew."""
        return time.time() + self.fold.config.max_clock_skew_s

    def _late_reason(self, event: Event, state: CustomerState) -> str:
        lateness = self.fold.config.allowed_lateness_s
        behind = state.watermark - int(event.ts.timestamp())
        return (
            f"event time is {behind} s before the customer's latest event, more than the "
            f"allowed lateness of {lateness} s (NBA_ALLOWED_LATENESS_S): not applied"
        )

    async def resolve(self, identifier: str) -> str:
        """The customer an identifier belongs to (itself when never linked)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            resolved = await self._resolve(pipe, [identifier])
            await pipe.reset()
        return resolved[identifier]

    async def read_states(self, customer_ids: Sequence[str]) -> list[CustomerState | None]:
        """Several customers' states in one MGET, by the ids given (no identity resolution:
        for ids the stream has already applied events to)."""
        if not customer_ids:
            return []
        raws = await self._redis.mget([self.state_key(c) for c in customer_ids])
        return [None if raw is None else self.fold.decode(raw) for raw in raws]

    async def read_state(self, customer_id: str) -> CustomerState | None:
        """The customer's stored state (after identity resolution), or None if never seen."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.get(self.alias_key(customer_id))
            pipe.get(self.state_key(customer_id))
            alias, raw = await pipe.execute()
        if alias is not None:
            raw = await self._redis.get(self.state_key(await self.resolve(customer_id)))
        return None if raw is None else self.fold.decode(raw)

    async def read(
        self,
        customer_id: str,
        *,
        now: float | None = None,
        rfm_edges: Mapping[str, tuple[float, ...]] | None = None,
    ) -> Features | None:
        """The customer's features as of `now` (default: the current time), or None."""
        state = await self.read_state(customer_id)
        if state is None:
            return None
        return read_features(self.fold, state, time.time() if now is None else now, rfm_edges)

    async def delete(self, customer_id: str) -> bool:
        """Remove every key of the customer (a deletion request): features, the identifiers
        linked to it and their links. True if there was anything to remove."""
        owner = await self.resolve(customer_id)
        ids = self.customer_key(owner, "ids")
        linked = [as_text(identifier) for identifier in await self._redis.smembers(ids)]
        keys = [self.state_key(owner), ids, *(self.alias_key(i) for i in linked)]
        return bool(await self._redis.delete(*keys))
