"""Propensity learned online with river: one logistic regression per action, scored vectorised.

Each action has its own river model, `FlooredStandardScaler | LogisticRegression` (river's
standard scaler with its statistics in arrays, never dividing by a deviation below
MIN_STD, and river's logistic regression), that learns one outcome at a time
(`learn_one`): an impression followed by an acceptance is a positive, a decline a
negative, always with the features as they were at decision time (the dict
`models.features_vector.vectorise` made and the decision recorded). A new action starts
from its configured prior: the intercept starts at logit(prior) and every weight at
zero, so before any outcome its propensity is exactly the prior. `predict_learn_one`
is progressive validation's step: the prediction before learning the answer, then the
learning, in one pass.

Learning goes through river; scoring does not. River scores one dict at a time, about a
hundred times slower per candidate set (`benchmarks.models_cost`), so the learned state
(scaler means and deviations, weights, intercepts) is exported to numpy arrays and a
whole candidate set is scored at once. The arrays are a cache: a row is re-exported
lazily, at the next score, after its action learned. The result equals river's own
`predict_proba_one` to floating-point rounding.

Every action keeps a diagonal Laplace approximation of the posterior over its weights
(Chapelle & Li, 2011): each weight's precision starts at `weight_precision` (by default
the number of inputs d, so that the d weights together start with a logit variance of
about 1) and grows by z_j²·p(1−p) with every outcome; the intercept's starts at
`prior_strength`·prior·(1−prior), i.e. the prior counts as `prior_strength` outcomes.
Since the logit is linear in the weights, this gives a Gaussian over each action's logit
(`logit_distribution`), which Thompson sampling draws from.

The same posterior sets the steps, as in the online Laplace update: each outcome's
gradient step is divided by the precision, Newton's step under the posterior's diagonal.
The intercept's step is (y − p) / its precision. The weights share one step size,
1 / (weight prior + Σ p(1−p)): each weight's precision is the prior plus Σ z_j²·p(1−p),
and since an action's scaler has seen exactly the outcomes that action learned, every
input that varies has Σ z_j² ≈ the number of outcomes — their precisions grow alike, and
the common value serves them all at no cost (river's own SGD, its rate set per step).
An input that hardly varied (z ≈ 0) still moves its weight in proportion to its tiny z.

Why not a fixed rate: with ~160 standardised inputs a plain SGD step moves the logit by
rate × Σ z_j² ≈ rate × 160 times (y − p), so a rate small enough for late, precise
learning is too slow early, and one fast enough early keeps the weights noisy forever.
Here the first outcomes move the logit by about (y − p) whatever the number of inputs
(the weight prior is that number), and the steps shrink as evidence accumulates (≈ 1/n,
as a running mean's). Why not AdaGrad or Adam: they move every weight by about the same
amount whatever its input's size, so the weight of an input that hardly varied (a decayed
sum drifting by millionths) grows like any other and, the day that input really moves,
swamps the logit.

The whole API, independent of Faust and of the server:

>>> from models import persistence
>>> from models.exploration import ThompsonSampling
>>> from models.features_vector import vectorise
>>> from models.online import OnlinePropensity
>>> model = OnlinePropensity({"gold_card": 0.05, "savings": 0.10})
>>> policy = ThompsonSampling(model, seed=7)
>>> now = 1_767_605_400.0
>>> x = vectorise({"txn_count": 12, "last_seen_ts": now - 3_600}, now=now)
>>> [round(p, 6) for p in model.score(x, ["gold_card", "savings"])]  # cold start: the priors
[0.05, 0.1]
>>> choice = policy.rank(x, ["gold_card", "savings"], n=1)[0]
>>> choice.action_id in {"gold_card", "savings"}, 0.0 < choice.probability <= 1.0
(True, True)
>>> for accepted in [True, False, True, True]:
...     model.learn_one(x, "savings", accepted)
>>> model.score(x, ["savings"])[0] > 0.10
True
>>> key = b"a checkpoint key of 32 bytes...."
>>> restored = persistence.load(persistence.save(policy, key=key), key=key,
...                             expected_type=ThompsonSampling)
>>> restored.model.score(x, ["savings"]) == model.score(x, ["savings"])
True
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from river import base, compose, linear_model, optim

#: Priors are clipped into [PRIOR_CLIP, 1 - PRIOR_CLIP] so that their logit is finite.
PRIOR_CLIP = 1e-6

_SCALER = "FlooredStandardScaler"
#: The smallest deviation a scaler divides by. Inputs valued at decision time (decayed
#: sums, days since) drift by millionths between decisions seconds apart; divided by
#: their own near-zero deviation, such drift would become a huge input and swamp the
#: model. Real variation is far larger than this floor in every unit the inputs use.
MIN_STD = 1e-3


class FlooredStandardScaler(base.Transformer):
    """river's StandardScaler, vectorised, never dividing by a deviation below MIN_STD.

    The same running statistics as `river.preprocessing.StandardScaler` — per feature a
    count, a mean and a variance updated by Welford's method — and the same scaling,
    z = (x − mean) / deviation (0 for a feature that has not varied), with the deviation
    floored at MIN_STD. The statistics live in numpy arrays, one slot per feature
    (`slots`), rather than in three dicts of Python floats: an outcome with ~150 inputs
    updates them all in a few array operations instead of ~150 rounds of dict reads and
    writes, which were most of what learning an outcome cost. `counts`, `means` and
    `vars` read them back by feature name, as river's attributes of the same names.

    >>> scaler = FlooredStandardScaler()
    >>> for x in [{"a": 1.0}, {"a": 3.0, "b": 5.0}]:
    ...     scaler.learn_one(x)
    >>> scaler.means, scaler.vars
    ({'a': 2.0, 'b': 5.0}, {'a': 1.0, 'b': 0.0})
    >>> scaler.transform_one({"a": 4.0, "b": 6.0, "never_learned": 1.0})
    {'a': 2.0, 'b': 0.0, 'never_learned': 0.0}
    """

    def __init__(self) -> None:
        self.slots: dict[Hashable, int] = {}
        self._counts = np.zeros(0)
        self._means = np.zeros(0)
        self._variances = np.zeros(0)

    @property
    def counts(self) -> dict[Hashable, int]:
        """How many values of each feature were learned."""
        return dict(zip(self.slots, self._counts.astype(int).tolist(), strict=True))

    @property
    def means(self) -> dict[Hashable, float]:
        """The running mean of each feature."""
        return dict(zip(self.slots, self._means.tolist(), strict=True))

    @property
    def vars(self) -> dict[Hashable, float]:
        """The running (population) variance of each feature."""
        return dict(zip(self.slots, self._variances.tolist(), strict=True))

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """The means and variances, in the order of `slots` (copies)."""
        return self._means.copy(), self._variances.copy()

    def learn_one(self, x: dict[Hashable, Any]) -> None:
        """Update each feature's statistics with its value in x (new features start empty)."""
        self.learn_transform_one(x)

    def transform_one(self, x: dict[Hashable, Any]) -> dict[Hashable, Any]:
        """x scaled, as a new dict; a feature never learned scales to 0, as in river."""
        slots = np.fromiter((self.slots.get(name, -1) for name in x), np.intp, len(x))
        known = slots >= 0
        z = np.zeros(len(x))
        z[known] = _scaled(
            np.fromiter(x.values(), float, len(x))[known],
            self._means[slots[known]],
            self._variances[slots[known]],
        )
        return dict(zip(x, z.tolist(), strict=True))

    def learn_transform_one(self, x: Mapping[Any, float]) -> Scaled:
        """`learn_one(x)` then `transform_one(x)`, as `Pipeline.learn_one` runs them, at once."""
        slots = self._slots_of(x)
        values = np.fromiter(x.values(), float, len(x))
        counts = self._counts[slots] + 1.0
        old_means, old_variances = self._means[slots], self._variances[slots]
        delta = values - old_means
        means = old_means + delta / counts
        variances = old_variances + (delta * (values - means) - old_variances) / counts
        self._counts[slots], self._means[slots], self._variances[slots] = counts, means, variances
        return Scaled(slots, _scaled(values, means, variances))

    def _slots_of(self, x: Mapping[Any, float]) -> np.ndarray:
        """The slot of each feature of x, in x's order; a new feature gets a new, empty one."""
        slots = self.slots
        try:
            return np.fromiter(map(slots.__getitem__, x), np.intp, len(x))
        except KeyError:
            for name in x:
                slots.setdefault(name, len(slots))
            grow = np.zeros(len(slots) - len(self._counts))
            self._counts = np.concatenate([self._counts, grow])
            self._means = np.concatenate([self._means, grow])
            self._variances = np.concatenate([self._variances, grow])
            return np.fromiter(map(slots.__getitem__, x), np.intp, len(x))

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Load this scaler, or a checkpoint's from before it was vectorised (three dicts)."""
        if "slots" not in state:
            counts, means, variances = state["counts"], state["means"], state["vars"]
            state = {
                "slots": {name: slot for slot, name in enumerate(counts)},
                "_counts": np.array([float(counts[name]) for name in counts]),
                "_means": np.array([means[name] for name in counts]),
                "_variances": np.array([variances[name] for name in counts]),
            }
        self.__dict__.update(state)


