"""`decide()`: the ranked next-best actions for one customer on one channel.

Pure: it takes the customer's features (already read by the caller in one round trip),
the catalog and a propensity model, and returns the ranking with every score's parts
and the reasons behind each action. Contact policy, consent, suitability, exploration
and decision recording are tracked in their own issues and are not applied here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from actions.catalog import RULE_ERRORS, Catalog, rule_context
from features.events import Channel
from models.propensity import PropensityModel


@dataclass(frozen=True, slots=True)
class RankedAction:
    """One recommended action with how its score was made and why it was chosen."""

    rank: int
    action_id: str
    name: str
    kind: str
    product: str
    score: float
    score_parts: dict[str, float]
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "what next?" for one customer on one channel."""

    decision_id: str
    customer_id: str
    channel: str
    policy: str
    degraded: bool
    actions: list[RankedAction]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    *,
    customer_id: str,
    channel: Channel,
    features: Mapping[str, float | int],
    catalog: Catalog,
    model: PropensityModel,
    n: int,
    degraded: bool = False,
) -> Decision:
    """Rank the catalog's eligible actions on `channel` by propensity × value; keep `n`.

    `degraded` marks a decision made without the customer's real features (the store
    was unavailable); it is reported, never hidden.
    """
    context = rule_context(features, channel)
    notes = ["customer features unavailable: ranked as for a new customer"] if degraded else []
    candidates = []
    for action in catalog.for_channel(channel):
        try:
            if action.is_eligible(context):
                candidates.append(action)
        except RULE_ERRORS as error:
            notes.append(f"{action.id} left out: its eligibility rule failed: {error}")
    propensities = model.score(features, [action.id for action in candidates])
    scored = sorted(
        zip(candidates, propensities, strict=True),
        key=lambda pair: pair[1] * pair[0].spec.value,
        reverse=True,
    )[:n]
    ranked = [
        RankedAction(
            rank=rank,
            action_id=action.id,
            name=action.spec.name,
            kind=action.spec.kind.value,
            product=action.spec.product,
            score=propensity * action.spec.value,
            score_parts={"propensity": propensity, "value": action.spec.value},
            reasons=[
                action.spec.reason,
                f"eligible: {action.spec.eligibility}",
                f"expected value {propensity * action.spec.value:.2f} = "
                f"propensity {propensity:.3f} ({model.name}) × value {action.spec.value:.2f}",
            ],
        )
        for rank, (action, propensity) in enumerate(scored, start=1)
    ]
    return Decision(
        decision_id=uuid.uuid4().hex,
        customer_id=customer_id,
        channel=channel.value,
        policy=f"{model.name} × value; online learning not built yet",
        degraded=degraded,
        actions=ranked,
        notes=notes,
    )
