"""Create the engine's Kafka topics before anything produces to them.

A broker that auto-creates topics would give the first producer's topic a default
partition count; creating them up front gives the worker and the publisher the same one.
The `outcomes` topic has exactly one partition: one worker of the group owns it, and
with it the only copy of the propensity model that learns.

On the embedded broker started by this process what is held must stay small: it keeps its
data in memory and snapshots all of it every second. So `nba up` deletes, every few
seconds, what the workers' group has committed (`trim_consumed`): the broker then holds
little more than what waits to be applied, and nothing is dropped before a worker had it.
The topics' retention (`embedded_kafka_retention_s` and `_mb`) is only a safety net for
a worker gone for a long time. A real cluster's topics keep the cluster's defaults, and
nothing is trimmed there.
"""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.records_to_delete import RecordsToDelete
from aiokafka.errors import TopicAlreadyExistsError

from engine.core.settings import Settings
from engine.stream.embedded import embedded_topic_configs, is_embedded_broker

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
        configs = _topic_configs(settings, bootstrap)
        wanted = [
            NewTopic(
                name,
                num_partitions=count,
                replication_factor=settings.topic_replication,
                topic_configs=configs.get(name, {}),
            )
            for name, count in partitions.items()
            if name not in existing
        ]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile elsewhere
                await admin.create_topics(wanted)
    finally:
        await admin.close()


def _topic_configs(settings: Settings, bootstrap: str) -> dict[str, dict[str, str]]:
    """Retention per topic on an embedded broker; none (the cluster's defaults) elsewhere.

    Dead letters are read by people, later: they are capped by size only.
    """
    if not is_embedded_broker(bootstrap):
        return {}
    timed = embedded_topic_configs(
        settings.embedded_kafka_retention_s, settings.embedded_kafka_retention_mb
    )
    return {
        settings.events_topic: timed,
        settings.outcomes_topic: timed,
        settings.dlq_topic: embedded_topic_configs(None, settings.embedded_kafka_retention_mb),
    }


async def trim_consumed(settings: Settings) -> int:
    """Delete, from the events and outcomes topics, the records the workers' consumer group
    has committed; return how many partitions moved their start. Only for the embedded
    broker: on a shared cluster other consumers may still need those records."""
    _, bootstrap = settings.require_servers()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.worker_id)
        consumed = {
            partition: RecordsToDelete(before_offset=position.offset)
            for partition, position in committed.items()
            if partition.topic in (settings.events_topic, settings.outcomes_topic)
            and position.offset > 0
        }
        if consumed:
            await admin.delete_records(consumed)
        return len(consumed)
    finally:
        await admin.close()
