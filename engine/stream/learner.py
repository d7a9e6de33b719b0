"""The learner process (`nba learner`): the jobs done once for the whole customer base, off
the workers' event loops.

- `learn_customer_models`, every `checkpoint_interval_s`: the churn and segment learner
  (`models.customer_models.CustomerModelsLearner`) expires the churn labels that are due, learns
  them and the queued segment samples, and checkpoints both models;
- `walk_customer_base`, every BASE_WALK_INTERVAL_S: a few hundred customer states
  towards the base-wide RFM quintile edges (`features.tiers.BaseWalker`).

Each job runs under its own Redis lock, so one process at a time runs it, whoever offers:
workers run both as timers too unless `learner_in_workers` is off, as `nba up` sets it
when it starts one learner process beside its workers. A holder that stops is replaced
by another within the lock's time to live, so a second learner process is a standby.

Why a process of its own: on a worker, a job shares the event loop with the events, and
each learning slice or walk step holds back every event queued behind it, which the
freshness benchmark showed in the p99 (the figures are in benchmarks/NOTES.md,
"Freshness").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from redis.asyncio import Redis

from engine.core.clients import redis_from_settings
from engine.core.settings import Settings
from engine.stream.retries import retrying
from features.config import SECONDS_PER_DAY
from features.derived import FEATURES
from features.state import FeatureFold
from features.tiers import BaseWalker
from models.checkpoints import CheckpointRefusedError, StaleCheckpointError
from models.churn_labels import PendingChurnLabels
from models.customer_model_stores import CustomerModelStores
from models.customer_models import CustomerModelsLearner
from models.segments import Segmenter, SegmentSamples

log = logging.getLogger(__name__)

#: The base walk reads this many keys this often (~2,000 states a second, in short steps:
#: on a worker, a step blocks the event loop while it decodes, and events wait behind it).
BASE_WALK_INTERVAL_S = 0.25
BASE_WALK_KEYS_PER_STEP = 500


def new_segmenter(settings: Settings) -> Segmenter:
    """An unlearned segmenter as configured, describing traits with the features' words."""
    return Segmenter(
        settings.segments_count,
        warmup=settings.segments_warmup,
        descriptions={feature.name: feature.description for feature in FEATURES},
    )


def pending_churn_labels(redis: Redis, settings: Settings) -> PendingChurnLabels:
    """The churn snapshots waiting for their label, with the configured horizon."""
    return PendingChurnLabels(
        redis,
        key_prefix=settings.key_prefix,
        horizon_s=settings.churn_horizon_days * SECONDS_PER_DAY,
        dormant_after_s=settings.churn_dormant_days * SECONDS_PER_DAY,
    )


def process_name(role: str) -> str:
    """Who holds a lock, as its value says: the role, the host and the process id."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class BaseJobs:
    """The whole-base jobs of one process (a worker or the learner), each a step to call on
    its interval; a step does nothing while another process holds that job's lock."""

    customer_models: CustomerModelsLearner
    base_walker: BaseWalker

    @classmethod
    def open(cls, redis: Redis, settings: Settings, fold: FeatureFold, *, owner: str) -> BaseJobs:
        """The jobs on `redis` as `settings` configure them, their locks taken as `owner`."""
        model_stores = CustomerModelStores.open(
            redis, key_prefix=settings.key_prefix, signing_key=settings.require_model_key()
        )
        customer_models = CustomerModelsLearner(
            redis,
            pending_churn_labels(redis, settings),
            SegmentSamples(redis, key_prefix=settings.key_prefix),
            model_stores.churn,
            model_stores.segments,
            new_segmenter=partial(new_segmenter, settings),
            owner=owner,
            key_prefix=settings.key_prefix,
            lateness_s=settings.allowed_lateness_s,
        )
        base_walker = BaseWalker(
            redis,
            fold,
            key_prefix=settings.key_prefix,
            owner=owner,
            keys_per_step=BASE_WALK_KEYS_PER_STEP,
        )
        return cls(customer_models, base_walker)

    async def learn_customer_models(self) -> None:
        """Churn labels and segment samples learned and checkpointed, by the lock holder."""
        try:
            step = await retrying(self.customer_models.step)
        except (StaleCheckpointError, CheckpointRefusedError) as error:
            log.error("churn/segments not checkpointed: %s", error)
            return
        if step is not None and (step.churn_labels or step.segment_samples):
            log.info(
                "learned %d churn labels (version %d) and %d segment samples (version %d)",
                step.churn_labels,
                step.churn_version,
                step.segment_samples,
                step.segments_version,
            )

    async def walk_customer_base(self) -> None:
        """A few hundred customers towards the RFM quintile edges, by the lock holder."""
        edges = await retrying(self.base_walker.step)
        if edges:
            log.info("RFM quintile edges refreshed: %s", edges)


async def serve_learner(settings: Settings, stop: asyncio.Event) -> None:
    """Run the whole-base jobs on their intervals until `stop` is set."""
    redis = redis_from_settings(settings)
    jobs = BaseJobs.open(
        redis, settings, FeatureFold(settings.feature_config()), owner=process_name("learner")
    )
    log.info(
        "learner up: churn and segments every %.1f s, the base walk every %.2f s",
        settings.checkpoint_interval_s,
        BASE_WALK_INTERVAL_S,
    )
    try:
        async with asyncio.TaskGroup() as group:
            learning = _every(settings.checkpoint_interval_s, jobs.learn_customer_models, stop)
            group.create_task(learning)
            group.create_task(_every(BASE_WALK_INTERVAL_S, jobs.walk_customer_base, stop))
    finally:
        await redis.aclose()


async def _every(
    interval_s: float, job: Callable[[], Awaitable[None]], stop: asyncio.Event
) -> None:
    """Run `job` every `interval_s` seconds (start to start) until `stop` is set."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await job()
        pause = max(0.0, interval_s - (loop.time() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=pause)


def run_learner(settings: Settings) -> None:
    """Run the learner process until SIGINT/SIGTERM; a job's step in progress finishes."""
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve_learner(settings, stop)

    asyncio.run(main())
