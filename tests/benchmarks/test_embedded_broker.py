"""The embedded-broker benchmark on a small partition: it measures what it says.

Its figures' ratio is the benchmark's business (benchmarks/results, NOTES.md): the broker's
CPU per round is read from /proc in clock ticks, too coarse and too noisy on a shared
machine for a test to compare one against another.
"""

from __future__ import annotations

import pytest

from benchmarks import embedded_broker


def test_a_repeat_fills_a_partition_and_times_rounds_on_it_and_on_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded_broker, "ROUNDS", 50)
    figures = embedded_broker._one_repeat(3_000)
    assert set(figures) == {
        "filled_broker_cpu_us_per_round",
        "fresh_broker_cpu_us_per_round",
        "half_filled_broker_cpu_us_per_round",
        "filled_round_wall_ms",
        "fresh_round_wall_ms",
        "broker_rss_bytes_per_stored_batch",
    }
    assert all(value >= 0 for value in figures.values())
    assert figures["filled_round_wall_ms"] > 0
    assert figures["fresh_round_wall_ms"] > 0
    # the broker holds the batches the repeat stored: memory grows with them
    assert figures["broker_rss_bytes_per_stored_batch"] > embedded_broker.RECORD_BYTES
