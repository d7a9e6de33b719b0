"""Freshness: event produced → feature visible to `GET /v1/customers/{id}`, under load.

Real `nba worker`, `nba learner` and `nba api` processes run on fresh embedded servers, as
`nba up` runs them (the churn and segment learner and the base walk in the learner, off
the workers' event loops). First, the simulated bank's first `history_days` days are
folded straight into the store (no Kafka): a bank's customers come with months of
history, and the worker's CPU per event grows with it (bigger states to encode and
write). Without it the states grew from ~425 to ~640 B over the three repeats of a full
run, and every repeat had a higher p99 than the one before. Each deployment then starts
its own embedded broker, workers, learner and API on that store: the embedded broker's
CPU per fetch grows with every record batch it holds (`benchmarks.embedded_broker`), so
with one broker for the whole run each repeat paid for the batches of the ones before
(its CPU share 11, 19 and 32% at 10,000 events/s, the third repeat's p99 the worst), a
cost a Kafka deployment does not have.

A repeat measures two deployments, one after the other (alternating which goes first):
one worker, and two workers sharing the partitions, one per core of this machine, as the
docs/deployment.md runs them. One worker spends ~40–55 µs of CPU per event on
90-day histories, so at 10,000 events/s it is busy about half the time and an event waits
behind the whole batch ahead of it; two take the batches of their partitions in
parallel. Each deployment has three phases, each starting once the workers have caught up:

- floor (the baseline): probes only, no background load;
- the simulated bank's events as background load at LOW_RATE events/s (a second point);
- the same at HIGH_RATE events/s (the subject: the issue's p99 < 100 ms at 10,000/s).

Background load: this process produces the simulated bank's events with `EventPublisher`
on an `AIOKafkaProducer` configured as the API's (`acks="all"`, `linger_ms=2`), so the
envelopes are packed exactly as `POST /v1/events` packs them; a publish every TICK_S
carries what the rate has made due since the start (it catches up if it falls behind).
Publishing directly rather than over HTTP keeps the producer cheap (~10 µs of CPU per
event, events validated beforehand), so it is not the bottleneck and the API's CPU
serves the probes' reads only.

Probes: every PROBE_INTERVAL_S one of PROBE_CUSTOMERS dedicated customers gets a `login`
with the current time, published the same way (alone: one Kafka message); the clock
starts right before the publish call. Its customer is then read over a kept-alive HTTP
connection until `features.event_count` shows the probe; latency = the time that answer
arrived − the start. Polls are MIN_POLL_DELAY_S apart, or POLL_DELAY_FRACTION of the time
waited so far if longer, so the reads stay few when the worker lags. A probe customer has
one probe in flight at most, so at most PROBE_CUSTOMERS are in flight; a probe due while
all are busy is skipped (counted). Under load, probes start after SETTLE_S, and the load
goes on until the last probe is visible (or its pre-generated events run out: counted as
`probes_after_load`).

Machine speed: right before the phase at HIGH_RATE, this process times decoding and
encoding CALIBRATION_STATES of the store's states (`machine_codec_us_per_state`, lower is
faster): the shared machine's speed swings ~1.5× within an hour and the p99 with it, so
runs far apart can be told apart by the machine they ran on.

Worker lag: events produced minus events the workers counted as processed (`IngestStats`),
sampled every LAG_SAMPLE_S during the load (its growth per second is the least-squares
slope: ~0 when the worker keeps up, its shortfall when it cannot), taken when the load
stops, and the time the worker then needs to catch up (`drain_s`). A rate the worker
cannot sustain shows as a growing lag; its probes then measure the backlog (so they grow
with the phase's length), and the figures say so rather than lowering the rate.

Run: `python -m benchmarks.freshness [--quick]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import math
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from subprocess import Popen

import orjson
import uvloop
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from benchmarks.common import (
    FIRST_TRAFFIC_DAY,
    SESSION_TIMEOUT_S,
    BenchmarkError,
    Result,
    Series,
    Target,
    benchmark_main,
    engine_process,
    ensure_running,
    fold_history,
    fresh_servers,
    isolated_settings,
    median_of,
    percentiles,
    process_cpu_seconds,
    server_cpu_seconds,
    server_version,
    simulated_bank,
    simulated_days,
)
from engine.core.clients import connect_redis
from engine.core.settings import Settings
from engine.sim.simulator import SimulatedBank
from engine.stream.embedded import EmbeddedServices, free_port
from engine.stream.topics import ensure_topics
from features.events import Channel, Event, EventType
from features.keys import Keys
from features.publisher import EventPublisher
from features.state import FeatureFold
from features.stats import IngestStats

NAME = "freshness"
TARGET_P99_MS = 100.0  # the figure, at HIGH_RATE
HIGH_RATE = 10_000  # background events/s of the subject
LOW_RATE = 2_000  # background events/s of the second data point
CUSTOMERS = 20_000  # of the simulated bank producing the background load
#: One background publish per tick (10/s): 1,000 events at 10,000/s, as a gateway batching
#: contact points' events for 100 ms; envelopes are per publish and partition, so this sets
#: the events per Kafka message (~125 at 10,000/s) and with it the worker's per-message cost.
TICK_S = 0.1
#: The deployments measured, by workers: one, and one per core of this two-core machine (as
#: docs/deployment.md deploys at scale: workers share the partitions). Repeats alternate.
WORKER_COUNTS = (1, 2)
#: Stored states the machine's speed is timed on (`CodecClock`), and the rounds timed.
CALIBRATION_STATES = 2_000
CALIBRATION_ROUNDS = 5
PROBE_INTERVAL_S = 0.05
PROBE_CUSTOMERS = 8  # also the most probes in flight
MIN_POLL_DELAY_S = 0.005
POLL_DELAY_FRACTION = 0.1
SETTLE_S = 1.0  # load before the first probe of a loaded phase
LAG_SAMPLE_S = 0.25
#: A lag growing by less than this share of the rate counts as kept up (sampling noise).
SUSTAINED_GROWTH_SHARE = 0.02
READY_TIMEOUT_S = 120.0  # worker start-up and group join, API start-up
DRAIN_TIMEOUT_S = 300.0
PROBE_TIMEOUT_S = 300.0
DRAIN_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class Plan:
    """Phase lengths in seconds, extra background seconds generated, and repeats."""

    floor_s: float
    low_s: float
    high_s: float
    tail_s: float  # background generated beyond a phase, for the probes still in flight
    repeats: int
    history_days: int  # of the simulated bank's traffic folded into the store beforehand


#: 90 days: the longest window a feature keeps (its daily buckets are full from then on).
FULL = Plan(floor_s=10.0, low_s=20.0, high_s=30.0, tail_s=10.0, repeats=3, history_days=90)
QUICK = Plan(floor_s=1.5, low_s=3.0, high_s=4.0, tail_s=2.0, repeats=3, history_days=10)


# -- pure parts: pacing, probes, figures ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pacer:
    """A steady rate: how many events are due, given the time since the start and those sent.

    Counting from the start (not per tick) means a late tick sends more, so the achieved
    rate holds whatever the timer's jitter, as long as the producer can keep up at all.
    """

    rate: float

    def due(self, elapsed_s: float, sent: int) -> int:
        return max(0, math.floor(self.rate * elapsed_s) - sent)


def poll_delay(waited_s: float) -> float:
    """The pause before the next read: a few ms, or a small fraction of the wait so far.

    The fraction bounds the reads per probe when the worker lags by seconds (and with them
    the API CPU they take from the worker), at a resolution of POLL_DELAY_FRACTION.
    """
    return max(MIN_POLL_DELAY_S, POLL_DELAY_FRACTION * waited_s)


@dataclass(frozen=True, slots=True)
class Probe:
    """One probe: its customer's slot and id, and the `event_count` that shows it applied."""

    slot: int
    customer_id: str
    expected_count: int

    def event(self, now: float) -> Event:
        """The probe's event: a login at `now` (Unix seconds), unique per customer and count."""
        return Event(
            event_id=f"{self.customer_id}-{self.expected_count}",
            customer_id=self.customer_id,
            type=EventType.LOGIN,
            channel=Channel.MOBILE,
            ts=datetime.fromtimestamp(now, UTC),
        )


