"""Run the whole system from one command: servers, Faust workers (one by default), the
learner, the API — and keep it running.

Servers not configured (`NBA_REDIS_URL`, `NBA_KAFKA_BOOTSTRAP`) are started embedded.
Without `NBA_MODEL_KEY`, a random checkpoint key is generated for this run and given to
every child (a checkpoint left in a persistent Redis by an earlier run is then refused,
and learning starts over from the priors: set the key to keep learning across runs).
The workers, the learner and the API run as child processes — the same `nba worker`, `nba
learner` and `nba api` commands a production deployment runs — each in its own process
group and set to die with the supervisor, so no process outlives it, however it ends.
Several workers share the partitions of `events`, as in a deployment at scale; the
system is ready when each has its share, so no rebalance follows right after. The
learner runs the whole-base jobs (churn and segments, the base walk) that a lone worker
would otherwise run on its event loop (`learner_in_workers` is off for the workers).

Supervision (`System.supervise`, `System.run_supervised`): once the system is ready, a
child that exits is restarted, as a process manager would restart it in production —
after a backoff (RESTART_BACKOFF_S, doubling with each exit in a row up to
RESTART_BACKOFF_MAX_S, back to the start once the child has stayed up
BACKOFF_RESET_AFTER_S), with the same environment, appending to the same log. A killed
worker loses nothing: its uncommitted events are read again by its successor and the
store applies each event once. Each exit and restart is reported (name, exit status or
signal, restarts so far, where its output goes) and recorded in Redis
(`features.processes`), where `GET /healthz` reads it. The system stops only when asked
(Ctrl-C, SIGTERM, or the caller's work being done), or when a child keeps failing to
start — FAILING_EXITS exits in a row, each within FAILING_WITHIN_S of its start — which
no restart will mend: then `ChildFailing` names it. A child failing during start-up
stops the start at once (`SupervisorError`): the cause is nearly always the
configuration. The embedded servers are not restarted (the embedded broker keeps its
topics in memory). On the embedded broker, the supervisor also deletes what the workers
have committed and warns when the broker grows (`System.look_after_the_broker`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, NoReturn, Self, TypeVar

import httpx
import redis
from aiokafka.errors import KafkaError
from pydantic import SecretStr
from redis.exceptions import RedisError

from engine.core.settings import Settings
from engine.stream.embedded import (
    BrokerWatch,
    EmbeddedServices,
    die_with_parent_hook,
    free_port,
    stop_process_group,
)
from engine.stream.topics import ensure_topics, trim_consumed
from features.processes import ProcessRecord, ProcessStatus

T = TypeVar("T")

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
#: The shortest session timeout the embedded broker (as Kafka) accepts: a killed worker's
#: partitions go to the others soonest.
EMBEDDED_SESSION_TIMEOUT_S = 6.0
#: The wait before the first restart after an exit; it doubles with each exit in a row.
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
#: A child up this long has recovered: its next exit waits RESTART_BACKOFF_S again.
BACKOFF_RESET_AFTER_S = 60.0
#: A child exiting this many times in a row, each time within FAILING_WITHIN_S of its
#: start, is failing to start, not crashing now and then: the system stops.
FAILING_EXITS = 5
FAILING_WITHIN_S = 30.0
#: How often the supervisor looks at its children.
SUPERVISE_INTERVAL_S = 0.2
#: How often `nba up` deletes from the embedded broker what the workers have committed.
TRIM_INTERVAL_S = 5.0
#: How long stopping waits for a deletion in progress.
TRIM_JOIN_TIMEOUT_S = 5.0
#: How often `nba up` samples the embedded broker's CPU and memory.
BROKER_WATCH_INTERVAL_S = 10.0


class SupervisorError(RuntimeError):
    """The system could not be brought up or kept up; the message says which part and why,
    `log_tail` holds the last lines of that part's log when it has a log file."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail


class ChildFailing(SupervisorError):
    """A child keeps exiting soon after each restart; the message names it and its exits."""


@dataclass
class Child:
    """A child process of the supervisor with its output file (or the terminal), and its
    history of exits: restarts so far, exits in a row, the last one."""

    name: str
    command: str
    process: subprocess.Popen[bytes]
    log_path: Path | None
    started_at: float = field(default_factory=time.monotonic)
    restarts: int = 0
    #: exits since the child last stayed up BACKOFF_RESET_AFTER_S (sets the backoff)
    exits_in_a_row: int = 0
    #: exits in a row each within FAILING_WITHIN_S of the start (FAILING_EXITS: give up)
    failed_starts: int = 0
    last_exit: str | None = None
    last_exit_ts: float | None = None
    #: when an exited child is due to start again (time.monotonic), None while it runs
    restart_at: float | None = None

    @property
    def where_output_goes(self) -> str:
        return str(self.log_path) if self.log_path is not None else "the supervisor's terminal"

    def tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def status(self) -> ProcessStatus:
        return ProcessStatus(
            restarts=self.restarts, last_exit=self.last_exit, last_exit_ts=self.last_exit_ts
        )

    def stop(self) -> None:
        """SIGTERM its process group; SIGKILL if it has not exited in time."""
        stop_process_group(self.process, STOP_TIMEOUT_S)


