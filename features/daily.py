"""A DAILY feature's per-day counts and amounts, kept as three parallel arrays.

A customer who buys most days has ~90 buckets. As a dict of (count, units) tuples they
were half of the state's bytes and most of its encoding time: MessagePack walked 90
keys and 90 tuples per encode. As arrays — the days in ascending order, the counts and
the amounts (in 1/AMOUNT_SCALE units) at the same positions — the stored form is three
byte strings, copied rather than walked, and smaller than before (1,006 against 1,188 B
for a 90-day state of the simulated bank). Each array starts with the narrowest item type
and is widened, for good, the first time a value does not fit: exact for any count or
amount up to 2^64 - 1.

The bytes are in the machine's byte order, as the event ids beside them
(features.state): a store is read and written by machines of one byte order.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from itertools import pairwise

#: Item types from narrow to wide: days may be before 1970 (signed), counts and amounts not.
_DAY_TYPES = "hiq"
_NUMBER_TYPES = "BHIQ"
_WIDER = {narrow: wide for types in (_DAY_TYPES, _NUMBER_TYPES) for narrow, wide in pairwise(types)}
#: Per ladder of item types, item size in bytes → type: a stored array's type follows from
#: its length and the number of buckets.
_TYPE_BY_SIZE = {
    types: {array(code).itemsize: code for code in types} for types in (_DAY_TYPES, _NUMBER_TYPES)
}

#: The stored form: distinct days, first day, its units, the number of buckets, then the
#: three arrays' bytes (each array's item size is its length over the number of buckets).
Packed = tuple[int, int | None, int, int, bytes, bytes, bytes]


def _wider(values: array) -> array:
    """A copy of `values` with the next wider item type (OverflowError past the widest)."""
    if values.typecode not in _WIDER:
        raise OverflowError(f"a daily bucket's value does not fit in 64 bits: {values!r}")
    return array(_WIDER[values.typecode], values)


def _set(values: array, position: int, value: int) -> array:
    """`values` with `value` at `position`, widened if it does not fit.

    A failed store leaves an array unchanged, so it is retried on the wider copy.
    """
    try:
        values[position] = value
    except OverflowError:
        return _set(_wider(values), position, value)
    return values


def _insert(values: array, position: int, value: int) -> array:
    """`values` with `value` inserted before `position`, widened if it does not fit."""
    try:
        values.insert(position, value)
    except OverflowError:
        return _insert(_wider(values), position, value)
    return values


def _array_from(raw: bytes, items: int, types: str) -> array:
    """The array of `items` items stored as `raw`, of the type of `types` their size gives."""
    if not items:
        if raw:
            raise ValueError(f"a stored daily array of {len(raw)} B for no buckets")
        return array(types[0])
    size, rest = divmod(len(raw), items)
    typecode = _TYPE_BY_SIZE[types].get(size)
    if typecode is None or rest:
        raise ValueError(f"a stored daily array of {len(raw)} B does not hold {items} items")
    values = array(typecode)
    values.frombytes(raw)
    return values


@dataclass(slots=True)
class DailyBuckets:
    """Count and units per UTC day, the number of distinct days ever and the first day.

    `distinct_days`, `first_day` and `first_day_units` cover the whole history; the
    buckets only the days not yet dropped (`drop_before`).
    """

    distinct_days: int = 0
    first_day: int | None = None
    first_day_units: int = 0
    days: array = field(default_factory=lambda: array(_DAY_TYPES[0]))
    counts: array = field(default_factory=lambda: array(_NUMBER_TYPES[0]))
    units: array = field(default_factory=lambda: array(_NUMBER_TYPES[0]))

    def add(self, day: int, units: int, count: int = 1) -> None:
        """Count `count` events of `units` in total on `day` (any order of days)."""
        days = self.days
        if days and days[-1] == day:  # the usual case: another event of the latest day
            self._add_at(len(days) - 1, count, units)
        else:
            self._add_to_day(day, count, units)
        self._note_first_day(day, units)

    def _add_to_day(self, day: int, count: int, units: int) -> None:
        position = bisect_left(self.days, day)
        if position < len(self.days) and self.days[position] == day:
            self._add_at(position, count, units)
        else:
            self._insert(position, day, count, units)

    def _note_first_day(self, day: int, units: int) -> None:
        if self.first_day is None or day < self.first_day:
            self.first_day, self.first_day_units = day, units
        elif day == self.first_day:
            self.first_day_units += units

    def _add_at(self, position: int, count: int, units: int) -> None:
        self.counts = _set(self.counts, position, self.counts[position] + count)
        self.units = _set(self.units, position, self.units[position] + units)

    def _insert(self, position: int, day: int, count: int, units: int) -> None:
        self.days = _insert(self.days, position, day)
        self.counts = _insert(self.counts, position, count)
        self.units = _insert(self.units, position, units)
        self.distinct_days += 1

    def merge(self, other: DailyBuckets) -> None:
        """Add another identity's buckets, as if its events had been counted here.

        Days the two share within the buckets count once in `distinct_days`; days only
        `other`'s history remembers (already dropped) cannot be told apart and add up.
        """
        for day, count, units in zip(other.days, other.counts, other.units, strict=True):
            self._add_to_day(day, count, units)
        self.distinct_days += other.distinct_days - len(other.days)
        if other.first_day is not None:
            self._note_first_day(other.first_day, other.first_day_units)

    def drop_before(self, oldest: int) -> None:
        """Forget the buckets of days before `oldest` (the history's totals stay)."""
        if self.days and self.days[0] < oldest:
            end = bisect_left(self.days, oldest)
            del self.days[:end], self.counts[:end], self.units[:end]

    def window(self, today: int, days: int) -> tuple[int, int]:
        """Count and units over the `days` days up to and including `today`."""
        start = bisect_left(self.days, today - days + 1)
        end = bisect_right(self.days, today)
        return sum(self.counts[start:end]), sum(self.units[start:end])

    def packed(self) -> Packed:
        """The stored form: plain values and byte strings, for MessagePack."""
        return (
            self.distinct_days,
            self.first_day,
            self.first_day_units,
            len(self.days),
            self.days.tobytes(),
            self.counts.tobytes(),
            self.units.tobytes(),
        )

    @classmethod
    def unpacked(cls, packed: Packed) -> DailyBuckets:
        """Buckets from their stored form; each array's item type follows from its length."""
        distinct_days, first_day, first_day_units, buckets, raw_days, raw_counts, raw_units = packed
        days = _array_from(raw_days, buckets, _DAY_TYPES)
        counts = _array_from(raw_counts, buckets, _NUMBER_TYPES)
        units = _array_from(raw_units, buckets, _NUMBER_TYPES)
        return cls(distinct_days, first_day, first_day_units, days, counts, units)
