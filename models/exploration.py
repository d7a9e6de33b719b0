"""Exploration: rank candidate actions while still learning, logging how likely each choice was.

A policy ranks candidates by propensity × value, but not always greedily: a model that
only exploits never learns about the actions it underrates. Two exploring policies are
shipped, and a greedy one that does not explore:

- `ThompsonSampling` draws each action's logit from the model's posterior
  (`OnlinePropensity.logit_distribution`) and ranks by the drawn propensity × value. It
  explores in proportion to uncertainty: a new action (wide prior) is tried often, a
  well-known poor one rarely.
- `EpsilonGreedy` returns the greedy ranking, except with probability `epsilon` a
  uniformly random ranking of the candidates. Crude, but its probabilities are exact and
  it works on top of any `PropensityModel`.
- `Greedy` always returns the greedy ranking, each placement with probability 1. It
  wraps a model whose choices need no exploration (the static base-rate model) or
  serves a learned one without exploring (`NBA_EXPLORATION=none`); a log it writes
  cannot evaluate other policies (no overlap, see `models.offpolicy`).

What `Choice.probability` means — the logged propensity. It is the probability, over the
policy's own randomness for this decision (the same features, candidates and values),
that the policy puts this action at exactly this rank:

- at rank 1 it is the propensity π(a | x) of a contextual bandit, what the inverse
  propensity and doubly robust estimators of `models.offpolicy` need;
- at a rank k > 1 it is the marginal probability of the action at position k. It is NOT
  conditional on the actions ranked above it, and the entries of one ranking do not
  multiply into the probability of that ranking. It serves position-based estimators;
  `models.offpolicy` evaluates rank 1.

For `Greedy` it is 1 for every placement. For `EpsilonGreedy` it is exact:
(1 − ε)·[the action is the greedy one at k] + ε / m for m candidates. For
`ThompsonSampling` there is no closed form; it is a Monte Carlo estimate: the policy
makes `draws` posterior draws at once (vectorised), decides with the first, and logs
for each returned action the fraction of the draws that put it at the same rank. The
estimate is therefore at least 1 / `draws` for every returned action (never zero, so
never an infinite importance weight), biased upwards by at most 1 / `draws`, with a
standard error of about sqrt(p(1 − p) / `draws`).

The exploring two are deterministic given their `seed` and the sequence of calls.
Processes serving in parallel should be given different seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.propensity import PropensityModel


class NamedModel(Protocol):
    """What a policy tells about the model under it: its name, quoted in reasons."""

    @property
    def name(self) -> str: ...


class PosteriorModel(Protocol):
    """A propensity model that also knows how uncertain each action's logit is."""

    name: str

    def logit_distribution(
        self, x: Mapping[str, float], action_ids: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each action's logit, in the order of `action_ids`."""
        ...


@dataclass(frozen=True, slots=True)
class Choice:
    """One ranked action and how the policy came to it.

    `propensity` is the model's mean acceptance probability (what the reasons quote);
    `score` is what the policy ranked by (a drawn or the mean propensity × value);
    `probability` is the logged propensity, as defined in the module docstring.
    """

    action_id: str
    rank: int
    propensity: float
    score: float
    probability: float


class ExplorationPolicy(Protocol):
    """Ranks candidates with exploration and reports the probability of its choices."""

    name: str

    @property
    def model(self) -> NamedModel:
        """The propensity model the policy ranks with."""
        ...

    def rank(
        self,
        x: Mapping[str, float],
        action_ids: Sequence[str],
        n: int,
        values: Sequence[float] | None = None,
    ) -> list[Choice]:
        """The top `n` candidates (fewer if there are fewer), best first."""
        ...

    def probabilities(
        self,
        x: Mapping[str, float],
        action_ids: Sequence[str],
        values: Sequence[float] | None = None,
    ) -> np.ndarray:
        """The probability of each candidate being ranked first, in the order of `action_ids`."""
        ...


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logit))


def _values(values: Sequence[float] | None, count: int) -> np.ndarray:
    """The candidates' values as an array (all 1.0 when not given), checked."""
    if values is None:
        return np.ones(count)
    array = np.asarray(values, dtype=float)
    if array.shape != (count,):
        raise ValueError(f"values must give one number per candidate: {count}, got {len(array)}")
    if not (np.isfinite(array).all() and (array >= 0.0).all()):
        raise ValueError(f"values must be finite and zero or positive, got {array.tolist()}")
    return array


def _choices(
    action_ids: Sequence[str],
    order: np.ndarray,
    propensity: np.ndarray,
    score: np.ndarray,
    probability: np.ndarray,
) -> list[Choice]:
    """The ranking `order` (candidate indices) as Choices; `probability` is per position."""
    return [
        Choice(
            action_id=action_ids[index],
            rank=position + 1,
            propensity=float(propensity[index]),
            score=float(score[index]),
            probability=float(probability[position]),
        )
        for position, index in enumerate(order.tolist())
    ]


def _check_n(n: int) -> None:
    if n < 0:
        raise ValueError(f"n must be zero or positive, got {n}")


