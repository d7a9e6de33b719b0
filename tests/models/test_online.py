"""OnlinePropensity: cold start, learning a known logistic truth, vectorised = river, contract."""

from __future__ import annotations

import copy
import doctest
import inspect
import math
from collections.abc import Callable

import numpy as np
import pytest
from river import compose, preprocessing

import models.online
from models.online import MIN_STD, FlooredStandardScaler, OnlinePropensity, UnknownActionError
from models.propensity import PropensityModel

PRIORS = {"gold_card": 0.05, "savings": 0.10, "loan": 0.02}
FEATURES = [f"f{j}" for j in range(6)]


class LogisticWorld:
    """A known truth: P(accept | x, a) = sigmoid(b_a + w_a · z), x = location + scale · z."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.actions = list(PRIORS)
        self.location = self.rng.normal(0.0, 3.0, len(FEATURES))
        self.scale = self.rng.uniform(0.5, 4.0, len(FEATURES))
        self.weights = self.rng.normal(0.0, 0.7, (len(self.actions), len(FEATURES)))
        rates = np.array(list(PRIORS.values()))
        self.intercepts = np.log(rates / (1.0 - rates))

    def draw(self, n: int) -> tuple[list[dict[str, float]], np.ndarray, np.ndarray]:
        """n customers' features, their true acceptance probabilities and sampled answers."""
        z = self.rng.normal(size=(n, len(FEATURES)))
        x = self.location + self.scale * z
        truth = 1.0 / (1.0 + np.exp(-(self.intercepts + z @ self.weights.T)))
        answers = self.rng.random(truth.shape) < truth
        return [dict(zip(FEATURES, row.tolist(), strict=True)) for row in x], truth, answers


