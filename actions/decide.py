"""`decide()`: the ranked next-best actions for one customer on one channel.

Pure: it takes the customer's features (already read by the caller in one round trip),
the catalog, a ranking policy and the decision time, and returns the ranking with every
score's parts and the reasons behind each action. No I/O: what must be recorded for the
model to learn from the answer — the model input `x` and the candidate ids — comes back
in the `Decision`, and the caller stores it (`actions.decision_log`).

The policy (`models.exploration`) explores: Thompson sampling or epsilon-greedy rank by
propensity × value with some randomness, and each placement carries its logged
probability; `Greedy` wraps a model that needs no exploration (the static base rates).
Contact history: an action the customer declined less than `decline_cooloff_s` ago is
left out (with a note saying so). Consent, suitability and contact caps are tracked in
their own issues and are not applied here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from actions.catalog import RULE_ERRORS, Catalog, rule_context
from features.events import Channel
from models.exploration import ExplorationPolicy
from models.features_vector import vectorise


@dataclass(frozen=True, slots=True)
class RankedAction:
    """One recommended action with how its score was made and why it was chosen.

    `score` = propensity × value, the expected value of showing it; `probability` is the
    chance the policy had of placing this action at this rank (see `models.exploration`).
    """

    rank: int
    action_id: str
    name: str
    kind: str
    product: str
    score: float
    score_parts: dict[str, float]
    probability: float
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer to "what next?" for one customer on one channel, and what to record of it.

    `x` (the model input at decision time) and `candidates` (the eligible action ids) are
    for the decision log, not for the caller's client: `to_dict` leaves them out.
    """

    decision_id: str
    customer_id: str
    channel: str
    ts: float
    policy: str
    degraded: bool
    actions: list[RankedAction]
    x: dict[str, float]
    candidates: list[str]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The decision as answered to a client (without `x` and `candidates`)."""
        return {
            "decision_id": self.decision_id,
            "customer_id": self.customer_id,
            "channel": self.channel,
            "ts": self.ts,
            "policy": self.policy,
            "degraded": self.degraded,
            "actions": [asdict(action) for action in self.actions],
            "notes": list(self.notes),
        }


def decide(
    *,
    customer_id: str,
    channel: Channel,
    features: Mapping[str, float | int | str],
    catalog: Catalog,
    policy: ExplorationPolicy,
    n: int,
    now: float,
    degraded: bool = False,
    contacts: Mapping[str, Mapping[str, int]] | None = None,
    decline_cooloff_s: float = 0.0,
) -> Decision:
    """Rank the catalog's eligible actions on `channel` with `policy`; keep `n`.

    `now` is the decision time (Unix seconds): the model sees the features as
    `vectorise(features, now=now, channel=channel)`. `degraded` marks a decision made
    without the customer's real features (the store was unavailable); it is reported,
    never hidden. `contacts` is the customer's history per action (impressions, declines,
    when: `features.reading.contact_history`).
    """
    context = rule_context(features, channel)
    notes = ["customer features unavailable: ranked as for a new customer"] if degraded else []
    candidates = []
    for action in catalog.for_channel(channel):
        declined_ts = (contacts or {}).get(action.id, {}).get("last_declined_ts", 0)
        if declined_ts and now - declined_ts < decline_cooloff_s:
            hours = (now - declined_ts) / 3600
            notes.append(f"{action.id} left out: declined {hours:.0f} h ago (cool-off)")
            continue
        try:
            if action.is_eligible(context):
                candidates.append(action)
        except RULE_ERRORS as error:
            notes.append(f"{action.id} left out: its eligibility rule failed: {error}")
    by_id = {action.id: action for action in candidates}
    ids = list(by_id)
    x = vectorise(features, now=now, channel=channel)
    choices = policy.rank(x, ids, n, values=[action.spec.value for action in candidates])
    model_name = policy.model.name
    ranked = []
    for choice in choices:
        spec = by_id[choice.action_id].spec
        expected = choice.propensity * spec.value
        ranked.append(
            RankedAction(
                rank=choice.rank,
                action_id=choice.action_id,
                name=spec.name,
                kind=spec.kind.value,
                product=spec.product,
                score=expected,
                score_parts={"propensity": choice.propensity, "value": spec.value},
                probability=choice.probability,
                reasons=[
                    spec.reason,
                    f"eligible: {spec.eligibility}",
                    f"expected value {expected:.2f} = propensity {choice.propensity:.3f} "
                    f"({model_name}) × value {spec.value:.2f}",
                    f"rank {choice.rank} by {policy.name} (ranking score {choice.score:.2f}), "
                    f"a placement it makes with probability {choice.probability:.2f}",
                ],
            )
        )
    return Decision(
        decision_id=uuid.uuid4().hex,
        customer_id=customer_id,
        channel=channel.value,
        ts=now,
        policy=f"{policy.name} on {model_name} propensity × value",
        degraded=degraded,
        actions=ranked,
        x=x,
        candidates=ids,
        notes=notes,
    )