class ProbeBook:
    """The dedicated probe customers: which are free, and how many events each was sent.

    A customer carries one probe at a time, so a probe is visible exactly when its
    customer's `event_count` reaches the number of events that customer was sent.
    """

    def __init__(self, customers: Sequence[str]) -> None:
        if len(set(customers)) != len(customers) or not customers:
            raise ValueError("probe customers must be distinct, and at least one")
        self._customers = list(customers)
        self._sent = [0] * len(customers)
        self._free = deque(range(len(customers)))

    @property
    def size(self) -> int:
        return len(self._customers)

    def take(self) -> Probe | None:
        """A probe for the customer free longest, or None when every customer has one."""
        if not self._free:
            return None
        slot = self._free.popleft()
        self._sent[slot] += 1
        return Probe(slot, self._customers[slot], self._sent[slot])

    def release(self, probe: Probe) -> None:
        """The probe is over (seen, or given up): its customer may carry the next one."""
        if probe.slot in self._free:
            raise ValueError(f"probe customer {probe.customer_id} is not in flight")
        self._free.append(probe.slot)


def shows(status: int, body: bytes, probe: Probe) -> bool:
    """Whether a `GET /v1/customers/{id}` answer shows the probe's event applied.

    404 means no event of the customer is applied yet; anything else but 200 is an error.
    """
    if status == 404:
        return False
    if status != 200:
        raise BenchmarkError(f"GET /v1/customers/{probe.customer_id}: {status} {body[:200]!r}")
    return int(orjson.loads(body)["features"]["event_count"]) >= probe.expected_count


