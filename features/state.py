"""One customer's stored features as one compact value, and the fold that applies events to it.

`FeatureFold` compiles the registry's `STORED` declarations into, per (event type,
channel), the short list of steps an event of that sort runs — so applying an event
costs the features it touches, not the size of the registry. A `CustomerState` is
encoded with MessagePack as one Redis string per customer: one read and one write per
customer per batch, whatever the number of features (DESIGN.md: fewer commands per
event and compact per-customer state are what raise throughput). The codec is msgspec's:
it packs a state in about half the time msgpack-python took (the state is encoded once
per customer per batch, the largest single cost of the store's client), and decodes
against a type derived from the registry, so a stored value of the wrong shape is
refused with the place it went wrong.

Semantics, by kind (all by event time, never arrival time):
- COUNT, SUM: exact integers (amounts in 1/AMOUNT_SCALE units) — any order, same result.
- FIRST_TIME / LAST_TIME: earliest / latest event time, to the second.
- LATEST: the value of the event with the latest time (ties: the larger value).
- DAILY: count and amount per UTC day for the last 90 days (windows are counted back
  from the read time), the number of distinct purchase days and the first day's amount
  (features.daily).
- DECAYED: Σ contribution · 2^-(age / half-life), kept relative to a per-customer
  reference time. The one float aggregate: a different order changes at most the last
  bits (relative error ~1e-15), not the value. No exponent can overflow: the reference
  moves forward before a weight passes 2^MAX_DECAY_EXPONENT, a read never weighs a sum up
  from its reference (an event ahead of the read time counts with age 0 from there), and
  rescaling to another reference only ever scales down.

Exactly-once effect: each applied event's id (an 8-byte BLAKE2b digest) is kept with
its UTC day while the day is within the allowed lateness of the customer's latest event
time (`watermark`); an event seen before is a DUPLICATE. An event older than the
watermark minus the allowed lateness is LATE and not applied (the caller dead-letters
it with the reason): its id may have been forgotten, so applying it could count it
twice. Within that lateness, any order and any duplication give the same state. A
watermark further ahead of the clock than the allowed skew (`FeatureFold.bound_to`) is
brought back to it before events are applied, so that one bad time cannot make every
later event of the customer late.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

import msgspec

from features.config import SECONDS_PER_DAY, WINDOWS_DAYS, FeatureConfig
from features.daily import DailyBuckets, Packed
from features.events import Event
from features.fold_compiler import compile_plans
from features.registry import AMOUNT_SCALE, PRODUCTS, STORED, Kind, StoredFeature, Value

#: The stored form's version; 1 kept the daily buckets as a map of [count, units] pairs.
SCHEMA = 2
DAILY_RETENTION_DAYS = max(WINDOWS_DAYS)
#: Decayed sums grow as 2^(age/half-life) from their reference time; past this exponent
#: the reference moves forward so that they stay far from float overflow.
MAX_DECAY_EXPONENT = 500.0
_PRODUCT_KEYS = frozenset(PRODUCTS)


class Applied(Enum):
    """What became of one event."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(slots=True)
class CustomerState:
    """A customer's stored features: one slot per `STORED` feature, in registry order.

    `watermark` is the latest event time applied (Unix seconds, 0 = no event yet);
    `decay_epoch` the reference time of the decayed sums; `seen` the ids of the events
    applied per UTC day, for the days still within the allowed lateness. `prune_due` is
    the watermark from which `FeatureFold.prune` has something to drop again; it is not
    stored (0, "prune now", after decoding).
    """

    watermark: int
    decay_epoch: int
    seen: dict[int, array]
    slots: list[Any]
    prune_due: int = field(default=0, compare=False)


@dataclass(slots=True)
class PartialState:
    """Some slots of a stored state (slot index → value) and its times, read by `SlotReader`.

    Indexing a slot that was not read raises KeyError, so a reader cannot mistake one for
    a default.
    """

    watermark: int
    decay_epoch: int
    slots: Mapping[int, Any]


