"""decide(): ranking, channel and eligibility filters, n, reasons, exploration, degraded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from actions.catalog import Catalog, build_catalog, load_catalog
from actions.decide import Decision, decide
from engine.core.settings import DEFAULT_CATALOG
from features.events import Channel
from features.reading import default_features
from models.exploration import EpsilonGreedy, Greedy, ThompsonSampling
from models.features_vector import vectorise
from models.online import OnlinePropensity
from models.propensity import BaseRateModel

NOW = 1_767_605_400.0


def action(action_id: str, value: float, base_rate: float, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": action_id,
        "name": action_id.replace("_", " ").title(),
        "kind": "offer",
        "product": action_id,
        "channels": ["web", "mobile"],
        "value": value,
        "base_rate": base_rate,
        "reason": f"because {action_id}",
    }
    spec.update(overrides)
    return spec


@pytest.fixture
def catalog() -> Catalog:
    return build_catalog(
        {
            "version": 1,
            "actions": [
                action("mid", value=100.0, base_rate=0.1),  # 10
                action("low", value=10.0, base_rate=0.5),  # 5
                action("high", value=1000.0, base_rate=0.02),  # 20
                action("sms_only", value=5000.0, base_rate=0.9, channels=["sms"]),  # 4500
                action("big_spender", value=900.0, base_rate=0.5, eligibility="txn_count >= 3"),
            ],
        }
    )


def run(catalog: Catalog, channel: Channel = Channel.WEB, n: int = 10, **kwargs: Any) -> Decision:
    options: dict[str, Any] = {
        "customer_id": "C1",
        "features": default_features(),
        "policy": Greedy(BaseRateModel(catalog.base_rates())),
        "now": NOW,
    }
    options.update(kwargs)
    return decide(channel=channel, catalog=catalog, n=n, **options)


class FixedModel:
    """Propensities chosen by the test, to show the ranking follows the model."""

    name = "fixed"

    def __init__(self, propensities: Mapping[str, float]) -> None:
        self.propensities = propensities
        self.seen: list[tuple[dict[str, float | int], list[str]]] = []

    def score(self, features: Mapping[str, float | int], action_ids: Sequence[str]) -> list[float]:
        self.seen.append((dict(features), list(action_ids)))
        return [self.propensities[action_id] for action_id in action_ids]


def test_actions_are_ranked_by_propensity_times_value(catalog: Catalog) -> None:
    decision = run(catalog)
    assert [ranked.action_id for ranked in decision.actions] == ["high", "mid", "low"]
    assert [ranked.rank for ranked in decision.actions] == [1, 2, 3]
    assert [ranked.score for ranked in decision.actions] == pytest.approx([20.0, 10.0, 5.0])
    scores = [ranked.score for ranked in decision.actions]
    assert scores == sorted(scores, reverse=True)


def test_the_ranking_follows_the_model(catalog: Catalog) -> None:
    model = FixedModel({"mid": 0.9, "low": 0.1, "high": 0.01, "big_spender": 0.0})
    features = default_features() | {"txn_count": 4}
    decision = run(catalog, features=features, policy=Greedy(model))
    assert [ranked.action_id for ranked in decision.actions] == [
        "mid",
        "high",
        "low",
        "big_spender",
    ]
    # the model sees the vectorised features at the decision time, on the channel
    x = vectorise(features, now=NOW, channel=Channel.WEB)
    assert model.seen == [(x, ["mid", "low", "high", "big_spender"])]
    assert decision.policy == "greedy on fixed propensity × value"


def test_only_actions_allowed_on_the_channel(catalog: Catalog) -> None:
    assert "sms_only" not in {ranked.action_id for ranked in run(catalog).actions}
    on_sms = run(catalog, channel=Channel.SMS)
    assert [ranked.action_id for ranked in on_sms.actions] == ["sms_only"]
    assert run(catalog, channel=Channel.ATM).actions == []


def test_ineligible_actions_are_dropped(catalog: Catalog) -> None:
    newcomer = run(catalog)
    regular = run(catalog, features=default_features() | {"txn_count": 3})
    assert "big_spender" not in {ranked.action_id for ranked in newcomer.actions}
    assert regular.actions[0].action_id == "big_spender"


def test_mobile_onboarding_disappears_once_the_mobile_app_is_used() -> None:
    shipped = load_catalog(DEFAULT_CATALOG)
    never = run(shipped, channel=Channel.SMS, n=20)
    used = run(
        shipped, channel=Channel.SMS, n=20, features=default_features() | {"ch_mobile_count": 1}
    )
    assert "mobile_app_onboarding" in {ranked.action_id for ranked in never.actions}
    assert "mobile_app_onboarding" not in {ranked.action_id for ranked in used.actions}
    assert len(used.actions) == len(never.actions) - 1


@pytest.mark.parametrize(("n", "expected"), [(1, ["high"]), (2, ["high", "mid"]), (3, None)])
def test_n_is_respected(catalog: Catalog, n: int, expected: list[str] | None) -> None:
    decision = run(catalog, n=n)
    assert len(decision.actions) == n
    if expected is not None:
        assert [ranked.action_id for ranked in decision.actions] == expected


def test_n_larger_than_the_candidates_returns_them_all(catalog: Catalog) -> None:
    assert len(run(catalog, n=50).actions) == 3


def test_every_action_has_its_score_parts_and_reasons(catalog: Catalog) -> None:
    for ranked in run(catalog).actions:
        spec = next(item.spec for item in catalog.actions if item.id == ranked.action_id)
        assert ranked.score_parts == {"propensity": spec.base_rate, "value": spec.value}
        assert ranked.score == pytest.approx(spec.base_rate * spec.value)
        assert ranked.reasons[0] == spec.reason
        assert any(spec.eligibility in reason for reason in ranked.reasons)
        assert any(
            "base-rate" in reason and f"{ranked.score:.2f}" in reason for reason in ranked.reasons
        )
        assert any(
            f"rank {ranked.rank} by greedy" in reason and "probability 1.00" in reason
            for reason in ranked.reasons
        )
        assert ranked.probability == 1.0
        assert (ranked.name, ranked.kind, ranked.product) == (
            spec.name,
            spec.kind.value,
            spec.product,
        )


def test_a_normal_decision_is_not_degraded(catalog: Catalog) -> None:
    decision = run(catalog)
    assert decision.degraded is False
    assert decision.notes == []
    assert decision.customer_id == "C1"
    assert decision.channel == "web"
    assert decision.ts == NOW
    assert decision.policy == "greedy on base-rate propensity × value"


def test_a_degraded_decision_says_so(catalog: Catalog) -> None:
    decision = run(catalog, degraded=True)
    assert decision.degraded is True
    assert len(decision.notes) == 1
    assert "unavailable" in decision.notes[0]
    assert [ranked.action_id for ranked in decision.actions] == ["high", "mid", "low"]


def test_decision_ids_are_unique(catalog: Catalog) -> None:
    ids = [run(catalog).decision_id for _ in range(200)]
    assert len(set(ids)) == len(ids)
    assert all(len(decision_id) == 32 for decision_id in ids)


def test_to_dict_is_plain_data_without_what_is_only_recorded(catalog: Catalog) -> None:
    data = run(catalog, n=2).to_dict()
    assert data["degraded"] is False
    assert [item["action_id"] for item in data["actions"]] == ["high", "mid"]
    assert data["actions"][0]["score_parts"] == {"propensity": 0.02, "value": 1000.0}
    assert data["actions"][0]["probability"] == 1.0
    assert "x" not in data
    assert "candidates" not in data


def test_the_decision_carries_what_must_be_recorded(catalog: Catalog) -> None:
    features = default_features() | {"txn_count": 4, "last_seen_ts": NOW - 86_400}
    decision = run(catalog, features=features, n=1)
    assert decision.x == vectorise(features, now=NOW, channel=Channel.WEB)
    assert decision.x["last_seen_days"] == pytest.approx(0.6931, abs=1e-4)
    # every eligible candidate on the channel, in catalog order, not only the shown one
    assert decision.candidates == ["mid", "low", "high", "big_spender"]
    assert [ranked.action_id for ranked in decision.actions] == ["big_spender"]


def learned_model(catalog: Catalog) -> OnlinePropensity:
    model = OnlinePropensity(catalog.base_rates())
    x = vectorise(default_features(), now=NOW, channel=Channel.WEB)
    for accepted in [True, False, True, False, False]:
        model.learn_one(x, "low", accepted)
    return model


def test_thompson_explores_with_logged_probabilities_deterministic_given_the_seed(
    catalog: Catalog,
) -> None:
    first = run(catalog, n=3, policy=ThompsonSampling(learned_model(catalog), seed=3))
    again = run(catalog, n=3, policy=ThompsonSampling(learned_model(catalog), seed=3))
    assert [(a.action_id, a.probability, a.score) for a in first.actions] == [
        (a.action_id, a.probability, a.score) for a in again.actions
    ]
    assert first.policy == "thompson on online-logistic propensity × value"
    for ranked in first.actions:
        assert 0.0 < ranked.probability <= 1.0
        assert ranked.score == pytest.approx(
            ranked.score_parts["propensity"] * ranked.score_parts["value"]
        )
        assert any(f"rank {ranked.rank} by thompson" in reason for reason in ranked.reasons)
    # the rank-1 probabilities of a run of decisions estimate how often each action leads
    policy = ThompsonSampling(learned_model(catalog), draws=512, seed=5)
    leaders = [run(catalog, n=1, policy=policy).actions[0] for _ in range(400)]
    for action_id in {ranked.action_id for ranked in leaders}:
        share = sum(ranked.action_id == action_id for ranked in leaders) / len(leaders)
        logged = [ranked.probability for ranked in leaders if ranked.action_id == action_id]
        assert sum(logged) / len(logged) == pytest.approx(share, abs=0.08)


def test_epsilon_greedy_logs_its_exact_probabilities(catalog: Catalog) -> None:
    policy = EpsilonGreedy(BaseRateModel(catalog.base_rates()), epsilon=0.2, seed=1)
    decisions = [run(catalog, n=1, policy=policy) for _ in range(300)]
    logged: dict[str, set[float]] = {}
    for decision in decisions:
        first = decision.actions[0]
        logged.setdefault(first.action_id, set()).add(round(first.probability, 12))
    # the greedy "high" at 1 − ε + ε/3 (3 candidates), each other candidate at ε/3
    assert logged == {
        "high": {round(0.8 + 0.2 / 3, 12)},
        "mid": {round(0.2 / 3, 12)},
        "low": {round(0.2 / 3, 12)},
    }


def test_a_rule_failing_on_this_customer_leaves_its_action_out_with_a_note() -> None:
    catalog = build_catalog(
        {
            "version": 1,
            "actions": [
                action("fine", value=10.0, base_rate=0.5),
                # fine for a new customer (checked at load), division by zero at 3 transactions
                action("fragile", value=1.0, base_rate=0.5, eligibility="10 / (txn_count - 3) > 1"),
            ],
        }
    )
    decision = run(catalog, features={**default_features(), "txn_count": 3})
    assert [ranked.action_id for ranked in decision.actions] == ["fine"]
    assert any(note.startswith("fragile left out") for note in decision.notes)


def test_a_recently_declined_action_is_left_out_until_its_cool_off_ends(catalog: Catalog) -> None:
    contacts = {"high": {"last_declined_ts": int(NOW - 3 * 3600), "declines": 1}}
    cooled = run(catalog, contacts=contacts, decline_cooloff_s=7 * 86_400)
    assert "high" not in [a.action_id for a in cooled.actions]
    assert "high" not in cooled.candidates
    assert any("high left out: declined 3 h ago" in note for note in cooled.notes)
    later = run(catalog, contacts=contacts, decline_cooloff_s=3600)
    assert later.actions[0].action_id == "high"
