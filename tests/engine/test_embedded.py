"""The embedded Valkey and Kafka servers, started for real: they answer, stop, and never orphan."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

import engine
from engine import embedded
from engine.embedded import EmbeddedKafka, EmbeddedServerError, EmbeddedServices, EmbeddedValkey

REPO_ROOT = Path(engine.__file__).resolve().parent.parent


def gone(pid: int) -> bool:
    """True once `pid` has exited: no /proc entry, or a zombie nobody has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_until_gone(*pids: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not all(gone(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_valkey_answers_and_stops() -> None:
    with EmbeddedValkey() as server:
        pid = server.pid
        assert pid is not None
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        with redis.Redis.from_url(server.url) as client:
            assert client.ping()
            client.set("greeting", "hello")
            assert client.get("greeting") == b"hello"
    assert gone(pid)
    assert server.pid is None
    server.stop()  # idempotent


async def test_kafka_round_trips_a_message_and_stops() -> None:
    topic = f"test-{uuid.uuid4().hex}"
    with EmbeddedKafka() as broker:
        pid = broker.pid
        assert pid is not None
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"hello", key=b"customer-1")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), timeout=10)
        finally:
            await consumer.stop()
        assert (message.key, message.value) == (b"customer-1", b"hello")
    assert gone(pid)
    broker.stop()  # idempotent


@pytest.fixture
def taken_port_first(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the next `free_port()` return the port of an already running server of each kind."""
    ports: list[int] = []
    real_free_port = embedded.free_port
    monkeypatch.setattr(embedded, "free_port", lambda: ports.pop(0) if ports else real_free_port())
    return ports


@pytest.mark.parametrize("kind", [EmbeddedValkey, EmbeddedKafka])
def test_start_moves_to_another_port_when_its_port_is_taken(
    kind: type[EmbeddedValkey | EmbeddedKafka], taken_port_first: list[int]
) -> None:
    with kind() as first:
        taken_port_first.append(first.port)
        with kind() as second:  # the first server also speaks the protocol on the taken port
            assert second.port != first.port
            assert second.pid != first.pid


@pytest.mark.parametrize(
    ("kind", "complaint"),
    [(EmbeddedValkey, "Bad directive"), (EmbeddedKafka, "unexpected argument")],
)
def test_failed_start_reports_the_server_log(
    kind: type[EmbeddedValkey | EmbeddedKafka], complaint: str
) -> None:
    server = kind(extra_args=("--no-such-option", "1"))
    with pytest.raises(EmbeddedServerError, match=f"exited with status(.|\n)*{complaint}"):
        server.start()
    assert server.pid is None
    assert server.log_path is None  # its temp dir is cleaned up


def test_services_start_only_what_is_asked() -> None:
    with EmbeddedServices(redis=True, kafka=False) as services:
        assert services.redis is not None
        assert services.redis.pid is not None
        assert services.kafka is None


CHILD = """
import time
from engine.embedded import EmbeddedServices
services = EmbeddedServices().__enter__()
print(services.redis.pid, services.kafka.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(30)
def test_servers_die_when_their_parent_is_sigkilled(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TMPDIR": str(tmp_path)}
    with subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, env=env
    ) as parent:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2
        assert not any(gone(pid) for pid in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    orphans = [] if wait_until_gone(*pids) else [pid for pid in pids if not gone(pid)]
    for pid in orphans:  # do not leave them running when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not orphans, f"servers outlived their SIGKILLed parent: {orphans}"