def lag(produced: int, processed: int) -> int:
    """Events produced that the workers have not processed yet."""
    return produced - processed


def growth(samples: Sequence[tuple[float, int]]) -> float:
    """The least-squares slope of (seconds, lag) samples: how fast the backlog grows, per s.

    Near zero when the worker keeps up (the lag only wobbles with fetches and batches);
    the shortfall of the worker's rate when it cannot.
    """
    if len(samples) < 2:
        raise ValueError("a slope needs at least two samples")
    mean_t = sum(t for t, _ in samples) / len(samples)
    mean_lag = sum(lag for _, lag in samples) / len(samples)
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        raise ValueError("the samples must span some time")
    return sum((t - mean_t) * (lag - mean_lag) for t, lag in samples) / spread


def sustained(rate: float, lag_growth: float) -> bool:
    """Whether the worker kept up with `rate`: its backlog grew by under 2% of the rate."""
    return lag_growth <= SUSTAINED_GROWTH_SHARE * rate


@dataclass(frozen=True, slots=True)
class Seen:
    """A probe's latency, and when (perf_counter) its event was seen."""

    latency_ms: float
    at: float


@dataclass(frozen=True, slots=True)
class PhaseOutcome:
    """What one phase measured; background figures are zero for the floor.

    `load_s` is how long the load ran, up to its last publish (so `sent / load_s` is the
    rate produced); `load_end` is when it stopped (perf_counter); `observed_s` runs until
    the worker's counters and CPU times were read after it: the window of `processed` and
    `cpu_seconds`.
    """

    seen: list[Seen]
    skipped: int
    sent: int = 0
    load_s: float = 0.0
    load_end: float = 0.0
    observed_s: float = 0.0
    processed: int = 0
    lag_end: int = 0
    lag_growth: float = 0.0
    drain_s: float = 0.0
    cpu_seconds: dict[str, float] | None = None


def latency_figures(prefix: str, seen: Sequence[Seen], skipped: int) -> dict[str, float]:
    """p50/p90/p99/max in ms, the number of probes and of probes skipped."""
    latencies = [probe.latency_ms for probe in seen]
    p50, p90, p99 = percentiles(latencies, 50, 90, 99)
    return {
        f"{prefix}_p50_ms": p50,
        f"{prefix}_p90_ms": p90,
        f"{prefix}_p99_ms": p99,
        f"{prefix}_max_ms": max(latencies),
        f"{prefix}_probes": float(len(latencies)),
        f"{prefix}_probes_skipped": float(skipped),
    }


def load_figures(prefix: str, outcome: PhaseOutcome) -> dict[str, float]:
    """Achieved rates, the lag (when the load stopped, its growth), catch-up, CPU shares."""
    if outcome.load_s <= 0 or outcome.observed_s <= 0 or outcome.cpu_seconds is None:
        raise ValueError("a loaded phase needs its load and observed times and CPU seconds")
    return {
        f"{prefix}_sent_events_per_s": outcome.sent / outcome.load_s,
        f"{prefix}_worker_events_per_s": outcome.processed / outcome.observed_s,
        f"{prefix}_lag_end_events": float(outcome.lag_end),
        f"{prefix}_lag_growth_events_per_s": outcome.lag_growth,
        f"{prefix}_drain_s": outcome.drain_s,
        f"{prefix}_probes_after_load": float(
            sum(probe.at > outcome.load_end for probe in outcome.seen)
        ),
    } | {
        f"{prefix}_{part}_cpu_share": seconds / outcome.observed_s
        for part, seconds in outcome.cpu_seconds.items()
    }


def deployment_prefix(workers: int) -> str:
    """Figure-name prefix of a deployment: none for one worker (the figures' names before
    deployments were compared), `two_workers_` for two."""
    prefixes = {1: "", 2: "two_workers_"}
    if workers not in prefixes:
        raise ValueError(f"no figure names for {workers} workers")
    return prefixes[workers]