def describe_exit(returncode: int) -> str:
    """An exit status as a person reads it: "exited with status 1", "killed by SIGKILL"."""
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


@dataclass
class System:
    """A running system: where each part listens, and the processes behind it."""

    settings: Settings
    api_url: str
    servers: EmbeddedServices
    workers: int = 1
    children: list[Child] = field(default_factory=list)
    #: the environment every child starts (and restarts) with
    env: dict[str, str] = field(default_factory=dict)
    #: where each restart and exit is reported, one line each (e.g. the CLI's console)
    notify: Callable[[str], None] = print
    stopping: bool = False
    #: the children's TMPDIR, removed when the system stops: a killed worker cannot remove
    #: its own Faust data folder, and restarts would pile them up
    scratch_dir: Path | None = None
    _redis: redis.Redis | None = field(default=None, repr=False)
    _broker_watch: BrokerWatch | None = field(default=None, repr=False)
    _trimmer: threading.Thread | None = field(default=None, repr=False)
    _trimming_stopped: threading.Event = field(default_factory=threading.Event, repr=False)
    _next_watch: float = field(default=0.0, repr=False)

    def describe(self) -> list[tuple[str, str]]:
        """(part, where it listens) for every part, for printing."""
        redis_kind = "embedded Valkey" if self.servers.redis else "Redis"
        kafka_kind = "embedded Kafka (noida-db, for development)" if self.servers.kafka else "Kafka"
        rows = [
            (redis_kind, str(self.settings.redis_url)),
            (kafka_kind, str(self.settings.kafka_bootstrap)),
            (
                "worker" if self.workers == 1 else f"{self.workers} workers",
                f"consume '{self.settings.events_topic}' (sharing its partitions), dead "
                f"letters to '{self.settings.dlq_topic}', learn from "
                f"'{self.settings.outcomes_topic}' (one at a time)"
                if self.workers > 1
                else f"consumes '{self.settings.events_topic}', dead letters to "
                f"'{self.settings.dlq_topic}', learns from '{self.settings.outcomes_topic}'",
            ),
            ("learner", "churn and segments learned and checkpointed, the base walk"),
            ("API", f"{self.api_url}  (docs: {self.api_url}/docs)"),
        ]
        rows += [
            (f"{child.name} log", str(child.log_path))
            for child in self.children
            if child.log_path is not None
        ]
        return rows

    def failed_child(self) -> Child | None:
        """A child that has exited, if any (during start-up the system is then broken)."""
        return next((child for child in self.children if child.process.poll() is not None), None)

    @property
    def record(self) -> ProcessRecord:
        return ProcessRecord(key_prefix=self.settings.key_prefix)

    def supervise(self) -> NoReturn:
        """Keep every child running until Ctrl-C or SIGTERM (KeyboardInterrupt, see
        `stop_on_signals`); raise `ChildFailing` when one keeps failing to start.

        Call it from the thread that started the system: a child dies with the thread
        that started it (`die_with_parent_hook`), and restarted children are started here.
        """
        while True:
            self.supervise_once()
            self.look_after_the_broker()
            time.sleep(SUPERVISE_INTERVAL_S)

    def run_supervised(self, work: Callable[[], T]) -> T:
        """Run `work` (e.g. the demo driving the API) in a background thread while this
        thread keeps the children running, as `supervise` does; return its result or raise
        its exception. A failing child (`ChildFailing`) or Ctrl-C ends the wait at once;
        `work` is then left to die with the process (a daemon thread)."""
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(work())
            except BaseException as error:  # handed to the supervising thread
                done.set_exception(error)

        threading.Thread(target=run, name="supervised-work", daemon=True).start()
        while not done.done():
            self.supervise_once()
            self.look_after_the_broker()
            time.sleep(SUPERVISE_INTERVAL_S)
        return done.result()

    def look_after_the_broker(self, now: float | None = None) -> None:
        """On the embedded broker: start the thread that deletes what the workers committed
        (`_trim_consumed_every`), and every BROKER_WATCH_INTERVAL_S warn, with its figures,
        once its CPU or memory has grown far enough to slow the worker
        (`engine.stream.embedded.BrokerWatch`)."""
        if self.servers.kafka is None or self.stopping:
            return
        now = time.monotonic() if now is None else now
        if self._trimmer is None:
            self._trimmer = threading.Thread(
                target=self._trim_consumed_every, name="trim-consumed", daemon=True
            )
            self._trimmer.start()
        if self._broker_watch is None and self.servers.kafka.pid is not None:
            self._broker_watch = BrokerWatch(self.servers.kafka.pid)
        if self._broker_watch is not None and now >= self._next_watch:
            self._next_watch = now + BROKER_WATCH_INTERVAL_S
            if (warning := self._broker_watch.check()) is not None:
                self.notify(warning)

    def _trim_consumed_every(self) -> None:
        """Every TRIM_INTERVAL_S, until the system stops, delete from the embedded broker what
        the workers' group committed (`engine.stream.topics.trim_consumed`).

        In a thread of its own, with its own event loop: an event loop run in the
        supervising thread takes over SIGINT while it runs, and could swallow a Ctrl-C.
        """
        while not self._trimming_stopped.wait(TRIM_INTERVAL_S):
            try:
                asyncio.run(trim_consumed(self.settings))
            except (KafkaError, OSError) as error:
                self.notify(f"could not delete consumed records from the embedded broker: {error}")

    def supervise_once(self, now: float | None = None) -> None:
        """Look at every child once: note an exit and schedule its restart, or restart a
        child whose backoff is over. Nothing is restarted once the system is stopping."""
        now = time.monotonic() if now is None else now
        for child in self.children:
            if self.stopping:
                return
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart(child)
            elif (returncode := child.process.poll()) is not None:
                self._exited(child, returncode, now)

    def _exited(self, child: Child, returncode: int, now: float) -> None:
        up_s = now - child.started_at
        child.last_exit = describe_exit(returncode)
        child.last_exit_ts = time.time()
        child.exits_in_a_row = 1 if up_s >= BACKOFF_RESET_AFTER_S else child.exits_in_a_row + 1
        child.failed_starts = child.failed_starts + 1 if up_s < FAILING_WITHIN_S else 0
        self._write_record(child)
        if child.failed_starts >= FAILING_EXITS:
            raise ChildFailing(
                f"{child.name} keeps failing: {child.failed_starts} exits in a row, each "
                f"within {FAILING_WITHIN_S:.0f} s of its start (last: {child.last_exit}, "
                f"{child.restarts} restarts); its output: {child.where_output_goes}",
                log_tail=child.tail(),
            )
        delay = min(RESTART_BACKOFF_S * 2 ** (child.exits_in_a_row - 1), RESTART_BACKOFF_MAX_S)
        child.restart_at = now + delay
        self.notify(
            f"{child.name} {child.last_exit} after {up_s:.1f} s up (restarts so far: "
            f"{child.restarts}); restarting it in {delay:g} s; its output: "
            f"{child.where_output_goes}"
        )

    def _restart(self, child: Child) -> None:
        fresh = _spawn(child.command, self.env, child.log_path, child.name)
        child.process = fresh.process
        child.started_at = fresh.started_at
        child.restart_at = None
        child.restarts += 1
        self._write_record(child)
        self.notify(
            f"{child.name} restarted (restart {child.restarts}, pid {child.process.pid}); "
            f"its output: {child.where_output_goes}"
        )

    def _write_record(self, child: Child) -> None:
        """Record the child's restarts and last exit for `GET /healthz`; a Redis outage is
        reported, not fatal (supervising matters more than the record)."""
        if self._redis is None:
            self._redis = redis.Redis.from_url(str(self.settings.redis_url), socket_timeout=2.0)
        try:
            self.record.record(self._redis, child.name, child.status())
        except RedisError as error:
            self.notify(f"could not record {child.name}'s restarts in Redis: {error}")

    def stop(self) -> None:
        """Stop the API, then the learner and the workers, then the embedded servers; an
        exit from here on is not restarted."""
        self.stopping = True
        self._trimming_stopped.set()
        for child in reversed(self.children):
            child.stop()
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        if self._trimmer is not None:  # its last call to the broker, before the broker stops
            self._trimmer.join(TRIM_JOIN_TIMEOUT_S)
        self.servers.stop()
        if self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_system(
    settings: Settings,
    *,
    api_port: int | None = None,
    log_dir: Path | None = None,
    workers: int = 1,
    notify: Callable[[str], None] = print,
) -> System:
    """Start servers as needed, create topics, start the workers, the learner and the API;
    wait until ready. Keep it running with `System.supervise` or `System.run_supervised`,
    which report each exit and restart through `notify`.

    With `log_dir`, each child writes its output to `<log_dir>/<name>.log` (the workers
    are `worker`, or `worker-1`, `worker-2`, …; then `learner` and `api`); otherwise it
    shares the terminal. On failure everything started so far is stopped again.
    """
    if workers < 1:
        raise ValueError(f"at least one worker is needed, not {workers}")
    servers = EmbeddedServices(
        redis=settings.redis_url is None, kafka=settings.kafka_bootstrap is None
    )
    servers.__enter__()
    overrides: dict[str, object] = {"learner_in_workers": False}
    if servers.redis:
        overrides["redis_url"] = servers.redis.url
    if servers.kafka:
        overrides["kafka_bootstrap"] = servers.kafka.bootstrap
        overrides["kafka_session_timeout_s"] = EMBEDDED_SESSION_TIMEOUT_S
    if settings.model_key is None:
        overrides["model_key"] = SecretStr(secrets.token_urlsafe(32))
    port = api_port if api_port is not None else settings.api_port
    port = port or free_port()
    overrides["api_port"] = port
    child_settings = settings.model_copy(update=overrides)
    scratch_dir = Path(tempfile.mkdtemp(prefix="nba-up-"))
    system = System(
        settings=child_settings,
        api_url=f"http://{child_settings.api_host}:{port}",
        servers=servers,
        workers=workers,
        env={**os.environ, **child_settings.as_environment(), "TMPDIR": str(scratch_dir)},
        notify=notify,
        scratch_dir=scratch_dir,
    )
    try:
        asyncio.run(ensure_topics(child_settings))
        names = ["worker"] if workers == 1 else [f"worker-{n}" for n in range(1, workers + 1)]
        commands = [*(("worker", name) for name in names), ("learner", "learner"), ("api", "api")]
        _start_record(system, [name for _, name in commands])
        for command, name in commands:
            log_path = log_dir / f"{name}.log" if log_dir is not None else None
            system.children.append(_spawn(command, system.env, log_path, name, append=False))
        _wait_until_ready(system)
    except BaseException:
        system.stop()
        raise
    return system


