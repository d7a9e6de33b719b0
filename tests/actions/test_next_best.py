"""`next_best_actions()` on the real embedded Valkey: recorded with its x, the cool-off,
the degraded answer when the store is down, the note when only the record fails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from actions.catalog import Catalog, load_catalog
from actions.decision_log import DecisionLog
from actions.next_best import NextBestActions, next_best_actions
from engine.core.settings import DEFAULT_CATALOG, Settings
from engine.stream.embedded import free_port
from features.events import Channel, Event
from features.state import FeatureFold
from features.store import RedisFeatureStore
from models.churn import ChurnModel
from models.exploration import Greedy
from models.online import OnlinePropensity
from models.scores import NOT_SEGMENTED, CustomerModels
from models.segments import Segmenter

TS = 1_767_605_400.0  # 2026-01-05T09:30:00Z, when the test customer's events happen
DAY = 86_400.0


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(DEFAULT_CATALOG)


def decision_log(redis: Redis, settings: Settings) -> DecisionLog:
    return DecisionLog(redis, key_prefix=settings.key_prefix, ttl_seconds=3600,
                       no_answer_window_s=600.0, no_answer_mode="negative")  # fmt: skip


def feature_store(redis: Redis, settings: Settings) -> RedisFeatureStore:
    return RedisFeatureStore(
        redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
    )


@pytest.fixture
async def dead_redis() -> AsyncIterator[Redis]:
    """A client for an address where nothing listens: every command fails fast."""
    client = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    yield client
    await client.aclose()


def event(event_id: str, ts: float, **fields: Any) -> Event:
    return Event.model_validate(
        {"event_id": event_id, "customer_id": "C1", "channel": "web", "ts": ts} | fields
    )


async def big_spender(store: RedisFeatureStore) -> None:
    """C1 with 6 transactions of 600: the personal loan (txn_amount >= 1000) is eligible
    and, greedy on the catalog's base rates, ranks first on the web."""
    await store.apply([event(f"t{i}", TS, type="transaction", amount=600.0) for i in range(6)])


async def decide_for_c1(
    store: RedisFeatureStore,
    log: DecisionLog,
    catalog: Catalog,
    *,
    now: float,
    decline_cooloff_days: float = 7.0,
    n: int = 3,
) -> NextBestActions:
    return await next_best_actions(
        customer_id="C1",
        channel=Channel.WEB,
        n=n,
        now=now,
        store=store,
        decision_log=log,
        catalog=catalog,
        policy=Greedy(OnlinePropensity(catalog.base_rates())),
        model_version=7,
        customer_models=CustomerModels(ChurnModel(prior=0.05), 3, Segmenter(4, warmup=10), 5),
        rfm_edges={},
        decline_cooloff_days=decline_cooloff_days,
    )


async def test_a_decision_is_recorded_with_the_x_the_model_saw(
    redis: Redis, settings: Settings, catalog: Catalog
) -> None:
    store, log = feature_store(redis, settings), decision_log(redis, settings)
    await big_spender(store)
    answer = await decide_for_c1(store, log, catalog, now=TS + 60)
    decision = answer.decision
    assert answer.recorded is True
    assert answer.degraded is False
    assert answer.notes == []
    assert decision.actions[0].action_id == "personal_loan"
    logged = await log.fetch("C1", decision.decision_id)
    assert logged is not None
    assert logged.x == decision.x
    assert logged.x["txn_amount"] == pytest.approx(8.19, abs=0.01)  # log1p(3600)
    assert logged.x["channel_web"] == 1.0
    # the serving models' scores are features of the decision: the prior, not segmented yet
    assert logged.x["churn_risk"] == pytest.approx(0.05)
    assert logged.x["segment"] == NOT_SEGMENTED
    assert logged.candidates == decision.candidates
    assert [shown.action_id for shown in logged.shown] == [
        action.action_id for action in decision.actions
    ]
    body = answer.to_dict()
    assert body["model_version"] == 7
    assert body["decision_id"] == decision.decision_id
    assert "x" not in body


async def test_an_action_declined_within_the_cool_off_is_not_offered(
    redis: Redis, settings: Settings, catalog: Catalog
) -> None:
    store, log = feature_store(redis, settings), decision_log(redis, settings)
    await big_spender(store)
    await store.apply([event("d1", TS, type="offer_declined", action_id="personal_loan")])
    a_day_later = TS + DAY
    cooling = await decide_for_c1(store, log, catalog, now=a_day_later, n=20)
    offered = {action.action_id for action in cooling.decision.actions}
    assert "personal_loan" not in offered
    assert "personal_loan left out: declined 24 h ago (cool-off)" in cooling.decision.notes
    # the same customer at the same moment without a cool-off: the decline alone kept it out
    without = await decide_for_c1(
        store, log, catalog, now=a_day_later, n=20, decline_cooloff_days=0.0
    )
    assert "personal_loan" in {action.action_id for action in without.decision.actions}
    # once the cool-off is over it is offered again
    later = await decide_for_c1(store, log, catalog, now=TS + 8 * DAY, n=20)
    assert not any("cool-off" in note for note in later.decision.notes)


async def test_an_unreachable_store_gives_a_degraded_unrecorded_answer(
    redis: Redis, dead_redis: Redis, settings: Settings, catalog: Catalog
) -> None:
    log = decision_log(redis, settings)  # reachable: shows nothing is recorded
    answer = await decide_for_c1(feature_store(dead_redis, settings), log, catalog, now=TS)
    assert answer.degraded is True
    assert answer.recorded is False
    assert [action.rank for action in answer.decision.actions] == [1, 2, 3]
    assert await log.fetch("C1", answer.decision.decision_id) is None
    notes = answer.to_dict()["notes"]
    assert notes == [
        "customer features unavailable: ranked as for a new customer",
        "not recorded: its answer will not be learned from",
    ]


async def test_a_failed_record_is_answered_with_a_note(
    redis: Redis, dead_redis: Redis, settings: Settings, catalog: Catalog
) -> None:
    store = feature_store(redis, settings)
    await big_spender(store)
    answer = await decide_for_c1(store, decision_log(dead_redis, settings), catalog, now=TS + 60)
    assert answer.degraded is False
    assert answer.recorded is False
    assert answer.decision.actions
    assert len(answer.notes) == 1
    assert answer.notes[0].startswith("not recorded (")
    assert answer.notes[0].endswith("): its answer will not be learned from")
