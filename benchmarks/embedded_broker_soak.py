"""A long `nba up` on the embedded broker: does the worker hold its speed, does the broker?

Why: the embedded broker keeps what it is sent in memory and snapshots it every second; a
broker whose cost grows with the data it has seen slows a long run down (the earlier
default did). What keeps this one flat is `nba up`'s supervisor deleting what the workers
have committed every few seconds (`System.look_after_the_broker`), so the broker holds
little more than what waits. Only a run as long as a real session shows it.

A system started and supervised as `nba up` runs it (`engine.stream.supervisor.start_system`:
embedded Valkey and broker, one worker, the learner, the API; the soak drives it from a
thread while the main thread supervises) gets the demo's traffic: the simulated bank's
days, posted to `POST /v1/events` in time order at a fixed RATE events/s, for DURATION.
Every SAMPLE_S the run reads the events the worker has processed (`/healthz` `ingest`:
applied, duplicates and dead letters) and the broker's CPU time and resident memory
(`/proc/<pid>/stat` of `EmbeddedKafka.pid`). Subject: the worker's events/s over the last
WINDOW samples; baseline: the same over the first WINDOW samples, in the same run. Also
reported: the broker's CPU share and memory over the same windows, and the ratio of its
CPU share last to first; the worker's backlog (posted - processed) at the end; and, once
posting stops, whether every posted event was processed (none lost to retention).
`BrokerWatch` runs beside the samples, as `nba up` runs it; its warnings are notes.

Run: `python -m benchmarks.embedded_broker_soak [--quick]` (30 minutes; --quick: ~1).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    BenchmarkError,
    Result,
    Series,
    benchmark_main,
    simulated_bank,
)
from engine.core.settings import Settings
from engine.stream.embedded import BrokerWatch, ProcessSample
from engine.stream.supervisor import System, start_system

NAME = "embedded_broker_soak"
CUSTOMERS = 3_000  # as `nba demo`
RATE = 500  # events/s posted: a steady session well within the worker's capacity
POSTS_PER_S = 4  # requests per second carrying RATE events between them
DRAIN_TIMEOUT_S = 120.0
#: (run seconds, seconds between samples, samples per window)
FULL = (30 * 60.0, 60.0, 5)
QUICK = (60.0, 5.0, 3)


@dataclass(frozen=True, slots=True)
class Sample:
    """What the run saw at one instant: time since start, events posted and processed, and
    the broker process's CPU time and memory."""

    at: float
    posted: int
    processed: int
    broker: ProcessSample


