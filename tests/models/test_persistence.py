"""Signed checkpoints: a round trip keeps everything; a bad signature is refused unread."""

from __future__ import annotations

import collections
import doctest
import pickle
from collections.abc import Callable
from copy import deepcopy

import numpy as np
import pytest
from river import optim, preprocessing

from models import persistence
from models.exploration import EpsilonGreedy, ThompsonSampling
from models.online import OnlinePropensity
from models.persistence import SignatureError, load, save

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
PRIORS = {"a": 0.05, "b": 0.1}
X = {"f0": 1.5, "f1": -0.3}


def learned_model() -> OnlinePropensity:
    rng = np.random.default_rng(0)
    model = OnlinePropensity(PRIORS)
    for _ in range(200):
        x = {"f0": float(rng.normal()), "f1": float(rng.normal())}
        model.learn_one(x, "a", bool(rng.random() < 0.2))
        model.learn_one(x, "b", bool(rng.random() < 0.05))
    return model


def learned_policy() -> ThompsonSampling:
    policy = ThompsonSampling(learned_model(), seed=5)
    policy.rank(X, list(PRIORS), 1)  # the random state has moved on
    return policy


def test_a_policy_round_trips_with_its_model_and_random_state() -> None:
    policy = learned_policy()
    restored = load(save(policy, key=KEY), key=KEY, expected_type=ThompsonSampling)
    assert isinstance(policy.model, OnlinePropensity)
    assert isinstance(restored.model, OnlinePropensity)
    assert restored.model.score(X, list(PRIORS)) == policy.model.score(X, list(PRIORS))
    assert restored.draws == policy.draws
    assert restored.seed == policy.seed
    assert [restored.rank(X, list(PRIORS), 2) for _ in range(5)] == [
        policy.rank(X, list(PRIORS), 2) for _ in range(5)
    ]


def test_a_restored_model_keeps_learning_exactly_as_the_original() -> None:
    model = learned_model()
    restored = load(save(model, key=KEY), key=KEY, expected_type=OnlinePropensity)
    for copy in (model, restored):
        copy.learn_one({"f0": 2.0, "new_feature": 1.0}, "b", True)
        copy.add_action("c", 0.3)
    assert restored.score(X, ["a", "b", "c"]) == model.score(X, ["a", "b", "c"])
    assert restored.logit_distribution(X, ["a", "b"])[1].tolist() == (
        model.logit_distribution(X, ["a", "b"])[1].tolist()
    )


def test_a_checkpoint_from_before_the_scaler_kept_arrays_loads_and_learns_the_same() -> None:
    # Until then each scaler was a river StandardScaler, its statistics in three dicts,
    # and each action's precision a dict by feature name.
    model = learned_model()
    old = deepcopy(model)
    for state in old._states.values():
        scaler = state.model["FlooredStandardScaler"]
        river_layout = {
            "with_std": True,
            "window_size": None,
            "counts": collections.Counter(scaler.counts),
            # river's transform_one left a feature it had never learned in means and vars
            "means": collections.defaultdict(float, {**scaler.means, "transformed_only": 0.0}),
            "vars": collections.defaultdict(float, {**scaler.vars, "transformed_only": 0.0}),
        }
        assert river_layout.keys() == preprocessing.StandardScaler().__dict__.keys()
        state.precision = dict(zip(scaler.slots, state.precision.tolist(), strict=True))
        scaler.__dict__ = river_layout
    restored = load(save(old, key=KEY), key=KEY, expected_type=OnlinePropensity)
    assert restored.score(X, list(PRIORS)) == model.score(X, list(PRIORS))
    assert restored.logit_distribution(X, list(PRIORS))[1].tolist() == (
        model.logit_distribution(X, list(PRIORS))[1].tolist()
    )
    for each in (model, restored):
        each.learn_one({"f0": 2.0, "new_feature": 1.0}, "b", True)
    assert restored.score(X, list(PRIORS)) == model.score(X, list(PRIORS))
    assert restored.pipeline("a")["FlooredStandardScaler"].counts == {"f0": 200, "f1": 200}


def test_a_checkpoint_from_before_the_laplace_step_loads_and_learns_with_it() -> None:
    # Until then each regression learned with river's plain SGD (rate 0.02) and the model
    # kept `intercept_lr`, with a weight precision of 1.
    model = learned_model()
    old = deepcopy(model)
    for state in old._states.values():
        state.model["LogisticRegression"].optimizer = optim.SGD(0.02)
    old.__dict__ = {
        key: value for key, value in old.__dict__.items() if key != "weight_variance_scale"
    } | {"learning_rate": 0.02, "intercept_lr": 0.02, "weight_precision": 1.0}
    restored = load(save(old, key=KEY), key=KEY, expected_type=OnlinePropensity)
    assert not hasattr(restored, "intercept_lr")
    assert restored.score(X, list(PRIORS)) == model.score(X, list(PRIORS))  # what it learned
    for each in (model, restored):
        each.learn_one({"f0": 2.0, "new_feature": 1.0}, "b", True)
    assert restored.score(X, list(PRIORS)) == model.score(X, list(PRIORS))  # how it learns
    assert restored.logit_distribution(X, list(PRIORS))[1].tolist() == (
        model.logit_distribution(X, list(PRIORS))[1].tolist()
    )


def test_the_derived_score_cache_is_not_stored() -> None:
    model = learned_model()
    model.score(X, list(PRIORS))  # fills the cache
    state = model.__getstate__()
    assert not {"_linear", "_quadratic", "_stale"} & set(state)


def test_another_key_is_refused_without_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    data = save(learned_policy(), key=KEY)

    def must_not_run(*args: object, **kwargs: object) -> object:
        raise AssertionError("unpickled before the signature was checked")

    monkeypatch.setattr(pickle, "loads", must_not_run)
    with pytest.raises(SignatureError, match="signature mismatch"):
        load(data, key=OTHER_KEY, expected_type=ThompsonSampling)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # the payload
        lambda data: data[:10] + bytes([data[10] ^ 1]) + data[11:],  # the signature
        lambda data: data[:-5],  # truncated
        lambda data: data + b"\x00",  # extended
    ],
    ids=["payload", "signature", "truncated", "extended"],
)
def test_an_altered_checkpoint_is_refused(tamper: Callable[[bytes], bytes]) -> None:
    data = save({"weights": [1.0, 2.0]}, key=KEY)
    with pytest.raises(SignatureError, match="signature mismatch"):
        load(tamper(data), key=KEY, expected_type=dict)


@pytest.mark.parametrize(
    "data", [b"", b"NBAPKL1\n", pickle.dumps({"a": 1})], ids=["empty", "header", "plain"]
)
def test_something_that_is_not_a_checkpoint_is_refused(data: bytes) -> None:
    with pytest.raises(SignatureError, match="not a signed checkpoint"):
        load(data, key=KEY, expected_type=dict)


def test_an_unexpected_type_is_refused() -> None:
    data = save(learned_policy(), key=KEY)
    with pytest.raises(TypeError, match="holds a ThompsonSampling, expected a EpsilonGreedy"):
        load(data, key=KEY, expected_type=EpsilonGreedy)


@pytest.mark.parametrize("key", [b"short", b"", "a text key of more than 16 chars"])
def test_a_weak_or_textual_key_is_refused(key: bytes | str) -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        save({}, key=key)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 16 bytes"):
        load(b"", key=key, expected_type=dict)  # type: ignore[arg-type]


def test_the_module_example_runs() -> None:
    result = doctest.testmod(persistence)
    assert result.attempted > 0
    assert result.failed == 0
