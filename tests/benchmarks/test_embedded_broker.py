"""The embedded-broker benchmark on a small partition: its figures, and that a fetch stays flat."""

from __future__ import annotations

import pytest

from benchmarks import embedded_broker


def test_a_fetch_costs_the_broker_no_more_on_a_partition_holding_more_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(embedded_broker, "ROUNDS", 50)
    figures = embedded_broker._one_repeat(3_000)
    # noida-db finds an offset without listing the partition's batches
    filled = figures["filled_broker_cpu_us_per_round"]
    assert filled < 2 * figures["fresh_broker_cpu_us_per_round"]
    assert figures["half_filled_broker_cpu_us_per_round"] < 2 * filled
    assert figures["filled_round_wall_ms"] > 0
    assert figures["broker_rss_bytes_per_stored_batch"] > embedded_broker.RECORD_BYTES
