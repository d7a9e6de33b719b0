"""The clients and domain objects one API process shares across requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from actions.catalog import Catalog, load_catalog
from engine.settings import Settings
from features.publisher import EventPublisher
from features.stats import IngestStats
from features.store import RedisFeatureStore
from models.propensity import BaseRateModel, PropensityModel

REDIS_TIMEOUT_S = 1.0


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a route needs; built once in the app's lifespan and injected."""

    settings: Settings
    redis: Redis
    producer: AIOKafkaProducer
    store: RedisFeatureStore
    publisher: EventPublisher
    ingest_stats: IngestStats
    catalog: Catalog
    model: PropensityModel


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Connect to Redis and Kafka, load the catalog; close everything on exit."""
    redis_url, bootstrap = settings.require_servers()
    catalog = load_catalog(settings.catalog_path)
    redis = Redis.from_url(
        redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    try:
        await producer.start()
        yield Services(
            settings=settings,
            redis=redis,
            producer=producer,
            store=RedisFeatureStore(
                redis,
                key_prefix=settings.key_prefix,
                dedup_ttl_seconds=settings.dedup_ttl_seconds,
            ),
            publisher=EventPublisher(producer, settings.events_topic),
            ingest_stats=IngestStats(redis, key_prefix=settings.key_prefix),
            catalog=catalog,
            model=BaseRateModel(catalog.base_rates()),
        )
    finally:
        await producer.stop()
        await redis.aclose()
