"""The simulator-scale benchmark on a small population (the figures, not their values)."""

from __future__ import annotations

from benchmarks import simulator_scale


def test_a_repeat_times_both_sizes_per_million_customers() -> None:
    figures = simulator_scale._one_repeat(2_000)
    assert figures["events_per_day"] > 2_000  # a few events per customer and day
    assert figures["day_s"] > 0
    assert figures["build_s"] > 0
    assert figures["day_s_per_million_customers"] == figures["day_s"] * 500
    assert figures["small_day_s_per_million_customers"] > 0
    assert figures["peak_rss_mib"] > 0
