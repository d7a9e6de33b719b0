"""The worker's batch pipeline without Faust, on the real embedded Valkey (and Kafka where a
failure of the real producer is the point).

A failure that is not transient costs the items it concerns, dead-lettered with the
reason, never the batch; a dead letter that cannot be sent ends the batch with an error
(the worker then exits for its supervisor to restart it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from redis.asyncio import Redis

from actions.catalog import load_catalog
from actions.decide import decide
from actions.decision_log import DecisionLog
from engine.core.settings import DEFAULT_CATALOG, Settings
from engine.stream.learner import pending_churn_labels
from engine.stream.pipeline import EventsPipeline, Message, dead_letter
from engine.stream.topics import ensure_topics
from features.events import Channel, Event, Rejection
from features.state import FeatureFold
from features.stats import IngestStats
from features.store import RedisFeatureStore
from features.tiers import EdgesCache
from models.exploration import ThompsonSampling
from models.online import OnlinePropensity
from models.segments import SegmentSamples
from models.snapshots import CustomerModelsFeed, SnapshotBudget

TS = "2026-01-05T09:30:00Z"


def item(event_id: str, customer_id: str = "C1", **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "customer_id": customer_id, "type": "login",
            "channel": "web", "ts": TS} | fields  # fmt: skip


class Sent:
    """A real producer's sends to one topic, kept in order for the test to read."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer, self.topic, self.values = producer, topic, list[bytes]()

    async def __call__(self, value: bytes) -> None:
        await self.producer.send_and_wait(self.topic, value)
        self.values.append(value)


@pytest.fixture
async def producers(settings: Settings) -> AsyncIterator[tuple[AIOKafkaProducer, ...]]:
    """A producer as the worker's, and one whose limit no outcome message passes."""
    await ensure_topics(settings)
    normal = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    tiny = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, max_request_size=600)
    await normal.start()
    await tiny.start()
    yield normal, tiny
    await normal.stop()
    await tiny.stop()


def pipeline(
    redis: Redis,
    settings: Settings,
    send_dead_letter: Callable[[bytes], Awaitable[None]],
    send_outcomes: Callable[[bytes], Awaitable[None]],
) -> tuple[EventsPipeline, RedisFeatureStore, DecisionLog]:
    store = RedisFeatureStore(
        redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
    )
    decision_log = DecisionLog(
        redis,
        key_prefix=settings.key_prefix,
        ttl_seconds=3600,
        no_answer_window_s=600.0,
        no_answer_mode="negative",
    )
    events = EventsPipeline(
        store=store,
        stats=IngestStats(redis, key_prefix=settings.key_prefix),
        decision_log=decision_log,
        customer_feed=CustomerModelsFeed(
            pending_churn_labels(redis, settings),
            SegmentSamples(redis, key_prefix=settings.key_prefix),
            store,
            SnapshotBudget(100.0),
        ),
        rfm_edges=EdgesCache(redis, key_prefix=settings.key_prefix),
        send_dead_letter=send_dead_letter,
        send_outcomes=send_outcomes,
        max_message_bytes=settings.max_message_bytes,
        max_clock_skew_s=settings.max_clock_skew_s,
    )
    return events, store, decision_log


