"""Exploration policies: logged probabilities right (exact or Monte Carlo), seeded, validated."""

from __future__ import annotations

import doctest
from collections import Counter

import numpy as np
import pytest

import models.exploration
from models.exploration import Choice, EpsilonGreedy, ExplorationPolicy, Greedy, ThompsonSampling
from models.online import OnlinePropensity
from models.propensity import BaseRateModel

PRIORS = {"a": 0.05, "b": 0.08, "c": 0.03, "d": 0.06}
ACTIONS = list(PRIORS)
X = {"f0": 1.0, "f1": -0.5}


def learned_model(seed: int = 0, n: int = 400) -> OnlinePropensity:
    """A model with different uncertainty per action: a and b learned, c and d barely."""
    rng = np.random.default_rng(seed)
    model = OnlinePropensity(PRIORS)
    for _ in range(n):
        x = {"f0": float(rng.normal(1.0, 1.0)), "f1": float(rng.normal(0.0, 2.0))}
        model.learn_one(x, "a", bool(rng.random() < 0.12))
        model.learn_one(x, "b", bool(rng.random() < 0.06))
    model.learn_one(X, "c", False)
    return model


def frequencies(policy: ExplorationPolicy, calls: int, n: int) -> Counter[tuple[int, str]]:
    """How often each (rank, action) came out of `calls` rankings."""
    seen: Counter[tuple[int, str]] = Counter()
    for _ in range(calls):
        for choice in policy.rank(X, ACTIONS, n):
            seen[(choice.rank, choice.action_id)] += 1
    return seen


# -- Thompson sampling ------------------------------------------------------------------------


def test_thompson_is_deterministic_given_the_seed() -> None:
    first = ThompsonSampling(learned_model(), seed=11)
    second = ThompsonSampling(learned_model(), seed=11)
    for _ in range(20):
        assert first.rank(X, ACTIONS, 3) == second.rank(X, ACTIONS, 3)
    other = ThompsonSampling(learned_model(), seed=12)
    assert [other.rank(X, ACTIONS, 3) for _ in range(20)] != [
        first.rank(X, ACTIONS, 3) for _ in range(20)
    ]


def test_thompson_first_choice_probabilities_sum_to_one_and_are_multiples_of_1_over_draws() -> None:
    policy = ThompsonSampling(learned_model(), draws=200, seed=1)
    probabilities = policy.probabilities(X, ACTIONS)
    assert probabilities.shape == (4,)
    assert probabilities.sum() == pytest.approx(1.0)
    assert np.allclose(probabilities * 200, np.round(probabilities * 200))


def test_thompson_logged_probabilities_match_the_empirical_choice_frequencies() -> None:
    """Per (rank, action): how often it happens ≈ the probability logged when it happens."""
    model = learned_model()
    policy = ThompsonSampling(model, draws=256, seed=2)
    calls = 3_000
    counts: Counter[tuple[int, str]] = Counter()
    logged: dict[tuple[int, str], list[float]] = {}
    for _ in range(calls):
        for choice in policy.rank(X, ACTIONS, 2):
            counts[(choice.rank, choice.action_id)] += 1
            logged.setdefault((choice.rank, choice.action_id), []).append(choice.probability)
    for key, count in counts.items():
        empirical = count / calls
        if empirical > 0.02:
            assert np.mean(logged[key]) == pytest.approx(empirical, abs=0.03), key
    # the first-choice probabilities from a large independent Monte Carlo agree as well
    reference = ThompsonSampling(model, draws=50_000, seed=3).probabilities(X, ACTIONS)
    for index, action_id in enumerate(ACTIONS):
        assert counts[(1, action_id)] / calls == pytest.approx(reference[index], abs=0.03)


