"""The embedded broker's CPU per fetch, against the record batches its partition holds.

Why: a broker that finds an offset by scanning the partition's batches costs more CPU per
fetch the longer it runs: the earlier embedded broker (Tansu, memory storage) did, which is
why the default moved to noida-db (benchmarks/NOTES.md has the figures of both). A broker
that indexes its log costs the same per fetch however many batches the partition holds;
this benchmark checks that the embedded one does, and how much memory a stored batch takes.

One round: a record of RECORD_BYTES produced (`acks="all"`, sent alone) and then fetched
by a consumer waiting at the end of the partition, as the worker waits for new events.
Subject: the broker's CPU time per round on a partition already holding 20,000 batches
of one record each (4,000 with --quick). Baseline, in the same run: the same on a new
partition of the same broker, measured right after (the cost is per partition, not per
broker). Also reported: the same at half as many batches stored, the round's wall time,
and the broker's resident memory per stored batch. Each repeat runs its own broker.

Run: `python -m benchmarks.embedded_broker [--quick]`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.common import Result, benchmark_main, median_of, process_cpu_seconds
from engine.stream.embedded import EmbeddedKafka, EmbeddedServices

NAME = "embedded_broker"
RECORD_BYTES = 300  # about one event of the simulated bank as JSON
ROUNDS = 200  # produce-and-fetch rounds per measurement
#: Producers filling a partition side by side: each request carries one batch of one record.
FILLING_PRODUCERS = 8
FETCH_MAX_WAIT_MS = 50  # as the worker's transport waits (engine/stream/kafka_transport.py)
#: (batches stored in the measured partition, repeats)
FULL = (20_000, 3)
QUICK = (4_000, 2)


def run(quick: bool = False) -> Result:
    """Fill a partition, time rounds on it and on a new one; return the result (not written)."""
    stored, repeats = QUICK if quick else FULL
    print(
        f"{NAME}: produce-and-fetch rounds on a partition holding {stored:,} batches "
        f"(and {stored // 2:,}) against a new partition, {repeats} repeats",
        flush=True,
    )
    figures = median_of(repeats, lambda: _one_repeat(stored))
    filled = figures["filled_broker_cpu_us_per_round"].median
    fresh = figures["fresh_broker_cpu_us_per_round"].median
    return Result(
        name=NAME,
        parameters={
            "quick": quick,
            "stored_batches": stored,
            "records_per_batch": 1,
            "record_bytes": RECORD_BYTES,
            "rounds_per_measurement": ROUNDS,
            "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
            "repeats": repeats,
        },
        figures=figures,
        subject="filled_broker_cpu_us_per_round",
        baseline="fresh_broker_cpu_us_per_round",
        notes=[
            f"subject: one record produced and fetched on a partition holding {stored:,} "
            "one-record batches; baseline: the same on a new partition of the same broker, "
            "measured right after; both the broker's CPU time (/proc) per round",
            f"{(filled - fresh) / stored:.3f} µs of broker CPU per round for each batch "
            "the partition holds (0 when a fetch does not depend on what is stored)",
        ],
    )


def _one_repeat(stored: int) -> dict[str, float]:
    with EmbeddedServices(redis=False, kafka=True) as services:
        assert services.kafka is not None
        return asyncio.run(_measure(services.kafka, stored))


async def _measure(kafka: EmbeddedKafka, stored: int) -> dict[str, float]:
    await _create_topics(kafka.bootstrap, ["filled", "fresh"])
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        rss_before = _rss_bytes(kafka.pid)
        await _fill(kafka.bootstrap, "filled", stored // 2)
        half_cpu, _ = await _rounds(kafka, producer, "filled")
        await _fill(kafka.bootstrap, "filled", stored - stored // 2)
        rss_filled = _rss_bytes(kafka.pid)
        filled_cpu, filled_wall = await _rounds(kafka, producer, "filled")
        fresh_cpu, fresh_wall = await _rounds(kafka, producer, "fresh")
    finally:
        await producer.stop()
    return {
        "filled_broker_cpu_us_per_round": filled_cpu,
        "fresh_broker_cpu_us_per_round": fresh_cpu,
        "half_filled_broker_cpu_us_per_round": half_cpu,
        "filled_round_wall_ms": filled_wall,
        "fresh_round_wall_ms": fresh_wall,
        "broker_rss_bytes_per_stored_batch": (rss_filled - rss_before) / stored,
    }


async def _create_topics(bootstrap: str, names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, num_partitions=1, replication_factor=1) for name in names]
        )
    finally:
        await admin.close()


async def _fill(bootstrap: str, topic: str, batches: int) -> None:
    """Produce `batches` one-record batches: each producer sends its next record only once
    the broker has the previous one, so no two records share a batch."""
    producers = [
        AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        for _ in range(FILLING_PRODUCERS)
    ]
    await asyncio.gather(*(producer.start() for producer in producers))
    record = b"x" * RECORD_BYTES

    async def send(producer: AIOKafkaProducer, count: int) -> None:
        for _ in range(count):
            await producer.send_and_wait(topic, record, partition=0)

    try:
        shares = [batches // FILLING_PRODUCERS] * FILLING_PRODUCERS
        shares[0] += batches % FILLING_PRODUCERS
        await asyncio.gather(*(send(p, n) for p, n in zip(producers, shares, strict=True)))
    finally:
        await asyncio.gather(*(producer.stop() for producer in producers))


async def _rounds(
    kafka: EmbeddedKafka, producer: AIOKafkaProducer, topic: str
) -> tuple[float, float]:
    """(broker CPU µs, wall ms) per round: a record produced, then fetched at the log end."""
    partition = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )
    await consumer.start()
    try:
        consumer.assign([partition])
        await consumer.seek_to_end(partition)
        record = b"y" * RECORD_BYTES
        cpu_before, started = process_cpu_seconds(kafka.pid), time.perf_counter()
        for _ in range(ROUNDS):
            await producer.send_and_wait(topic, record, partition=0)
            while not (await consumer.getmany(partition, timeout_ms=1000)).get(partition):
                pass
        wall = time.perf_counter() - started
        cpu = process_cpu_seconds(kafka.pid) - cpu_before
    finally:
        await consumer.stop()
    return cpu / ROUNDS * 1e6, wall / ROUNDS * 1e3


def _rss_bytes(pid: int) -> int:
    """The process's resident memory (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def main() -> None:
    benchmark_main(run, __doc__ or NAME)


if __name__ == "__main__":
    main()