def event_digest(event_id: str) -> int:
    """The 64-bit id kept for deduplication (collisions: ~1e-15 per customer and day)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


def _product_key(product: str | None) -> str | None:
    if product is None:
        return None
    return product if product in _PRODUCT_KEYS else "other"


def _empty_slot(feature: StoredFeature) -> Any:
    if feature.key is not None:
        return {}
    if feature.kind is Kind.DAILY:
        return DailyBuckets()
    if feature.kind is Kind.LATEST:
        return None
    if feature.kind is Kind.DECAYED:
        return 0.0
    return 0


#: Schema 1's form of daily buckets: distinct days, first day, its units, day → (count, units).
_Schema1Daily = tuple[int, int | None, int, dict[int, tuple[int, int]]]


def _stored_type(feature: StoredFeature, daily: Any) -> Any:
    """The type of a feature's slot in the stored form; `daily` that of DAILY slots."""
    if feature.kind is Kind.DAILY:
        return daily
    number = int if feature.value in (Value.ONE, Value.AMOUNT) else int | float
    value = {
        Kind.COUNT: number,
        Kind.SUM: number,
        Kind.FIRST_TIME: int,
        Kind.LAST_TIME: int,
        Kind.DECAYED: float,
        Kind.LATEST: tuple[int, number],
    }[feature.kind]
    if feature.key is not None:
        return dict[str, value]
    return value | None if feature.kind is Kind.LATEST else value


def _state_decoder(
    version: int, stored: tuple[StoredFeature, ...], daily: Any
) -> msgspec.msgpack.Decoder:
    """Decodes a stored state of this schema version and registry, refusing any other shape."""
    slots = tuple(_stored_type(feature, daily) for feature in stored)
    return msgspec.msgpack.Decoder(tuple[(Literal[version], int, int, dict[int, bytes], *slots)])