class Greedy:
    """Always the greedy ranking by propensity × value; every placement has probability 1.

    >>> from models.propensity import BaseRateModel
    >>> [(c.action_id, c.probability) for c in
    ...  Greedy(BaseRateModel({"a": 0.1, "b": 0.5})).rank({}, ["a", "b"], 2, values=[10, 1])]
    [('a', 1.0), ('b', 1.0)]
    """

    name = "greedy"

    def __init__(self, model: PropensityModel) -> None:
        self.model = model

    def rank(
        self,
        x: Mapping[str, float],
        action_ids: Sequence[str],
        n: int,
        values: Sequence[float] | None = None,
    ) -> list[Choice]:
        """The top `n` by propensity × value (ties keep the candidates' order)."""
        _check_n(n)
        value = _values(values, len(action_ids))
        propensity = np.asarray(self.model.score(x, action_ids), dtype=float)
        score = propensity * value
        order = np.argsort(-score, kind="stable")[:n]
        return _choices(action_ids, order, propensity, score, np.ones(len(order)))

    def probabilities(
        self,
        x: Mapping[str, float],
        action_ids: Sequence[str],
        values: Sequence[float] | None = None,
    ) -> np.ndarray:
        """1 for the greedy first choice, 0 for every other candidate."""
        probability = np.zeros(len(action_ids))
        if action_ids:
            propensity = np.asarray(self.model.score(x, action_ids), dtype=float)
            value = _values(values, len(action_ids))
            probability[int(np.argmax(propensity * value))] = 1.0
        return probability


class EpsilonGreedy:
    """Greedy by propensity × value, except a uniformly random ranking with probability ε."""

    name = "epsilon-greedy"

    def __init__(
        self, model: PropensityModel, *, epsilon: float = 0.1, seed: int | None = None
    ) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be within [0, 1], got {epsilon}")
        self.model = model
        self.epsilon = epsilon
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def _greedy(
        self, x: Mapping[str, float], action_ids: Sequence[str], value: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The mean propensities and the greedy order (ties keep the candidates' order)."""
        propensity = np.asarray(self.model.score(x, action_ids), dtype=float)
        return propensity, np.argsort(-propensity * value, kind="stable")

    def rank(
        self,
        x: Mapping[str, float],
        action_ids: Sequence[str],
        n: int,
        values: Sequence[float] | None = None,
    ) -> list[Choice]:
        """The top `n`: greedy with probability 1 − ε, a uniformly random ranking otherwise."""
        _check_n(n)
        count = len(action_ids)
        value = _values(values, count)
        propensity, greedy = self._greedy(x, action_ids, value)
        n = min(n, count)
        explore = self._rng.random() < self.epsilon
        order = self._rng.permutation(count)[:n] if explore else greedy[:n]
        uniform = self.epsilon / count if count else 0.0
        probability = (1.0 - self.epsilon) * (order == greedy[:n]) + uniform
        return _choices(action_ids, order, propensity, propensity * value, probability)

    def probabilities(
        self,
        x: Mapping[str, float],
        action_ids: Sequence[str],
        values: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Exact: 1 − ε + ε/m for the greedy first choice, ε/m for each other candidate."""
        count = len(action_ids)
        if count == 0:
            return np.zeros(0)
        _, greedy = self._greedy(x, action_ids, _values(values, count))
        probability = np.full(count, self.epsilon / count)
        probability[greedy[0]] += 1.0 - self.epsilon
        return probability


def _top(samples: np.ndarray, n: int) -> np.ndarray:
    """Per row of `samples`, the column indices of its `n` largest values, largest first.

    n passes of argmax: for the few ranks a placement shows, cheaper than any sort.
    """
    remaining = samples.copy()
    every_row = np.arange(len(samples))
    top = np.empty((len(samples), n), dtype=np.intp)
    for position in range(n):
        top[:, position] = best = remaining.argmax(axis=1)
        remaining[every_row, best] = -np.inf
    return top


class ThompsonSampling:
    """Ranks by propensity × value drawn from the model's posterior; probabilities by Monte Carlo.

    `draws` posterior samples are made per decision (one matrix of normal draws): the
    first decides, all of them estimate the logged probabilities (see the module docstring).
    """

    name = "thompson"

    def __init__(self, model: PosteriorModel, *, draws: int = 256, seed: int | None = None) -> None:
        if draws < 1:
            raise ValueError(f"draws must be at least 1, got {draws}")
        self.model = model
        self.draws = draws
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def _sample(
        self, x: Mapping[str, float], action_ids: Sequence[str], values: Sequence[float] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean propensities, and drawn propensity × value of shape (draws, candidates).

        The draws are single precision, plenty to rank by and several times faster.
        """
        mean, std = self.model.logit_distribution(x, action_ids)
        value = _values(values, len(action_ids)).astype(np.float32)
        noise = self._rng.standard_normal((self.draws, len(action_ids)), dtype=np.float32)
        logit = mean.astype(np.float32) + std.astype(np.float32) * noise
        with np.errstate(over="ignore"):  # e^-logit = inf is fine: the propensity is then 0
            drawn = value / (1.0 + np.exp(-logit))
        return _sigmoid(mean), drawn

    def rank(
        self,
        x: Mapping[str, float],
        action_ids: Sequence[str],
        n: int,
        values: Sequence[float] | None = None,
    ) -> list[Choice]:
        """The top `n` of the first posterior draw, each with its estimated probability."""
        _check_n(n)
        n = min(n, len(action_ids))
        if n == 0:
            return []
        propensity, samples = self._sample(x, action_ids, values)
        top = _top(samples, n)
        chosen = top[0]
        probability = (top == chosen).mean(axis=0)
        return _choices(action_ids, chosen, propensity, samples[0], probability)

    def probabilities(
        self,
        x: Mapping[str, float],
        action_ids: Sequence[str],
        values: Sequence[float] | None = None,
    ) -> np.ndarray:
        """Monte Carlo estimate over `draws` posterior draws of each candidate's chance to lead."""
        if not action_ids:
            return np.zeros(0)
        _, samples = self._sample(x, action_ids, values)
        return np.bincount(samples.argmax(axis=1), minlength=len(action_ids)) / self.draws