def deployment_order(repeat: int) -> tuple[int, ...]:
    """The deployments of a repeat (numbered from 1) in the order they run: odd repeats as
    WORKER_COUNTS lists them, even ones reversed, so neither always runs first."""
    return WORKER_COUNTS if repeat % 2 else WORKER_COUNTS[::-1]


def rate_prefix(rate: int) -> str:
    """Figure-name prefix of a background rate: 10,000 events/s → `at_10k`."""
    return f"at_{rate // 1000}k" if rate % 1000 == 0 else f"at_{rate}"


class BackgroundSource:
    """The simulated bank's validated events, day after day from its first day of traffic
    (FIRST_TRAFFIC_DAY), handed out in order.

    Slices taken one after another continue the same simulation, so no event id repeats
    and every customer's events stay in time order across phases and repeats.
    """

    def __init__(self, bank: SimulatedBank) -> None:
        self._bank = bank
        self._day = FIRST_TRAFFIC_DAY
        self._pending: list[Event] = []

    def take_days(self, days: int) -> Iterator[list[Event]]:
        """The next `days` whole days of traffic, a day at a time (before any `take`)."""
        if self._pending:
            raise ValueError("whole days only before the first slice is taken")
        for events in simulated_days(self._bank, self._day, days):
            self._day += 1
            yield events

    def take(self, count: int) -> list[Event]:
        while len(self._pending) < count:
            raw = self._bank.events_for_day(self._day)
            self._pending += [Event.model_validate(item) for item in raw]
            self._day += 1
        taken, self._pending = self._pending[:count], self._pending[count:]
        return taken


# -- HTTP -----------------------------------------------------------------------------------


class KeepAliveClient:
    """A minimal HTTP/1.1 GET client on one kept-alive connection: status and body.

    Why not httpx: its CPU per request exceeds the API's own on this machine, and here it
    would take that CPU from the worker being measured. Parses only the status line and
    Content-Length (the API always sends one). The server closes a connection left idle
    for a few seconds (between phases): the next request then reconnects once.
    """

    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        if self._connection is not None:
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                return await self._get(*self._connection, path)
            self.close()
        self._connection = await asyncio.open_connection(self._host, self._port)
        return await self._get(*self._connection, path)

    @staticmethod
    async def _get(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str
    ) -> tuple[int, bytes]:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(
            (int(line[15:]) for line in lines if line[:15].lower() == b"content-length:"), None
        )
        if length is None:
            raise BenchmarkError(f"no Content-Length in {lines[0]!r}")
        return int(lines[0][9:12]), await reader.readexactly(length)

    def close(self) -> None:
        if self._connection is not None:
            self._connection[1].close()
            self._connection = None


class CodecClock:
    """Times decoding and encoding a sample of the store's states, in this process.

    Why: the shared machine's speed swings ~1.5× within an hour, and the p99 follows the
    workers' CPU steeply, so each deployment's figures carry the speed of the machine they
    ran on, timed on the work the workers do most, right before the phase at HIGH_RATE
    (when nothing else is loaded): runs far apart can then be told apart by the machine.
    """

    def __init__(self, fold: FeatureFold, states: Sequence[bytes]) -> None:
        if not states:
            raise ValueError("time at least one stored state")
        self._fold = fold
        self._states = list(states)

    def us_per_state(self) -> float:
        """The median over CALIBRATION_ROUNDS of the µs to decode and encode one state."""
        rounds = []
        for _ in range(CALIBRATION_ROUNDS):
            started = time.perf_counter()
            for raw in self._states:
                self._fold.encode(self._fold.decode(raw))
            rounds.append((time.perf_counter() - started) / len(self._states) * 1e6)
        return statistics.median(rounds)


# -- the rig: processes, producer, clients --------------------------------------------------


@dataclass
class Child:
    """A child process and its log, to check it is alive while waiting on it."""

    process: Popen[bytes]
    log_path: Path

    def check(self) -> None:
        ensure_running(self.process, self.log_path)