def trained(seed: int = 1, n: int = 4_000) -> tuple[OnlinePropensity, LogisticWorld]:
    world = LogisticWorld(seed)
    model = OnlinePropensity(PRIORS)
    xs, _, answers = world.draw(n)
    for x, row in zip(xs, answers, strict=True):
        for action_id, accepted in zip(world.actions, row.tolist(), strict=True):
            model.learn_one(x, action_id, accepted)
    return model, world


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (no ties here)."""
    ranks = np.empty(len(p))
    ranks[np.argsort(p)] = np.arange(1, len(p) + 1)
    positives = int(y.sum())
    negatives = len(y) - positives
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


# -- cold start and the prior ---------------------------------------------------------------


@pytest.mark.parametrize("x", [{}, {"f0": 3.0, "f1": -2.0}, {"unknown": 1e6}])
def test_cold_start_returns_the_priors(x: dict[str, float]) -> None:
    model = OnlinePropensity(PRIORS)
    assert model.score(x, list(PRIORS)) == pytest.approx(list(PRIORS.values()), abs=1e-12)


def test_an_action_that_has_not_learned_keeps_its_prior_while_others_learn() -> None:
    model, world = trained(n=300)
    model.add_action("new_offer", 0.07)
    xs, _, _ = world.draw(5)
    for x in xs:
        assert model.score(x, ["new_offer"]) == pytest.approx([0.07], abs=1e-12)
    assert model.outcomes("new_offer") == 0
    assert model.outcomes("gold_card") == 300


@pytest.mark.parametrize("prior", [0.0, 1.0])
def test_extreme_priors_are_clipped_to_a_finite_logit(prior: float) -> None:
    model = OnlinePropensity({"edge": prior})
    (p,) = model.score({}, ["edge"])
    assert p == pytest.approx(prior, abs=1.01e-6)
    mean, std = model.logit_distribution({}, ["edge"])
    assert np.isfinite(mean).all()
    assert np.isfinite(std).all()


@pytest.mark.parametrize("prior", [-0.1, 1.5, math.nan])
def test_an_out_of_range_prior_is_refused_naming_the_action(prior: float) -> None:
    with pytest.raises(ValueError, match=r"prior of 'gold_card' must be within \[0, 1\]"):
        OnlinePropensity({"gold_card": prior})


def test_an_action_cannot_be_added_twice() -> None:
    with pytest.raises(ValueError, match="'savings' is already known"):
        OnlinePropensity(PRIORS).add_action("savings", 0.2)


@pytest.mark.parametrize(
    "hyperparameter",
    ["learning_rate", "prior_strength", "weight_precision", "weight_variance_scale"],
)
def test_a_non_positive_hyperparameter_is_refused(hyperparameter: str) -> None:
    with pytest.raises(ValueError, match=f"{hyperparameter} must be positive"):
        OnlinePropensity(PRIORS, **{hyperparameter: 0.0})


def test_hyperparameters_are_stored_under_their_own_names() -> None:
    given = {
        "learning_rate": 0.5,
        "l2": 0.001,
        "prior_strength": 7.0,
        "weight_precision": 2.0,
        "weight_variance_scale": 0.5,
    }
    model = OnlinePropensity(PRIORS, **given)
    parameters = set(inspect.signature(OnlinePropensity).parameters)
    assert parameters == {"priors", *given}
    assert model.priors == PRIORS
    assert {name: getattr(model, name) for name in given} == given


# -- unknown actions --------------------------------------------------------------------------


def test_scoring_unknown_actions_raises_listing_them() -> None:
    model = OnlinePropensity(PRIORS)
    with pytest.raises(UnknownActionError, match=r"\['nope', 'gone'\]") as raised:
        model.score({}, ["savings", "nope", "gone"])
    assert isinstance(raised.value, KeyError)


def test_learning_an_unknown_action_raises_and_changes_nothing() -> None:
    model = OnlinePropensity(PRIORS)
    with pytest.raises(UnknownActionError, match="nope"):
        model.learn_one({"f0": 1.0}, "nope", True)
    with pytest.raises(UnknownActionError, match="nope"):
        model.predict_learn_one({"f0": 1.0}, "nope", True)
    assert model.actions == tuple(PRIORS)


# -- learning ---------------------------------------------------------------------------------


def test_learning_a_logistic_truth_beats_the_prior_and_nears_the_truth() -> None:
    model, world = trained(seed=3, n=4_000)
    xs, truth, answers = world.draw(4_000)
    scores = np.array([model.score(x, world.actions) for x in xs])
    for column, action_id in enumerate(world.actions):
        y = answers[:, column].astype(float)
        prior = np.full(len(y), PRIORS[action_id])
        learned_loss = log_loss(y, scores[:, column])
        assert learned_loss < log_loss(y, prior) - 0.02, action_id
        assert learned_loss < log_loss(y, truth[:, column]) + 0.01, action_id
        assert auc(y, scores[:, column]) > auc(y, truth[:, column]) - 0.03, action_id
        assert auc(y, scores[:, column]) > 0.7, action_id


def test_uncertainty_shrinks_as_an_action_learns() -> None:
    fresh = OnlinePropensity(PRIORS, prior_strength=20.0)
    _, cold = fresh.logit_distribution({}, list(PRIORS))
    rates = np.array(list(PRIORS.values()))
    assert cold == pytest.approx(1.0 / np.sqrt(20.0 * rates * (1.0 - rates)))
    model, world = trained(n=2_000)
    xs, _, _ = world.draw(100)
    learned = np.array([model.logit_distribution(x, list(PRIORS))[1] for x in xs])
    assert (learned < cold).all()
    assert (np.median(learned, axis=0) < cold / 2).all()


def standardised_inputs(rng: np.random.Generator, d: int, n: int) -> list[dict[str, float]]:
    return [{f"x{j}": float(v) for j, v in enumerate(rng.normal(size=d))} for _ in range(n)]


@pytest.mark.parametrize("d", [10, 160])
def test_a_first_outcome_moves_the_logit_by_about_the_residual_whatever_the_inputs(d: int) -> None:
    # Plain SGD would move it by rate × Σ z_j², i.e. ~d times the residual: the step
    # divided by each weight's precision (d by default) moves it by about (y − p).
    rng = np.random.default_rng(d)
    model = OnlinePropensity({"offer": 0.10})
    for x in standardised_inputs(rng, d, 500):  # declines at the prior's rate or so
        model.learn_one(x, "offer", bool(rng.random() < 0.10))
    x = standardised_inputs(rng, d, 1)[0]
    before = model.score(x, ["offer"])[0]
    model.learn_one(x, "offer", True)
    after = model.score(x, ["offer"])[0]
    logit = lambda p: math.log(p / (1.0 - p))  # noqa: E731
    assert 0.05 * (1.0 - before) < logit(after) - logit(before) < 1.0 * (1.0 - before)


def test_a_weight_whose_input_hardly_varied_stays_near_zero() -> None:
    # The trap of optimisers that move every weight by the same amount (AdaGrad, Adam):
    # an input drifting by millionths (z ≈ 0 while learning) gets a weight as large as
    # any other's, which swamps the logit the day that input really moves (z ≈ −500 here,
    # its deviation being floored at MIN_STD). As in a real vector, ~160 inputs.
    rng = np.random.default_rng(9)
    model = OnlinePropensity({"offer": 0.06})
    xs = standardised_inputs(rng, 160, 300)
    for index, x in enumerate(xs):
        x["days_since_login"] = 0.5 + 1e-6 * (index % 7)
        model.learn_one(x, "offer", bool(rng.random() < 0.3 + 0.2 * (x["x0"] > 0)))
    x = xs[0] | {"days_since_login": 0.0}  # the customer just logged in
    without = {name: value for name, value in x.items() if name != "days_since_login"}
    assert model.score(x, ["offer"])[0] == pytest.approx(
        model.score(without, ["offer"])[0], rel=0.05
    )
    slope = model.score({"x0": 1.0}, ["offer"])[0] - model.score({"x0": -1.0}, ["offer"])[0]
    assert slope > 0.01  # while the inputs that did vary were learned


def test_the_weight_variance_scale_narrows_the_weights_share_only() -> None:
    narrow, plain = (OnlinePropensity(PRIORS, weight_variance_scale=scale) for scale in (0.25, 1.0))
    world = LogisticWorld(2)
    xs, _, answers = world.draw(500)
    for x, row in zip(xs, answers, strict=True):
        for action_id, accepted in zip(world.actions, row.tolist(), strict=True):
            narrow.learn_one(x, action_id, accepted)
            plain.learn_one(x, action_id, accepted)
    actions = list(PRIORS)
    assert narrow.score(xs[0], actions) == plain.score(xs[0], actions)
    _, intercept_only = narrow.logit_distribution({}, actions)  # no input: the intercept's
    assert intercept_only.tolist() == plain.logit_distribution({}, actions)[1].tolist()
    (_, narrow_std), (_, plain_std) = (
        m.logit_distribution(xs[0], actions) for m in (narrow, plain)
    )
    expected = np.sqrt(intercept_only**2 + 0.25 * (plain_std**2 - intercept_only**2))
    assert narrow_std == pytest.approx(expected)
    assert (narrow_std < plain_std).all()


def test_predict_learn_one_predicts_as_river_learning_during_predict_then_learns() -> None:
    world = LogisticWorld(4)
    model, reference = OnlinePropensity(PRIORS), OnlinePropensity(PRIORS)
    xs, _, answers = world.draw(300)
    for index, (x, row) in enumerate(zip(xs, answers, strict=True)):
        action_id = world.actions[index % len(world.actions)]
        x = x if index % 10 else {**x, f"new_{index}": 1.0}  # new features now and then
        accepted = bool(row[index % len(world.actions)])
        with compose.learn_during_predict():  # the scaler learns x, never the answer
            expected = copy.deepcopy(reference.pipeline(action_id)).predict_proba_one(x)[True]
        reference.learn_one(x, action_id, accepted)
        assert model.predict_learn_one(x, action_id, accepted) == pytest.approx(expected, abs=1e-12)
    reference.learn_one(xs[0], "loan", True)
    model.predict_learn_one(xs[0], "loan", True)
    assert model.score(xs[1], list(PRIORS)) == reference.score(xs[1], list(PRIORS))
    assert model.outcomes("loan") == reference.outcomes("loan") == 101


def test_predict_learn_one_predicts_without_the_answer() -> None:
    world = LogisticWorld(4)
    xs, _, _ = world.draw(50)
    model = OnlinePropensity(PRIORS)
    for index, x in enumerate(xs[:-1]):
        model.learn_one(x, "loan", index % 3 == 0)
    accepting, declining = copy.deepcopy(model), copy.deepcopy(model)
    assert accepting.predict_learn_one(xs[-1], "loan", True) == declining.predict_learn_one(
        xs[-1], "loan", False
    )
    assert accepting.score(xs[-1], ["loan"]) > declining.score(xs[-1], ["loan"])


# -- the scaler: river's statistics, in arrays ------------------------------------------------


def scaler_stream(seed: int, n: int) -> list[dict[str, float]]:
    """Inputs whose features come and go, one of them on a scale far below MIN_STD."""
    rng = np.random.default_rng(seed)
    xs = []
    for index in range(n):
        x = {name: float(rng.normal(3.0, 2.0)) for name in FEATURES if rng.random() < 0.8}
        x["tiny"] = 5.0 + float(rng.normal(0.0, 1e-6))
        if index >= n // 2:
            x["late"] = float(rng.integers(0, 3))
        xs.append(x)
    return xs


def test_the_scaler_keeps_rivers_statistics() -> None:
    ours, river = FlooredStandardScaler(), preprocessing.StandardScaler()
    for x in scaler_stream(seed=1, n=400):
        ours.learn_one(x)
        river.learn_one(x)
    assert ours.counts == dict(river.counts)
    assert ours.means == pytest.approx(dict(river.means), rel=1e-12)
    assert ours.vars == pytest.approx(dict(river.vars), rel=1e-12)


def test_the_scaler_scales_as_river_but_never_divides_by_less_than_min_std() -> None:
    ours, river = FlooredStandardScaler(), preprocessing.StandardScaler()
    for x in scaler_stream(seed=2, n=300):
        ours.learn_one(x)
        river.learn_one(x)
    x = {"f0": 4.0, "f1": -1.0, "tiny": 5.001, "late": 2.0, "never_learned": 7.0}
    scaled, expected = ours.transform_one(x), river.transform_one(x)
    assert list(scaled) == list(x)
    for name in ["f0", "f1", "late"]:
        assert scaled[name] == pytest.approx(expected[name], rel=1e-12)
    assert scaled["tiny"] == pytest.approx((5.001 - ours.means["tiny"]) / MIN_STD)
    assert abs(expected["tiny"]) > 100 * abs(scaled["tiny"])  # river's own would explode
    assert scaled["never_learned"] == 0.0


def test_learning_and_scaling_at_once_equals_the_two_steps() -> None:
    one_pass, two_steps = FlooredStandardScaler(), FlooredStandardScaler()
    for x in scaler_stream(seed=3, n=200):
        two_steps.learn_one(x)
        scaled = one_pass.learn_transform_one(x)
        assert scaled.after.tolist() == list(two_steps.transform_one(x).values())
        assert [one_pass.slots[name] for name in x] == scaled.slots.tolist()
    assert one_pass.means == two_steps.means
    assert one_pass.vars == two_steps.vars


# -- scoring: vectorised equals river ---------------------------------------------------------


def river_scores(
    model: OnlinePropensity, x: dict[str, float], action_ids: list[str]
) -> list[float]:
    return [model.pipeline(action_id).predict_proba_one(x)[True] for action_id in action_ids]


def test_vectorised_scores_equal_river_one_by_one() -> None:
    model, world = trained(n=1_000)
    model.learn_one({"f0": 1.0, "only_loan": 5.0, "constant": 2.0}, "loan", True)
    model.learn_one({"f0": 2.0, "only_loan": 1.0, "constant": 2.0}, "loan", False)
    xs, _, _ = world.draw(200)
    extra = [
        {},
        {"f0": 1.0},
        {"only_loan": 3.0, "constant": 2.0, "constant_elsewhere": 9.0},
        {**xs[0], "never_seen": 123.0},
    ]
    actions = [*world.actions, "loan", "gold_card"]  # repeats are allowed
    for x in [*xs, *extra]:
        assert model.score(x, actions) == pytest.approx(river_scores(model, x, actions), abs=1e-9)


def test_scores_stay_equal_to_river_while_learning_and_scoring_interleave() -> None:
    world = LogisticWorld(5)
    model = OnlinePropensity(PRIORS)
    xs, _, answers = world.draw(300)
    for x, row in zip(xs, answers, strict=True):
        assert model.score(x, world.actions) == pytest.approx(
            river_scores(model, x, world.actions), abs=1e-9
        )
        model.learn_one(x, world.actions[int(row.argmax())], bool(row.any()))


def test_scores_come_in_the_order_asked() -> None:
    model, world = trained(n=500)
    (x,), _, _ = world.draw(1)
    forward = model.score(x, ["gold_card", "savings", "loan"])
    backward = model.score(x, ["loan", "gold_card", "savings"])
    assert backward == pytest.approx([forward[2], forward[0], forward[1]], rel=1e-12)
    assert model.score(x, []) == []


def test_predict_proba_one_has_rivers_shape() -> None:
    model, world = trained(n=200)
    (x,), _, _ = world.draw(1)
    proba = model.predict_proba_one(x, "savings")
    assert set(proba) == {False, True}
    assert proba[True] == pytest.approx(model.score(x, ["savings"])[0])
    assert proba[False] + proba[True] == pytest.approx(1.0)


def test_it_satisfies_the_propensity_protocol() -> None:
    model: PropensityModel = OnlinePropensity(PRIORS)
    assert model.name == "online-logistic"


# -- river's contract -------------------------------------------------------------------------


def test_predicting_before_any_learning_works() -> None:
    model = OnlinePropensity(PRIORS)
    assert len(model.score({"f0": 1.0}, list(PRIORS))) == 3
    mean, std = model.logit_distribution({"f0": 1.0}, list(PRIORS))
    assert mean.shape == std.shape == (3,)


@pytest.mark.parametrize(
    "call",
    [
        lambda model, x: model.learn_one(x, "savings", True),
        lambda model, x: model.predict_learn_one(x, "savings", True),
        lambda model, x: model.score(x, list(PRIORS)),
        lambda model, x: model.logit_distribution(x, list(PRIORS)),
        lambda model, x: model.predict_proba_one(x, "loan"),
    ],
    ids=["learn_one", "predict_learn_one", "score", "logit_distribution", "predict_proba_one"],
)
def test_inputs_are_not_mutated(
    call: Callable[[OnlinePropensity, dict[str, float]], object],
) -> None:
    model, world = trained(n=100)
    (x,), _, _ = world.draw(1)
    x["brand_new"] = 4.0
    before = copy.deepcopy(x)
    call(model, x)
    assert x == before


def test_missing_and_new_features_are_tolerated() -> None:
    model, world = trained(n=300)
    (x,), _, _ = world.draw(1)
    partial = {name: x[name] for name in FEATURES[:2]}
    assert all(0.0 < p < 1.0 for p in model.score(partial, list(PRIORS)))
    model.learn_one({**partial, "appears_later": 1.0}, "gold_card", True)
    model.learn_one({"appears_later": 3.0}, "gold_card", False)
    assert all(0.0 < p < 1.0 for p in model.score({**x, "never_learned": 5.0}, list(PRIORS)))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_feature_is_refused_before_it_poisons_the_model(bad: float) -> None:
    model, world = trained(n=50)
    (x,), _, _ = world.draw(1)
    before = model.score(x, list(PRIORS))
    with pytest.raises(ValueError, match="feature 'f1' is"):
        model.learn_one({**x, "f1": bad}, "savings", True)
    with pytest.raises(ValueError, match="feature 'f1' is"):
        model.predict_learn_one({**x, "f1": bad, "new": 1.0}, "savings", True)
    with pytest.raises(ValueError, match="feature 'f1' is"):
        model.score({**x, "f1": bad}, list(PRIORS))
    assert model.score(x, list(PRIORS)) == before
    assert "new" not in model.pipeline("savings")["FlooredStandardScaler"].slots


def test_the_module_example_runs() -> None:
    result = doctest.testmod(models.online)
    assert result.attempted > 5
    assert result.failed == 0
