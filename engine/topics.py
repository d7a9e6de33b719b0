"""Create the engine's Kafka topics before anything produces to them.

A broker that auto-creates topics would give the first producer's topic a default
partition count; creating them up front gives the worker and the publisher the same one.
The `outcomes` topic has exactly one partition: one worker of the group owns it, and
with it the only copy of the propensity model that learns.
"""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from engine.settings import Settings

#: One partition, so that exactly one worker of the group learns.
OUTCOMES_PARTITIONS = 1


async def ensure_topics(settings: Settings) -> None:
    """Create the events, dead-letter and outcomes topics if they do not exist yet."""
    _, bootstrap = settings.require_servers()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        partitions = {
            settings.events_topic: settings.topic_partitions,
            settings.dlq_topic: settings.topic_partitions,
            settings.outcomes_topic: OUTCOMES_PARTITIONS,
        }
        wanted = [
            NewTopic(name, num_partitions=count, replication_factor=settings.topic_replication)
            for name, count in partitions.items()
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile elsewhere
                await admin.create_topics(wanted)
    finally:
        await admin.close()
