"""The README's run path: `nba up` and `nba demo` on embedded servers, and a clean exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis as AsyncRedis

from engine.core.settings import Settings
from engine.stream.embedded import free_port
from engine.stream.topics import ensure_topics
from features.stats import IngestStats

READY_TIMEOUT_S = 90.0
EXIT_TIMEOUT_S = 30.0
#: Five failed starts of the API and the backoffs between them (1 + 2 + 4 + 8 s); an API
#: start takes a few seconds on a quiet machine, many more on a busy one.
GIVE_UP_TIMEOUT_S = 150.0


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (children of children included)."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            children = (task / "children").read_text().split() if task.exists() else []
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    frontier.append(child)
    return found


def alive(pid: int) -> bool:
    """True if the process exists and is not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def owns_partitions(settings: Settings) -> bool:
    """Whether the live workers of `settings`' group own every partition of `events`."""
    client = AsyncRedis.from_url(str(settings.redis_url))
    try:
        workers = await IngestStats(client, key_prefix=settings.key_prefix).live_workers()
    finally:
        await client.aclose()
    return sum(len(worker.partitions) for worker in workers) >= settings.topic_partitions


async def partition_starts(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """The first offset still held in each partition of `topic`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        if not partitions:
            await consumer.topics()  # fetch the metadata once
            found = consumer.partitions_for_topic(topic) or set()
            partitions = [TopicPartition(topic, p) for p in found]
        return dict(await consumer.beginning_offsets(partitions))
    finally:
        await consumer.stop()


def clean_environment() -> dict[str, str]:
    """The caller's environment without any configured server: embedded ones start."""
    return {key: value for key, value in os.environ.items() if not key.startswith("NBA_")}


def start_up(
    tmp_path: Path, env: dict[str, str] | None = None, *options: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "up", "--api-port", str(port), *options],
            env=env if env is not None else clean_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    api_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while b"nba-engine is up" not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"`nba up` did not come up:\n{log_path.read_text()}")
        time.sleep(0.2)
    return process, api_url, log_path


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_up_serves_then_stops_everything_it_started(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    process, api_url, log_path = start_up(tmp_path)
    started = descendants(process.pid)
    try:
        assert len(started) >= 5, "valkey, noida-db, worker, learner and api should be running"
        event = {"event_id": "cli-1", "customer_id": "C1", "type": "login",
                 "channel": "branch", "ts": "2026-02-01T10:00:00Z"}  # fmt: skip
        assert httpx.post(f"{api_url}/v1/events", json=event).status_code == 202
        deadline = time.monotonic() + 30
        while (profile := httpx.get(f"{api_url}/v1/customers/C1")).status_code == 404:
            assert time.monotonic() < deadline, "the event never reached the features"
            time.sleep(0.2)
        assert profile.json()["features"]["ch_branch_count"] == 1
        # once the worker has committed the event, the supervisor deletes it from the
        # embedded broker, which then holds only what waits
        [bootstrap] = re.findall(r"embedded Kafka.*?(127\.0\.0\.1:\d+)", log_path.read_text())
        while sum(asyncio.run(partition_starts(bootstrap, "events")).values()) < 1:
            assert time.monotonic() < deadline, "the consumed event was never trimmed"
            time.sleep(0.5)
    finally:
        process.send_signal(stop_signal)
        assert process.wait(EXIT_TIMEOUT_S) == 0, log_path.read_text()
    deadline = time.monotonic() + 10
    while (left := {pid for pid in started if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left behind: {left}"


def test_up_uses_configured_servers_instead_of_starting_its_own(
    tmp_path: Path, settings: Settings
) -> None:
    env = clean_environment() | settings.as_environment()
    process, api_url, log_path = start_up(tmp_path, env)
    try:
        commands = {Path(f"/proc/{pid}/cmdline").read_bytes() for pid in descendants(process.pid)}
        assert not [c for c in commands if b"valkey-server" in c or b"noida-db" in c]
        assert len(commands) == 3, "only the worker, the learner and the API"
        event = {"event_id": "cfg-1", "customer_id": "C7", "type": "login",
                 "channel": "web", "ts": "2026-02-01T10:00:00Z"}  # fmt: skip
        assert httpx.post(f"{api_url}/v1/events", json=event).status_code == 202
        features_key = f"{settings.key_prefix}cust:{{C7}}:s".encode()
        with redis.Redis.from_url(str(settings.redis_url)) as client:
            deadline = time.monotonic() + 30
            while not client.exists(features_key):
                assert time.monotonic() < deadline, "the event never reached the given Redis"
                time.sleep(0.2)
            # churn and segments are learned by the learner, off the worker's event loop
            lock_key = f"{settings.key_prefix}nba:lock:customer-models"
            while (holder := client.get(lock_key)) is None:
                assert time.monotonic() < deadline, "nothing took the customer-models lock"
                time.sleep(0.2)
            assert holder.startswith(b"learner@"), holder
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(EXIT_TIMEOUT_S) == 0, log_path.read_text()


def test_up_with_two_workers_is_ready_when_both_share_the_partitions(
    tmp_path: Path, settings: Settings
) -> None:
    env = clean_environment() | settings.as_environment()
    process, api_url, log_path = start_up(tmp_path, env, "--workers", "2")
    try:
        commands = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in descendants(process.pid)]
        assert sum(b"worker" in command for command in commands) == 2
        owners = [w for w in httpx.get(f"{api_url}/healthz").json()["workers"] if w["partitions"]]
        assert len(owners) == 2
        assert sum(len(worker["partitions"]) for worker in owners) == settings.topic_partitions
        events = [{"event_id": f"two-{n}", "customer_id": f"T{n}", "type": "login",
                   "channel": "web", "ts": "2026-02-01T10:00:00Z"} for n in range(20)]  # fmt: skip
        assert httpx.post(f"{api_url}/v1/events", json=events).status_code == 202
        deadline = time.monotonic() + 30
        for n in range(20):
            while httpx.get(f"{api_url}/v1/customers/T{n}").status_code == 404:
                assert time.monotonic() < deadline, f"customer T{n}'s event was not applied"
                time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(EXIT_TIMEOUT_S) == 0, log_path.read_text()


def test_up_refuses_a_worker_count_below_one() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "engine.cli", "up", "--workers", "0"],
        env=clean_environment(),
        capture_output=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert b"at least one worker is needed, not 0" in finished.stderr


def test_the_learner_refuses_to_start_without_redis() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "engine.cli", "learner"],
        env=clean_environment(),
        capture_output=True,
        timeout=60,
    )
    assert finished.returncode == 2
    assert b"NBA_REDIS_URL must be set" in finished.stdout + finished.stderr