def test_thompson_probabilities_are_positive_and_sum_to_at_most_one() -> None:
    policy = ThompsonSampling(learned_model(), draws=64, seed=4)
    for _ in range(50):
        choices = policy.rank(X, ACTIONS, 4)
        assert [choice.rank for choice in choices] == [1, 2, 3, 4]
        assert sorted(choice.action_id for choice in choices) == sorted(ACTIONS)
        assert all(1 / 64 <= choice.probability <= 1.0 for choice in choices)
    assert policy.probabilities(X, ACTIONS).sum() <= 1.0 + 1e-12


def test_thompson_explores_an_uncertain_action_and_exploits_a_known_good_one() -> None:
    rng = np.random.default_rng(5)
    model = OnlinePropensity({"known_good": 0.10, "known_poor": 0.10, "new": 0.02})
    for _ in range(3_000):
        model.learn_one({}, "known_good", bool(rng.random() < 0.20))
        model.learn_one({}, "known_poor", bool(rng.random() < 0.01))
    probabilities = ThompsonSampling(model, draws=20_000, seed=6).probabilities(
        {}, ["known_good", "known_poor", "new"]
    )
    good, poor, new = probabilities.tolist()
    assert good > 0.9
    assert poor < 0.001
    assert new > 0.005  # a low prior, but still uncertain enough to be tried


def test_thompson_reports_the_mean_propensity_and_the_drawn_score() -> None:
    model = learned_model()
    policy = ThompsonSampling(model, seed=7)
    means = dict(zip(ACTIONS, model.score(X, ACTIONS), strict=True))
    for choice in policy.rank(X, ACTIONS, 4, values=[1.0, 2.0, 3.0, 4.0]):
        assert choice.propensity == pytest.approx(means[choice.action_id])
        assert 0.0 <= choice.score <= 4.0
    scores = [choice.score for choice in policy.rank(X, ACTIONS, 4)]
    assert scores == sorted(scores, reverse=True)


def test_thompson_weighs_propensity_by_value() -> None:
    policy = ThompsonSampling(OnlinePropensity({"cheap": 0.10, "dear": 0.05}), seed=8)
    plain = policy.probabilities({}, ["cheap", "dear"])
    weighted = policy.probabilities({}, ["cheap", "dear"], values=[1.0, 10.0])
    assert weighted[1] > plain[1] + 0.3


# -- epsilon-greedy ---------------------------------------------------------------------------


def test_epsilon_greedy_probabilities_are_exact() -> None:
    policy = EpsilonGreedy(BaseRateModel(PRIORS), epsilon=0.2, seed=1)
    assert policy.probabilities({}, ACTIONS) == pytest.approx([0.05, 0.85, 0.05, 0.05])
    for choice in policy.rank({}, ACTIONS, 4):
        greedy_at_rank = ["b", "d", "a", "c"][choice.rank - 1]
        expected = 0.8 * (choice.action_id == greedy_at_rank) + 0.05
        assert choice.probability == pytest.approx(expected)


def test_epsilon_greedy_logged_probabilities_match_the_empirical_frequencies() -> None:
    policy = EpsilonGreedy(BaseRateModel(PRIORS), epsilon=0.3, seed=2)
    calls = 6_000
    counts = frequencies(policy, calls, 2)
    for (rank, action_id), count in counts.items():
        greedy_at_rank = ["b", "d"][rank - 1]
        exact = 0.7 * (action_id == greedy_at_rank) + 0.3 / 4
        assert count / calls == pytest.approx(exact, abs=0.02), (rank, action_id)


def test_epsilon_greedy_ranks_by_propensity_times_value() -> None:
    policy = EpsilonGreedy(BaseRateModel(PRIORS), epsilon=0.0, seed=3)
    choices = policy.rank({}, ACTIONS, 2, values=[10.0, 1.0, 1.0, 1.0])
    assert [choice.action_id for choice in choices] == ["a", "b"]
    assert choices[0] == Choice("a", rank=1, propensity=0.05, score=0.5, probability=1.0)


def test_epsilon_greedy_breaks_ties_by_candidate_order() -> None:
    policy = EpsilonGreedy(BaseRateModel({"x": 0.1, "y": 0.1}), epsilon=0.0)
    assert [c.action_id for c in policy.rank({}, ["y", "x"], 2)] == ["y", "x"]


