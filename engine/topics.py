"""Create the engine's Kafka topics before anything produces to them.

A broker that auto-creates topics would give the first producer's topic a default
partition count; creating them up front gives the worker and the publisher the same one.
"""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from engine.settings import Settings


async def ensure_topics(settings: Settings) -> None:
    """Create the events and dead-letter topics if they do not exist yet."""
    _, bootstrap = settings.require_servers()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
            )
            for name in (settings.events_topic, settings.dlq_topic)
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile elsewhere
                await admin.create_topics(wanted)
    finally:
        await admin.close()
