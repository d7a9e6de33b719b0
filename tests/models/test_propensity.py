"""The static base-rate propensity model."""

from __future__ import annotations

import math

import pytest

from models.propensity import BaseRateModel, PropensityModel


def test_scores_come_in_the_order_asked() -> None:
    model = BaseRateModel({"a": 0.1, "b": 0.02, "c": 0.5})
    assert model.score({}, ["c", "a", "b"]) == [0.5, 0.1, 0.02]
    assert model.score({}, ["b"]) == [0.02]
    assert model.score({}, []) == []


def test_scores_do_not_depend_on_features() -> None:
    model = BaseRateModel({"a": 0.1, "b": 0.02})
    assert model.score({"txn_count": 50, "txn_amount": 1e6}, ["a", "b"]) == model.score(
        {}, ["a", "b"]
    )


def test_the_rates_are_copied() -> None:
    rates = {"a": 0.1}
    model = BaseRateModel(rates)
    rates["a"] = 0.9
    assert model.score({}, ["a"]) == [0.1]


def test_an_unknown_action_raises() -> None:
    with pytest.raises(KeyError, match="nope"):
        BaseRateModel({"a": 0.1}).score({}, ["a", "nope"])


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_the_bounds_are_valid_rates(rate: float) -> None:
    assert BaseRateModel({"edge": rate}).score({}, ["edge"]) == [rate]


@pytest.mark.parametrize("rate", [-0.01, 1.01, 7.0, math.nan])
def test_an_out_of_range_rate_is_refused_naming_the_action(rate: float) -> None:
    with pytest.raises(ValueError, match=r"base rate of 'gold_card' must be within \[0, 1\]"):
        BaseRateModel({"fine": 0.5, "gold_card": rate})


def test_it_satisfies_the_protocol() -> None:
    model: PropensityModel = BaseRateModel({"a": 0.1})
    assert model.name == "base-rate"