def test_epsilon_greedy_is_deterministic_given_the_seed() -> None:
    first, second = (EpsilonGreedy(BaseRateModel(PRIORS), epsilon=0.5, seed=9) for _ in "12")
    assert [first.rank({}, ACTIONS, 2) for _ in range(30)] == [
        second.rank({}, ACTIONS, 2) for _ in range(30)
    ]


@pytest.mark.parametrize("epsilon", [-0.1, 1.1])
def test_epsilon_must_be_a_probability(epsilon: float) -> None:
    with pytest.raises(ValueError, match="epsilon must be within"):
        EpsilonGreedy(BaseRateModel(PRIORS), epsilon=epsilon)


# -- both -------------------------------------------------------------------------------------


def policies() -> list[ExplorationPolicy]:
    return [
        ThompsonSampling(learned_model(), seed=1),
        EpsilonGreedy(learned_model(), epsilon=0.1, seed=1),
        Greedy(learned_model()),
    ]


@pytest.mark.parametrize("policy", policies(), ids=lambda policy: policy.name)
def test_n_is_capped_by_the_candidates_and_empty_sets_give_empty_answers(
    policy: ExplorationPolicy,
) -> None:
    assert len(policy.rank(X, ACTIONS, 10)) == 4
    assert policy.rank(X, ACTIONS, 0) == []
    assert policy.rank(X, [], 3) == []
    assert policy.probabilities(X, []).shape == (0,)
    with pytest.raises(ValueError, match="n must be zero or positive"):
        policy.rank(X, ACTIONS, -1)


@pytest.mark.parametrize("policy", policies(), ids=lambda policy: policy.name)
@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([1.0, 2.0], "one number per candidate"),
        ([1.0, -2.0, 1.0, 1.0], "zero or positive"),
        ([1.0, float("nan"), 1.0, 1.0], "finite"),
    ],
)
def test_bad_values_are_refused(
    policy: ExplorationPolicy, values: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        policy.rank(X, ACTIONS, 2, values=values)


@pytest.mark.parametrize("policy", policies(), ids=lambda policy: policy.name)
def test_unknown_actions_are_refused_by_the_model(policy: ExplorationPolicy) -> None:
    with pytest.raises(KeyError, match="nope"):
        policy.rank(X, [*ACTIONS, "nope"], 2)


def test_draws_must_be_positive() -> None:
    with pytest.raises(ValueError, match="draws must be at least 1"):
        ThompsonSampling(learned_model(), draws=0)


# -- greedy -----------------------------------------------------------------------------------


def test_greedy_ranks_by_propensity_times_value_with_probability_one() -> None:
    policy = Greedy(learned_model())
    choices = policy.rank(X, ACTIONS, 4, values=[1.0, 1.0, 10.0, 1.0])
    scores = [choice.score for choice in choices]
    assert scores == sorted(scores, reverse=True)
    assert choices[0].action_id == "c"
    assert [choice.probability for choice in choices] == [1.0] * 4
    assert [choice.rank for choice in choices] == [1, 2, 3, 4]
    assert policy.rank(X, ACTIONS, 4, values=[1.0, 1.0, 10.0, 1.0]) == choices
    assert policy.probabilities(X, ACTIONS, [1.0, 1.0, 10.0, 1.0]).tolist() == [0, 0, 1, 0]


def test_greedy_breaks_ties_by_candidate_order_and_handles_empty_sets() -> None:
    policy = Greedy(BaseRateModel({"x": 0.1, "y": 0.1}))
    assert [choice.action_id for choice in policy.rank({}, ["y", "x"], 2)] == ["y", "x"]
    assert policy.rank({}, [], 3) == []
    assert policy.probabilities({}, []).shape == (0,)


def test_the_module_examples_run() -> None:
    result = doctest.testmod(models.exploration)
    assert result.attempted > 0
    assert result.failed == 0
