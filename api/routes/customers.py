"""The customer resource: the live profile and the next-best actions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from redis.exceptions import RedisError

from actions.decide import decide
from api.deps import CustomerId, ServicesDep
from features.events import Channel
from features.registry import FEATURES, default_features

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.get("/{customer_id}")
async def get_customer(customer_id: CustomerId, services: ServicesDep) -> dict[str, Any]:
    """The customer's features: flat by name, and grouped by family with descriptions."""
    features = await services.store.read(customer_id)
    if features is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no events seen for customer {customer_id}")
    families: dict[str, list[dict[str, Any]]] = {}
    for feature in FEATURES:
        families.setdefault(feature.family, []).append(
            {
                "name": feature.name,
                "value": features[feature.name],
                "description": feature.description,
            }
        )
    return {"customer_id": customer_id, "features": features, "families": families}


@router.get("/{customer_id}/next-best-actions")
async def get_next_best_actions(
    customer_id: CustomerId,
    services: ServicesDep,
    channel: Annotated[Channel, Query(description="where the actions will be shown")],
    n: Annotated[int, Query(ge=1, le=20, description="how many actions to return")] = 3,
) -> dict[str, Any]:
    """The top `n` actions for this customer on `channel`, with scores and reasons.

    When the feature store cannot be read, the answer is still given, ranked as for a
    new customer, and flagged `degraded`.
    """
    try:
        features = await services.store.read(customer_id)
        degraded = False
    except RedisError:
        features, degraded = None, True
    decision = decide(
        customer_id=customer_id,
        channel=channel,
        features=features if features is not None else default_features(),
        catalog=services.catalog,
        model=services.model,
        n=n,
        degraded=degraded,
    )
    return decision.to_dict()
