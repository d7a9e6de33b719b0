"""The soak benchmark in a run of seconds: a real `nba up` system, every posted event processed."""

from __future__ import annotations

import pytest

from benchmarks import embedded_broker_soak


@pytest.mark.timeout(180)
def test_a_short_soak_processes_every_event_and_reports_both_windows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded_broker_soak, "QUICK", (8.0, 2.0, 2))
    monkeypatch.setattr(embedded_broker_soak, "RATE", 200)
    result = embedded_broker_soak.run(quick=True)
    figures = {name: series.median for name, series in result.figures.items()}
    assert figures["lost_events"] == 0
    assert figures["first_worker_events_per_s"] > 0
    assert figures["last_worker_events_per_s"] > 0
    assert figures["last_broker_rss_mb"] > 1
    assert figures["first_broker_cpu_share"] > 0
    assert len(result.series["samples"]) >= 5  # the start and a sample every 2 s
    assert result.ratio == pytest.approx(
        figures["last_worker_events_per_s"] / figures["first_worker_events_per_s"]
    )
