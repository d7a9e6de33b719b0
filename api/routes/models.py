"""The models resource: which propensity model serves, how far it has learned, how well it
predicts, whether its answers drift, how it explores — and what other policies would earn."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from redis.exceptions import RedisError

from api.deps import ServicesDep
from api.services import exploration_settings
from models.offpolicy import policy_report

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
async def get_models(services: ServicesDep) -> dict[str, Any]:
    """The serving propensity model (version, checkpoint time, outcomes learned per action,
    progressive validation, drift, refused checkpoints), the exploration policy, and what
    became of the answers reported.

    `propensity.validation` holds the learner's predict-then-learn figures for the serving
    version, overall and per action (counts, accept rate, mean prediction, log loss,
    rolling ROC AUC); `propensity.drift` the drift alerts (ADWIN on each action's accept
    stream): how many, per action, and the latest with when and what changed. Both are
    saved with the checkpoint, so every API replica shows the same for the same version.

    `attribution` counts the answers the workers forwarded to learning, and those they
    could not use: duplicates, unknown decisions (expired or never recorded), actions the
    decision did not show, late answers (after the no-answer window closed); and the
    closed no-answer windows learned as negatives or ignored. It is null when Redis cannot
    be read.
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


@router.get("/offpolicy")
async def get_offpolicy(
    services: ServicesDep,
    limit: Annotated[
        int | None,
        Query(ge=1, description="read at most the latest `limit` logged outcomes"),
    ] = None,
) -> dict[str, Any]:
    """Off-policy estimates, from the latest logged rank-1 outcomes, of policies not deployed.

    The learner keeps the latest `NBA_OFFPOLICY_LOG_SIZE` rank-1 outcomes (x, candidates,
    action, logged probability, accepted or not); this reads at most that many (fewer
    with `limit`). `logged` is what the deployed policies earned (the accept rate of the
    rank-1 action); `policies.greedy` (by the serving model's propensity × value, no
    exploration) and `policies.uniform` (a random candidate) are estimated by IPS, SNIPS
    and doubly robust (the serving model as reward model), each with a 95% confidence
    interval and the weights' effective sample size (`models.offpolicy`). The greedy
    estimate is in-sample: the serving model learned from these outcomes. 503 when Redis
    cannot be read.
    """
    log = services.bandit_log
    try:
        records = await log.latest(min(limit or log.size, log.size))
    except RedisError as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"the bandit log cannot be read: {error}"
        ) from error
    serving = services.live_model.current
    values = {action.id: action.spec.value for action in services.catalog.actions}
    # A private copy scored in a thread: the report's thousands of scorings do not hold up
    # the decisions served meanwhile with the same model.
    model = copy.deepcopy(serving.model)
    report = await asyncio.to_thread(policy_report, records, model, values)
    return {"model_version": serving.version, "log_size": log.size, **report}