class FeatureFold:
    """Applies events to `CustomerState`s, merges and encodes them, per a `FeatureConfig`."""

    def __init__(self, config: FeatureConfig, stored: tuple[StoredFeature, ...] = STORED) -> None:
        self.config = config
        self.stored = stored
        self._lateness = config.allowed_lateness_s
        self._max_clock_skew_s = config.max_clock_skew_s
        self._inverse_half_lives = [
            1.0 / config.half_life_s(f.decay) if f.decay else 0.0 for f in stored
        ]
        self._decayed = [i for i, f in enumerate(stored) if f.kind is Kind.DECAYED]
        self._daily = [i for i, f in enumerate(stored) if f.kind is Kind.DAILY]
        self._keyed = [i for i, f in enumerate(stored) if f.key is not None]
        self._empty_slots = [_empty_slot(f) for f in stored]
        self._min_half_life = min(
            (config.half_life_s(stored[i].decay or "") for i in self._decayed), default=1.0
        )
        # One encoder and decoder per schema for every call (each top-level call would set
        # up its own). They handle only plain types, never calling back into Python, so
        # under the GIL a call runs whole even if threads share the fold.
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = _state_decoder(SCHEMA, stored, Packed)
        self._schema_1_decoder = _state_decoder(1, stored, _Schema1Daily)
        self._plans = compile_plans(
            stored,
            {f.decay: 1.0 / config.half_life_s(f.decay) for f in stored if f.decay is not None},
        )

    # -- states ----------------------------------------------------------------------------

    def new_state(self) -> CustomerState:
        """The state of a customer never seen."""
        slots = self._empty_slots.copy()
        for index in self._keyed:
            slots[index] = {}
        for index in self._daily:
            slots[index] = DailyBuckets()
        return CustomerState(0, 0, {}, slots)

    def apply(self, state: CustomerState, event: Event) -> Applied:
        """Apply one event to the state (in place) unless it is a duplicate or too late."""
        ts = int(event.epoch_seconds)
        if state.watermark and ts < state.watermark - self._lateness:
            return Applied.LATE
        day = ts // SECONDS_PER_DAY
        digest = event_digest(event.event_id)
        ids = state.seen.get(day)
        if ids is None:
            state.seen[day] = ids = array("Q")
        elif digest in ids:
            return Applied.DUPLICATE
        ids.append(digest)
        if not state.decay_epoch:
            state.decay_epoch = day * SECONDS_PER_DAY
        elif (ts - state.decay_epoch) / self._min_half_life > MAX_DECAY_EXPONENT:
            self._move_decay_epoch(state, day * SECONDS_PER_DAY)
        amount = event.amount
        self._plans[event.type, event.channel](
            state.slots,
            ts,
            0 if amount is None else round(amount * AMOUNT_SCALE),
            event.channel,
            _product_key(event.product),
            event.action_id,
            event.attrs,
            ts - state.decay_epoch,
        )
        if ts > state.watermark:
            state.watermark = ts
        return Applied.APPLIED

    def apply_all(self, state: CustomerState, events: Iterable[Event]) -> list[Applied]:
        """Apply events in order, then forget what the watermark has left behind."""
        results = [self.apply(state, event) for event in events]
        self.prune(state)
        return results

    def bound_to(self, state: CustomerState, horizon: float) -> bool:
        """Bring a state whose latest event time is past `horizon` back to it; whether it did.

        `horizon` is the latest event time believable now: the caller's clock plus the
        allowed clock skew (`FeatureConfig.max_clock_skew_s`). A watermark past it was
        stored before events ahead of the clock were refused, or by a writer whose clock
        ran fast. Left as it is, it would refuse the customer's every event as late until
        that time comes, drop their event ids and daily buckets as too old, and keep the
        decayed sums referenced to that time, where today's events weigh nothing. So the
        watermark becomes the horizon, and the decayed sums are valued as of the old
        watermark (its events at age 0, the earlier ones decayed from there: no weight
        above 1) and referenced to the horizon's day. What the state counts (counts, sums,
        times, buckets, the event ids kept) is left as it is.
        """
        if state.watermark <= horizon:
            return False
        for index in self._decayed:
            exponent = min(0, state.decay_epoch - state.watermark) * self._inverse_half_lives[index]
            self._scale_decayed(state, index, 2.0**exponent)
        state.watermark = int(horizon)
        state.decay_epoch = int(horizon // SECONDS_PER_DAY) * SECONDS_PER_DAY
        state.prune_due = 0
        return True

    def prune(self, state: CustomerState) -> None:
        """Drop event ids and daily buckets too old to matter any more (idempotent).

        What is too old moves only when the watermark crosses a day boundary (its own, or
        that of the watermark minus the lateness), so until then there is nothing to do:
        a batch usually prunes each customer with one comparison. Events within the
        lateness never add a day that is already too old; merges reset `prune_due`.
        """
        watermark = state.watermark
        if not watermark or watermark < state.prune_due:
            return
        lateness = self._lateness
        oldest_ids_day = (watermark - lateness) // SECONDS_PER_DAY
        today = watermark // SECONDS_PER_DAY
        _drop_days_before(state.seen, oldest_ids_day)
        oldest_bucket = today - DAILY_RETENTION_DAYS + 1
        for index in self._daily:
            state.slots[index].drop_before(oldest_bucket)
        state.prune_due = min(
            (today + 1) * SECONDS_PER_DAY, (oldest_ids_day + 1) * SECONDS_PER_DAY + lateness
        )

    def _move_decay_epoch(self, state: CustomerState, epoch: int) -> None:
        """Rescale every decayed sum to a later reference time (each factor at most 1)."""
        for index in self._decayed:
            factor = 2.0 ** ((state.decay_epoch - epoch) * self._inverse_half_lives[index])
            self._scale_decayed(state, index, factor)
        state.decay_epoch = epoch

    @staticmethod
    def _scale_decayed(state: CustomerState, index: int, factor: float) -> None:
        """Multiply a decayed slot (one sum, or one per key) by `factor`."""
        slot = state.slots[index]
        if isinstance(slot, dict):
            for key in slot:
                slot[key] *= factor
        else:
            state.slots[index] = slot * factor

    def decay_factor(self, state: CustomerState | PartialState, index: int, now: float) -> float:
        """What a stored decayed sum is multiplied by to give its value at `now`.

        At most 1, so that no stored state can make a read overflow: a read before the
        sums' reference time (events ahead of `now`) takes them as they are at the
        reference instead of weighing them up by 2^(ahead / half-life). A state whose
        latest event time is further ahead of `now` than the allowed clock skew (stored
        before event times were bounded) is read as of that time, as `bound_to` values
        it: its latest events at age 0, none weighing more than 1.
        """
        if state.watermark - now > self._max_clock_skew_s:
            now = state.watermark
        return 2.0 ** (min(0, state.decay_epoch - now) * self._inverse_half_lives[index])

    # -- identity merges ------------------------------------------------------------------

    def merge(self, into: CustomerState, other: CustomerState) -> None:
        """Fold another identity's state into `into`, as if its events had been applied to it.

        Counts, sums, daily buckets and decayed sums add; first/last times take the
        min/max; latest values keep the later one; event ids are united. One
        approximation: purchase days both identities share that are older than the 90
        daily buckets are counted twice in the distinct-day count.
        """
        if not other.watermark:
            return
        if not into.decay_epoch:
            into.decay_epoch = other.decay_epoch
        elif (other.decay_epoch - into.decay_epoch) / self._min_half_life > MAX_DECAY_EXPONENT:
            # other's sums would be weighed up past the float range: move to its reference
            self._move_decay_epoch(into, other.decay_epoch)
        for index, feature in enumerate(self.stored):
            mine, theirs = into.slots[index], other.slots[index]
            if feature.kind is Kind.DAILY:
                mine.merge(theirs)
                continue
            combine = _COMBINE[feature.kind]
            factor = 1.0
            if feature.kind is Kind.DECAYED:
                factor = 2.0 ** (
                    (other.decay_epoch - into.decay_epoch) * self._inverse_half_lives[index]
                )
            if feature.key is None:
                if theirs is not None:
                    into.slots[index] = combine(mine, theirs * factor if factor != 1.0 else theirs)
                continue
            for key, value in theirs.items():
                mine[key] = combine(mine.get(key), value * factor if factor != 1.0 else value)
        for day, ids in other.seen.items():
            known = into.seen.setdefault(day, array("Q"))
            known.extend(digest for digest in ids if digest not in known)
        into.watermark = max(into.watermark, other.watermark)
        into.prune_due = 0  # the other state's days may be older than this one's
        self.prune(into)

    # -- the stored form ------------------------------------------------------------------

    def encode(self, state: CustomerState) -> bytes:
        """The MessagePack form kept in Redis."""
        seen = {day: ids.tobytes() for day, ids in state.seen.items()}
        slots = state.slots.copy()
        for index in self._daily:
            slots[index] = slots[index].packed()
        return self._encoder.encode([SCHEMA, state.watermark, state.decay_epoch, seen, *slots])

    def decode(self, raw: bytes) -> CustomerState:
        """A state from its stored form (this one or schema 1, converted); refuses others.

        Arrays are read as tuples: pairs are replaced, never changed in place, and the
        garbage collector stops tracking tuples of numbers. A value that is not a state of
        this registry raises ValueError saying how it differs.
        """
        try:
            items = self._decoder.decode(raw)
            unpacked = DailyBuckets.unpacked
        except msgspec.ValidationError as not_this_schema:
            items = self._decode_schema_1(raw, not_this_schema)
            unpacked = _daily_from_schema_1
        _, watermark, epoch, seen, *slots = items
        for index in self._daily:
            slots[index] = unpacked(slots[index])
        ids = {}
        for day, raw_ids in seen.items():
            ids[day] = array("Q")
            ids[day].frombytes(raw_ids)
        return CustomerState(watermark, epoch, ids, slots)

    def _decode_schema_1(self, raw: bytes, not_this_schema: msgspec.ValidationError) -> Any:
        """The items of a schema 1 state; ValueError saying why `raw` is not one of ours."""
        items = msgspec.msgpack.decode(raw)
        version = items[0] if isinstance(items, list) and items else None
        if version not in (SCHEMA, 1):
            raise ValueError(f"stored customer state has schema {version!r}, expected {SCHEMA}")
        features = len(items) - 4
        if features != len(self.stored):
            raise ValueError(
                f"stored customer state has {features} features, this registry {len(self.stored)}"
            )
        if version == SCHEMA:
            raise ValueError(f"stored customer state is malformed: {not_this_schema}")
        try:
            return self._schema_1_decoder.decode(raw)
        except msgspec.ValidationError as malformed:
            raise ValueError(
                f"stored customer state (schema 1) is malformed: {malformed}"
            ) from None


class SlotReader:
    """Reads a few slots of stored states without decoding the rest.

    Why: the base walk (features.tiers) reads four features of every customer, thousands
    of states a second on the worker that walks, and decoding whole states for that took
    more than twice as long (benchmarks/NOTES.md, "Freshness"): the slots after the last
    one chosen are skipped without building anything, those before it kept as undecoded
    bytes. Both schemas are read: they differ only in DAILY slots, which cannot be chosen.
    """

    def __init__(self, stored: tuple[StoredFeature, ...], indices: Iterable[int]) -> None:
        chosen = sorted(set(indices))
        if not chosen:
            raise ValueError("choose at least one slot to read")
        for index in chosen:
            if stored[index].kind is Kind.DAILY:
                raise ValueError(f"{stored[index].name}: DAILY slots cannot be read alone")
        fields: list[tuple[str, Any]] = [
            ("version", Literal[1, SCHEMA]),
            ("watermark", int),
            ("decay_epoch", int),
            ("seen", msgspec.Raw),
        ]
        fields += [
            (f"slot_{index}", _stored_type(stored[index], None) if index in chosen else msgspec.Raw)
            for index in range(chosen[-1] + 1)
        ]
        # array-like: a stored state is an array; its items past these fields are skipped
        prefix = msgspec.defstruct("StoredPrefix", fields, array_like=True)
        self._decoder = msgspec.msgpack.Decoder(prefix)
        self._fields = [(index, f"slot_{index}") for index in chosen]

    def read(self, raw: bytes) -> PartialState:
        """The chosen slots of one stored state; ValueError if it is not a state of ours."""
        try:
            prefix = self._decoder.decode(raw)
        except msgspec.ValidationError as malformed:
            raise ValueError(f"stored customer state is malformed: {malformed}") from None
        slots = {index: getattr(prefix, name) for index, name in self._fields}
        return PartialState(prefix.watermark, prefix.decay_epoch, slots)


def _daily_from_schema_1(stored: tuple[Any, ...]) -> DailyBuckets:
    """Daily buckets from schema 1's form: distinct days, first day, its units, and a map
    of day → [count, units]."""
    distinct_days, first_day, first_day_units, by_day = stored
    daily = DailyBuckets()
    for day, (count, units) in sorted(by_day.items()):
        daily.add(day, units, count)
    daily.distinct_days = distinct_days  # the history's, beyond the buckets kept
    daily.first_day, daily.first_day_units = first_day, first_day_units
    return daily


def _drop_days_before(by_day: dict[int, Any], oldest: int) -> None:
    """Remove the entries of days before `oldest` (usually none: checked without a loop)."""
    if by_day and min(by_day) < oldest:
        for day in [day for day in by_day if day < oldest]:
            del by_day[day]


def _add(current: Any, value: Any) -> Any:
    return value if current is None else current + value


def _earliest(current: Any, value: Any) -> Any:
    if not value:  # 0: never (a merged state that never saw such an event)
        return current
    return value if not current or value < current else current


def _larger(current: Any, value: Any) -> Any:
    """The later time, or the later [time, value] pair (ties: the larger value)."""
    return value if current is None or value > current else current


_COMBINE: dict[Kind, Callable[[Any, Any], Any]] = {
    Kind.COUNT: _add,
    Kind.SUM: _add,
    Kind.DECAYED: _add,
    Kind.FIRST_TIME: _earliest,
    Kind.LAST_TIME: _larger,
    Kind.LATEST: _larger,
}