async def test_an_answer_whose_outcome_the_broker_refuses_costs_that_answer_alone(
    redis: Redis, settings: Settings, producers: tuple[AIOKafkaProducer, ...]
) -> None:
    normal, tiny = producers
    dead_letters = Sent(normal, settings.dlq_topic)
    outcomes = Sent(tiny, settings.outcomes_topic)  # refuses every outcome message: too large
    events, store, decision_log = pipeline(redis, settings, dead_letters, outcomes)
    await events.apply([Message(orjson.dumps(item("e0")), partition=0, offset=0)])
    features = await store.read("C1")
    assert features is not None
    catalog = load_catalog(DEFAULT_CATALOG)
    decision = decide(
        customer_id="C1",
        channel=Channel.WEB,
        features=features,
        catalog=catalog,
        policy=ThompsonSampling(OnlinePropensity(catalog.base_rates()), seed=1),
        n=1,
        now=Event.model_validate(item("x")).epoch_seconds,
    )
    await decision_log.record(decision)
    shown = decision.actions[0].action_id
    answer = item("a1", type="offer_accepted", action_id=shown, decision_id=decision.decision_id)
    envelope = [item("e1"), answer, item("e2", customer_id="C2"), {"event_id": "bad"}]

    await events.apply([Message(orjson.dumps(envelope), partition=0, offset=1)])

    assert events.progress.positions == {0: 2}
    assert outcomes.values == []
    records = [orjson.loads(value) for value in dead_letters.values]
    # the invalid item once from the batch, once more when the batch is taken apart
    assert {record["index"] for record in records} == {1, 3}
    [refused] = [record for record in records if record["index"] == 1]
    assert refused["item"] == answer
    assert refused["reason"].startswith("could not be processed: MessageSizeTooLargeError")
    assert (refused["partition"], refused["offset"]) == (0, 1)
    for customer, count in (("C1", 3), ("C2", 1)):  # every event applied, each once
        features = await store.read(customer)
        assert features is not None
        assert features["event_count"] == count
    counts = await IngestStats(redis, key_prefix=settings.key_prefix).read()
    assert counts.applied == 4  # e0, e1, the answer, e2
    assert counts.dead_lettered >= 2  # the answer and the invalid item (counted per send)


async def test_a_dead_letter_that_cannot_be_sent_fails_the_batch(
    redis: Redis, settings: Settings, producers: tuple[AIOKafkaProducer, ...]
) -> None:
    normal, tiny = producers
    events, _, _ = pipeline(
        redis, settings, Sent(tiny, settings.dlq_topic), Sent(normal, settings.outcomes_topic)
    )
    bad = {"event_id": "bad", "note": "n" * 1000}  # its dead letter outgrows the tiny limit
    with pytest.raises(MessageSizeTooLargeError):
        await events.apply([Message(orjson.dumps([bad]), partition=0, offset=0)])
    assert events.progress.positions == {}  # not acknowledged: the next worker gets it


def test_a_dead_letter_too_large_for_a_message_is_cut_to_fit() -> None:
    huge = b'{"event_id": "x", "note": "' + b"y" * 100_000 + b'"'  # not JSON: kept as text
    record = dead_letter(
        Rejection(0, None, "message is not valid JSON"),
        huge,
        Message(huge, partition=3, offset=9),
        max_bytes=10_000,
    )
    assert len(record) <= 10_000
    decoded = orjson.loads(record)
    assert decoded["item_truncated"] is True
    assert decoded["item_bytes"] == len(huge)
    assert huge.decode().startswith(decoded["item"])
    assert (decoded["partition"], decoded["offset"], decoded["index"]) == (3, 9, 0)


def test_a_dead_letter_that_fits_is_whole() -> None:
    record = dead_letter(
        Rejection(1, "e1", "why"), {"event_id": "e1"}, Message(b"[]", 0, 5, 10), max_bytes=1000
    )
    assert orjson.loads(record) == {
        "reason": "why", "index": 11, "item": {"event_id": "e1"}, "partition": 0, "offset": 5
    }  # fmt: skip


class Kept:
    """Messages a pipeline sends, kept in a list: the pipeline's own contract, no broker."""

    def __init__(self) -> None:
        self.values: list[bytes] = []

    async def __call__(self, value: bytes) -> None:
        self.values.append(value)


async def test_a_batch_applies_without_a_broker_and_dead_letters_its_bad_items(
    redis: Redis, settings: Settings
) -> None:
    dead_letters, outcomes = Kept(), Kept()
    events, store, _ = pipeline(redis, settings, dead_letters, outcomes)
    envelope = [item("e1"), {"event_id": "bad"}, item("e2", customer_id="C2"), item("e3")]
    await events.apply([Message(orjson.dumps(envelope), partition=3, offset=41)])
    assert events.progress.positions == {3: 42}
    [record] = [orjson.loads(value) for value in dead_letters.values]
    assert (record["index"], record["item"], record["offset"]) == (1, {"event_id": "bad"}, 41)
    assert outcomes.values == []  # no answer in the batch
    for customer, count in (("C1", 2), ("C2", 1)):
        features = await store.read(customer)
        assert features is not None
        assert features["event_count"] == count
