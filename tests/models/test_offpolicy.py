"""Off-policy estimators on synthetic logs whose target value is known exactly; the report
and the bandit log it reads (on the real embedded Valkey)."""

from __future__ import annotations

import doctest
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from redis.asyncio import Redis

import models.offpolicy
from engine.core.settings import Settings
from models.exploration import EpsilonGreedy
from models.offpolicy import (
    BanditLog,
    Estimate,
    LoggedDecision,
    doubly_robust,
    ips,
    policy_report,
    snips,
)
from models.propensity import BaseRateModel

ACTIONS = ["a", "b", "c", "d"]
THETA = np.array([[0.8, -0.5, 0.0], [-0.6, 0.7, 0.3], [0.2, 0.2, -0.9], [0.0, -0.3, 0.6]])
BIAS = np.array([-1.0, -1.3, -0.8, -1.6])


def true_rates(z: np.ndarray) -> np.ndarray:
    """E[reward | x, a] for every row of z and every action: shape (rows, actions)."""
    rates: np.ndarray = 1.0 / (1.0 + np.exp(-(BIAS + z @ THETA.T)))
    return rates


def features(row: np.ndarray) -> dict[str, float]:
    return {f"z{j}": float(value) for j, value in enumerate(row)}


def vector(x: Mapping[str, float]) -> np.ndarray:
    return np.array([x[f"z{j}"] for j in range(THETA.shape[1])])


def logging_distribution(z: np.ndarray) -> np.ndarray:
    """A softmax over a poor guess of the rates: every action keeps a fair chance."""
    guess = z @ (0.5 * THETA[::-1]).T
    weights = np.exp(guess - guess.max(axis=1, keepdims=True))
    distribution: np.ndarray = weights / weights.sum(axis=1, keepdims=True)
    return distribution


def target(x: Mapping[str, float], candidates: Sequence[str]) -> np.ndarray:
    """The policy under evaluation: mostly the best action by the truth, sometimes the second."""
    rates = true_rates(vector(x)[None, :])[0]
    order = np.argsort(-rates)
    probabilities = np.zeros(len(candidates))
    probabilities[order[0]] = 0.8
    probabilities[order[1]] = 0.2
    return probabilities


def synthetic_log(n: int, seed: int) -> list[LoggedDecision]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, THETA.shape[1]))
    pi = logging_distribution(z)
    cumulative = pi.cumsum(axis=1)
    chosen = (cumulative < rng.random(n)[:, None]).sum(axis=1)
    chosen = np.minimum(chosen, len(ACTIONS) - 1)
    rewards = rng.random(n) < true_rates(z)[np.arange(n), chosen]
    return [
        LoggedDecision(
            features=features(z[i]),
            candidates=ACTIONS,
            action_id=ACTIONS[chosen[i]],
            propensity=float(pi[i, chosen[i]]),
            reward=float(rewards[i]),
        )
        for i in range(n)
    ]


def true_value(samples: int = 400_000) -> float:
    """V(target) = E_x Σ_a π(a | x)·μ(x, a), by a large Monte Carlo over x (no reward noise)."""
    z = np.random.default_rng(99).normal(size=(samples, THETA.shape[1]))
    rates = true_rates(z)
    ordered = np.sort(rates, axis=1)
    return float(np.mean(0.8 * ordered[:, -1] + 0.2 * ordered[:, -2]))


@pytest.fixture(scope="module")
def log() -> list[LoggedDecision]:
    return synthetic_log(20_000, seed=1)


@pytest.fixture(scope="module")
def truth() -> float:
    return true_value()


def good_reward_model(x: Mapping[str, float], candidates: Sequence[str]) -> np.ndarray:
    """A close but imperfect reward model: the truth, shrunk a little towards 0.3."""
    shrunk: np.ndarray = 0.9 * true_rates(vector(x)[None, :])[0] + 0.03
    return shrunk


def poor_reward_model(x: Mapping[str, float], candidates: Sequence[str]) -> np.ndarray:
    return np.full(len(candidates), 0.5)


def assert_close(estimate: Estimate, truth: float) -> None:
    error = abs(estimate.value - truth)
    assert error < 4 * estimate.stderr, (estimate, truth)
    assert error < 0.02, (estimate, truth)


