"""The Faust worker: keeps customer features current and learns from every answer.

Two thin agents; the logic lives in the domain packages.

`apply_events` (the `events` topic, partitioned by customer): takes the messages that
arrived together (up to MAX_EVENT_MESSAGES_PER_BATCH, each one event or an envelope) and
hands them to `engine.stream.pipeline.EventsPipeline`: valid events applied to Redis in one
transaction, invalid and late items dead-lettered with their reasons, answers to offers
forwarded with their decision's x to the `outcomes` topic. Messages are acknowledged
only after that work succeeded, so a crash or a Redis outage replays them later, and the
event ids kept in each customer's state and the log's answered markers make the replay
harmless.

Never alive doing nothing: transient failures are waited out, a batch that fails
otherwise is applied item by item with the failing items dead-lettered (the pipeline),
and any failure left — in an agent or a timer — ends the process with status
EXIT_UNRECOVERABLE (`exit_for_restart`) rather than leaving a crashed agent in a live
worker: its supervisor restarts it, and the broker hands its unacknowledged messages on.
Every message the worker sends is at most `NBA_MAX_MESSAGE_BYTES`. The heartbeat (every
HEARTBEAT_INTERVAL_S) reports the partitions the worker owns, its lag on each and when it
last made progress, which `/readyz` judges.

`learn_outcomes` (the `outcomes` topic, one partition, so one worker of the group runs
the model): takes the outcomes of every `checkpoint_interval_s` (or of
`MAX_OUTCOME_MESSAGES_PER_BATCH` messages, if sooner), learns them and saves a signed
checkpoint before they are acknowledged (`models.learning.Learner`); the API loads each
new version. A crash loses no outcome; those checkpointed but whose offsets Kafka had
not committed yet are learned again.

`walk_customer_base` and `learn_customer_models` (timers, one process at a time by lock):
the whole-base jobs of `engine.stream.learner`, run here only with `learner_in_workers` (the
default for a lone `nba worker`); `nba up` runs them in a learner process instead, off
this event loop. After each applied batch, `identity_linked` events link identifiers to
their customer (`RedisFeatureStore.link`, merging features).

`expire_unanswered` (a timer, every `NO_ANSWER_SWEEP_INTERVAL_S` on every worker): closes
the no-answer windows that are due in one atomic Redis script, then hands the closed
windows on — as negatives to the `outcomes` topic in mode `negative` — and deletes them
only once the broker has them (`actions.decision_log`). Workers sweeping at the same
time close each window once; a window handed on twice is learned once, as the learner
skips negatives it already learned.

Churn risk and segments (`models.snapshots`, `models.customer_models`): after each batch,
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

import functools
import logging
import os
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, NoReturn, cast

import faust

from actions.catalog import load_catalog
from actions.decision_log import DecisionLog
from engine.core.clients import redis_from_settings
from engine.core.settings import Settings
from engine.stream.learner import (
    BASE_WALK_INTERVAL_S,
    BaseJobs,
    pending_churn_labels,
    process_name,
)
from engine.stream.pipeline import EventsPipeline, Message
from engine.stream.retries import retrying
from engine.stream.runtime import tune_garbage_collector
from features.publisher import PRODUCER_HEADROOM_BYTES
from features.state import FeatureFold
from features.stats import IngestStats
from features.store import RedisFeatureStore
from features.tiers import EdgesCache
from models.checkpoints import CheckpointStore
from models.learning import Learner, Outcome, decode_outcomes, pack_outcomes
from models.offpolicy import BanditLog
from models.segments import SegmentSamples
from models.snapshots import CustomerModelsFeed, SnapshotBudget

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
#: The worker's exit status when it cannot go on (EX_SOFTWARE): its supervisor restarts it.
EXIT_UNRECOVERABLE = 70
#: How often a thread checks whether Faust has marked the app crashed.
CRASH_WATCH_INTERVAL_S = 1.0


def exit_for_restart(what: str, error: BaseException) -> NoReturn:
    """End the process at once, saying why: a failure neither waited out nor isolated.

    Not a clean stop: nothing more may run in a worker whose state is unknown. Messages
    not yet acknowledged are handed to the next worker (or this one, restarted), and
    applying them again changes nothing twice.
    """
    log.critical(
        "%s failed and cannot go on (%s: %s); exiting with status %d so that the "
        "supervisor restarts the worker",
        what,
        type(error).__name__,
        error,
        EXIT_UNRECOVERABLE,
        exc_info=error,
    )
    logging.shutdown()
    os._exit(EXIT_UNRECOVERABLE)


def exits_on_failure(job: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
    """A timer's job that ends the process on a failure, rather than dying alone."""

    @functools.wraps(job)
    async def guarded() -> None:
        try:
            await job()
        except Exception as error:
            exit_for_restart(f"timer {job.__name__}", error)

    return guarded


