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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

import engine
from engine.core.settings import Settings
from engine.stream import embedded
from engine.stream.embedded import (
    BrokerWatch,
    EmbeddedKafka,
    EmbeddedServerError,
    EmbeddedServices,
    EmbeddedValkey,
    is_embedded_broker,
)
from engine.stream.topics import ensure_topics

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
    [(EmbeddedValkey, "Bad directive"), (EmbeddedKafka, "unknown option")],
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
from engine.stream.embedded import EmbeddedServices
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


async def test_kafka_end_offset_counts_every_record_of_a_batch(settings: Settings) -> None:
    """Consumer lag is end offset - committed offset: the end must count records, not batches."""
    topic = settings.events_topic
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=50)
    await producer.start()
    try:
        sends = [await producer.send(topic, b"event", partition=0) for _ in range(100)]
        await asyncio.gather(*sends)  # lingering: the 100 records travel in a few batches
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        partition = TopicPartition(topic, 0)
        assert (await consumer.end_offsets([partition]))[partition] == 100
    finally:
        await consumer.stop()


async def test_topics_on_the_embedded_broker_get_retention(settings: Settings) -> None:
    assert settings.kafka_bootstrap is not None
    assert is_embedded_broker(settings.kafka_bootstrap)
    await ensure_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        names = [settings.events_topic, settings.outcomes_topic, settings.dlq_topic]
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        )
    finally:
        await admin.close()
    configs = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}
        for response in responses
        for resource in response.resources
    }
    cap = str(int(settings.embedded_kafka_retention_mb * 2**20))
    timed = str(int(settings.embedded_kafka_retention_s * 1000))
    assert configs[settings.events_topic]["retention.ms"] == timed
    assert configs[settings.outcomes_topic]["retention.ms"] == timed
    assert configs[settings.dlq_topic]["retention.ms"] == "-1"  # dead letters: size only
    assert {configs[name]["retention.bytes"] for name in names} == {cap}


async def test_retention_trims_a_partition_to_its_byte_cap(settings: Settings) -> None:
    """Past the cap the oldest segments go: the start offset moves, the end stays exact."""
    capped = settings.model_copy(update={"embedded_kafka_retention_mb": 0.25})
    await ensure_topics(capped)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        record = b"x" * 1000
        for _ in range(4):  # ~1.2 MiB into partition 0, in several requests
            await asyncio.gather(
                *[
                    await producer.send(settings.events_topic, record, partition=0)
                    for _ in range(300)
                ]
            )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    partition = TopicPartition(settings.events_topic, 0)
    try:
        deadline = time.monotonic() + 30  # the broker applies retention on its own schedule
        while (start := (await consumer.beginning_offsets([partition]))[partition]) == 0:
            assert time.monotonic() < deadline, "retention never trimmed the partition"
            await asyncio.sleep(0.5)
        end = (await consumer.end_offsets([partition]))[partition]
    finally:
        await consumer.stop()
    assert end == 1200
    assert 1200 - start <= 1.5 * 256  # at most ~1.25 caps of 256 one-KB records are kept


def test_broker_watch_warns_with_figures_when_the_process_gets_busy() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        watch = BrokerWatch(busy.pid, cpu_share_limit=0.3, window_s=1.0)
        start = time.monotonic()
        assert watch.check(start) is None  # no window has passed yet
        time.sleep(1.2)
        warning = watch.check()  # the first window is the baseline: busy from the start
        assert warning is None
        # a process busy from its start has not *grown*; a lower baseline makes it grow
        watch._baseline_share = 0.05
        time.sleep(1.2)
        warning = watch.check()
        assert warning is not None
        assert "of a core" in warning
        assert "NBA_KAFKA_BOOTSTRAP" in warning
        assert "(was 5% /" in warning
        assert watch.check() is None  # said once: not again within repeat_s
    finally:
        busy.kill()
        busy.wait()


def test_broker_watch_stays_quiet_on_an_idle_process_and_a_gone_one() -> None:
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        watch = BrokerWatch(idle.pid, window_s=0.5)
        watch.check()
        time.sleep(0.7)
        assert watch.check() is None
    finally:
        idle.kill()
        idle.wait()
    assert watch.check() is None  # gone: its supervisor reports that, not the watch
