"""The feature-serving benchmark: the Feast table built from our features, the equality check,
and (when Feast is installed) a tiny materialisation on the test's Valkey read back equal.

The benchmark itself runs with `python -m benchmarks.feature_serving`.
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from redis.asyncio import Redis

from benchmarks.common import SIMULATION_START, simulated_events
from benchmarks.feature_serving import (
    FEAST_MISSING,
    REL_TOLERANCE,
    FeatureTable,
    PeerNotInstalled,
    feast_installed,
    feast_store,
    feature_table,
    load_features,
    mismatches,
    read_through_feast,
    run,
    timed_reads,
)
from engine.core.settings import Settings
from features.reading import read_features
from features.state import FeatureFold


def test_numbers_become_typed_columns_and_strings_and_bools_are_left_out() -> None:
    table = feature_table(
        {
            "C2": {"logins": 3, "balance": 10.5, "spend": 2, "stage": "active", "flag": True},
            "C1": {"logins": 0, "balance": 0.0, "spend": 1.25, "stage": "prospect", "flag": 0},
        }
    )
    assert table.customer_ids == ("C2", "C1")  # the order given, one row each
    assert table.columns == {"logins": [3, 0], "balance": [10.5, 0.0], "spend": [2.0, 1.25]}
    assert table.dtypes == {"logins": int, "balance": float, "spend": float}
    assert all(type(value) is float for value in table.columns["spend"])  # one type a column
    assert table.skipped == ("stage", "flag")


def test_a_table_needs_customers_with_the_same_features() -> None:
    with pytest.raises(ValueError, match="no customers"):
        feature_table({})
    with pytest.raises(ValueError, match="same features"):
        feature_table({"C1": {"a": 1, "b": 2}, "C2": {"b": 2, "a": 1}})


def test_our_profile_loses_only_its_categorical_strings() -> None:
    fold = FeatureFold(Settings().feature_config())
    now = (SIMULATION_START + timedelta(days=2)).timestamp()
    events = simulated_events(20, days=2)
    customer_id = events[0].customer_id
    state = fold.new_state()
    for event in events:
        if event.customer_id == customer_id:
            fold.apply(state, event)
    features = {
        customer_id: read_features(fold, state, now),
        "never-seen": read_features(fold, None, now),
    }
    table = feature_table(features)
    strings = {name for name, value in features[customer_id].items() if isinstance(value, str)}
    assert strings  # the profile has categorical features, e.g. lifecycle_stage
    assert set(table.skipped) == strings
    assert len(table.columns) + len(strings) == len(features[customer_id])


def _table() -> FeatureTable:
    return FeatureTable(
        customer_ids=("C1", "C2"),
        columns={"logins": [3, 4], "balance": [1000.0, 0.0]},
        dtypes={"logins": int, "balance": float},
        skipped=(),
    )


def test_equal_values_match_and_floats_within_the_tolerance_too() -> None:
    close = 1000.0 * (1 + REL_TOLERANCE / 2)
    served = {"C1": {"logins": 3, "balance": close}, "C2": {"logins": 4, "balance": 0.0}}
    assert mismatches(_table(), served) == []


def test_every_differing_value_and_missing_customer_is_reported() -> None:
    far = 1000.0 * (1 + REL_TOLERANCE * 10)
    served = {"C1": {"logins": 3.0, "balance": far}}  # an int served as a float differs too
    assert mismatches(_table(), served) == [
        "C1.logins: expected 3, served 3.0",
        f"C1.balance: expected 1000.0, served {far!r}",
        "C2: not served",
    ]
    assert mismatches(_table(), {"C1": {}, "C2": {"logins": 4, "balance": None}}) == [
        "C1.logins: expected 3, served None",
        "C1.balance: expected 1000.0, served None",
        "C2.balance: expected 0.0, served None",
    ]


def test_without_feast_the_benchmark_is_skipped_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("benchmarks.feature_serving.feast_installed", lambda: False)
    with pytest.raises(PeerNotInstalled, match="Feast is not installed"):
        run(quick=True)
    assert "bench" in FEAST_MISSING


@pytest.mark.skipif(not feast_installed(), reason="Feast (the `bench` extra) is not installed")
async def test_feast_serves_our_values_from_the_same_valkey(
    settings: Settings, redis: Redis, unique: str, tmp_path: Path
) -> None:
    now = (SIMULATION_START + timedelta(days=2)).timestamp()
    table = feature_table(await load_features(settings, simulated_events(15, days=2), now))
    project = f"feast_{unique}"
    with feast_store(settings, tmp_path, table, now, project=project) as store:
        assert mismatches(table, read_through_feast(store, table)) == []
        assert [key async for key in redis.scan_iter(match=f"*{project}*", count=1_000)]
        figures = await timed_reads(settings, store, table, now, 4, random.Random(0))
    assert set(figures) == {"feast_p50_us", "feast_p99_us", "ours_p50_us", "ours_p99_us"}
    assert all(value > 0 for value in figures.values())
    assert [key async for key in redis.scan_iter(match=f"*{project}*", count=1_000)] == []