@dataclass
class Rig:
    """What every phase uses: the publisher, the probes and their clients, the counters."""

    settings: Settings
    workers: list[Child]
    learner: Child
    api: Child
    broker_pid: int
    redis: Redis
    producer: AIOKafkaProducer
    publisher: EventPublisher
    stats: IngestStats
    book: ProbeBook
    clients: list[KeepAliveClient]
    #: Events produced: by this rig (background and probes), plus those the workers of
    #: earlier repeats had processed when it opened (the store's counters are the run's).
    produced: int

    @classmethod
    async def open(
        cls,
        settings: Settings,
        workers: list[Child],
        learner: Child,
        api: Child,
        broker_pid: int,
        book: ProbeBook,
    ) -> Rig:
        """Connect to Redis and Kafka; the API is connected to on the first request.

        `book` is the run's: the probe customers' event counts carry over between repeats.
        """
        redis = connect_redis(str(settings.redis_url))
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=2
        )  # as api/services.py configures it
        await producer.start()
        stats = IngestStats(redis, key_prefix=settings.key_prefix)
        return cls(
            settings=settings,
            workers=workers,
            learner=learner,
            api=api,
            broker_pid=broker_pid,
            redis=redis,
            producer=producer,
            publisher=EventPublisher(producer, settings.events_topic),
            stats=stats,
            book=book,
            clients=[
                KeepAliveClient(settings.api_host, settings.api_port) for _ in range(book.size)
            ],
            produced=(await stats.read()).processed,
        )

    async def wait_for_api(self) -> None:
        """Wait until the API answers `GET /healthz` with 200 (Redis and Kafka reachable)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self.api.check()
            with contextlib.suppress(OSError):
                if (await self.clients[0].get("/healthz"))[0] == 200:
                    return
            await asyncio.sleep(0.2)
        raise BenchmarkError(f"the API was not healthy within {READY_TIMEOUT_S} s")

    async def close(self) -> None:
        for client in self.clients:
            client.close()
        await self.producer.stop()
        await self.redis.aclose()

    def check_children(self) -> None:
        for worker in self.workers:
            worker.check()
        self.learner.check()
        self.api.check()

    async def wait_for_workers(self) -> None:
        """Wait until every worker has joined and the group owns every partition."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            self.check_children()
            live = [worker for worker in await self.stats.live_workers() if worker.partitions]
            owned = sum(len(worker.partitions) for worker in live)
            if len(live) == len(self.workers) and owned == self.settings.topic_partitions:
                return
            await asyncio.sleep(0.2)
        raise BenchmarkError(
            f"{len(self.workers)} workers did not share the partitions within {READY_TIMEOUT_S} s"
        )

    async def cpu_seconds(self) -> dict[str, float]:
        """CPU used so far: the workers together, the learner, the API, this process
        (producer, probes), Valkey, Kafka."""
        return {
            "worker": sum(process_cpu_seconds(worker.process.pid) for worker in self.workers),
            "learner": process_cpu_seconds(self.learner.process.pid),
            "api": process_cpu_seconds(self.api.process.pid),
            "client": time.process_time(),
            "valkey": await server_cpu_seconds(self.redis),
            "broker": process_cpu_seconds(self.broker_pid),
        }

    async def drain(self) -> float:
        """Wait until the workers have processed every event produced; the seconds it took."""
        started = time.perf_counter()
        while lag(self.produced, (await self.stats.read()).processed) > 0:
            self.check_children()
            if time.perf_counter() - started > DRAIN_TIMEOUT_S:
                raise BenchmarkError(f"the worker did not catch up within {DRAIN_TIMEOUT_S} s")
            await asyncio.sleep(DRAIN_POLL_S)
        return time.perf_counter() - started


# -- probes and load ------------------------------------------------------------------------


async def _probe(rig: Rig, probe: Probe) -> Seen:
    """Publish the probe's event, then read its customer until it shows."""
    client = rig.clients[probe.slot]
    path = f"/v1/customers/{probe.customer_id}"
    event = probe.event(time.time())
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            started = time.perf_counter()
            rig.produced += 1
            await rig.publisher.publish([event])
            while True:
                status, body = await client.get(path)
                now = time.perf_counter()
                if shows(status, body, probe):
                    return Seen((now - started) * 1000, now)
                await asyncio.sleep(poll_delay(now - started))
    except TimeoutError:
        rig.check_children()
        raise BenchmarkError(
            f"probe {event.event_id} not visible after {PROBE_TIMEOUT_S} s"
        ) from None
    finally:
        rig.book.release(probe)


async def _probes(rig: Rig, first_at: float, last_at: float) -> tuple[list[Seen], int]:
    """Launch a probe every PROBE_INTERVAL_S from `first_at` until `last_at`; await them all.

    Returns what they saw and how many were skipped (every probe customer busy).
    """
    launched: list[asyncio.Task[Seen]] = []
    skipped = 0
    launch_at = first_at
    while launch_at < last_at:
        await asyncio.sleep(max(0.0, launch_at - time.perf_counter()))
        probe = rig.book.take()
        if probe is None:
            skipped += 1
        else:
            launched.append(asyncio.create_task(_probe(rig, probe)))
        launch_at += PROBE_INTERVAL_S
    return list(await asyncio.gather(*launched)), skipped


