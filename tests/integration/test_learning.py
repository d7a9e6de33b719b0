"""The engine learns from answers: API decisions, answers through the broker, a real worker learns.

The API runs in-process (its lifespan included); the worker is a real `nba worker`
process; both talk to the session's embedded Valkey and Kafka.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from statistics import fmean
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from actions.decision_log import DecisionLog
from api.app import create_app
from engine.core.settings import Settings
from features.state import FeatureFold
from features.store import RedisFeatureStore
from models.checkpoints import CheckpointStore

ACCEPTED = "travel_insurance"  # eligible for everyone on the web
DECLINED = "savings_account"  # eligible once txn_amount >= 300
DECISIONS = 6
LEARN_TIMEOUT_S = 30.0
NO_ANSWER_WINDOW_S = 2.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test settings, with a no-answer window short enough to wait out."""
    return settings.model_copy(update={"no_answer_window_s": NO_ANSWER_WINDOW_S})


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API with its lifespan running, and a client talking to it in-process."""
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        yield client


def event(event_id: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "customer_id": "C1", "type": kind, "channel": "web",
            "ts": "2026-11-02T12:00:00Z"} | fields  # fmt: skip


async def post_events(api: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    response = await api.post("/v1/events", json=events)
    assert response.status_code == 202, response.text


async def wait_for_event_count(store: RedisFeatureStore, count: int) -> dict[str, float | int]:
    async with asyncio.timeout(LEARN_TIMEOUT_S):
        while (features := await store.read("C1")) is None or features["event_count"] < count:
            await asyncio.sleep(0.1)
    return features


async def decide(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.get("/v1/customers/C1/next-best-actions?channel=web&n=20")
    assert response.status_code == 200
    return response.json()


def propensity(decision: dict[str, Any], action_id: str) -> float:
    [action] = [item for item in decision["actions"] if item["action_id"] == action_id]
    return float(action["score_parts"]["propensity"])


async def test_answers_through_the_broker_are_learned_and_served(
    settings: Settings, redis: Redis, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    store = RedisFeatureStore(
        redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
    )
    async with serve(settings) as api:
        await post_events(api, [event(f"t{i}", "transaction", amount=600.0) for i in range(6)])
        await wait_for_event_count(store, 6)
        decisions = [await decide(api) for _ in range(DECISIONS)]
        before = decisions[0]
        assert before["model_version"] == 0
        assert propensity(before, ACCEPTED) == pytest.approx(0.06)  # the catalog's prior
        prior_declined = propensity(before, DECLINED)

        # the customer's features move on between the decisions and their answers
        await post_events(api, [event(f"m{i}", "login", channel="mobile") for i in range(10)])
        await wait_for_event_count(store, 16)

        answers = []
        for index, decision in enumerate(decisions):
            answers += [
                event(f"a{index}", "offer_accepted", action_id=ACCEPTED,
                      decision_id=decision["decision_id"]),
                event(f"d{index}", "offer_declined", action_id=DECLINED,
                      decision_id=decision["decision_id"]),
                event(f"i{index}", "offer_impression", action_id=ACCEPTED,
                      decision_id=decision["decision_id"]),
            ]  # fmt: skip
        answers.append(event("lost", "offer_accepted", action_id=ACCEPTED, decision_id="expired"))
        answers.append(answers[0] | {"event_id": "again"})  # the same answer, reported twice
        await post_events(api, answers)

        async with asyncio.timeout(LEARN_TIMEOUT_S):
            while True:
                models = (await api.get("/v1/models")).json()
                learned = models["propensity"]["outcomes_learned"]
                if learned[ACCEPTED] == DECISIONS and learned[DECLINED] == DECISIONS:
                    break
                await asyncio.sleep(0.1)
        assert models["propensity"]["version"] >= 1
        assert models["propensity"]["checkpoint_ts"] is not None
        assert models["attribution"] == {
            "forwarded": 2 * DECISIONS,
            "duplicates": 1,
            "unknown_decision": 1,
            "not_shown": 0,
            "late": 0,
            "no_answer": 0,  # each impression came with (after) its answer
            "no_answer_ignored": 0,
        }
        after = await decide(api)
        assert after["model_version"] == models["propensity"]["version"]
        assert propensity(after, ACCEPTED) > 0.06
        assert propensity(after, DECLINED) < prior_declined

    # The leakage rule, end to end: the learner saw the x recorded with each decision
    # (no mobile logins yet), not the customer's features when the answers came.
    stored = await CheckpointStore(
        redis, key_prefix=settings.key_prefix, signing_key=settings.require_model_key()
    ).latest()
    assert stored is not None
    decision_log = DecisionLog(redis, key_prefix=settings.key_prefix, ttl_seconds=60,
                               no_answer_window_s=1.0, no_answer_mode="negative")  # fmt: skip
    logged = [await decision_log.fetch("C1", decision["decision_id"]) for decision in decisions]
    means = stored.model.pipeline(ACCEPTED)["FlooredStandardScaler"].means
    assert means["ch_mobile_count"] == 0.0
    assert means["txn_count"] == pytest.approx(1.9459, abs=1e-4)  # log1p(6)
    assert means["event_count"] == pytest.approx(1.9459, abs=1e-4)  # 6 events, not 16
    recorded_days = [record.x["last_seen_days"] for record in logged if record is not None]
    assert len(recorded_days) == DECISIONS
    assert means["last_seen_days"] == pytest.approx(fmean(recorded_days))

    log = (tmp_path / "worker.log").read_text()
    assert "answer lost" in log
    assert "its decision is unknown" in log


async def wait_for_models(
    api: httpx.AsyncClient, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """`GET /v1/models` once `done` says so."""
    async with asyncio.timeout(LEARN_TIMEOUT_S):
        while not done(models := (await api.get("/v1/models")).json()):
            await asyncio.sleep(0.1)
    return models


async def test_an_unanswered_offer_is_learned_as_a_negative_and_a_late_answer_changes_nothing(
    settings: Settings, redis: Redis, worker: subprocess.Popen[bytes]
) -> None:
    store = RedisFeatureStore(
        redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
    )
    async with serve(settings) as api:
        await post_events(api, [event(f"t{i}", "transaction", amount=600.0) for i in range(6)])
        await wait_for_event_count(store, 6)
        ignored, answered = await decide(api), await decide(api)
        await post_events(
            api,
            [event("i1", "offer_impression", action_id=ACCEPTED,
                   decision_id=ignored["decision_id"]),
             event("i2", "offer_impression", action_id=ACCEPTED,
                   decision_id=answered["decision_id"]),
             event("a2", "offer_accepted", action_id=ACCEPTED,
                   decision_id=answered["decision_id"])],
        )  # fmt: skip
        models = await wait_for_models(
            api, lambda body: body["propensity"]["outcomes_learned"][ACCEPTED] == 2
        )
        assert models["attribution"]["forwarded"] == 1
        assert models["attribution"]["no_answer"] == 1  # the window of i1 closed, unanswered
        figures = models["propensity"]["validation"]["actions"][ACCEPTED]
        assert (figures["outcomes"], figures["accepts"]) == (2, 1)
        assert figures["mean_prediction"] is not None
        assert models["propensity"]["validation"]["overall"]["outcomes"] == 2
        learned_version = models["propensity"]["version"]

        late = event("a1", "offer_accepted", action_id=ACCEPTED, decision_id=ignored["decision_id"])
        await post_events(api, [late])
        await wait_for_models(api, lambda body: body["attribution"]["late"] == 1)
        await asyncio.sleep(2 * settings.checkpoint_interval_s)  # a learner would have saved
        models = (await api.get("/v1/models")).json()
        assert models["propensity"]["outcomes_learned"][ACCEPTED] == 2
        assert models["propensity"]["version"] == learned_version
        assert models["attribution"]["forwarded"] == 1

        # both outcomes, the negative too, are in the bandit log if their action ranked first
        rank_one = sum(
            decision["actions"][0]["action_id"] == ACCEPTED for decision in (ignored, answered)
        )
        offpolicy = (await api.get("/v1/models/offpolicy")).json()
        assert offpolicy["records"] == rank_one
        assert offpolicy["model_version"] == learned_version
