"""Drift detection on accept streams with and without a change."""

from __future__ import annotations

import doctest
import pickle
import random

import pytest

import models.drift
from models.drift import DriftAlert, DriftDetector


def answers(rates: list[float], seed: int) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < rate for rate in rates]


def feed(detector: DriftDetector, action_id: str, stream: list[bool]) -> list[DriftAlert]:
    alerts = []
    for n, accepted in enumerate(stream):
        alert = detector.update(action_id, accepted, ts=1_000.0 + n)
        if alert is not None:
            alerts.append(alert)
    return alerts


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_change_in_one_actions_accept_rate_raises_one_alert_saying_what_changed(
    seed: int,
) -> None:
    detector = DriftDetector()
    steady = feed(detector, "steady", answers([0.2] * 3000, seed))
    alerts = feed(detector, "shifting", answers([0.05] * 3000 + [0.30] * 3000, seed))
    assert steady == []
    [alert] = alerts
    assert alert.action_id == "shifting"
    assert 3000 < alert.outcome < 3600  # soon after the change
    assert alert.model_outcome == 3000 + alert.outcome
    assert alert.ts == 1_000.0 + alert.outcome - 1
    assert alert.accept_rate_before == pytest.approx(0.05, abs=0.015)
    assert alert.accept_rate_before < alert.accept_rate_after
    assert alert.outcomes_before + alert.outcomes_after <= alert.outcome
    assert "drift in the accept rate of 'shifting'" in alert.describe()
    report = detector.report()
    assert (report["detected"], report["by_action"]) == (1, {"shifting": 1})
    [shown] = report["alerts"]
    assert shown["accept_rate_after"] == alert.accept_rate_after
    assert shown["outcomes_since"] == 6000 - alert.outcome
    assert shown["accept_rate_since"] == pytest.approx(0.30, abs=0.03)  # the new rate


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_steady_streams_raise_no_alert(seed: int) -> None:
    detector = DriftDetector()
    for action_id, rate in [("a", 0.03), ("b", 0.2), ("c", 0.5)]:
        assert feed(detector, action_id, answers([rate] * 6000, seed)) == []
    assert detector.report()["detected"] == 0
    assert detector.report()["alerts"] == []


def test_every_detection_is_counted_and_the_latest_alerts_kept_newest_first() -> None:
    detector = DriftDetector(kept_alerts=2)
    rates = ([0.02] * 2000 + [0.5] * 2000) * 3
    alerts = feed(detector, "a", answers(rates, 5))
    assert len(alerts) >= 3
    report = detector.report()
    assert report["detected"] == len(alerts)
    assert [item["outcome"] for item in report["alerts"]] == [a.outcome for a in alerts[:-3:-1]]


def test_a_restored_detector_carries_on_as_the_original() -> None:
    stream = answers([0.05] * 2000 + [0.4] * 1000, 6)
    detector = DriftDetector()
    feed(detector, "a", stream[:1500])
    restored = pickle.loads(pickle.dumps(detector))
    assert feed(restored, "a", stream[1500:]) == feed(detector, "a", stream[1500:])


def test_the_module_example_runs() -> None:
    result = doctest.testmod(models.drift)
    assert result.attempted > 0
    assert result.failed == 0
