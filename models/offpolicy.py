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

The bandit log and the report. The learner appends every rank-1 outcome it learns to
`BanditLog`, a Redis list capped at its latest `size` records, so a report reads a
bounded, recent sample. `policy_report` turns it into the engine's off-policy report
(`GET /v1/models/offpolicy`): the logging policies' own mean reward, and IPS, SNIPS and
doubly robust estimates, with 95% confidence intervals (normal approximation, value ±
1.96 standard errors), of two policies that were not deployed:

- `greedy`: rank 1 by propensity × value under a given model (the serving one: what
  `NBA_EXPLORATION=none` would have done). The serving model learned from these very
  outcomes, so its estimate is in-sample and optimistic; read it against `uniform`;
- `uniform`: a candidate at random, the floor any model must beat.

The reward is the acceptance of the rank-1 action (1 or 0; a no-answer negative is 0),
so each value reads as an accept rate.

>>> from models.propensity import BaseRateModel
>>> log = [LoggedDecision({}, ["a", "b"], "a", 0.5, 1.0),
...        LoggedDecision({}, ["a", "b"], "b", 0.5, 0.0)]
>>> report = policy_report(log, BaseRateModel({"a": 0.3, "b": 0.1}), {"a": 1.0, "b": 1.0})
>>> report["logged"]["value"], report["policies"]["greedy"]["ips"]["value"]
(0.5, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from redis.asyncio import Redis

from features.keys import Keys
from models.exploration import Greedy
from models.propensity import PropensityModel

#: π(· | x) over the candidates: the probability of each candidate, in their order.
TargetPolicy = Callable[[Mapping[str, float], Sequence[str]], Sequence[float] | np.ndarray]
#: q(x, ·): the expected reward of each candidate, in their order.
RewardModel = Callable[[Mapping[str, float], Sequence[str]], Sequence[float] | np.ndarray]

_TOLERANCE = 1e-9
#: Standard errors either side of an estimate for a 95% confidence interval.
Z_95 = 1.959963984540054


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


@dataclass(frozen=True, slots=True)
class _Weighted:
    """A log as one target sees it: π(· | x_i) of each record, importance weights, rewards."""

    distributions: list[np.ndarray]
    weights: np.ndarray
    reward: np.ndarray


def _weighted(log: Sequence[LoggedDecision], target: TargetPolicy) -> _Weighted:
    distributions, chosen = _target_probabilities(log, target)
    propensity = np.array([record.propensity for record in log])
    reward = np.array([record.reward for record in log])
    return _Weighted(distributions, chosen / propensity, reward)


def _predictions(log: Sequence[LoggedDecision], reward_model: RewardModel) -> list[np.ndarray]:
    """q(x_i, ·) over each record's candidates, checked."""
    predictions = []
    for i, record in enumerate(log):
        q = np.asarray(reward_model(record.features, record.candidates), dtype=float)
        if q.shape != (len(record.candidates),):
            raise ValueError(
                f"record {i}: the reward model gave {q.size} values for "
                f"{len(record.candidates)} candidates"
            )
        predictions.append(q)
    return predictions


def _effective_size(weights: np.ndarray) -> float:
    total_squared = float(np.sum(weights * weights))
    return float(np.sum(weights)) ** 2 / total_squared if total_squared > 0 else 0.0


def _mean_estimate(terms: np.ndarray, weights: np.ndarray) -> Estimate:
    n = len(terms)
    stderr = float(np.std(terms, ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return Estimate(float(np.mean(terms)), stderr, n, _effective_size(weights))


def _ips(seen: _Weighted) -> Estimate:
    return _mean_estimate(seen.weights * seen.reward, seen.weights)


def _snips(seen: _Weighted) -> Estimate:
    weights, reward = seen.weights, seen.reward
    total = float(np.sum(weights))
    if total <= 0.0:
        raise ValueError("the target never makes a logged choice: SNIPS is undefined")
    value = float(np.sum(weights * reward)) / total
    stderr = math.sqrt(float(np.sum((weights * (reward - value)) ** 2))) / total
    return Estimate(value, stderr, len(reward), _effective_size(weights))


def _doubly_robust(
    log: Sequence[LoggedDecision], seen: _Weighted, predictions: Sequence[np.ndarray]
) -> Estimate:
    terms = np.empty(len(log))
    for i, (record, pi, q) in enumerate(zip(log, seen.distributions, predictions, strict=True)):
        logged_q = q[list(record.candidates).index(record.action_id)]
        terms[i] = float(pi @ q) + seen.weights[i] * (seen.reward[i] - logged_q)
    return _mean_estimate(terms, seen.weights)


def ips(log: Sequence[LoggedDecision], target: TargetPolicy) -> Estimate:
    """Inverse propensity scoring: the mean of π(a_i | x_i) / p_i · r_i."""
    return _ips(_weighted(log, target))


def snips(log: Sequence[LoggedDecision], target: TargetPolicy) -> Estimate:
    """Self-normalised IPS: Σ w_i·r_i / Σ w_i (undefined, so refused, if every w_i is 0)."""
    return _snips(_weighted(log, target))


def doubly_robust(
    log: Sequence[LoggedDecision], target: TargetPolicy, reward_model: RewardModel
) -> Estimate:
    """Doubly robust: the reward model's value of π, corrected by IPS on its residuals."""
    return _doubly_robust(log, _weighted(log, target), _predictions(log, reward_model))


def uniform(features: Mapping[str, float], candidates: Sequence[str]) -> np.ndarray:
    """The uniformly random policy: each candidate with probability 1 / m."""
    return np.full(len(candidates), 1.0 / len(candidates))


def greedy(model: PropensityModel, values: Mapping[str, float]) -> TargetPolicy:
    """The greedy policy by `model`'s propensity × each action's value, as a target."""
    policy = Greedy(model)

    def probabilities(features: Mapping[str, float], candidates: Sequence[str]) -> np.ndarray:
        return policy.probabilities(features, candidates, [values[a] for a in candidates])

    return probabilities


def _interval(estimate: Estimate) -> dict[str, Any]:
    """An estimate as JSON-ready numbers, with its 95% confidence interval (null if unknown)."""
    finite = math.isfinite(estimate.stderr)
    margin = Z_95 * estimate.stderr
    return {
        "value": estimate.value,
        "stderr": estimate.stderr if finite else None,
        "ci95": [estimate.value - margin, estimate.value + margin] if finite else None,
        "n": estimate.n,
        "effective_sample_size": estimate.effective_sample_size,
    }


def _observed(log: Sequence[LoggedDecision]) -> Estimate:
    """The logging policies' own mean reward: no reweighting, every weight 1."""
    reward = np.array([record.reward for record in log])
    return _mean_estimate(reward, np.ones(len(log)))


def _estimates(
    log: Sequence[LoggedDecision], target: TargetPolicy, predictions: Sequence[np.ndarray]
) -> dict[str, Any]:
    """IPS, SNIPS (null when undefined) and doubly robust estimates of one target, asking
    the target once per record."""
    seen = _weighted(log, target)
    try:
        self_normalised: dict[str, Any] | None = _interval(_snips(seen))
    except ValueError:  # the target never makes a logged choice
        self_normalised = None
    return {
        "ips": _interval(_ips(seen)),
        "snips": self_normalised,
        "doubly_robust": _interval(_doubly_robust(log, seen, predictions)),
    }


def policy_report(
    log: Sequence[LoggedDecision], model: PropensityModel, values: Mapping[str, float]
) -> dict[str, Any]:
    """The off-policy report of `log`: what was earned, what `greedy` and `uniform` would earn.

    `model` is both the greedy policy's model and the doubly robust reward model;
    `values` gives each action's value. A record with a candidate missing from `values`
    (an action since removed from the catalog) cannot be evaluated: it is skipped and
    counted. Returns `{"records", "skipped", "logged", "policies": {name: {"ips",
    "snips", "doubly_robust"}}}`; `logged` is null and `policies` empty without records.
    """
    usable = [record for record in log if all(a in values for a in record.candidates)]
    report: dict[str, Any] = {
        "records": len(usable),
        "skipped": len(log) - len(usable),
        "logged": None,
        "policies": {},
    }
    if not usable:
        return report
    report["logged"] = _interval(_observed(usable))
    predictions = _predictions(usable, model.score)
    targets = {"greedy": greedy(model, values), "uniform": uniform}
    report["policies"] = {
        name: _estimates(usable, target, predictions) for name, target in targets.items()
    }
    return report


class BanditLog:
    """The latest rank-1 outcomes learned, for off-policy reports: a capped Redis list.

    One key, `{key_prefix}nba:banditlog`, holding at most `size` records (orjson), the
    oldest dropped first. Appending is at least once: the learner appends after its
    checkpoint is saved, so a crash between the two leaves a batch out of the log, and
    a batch learned again after a crash may appear twice. It is a sample to estimate
    from, not a ledger.
    """

    def __init__(self, redis: Redis, *, key_prefix: str = "", size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._redis = redis
        self.size = size
        self.key = Keys(key_prefix).bandit_log

    async def append(self, records: Sequence[LoggedDecision]) -> None:
        """Add `records` at the end and drop what exceeds `size`: one atomic round trip."""
        if not records:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self.key, *(_encode(record) for record in records))
            pipe.ltrim(self.key, -self.size, -1)
            await pipe.execute()

    async def latest(self, limit: int) -> list[LoggedDecision]:
        """The latest `limit` records (at most `size`), oldest first."""
        if limit < 1:
            return []
        return [_decode(item) for item in await self._redis.lrange(self.key, -limit, -1)]


def _encode(record: LoggedDecision) -> bytes:
    return orjson.dumps(
        {
            "x": dict(record.features),
            "candidates": list(record.candidates),
            "action_id": record.action_id,
            "propensity": record.propensity,
            "reward": record.reward,
        }
    )


def _decode(item: bytes) -> LoggedDecision:
    data = orjson.loads(item)
    return LoggedDecision(
        features=data["x"],
        candidates=data["candidates"],
        action_id=data["action_id"],
        propensity=data["propensity"],
        reward=data["reward"],
    )