def _start_record(system: System, names: list[str]) -> None:
    """List the children in the Redis record of processes, none restarted yet."""
    url = str(system.settings.redis_url)
    try:
        with redis.Redis.from_url(url, socket_timeout=5.0) as client:
            system.record.start(client, names)
    except RedisError as error:
        raise SupervisorError(f"Redis at {url} did not answer: {error}") from error


def _spawn(
    command: str, env: dict[str, str], log_path: Path | None, name: str, *, append: bool = True
) -> Child:
    """`nba <command>` as a child named `name`, its output to `log_path` (appended to, for a
    restart) or, without one, to the terminal."""
    if command == "worker":
        # static membership: the restarted worker takes its predecessor's place in the group
        # at once (a new member would wait for the broker to give up on a killed one)
        env = {**env, "NBA_WORKER_INSTANCE_ID": f"{env.get('NBA_WORKER_ID', 'nba-worker')}-{name}"}
    output: IO[bytes] | None = (
        log_path.open("ab" if append else "wb") if log_path is not None else None
    )
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", command],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT if output is not None else None,
            start_new_session=True,
            preexec_fn=die_with_parent_hook(),
        )
    finally:
        if output is not None:
            output.close()
    return Child(name=name, command=command, process=process, log_path=log_path)


def _wait_until_ready(system: System) -> None:
    """Wait for the API to be healthy and the workers to own every partition, each worker
    its share (every worker owns some, as far as the partitions go round)."""
    sharing = min(system.workers, system.settings.topic_partitions)
    deadline = time.monotonic() + READY_TIMEOUT_S
    last_state = "no answer yet"
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if (failed := system.failed_child()) is not None:
                raise SupervisorError(
                    f"{failed.name} {describe_exit(failed.process.returncode)} during "
                    f"start-up; its output: {failed.where_output_goes}",
                    log_tail=failed.tail(),
                )
            try:
                health = client.get(f"{system.api_url}/healthz").json()
                owners = [worker for worker in health.get("workers", []) if worker["partitions"]]
                owned = sum(len(worker["partitions"]) for worker in owners)
                if (
                    health["status"] == "ok"
                    and owned >= system.settings.topic_partitions
                    and len(owners) >= sharing
                ):
                    return
                last_state = (
                    f"health {health['status']}, {len(owners)} workers own {owned} partitions"
                )
            except httpx.HTTPError as error:
                last_state = f"API not answering ({error})"
            time.sleep(0.2)
    raise SupervisorError(f"the system was not ready within {READY_TIMEOUT_S:.0f} s: {last_state}")


def stop_on_signals() -> None:
    """Treat SIGTERM like Ctrl-C: raise KeyboardInterrupt, so every child is stopped.

    SIGINT gets Python's own handler back as well: a process started in the background by
    a shell inherits SIGINT ignored, and would then ignore a `kill -INT` meant to stop it.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