def run(quick: bool = False) -> Result:
    """Run the soak; return the result (not written)."""
    duration, every, window = QUICK if quick else FULL
    print(
        f"{NAME}: {RATE:,} events/s through a `nba up` system on the embedded broker for "
        f"{duration / 60:.0f} min, sampled every {every:.0f} s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="nba-soak-") as logs:
        system = start_system(Settings(), log_dir=Path(logs))
        try:
            samples, warnings, lost = system.run_supervised(
                lambda: asyncio.run(_soak(system, duration, every))
            )
        finally:
            system.stop()
    figures = soak_figures(samples, window)
    figures["lost_events"] = float(lost)
    settings = system.settings
    return Result(
        name=NAME,
        parameters={
            "quick": quick,
            "duration_s": duration,
            "sample_every_s": every,
            "window_samples": window,
            "rate_events_per_s": RATE,
            "customers": CUSTOMERS,
            "workers": system.workers,
            "embedded_kafka_retention_s": settings.embedded_kafka_retention_s,
            "embedded_kafka_retention_mb": settings.embedded_kafka_retention_mb,
        },
        figures={name: Series((value,)) for name, value in figures.items()},
        subject="last_worker_events_per_s",
        baseline="first_worker_events_per_s",
        notes=[
            f"subject: events the worker processed per second over the last {window} "
            f"samples; baseline: the same over the first {window}; {RATE:,} events/s posted "
            "all along, so a ratio under 1 means the worker fell behind",
            f"broker CPU share last/first window: {figures['broker_cpu_share_ratio']:.2f} "
            f"({figures['first_broker_cpu_share']:.1%} → {figures['last_broker_cpu_share']:.1%} "
            f"of a core); memory {figures['first_broker_rss_mb']:.0f} → "
            f"{figures['last_broker_rss_mb']:.0f} MB",
            f"{lost:,} posted events never processed once posting stopped (lost to "
            "retention if not 0)",
            *(f"BrokerWatch: {warning}" for warning in warnings),
        ],
        series={"samples": [_row(sample) for sample in samples]},
    )


async def _soak(
    system: System, duration: float, every: float
) -> tuple[list[Sample], list[str], int]:
    """Post for `duration`, sample every `every`; (samples, watch warnings, lost events)."""
    kafka = system.servers.kafka
    if kafka is None or kafka.pid is None:
        raise BenchmarkError("the soak needs the embedded broker: unset NBA_KAFKA_BOOTSTRAP")
    watch = BrokerWatch(kafka.pid)
    posted = 0
    samples: list[Sample] = []
    warnings: list[str] = []
    days = _bank_events()
    pending: list[dict[str, Any]] = []
    per_post = RATE // POSTS_PER_S
    async with httpx.AsyncClient(base_url=system.api_url, timeout=30.0) as client:
        started = time.monotonic()
        samples.append(Sample(0.0, 0, await _processed(client), ProcessSample.take(kafka.pid)))
        post_number = 0
        while (now := time.monotonic() - started) < duration:
            if (failed := system.failed_child()) is not None:
                raise BenchmarkError(f"{failed.name} exited during the soak:\n{failed.tail()}")
            while len(pending) < per_post:
                pending += next(days)
            batch, pending = pending[:per_post], pending[per_post:]
            response = await client.post("/v1/events", json=batch)
            response.raise_for_status()
            posted += response.json()["accepted"]
            post_number += 1
            if now >= samples[-1].at + every:
                samples.append(
                    Sample(now, posted, await _processed(client), ProcessSample.take(kafka.pid))
                )
                if warning := watch.check():
                    warnings.append(warning)
                print(f"  {_line(samples[-2], samples[-1])}", flush=True)
            else:
                watch.check()
            await asyncio.sleep(max(0.0, started + post_number / POSTS_PER_S - time.monotonic()))
        end = time.monotonic() - started
        if end - samples[-1].at >= every / 2:  # the last interval, unless it has just begun
            samples.append(
                Sample(end, posted, await _processed(client), ProcessSample.take(kafka.pid))
            )
        lost = await _drain(client, posted)
    return samples, warnings, lost


def _bank_events() -> Iterator[list[dict[str, Any]]]:
    """The simulated bank's events, day after day from its first day of traffic, forever."""
    bank = simulated_bank(CUSTOMERS)
    day = 1
    while True:
        yield bank.events_for_day(day)
        day += 1


async def _processed(client: httpx.AsyncClient) -> int:
    """Events the workers have processed: applied, duplicates and dead letters (/healthz)."""
    ingest: dict[str, int] = (await client.get("/healthz")).json().get("ingest", {})
    return sum(ingest.values())


async def _drain(client: httpx.AsyncClient, posted: int) -> int:
    """Wait until the workers have processed every posted event; the events never processed."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    processed = await _processed(client)
    while processed < posted and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        processed = await _processed(client)
    return max(0, posted - processed)


def soak_figures(samples: list[Sample], window: int) -> dict[str, float]:
    """First-window and last-window figures of a soak's samples, and their ratios.

    A window is `window` sample intervals: the worker's events/s and the broker's CPU share
    over it, the broker's memory at its end; plus the backlog at the last sample.
    """
    if len(samples) < 2 * window + 1:
        raise BenchmarkError(f"{len(samples)} samples: too few for two windows of {window}")
    first, last = (samples[0], samples[window]), (samples[-1 - window], samples[-1])
    figures: dict[str, float] = {}
    for label, (start, end) in (("first", first), ("last", last)):
        seconds = end.at - start.at
        figures[f"{label}_worker_events_per_s"] = (end.processed - start.processed) / seconds
        figures[f"{label}_broker_cpu_share"] = (end.broker.cpu_s - start.broker.cpu_s) / seconds
        figures[f"{label}_broker_rss_mb"] = end.broker.rss_bytes / 2**20
    figures["broker_cpu_share_ratio"] = figures["last_broker_cpu_share"] / max(
        figures["first_broker_cpu_share"], 1e-6
    )
    figures["final_backlog_events"] = float(samples[-1].posted - samples[-1].processed)
    return figures


def _row(sample: Sample) -> dict[str, float]:
    return {
        "at_s": round(sample.at, 1),
        "posted": sample.posted,
        "processed": sample.processed,
        "broker_cpu_s": round(sample.broker.cpu_s, 2),
        "broker_rss_mb": round(sample.broker.rss_bytes / 2**20, 1),
    }


def _line(before: Sample, after: Sample) -> str:
    seconds = after.at - before.at
    return (
        f"{after.at / 60:5.1f} min: worker {(after.processed - before.processed) / seconds:,.0f} "
        f"events/s, backlog {after.posted - after.processed:,}, broker "
        f"{(after.broker.cpu_s - before.broker.cpu_s) / seconds:.1%} of a core, "
        f"{after.broker.rss_bytes / 2**20:,.0f} MB"
    )


def main() -> None:
    benchmark_main(run, __doc__ or NAME)


if __name__ == "__main__":
    main()
