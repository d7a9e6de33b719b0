"""The clients and domain objects one API process shares across requests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from redis.exceptions import RedisError

from actions.catalog import Catalog, load_catalog
from actions.decision_log import DecisionLog
from actions.next_best import NextBestActions, next_best_actions
from api.live_model import LiveModel, LiveSignedModel
from engine.core.clients import redis_from_settings
from engine.core.settings import Settings
from features.events import Channel
from features.publisher import PRODUCER_HEADROOM_BYTES, EventPublisher
from features.state import FeatureFold
from features.stats import IngestStats
from features.store import RedisFeatureStore
from features.tiers import EdgesCache
from models.checkpoints import CheckpointStore
from models.churn_model import ChurnModel
from models.customer_model_stores import CustomerModelStores
from models.exploration import EpsilonGreedy, ExplorationPolicy, Greedy, ThompsonSampling
from models.offpolicy import BanditLog
from models.online import OnlinePropensity
from models.scores import CustomerModels
from models.segments import Segmenter

REDIS_TIMEOUT_S = 1.0
STOP_GRACE_S = 2.0
log = logging.getLogger(__name__)


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
    decision_log: DecisionLog
    live_model: LiveModel
    bandit_log: BanditLog
    rfm_edges: EdgesCache
    churn_model: LiveSignedModel[ChurnModel]
    segments_model: LiveSignedModel[Segmenter]

    def customer_models(self) -> CustomerModels:
        """The churn and segment models serving now, for `models.scores` (read once per
        request, so the scores and the versions reported agree)."""
        churn, segments = self.churn_model.current, self.segments_model.current
        return CustomerModels(churn.model, churn.version, segments.model, segments.version)

    async def next_best_actions(
        self, customer_id: str, channel: Channel, n: int, *, now: float
    ) -> NextBestActions:
        """`actions.next_best.next_best_actions` on this process's clients, serving models
        and settings: the one place they are handed to it, for the route and the
        decision benchmark alike."""
        serving = self.live_model.current  # one read: the policy and its version agree
        return await next_best_actions(
            customer_id=customer_id,
            channel=channel,
            n=n,
            now=now,
            store=self.store,
            decision_log=self.decision_log,
            catalog=self.catalog,
            policy=serving.policy,
            model_version=serving.version,
            customer_models=self.customer_models(),
            rfm_edges=self.rfm_edges.current,
            decline_cooloff_days=self.settings.decline_cooloff_days,
        )


def make_policy(settings: Settings, model: OnlinePropensity) -> ExplorationPolicy:
    """The exploration policy `settings.exploration` names, ranking with `model`.

    Unseeded: each API process draws its own random stream, as parallel servers must.
    """
    if settings.exploration == "thompson":
        return ThompsonSampling(model, draws=settings.thompson_draws)
    if settings.exploration == "epsilon_greedy":
        return EpsilonGreedy(model, epsilon=settings.epsilon)
    return Greedy(model)


def exploration_settings(settings: Settings) -> dict[str, Any]:
    """The policy and its parameters, for `GET /v1/models`."""
    if settings.exploration == "thompson":
        return {"policy": ThompsonSampling.name, "draws": settings.thompson_draws}
    if settings.exploration == "epsilon_greedy":
        return {"policy": EpsilonGreedy.name, "epsilon": settings.epsilon}
    return {"policy": Greedy.name}


@asynccontextmanager
async def open_services(settings: Settings) -> AsyncIterator[Services]:
    """Connect to Redis and Kafka, load the catalog and the latest model; close all on exit.

    The model and the RFM quintile edges are followed by background tasks for as long as
    the services are open.
    """
    _, bootstrap = settings.require_servers()  # both set, or an error naming what is missing
    signing_key = settings.require_model_key()
    catalog = load_catalog(settings.catalog_path)
    redis = redis_from_settings(settings, timeout_s=REDIS_TIMEOUT_S)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=2,
        max_request_size=settings.max_message_bytes + PRODUCER_HEADROOM_BYTES,
    )
    live_model = LiveModel(
        CheckpointStore(redis, key_prefix=settings.key_prefix, signing_key=signing_key),
        catalog.base_rates(),
        lambda model: make_policy(settings, model),
    )
    with contextlib.suppress(RedisError):  # Redis down: the priors serve until it is back
        await live_model.refresh()
    follower = asyncio.create_task(live_model.follow(), name="follow-model-checkpoints")
    model_stores = CustomerModelStores.open(
        redis, key_prefix=settings.key_prefix, signing_key=signing_key
    )
    churn_model = LiveSignedModel(model_stores.churn, ChurnModel(), "churn")
    segments_model = LiveSignedModel(
        model_stores.segments,
        Segmenter(settings.segments_count, warmup=settings.segments_warmup),
        "segments",
    )
    followers = [follower]
    for live in (churn_model, segments_model):
        with contextlib.suppress(RedisError):  # Redis down: the unlearned model serves
            await live.refresh()
        followers.append(asyncio.create_task(live.follow(), name=f"follow-{live.name}"))
    rfm_edges = EdgesCache(redis, key_prefix=settings.key_prefix)
    with contextlib.suppress(RedisError):  # Redis down: tiers read "unscored" until it is back
        await rfm_edges.refresh()
    edges_follower = asyncio.create_task(rfm_edges.follow(), name="follow-rfm-edges")
    try:
        await producer.start()
        yield Services(
            settings=settings,
            redis=redis,
            producer=producer,
            store=RedisFeatureStore(
                redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
            ),
            publisher=EventPublisher(
                producer, settings.events_topic, max_message_bytes=settings.max_message_bytes
            ),
            ingest_stats=IngestStats(redis, key_prefix=settings.key_prefix),
            catalog=catalog,
            decision_log=DecisionLog(
                redis,
                key_prefix=settings.key_prefix,
                ttl_seconds=settings.decision_ttl_seconds,
                no_answer_window_s=settings.no_answer_window_s,
                no_answer_mode=settings.no_answer_mode,
            ),
            live_model=live_model,
            bandit_log=BanditLog(
                redis, key_prefix=settings.key_prefix, size=settings.offpolicy_log_size
            ),
            rfm_edges=rfm_edges,
            churn_model=churn_model,
            segments_model=segments_model,
        )
    finally:
        await _stop(*followers, edges_follower)
        await producer.stop()
        await redis.aclose()


async def _stop(*tasks: asyncio.Task[None]) -> None:
    """Cancel the background followers and give them a moment to finish.

    A follower cancelled in the middle of a Redis read can take its connection's time to
    unwind; closing must not wait on it forever (it only reads), so after the grace
    period the rest are left to the closing client.
    """
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
    if pending:
        log.warning("followers still stopping at close: %s", [t.get_name() for t in pending])
