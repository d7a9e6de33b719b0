"""The freshness benchmark's pure parts: pacing, polling, probe bookkeeping, lag, figures.

Server-free and fast (one local socket for the HTTP client's reconnect); the benchmark
itself runs with `python -m benchmarks.freshness`.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from benchmarks.common import BenchmarkError, simulated_bank, simulated_events
from benchmarks.freshness import (
    MIN_POLL_DELAY_S,
    POLL_DELAY_FRACTION,
    BackgroundSource,
    CodecClock,
    KeepAliveClient,
    Pacer,
    PhaseOutcome,
    Probe,
    ProbeBook,
    Seen,
    deployment_order,
    deployment_prefix,
    growth,
    lag,
    latency_figures,
    load_figures,
    poll_delay,
    rate_prefix,
    shows,
    sustained,
)
from features.config import FeatureConfig
from features.events import Event, EventType
from features.state import FeatureFold


def test_the_pacer_sends_what_the_rate_made_due_since_the_start() -> None:
    pacer = Pacer(10_000)
    assert pacer.due(0.0, 0) == 0
    assert pacer.due(0.02, 0) == 200
    assert pacer.due(0.04, 200) == 200
    assert pacer.due(0.0999, 400) == 599  # whole events only: the rest is due next tick


def test_the_pacer_catches_up_after_a_late_tick_and_never_asks_for_less_than_nothing() -> None:
    pacer = Pacer(2_000)
    assert pacer.due(1.0, 100) == 1_900  # a stalled producer sends the backlog at once
    assert pacer.due(1.0, 2_500) == 0


def test_polls_are_a_few_ms_apart_then_a_fraction_of_the_wait() -> None:
    assert poll_delay(0.0) == MIN_POLL_DELAY_S
    assert poll_delay(MIN_POLL_DELAY_S / POLL_DELAY_FRACTION / 2) == MIN_POLL_DELAY_S
    assert poll_delay(3.0) == pytest.approx(3.0 * POLL_DELAY_FRACTION)


def test_a_probe_customer_carries_one_probe_at_a_time_and_counts_its_events() -> None:
    book = ProbeBook(["p0", "p1"])
    first, second = book.take(), book.take()
    assert first == Probe(0, "p0", 1)
    assert second == Probe(1, "p1", 1)
    assert book.take() is None  # every customer busy: the probe is skipped
    assert first is not None
    book.release(first)
    assert book.take() == Probe(0, "p0", 2)  # its second event: event_count 2 shows it


def test_the_customer_free_longest_is_probed_next() -> None:
    book = ProbeBook(["p0", "p1", "p2"])
    probes = [book.take() for _ in range(3)]
    for probe in reversed(probes):
        assert probe is not None
        book.release(probe)
    assert [probe.customer_id for probe in (book.take(), book.take()) if probe] == ["p2", "p1"]


def test_releasing_a_probe_twice_or_duplicate_customers_are_errors() -> None:
    book = ProbeBook(["p0"])
    probe = book.take()
    assert probe is not None
    book.release(probe)
    with pytest.raises(ValueError, match="not in flight"):
        book.release(probe)
    with pytest.raises(ValueError, match="distinct"):
        ProbeBook(["p0", "p0"])
    with pytest.raises(ValueError, match="at least one"):
        ProbeBook([])


def test_a_probe_event_is_a_valid_login_unique_per_customer_and_count() -> None:
    event = Probe(3, "probe-03", 7).event(1_795_000_000.25)
    assert event.type is EventType.LOGIN
    assert event.customer_id == "probe-03"
    assert event.event_id == "probe-03-7"
    assert event.epoch_seconds == 1_795_000_000.25
    assert Event.model_validate(event.to_wire()) == event


def _profile(event_count: int) -> bytes:
    return orjson.dumps({"customer_id": "p0", "features": {"event_count": event_count}})


def test_an_answer_shows_the_probe_once_the_event_count_reaches_it() -> None:
    probe = Probe(0, "p0", 3)
    assert not shows(404, b'{"detail":"no events seen"}', probe)
    assert not shows(200, _profile(2), probe)
    assert shows(200, _profile(3), probe)
    assert shows(200, _profile(4), probe)
    with pytest.raises(BenchmarkError, match="500"):
        shows(500, b"boom", probe)


def test_lag_and_its_growth() -> None:
    assert lag(produced=1_000, processed=400) == 600
    keeping_up = [(t / 4, 500 + (50 if t % 2 else -50)) for t in range(40)]
    assert growth(keeping_up) == pytest.approx(0.0, abs=30.0)
    falling_behind = [(100.0 + t / 4, 3_000 * t / 4) for t in range(40)]
    assert growth(falling_behind) == pytest.approx(3_000.0)
    with pytest.raises(ValueError, match="two samples"):
        growth([(0.0, 1)])
    with pytest.raises(ValueError, match="span some time"):
        growth([(1.0, 1), (1.0, 5)])


def test_a_rate_is_sustained_when_the_lag_grows_by_under_two_percent_of_it() -> None:
    assert sustained(10_000, 150.0)
    assert sustained(10_000, -40.0)
    assert not sustained(10_000, 3_000.0)


def test_latency_figures_are_percentiles_max_and_counts() -> None:
    seen = [Seen(float(ms), 0.0) for ms in range(1, 101)]
    figures = latency_figures("floor", seen, skipped=4)
    assert figures["floor_p50_ms"] == pytest.approx(50.5)
    assert figures["floor_p90_ms"] == pytest.approx(90.1)
    assert figures["floor_p99_ms"] == pytest.approx(99.01)
    assert figures["floor_max_ms"] == 100.0
    assert figures["floor_probes"] == 100.0
    assert figures["floor_probes_skipped"] == 4.0


def test_load_figures_rates_lag_late_probes_and_cpu_shares() -> None:
    outcome = PhaseOutcome(
        seen=[Seen(10.0, 5.0), Seen(20.0, 12.5), Seen(30.0, 13.0)],
        skipped=0,
        sent=20_000,
        load_s=2.0,
        load_end=12.0,
        observed_s=2.5,
        processed=15_000,
        lag_end=5_000,
        lag_growth=2_400.0,
        drain_s=0.7,
        cpu_seconds={"worker": 1.5, "api": 0.25},
    )
    figures = load_figures("at_10k", outcome)
    assert figures == {
        "at_10k_sent_events_per_s": 10_000.0,
        "at_10k_worker_events_per_s": 6_000.0,
        "at_10k_lag_end_events": 5_000.0,
        "at_10k_lag_growth_events_per_s": 2_400.0,
        "at_10k_drain_s": 0.7,
        "at_10k_probes_after_load": 2.0,
        "at_10k_worker_cpu_share": 0.6,
        "at_10k_api_cpu_share": 0.1,
    }
    with pytest.raises(ValueError, match="loaded phase"):
        load_figures("floor", PhaseOutcome(seen=[], skipped=0))


@pytest.mark.parametrize(
    ("rate", "prefix"), [(10_000, "at_10k"), (2_000, "at_2k"), (2_500, "at_2500")]
)
def test_rate_prefixes(rate: int, prefix: str) -> None:
    assert rate_prefix(rate) == prefix


def test_deployments_alternate_which_runs_first_and_name_their_figures_apart() -> None:
    assert deployment_order(1) == (1, 2)
    assert deployment_order(2) == (2, 1)
    assert deployment_order(3) == (1, 2)
    assert deployment_prefix(1) == ""
    assert deployment_prefix(2) == "two_workers_"
    with pytest.raises(ValueError, match="3 workers"):
        deployment_prefix(3)


def test_the_codec_clock_times_decoding_and_encoding_the_given_states() -> None:
    fold = FeatureFold(FeatureConfig())
    states = []
    for event in simulated_events(5, limit=40):
        state = fold.new_state()
        fold.apply(state, event)
        states.append(fold.encode(state))
    assert CodecClock(fold, states).us_per_state() > 0
    with pytest.raises(ValueError, match="at least one"):
        CodecClock(fold, [])
    with pytest.raises(ValueError, match="schema"):
        CodecClock(fold, [b"\x91\x07"]).us_per_state()


def test_background_slices_continue_one_simulation_without_repeating_an_event() -> None:
    source = BackgroundSource(simulated_bank(40))
    first, second = source.take(150), source.take(250)
    assert len(first) == 150
    assert len(second) == 250
    assert first + second == simulated_events(40, limit=400)


def test_whole_days_come_first_and_the_slices_continue_after_them() -> None:
    source = BackgroundSource(simulated_bank(40))
    days = list(source.take_days(2))
    after = source.take(50)
    assert len(days) == 2
    assert all(days)
    assert {event.ts.date() for event in days[0]} != {event.ts.date() for event in days[1]}
    history = [event for day in days for event in day]
    assert history + after == simulated_events(40, limit=len(history) + 50)
    with pytest.raises(ValueError, match="whole days"):
        next(source.take_days(1))


def test_the_http_client_reconnects_when_the_server_closed_an_idle_connection() -> None:
    async def scenario() -> list[tuple[int, bytes]]:
        async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            writer.close()  # as uvicorn does with a connection idle past its keep-alive

        server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = KeepAliveClient("127.0.0.1", port)
        try:
            return [await client.get("/a"), await client.get("/b")]
        finally:
            client.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == [(200, b"ok"), (200, b"ok")]
