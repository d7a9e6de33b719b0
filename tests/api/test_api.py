"""The HTTP API against the real embedded Valkey and Kafka, lifespan included."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from actions.catalog import load_catalog
from actions.decision_log import DecisionLog
from api.app import create_app
from engine.core.settings import Settings
from engine.stream.embedded import free_port
from engine.stream.topics import ensure_topics
from features.derived import FEATURES
from features.events import MAX_AMOUNT, Event, decode_message
from features.state import FeatureFold
from features.stats import IngestStats
from features.store import RedisFeatureStore
from models.checkpoints import CheckpointStore, LearnerState
from models.offpolicy import BanditLog, LoggedDecision
from models.online import OnlinePropensity

TS = "2026-01-05T09:30:00Z"


def raw(event_id: str, customer_id: str = "C1", **overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "event_id": event_id,
        "customer_id": customer_id,
        "type": "transaction",
        "channel": "pos",
        "ts": TS,
        "amount": 25.0,
    }
    return item | overrides


@asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, and an HTTP client talking to it in-process.

    An exception the app lets escape becomes a 500 response, as behind a real server.
    """
    await ensure_topics(settings)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        yield client


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings) as client:
        yield client


@pytest.fixture
async def api_without_redis(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The API pointed at a Redis address where nothing listens (Kafka is up)."""
    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with serve(dead) as client:
        yield client


async def published(settings: Settings, expected: int) -> list[Event]:
    """Every event on the events topic, once `expected` have arrived (plus any extra)."""
    consumer = AIOKafkaConsumer(
        settings.events_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    events: list[Event] = []
    try:
        async with asyncio.timeout(10):
            while len(events) < expected:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        assert record.value is not None
                        decoded, rejections, _ = decode_message(record.value)
                        assert rejections == []
                        events.extend(decoded)
        for records in (await consumer.getmany(timeout_ms=300)).values():
            for record in records:
                assert record.value is not None
                events.extend(decode_message(record.value)[0])
    finally:
        await consumer.stop()
    return events


async def write_features(redis: Redis, settings: Settings, events: list[dict[str, Any]]) -> None:
    store = RedisFeatureStore(
        redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
    )
    await store.apply([Event.model_validate(item) for item in events])


# --- POST /v1/events ---------------------------------------------------------------------


async def test_one_event_is_accepted_and_published(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    response = await api.post("/v1/events", json=raw("e1"))
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "rejected": 0, "errors": []}
    [event] = await published(settings, 1)
    assert event == Event.model_validate(raw("e1"))


async def test_a_batch_with_a_bad_item_publishes_the_good_ones(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    batch = [raw("e0", "A"), raw("e1", "B", channel="fax"), raw("e2", "C"), raw("e3", "A")]
    response = await api.post("/v1/events", json=batch)
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == 3
    assert body["rejected"] == 1
    [error] = body["errors"]
    assert (error["index"], error["event_id"]) == (1, "e1")
    assert error["reason"].startswith("channel: ")
    events = await published(settings, 3)
    assert sorted(event.event_id for event in events) == ["e0", "e2", "e3"]
    assert [event.event_id for event in events if event.customer_id == "A"] == ["e0", "e3"]


async def test_a_non_object_item_is_rejected_by_index(api: httpx.AsyncClient) -> None:
    response = await api.post("/v1/events", json=[raw("e0"), 7])
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"index": 1, "event_id": None, "reason": "event must be a JSON object, got int"}
    ]


async def test_invalid_json_is_a_400(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/events", content=b'{"event_id": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


async def test_too_many_events_is_a_413_and_publishes_nothing(settings: Settings) -> None:
    limited = settings.model_copy(update={"max_events_per_request": 3})
    async with serve(limited) as api:
        too_many = await api.post("/v1/events", json=[raw(f"big{i}") for i in range(4)])
        assert too_many.status_code == 413
        assert "at most 3" in too_many.json()["detail"]
        at_limit = await api.post("/v1/events", json=[raw(f"ok{i}") for i in range(3)])
        assert at_limit.status_code == 202
        assert at_limit.json()["accepted"] == 3
    events = await published(settings, 3)
    assert sorted(event.event_id for event in events) == ["ok0", "ok1", "ok2"]


async def test_an_event_ahead_of_the_clock_is_refused_and_its_neighbours_published(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    batch = [raw("e0"), raw("e1", ts="2099-01-01T00:00:00Z"), raw("e2")]
    response = await api.post("/v1/events", json=batch)
    assert response.status_code == 422
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 1)
    [error] = body["errors"]
    assert (error["index"], error["event_id"]) == (1, "e1")
    assert error["reason"].startswith("ts: 2099-01-01T00:00:00Z is ")
    assert error["reason"].endswith(
        "s ahead of this server's clock; at most 300 s ahead is accepted (NBA_MAX_CLOCK_SKEW_S)"
    )
    events = await published(settings, 2)
    assert sorted(event.event_id for event in events) == ["e0", "e2"]


async def test_the_clock_skew_allowed_is_a_setting(settings: Settings) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=120)).isoformat()
    async with serve(settings.model_copy(update={"max_clock_skew_s": 60})) as strict:
        refused = await strict.post("/v1/events", json=raw("e0", ts=soon))
        assert refused.status_code == 422
        assert "at most 60 s ahead" in refused.json()["errors"][0]["reason"]
    async with serve(settings) as default:
        accepted = await default.post("/v1/events", json=raw("e1", ts=soon))
        assert accepted.status_code == 202
    [event] = await published(settings, 1)
    assert event.event_id == "e1"


# --- GET /v1/customers/{id} --------------------------------------------------------------


async def test_an_unknown_customer_is_a_404(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/customers/nobody")
    assert response.status_code == 404
    assert "nobody" in response.json()["detail"]


async def test_a_known_customer_has_flat_and_grouped_features(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    await write_features(
        redis,
        settings,
        [
            raw("e1", amount=25.0),
            raw("e2", amount=17.5, ts="2026-01-06T09:30:00Z"),
            raw("e3", type="login", channel="mobile", amount=None),
        ],
    )
    response = await api.get("/v1/customers/C1")
    assert response.status_code == 200
    body = response.json()
    assert body["customer_id"] == "C1"
    flat = body["features"]
    assert list(flat) == [feature.name for feature in FEATURES]
    assert flat["event_count"] == 3
    assert flat["txn_count"] == 2
    assert flat["txn_amount"] == 42.5
    assert flat["ch_pos_count"] == 2
    assert flat["ch_mobile_count"] == 1
    assert flat["first_seen_ts"] == 1767605400.0
    assert flat["last_seen_ts"] == 1767605400.0 + 86_400
    families = body["families"]
    assert set(families) == {feature.family for feature in FEATURES} | {"models"}
    models = families.pop("models")
    assert [item["name"] for item in models] == ["churn_risk", "segment"]
    assert body["models"]["churn_risk"] == pytest.approx(0.05)  # the prior: nothing learned
    assert body["models"]["segment"] == -1  # not segmented yet
    grouped = {item["name"]: (family, item) for family, items in families.items() for item in items}
    assert len(grouped) == len(FEATURES)
    for feature in FEATURES:
        family, item = grouped[feature.name]
        assert family == feature.family
        assert item["description"] == feature.description
        assert item["value"] == flat[feature.name]


def numbers_in(value: Any) -> list[float]:
    """Every number in a decoded JSON value, however deeply nested."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    if isinstance(value, dict):
        return [number for item in value.values() for number in numbers_in(item)]
    if isinstance(value, list):
        return [number for item in value for number in numbers_in(item)]
    return []


#: Histories a customer could have stored before event times were bounded by the clock,
#: and the largest ones the schema allows: (time, amount) of each transaction.
EXTREME_STATES: dict[str, list[tuple[float | str, float]]] = {
    "in-2099": [(TS, 25.0), ("2099-01-01T00:00:00Z", 25.0)],
    "in-9999": [(TS, 25.0), ("9999-12-31T23:59:59Z", MAX_AMOUNT)],
    "at-epoch-0": [(0, 25.0), (TS, 25.0)],
    # 1,844 events of MAX_AMOUNT are as much as a day's amount can hold in 64 bits
    "max-amounts": [(TS, MAX_AMOUNT)] * 1_844,
    "many-events": [(1_767_605_400 + 600 * i, 1.0 + i % 100) for i in range(20_000)],
}


async def test_no_stored_state_makes_the_profile_or_a_decision_fail(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    for customer, history in EXTREME_STATES.items():
        await write_features(
            redis,
            settings,
            [
                raw(f"{customer}-{i}", customer, ts=ts, amount=amount)
                for i, (ts, amount) in enumerate(history)
            ],
        )
    for customer, history in EXTREME_STATES.items():
        profile = await api.get(f"/v1/customers/{customer}")
        assert profile.status_code == 200, (customer, profile.text)
        flat = profile.json()["features"]
        assert flat["txn_count"] == len(history), customer
        assert None not in flat.values(), customer  # orjson writes NaN and infinity as null
        assert all(math.isfinite(number) for number in numbers_in(profile.json())), customer
        decision = await api.get(f"/v1/customers/{customer}/next-best-actions?channel=mobile")
        assert decision.status_code == 200, (customer, decision.text)
        actions = decision.json()["actions"]
        assert actions, customer
        assert all(isinstance(action["score"], float) for action in actions), customer
        assert all(math.isfinite(number) for number in numbers_in(decision.json())), customer


@pytest.mark.parametrize("path", ["/v1/customers/%7BC1%7D", "/v1/customers/C%201"])
async def test_a_bad_customer_id_is_a_422(api: httpx.AsyncClient, path: str) -> None:
    assert (await api.get(path)).status_code == 422
    assert (await api.get(f"{path}/next-best-actions?channel=web")).status_code == 422


# --- GET /v1/customers/{id}/next-best-actions --------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["channel=fax", "", "channel=web&n=0", "channel=web&n=21", "channel=web&n=two"],
    ids=["bad-channel", "no-channel", "n-zero", "n-too-big", "n-not-int"],
)
async def test_next_best_actions_refuses_bad_queries(api: httpx.AsyncClient, query: str) -> None:
    response = await api.get(f"/v1/customers/C1/next-best-actions?{query}")
    assert response.status_code == 422


@pytest.mark.parametrize("n", [1, 20])
async def test_n_bounds_are_accepted(api: httpx.AsyncClient, n: int) -> None:
    response = await api.get(f"/v1/customers/C1/next-best-actions?channel=branch&n={n}")
    assert response.status_code == 200
    assert 1 <= len(response.json()["actions"]) <= n


async def test_next_best_actions_are_ranked_with_a_decision_id_and_recorded(
    redis: Redis, settings: Settings
) -> None:
    await write_features(redis, settings, [raw(f"e{i}", amount=600.0) for i in range(6)])
    async with serve(settings.model_copy(update={"exploration": "none"})) as api:
        response = await api.get("/v1/customers/C1/next-best-actions?channel=web&n=3")
        again = (await api.get("/v1/customers/C1/next-best-actions?channel=web&n=3")).json()
    assert response.status_code == 200
    body = response.json()
    assert body["customer_id"] == "C1"
    assert body["channel"] == "web"
    assert body["degraded"] is False
    assert body["notes"] == []
    assert len(body["decision_id"]) == 32
    assert body["policy"] == "greedy on online-logistic propensity × value"
    assert body["model_version"] == 0
    actions = body["actions"]
    assert [item["rank"] for item in actions] == [1, 2, 3]
    scores = [item["score"] for item in actions]
    assert scores == sorted(scores, reverse=True)
    for item in actions:
        assert item["score"] == pytest.approx(
            item["score_parts"]["propensity"] * item["score_parts"]["value"]
        )
        assert item["probability"] == 1.0
        assert item["reasons"]
    # 6 transactions of 600: the personal loan (txn_amount >= 1000) is eligible and ranks first
    assert actions[0]["action_id"] == "personal_loan"
    assert again["decision_id"] != body["decision_id"]
    log = DecisionLog(redis, key_prefix=settings.key_prefix, ttl_seconds=60,
                      no_answer_window_s=30.0, no_answer_mode="negative")  # fmt: skip
    logged = await log.fetch("C1", body["decision_id"])
    assert logged is not None
    assert [(shown.action_id, shown.rank, shown.probability) for shown in logged.shown] == [
        (item["action_id"], item["rank"], item["probability"]) for item in actions
    ]
    assert logged.ts == body["ts"]
    assert logged.x["txn_amount"] == pytest.approx(8.19, abs=0.01)  # log1p(3600)
    assert logged.x["channel_web"] == 1.0
    ttl = await redis.ttl(log.decision_key("C1", body["decision_id"]))
    assert 0 < ttl <= settings.decision_ttl_seconds


async def test_thompson_sampling_explores_and_logs_each_placements_probability(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    await write_features(redis, settings, [raw(f"e{i}", amount=600.0) for i in range(6)])
    bodies = [
        (await api.get("/v1/customers/C1/next-best-actions?channel=web&n=3")).json()
        for _ in range(30)
    ]
    assert {body["policy"] for body in bodies} == {"thompson on online-logistic propensity × value"}
    for body in bodies:
        assert [item["rank"] for item in body["actions"]] == [1, 2, 3]
        for item in body["actions"]:
            assert 0.0 < item["probability"] <= 1.0
            assert any("by thompson" in reason for reason in item["reasons"])
    # cold start: wide priors, so the top action varies between decisions
    assert len({body["actions"][0]["action_id"] for body in bodies}) > 1


async def test_a_new_customer_gets_new_customer_actions(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/customers/nobody/next-best-actions?channel=sms&n=20")
    assert response.status_code == 200
    ids = {item["action_id"] for item in response.json()["actions"]}
    assert "mobile_app_onboarding" in ids
    assert "savings_account" not in ids  # needs spending first


async def test_next_best_actions_degrade_when_redis_is_down(
    api_without_redis: httpx.AsyncClient,
) -> None:
    response = await api_without_redis.get("/v1/customers/C1/next-best-actions?channel=web")
    assert response.status_code == 200
    body = response.json()
    assert body["degraded"] is True
    assert "unavailable" in body["notes"][0]
    assert "not recorded" in body["notes"][1]
    assert [item["rank"] for item in body["actions"]] == [1, 2, 3]


async def test_the_profile_is_a_503_when_redis_is_down(
    api_without_redis: httpx.AsyncClient,
) -> None:
    response = await api_without_redis.get("/v1/customers/C1")
    assert response.status_code == 503


# --- GET /v1/models ---------------------------------------------------------------------


def checkpoints(redis: Redis, settings: Settings, key: bytes | None = None) -> CheckpointStore:
    signing_key = key if key is not None else settings.require_model_key()
    return CheckpointStore(redis, key_prefix=settings.key_prefix, signing_key=signing_key)


def learned_model(settings: Settings, action_id: str, outcomes: int) -> OnlinePropensity:
    model = OnlinePropensity(load_catalog(settings.catalog_path).base_rates())
    for _ in range(outcomes):
        model.learn_one({"channel_web": 1.0}, action_id, True)
    return model


async def test_models_shows_the_priors_before_any_checkpoint(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    response = await api.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    propensity = body["propensity"]
    assert propensity["model"] == "online-logistic"
    assert propensity["version"] == 0
    assert propensity["checkpoint_ts"] is None
    catalog = load_catalog(settings.catalog_path)
    assert propensity["outcomes_learned"] == {action.id: 0 for action in catalog.actions}
    assert propensity["refused_checkpoints"] == {"count": 0, "last": None}
    validation = propensity["validation"]
    assert validation["overall"]["outcomes"] == 0
    assert validation["overall"]["log_loss"] is None
    assert set(validation["actions"]) == {action.id for action in catalog.actions}
    assert propensity["drift"]["detected"] == 0
    assert propensity["drift"]["alerts"] == []
    assert body["exploration"] == {"policy": "thompson", "draws": 256}
    assert body["attribution"] == {
        "forwarded": 0,
        "duplicates": 0,
        "unknown_decision": 0,
        "not_shown": 0,
        "late": 0,
        "no_answer": 0,
        "no_answer_ignored": 0,
    }


@pytest.mark.parametrize(
    ("exploration", "expected"),
    [
        ({"exploration": "epsilon_greedy", "epsilon": 0.2},
         {"policy": "epsilon-greedy", "epsilon": 0.2}),
        ({"exploration": "none"}, {"policy": "greedy"}),
    ],
)  # fmt: skip
async def test_models_shows_the_exploration_settings(
    settings: Settings, exploration: dict[str, Any], expected: dict[str, Any]
) -> None:
    async with serve(settings.model_copy(update=exploration)) as api:
        assert (await api.get("/v1/models")).json()["exploration"] == expected


async def test_a_checkpoint_saved_before_start_serves_at_start(
    redis: Redis, settings: Settings
) -> None:
    await checkpoints(redis, settings).save(
        learned_model(settings, "travel_insurance", 7), expected_version=0
    )
    async with serve(settings) as api:
        propensity = (await api.get("/v1/models")).json()["propensity"]
    assert propensity["version"] == 1
    assert propensity["outcomes_learned"]["travel_insurance"] == 7
    assert propensity["checkpoint_ts"] is not None


async def served(api: httpx.AsyncClient) -> dict[str, Any]:
    """The `propensity` part of `GET /v1/models`."""
    propensity: dict[str, Any] = (await api.get("/v1/models")).json()["propensity"]
    return propensity


async def wait_for_version(api: httpx.AsyncClient, version: int) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while (body := (await api.get("/v1/models")).json())["propensity"]["version"] < version:
            await asyncio.sleep(0.05)
    return body


async def test_new_versions_serve_within_5_s_and_a_bad_signature_is_refused(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    store = checkpoints(redis, settings)
    await store.save(learned_model(settings, "travel_insurance", 5), expected_version=0)
    body = await wait_for_version(api, 1)
    assert body["propensity"]["outcomes_learned"]["travel_insurance"] == 5
    decision = (await api.get("/v1/customers/C1/next-best-actions?channel=web")).json()
    assert decision["model_version"] == 1
    # version 2, signed under another key: refused unread; version 1 keeps serving
    forged = checkpoints(redis, settings, key=b"not the engine's key, 32 bytes..")
    await forged.save(learned_model(settings, "travel_insurance", 50), expected_version=1)
    async with asyncio.timeout(5):
        while not (propensity := await served(api))["refused_checkpoints"]["count"]:
            await asyncio.sleep(0.05)
    assert propensity["version"] == 1
    assert propensity["outcomes_learned"]["travel_insurance"] == 5
    refused = propensity["refused_checkpoints"]
    assert refused["count"] == 1
    assert refused["last"]["version"] == 2
    assert "signature mismatch" in refused["last"]["reason"]
    await asyncio.sleep(1.2)  # a refused version is not retried (nor counted) at every poll
    assert (await served(api))["refused_checkpoints"]["count"] == 1
    # the engine's own next version is taken again
    await store.save(learned_model(settings, "travel_insurance", 9), expected_version=2)
    body = await wait_for_version(api, 3)
    assert body["propensity"]["outcomes_learned"]["travel_insurance"] == 9


async def test_every_replica_shows_the_figures_saved_with_the_serving_version(
    redis: Redis, settings: Settings
) -> None:
    state = LearnerState()
    rng = random.Random(1)
    for n in range(4000):
        accepted = rng.random() < (0.05 if n < 2000 else 0.5)
        state.validation.update("travel_insurance", 0.3 if accepted else 0.1, accepted)
        state.drift.update("travel_insurance", accepted, ts=1_800_000_000.0 + n)
    model = learned_model(settings, "travel_insurance", 4000)
    await checkpoints(redis, settings).save(model, expected_version=0, state=state)
    async with serve(settings) as first, serve(settings) as second:
        shown = [(await api.get("/v1/models")).json()["propensity"] for api in (first, second)]
    assert shown[0]["validation"] == shown[1]["validation"]
    assert shown[0]["drift"] == shown[1]["drift"]
    figures = shown[0]["validation"]["actions"]["travel_insurance"]
    assert figures["outcomes"] == 4000
    assert figures["roc_auc"] == 1.0  # the predictions separate the answers
    assert shown[0]["validation"]["overall"]["outcomes"] == 4000
    drift = shown[0]["drift"]
    assert (drift["detected"], drift["by_action"]) == (1, {"travel_insurance": 1})
    [alert] = drift["alerts"]
    assert alert["action_id"] == "travel_insurance"
    assert alert["ts"] > 1_800_000_000.0 + 2000
    assert alert["accept_rate_before"] < 0.1 < alert["accept_rate_since"]


# --- GET /v1/models/offpolicy -------------------------------------------------------------


async def test_offpolicy_without_logged_outcomes_has_no_estimate(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/models/offpolicy")
    assert response.status_code == 200
    assert response.json() == {"model_version": 0, "log_size": 10_000, "records": 0,
                               "skipped": 0, "logged": None, "policies": {}}  # fmt: skip


async def test_offpolicy_estimates_policies_from_the_latest_logged_outcomes(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    candidates = ["travel_insurance", "savings_account", "gone_from_the_catalog"]
    rng = random.Random(2)
    records = [
        LoggedDecision({"channel_web": 1.0}, candidates[:2], candidates[i % 2], 0.5,
                       float(rng.random() < 0.1))
        for i in range(300)
    ] + [LoggedDecision({}, candidates, candidates[0], 0.4, 1.0)]  # fmt: skip
    size = settings.offpolicy_log_size
    await BanditLog(redis, key_prefix=settings.key_prefix, size=size).append(records)
    response = await api.get("/v1/models/offpolicy", params={"limit": 200})
    assert response.status_code == 200
    body = response.json()
    assert (body["records"], body["skipped"]) == (199, 1)  # the latest 200 were read
    assert set(body["policies"]) == {"greedy", "uniform"}
    uniform = body["policies"]["uniform"]["ips"]
    low, high = uniform["ci95"]
    assert low < uniform["value"] < high
    assert uniform["value"] == pytest.approx(body["logged"]["value"])  # logged uniformly
    assert (await api.get("/v1/models/offpolicy", params={"limit": 0})).status_code == 422


async def test_offpolicy_is_a_503_when_redis_is_down(
    api_without_redis: httpx.AsyncClient,
) -> None:
    response = await api_without_redis.get("/v1/models/offpolicy")
    assert response.status_code == 503
    assert "bandit log cannot be read" in response.json()["detail"]


# --- GET /healthz ------------------------------------------------------------------------


async def test_healthz_is_a_503_naming_redis_when_it_is_down(
    api_without_redis: httpx.AsyncClient,
) -> None:
    response = await api_without_redis.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["redis"].startswith("unavailable: ")
    assert body["kafka"] == "ok"


async def test_healthz_is_live_but_not_ok_without_a_worker(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")
    assert response.status_code == 200  # the API itself can serve
    body = response.json()
    assert (body["status"], body["redis"], body["kafka"]) == ("stalled", "ok", "ok")
    assert body["problems"] == ["no live worker: nothing applies events"]
    assert body["ingest"] == {"applied": 0, "duplicates": 0, "dead_lettered": 0}
    assert body["workers"] == []
    assert body["processes"] == {}, "no supervisor (`nba up`) has recorded a process"
    assert (await api.get("/readyz")).status_code == 503


async def test_readyz_is_ok_with_a_worker_that_keeps_up(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    await stats.heartbeat("worker-a", [0, 1], lag={0: 0, 1: 3}, progress_ts=time.time() - 1)
    response = await api.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["status"], body["problems"]) == ("ok", [])
    [worker] = body["workers"]
    assert (worker["name"], worker["partitions"], worker["lag"]) == (
        "worker-a",
        [0, 1],
        {"0": 0, "1": 3},
    )
    assert worker["total_lag"] == 3
    assert worker["seconds_since_progress"] < 5


async def test_readyz_refuses_while_a_worker_is_behind_without_progress(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    stats = IngestStats(redis, key_prefix=settings.key_prefix)
    stalled_since = time.time() - settings.stall_s - 5
    await stats.heartbeat("worker-a", [0], lag={0: 40}, progress_ts=stalled_since)
    response = await api.get("/readyz")
    assert response.status_code == 503
    [problem] = response.json()["problems"]
    assert problem.startswith("worker worker-a has 40 messages waiting on partitions [0]")
    assert "no progress for 3" in problem  # stall_s + 5 seconds, give or take
    health = await api.get("/healthz")
    assert (health.status_code, health.json()["status"]) == (200, "stalled")


async def test_responses_are_json(api: httpx.AsyncClient) -> None:
    response = await api.get("/healthz")
    assert response.headers["content-type"].startswith("application/json")
    assert orjson.loads(response.content) == response.json()