def test_a_stopped_worker_leaves_no_data_folder_behind(tmp_path: Path, settings: Settings) -> None:
    asyncio.run(ensure_topics(settings))
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "worker"],
            env=clean_environment() | settings.as_environment() | {"TMPDIR": str(temporary)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not asyncio.run(owns_partitions(settings)):
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the worker never owned the partitions"
            time.sleep(0.2)
        assert list(temporary.iterdir()) != [], "Faust's data folder, while the worker runs"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(EXIT_TIMEOUT_S)
    assert list(temporary.iterdir()) == []


def test_killed_supervisor_leaves_no_orphans(tmp_path: Path) -> None:
    process, _, _ = start_up(tmp_path)
    started = descendants(process.pid)
    assert len(started) >= 4
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    while (left := {pid for pid in started if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left behind: {left}"


def test_demo_in_its_real_batch_shapes_applies_and_learns_everything(tmp_path: Path) -> None:
    """The demo's own batch shapes: 3,000 customers, each simulated day's events in requests
    of EVENTS_PER_REQUEST and its ~1,200 impressions and answers in one request."""
    result = subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--customers", "3000", "--days", "2"],
        env=clean_environment() | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = result.stdout
    assert "│ 1,200 " in report.split("decisions served")[1].splitlines()[0]
    sent = int(report.split("events sent (API accepted)")[1].split("│")[1].replace(",", ""))
    applied = report.split("events processed by the worker")[1].split("│")[1]
    assert sent > 10_000
    assert applied.strip().startswith(f"{sent:,} applied")
    # every accept and decline of the top action was learned from
    answers = report.split("answers to the top action")[1].split("│")[1]
    counts = dict(reversed(part.split()) for part in answers.split(","))
    learned = report.split("model learned")[1].split("│")[1]
    answered = int(counts["accept"].replace(",", "")) + int(counts["decline"].replace(",", ""))
    assert answered > 0
    assert f": {answered:,} answers learned, 0 with an unknown decision" in learned
    version = int(learned.split("version")[1].split(":")[0])
    assert version >= 1
    assert len(report.split("accept rate by day")[1].split("│")[1].split()) == 2


def child_pids(supervisor: int, command: bytes) -> set[int]:
    """The supervisor's children running `nba <command>`."""
    found = set()
    for pid in descendants(supervisor):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if arguments[1:4] == [b"-m", b"engine.cli", command]:
                found.add(pid)
    return found


def test_up_restarts_a_killed_worker_and_every_event_is_applied_once(
    tmp_path: Path, settings: Settings
) -> None:
    scratch = tmp_path / "tmp"  # where the supervisor puts its children's TMPDIR
    scratch.mkdir()
    env = clean_environment() | settings.as_environment() | {"TMPDIR": str(scratch)}
    process, api_url, log_path = start_up(tmp_path, env)
    customers, per_request = 300, 100
    events = [{"event_id": f"k-{n}", "customer_id": f"K{n % customers}", "type": "login",
               "channel": "web", "ts": f"2026-02-01T10:{n // 60 % 60:02}:{n % 60:02}Z"}
              for n in range(3000)]  # fmt: skip
    batches = [events[start : start + per_request] for start in range(0, 3000, per_request)]
    accepted = 0
    api = httpx.Client(base_url=api_url, timeout=10)  # one client: a new one costs ~100 ms

    def post(batch: list[dict[str, str]]) -> None:
        nonlocal accepted
        response = api.post("/v1/events", json=batch)
        assert response.status_code == 202, response.text
        accepted += response.json()["accepted"]

    try:
        (worker,) = child_pids(process.pid, b"worker")
        host = socket.gethostname()
        old = f"worker@{host}:{worker}"
        for batch in batches[:10]:  # before: the worker is busy with these when it is killed
            post(batch)
        os.kill(worker, signal.SIGKILL)
        for batch in batches[10:20]:  # during: the API answers while no worker runs
            post(batch)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            health = api.get("/healthz").json()
            new = {f"worker@{host}:{pid}" for pid in child_pids(process.pid, b"worker")} - {old}
            owned = sum(len(w["partitions"]) for w in health["workers"] if w["name"] in new)
            if owned == settings.topic_partitions:
                break
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, f"no new worker took the partitions: {health}"
            time.sleep(0.2)
        for batch in batches[20:]:  # after: the new worker owns every partition
            post(batch)
        assert accepted == len(events)
        while (ingest := api.get("/healthz").json()["ingest"])["applied"] < accepted:
            assert time.monotonic() < deadline, f"not every event was applied: {ingest}"
            time.sleep(0.2)
        health = api.get("/healthz").json()
        assert health["ingest"]["applied"] == accepted, "an event was applied twice"
        assert health["processes"]["worker"]["restarts"] == 1
        assert health["processes"]["worker"]["last_exit"] == "killed by SIGKILL"
        assert health["processes"]["api"]["restarts"] == 0
        for n in range(customers):
            profile = api.get(f"/v1/customers/K{n}").json()
            assert profile["features"]["event_count"] == len(events) // customers, f"K{n}"
        assert b"worker killed by SIGKILL" in log_path.read_bytes()
        assert b"worker restarted (restart 1" in log_path.read_bytes()
    finally:
        api.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(EXIT_TIMEOUT_S) == 0, log_path.read_text()
    # the killed worker could not remove its data folder: the supervisor removed it
    assert list(scratch.iterdir()) == []


def test_up_stops_everything_when_a_child_keeps_failing_to_start(
    tmp_path: Path, settings: Settings
) -> None:
    env = clean_environment() | settings.as_environment()
    process, api_url, log_path = start_up(tmp_path, env)
    started = descendants(process.pid)
    port = int(api_url.rsplit(":", 1)[1])
    try:
        (api,) = child_pids(process.pid, b"api")
        os.kill(api, signal.SIGKILL)
        with socket.socket() as squatter:  # the port is taken while the API is down
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            deadline = time.monotonic() + 5
            while True:
                try:
                    squatter.bind(("127.0.0.1", port))
                    break
                except OSError:
                    assert time.monotonic() < deadline, "the killed API's port stayed taken"
                    time.sleep(0.01)
            squatter.listen()
            status = process.wait(GIVE_UP_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert status == 1, output
    assert "api keeps failing: 5 exits in a row" in output
    assert "address already in use" in output.lower()
    assert "restarts so far: 3" in output
    deadline = time.monotonic() + 10
    while (left := {pid for pid in started if alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"processes left behind: {left}"
