"""Run the whole system from one command: servers, Faust workers (one by default), the
learner, the API.

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
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Self

import httpx
from pydantic import SecretStr

from engine.embedded import (
    EmbeddedServices,
    die_with_parent_hook,
    free_port,
    stop_process_group,
)
from engine.settings import Settings
from engine.topics import ensure_topics

READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
#: Joining the embedded broker's group waits half the session timeout: keep it short.
EMBEDDED_SESSION_TIMEOUT_S = 6.0


class SupervisorError(RuntimeError):
    """The system could not be brought up; the message says which part and why."""


@dataclass
class Child:
    """A child process of the supervisor with its output file (or the terminal)."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path | None

    def tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM its process group; SIGKILL if it has not exited in time."""
        stop_process_group(self.process, STOP_TIMEOUT_S)


@dataclass
class System:
    """A running system: where each part listens, and the processes behind it."""

    settings: Settings
    api_url: str
    servers: EmbeddedServices
    workers: int = 1
    children: list[Child] = field(default_factory=list)

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
        """A child that has exited, if any (the system is then broken)."""
        return next((child for child in self.children if child.process.poll() is not None), None)

    def stop(self) -> None:
        """Stop the API, then the learner and the workers, then the embedded servers."""
        for child in reversed(self.children):
            child.stop()
        self.servers.stop()

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
) -> System:
    """Start servers as needed, create topics, start the workers, the learner and the API;
    wait until ready.

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
    system = System(
        settings=child_settings,
        api_url=f"http://{child_settings.api_host}:{port}",
        servers=servers,
        workers=workers,
    )
    try:
        asyncio.run(ensure_topics(child_settings))
        env = {**os.environ, **child_settings.as_environment()}
        names = ["worker"] if workers == 1 else [f"worker-{n}" for n in range(1, workers + 1)]
        for name in names:
            system.children.append(_spawn("worker", env, log_dir, name))
        system.children.append(_spawn("learner", env, log_dir, "learner"))
        system.children.append(_spawn("api", env, log_dir, "api"))
        _wait_until_ready(system)
    except BaseException:
        system.stop()
        raise
    return system


def _spawn(command: str, env: dict[str, str], log_dir: Path | None, name: str) -> Child:
    """`nba <command>` as a child named `name` (its log file's name)."""
    log_path = log_dir / f"{name}.log" if log_dir is not None else None
    output: IO[bytes] | None = log_path.open("wb") if log_path is not None else None
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
    return Child(name=name, process=process, log_path=log_path)


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
                    f"{failed.name} exited with status {failed.process.returncode} during "
                    f"start-up:\n{failed.tail()}"
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


def stop_on_sigterm() -> None:
    """Treat SIGTERM like Ctrl-C: raise KeyboardInterrupt, so every child is stopped."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
