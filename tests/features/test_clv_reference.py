"""Streaming RFM equals a batch computation of the CLV-literature definitions at any cut-off.

The batch reference follows `lifetimes.utils.summary_data_from_transaction_data` with
daily periods: transactions are summed per customer and UTC day; `frequency` is the
number of days with a purchase minus one, `recency` the days from the first to the last
such day, `T` the days from the first to the cut-off day, `monetary_value` the mean of
the daily sums of the repeat days (0 without a repeat day).
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime

import pytest

from features.config import SECONDS_PER_DAY, FeatureConfig
from features.events import Event
from features.reading import read_features
from features.state import CustomerState, FeatureFold

START = datetime(2025, 12, 1, tzinfo=UTC).timestamp()
FOLD = FeatureFold(FeatureConfig())


def transaction_log(seed: int, customers: int, days: int) -> list[tuple[str, float, float]]:
    """(customer, time, amount) in time order: bursty buyers, several purchases some days."""
    rng = random.Random(seed)
    log = []
    for c in range(customers):
        rate = rng.choice([0.05, 0.2, 0.6, 1.5])
        start = rng.randrange(0, days // 2)
        for day in range(start, days):
            for _ in range(sum(1 for _ in range(4) if rng.random() < rate / 4)):
                at = START + day * SECONDS_PER_DAY + rng.randrange(0, SECONDS_PER_DAY)
                log.append((f"C{c}", at, round(rng.lognormvariate(3, 1), 2)))
    log.sort(key=lambda row: row[1])
    return log


def batch_summary(log: list[tuple[str, float, float]], cutoff: float) -> dict[str, dict]:
    """The CLV summary per customer from the whole log up to `cutoff` (the reference)."""
    daily: dict[str, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for customer, at, amount in log:
        if at <= cutoff:
            daily[customer][int(at // SECONDS_PER_DAY)] += amount
    cutoff_day = int(cutoff // SECONDS_PER_DAY)
    summary = {}
    for customer, sums in daily.items():
        days = sorted(sums)
        repeats = [sums[day] for day in days[1:]]
        summary[customer] = {
            "frequency": len(days) - 1,
            "recency": days[-1] - days[0],
            "T": cutoff_day - days[0],
            "monetary_value": sum(repeats) / len(repeats) if repeats else 0.0,
        }
    return summary


def streaming_summary(log: list[tuple[str, float, float]], cutoff: float) -> dict[str, dict]:
    """The same figures read from states the events were streamed into, one at a time."""
    states: dict[str, CustomerState] = {}
    for index, (customer, at, amount) in enumerate(log):
        if at > cutoff:
            break
        event = Event.model_validate(
            {
                "event_id": f"t{index}",
                "customer_id": customer,
                "type": "transaction",
                "channel": "pos",
                "ts": at,
                "amount": amount,
            }
        )
        FOLD.apply(states.setdefault(customer, FOLD.new_state()), event)
    summary = {}
    for customer, state in states.items():
        values = read_features(FOLD, state, cutoff)
        summary[customer] = {
            "frequency": values["clv_frequency"],
            "recency": values["clv_recency_days"],
            "T": values["clv_t_days"],
            "monetary_value": values["clv_monetary"],
        }
    return summary


@pytest.mark.parametrize("cutoff_day", [20, 75, 140, 199])
def test_streaming_rfm_equals_the_batch_reference(cutoff_day: int) -> None:
    log = transaction_log(seed=cutoff_day, customers=60, days=200)
    cutoff = START + cutoff_day * SECONDS_PER_DAY + 43_200
    expected = batch_summary(log, cutoff)
    actual = streaming_summary(log, cutoff)
    assert actual.keys() == expected.keys()
    assert len(expected) >= 5
    for customer, reference in expected.items():
        got = actual[customer]
        assert got["frequency"] == reference["frequency"], customer
        assert got["recency"] == reference["recency"], customer
        assert got["T"] == reference["T"], customer
        assert got["monetary_value"] == pytest.approx(reference["monetary_value"], abs=1e-9)


def test_a_customer_with_one_purchase_day_has_no_repeat_value() -> None:
    log = [("C1", START + 100, 10.0), ("C1", START + 200, 5.0)]
    summary = streaming_summary(log, START + 3 * SECONDS_PER_DAY)["C1"]
    assert summary == {"frequency": 0, "recency": 0, "T": 3, "monetary_value": 0.0}
