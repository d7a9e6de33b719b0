"""The propensity protocol and the static base-rate model.

A propensity model answers `score(features, action_ids)` with one acceptance
probability per action. The static model returns each action's configured prior (its
base rate) whatever the customer: the baseline that online learning
(`models.online.OnlinePropensity`, which starts from the same priors) must beat, served
through `models.exploration.Greedy` where a deterministic ranking is wanted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class PropensityModel(Protocol):
    """Anything that scores candidate actions for one customer."""

    name: str

    def score(self, features: Mapping[str, float | int], action_ids: Sequence[str]) -> list[float]:
        """Acceptance probability of each action, in the order of `action_ids`."""
        ...


class BaseRateModel:
    """Scores every action by its prior acceptance rate; does not learn.

    >>> BaseRateModel({"a": 0.1, "b": 0.02}).score({}, ["b", "a"])
    [0.02, 0.1]
    """

    name = "base-rate"

    def __init__(self, base_rates: Mapping[str, float]) -> None:
        for action_id, rate in base_rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"base rate of {action_id!r} must be within [0, 1], got {rate}")
        self._base_rates = dict(base_rates)

    def score(self, features: Mapping[str, float | int], action_ids: Sequence[str]) -> list[float]:
        """The configured base rate of each action; unknown actions raise KeyError."""
        return [self._base_rates[action_id] for action_id in action_ids]
