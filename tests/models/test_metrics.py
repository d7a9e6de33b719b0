"""Progressive validation figures against hand-computed values."""

from __future__ import annotations

import doctest
import math
import pickle
import random

import pytest

import models.metrics
from models.metrics import ProgressiveValidation


def exact_auc(pairs: list[tuple[float, bool]]) -> float:
    """The ROC AUC by its definition: P(score of a positive > score of a negative), ties ½."""
    positives = [p for p, y in pairs if y]
    negatives = [p for p, y in pairs if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def stream(n: int, seed: int) -> list[tuple[float, bool]]:
    """Predictions that carry some signal about the answers."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        p = rng.uniform(0.01, 0.3)
        pairs.append((p, rng.random() < p))
    return pairs


def test_figures_per_action_and_overall_are_the_definitions() -> None:
    validation = ProgressiveValidation(auc_window=10_000)
    pairs = {"a": stream(400, 1), "b": stream(300, 2)}
    for action_id, items in pairs.items():
        for p, y in items:
            validation.update(action_id, p, y)
    report = validation.report()
    everything = pairs["a"] + pairs["b"]
    for figures, items in [
        (report["actions"]["a"], pairs["a"]),
        (report["actions"]["b"], pairs["b"]),
        (report["overall"], everything),
    ]:
        accepts = sum(y for _, y in items)
        assert (figures["outcomes"], figures["accepts"]) == (len(items), accepts)
        assert figures["accept_rate"] == pytest.approx(accepts / len(items))
        assert figures["mean_prediction"] == pytest.approx(sum(p for p, _ in items) / len(items))
        log_loss = -sum(math.log(p if y else 1 - p) for p, y in items) / len(items)
        assert figures["log_loss"] == pytest.approx(log_loss)
        assert figures["roc_auc"] == pytest.approx(exact_auc(items))
        assert figures["roc_auc_window"] == len(items)


def test_the_auc_covers_the_latest_window_and_is_null_without_both_answers() -> None:
    validation = ProgressiveValidation(auc_window=50)
    items = stream(200, 3)
    for p, y in items:
        validation.update("a", p, y)
    figures = validation.report()["actions"]["a"]
    assert figures["roc_auc"] == pytest.approx(exact_auc(items[-50:]))
    assert figures["roc_auc_window"] == 50
    for _ in range(50):  # a window of declines only: no AUC
        validation.update("a", 0.1, False)
    assert validation.report()["actions"]["a"]["roc_auc"] is None
    validation.update("a", 0.2, True)
    assert validation.report()["actions"]["a"]["roc_auc"] == pytest.approx(1.0)


def test_listed_actions_without_outcomes_show_zero_and_nulls() -> None:
    report = ProgressiveValidation().report(["a"])
    assert report["actions"]["a"] == report["overall"] == {
        "outcomes": 0, "accepts": 0, "accept_rate": None, "mean_prediction": None,
        "log_loss": None, "roc_auc": None, "roc_auc_window": 0,
    }  # fmt: skip


def test_the_figures_survive_a_checkpoint_and_carry_on() -> None:
    validation = ProgressiveValidation()
    items = stream(300, 4)
    for p, y in items[:200]:
        validation.update("a", p, y)
    restored = pickle.loads(pickle.dumps(validation))
    for p, y in items[200:]:
        restored.update("a", p, y)
        validation.update("a", p, y)
    assert restored.report() == validation.report()


@pytest.mark.parametrize("p", [-0.1, 1.5, math.nan])
def test_a_prediction_that_is_not_a_probability_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match="must be a probability"):
        ProgressiveValidation().update("a", p, True)


def test_the_module_example_runs() -> None:
    result = doctest.testmod(models.metrics)
    assert result.attempted > 0
    assert result.failed == 0
