"""The Faust worker: consumes the events topic and keeps customer features current.

The agent is thin: decode the message (one event or an envelope), apply the valid
events to Redis in one round trip, send each invalid item to the dead-letter topic with
its reason, count. A message is acknowledged only after that work succeeded, so a crash
or a Redis outage replays it later, and the store's event-id markers make the replay
harmless.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import faust
import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.settings import Settings
from features.events import Rejection, decode_message
from features.stats import IngestCounts, IngestStats
from features.store import RedisFeatureStore

log = logging.getLogger(__name__)
T = TypeVar("T")

HEARTBEAT_INTERVAL_S = 2.0
FIRST_RETRY_DELAY_S = 0.1
MAX_RETRY_DELAY_S = 5.0


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
    """The Faust app with the events agent, wired to the configured servers."""
    redis_url, bootstrap = settings.require_servers()
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
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

    redis = Redis.from_url(redis_url)
    store = RedisFeatureStore(
        redis, key_prefix=settings.key_prefix, dedup_ttl_seconds=settings.dedup_ttl_seconds
    )
    stats = IngestStats(redis, key_prefix=settings.key_prefix)
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
        finally:
            await stats.forget(worker_name)
            await redis.aclose()

    @app.timer(HEARTBEAT_INTERVAL_S)
    async def heartbeat() -> None:
        assigned = app.consumer.assignment()
        partitions = [tp.partition for tp in assigned if tp.topic == settings.events_topic]
        await stats.heartbeat(worker_name, partitions)

    return app


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
