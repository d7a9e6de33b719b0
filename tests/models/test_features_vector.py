"""Features → learner input: the scales, "never", categories, channels and purity."""

from __future__ import annotations

import doctest
import math

import pytest

import models.features_vector
from features.events import Channel
from features.reading import default_features
from models.features_vector import SECONDS_PER_DAY, Transform, transform_of, vectorise

NOW = 1_767_605_400.0  # 2026-01-05T09:30:00Z


def test_a_time_becomes_log_days_since_now_with_a_never_flag() -> None:
    x = vectorise({"last_seen_ts": NOW - 6 * SECONDS_PER_DAY}, now=NOW)
    assert x == {"last_seen_days": pytest.approx(math.log1p(6.0)), "last_seen_never": 0.0}


def test_a_never_seen_time_is_flagged_and_has_no_days() -> None:
    assert vectorise({"ch_atm_last_ts": 0.0}, now=NOW) == {"ch_atm_last_never": 1.0}


def test_a_time_after_now_counts_as_just_now() -> None:
    assert vectorise({"last_seen_ts": NOW + 3_600}, now=NOW)["last_seen_days"] == 0.0


def test_counts_and_amounts_are_log1p_keeping_the_sign() -> None:
    x = vectorise({"txn_count": 9, "txn_amount": 1_000.0, "refund_amount": -1_000.0}, now=NOW)
    assert x == {
        "txn_count": pytest.approx(math.log1p(9)),
        "txn_amount": pytest.approx(math.log1p(1_000)),
        "refund_amount": pytest.approx(-math.log1p(1_000)),
    }


def test_other_features_pass_through_as_floats() -> None:
    x = vectorise({"age": 42, "risk_score": 0.25}, now=NOW)
    assert x == {"age": 42.0, "risk_score": 0.25}
    assert all(type(value) is float for value in x.values())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_is_treated_as_missing(bad: float) -> None:
    assert vectorise({"txn_count": bad, "last_seen_ts": bad, "age": bad}, now=NOW) == {}


def test_the_channel_is_one_hot_over_every_channel() -> None:
    x = vectorise({}, now=NOW, channel=Channel.MOBILE)
    assert set(x) == {f"channel_{channel.value}" for channel in Channel}
    assert x["channel_mobile"] == 1.0
    assert sum(x.values()) == 1.0


def test_it_is_pure() -> None:
    features = {"txn_count": 3, "last_seen_ts": NOW - 100.0, "first_seen_ts": 0.0}
    copy = dict(features)
    first = vectorise(features, now=NOW, channel=Channel.BRANCH)
    assert features == copy
    assert vectorise(features, now=NOW, channel=Channel.BRANCH) == first


@pytest.mark.parametrize(
    ("name", "transform"),
    [
        ("last_seen_ts", Transform.RECENCY),
        ("event_count", Transform.LOG),
        ("txn_amount", Transform.LOG),
        ("age", Transform.RAW),
        ("ts_source", Transform.RAW),
    ],
)
def test_the_transform_goes_by_suffix(name: str, transform: Transform) -> None:
    assert transform_of(name) is transform


def test_every_vector_shares_the_same_name_objects() -> None:
    # The learner looks every name up in its own dicts: the same object needs no compare.
    features = {"lifecycle_stage": "new", "last_seen_ts": NOW - 100.0, "first_seen_ts": 0.0}
    first = vectorise(features, now=NOW, channel=Channel.WEB)
    second = vectorise({**features, "first_seen_ts": NOW - 9.0}, now=NOW + 5.0)
    shared = [name for name in first if name in second]
    assert len(shared) == 9  # 6 stages, last_seen ×2, first_seen_never
    assert all(any(name is other for other in second) for name in shared)


def test_a_category_becomes_one_indicator() -> None:
    x = vectorise({"lifecycle_stage": "at_risk", "txn_count": 0}, now=NOW)
    stages = {name: value for name, value in x.items() if name.startswith("lifecycle_stage_")}
    assert stages["lifecycle_stage_at_risk"] == 1.0
    assert sum(stages.values()) == 1.0
    assert len(stages) == 6  # every stage is emitted, 0.0 when not the customer's
    assert vectorise({"unknown_kind": "x"}, now=NOW) == {"unknown_kind_x": 1.0}


def test_a_new_customer_vectorises_to_finite_small_numbers() -> None:
    x = vectorise(default_features(), now=NOW, channel=Channel.WEB)
    assert x, "a new customer has learner input"
    assert all(math.isfinite(value) and abs(value) <= 20.0 for value in x.values())
    never_flags = [name for name in x if name.endswith("_never")]
    assert never_flags
    assert all(x[name] == 1.0 for name in never_flags)


def test_the_module_example_runs() -> None:
    result = doctest.testmod(models.features_vector)
    assert result.attempted > 0
    assert result.failed == 0
