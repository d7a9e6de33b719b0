"""The Faust worker: keeps customer features current and learns from every answer.

Two thin agents; the logic lives in the domain packages.

`apply_events` (the `events` topic, partitioned by customer): decode the message (one
event or an envelope), apply the valid events to Redis in one round trip, send each
invalid item to the dead-letter topic with its reason, count. Answers to offers
(`offer_accepted`, `offer_declined`) that name a `decision_id` are then looked up in the
decision log and forwarded, with the x stored with the decision, to the `outcomes` topic
(`actions.decision_log`). A message is acknowledged only after that work succeeded, so
a crash or a Redis outage replays it later, and the store's event-id markers and the
log's answered markers make the replay harmless.

`learn_outcomes` (the `outcomes` topic, one partition, so one worker of the group runs
the model): takes the outcomes of every `checkpoint_interval_s` (or of
`MAX_OUTCOME_MESSAGES_PER_BATCH` messages, if sooner), learns them and saves a signed
checkpoint before they are acknowledged (`models.learning.Learner`); the API loads each
new version. A crash loses no outcome; those checkpointed but whose offsets Kafka had
not committed yet are learned again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import faust
import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from actions.catalog import load_catalog
from actions.decision_log import Attribution, DecisionLog
from engine.settings import Settings
from features.events import Rejection, decode_message
from features.stats import IngestCounts, IngestStats
from features.store import RedisFeatureStore
from models.checkpoints import CheckpointStore
from models.learning import Learner, Outcome, decode_outcomes, encode_outcomes

log = logging.getLogger(__name__)
T = TypeVar("T")

HEARTBEAT_INTERVAL_S = 2.0
FIRST_RETRY_DELAY_S = 0.1
MAX_RETRY_DELAY_S = 5.0
#: Outcome messages learned per checkpoint at most (a batch also ends every checkpoint interval).
MAX_OUTCOME_MESSAGES_PER_BATCH = 1000


def dead_letter(rejection: Rejection, item: Any, source: faust.types.EventT | None) -> bytes:
    """The dead-letter record: the item exactly as received, the reason and its origin."""
    raw = item.decode(errors="replace") if isinstance(item, bytes) else item
    origin = (
        {"partition": source.message.partition, "offset": source.message.offset}
        if source is not None
        else {}
    )
    record = {"reason": rejection.reason, "index": rejection.index, "item": raw, **origin}
    return orjson.dumps(record)


def create_app(settings: Settings) -> faust.App:
    """The Faust app with the events and learning agents, wired to the configured servers."""
    redis_url, bootstrap = settings.require_servers()
    signing_key = settings.require_model_key()
    catalog = load_catalog(settings.catalog_path)
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        # Faust creates a data folder even for in-memory tables: keep it out of the cwd
        datadir=Path(tempfile.gettempdir()) / f"nba-{settings.worker_id}-data",
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
    )
    events_topic = app.topic(
        settings.events_topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )
    dlq_topic = app.topic(
        settings.dlq_topic,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
    )
    outcomes_topic = app.topic(
        settings.outcomes_topic, key_serializer="raw", value_serializer="raw", partitions=1
    )

    redis = Redis.from_url(redis_url)
    store = RedisFeatureStore(
        redis, key_prefix=settings.key_prefix, dedup_ttl_seconds=settings.dedup_ttl_seconds
    )
    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    decision_log = DecisionLog(
        redis, key_prefix=settings.key_prefix, ttl_seconds=settings.decision_ttl_seconds
    )
    learner = Learner(
        CheckpointStore(redis, key_prefix=settings.key_prefix, signing_key=signing_key),
        catalog.base_rates(),
    )
    worker_name = f"{socket.gethostname()}:{os.getpid()}"

    @app.agent(events_topic)
    async def apply_events(stream: faust.StreamT[bytes]) -> None:
        try:
            async for payload in stream:
                events, rejections, items = decode_message(payload)
                for rejection in rejections:
                    record = dead_letter(rejection, items[rejection.index], stream.current_event)
                    delivery = await dlq_topic.send(value=record)
                    await delivery  # on the broker before this message is acknowledged
                result = await _retrying_redis(partial(store.apply, events))
                counts = IngestCounts(
                    applied=result.applied,
                    duplicates=result.duplicates,
                    dead_lettered=len(rejections),
                )
                await _retrying_redis(partial(stats.add, counts))
                attribution = await _retrying_redis(partial(decision_log.attribute, events))
                if attribution.outcomes:
                    delivery = await outcomes_topic.send(
                        value=encode_outcomes(attribution.outcomes)
                    )
                    await delivery  # on the broker before the answers are marked learned
                await _retrying_redis(partial(decision_log.settle, attribution))
                _log_skipped(attribution)
        finally:
            await stats.forget(worker_name)
            await redis.aclose()

    @app.agent(outcomes_topic)
    async def learn_outcomes(stream: faust.StreamT[bytes]) -> None:
        # `take_events` acknowledges a batch only once the loop body below has run for it
        batches = cast(faust.Stream[bytes], stream).take_events(
            MAX_OUTCOME_MESSAGES_PER_BATCH, within=settings.checkpoint_interval_s
        )
        async for batch in batches:
            outcomes: list[Outcome] = []
            for event in batch:
                try:
                    outcomes += decode_outcomes(event.value)
                except ValueError as error:
                    log.error("outcomes at offset %s skipped: %s", event.message.offset, error)
            if outcomes:
                learned = await _retrying_redis(partial(learner.learn, outcomes))
                log.info(
                    "learned %d outcomes (%d skipped); model checkpoint version %d",
                    learned.learned,
                    learned.skipped,
                    learned.checkpoint.version,
                )

    @app.timer(HEARTBEAT_INTERVAL_S)
    async def heartbeat() -> None:
        assigned = app.consumer.assignment()
        partitions = [tp.partition for tp in assigned if tp.topic == settings.events_topic]
        await stats.heartbeat(worker_name, partitions)

    return app


def _log_skipped(attribution: Attribution) -> None:
    """One log line per answer that cannot be learned from, saying why."""
    for reason, events in (
        ("its decision is unknown (expired or never recorded)", attribution.unknown_decision),
        ("its decision did not show that action", attribution.not_shown),
    ):
        for event in events:
            log.warning(
                "answer %s (%s of %s, decision %s) not learned from: %s",
                event.event_id,
                event.type,
                event.action_id,
                event.decision_id,
                reason,
            )


async def _retrying_redis(operation: Callable[[], Awaitable[T]]) -> T:
    """Run a Redis operation, waiting out an outage (with backoff) rather than losing work."""
    delay = FIRST_RETRY_DELAY_S
    while True:
        try:
            return await operation()
        except (RedisConnectionError, RedisTimeoutError) as error:
            log.warning("Redis unavailable (%s); retrying in %.1f s", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_S)


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Run one worker until SIGINT/SIGTERM."""
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    worker.execute_from_commandline()