async def _load(
    rig: Rig, rate: int, events: Iterator[Event], started: float, stop: asyncio.Event
) -> tuple[int, float, float]:
    """Publish `events` at `rate` from `started` until `stop` is set or they run out.

    Returns the events sent, the time (perf_counter) the last publish brought the load up
    to (so that sent / (that − start) is the rate achieved), and when the load stopped.
    """
    pacer = Pacer(rate)
    sent = 0
    tick = covered = started
    while not stop.is_set():
        now = time.perf_counter()
        due = pacer.due(now - started, sent)
        chunk = [event for _, event in zip(range(due), events, strict=False)]
        if chunk:
            rig.produced += len(chunk)
            await rig.publisher.publish(chunk)
            sent, covered = sent + len(chunk), now
        if len(chunk) < due:
            break  # out of events
        tick += TICK_S
        await asyncio.sleep(max(0.0, tick - time.perf_counter()))
    return sent, covered, time.perf_counter()


async def _sample_lag(rig: Rig, first_at: float, stop: asyncio.Event) -> list[tuple[float, int]]:
    """(seconds, lag) every LAG_SAMPLE_S from `first_at` until `stop` is set."""
    samples: list[tuple[float, int]] = []
    sample_at = first_at
    while not stop.is_set():
        await asyncio.sleep(max(0.0, sample_at - time.perf_counter()))
        processed = (await rig.stats.read()).processed
        samples.append((time.perf_counter(), lag(rig.produced, processed)))
        sample_at += LAG_SAMPLE_S
    return samples


async def _floor(rig: Rig, seconds: float) -> PhaseOutcome:
    """Probes with no background load: the freshness floor."""
    await rig.drain()
    started = time.perf_counter()
    seen, skipped = await _probes(rig, started, started + seconds)
    return PhaseOutcome(seen=seen, skipped=skipped)


async def _loaded(rig: Rig, rate: int, seconds: float, events: list[Event]) -> PhaseOutcome:
    """Probes while `events` are produced at `rate`; the load outlasts the last probe."""
    await rig.drain()
    processed = (await rig.stats.read()).processed
    cpu = await rig.cpu_seconds()
    stop = asyncio.Event()
    started = time.perf_counter()
    load = asyncio.create_task(_load(rig, rate, iter(events), started, stop))
    sampler = asyncio.create_task(_sample_lag(rig, started + SETTLE_S, stop))
    try:
        seen, skipped = await _probes(rig, started + SETTLE_S, started + seconds)
    finally:
        stop.set()
        sent, covered, load_end = await load
        samples = await sampler
    processed_end = (await rig.stats.read()).processed
    lag_end = lag(rig.produced, processed_end)
    cpu_end = await rig.cpu_seconds()
    observed_s = time.perf_counter() - started
    drain_s = await rig.drain()
    return PhaseOutcome(
        seen=seen,
        skipped=skipped,
        sent=sent,
        load_s=covered - started,
        load_end=load_end,
        observed_s=observed_s,
        processed=processed_end - processed,
        lag_end=lag_end,
        lag_growth=growth(samples),
        drain_s=drain_s,
        cpu_seconds={part: cpu_end[part] - cpu[part] for part in cpu},
    )


async def _warm_up(rig: Rig) -> None:
    """One probe per probe customer: the workers have joined and the API reads the store."""
    await rig.wait_for_api()
    await rig.wait_for_workers()
    probes = [rig.book.take() for _ in range(rig.book.size)]
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await asyncio.gather(*(_probe(rig, probe) for probe in probes if probe))
    except TimeoutError:
        rig.check_children()
        raise BenchmarkError(f"no probe was visible within {READY_TIMEOUT_S} s") from None


async def _one_repeat(
    rig: Rig, plan: Plan, low_events: list[Event], high_events: list[Event], clock: CodecClock
) -> dict[str, float]:
    """The floor, then LOW_RATE, then HIGH_RATE; each phase's figures, and the machine's
    speed timed right before HIGH_RATE."""
    floor = await _floor(rig, plan.floor_s)
    low = await _loaded(rig, LOW_RATE, plan.low_s, low_events)
    codec_us = clock.us_per_state()  # the workers have caught up: the machine is quiet
    high = await _loaded(rig, HIGH_RATE, plan.high_s, high_events)
    figures = latency_figures("floor", floor.seen, floor.skipped)
    figures["machine_codec_us_per_state"] = codec_us
    for rate, outcome in ((HIGH_RATE, high), (LOW_RATE, low)):
        prefix = rate_prefix(rate)
        figures |= latency_figures(prefix, outcome.seen, outcome.skipped)
        figures |= load_figures(prefix, outcome)
    return figures


