"""The decision benchmark's in-process part on the session's real servers, at a tiny size.

It times the API's own code (`Services.next_best_actions`, the route, the app through
ASGI); this checks that path runs and yields every figure the report quotes. The
benchmark itself runs with `python -m benchmarks.decision_latency [--quick]`.
"""

from __future__ import annotations

import random

from benchmarks.common import simulated_events
from benchmarks.decision_latency import _in_process, _load
from engine.core.settings import Settings


async def test_the_in_process_figures_time_the_apis_decision(settings: Settings) -> None:
    events = simulated_events(20, days=2)
    await _load(settings, events)
    known = sorted({event.customer_id for event in events})
    figures = await _in_process(settings, known, 20, random.Random(1))
    assert set(figures) == {
        f"{name}_{percentile}_us"
        for name in ("asgi", "handler", "next_best", "state_read")
        for percentile in ("p50", "p99")
    }
    assert all(value > 0 for value in figures.values())
    # a decision does more than read the customer's state
    assert figures["next_best_p50_us"] > figures["state_read_p50_us"]