@dataclass(frozen=True, slots=True)
class Scaled:
    """One input x as `FlooredStandardScaler.learn_transform_one` learned it, in x's order."""

    slots: np.ndarray  # each feature's slot in the scaler
    after: np.ndarray  # x scaled by the statistics updated with x


def _scaled(values: np.ndarray, means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """(value − mean) / max(deviation, MIN_STD), and 0 for a feature that has not varied."""
    z: np.ndarray = (values - means) / np.maximum(np.sqrt(variances), MIN_STD)
    z[variances == 0.0] = 0.0
    return z


_REGRESSION = "LogisticRegression"


class UnknownActionError(KeyError):
    """An action id the model has no prior for; the message lists every such id."""


def _sigmoid(logit: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-logit), without overflow for any finite logit."""
    return 0.5 * (1.0 + np.tanh(0.5 * logit))


def _not_finite(name: str, value: float) -> ValueError:
    return ValueError(f"feature {name!r} is {value}: features must be finite numbers")


def _padded(values: np.ndarray, size: int) -> np.ndarray:
    """`values`, extended with zeros to `size` if shorter."""
    if len(values) >= size:
        return values
    return np.concatenate([values, np.zeros(size - len(values))])


def _check_finite(x: Mapping[str, float]) -> None:
    """Raise `_not_finite` for the first non-finite value of x.

    One C-level sum first: finite values can only sum to a non-finite number by
    overflowing, so the value-by-value search runs only when the sum is not finite.
    """
    if math.isfinite(sum(x.values())):
        return
    for name, value in x.items():
        if not math.isfinite(value):
            raise _not_finite(name, value)


@dataclass
class _ActionState:
    """What one action has learned: its river model and the curvature behind its uncertainty."""

    model: compose.Pipeline
    #: Σ z_j²·p(1−p) per feature, by the scaler's slots (shorter if the scaler has grown
    #: since: the missing ones are 0); the prior precision is added on top.
    precision: np.ndarray
    intercept_precision: float  # prior_strength·prior·(1−prior) + Σ p(1−p)
    outcomes: int = 0


class OnlinePropensity:
    """Acceptance probability per action, learned online; satisfies `PropensityModel`.

    Parameters
    ----------
    priors
        Each action's prior acceptance probability (the catalog's base rate), in [0, 1].
    learning_rate
        Scale of each step (weights and intercept): 1 is the full Newton step to the
        Laplace posterior's mean, less is more cautious.
    l2
        L2 penalty pulling weights towards zero at every step, on top of the prior
        (which already does so: leave it at 0 unless old evidence should fade).
    prior_strength
        How many outcomes the prior is worth: sets the intercept's initial uncertainty
        and how far its first outcomes move it.
    weight_precision
        Prior precision of every (standardised) weight: sets their initial uncertainty
        and how far the first outcomes move them. None (the default): the number of
        inputs the action has seen, d, so that together the d weights start with a
        logit variance of about 1 whatever d is (Σ z_j² / d ≈ 1 for standardised z).
    weight_variance_scale
        Multiplies the weights' share of the logit's variance (not the intercept's). The
        diagonal posterior treats every input as independent evidence; inputs that move
        together (the indicators of one category, a recency and its never flag, a count
        and the amount of the same kind) are counted once each, so for a group of k such
        inputs it overstates the logit's variance up to k-fold, and Thompson sampling
        keeps exploring long after the ranking is clear. 0.25 halves the standard
        deviation: Chapelle & Li (2011) likewise found a narrowed Laplace posterior did
        better than the plain one. 1 keeps the diagonal posterior as it is.
    """

    name = "online-logistic"

    def __init__(
        self,
        priors: Mapping[str, float],
        *,
        learning_rate: float = 1.0,
        l2: float = 0.0,
        prior_strength: float = 20.0,
        weight_precision: float | None = None,
        weight_variance_scale: float = 0.25,
    ) -> None:
        for label, value in [
            ("learning_rate", learning_rate),
            ("prior_strength", prior_strength),
            ("weight_precision", 1.0 if weight_precision is None else weight_precision),
            ("weight_variance_scale", weight_variance_scale),
        ]:
            if not value > 0.0:
                raise ValueError(f"{label} must be positive, got {value}")
        if not l2 >= 0.0:
            raise ValueError(f"l2 must be zero or positive, got {l2}")
        self.priors: dict[str, float] = {}
        self.learning_rate = learning_rate
        self.l2 = l2
        self.prior_strength = prior_strength
        self.weight_precision = weight_precision
        self.weight_variance_scale = weight_variance_scale
        self._states: dict[str, _ActionState] = {}
        self._rows: dict[str, int] = {}
        self._columns: dict[str, int] = {}
        self._reset_cache()
        for action_id, prior in priors.items():
            self.add_action(action_id, prior)

    # -- actions ---------------------------------------------------------------------------

    @property
    def actions(self) -> tuple[str, ...]:
        """The known action ids, in the order they were added."""
        return tuple(self._states)

    def add_action(self, action_id: str, prior: float) -> None:
        """Start learning a new action from its prior (e.g. after a catalog reload)."""
        if action_id in self._states:
            raise ValueError(f"action {action_id!r} is already known")
        if not 0.0 <= prior <= 1.0:
            raise ValueError(f"prior of {action_id!r} must be within [0, 1], got {prior}")
        clipped = min(max(prior, PRIOR_CLIP), 1.0 - PRIOR_CLIP)
        regression = linear_model.LogisticRegression(
            optimizer=optim.SGD(self.learning_rate),  # rate set at each step
            l2=self.l2,
            intercept_init=math.log(clipped / (1.0 - clipped)),
            intercept_lr=self.learning_rate,  # divided by the intercept's precision at each step
        )
        self.priors[action_id] = prior
        self._states[action_id] = _ActionState(
            model=FlooredStandardScaler() | regression,
            precision=np.zeros(0),
            intercept_precision=self.prior_strength * clipped * (1.0 - clipped),
        )
        self._rows[action_id] = len(self._rows)
        self._stale.add(action_id)

    def pipeline(self, action_id: str) -> compose.Pipeline:
        """The river model of one action (to inspect it; learn through `learn_one`)."""
        return self._state(action_id).model

    def outcomes(self, action_id: str) -> int:
        """How many outcomes an action has learned from."""
        return self._state(action_id).outcomes

    # -- learning --------------------------------------------------------------------------

    def learn_one(self, x: Mapping[str, float], action_id: str, y: bool) -> None:
        """Learn one outcome of `action_id`: `y` is True for an acceptance, False for a decline.

        `x` must be the features the decision was scored with; it is not modified. New
        features are welcome at any time; a missing feature contributes nothing.
        """
        state = self._state(action_id)
        _check_finite(x)
        self._learn_scaled(action_id, x, state.model[_SCALER].learn_transform_one(x), y)

    def predict_learn_one(self, x: Mapping[str, float], action_id: str, y: bool) -> float:
        """Predict one outcome, then learn it; returns the prediction.

        Progressive validation's step, in one pass over x: the prediction is the model's
        before it learns the answer `y`, with x already in the scaler's statistics —
        river's `pipeline(action_id).predict_proba_one(x)[True]` under
        `compose.learn_during_predict()`, which lets the unsupervised steps learn x as they
        predict. The scaler never sees the answer, so the prediction stays honest, and it
        is the very probability the learning step starts from (its curvature and
        gradient), which spares a second pass. The learning is `learn_one(x, action_id, y)`.
        """
        state = self._state(action_id)
        _check_finite(x)
        return self._learn_scaled(action_id, x, state.model[_SCALER].learn_transform_one(x), y)

    def _learn_scaled(
        self, action_id: str, x: Mapping[str, float], scaled: Scaled, y: bool
    ) -> float:
        """What follows the scaler's step in `Pipeline.learn_one`, as an online Laplace update.

        The outcome's curvature z_j²·p(1−p), at the weights before it, adds to the
        precisions first; then the regression learns the scaled x through river, its
        rates set to `learning_rate` over the updated precisions: the intercept's own,
        and for the weights their common one (see the module docstring). Returns the
        probability the step started from, before it learned y.
        """
        state = self._states[action_id]
        scaler, regression = state.model[_SCALER], state.model[_REGRESSION]
        z = dict(zip(x, scaled.after.tolist(), strict=True))
        p: float = regression.predict_proba_one(z)[True]
        curvature = p * (1.0 - p)
        features = len(scaler.slots)
        if len(state.precision) < features:  # x has features new to the action
            state.precision = _padded(state.precision, features)
            for name in x:
                self._columns.setdefault(name, len(self._columns))
        state.precision[scaled.slots] += scaled.after * scaled.after * curvature
        state.intercept_precision += curvature
        evidence = state.intercept_precision - self._intercept_prior(action_id)
        regression.optimizer.lr.learning_rate = self.learning_rate / (
            self._weight_prior(state) + evidence
        )
        regression.intercept_lr.learning_rate = self.learning_rate / state.intercept_precision
        regression.learn_one(z, bool(y))
        state.outcomes += 1
        self._stale.add(action_id)
        return p

    def _intercept_prior(self, action_id: str) -> float:
        """The intercept's prior precision: `prior_strength` outcomes at the prior."""
        clipped = min(max(self.priors[action_id], PRIOR_CLIP), 1.0 - PRIOR_CLIP)
        return self.prior_strength * clipped * (1.0 - clipped)

    def _weight_prior(self, state: _ActionState) -> float:
        """The prior precision of each of an action's weights (see `weight_precision`)."""
        if self.weight_precision is not None:
            return self.weight_precision
        return float(max(len(state.model[_SCALER].slots), 1))

    # -- scoring ---------------------------------------------------------------------------

    def score(self, features: Mapping[str, float], action_ids: Sequence[str]) -> list[float]:
        """Acceptance probability of each action, in the order of `action_ids`.

        Unknown action ids raise `UnknownActionError`; features never learned are ignored.
        """
        rows, u = self._inputs(features, action_ids)
        probabilities: list[float] = _sigmoid(self._linear[rows] @ u).tolist()
        return probabilities

    def predict_proba_one(self, x: Mapping[str, float], action_id: str) -> dict[bool, float]:
        """River's shape for one action: {False: 1 − p, True: p}."""
        p = self.score(x, [action_id])[0]
        return {False: 1.0 - p, True: p}

    def logit_distribution(
        self, x: Mapping[str, float], action_ids: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each action's logit under its Laplace posterior."""
        rows, u = self._inputs(x, action_ids)
        size = len(self._columns)
        variance = self._quadratic[rows] @ np.concatenate([u[:size] * u[:size], u])
        return self._linear[rows] @ u, np.sqrt(np.maximum(variance, 0.0))

    def _inputs(
        self, x: Mapping[str, float], action_ids: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The rows of `action_ids` and u = [x; present; 1] over the known features.

        A feature absent from x contributes nothing (its presence is 0), as in river;
        a feature no action has learned is ignored.
        """
        rows = self._row_indices(action_ids)
        self._refresh()
        size = len(self._columns)
        columns: list[int] = []
        values: list[float] = []
        for name, value in x.items():
            if not math.isfinite(value):
                raise _not_finite(name, value)
            column = self._columns.get(name)
            if column is not None:
                columns.append(column)
                values.append(value)
        u = np.zeros(2 * size + 1)
        known = np.array(columns, dtype=np.intp)
        u[known] = values
        u[known + size] = 1.0
        u[-1] = 1.0
        return rows, u

    def _row_indices(self, action_ids: Sequence[str]) -> np.ndarray:
        try:
            return np.fromiter((self._rows[a] for a in action_ids), np.intp, len(action_ids))
        except KeyError:
            unknown = [a for a in action_ids if a not in self._rows]
            raise UnknownActionError(f"unknown action ids: {unknown}") from None

    def _state(self, action_id: str) -> _ActionState:
        try:
            return self._states[action_id]
        except KeyError:
            raise UnknownActionError(f"unknown action ids: {[action_id]}") from None

    # -- the numpy cache of the learned state ----------------------------------------------
    #
    # With D features, action a's scaler means m and inverse deviations s (0 for a constant
    # feature, as river), weights w, intercept b and weight precisions q, and for input x
    # with presence mask e (1 where x has the feature):
    #   logit    = Σ w·s·(x − m)·e + b           = linear[a] @ [x; e; 1]
    #   variance = Σ (s·(x − m)·e)² / q + 1 / q_b = quadratic[a] @ [x²; x; e; 1]
    # so linear[a] = [w·s; −w·s·m; b] and quadratic[a] = [v; −2·v·m; v·m²; 1 / q_b] with
    # v = s² / q. Features an action never learned have zeros: they contribute nothing.

    def _reset_cache(self) -> None:
        """Empty arrays, with every action marked for export at the next score."""
        self._linear = np.zeros((0, 1))
        self._quadratic = np.zeros((0, 1))
        self._stale: set[str] = set(self._states)

    def _refresh(self) -> None:
        """Export the actions that learned (or were added) since the last score."""
        if not self._stale:
            return
        actions, size = len(self._rows), len(self._columns)
        if self._linear.shape != (actions, 2 * size + 1):
            # A new action or feature (rare after warm-up): lay everything out again.
            self._linear = np.zeros((actions, 2 * size + 1))
            self._quadratic = np.zeros((actions, 3 * size + 1))
            self._stale.update(self._states)
        for action_id in self._stale:
            self._export(action_id)
        self._stale.clear()

    def _export(self, action_id: str) -> None:
        """Copy one action's river state into its rows (only features it has learned)."""
        state = self._states[action_id]
        row, size = self._rows[action_id], len(self._columns)
        scaler, regression = state.model[_SCALER], state.model[_REGRESSION]
        names = list(scaler.slots)
        weights = regression.weights
        columns = np.fromiter(map(self._columns.__getitem__, names), np.intp, len(names))
        mean, variance = scaler.statistics()
        weight = np.array([weights.get(name, 0.0) for name in names])
        precision = _padded(state.precision, len(names))
        deviation = np.maximum(np.sqrt(variance), MIN_STD)
        inv_std = np.divide(1.0, deviation, out=np.zeros_like(variance), where=variance > 0)
        slope = weight * inv_std
        self._linear[row, columns] = slope
        self._linear[row, columns + size] = -slope * mean
        self._linear[row, -1] = regression.intercept
        v = self.weight_variance_scale * inv_std * inv_std / (self._weight_prior(state) + precision)
        self._quadratic[row, columns] = v
        self._quadratic[row, columns + size] = -2.0 * v * mean
        self._quadratic[row, columns + 2 * size] = v * mean * mean
        self._quadratic[row, -1] = 1.0 / state.intercept_precision

    # -- pickling: the cache is derived, so it is rebuilt rather than stored ----------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for derived in ("_linear", "_quadratic", "_stale"):
            del state[derived]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Load a model, and bring an older checkpoint's layout up to date.

        A checkpoint from before the scaler was vectorised kept each action's precision in
        a dict by feature name: it is laid out by slot instead. One from before the
        Laplace step learned at fixed rates (`learning_rate` 0.02, `intercept_lr`): its
        weights, intercepts and precisions are kept, and it goes on learning with the
        Laplace step and the default settings (the fixed rates mean nothing to it).
        """
        if "intercept_lr" in state:
            state = {key: value for key, value in state.items() if key != "intercept_lr"}
            state |= {"learning_rate": 1.0, "weight_precision": None}
        state.setdefault("weight_variance_scale", 0.25)
        self.__dict__.update(state)
        for action in self._states.values():
            if isinstance(action.precision, dict):
                slots = action.model[_SCALER].slots
                action.precision = np.array([action.precision.get(name, 0.0) for name in slots])
        self._reset_cache()
