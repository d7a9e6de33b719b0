"""The models resource: which propensity model serves, how far it has learned, how it explores."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter
from redis.exceptions import RedisError

from api.deps import ServicesDep
from api.services import exploration_settings

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
async def get_models(services: ServicesDep) -> dict[str, Any]:
    """The serving propensity model (version, checkpoint time, outcomes learned per action,
    refused checkpoints), the exploration policy, and what became of the answers reported.

    `attribution` counts the answers the workers forwarded to learning, and those they
    could not use: duplicates, unknown decisions (expired or never recorded), actions the
    decision did not show. It is null when Redis cannot be read.
    """
    try:
        attribution: dict[str, int] | None = asdict(await services.decision_log.counts())
    except RedisError:
        attribution = None
    return {
        "propensity": services.live_model.describe(),
        "exploration": exploration_settings(services.settings),
        "attribution": attribution,
    }