def test_the_logging_policy_is_far_from_the_target(log: list[LoggedDecision], truth: float) -> None:
    """The plain mean reward of the log is no estimate of the target: reweighting is needed."""
    assert truth - np.mean([record.reward for record in log]) > 0.08


def test_ips_recovers_the_true_value(log: list[LoggedDecision], truth: float) -> None:
    estimate = ips(log, target)
    assert_close(estimate, truth)
    assert estimate.n == len(log)
    assert 0 < estimate.effective_sample_size < len(log)


def test_snips_recovers_the_true_value(log: list[LoggedDecision], truth: float) -> None:
    assert_close(snips(log, target), truth)


def test_doubly_robust_recovers_the_true_value_with_lower_variance(
    log: list[LoggedDecision], truth: float
) -> None:
    robust = doubly_robust(log, target, good_reward_model)
    assert_close(robust, truth)
    assert robust.stderr < 0.8 * ips(log, target).stderr


def test_doubly_robust_stays_unbiased_with_a_poor_reward_model(
    log: list[LoggedDecision], truth: float
) -> None:
    assert_close(doubly_robust(log, target, poor_reward_model), truth)


def test_evaluating_the_logging_policy_itself_gives_the_mean_reward() -> None:
    log = synthetic_log(2_000, seed=2)

    def logging_policy(x: Mapping[str, float], candidates: Sequence[str]) -> np.ndarray:
        return logging_distribution(vector(x)[None, :])[0, :]

    estimate = ips(log, logging_policy)
    assert estimate.value == pytest.approx(np.mean([record.reward for record in log]))
    assert estimate.effective_sample_size == pytest.approx(len(log))


def test_a_shipped_policy_evaluates_another_from_its_own_log() -> None:
    """Log with epsilon-greedy on a wrong model; evaluate greedy on the right one."""
    rates = {"a": 0.02, "b": 0.10, "c": 0.05}
    logging = EpsilonGreedy(BaseRateModel({"a": 0.2, "b": 0.01, "c": 0.05}), epsilon=0.5, seed=1)
    greedy = EpsilonGreedy(BaseRateModel(rates), epsilon=0.0)
    rng = np.random.default_rng(3)
    log = []
    for _ in range(20_000):
        (choice,) = logging.rank({}, list(rates), 1)
        reward = float(rng.random() < rates[choice.action_id])
        log.append(LoggedDecision({}, list(rates), choice.action_id, choice.probability, reward))
    estimate = ips(log, greedy.probabilities)
    assert_close(estimate, 0.10)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (LoggedDecision({}, ["a", "b"], "a", 0.0, 1.0), r"record 1: propensity must be in \(0,"),
        (LoggedDecision({}, ["a", "b"], "a", 1.5, 1.0), "propensity must be"),
        (LoggedDecision({}, ["a", "b"], "z", 0.5, 1.0), "'z' is not among its candidates"),
        (LoggedDecision({}, ["a", "b"], "a", 0.5, float("nan")), "reward must be finite"),
    ],
)
def test_bad_records_are_refused_naming_them(record: LoggedDecision, message: str) -> None:
    good = LoggedDecision({}, ["a", "b"], "a", 0.5, 1.0)
    with pytest.raises(ValueError, match=message):
        ips([good, record], lambda x, candidates: [0.5, 0.5])


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [([0.9, 0.9], "sum to ≤ 1"), ([1.2, -0.2], "≥ 0"), ([1.0], "1 probabilities for 2")],
)
def test_a_target_that_is_not_a_distribution_is_refused(
    probabilities: list[float], message: str
) -> None:
    record = LoggedDecision({}, ["a", "b"], "a", 0.5, 1.0)
    with pytest.raises(ValueError, match=message):
        ips([record], lambda x, candidates: probabilities)


def test_an_empty_log_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        snips([], lambda x, candidates: [])


def test_snips_is_undefined_when_the_target_never_agrees_with_the_log() -> None:
    record = LoggedDecision({}, ["a", "b"], "a", 0.5, 1.0)
    with pytest.raises(ValueError, match="SNIPS is undefined"):
        snips([record], lambda x, candidates: [0.0, 1.0])


