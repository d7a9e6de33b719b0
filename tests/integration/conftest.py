"""Fixtures for whole-system runs: a real Faust worker process on the session's servers, and
a real learner process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from engine.core.settings import Settings
from engine.stream.topics import ensure_topics
from features.stats import IngestStats

WORKER_READY_TIMEOUT_S = 60.0


@pytest.fixture
async def worker(
    settings: Settings, redis: Redis, tmp_path: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`nba worker` as a child process, returned once it owns every partition."""
    await ensure_topics(settings)
    log_path = tmp_path / "worker.log"
    process = _start("worker", settings, log_path)
    try:
        await _wait_for_partitions(settings, redis, process, log_path)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def learner(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`nba learner` as a child process (it needs no readiness: its jobs step from start)."""
    log_path = tmp_path / "learner.log"
    process = _start("learner", settings, log_path)
    try:
        yield process
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0, log_path.read_text()


def _start(command: str, settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """`nba <command>` on `settings`, its output to `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli", command],
            env={**os.environ, **settings.as_environment()},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def _wait_for_partitions(
    settings: Settings, redis: Redis, process: subprocess.Popen[bytes], log_path: Path
) -> None:
    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    async with asyncio.timeout(WORKER_READY_TIMEOUT_S):
        while True:
            if process.poll() is not None:
                pytest.fail(f"worker exited with {process.returncode}:\n{log_path.read_text()}")
            owned = sum(len(worker.partitions) for worker in await stats.live_workers())
            if owned >= settings.topic_partitions:
                return
            await asyncio.sleep(0.2)
