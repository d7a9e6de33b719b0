"""The benchmarks' pure helpers: medians of repeats, percentiles, result files, machine facts.

Fast and server-free: the benchmarks themselves are run with `python -m benchmarks.run`.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from benchmarks.common import (
    FIRST_TRAFFIC_DAY,
    SIMULATION_START,
    BenchmarkError,
    Result,
    Series,
    Target,
    batches,
    fold_history,
    format_figure,
    history_snapshot,
    machine_description,
    median_of,
    percentiles,
    restore_snapshot,
    simulated_bank,
    simulated_days,
    simulated_events,
    source_digest,
    work_tree_dirty,
)
from engine.core.settings import Settings
from features.events import EventType
from features.state import FeatureFold
from features.store import RedisFeatureStore


def test_median_of_collects_each_figure_over_the_repeats(capsys: pytest.CaptureFixture) -> None:
    repeats = iter([{"a": 3.0, "b": 10.0}, {"a": 1.0, "b": 30.0}, {"a": 2.0, "b": 20.0}])
    figures = median_of(3, lambda: next(repeats))
    assert figures == {"a": Series((3.0, 1.0, 2.0)), "b": Series((10.0, 30.0, 20.0))}
    assert figures["a"].median == 2.0
    assert figures["b"].median == 20.0
    assert "repeat 3/3" in capsys.readouterr().out


def test_median_of_an_even_number_of_repeats_is_the_mean_of_the_middle_two() -> None:
    assert Series((4.0, 1.0, 3.0, 2.0)).median == 2.5


def test_median_of_refuses_no_repeats_and_repeats_reporting_different_figures() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        median_of(0, lambda: {"a": 1.0})
    repeats = iter([{"a": 1.0}, {"b": 2.0}])
    with pytest.raises(BenchmarkError, match="same figures"):
        median_of(2, lambda: next(repeats))


def test_percentiles_interpolate_between_samples() -> None:
    values = [float(value) for value in range(1, 101)]  # 1..100
    p50, p99 = percentiles(values, 50, 99)
    assert p50 == pytest.approx(50.5)
    assert p99 == pytest.approx(99.01)
    with pytest.raises(ValueError, match="two values"):
        percentiles([1.0], 50)


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.0, "0"), (0.0123, "0.0123"), (1.5, "1.50"), (42.123, "42.1"), (123456.7, "123,457")],
)
def test_format_figure_keeps_three_significant_digits_below_100(value: float, text: str) -> None:
    assert format_figure(value) == text


def test_target_bounds() -> None:
    at_least = Target("events_per_s", at_least=50_000)
    assert at_least.met(50_000)
    assert not at_least.met(49_999)
    assert at_least.describe() == "events_per_s >= 50,000"
    at_most = Target("bytes", at_most=1536)
    assert at_most.met(1536)
    assert not at_most.met(1537)
    assert at_most.describe() == "bytes <= 1,536"


def make_result() -> Result:
    return Result(
        name="example",
        parameters={"events": 1000, "quick": True},
        figures={
            "subject_events_per_s": Series((8.0, 10.0, 9.0)),
            "baseline_events_per_s": Series((40.0, 36.0, 30.0)),
        },
        subject="subject_events_per_s",
        baseline="baseline_events_per_s",
        targets=[Target("subject_events_per_s", at_least=5.0)],
        notes=["a note"],
    )


def test_result_document_has_figures_medians_baseline_ratio_and_machine() -> None:
    moment = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    document = make_result().to_dict({"cpu_model": "test"}, moment)
    assert document == {
        "name": "example",
        "timestamp": "2026-03-02T12:00:00+00:00",
        "parameters": {"events": 1000, "quick": True},
        "figures": {
            "subject_events_per_s": {"repeats": [8.0, 10.0, 9.0], "median": 9.0},
            "baseline_events_per_s": {"repeats": [40.0, 36.0, 30.0], "median": 36.0},
        },
        "subject": {"figure": "subject_events_per_s", "median": 9.0},
        "baseline": {"figure": "baseline_events_per_s", "median": 36.0},
        "ratio": 0.25,
        "targets": [
            {
                "figure": "subject_events_per_s",
                "at_least": 5.0,
                "at_most": None,
                "median": 9.0,
                "met": True,
            }
        ],
        "notes": ["a note"],
        "machine": {"cpu_model": "test"},
    }


def test_result_writes_its_json_file_with_the_machine_description(tmp_path: Path) -> None:
    path = make_result().write(tmp_path)
    assert path == tmp_path / "example.json"
    assert [p.name for p in tmp_path.iterdir()] == ["example.json"]  # no temporary left
    document = orjson.loads(path.read_bytes())
    assert document["ratio"] == 0.25
    assert set(document["machine"]) >= {"cpu_model", "cores", "memory_mib", "os", "python"}
    datetime.fromisoformat(document["timestamp"])


def test_machine_description_names_cpu_memory_os_python_packages_and_revision() -> None:
    machine = machine_description()
    assert set(machine) == {
        "cpu_model",
        "cores",
        "cores_usable",
        "memory_mib",
        "os",
        "kernel",
        "python",
        "packages",
        "git",
        "load_average",
    }
    assert machine["cpu_model"]
    assert machine["cores"] >= 1
    assert 1 <= machine["cores_usable"] <= machine["cores"]
    assert machine["memory_mib"] > 0
    assert machine["python"].startswith("CPython 3.")
    assert machine["packages"]["faust-streaming"]
    assert machine["packages"]["redis"]
    assert set(machine["git"]) == {"revision", "dirty", "source_sha256"}
    assert len(machine["git"]["source_sha256"]) == 64
    assert machine["git"]["source_sha256"] == source_digest()  # same code, same digest
    assert len(machine["load_average"]) == 3
    orjson.dumps(machine)  # JSON-ready as it is


def test_only_changes_outside_the_benchmarks_outputs_make_a_work_tree_dirty(
    tmp_path: Path,
) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    for path in ("features/state.py", "README.md", "benchmarks/results/x.json"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("one\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    assert not work_tree_dirty(tmp_path)
    (tmp_path / "README.md").write_text("two\n")
    (tmp_path / "benchmarks/results/x.json").write_text("two\n")
    (tmp_path / "benchmarks/results/new.json").write_text("new\n")
    assert not work_tree_dirty(tmp_path)
    (tmp_path / "features/state.py").write_text("two\n")
    assert work_tree_dirty(tmp_path)


def test_simulated_events_are_whole_days_or_the_first_limit_of_the_traffic() -> None:
    three_days = simulated_events(50, days=3)
    times = [event.ts for event in three_days]
    assert times == sorted(times)
    opening_day = [e for e in three_days if e.ts.date() == SIMULATION_START.date()]
    assert {e.type for e in opening_day} >= {EventType.PRODUCT_OPENED, EventType.BALANCE}
    first = simulated_events(50, limit=200)
    assert len(first) == 200  # more than one day of 50 customers: days 1 and 2
    traffic = three_days[len(opening_day) :]
    assert [event.event_id for event in traffic[:200]] == [event.event_id for event in first]
    with pytest.raises(ValueError, match="either days or limit"):
        simulated_events(50)
    with pytest.raises(ValueError, match="either days or limit"):
        simulated_events(50, days=1, limit=10)


def test_batches_are_consecutive_slices() -> None:
    assert batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_the_events_after_a_history_are_the_days_that_follow_it() -> None:
    history = [
        event for day in simulated_days(simulated_bank(40), FIRST_TRAFFIC_DAY, 2) for event in day
    ]
    after = simulated_events(40, limit=30, first_day=FIRST_TRAFFIC_DAY + 2)
    assert history
    assert history + after == simulated_events(40, limit=len(history) + 30)


async def test_a_folded_history_is_in_the_store_as_the_stream_would_have_left_it(
    redis: Redis, settings: Settings
) -> None:
    days = list(simulated_days(simulated_bank(20), FIRST_TRAFFIC_DAY, 2))
    events = [event for day in days for event in day]
    assert await fold_history(redis, settings, days) == len(events)
    fold = FeatureFold(settings.feature_config())
    folded = RedisFeatureStore(redis, fold, key_prefix=settings.key_prefix)
    streamed = RedisFeatureStore(redis, fold, key_prefix=settings.key_prefix + "s:")
    await streamed.apply(events)  # one batch, as a worker would have received them
    customer = events[-1].customer_id
    folded_state = await redis.get(folded.state_key(customer))
    assert folded_state is not None
    assert folded_state == await redis.get(streamed.state_key(customer))


async def test_a_history_snapshot_puts_the_states_back_under_another_prefix(
    redis: Redis, settings: Settings
) -> None:
    days = list(simulated_days(simulated_bank(20), FIRST_TRAFFIC_DAY, 2))
    folded, states = await history_snapshot(settings, customers=20, days=2)
    assert folded == sum(len(day) for day in days)
    unprefixed = RedisFeatureStore(redis, FeatureFold(settings.feature_config()))
    customers = {event.customer_id for day in days for event in day}
    assert set(states) == {unprefixed.state_key(customer) for customer in customers}
    other = settings.key_prefix + "other:"
    await restore_snapshot(redis, states, other)
    for key, raw in states.items():
        assert await redis.get(other + key) == raw
        assert await redis.get(settings.key_prefix + key) == raw