def test_a_reward_model_of_the_wrong_length_is_refused() -> None:
    record = LoggedDecision({}, ["a", "b"], "a", 0.5, 1.0)
    with pytest.raises(ValueError, match="reward model gave 3 values for 2"):
        doubly_robust([record], lambda x, candidates: [0.5, 0.5], lambda x, c: [0.1, 0.2, 0.3])


# --- the report and the bandit log ------------------------------------------------------

RATES = {"a": 0.02, "b": 0.10, "c": 0.05}


def epsilon_greedy_log(n: int, seed: int) -> list[LoggedDecision]:
    """Logged by epsilon-greedy on a wrong model, answered by the true `RATES`."""
    logging = EpsilonGreedy(BaseRateModel({"a": 0.2, "b": 0.01, "c": 0.05}), epsilon=0.5,
                            seed=seed)  # fmt: skip
    rng = np.random.default_rng(seed)
    log = []
    for _ in range(n):
        (choice,) = logging.rank({}, list(RATES), 1)
        reward = float(rng.random() < RATES[choice.action_id])
        log.append(LoggedDecision({}, list(RATES), choice.action_id, choice.probability, reward))
    return log


def assert_covers(interval: dict[str, Any], truth: float) -> None:
    low, high = interval["ci95"]
    assert low == pytest.approx(interval["value"] - 1.959964 * interval["stderr"])
    assert high == pytest.approx(interval["value"] + 1.959964 * interval["stderr"])
    assert low <= truth <= high, (interval, truth)
    assert high - low < 0.03, interval


def test_the_report_estimates_greedy_and_uniform_with_intervals_that_cover_the_truth() -> None:
    log = epsilon_greedy_log(20_000, seed=1)
    report = policy_report(log, BaseRateModel(RATES), dict.fromkeys(RATES, 1.0))
    assert (report["records"], report["skipped"]) == (20_000, 0)
    assert report["logged"]["value"] == pytest.approx(np.mean([r.reward for r in log]))
    assert report["logged"]["effective_sample_size"] == pytest.approx(20_000)
    truths = {"greedy": RATES["b"], "uniform": float(np.mean(list(RATES.values())))}
    for name, truth in truths.items():
        estimates = report["policies"][name]
        for estimator in ("ips", "snips", "doubly_robust"):
            assert_covers(estimates[estimator], truth)
        assert estimates["ips"]["n"] == 20_000


def test_greedy_ranks_by_propensity_times_value() -> None:
    log = epsilon_greedy_log(20_000, seed=2)
    report = policy_report(log, BaseRateModel(RATES), {"a": 10.0, "b": 1.0, "c": 1.0})
    assert_covers(report["policies"]["greedy"]["snips"], RATES["a"])  # 0.02 × 10 leads


def test_records_that_cannot_be_evaluated_are_counted_and_an_empty_log_gives_no_estimate() -> None:
    log = [LoggedDecision({}, ["a", "gone"], "a", 0.5, 1.0)]
    report = policy_report(log, BaseRateModel(RATES), dict.fromkeys(RATES, 1.0))
    assert report == {"records": 0, "skipped": 1, "logged": None, "policies": {}}


def test_a_single_record_has_no_interval() -> None:
    log = [LoggedDecision({}, ["a", "b"], "a", 0.5, 1.0)]
    report = policy_report(log, BaseRateModel(RATES), dict.fromkeys(RATES, 1.0))
    assert report["logged"]["value"] == 1.0
    assert (report["logged"]["stderr"], report["logged"]["ci95"]) == (None, None)


async def test_the_bandit_log_keeps_the_latest_records_in_order(
    redis: Redis, settings: Settings
) -> None:
    log = BanditLog(redis, key_prefix=settings.key_prefix, size=4)
    assert log.key == f"{settings.key_prefix}nba:banditlog"
    assert await log.latest(10) == []
    records = [LoggedDecision({"f": float(i)}, ["a", "b"], "a", 0.5, float(i % 2))
               for i in range(6)]  # fmt: skip
    await log.append(records[:3])
    await log.append(records[3:])
    await log.append([])
    assert await log.latest(10) == records[2:]
    assert await log.latest(2) == records[4:]
    assert await log.latest(0) == []
    assert await redis.llen(log.key) == 4


def test_the_module_example_runs() -> None:
    result = doctest.testmod(models.offpolicy)
    assert result.attempted > 0
    assert result.failed == 0
