"""Off-policy evaluation: what a target policy would have earned, estimated from a decision log.

Every decision logs, for the action it put first, the probability with which the policy
chose it (`exploration.Choice.probability` at rank 1). That makes the log an experiment
for any other policy: reweighting each logged reward by how much more (or less) often
the target policy would have made the same choice gives an unbiased estimate of the
target's value, without deploying it.

Estimators of V(π) = E_x Σ_a π(a | x) E[r | x, a], from n records (x_i, a_i, p_i, r_i)
with importance weights w_i = π(a_i | x_i) / p_i:

- `ips` (inverse propensity scoring): mean of w_i·r_i. Unbiased; high variance when
  the policies disagree.
- `snips` (self-normalised IPS): Σ w_i·r_i / Σ w_i. Slightly biased (consistent), much
  steadier; bounded by the range of the rewards.
- `doubly_robust`: mean of Σ_a π(a | x_i)·q(x_i, a) + w_i·(r_i − q(x_i, a_i)), with a
  reward model q. Unbiased if the logged propensities are right, whatever q; lower
  variance the better q is; also unbiased if q is right, whatever the propensities.

Assumptions, which the estimates are only as good as:

- the logged propensity is the probability the logging policy really had of choosing
  the logged action given x. Epsilon-greedy logs it exactly; Thompson sampling logs a
  Monte Carlo estimate (see `models.exploration`), whose noise, through 1 / p, biases
  the weights of rarely chosen actions: give the logging policy more `draws` where the
  log will be used to evaluate policies that favour such actions;
- overlap: the logging policy gave every action the target may choose a probability
  above zero (epsilon-greedy guarantees ε / m; a greedy logger does not);
- the reward of a choice depends only on x and the chosen action, not on the policy
  that chose it nor on other customers' decisions, and the world is stationary over
  the log (the x_i are independent draws from the same population);
- x is the exact input the logging policy saw (the recorded vector, not re-read features);
- only the first-ranked action is evaluated: the records are the rank-1 choices and
  their rewards. Rewards of lower ranks need a position-based model, not shipped here.

Each estimate comes with a standard error (from the per-record terms; delta method for
SNIPS) and the effective sample size of the weights, (Σ w)² / Σ w²: an effective size
far below n says the log says little about this target.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: π(· | x) over the candidates: the probability of each candidate, in their order.
TargetPolicy = Callable[[Mapping[str, float], Sequence[str]], Sequence[float] | np.ndarray]
#: q(x, ·): the expected reward of each candidate, in their order.
RewardModel = Callable[[Mapping[str, float], Sequence[str]], Sequence[float] | np.ndarray]

_TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """One logged rank-1 choice and its outcome.

    `candidates` are the actions the logging policy chose among (after eligibility),
    `propensity` the probability it had of choosing `action_id`, `reward` what the
    choice earned (1.0 / 0.0 for accepted / not, or the value earned).
    """

    features: Mapping[str, float]
    candidates: Sequence[str]
    action_id: str
    propensity: float
    reward: float


@dataclass(frozen=True, slots=True)
class Estimate:
    """An estimated policy value with its standard error and the weights' effective size."""

    value: float
    stderr: float
    n: int
    effective_sample_size: float


def _target_probabilities(
    log: Sequence[LoggedDecision], target: TargetPolicy
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each record's π(· | x) over its candidates, and π of the logged action, validated."""
    if not log:
        raise ValueError("the decision log is empty: nothing to estimate from")
    distributions: list[np.ndarray] = []
    chosen = np.empty(len(log))
    for i, record in enumerate(log):
        if not 0.0 < record.propensity <= 1.0:
            raise ValueError(f"record {i}: propensity must be in (0, 1], got {record.propensity}")
        if not math.isfinite(record.reward):
            raise ValueError(f"record {i}: reward must be finite, got {record.reward}")
        try:
            position = list(record.candidates).index(record.action_id)
        except ValueError:
            raise ValueError(
                f"record {i}: logged action {record.action_id!r} is not among its candidates"
            ) from None
        pi = np.asarray(target(record.features, record.candidates), dtype=float)
        if pi.shape != (len(record.candidates),):
            raise ValueError(
                f"record {i}: the target gave {pi.size} probabilities for "
                f"{len(record.candidates)} candidates"
            )
        if (pi < -_TOLERANCE).any() or pi.sum() > 1.0 + _TOLERANCE:
            raise ValueError(f"record {i}: target probabilities must be ≥ 0 and sum to ≤ 1")
        distributions.append(pi)
        chosen[i] = pi[position]
    return distributions, chosen


def _weights_and_rewards(
    log: Sequence[LoggedDecision], chosen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    propensity = np.array([record.propensity for record in log])
    reward = np.array([record.reward for record in log])
    return chosen / propensity, reward


def _effective_size(weights: np.ndarray) -> float:
    total_squared = float(np.sum(weights * weights))
    return float(np.sum(weights)) ** 2 / total_squared if total_squared > 0 else 0.0


def _mean_estimate(terms: np.ndarray, weights: np.ndarray) -> Estimate:
    n = len(terms)
    stderr = float(np.std(terms, ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return Estimate(float(np.mean(terms)), stderr, n, _effective_size(weights))


def ips(log: Sequence[LoggedDecision], target: TargetPolicy) -> Estimate:
    """Inverse propensity scoring: the mean of π(a_i | x_i) / p_i · r_i."""
    _, chosen = _target_probabilities(log, target)
    weights, reward = _weights_and_rewards(log, chosen)
    return _mean_estimate(weights * reward, weights)


def snips(log: Sequence[LoggedDecision], target: TargetPolicy) -> Estimate:
    """Self-normalised IPS: Σ w_i·r_i / Σ w_i (undefined, so refused, if every w_i is 0)."""
    _, chosen = _target_probabilities(log, target)
    weights, reward = _weights_and_rewards(log, chosen)
    total = float(np.sum(weights))
    if total <= 0.0:
        raise ValueError("the target never makes a logged choice: SNIPS is undefined")
    value = float(np.sum(weights * reward)) / total
    stderr = math.sqrt(float(np.sum((weights * (reward - value)) ** 2))) / total
    return Estimate(value, stderr, len(log), _effective_size(weights))


def doubly_robust(
    log: Sequence[LoggedDecision], target: TargetPolicy, reward_model: RewardModel
) -> Estimate:
    """Doubly robust: the reward model's value of π, corrected by IPS on its residuals."""
    distributions, chosen = _target_probabilities(log, target)
    weights, reward = _weights_and_rewards(log, chosen)
    terms = np.empty(len(log))
    for i, (record, pi) in enumerate(zip(log, distributions, strict=True)):
        q = np.asarray(reward_model(record.features, record.candidates), dtype=float)
        if q.shape != pi.shape:
            raise ValueError(
                f"record {i}: the reward model gave {q.size} values for {pi.size} candidates"
            )
        logged_q = q[list(record.candidates).index(record.action_id)]
        terms[i] = float(pi @ q) + weights[i] * (reward[i] - logged_q)
    return _mean_estimate(terms, weights)
