"""Churn risk and segments end to end: events through the broker, a real worker labels and
learns them, the in-process API serves the checkpoints in the profile and in decisions."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from engine.core.settings import Settings
from models.customer_model_stores import CustomerModelStores
from tests.integration.test_learning import serve

TIMEOUT_S = 30.0


@pytest.fixture(params=["learner process", "learner in the worker"])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """A one-day churn horizon and a two-customer warm-up, so that a test can reach them;
    the churn and segment learner in a process of its own (as `nba up` runs it) or in the
    worker (a lone `nba worker`)."""
    return settings.model_copy(
        update={
            "churn_horizon_days": 1.0,
            "churn_dormant_days": 1.0,
            "segments_warmup": 2,
            "learner_in_workers": request.param == "learner in the worker",
        }
    )


@pytest.fixture
def learning(settings: Settings, request: pytest.FixtureRequest) -> str:
    """Who learns: the `nba learner` process, started here unless the worker learns."""
    if settings.learner_in_workers:
        return "worker@"
    request.getfixturevalue("learner")
    return "learner@"


def event(event_id: str, customer_id: str, kind: str, ts: str, **fields: Any) -> dict[str, Any]:
    return {"event_id": event_id, "customer_id": customer_id, "type": kind, "channel": "mobile",
            "ts": ts} | fields  # fmt: skip


async def post_and_wait(api: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    """Post `events` and wait until each customer's profile shows its latest event."""
    assert (await api.post("/v1/events", json=events)).status_code == 202
    async with asyncio.timeout(TIMEOUT_S):
        for item in events:
            while (await api.get(f"/v1/customers/{item['customer_id']}")).status_code != 200:
                await asyncio.sleep(0.1)


async def test_churn_labels_are_resolved_learned_and_served_with_segments(
    settings: Settings, redis: Redis, worker: subprocess.Popen[bytes], learning: str
) -> None:
    churn_store = CustomerModelStores.open(
        redis, key_prefix=settings.key_prefix, signing_key=settings.require_model_key()
    ).churn
    async with serve(settings) as api:
        await post_and_wait(api, [event("a1", "A", "login", "2026-03-01T10:00:00Z"),
                                  event("b1", "B", "login", "2026-03-01T10:00:00Z")])  # fmt: skip
        profile = (await api.get("/v1/customers/A")).json()
        assert profile["models"]["churn_risk"] == pytest.approx(0.05)  # the prior
        assert profile["models"]["segment"] == -1
        assert any("prior" in note for note in profile["models"]["notes"])

        # B closes a product within the horizon: churned at once. C's event, later than
        # A's horizon (in which A did nothing) plus the allowed lateness (2 days), moves
        # the watermark past it: A is dormant
        closed = event("b2", "B", "product_closed", "2026-03-01T20:00:00Z", product="savings")
        await post_and_wait(api, [closed])
        await post_and_wait(api, [event("c1", "C", "login", "2026-03-06T10:00:00Z")])
        async with asyncio.timeout(TIMEOUT_S):
            while (stored := await churn_store.latest()) is None or (
                stored.model.labels_learned < 3
            ):
                await asyncio.sleep(0.1)
        # B closed; A dormant; B's snapshot taken after the closure dormant too
        assert stored.model.labels_learned == 3
        holder = await redis.get(f"{settings.key_prefix}nba:lock:customer-models")
        assert holder is not None
        assert holder.decode().startswith(learning), holder

        async with asyncio.timeout(TIMEOUT_S):
            while (body := (await api.get("/v1/customers/A")).json())["models"][
                "churn_version"
            ] != stored.version or body["models"]["segment"] == -1:
                await asyncio.sleep(0.1)
        models = body["models"]
        assert models["churn_risk"] > 0.05  # every label was churn: the risk rose
        assert models["segment"] in range(settings.segments_count)
        assert models["notes"] == []
        assert [item["name"] for item in body["families"]["models"]] == ["churn_risk", "segment"]

        async with asyncio.timeout(TIMEOUT_S):  # C's sample may be learned a step later
            while (segments := (await api.get("/v1/segments")).json())["customers_learned"] < 3:
                await asyncio.sleep(0.1)
        assert segments["ready"] is True
        assert segments["customers_learned"] >= 3  # A, B, C (and B's snapshot after closing)
        assert len(segments["segments"]) == settings.segments_count
        assert (
            sum(segment["size"] for segment in segments["segments"])
            == (segments["customers_learned"])
        )
        assert all(isinstance(segment["description"], str) for segment in segments["segments"])

        decision = (await api.get("/v1/customers/A/next-best-actions?channel=web")).json()
        assert decision["actions"]
