"""`next_best_actions()`: one decision end to end, as the API answers it.

Reads the customer (features and contact history, one state read), adds the churn risk
and segment the serving models give (`models.scores`), ranks with `decide()` and records
the decision in the decision log so that the customer's answer is learned from with the
features the model saw. It lives here, not in a route, so that the API and the decision
benchmark run the same code: a benchmark that reimplements the steps measures something
else as soon as one of them changes.

Failure is answered, never raised: when the feature store cannot be read the customer is
ranked as a new one, flagged `degraded` and not recorded (the model must not learn from a
decision made without the customer's features); when only the recording fails the
answer says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from actions.catalog import Catalog
from actions.decide import Decision, decide
from actions.decision_log import DecisionLog
from features.config import SECONDS_PER_DAY
from features.events import Channel
from features.reading import contact_history, default_features, read_features
from features.store import RedisFeatureStore
from models.exploration import ExplorationPolicy
from models.scores import CustomerModels

NOT_LEARNED = "its answer will not be learned from"


@dataclass(frozen=True, slots=True)
class NextBestActions:
    """A decision as answered: the `Decision`, the propensity model version that ranked
    it, whether it was recorded, and notes about the answer beyond the decision's own
    (why it was not recorded)."""

    decision: Decision
    model_version: int
    recorded: bool
    notes: list[str] = field(default_factory=list)

    @property
    def degraded(self) -> bool:
        """Whether the decision was made without the customer's features."""
        return self.decision.degraded

    def to_dict(self) -> dict[str, Any]:
        """The answer to a client: `Decision.to_dict()` plus `model_version`, and these
        notes after the decision's."""
        answer = self.decision.to_dict()
        answer["model_version"] = self.model_version
        answer["notes"].extend(self.notes)
        return answer


async def next_best_actions(
    *,
    customer_id: str,
    channel: Channel,
    n: int,
    now: float,
    store: RedisFeatureStore,
    decision_log: DecisionLog,
    catalog: Catalog,
    policy: ExplorationPolicy,
    model_version: int,
    customer_models: CustomerModels,
    rfm_edges: Mapping[str, tuple[float, ...]],
    decline_cooloff_days: float,
) -> NextBestActions:
    """Decide the top `n` actions for `customer_id` on `channel` at `now` and record it.

    `policy` ranks with the propensity model of version `model_version` (read both from
    one serving snapshot); `customer_models` give the churn risk and segment;
    `rfm_edges` are the published RFM tier edges; an action declined less than
    `decline_cooloff_days` ago is left out. Two Redis round trips when the decision has
    actions to record (the state read, the record), one otherwise.
    """
    try:
        state = await store.read_state(customer_id)
        degraded = False
    except RedisError:
        state, degraded = None, True
    features = (
        read_features(store.fold, state, now, rfm_edges)
        if state is not None
        else default_features()
    )
    features = {**features, **customer_models.score(features, now).as_features()}
    decision = decide(
        customer_id=customer_id,
        channel=channel,
        features=features,
        catalog=catalog,
        policy=policy,
        n=n,
        now=now,
        degraded=degraded,
        contacts=contact_history(store.fold, state),
        decline_cooloff_s=decline_cooloff_days * SECONDS_PER_DAY,
    )
    if degraded:
        return NextBestActions(decision, model_version, False, [f"not recorded: {NOT_LEARNED}"])
    if not decision.actions:
        return NextBestActions(decision, model_version, False)
    try:
        await decision_log.record(decision)
    except RedisError as error:
        return NextBestActions(
            decision, model_version, False, [f"not recorded ({error}): {NOT_LEARNED}"]
        )
    return NextBestActions(decision, model_version, True)
