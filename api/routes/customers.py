"""The customer resource: the live profile and the next-best actions."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status

from api.deps import CustomerId, ServicesDep
from api.responses import OrjsonResponse
from api.services import Services
from features.derived import FEATURES
from features.events import Channel
from features.reading import contact_history, read_features
from models.scores import ModelScores

router = APIRouter(prefix="/v1/customers", tags=["customers"])


@router.get("/{customer_id}")
async def get_customer(customer_id: CustomerId, services: ServicesDep) -> OrjsonResponse:
    """The customer's features as of now: flat by name, grouped by family with descriptions,
    the contact history per action (shown, clicked, accepted, declined, when), and the
    models' view (`models`, also the family "models"): churn risk and segment, with the
    versions they come from and notes saying when a model has not learned enough yet."""
    store, now = services.store, time.time()
    state = await store.read_state(customer_id)
    if state is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no events seen for customer {customer_id}")
    features = read_features(store.fold, state, now, services.rfm_edges.current)
    scores = services.customer_models().score(features, now)
    families: dict[str, list[dict[str, Any]]] = {}
    for feature in FEATURES:
        families.setdefault(feature.family, []).append(
            {
                "name": feature.name,
                "value": features[feature.name],
                "description": feature.description,
            }
        )
    families["models"] = _model_family(services, scores)
    return OrjsonResponse(
        {
            "customer_id": customer_id,
            "features": features,
            "families": families,
            "models": {
                **scores.as_features(),
                "churn_version": scores.churn_version,
                "segments_version": scores.segments_version,
                "notes": scores.notes,
            },
            "contacts": contact_history(store.fold, state),
        }
    )


def _model_family(services: Services, scores: ModelScores) -> list[dict[str, Any]]:
    """The family "models": churn risk and segment as profile items with descriptions."""
    horizon = services.settings.churn_horizon_days
    dormant = services.settings.churn_dormant_days
    return [
        {
            "name": "churn_risk",
            "value": scores.churn_risk,
            "description": f"probability of closing a product within {horizon:g} days, or of "
            f"no customer-initiated event in the last {dormant:g} of them (churn model "
            f"version {scores.churn_version})",
        },
        {
            "name": "segment",
            "value": scores.segment,
            "description": "behavioural segment id, described by GET /v1/segments; -1: not "
            f"segmented yet (segments version {scores.segments_version})",
        },
    ]


@router.get("/{customer_id}/next-best-actions")
async def get_next_best_actions(
    customer_id: CustomerId,
    services: ServicesDep,
    channel: Annotated[Channel, Query(description="where the actions will be shown")],
    n: Annotated[int, Query(ge=1, le=20, description="how many actions to return")] = 3,
) -> OrjsonResponse:
    """The top `n` actions for this customer on `channel`, with scores and reasons.

    The decision is recorded before it is answered (one more Redis call), so that the
    customer's answer, reported later as an event with its `decision_id`, is learned
    from with the features the model saw. When the feature store cannot be read, the
    answer is still given, ranked as for a new customer, flagged `degraded`, and not
    recorded: the model does not learn from a decision made without the customer's
    features. The steps are `actions.next_best.next_best_actions`, which the decision
    benchmark runs too.
    """
    answer = await services.next_best_actions(customer_id, channel, n, now=time.time())
    # rendered by orjson directly, skipping FastAPI's encoder
    return OrjsonResponse(answer.to_dict())
