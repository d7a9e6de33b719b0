"""Daily buckets as arrays: any order of days, exact widening, windows, merges, stored form."""

from __future__ import annotations

import random

import pytest

from features.daily import DailyBuckets

TODAY = 20_500  # a day number (days since 1970-01-01), in 2026


def buckets_of(additions: list[tuple[int, int]]) -> DailyBuckets:
    daily = DailyBuckets()
    for day, units in additions:
        daily.add(day, units)
    return daily


def test_any_order_of_days_gives_the_buckets_of_the_sorted_order() -> None:
    additions = [(TODAY - random.Random(1).randrange(90), units) for units in range(1, 400)]
    in_order = buckets_of(sorted(additions))
    for seed in range(5):
        shuffled = additions.copy()
        random.Random(seed).shuffle(shuffled)
        assert buckets_of(shuffled) == in_order
    assert list(in_order.days) == sorted(set(in_order.days))
    assert in_order.distinct_days == len(in_order.days)
    assert sum(in_order.counts) == len(additions)
    assert sum(in_order.units) == sum(units for _, units in additions)
    first = min(day for day, _ in additions)
    assert in_order.first_day == first
    assert in_order.first_day_units == sum(units for day, units in additions if day == first)


def test_values_too_large_for_an_item_type_widen_the_array_and_stay_exact() -> None:
    daily = buckets_of([(TODAY, 10)] * 300)  # 300 events: past an unsigned byte
    daily.add(TODAY - 1, 2**40)  # past 32 bits
    daily.add(-40_000, 1)  # before 1870: past a signed 16-bit day
    assert daily.counts.typecode != "B"
    assert daily.units.typecode == "Q"
    assert daily.days.typecode != "h"
    assert list(daily.days) == [-40_000, TODAY - 1, TODAY]
    assert list(daily.counts) == [1, 1, 300]
    assert list(daily.units) == [1, 2**40, 3_000]
    assert DailyBuckets.unpacked(daily.packed()) == daily
    with pytest.raises(OverflowError, match="64 bits"):
        daily.add(TODAY, 2**64)


def test_windows_count_back_from_today_and_ignore_later_days() -> None:
    ages_and_units = [(0, 1), (6, 2), (7, 4), (29, 8), (-1, 16)]
    daily = buckets_of([(TODAY - age, units) for age, units in ages_and_units])
    assert daily.window(TODAY, 1) == (1, 1)
    assert daily.window(TODAY, 7) == (2, 3)
    assert daily.window(TODAY, 30) == (4, 15)
    assert daily.window(TODAY - 100, 30) == (0, 0)


def test_dropping_old_days_keeps_the_history_totals() -> None:
    daily = buckets_of([(TODAY - age, 5) for age in range(100)])
    daily.drop_before(TODAY - 89)
    assert list(daily.days) == list(range(TODAY - 89, TODAY + 1))
    assert len(daily.counts) == len(daily.units) == 90
    assert daily.distinct_days == 100
    assert daily.first_day == TODAY - 99


def test_merging_counts_shared_days_once() -> None:
    mine = [(TODAY - 3, 1), (TODAY - 1, 2), (TODAY - 1, 4)]
    theirs = [(TODAY - 5, 8), (TODAY - 1, 16), (TODAY, 32)]
    merged = buckets_of(mine)
    merged.merge(buckets_of(theirs))
    assert merged == buckets_of(mine + theirs)


def test_merging_adds_the_days_the_other_has_dropped() -> None:
    theirs = buckets_of([(TODAY - 200, 1), (TODAY - 1, 2)])
    theirs.drop_before(TODAY - 89)
    merged = buckets_of([(TODAY, 4)])
    merged.merge(theirs)
    assert merged.distinct_days == 3
    assert merged.first_day == TODAY - 200
    assert merged.first_day_units == 1
    assert list(merged.days) == [TODAY - 1, TODAY]


def test_the_stored_form_round_trips_and_refuses_bytes_that_do_not_fit() -> None:
    assert DailyBuckets.unpacked(DailyBuckets().packed()) == DailyBuckets()
    daily = buckets_of([(TODAY - 2, 70_000), (TODAY, 3)])
    packed = daily.packed()
    assert DailyBuckets.unpacked(packed) == daily
    distinct, first, first_units, count, days, counts, units = packed
    with pytest.raises(ValueError, match="does not hold 2 items"):
        DailyBuckets.unpacked((distinct, first, first_units, count, days, counts, units + b"\x00"))
    with pytest.raises(ValueError, match="for no buckets"):
        DailyBuckets.unpacked((distinct, first, first_units, 0, days, b"", b""))