def create_app(settings: Settings, *, datadir: Path) -> faust.App:
    """The Faust app with the events and learning agents, wired to the configured servers.

    Faust creates `datadir` even for in-memory tables; nothing in it outlives the worker.
    """
    _, bootstrap = settings.require_servers()  # both set, or an error naming what is missing
    signing_key = settings.require_model_key()
    catalog = load_catalog(settings.catalog_path)
    app = faust.App(
        settings.worker_id,
        broker=f"nbakafka://{bootstrap}",  # engine.stream.kafka_transport: a short fetch wait
        store="memory://",
        datadir=datadir,
        web_enabled=False,
        topic_partitions=settings.topic_partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.kafka_session_timeout_s / 3),
        producer_max_request_size=settings.max_message_bytes + PRODUCER_HEADROOM_BYTES,
        consumer_group_instance_id=settings.worker_instance_id,
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

    def sender(topic: faust.types.TopicT) -> Callable[[bytes], Awaitable[None]]:
        async def send(value: bytes) -> None:
            delivery = await topic.send(value=value)
            await delivery  # on the broker before the caller goes on

        return send

    redis = redis_from_settings(settings)
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
    rfm_edges = EdgesCache(redis, key_prefix=settings.key_prefix)
    pipeline = EventsPipeline(
        store=store,
        stats=stats,
        decision_log=decision_log,
        customer_feed=CustomerModelsFeed(
            pending_churn_labels(redis, settings),
            SegmentSamples(redis, key_prefix=settings.key_prefix),
            store,
            SnapshotBudget(settings.churn_snapshots_per_s),
        ),
        rfm_edges=rfm_edges,
        send_dead_letter=sender(dlq_topic),
        send_outcomes=sender(outcomes_topic),
        max_message_bytes=settings.max_message_bytes,
        max_clock_skew_s=settings.max_clock_skew_s,
    )

    @app.agent(events_topic)
    async def apply_events(stream: faust.StreamT[bytes]) -> None:
        # `take_events` acknowledges a batch's messages only once the loop body ran for them
        batches = cast(faust.Stream[bytes], stream).take_events(
            MAX_EVENT_MESSAGES_PER_BATCH, within=EVENT_BATCH_WAIT_S
        )
        try:
            async for events in batches:
                await pipeline.apply(
                    [
                        Message(event.value, event.message.partition, event.message.offset)
                        for event in events
                    ]
                )
        except Exception as error:
            exit_for_restart("applying events", error)

    @app.on_before_shutdown.connect
    async def forget_this_worker(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # Not when an agent stops: the timers and the other agent share the Redis client
        # (closing it under them was what broke their commands with "Connection closed").
        # The client's connections close with the process.
        await stats.forget(worker_name)

    @app.agent(outcomes_topic)
    async def learn_outcomes(stream: faust.StreamT[bytes]) -> None:
        # `take_events` acknowledges a batch only once the loop body below has run for it
        batches = cast(faust.Stream[bytes], stream).take_events(
            MAX_OUTCOME_MESSAGES_PER_BATCH, within=settings.checkpoint_interval_s
        )
        try:
            async for batch in batches:
                await _learn(learner, [event.value for event in batch])
        except Exception as error:
            exit_for_restart("learning outcomes", error)

    @app.timer(RFM_EDGES_REFRESH_S)
    @exits_on_failure
    async def refresh_rfm_edges() -> None:
        """The quintile edges churn snapshots and segment samples read value tiers with."""
        await retrying(rfm_edges.refresh)

    if settings.learner_in_workers:
        jobs = BaseJobs.open(redis, settings, store.fold, owner=worker_name)

        @app.timer(BASE_WALK_INTERVAL_S)
        @exits_on_failure
        async def walk_customer_base() -> None:
            await jobs.walk_customer_base()

        @app.timer(settings.checkpoint_interval_s)
        @exits_on_failure
        async def learn_customer_models() -> None:
            await jobs.learn_customer_models()

    @app.timer(HEARTBEAT_INTERVAL_S)
    @exits_on_failure
    async def heartbeat() -> None:
        assigned = [tp for tp in app.consumer.assignment() if tp.topic == settings.events_topic]
        lag = {tp.partition: _lag(app, tp, pipeline.progress.positions) for tp in assigned}
        caught_up = all(behind == 0 for behind in lag.values())
        await retrying(
            partial(
                stats.heartbeat,
                worker_name,
                [tp.partition for tp in assigned],
                lag=lag,
                progress_ts=None if caught_up else pipeline.progress.applied_ts,
            )
        )

    send_outcome = sender(outcomes_topic)

    async def send_outcomes(outcomes: list[Outcome]) -> None:
        """Send outcomes to the learner in order, each message on the broker before the next."""
        for message in pack_outcomes(outcomes, max_bytes=settings.max_message_bytes):
            await retrying(partial(send_outcome, message), what="Kafka")

    @app.timer(NO_ANSWER_SWEEP_INTERVAL_S)
    @exits_on_failure
    async def expire_unanswered() -> None:
        closed = await retrying(partial(decision_log.expire_unanswered, limit=NO_ANSWER_BATCH))
        sent = await retrying(
            partial(decision_log.forward_unanswered, send_outcomes, limit=NO_ANSWER_BATCH)
        )
        if closed or sent:
            log.debug("no-answer windows: %d closed, %d negatives sent to learning", closed, sent)

    return app


def _lag(app: faust.App, tp: faust.types.TP, positions: dict[int, int]) -> int | None:
    """Messages of `tp` on the broker this worker has not applied; None until it knows.

    The broker's end offset is the consumer's high watermark, as of its latest fetch. The
    position is the offset after the last message applied here, or, before this worker
    applied any, the group's committed offset (Faust keeps it from the assignment), or
    the start of the partition when the group never committed (the worker reads from the
    earliest offset).
    """
    end = app.consumer.highwater(tp)
    if end is None:
        return None
    position = positions.get(tp.partition)
    if position is None:
        committed = app.consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
        position = committed if committed is not None and committed >= 0 else 0
    return max(0, end - position)


async def _learn(learner: Learner, payloads: list[bytes]) -> None:
    """Learn the outcomes of a batch of messages; a malformed message is skipped, logged."""
    outcomes: list[Outcome] = []
    for payload in payloads:
        try:
            outcomes += decode_outcomes(payload)
        except ValueError as error:
            log.error("an outcomes message skipped: %s", error)
    if outcomes:
        learned = await retrying(partial(learner.learn, outcomes))
        log.info(
            "learned %d outcomes (%d skipped); model checkpoint version %d",
            learned.learned,
            learned.skipped,
            learned.checkpoint.version,
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
        threading.Thread(target=_exit_if_crashed, args=(app,), daemon=True).start()
        worker.execute_from_commandline()


def _exit_if_crashed(app: faust.App) -> None:
    """Watch, from a thread of its own, for Faust marking the app crashed (an internal
    service failing outside our agents and timers): Faust then leaves the process running
    with nothing working, so end it for the supervisor to restart."""
    while not app.crashed:
        time.sleep(CRASH_WATCH_INTERVAL_S)
    reason = app.crash_reason or RuntimeError("no reason given")
    exit_for_restart("the Faust app", reason)