async def _fold_history(
    settings: Settings, source: BackgroundSource, days: int
) -> tuple[int, CodecClock]:
    """The bank's first `days` days of traffic folded into the store; the events, and a
    clock timing CALIBRATION_STATES of the states they left."""
    redis = connect_redis(str(settings.redis_url))
    try:
        events = await fold_history(redis, settings, source.take_days(days))
        keys: list[str] = []
        async for key in redis.scan_iter(
            match=Keys(settings.key_prefix).states_pattern, count=1000
        ):
            keys.append(key)
            if len(keys) == CALIBRATION_STATES:
                break
        states = [raw for raw in await redis.mget(keys) if raw is not None]
    finally:
        await redis.aclose()
    return events, CodecClock(FeatureFold(settings.feature_config()), states)


# -- the benchmark --------------------------------------------------------------------------


def run(quick: bool = False) -> Result:
    """Measure the floor and the two loaded phases; return the result (not yet written)."""
    plan = QUICK if quick else FULL
    source = BackgroundSource(simulated_bank(CUSTOMERS))
    with (
        fresh_servers(kafka=False) as services,
        tempfile.TemporaryDirectory(prefix="nba-bench-") as logs,
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        settings = isolated_settings(services, api_port=free_port())
        history_events, clock = runner.run(_fold_history(settings, source, plan.history_days))
        print(
            f"{NAME}: background {LOW_RATE:,} and {HIGH_RATE:,} events/s of {CUSTOMERS:,} "
            f"customers, a probe every {PROBE_INTERVAL_S * 1000:.0f} ms, {plan.repeats} "
            f"repeats of {' and '.join(map(str, WORKER_COUNTS))} workers, each deployment "
            "with its own broker, workers, learner and API",
            flush=True,
        )
        repeats = itertools.count(1)
        book = ProbeBook([f"probe-{number:02d}" for number in range(PROBE_CUSTOMERS)])

        def one_deployment(repeat: int, workers: int) -> dict[str, float]:
            low = source.take(int(LOW_RATE * (plan.low_s + plan.tail_s)))
            high = source.take(int(HIGH_RATE * (plan.high_s + plan.tail_s)))
            logs_dir = Path(logs) / f"repeat-{repeat}-workers-{workers}"
            logs_dir.mkdir()
            with _engine(runner, settings, logs_dir, book, workers) as rig:
                gc.collect()
                gc.freeze()  # no full collection over these events inside a phase
                try:
                    figures = runner.run(_one_repeat(rig, plan, low, high, clock))
                finally:
                    gc.unfreeze()
            prefix = deployment_prefix(workers)
            return {prefix + name: value for name, value in figures.items()}

        def one_repeat() -> dict[str, float]:
            repeat = next(repeats)
            figures: dict[str, float] = {}
            for workers in deployment_order(repeat):
                figures |= one_deployment(repeat, workers)
            return figures

        figures = median_of(plan.repeats, one_repeat)
        valkey_version = runner.run(server_version(settings))
    return _result(plan, quick, figures, valkey_version, history_events)


@contextlib.contextmanager
def _engine(
    runner: asyncio.Runner, settings: Settings, logs_dir: Path, book: ProbeBook, workers: int
) -> Iterator[Rig]:
    """A fresh embedded broker with `workers` workers, the learner and an API on it (and on
    `settings`' Redis), ready: the workers share the partitions and the API reads the store."""
    with EmbeddedServices(redis=False, kafka=True) as broker, contextlib.ExitStack() as children:
        assert broker.kafka is not None
        assert broker.kafka.pid is not None
        on_broker = settings.model_copy(
            update={"kafka_bootstrap": broker.kafka.bootstrap, "learner_in_workers": False}
        )
        runner.run(ensure_topics(on_broker))
        worker_children = []
        for number in range(1, workers + 1):
            log = logs_dir / f"worker-{number}.log"
            worker_children.append(
                Child(children.enter_context(engine_process("worker", on_broker, log)), log)
            )
        learner_log = logs_dir / "learner.log"
        learner = Child(
            children.enter_context(engine_process("learner", on_broker, learner_log)), learner_log
        )
        api_log = logs_dir / "api.log"
        api = Child(children.enter_context(engine_process("api", on_broker, api_log)), api_log)
        rig = runner.run(Rig.open(on_broker, worker_children, learner, api, broker.kafka.pid, book))
        try:
            runner.run(_warm_up(rig))
            yield rig
        finally:
            runner.run(rig.close())


def _result(
    plan: Plan,
    quick: bool,
    figures: dict[str, Series],
    valkey_version: str,
    history_events: int,
) -> Result:
    """The result with its parameters, the targets and notes reading the figures.

    The subject is the deployment with a worker per core; the one-worker figures keep the
    target too, so both verdicts show.
    """
    high, low = rate_prefix(HIGH_RATE), rate_prefix(LOW_RATE)
    scaled = deployment_prefix(max(WORKER_COUNTS))
    return Result(
        name=NAME,
        parameters={
            "quick": quick,
            "background_events_per_s": [LOW_RATE, HIGH_RATE],
            "background_customers": CUSTOMERS,
            "history_days": plan.history_days,
            "history_events": history_events,
            "background_publish_interval_s": TICK_S,
            "floor_s": plan.floor_s,
            "low_load_s": plan.low_s,
            "high_load_s": plan.high_s,
            "settle_s": SETTLE_S,
            "probe_interval_s": PROBE_INTERVAL_S,
            "probe_customers": PROBE_CUSTOMERS,
            "poll_delay": f"max({MIN_POLL_DELAY_S * 1000:.0f} ms, "
            f"{POLL_DELAY_FRACTION:.0%} of the time waited)",
            "producer": "EventPublisher in the benchmark process (acks=all, linger_ms=2)",
            "repeats": plan.repeats,
            "worker_counts": list(WORKER_COUNTS),
            "kafka_session_timeout_s": SESSION_TIMEOUT_S,
            "valkey_version": valkey_version,
        },
        figures=figures,
        subject=f"{scaled}{high}_p99_ms",
        baseline=f"{scaled}floor_p99_ms",
        targets=[
            Target(f"{deployment_prefix(workers)}{high}_p99_ms", at_most=TARGET_P99_MS)
            for workers in sorted(WORKER_COUNTS, reverse=True)
        ],
        notes=[
            f"subject: probes while the simulated bank's events are produced at {HIGH_RATE:,} "
            f"events/s, {max(WORKER_COUNTS)} workers sharing the partitions; baseline: the "
            "same probes with no background load (the freshness floor) on that deployment; "
            "latency = first GET /v1/customers/{id} answer showing the probe's event − the "
            "moment before it was published. Figures without a prefix are one worker's. "
            "machine_codec_us_per_state: the µs this process took to decode and encode a "
            "stored state right before the phase (the machine's speed; lower is faster).",
            *(
                _load_note(figures, deployment_prefix(workers) + prefix, rate, workers)
                for workers in sorted(WORKER_COUNTS, reverse=True)
                for prefix, rate in ((high, HIGH_RATE), (low, LOW_RATE))
            ),
        ],
    )


def _load_note(figures: dict[str, Series], prefix: str, rate: int, workers: int) -> str:
    """One line on a loaded phase: rates, lag, whether the workers kept up, the latencies."""
    median = {
        name[len(prefix) + 1 :]: series.median
        for name, series in figures.items()
        if name.startswith(prefix + "_")
    }
    verdict = (
        "sustained"
        if sustained(rate, median["lag_growth_events_per_s"])
        else "NOT sustained: the lag grows with the phase's length, and so do the latencies"
    )
    deployment = "one worker" if workers == 1 else f"{workers} workers"
    return (
        f"{deployment} at {rate:,} events/s ({verdict}): sent "
        f"{median['sent_events_per_s']:,.0f}/s, processed {median['worker_events_per_s']:,.0f}/s, "
        f"the lag grew by {median['lag_growth_events_per_s']:,.0f} events/s and was "
        f"{median['lag_end_events']:,.0f} events when the load stopped, caught up "
        f"{median['drain_s']:.2f} s later; p50/p90/p99/max {median['p50_ms']:,.0f}/"
        f"{median['p90_ms']:,.0f}/{median['p99_ms']:,.0f}/{median['max_ms']:,.0f} ms over "
        f"{median['probes']:.0f} probes ({median['probes_skipped']:.0f} skipped); CPU shares: "
        f"workers {median['worker_cpu_share']:.0%}, learner {median['learner_cpu_share']:.0%}, "
        f"API {median['api_cpu_share']:.0%}, Valkey "
        f"{median['valkey_cpu_share']:.0%}, Kafka {median['broker_cpu_share']:.0%}, producer "
        f"and probes {median['client_cpu_share']:.0%}"
    )


def main() -> None:
    benchmark_main(run, __doc__ or NAME)


if __name__ == "__main__":
    main()
