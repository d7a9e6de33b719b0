"""The Faust worker: keeps customer features current and learns from every answer.

Two thin agents; the logic lives in the domain packages.

`apply_events` (the `events` topic, partitioned by customer): takes the messages that
arrived together (up to MAX_EVENT_MESSAGES_PER_BATCH, each one event or an envelope),
decodes them, applies their valid events to Redis in one transaction, sends each invalid
item — and each event the store refused as later than the allowed lateness — to the
dead-letter topic with its reason, counts. Answers to offers (`offer_accepted`,
`offer_declined`) that name a `decision_id` are then looked up in the decision log and
forwarded, with the x stored with the decision, to the `outcomes` topic
(`actions.decision_log`). Messages are acknowledged only after that work succeeded, so a
crash or a Redis outage replays them later, and the event ids kept in each customer's
state and the log's answered markers make the replay harmless.

`learn_outcomes` (the `outcomes` topic, one partition, so one worker of the group runs
the model): takes the outcomes of every `checkpoint_interval_s` (or of
`MAX_OUTCOME_MESSAGES_PER_BATCH` messages, if sooner), learns them and saves a signed
checkpoint before they are acknowledged (`models.learning.Learner`); the API loads each
new version. A crash loses no outcome; those checkpointed but whose offsets Kafka had
not committed yet are learned again.

`walk_customer_base` and `learn_customer_models` (timers, one process at a time by lock):
the whole-base jobs of `engine.learner`, run here only with `learner_in_workers` (the
default for a lone `nba worker`); `nba up` runs them in a learner process instead, off
this event loop. After each applied batch, `identity_linked` events link identifiers to
their customer (`RedisFeatureStore.link`, merging features).

`expire_unanswered` (a timer, every `NO_ANSWER_SWEEP_INTERVAL_S` on every worker): closes
the no-answer windows that are due in one atomic Redis script, then hands the closed
windows on — as negatives to the `outcomes` topic in mode `negative` — and deletes them
only once the broker has them (`actions.decision_log`). Workers sweeping at the same
time close each window once; a window handed on twice is learned once, as the learner
skips negatives it already learned.

Churn risk and segments (`models.churn`, `models.segments`): after each batch is applied,
`apply_events` feeds them (`CustomerModelsFeed`: closure labels queued, activity noted,
the event-time watermark moved, one snapshot and segment sample per customer per churn
horizon). `learn_customer_models` (every `checkpoint_interval_s`) learns them in one
place: the process holding a Redis lock (`CustomerModelsLearner`) expires due labels,
learns both models and checkpoints them (`nba:model:churn`, `nba:model:segments`). A
lock, not the `outcomes` partition, because the labels come from every events partition
and from the clock, not from a topic: no topic to add, and a lost holder is replaced
within the lock's TTL.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, cast

import faust
import orjson

from actions.catalog import load_catalog
from actions.decision_log import Attribution, DecisionLog
from engine.learner import (
    BASE_WALK_INTERVAL_S,
    BaseJobs,
    pending_churn_labels,
    process_name,
)
from engine.redis_client import connect_redis, retrying_redis
from engine.runtime import tune_garbage_collector
from engine.settings import Settings
from features.events import Event, EventType, Rejection, decode_message
from features.state import FeatureFold
from features.stats import IngestStats
from features.store import LateEvent, RedisFeatureStore
from features.tiers import EdgesCache
from models.checkpoints import CheckpointStore
from models.churn import CustomerModelsFeed, SnapshotBudget
from models.learning import Learner, Outcome, decode_outcomes, encode_outcomes
from models.offpolicy import BanditLog
from models.segments import SegmentSamples

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 2.0
#: Messages of `events` applied together at most, and how long a batch waits to fill up:
#: under load a batch is several envelopes (one store transaction and one churn script
#: for all); a lone message waits EVENT_BATCH_WAIT_S before it is applied.
MAX_EVENT_MESSAGES_PER_BATCH = 8
EVENT_BATCH_WAIT_S = 0.005
#: Outcome messages learned per checkpoint at most (a batch also ends every checkpoint interval).
MAX_OUTCOME_MESSAGES_PER_BATCH = 1000
#: How often each worker closes due no-answer windows and hands them on.
NO_ANSWER_SWEEP_INTERVAL_S = 1.0
#: No-answer windows closed, and handed on, per sweep at most.
NO_ANSWER_BATCH = 1000
#: How often each worker re-reads the RFM quintile edges its churn snapshots are read with.
RFM_EDGES_REFRESH_S = 5.0
#: No-answer negatives per `outcomes` message (keeps a message well under Kafka's 1 MB).
OUTCOMES_PER_MESSAGE = 100


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


def late_rejections(late: list[LateEvent], items: Sequence[Any]) -> list[Rejection]:
    """Rejections for events the store refused as too late, pointing at their envelope item.

    The envelope's items are decoded only when there is a late event to point at.
    """
    if not late:
        return []
    index_of = {
        item.get("event_id"): index for index, item in enumerate(items) if isinstance(item, dict)
    }
    return [
        Rejection(index_of[refused.event.event_id], refused.event.event_id, refused.reason)
        for refused in late
    ]


def create_app(settings: Settings, *, datadir: Path) -> faust.App:
    """The Faust app with the events and learning agents, wired to the configured servers.

    Faust creates `datadir` even for in-memory tables; nothing in it outlives the worker.
    """
    redis_url, bootstrap = settings.require_servers()
    signing_key = settings.require_model_key()
    catalog = load_catalog(settings.catalog_path)
    app = faust.App(
        settings.worker_id,
        broker=f"nbakafka://{bootstrap}",  # engine.kafka_transport: a short fetch wait
        store="memory://",
        datadir=datadir,
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

    redis = connect_redis(redis_url)
    store = RedisFeatureStore(
        redis,
        FeatureFold(settings.feature_config()),
        key_prefix=settings.key_prefix,
        cached_states=settings.state_cache_size,
    )
    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    decision_log = DecisionLog(
        redis,
        key_prefix=settings.key_prefix,
        ttl_seconds=settings.decision_ttl_seconds,
        no_answer_window_s=settings.no_answer_window_s,
        no_answer_mode=settings.no_answer_mode,
    )
    learner = Learner(
        CheckpointStore(redis, key_prefix=settings.key_prefix, signing_key=signing_key),
        catalog.base_rates(),
        bandit_log=BanditLog(
            redis, key_prefix=settings.key_prefix, size=settings.offpolicy_log_size
        ),
    )
    worker_name = process_name("worker")
    customer_feed = CustomerModelsFeed(
        pending_churn_labels(redis, settings),
        SegmentSamples(redis, key_prefix=settings.key_prefix),
        store,
        SnapshotBudget(settings.churn_snapshots_per_s),
    )
    rfm_edges = EdgesCache(redis, key_prefix=settings.key_prefix)

    async def send_dead_letters(
        rejections: Sequence[Rejection], items: Sequence[Any], message: faust.types.EventT
    ) -> None:
        for rejection in rejections:
            record = dead_letter(rejection, items[rejection.index], message)
            delivery = await dlq_topic.send(value=record)
            await delivery  # on the broker before the message is acknowledged

    async def apply_messages(messages: Sequence[faust.types.EventT]) -> None:
        """Apply the events of several Kafka messages as one batch (fewer round trips per
        event), each invalid or late item to the dead-letter topic with its reason."""
        skew = settings.max_clock_skew_s  # an event further ahead of the clock: dead-lettered
        decoded = [(m, *decode_message(m.value, max_ahead_s=skew)) for m in messages]
        events: list[Event] = []
        for message, valid, rejections, items in decoded:
            events += valid
            await send_dead_letters(rejections, items, message)
        rejected = sum(len(rejections) for _, _, rejections, _ in decoded)
        result = await retrying_redis(
            partial(store.apply, events, count_into=stats, rejected=rejected)
        )
        for linked in (e for e in events if e.type is EventType.IDENTITY_LINKED):
            identifier = str(linked.attrs["identifier"])
            await retrying_redis(partial(store.link, linked.customer_id, identifier))
        await retrying_redis(partial(customer_feed.observe, events, rfm_edges.current))
        if result.late:
            for message, valid, _, items in decoded:
                ids = {event.event_id for event in valid}
                late = [refused for refused in result.late if refused.event.event_id in ids]
                await send_dead_letters(late_rejections(late, items), items, message)
        attribution = await retrying_redis(partial(decision_log.attribute, events))
        if attribution.outcomes:
            delivery = await outcomes_topic.send(value=encode_outcomes(attribution.outcomes))
            await delivery  # on the broker before the answers are marked learned
        await retrying_redis(partial(decision_log.settle, attribution))
        _log_skipped(attribution)

    @app.agent(events_topic)
    async def apply_events(stream: faust.StreamT[bytes]) -> None:
        # `take_events` acknowledges a batch's messages only once the loop body ran for them
        batches = cast(faust.Stream[bytes], stream).take_events(
            MAX_EVENT_MESSAGES_PER_BATCH, within=EVENT_BATCH_WAIT_S
        )
        try:
            async for messages in batches:
                await apply_messages(messages)
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
                learned = await retrying_redis(partial(learner.learn, outcomes))
                log.info(
                    "learned %d outcomes (%d skipped); model checkpoint version %d",
                    learned.learned,
                    learned.skipped,
                    learned.checkpoint.version,
                )

    @app.timer(RFM_EDGES_REFRESH_S)
    async def refresh_rfm_edges() -> None:
        """The quintile edges churn snapshots and segment samples read value tiers with."""
        await retrying_redis(rfm_edges.refresh)

    if settings.learner_in_workers:
        jobs = BaseJobs.open(redis, settings, store.fold, owner=worker_name)

        @app.timer(BASE_WALK_INTERVAL_S)
        async def walk_customer_base() -> None:
            await jobs.walk_customer_base()

        @app.timer(settings.checkpoint_interval_s)
        async def learn_customer_models() -> None:
            await jobs.learn_customer_models()

    @app.timer(HEARTBEAT_INTERVAL_S)
    async def heartbeat() -> None:
        assigned = app.consumer.assignment()
        partitions = [tp.partition for tp in assigned if tp.topic == settings.events_topic]
        await stats.heartbeat(worker_name, partitions)

    async def send_outcomes(outcomes: list[Outcome]) -> None:
        """Send outcomes to the learner in order, each message on the broker before the next."""
        for start in range(0, len(outcomes), OUTCOMES_PER_MESSAGE):
            chunk = outcomes[start : start + OUTCOMES_PER_MESSAGE]
            delivery = await outcomes_topic.send(value=encode_outcomes(chunk))
            await delivery

    @app.timer(NO_ANSWER_SWEEP_INTERVAL_S)
    async def expire_unanswered() -> None:
        closed = await retrying_redis(
            partial(decision_log.expire_unanswered, limit=NO_ANSWER_BATCH)
        )
        sent = await retrying_redis(
            partial(decision_log.forward_unanswered, send_outcomes, limit=NO_ANSWER_BATCH)
        )
        if closed or sent:
            log.debug("no-answer windows: %d closed, %d negatives sent to learning", closed, sent)

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


def run_worker(settings: Settings, *, loglevel: str = "info") -> None:
    """Run one worker until SIGINT/SIGTERM.

    Its Faust data folder is a temporary one, removed when the worker stops: with a
    folder per consumer group, every test and benchmark run left one behind.
    """
    with tempfile.TemporaryDirectory(prefix=f"nba-{settings.worker_id}-") as datadir:
        app = create_app(settings, datadir=Path(datadir))
        worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
        tune_garbage_collector()
        worker.execute_from_commandline()
