"""Churn risk as an online classifier: river's `StandardScaler | LogisticRegression`.

It learns the labels `models.churn_labels` resolves (x is the snapshot's input, the
label known a horizon later) and starts from a prior churn rate, so that it answers
sensibly before its first label.

>>> model = ChurnModel(prior=0.05)
>>> round(model.churn_risk({"days_since_login": 2.0}), 3)  # before any label: the prior
0.05
>>> for _ in range(200):
...     model.learn_one({"days_since_login": 30.0}, churned=True)
...     model.learn_one({"days_since_login": 1.0}, churned=False)
>>> model.churn_risk({"days_since_login": 30.0}) > 0.5 > model.churn_risk({"days_since_login": 1.0})
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from river import linear_model, optim, preprocessing


class ChurnModel:
    """Churn probability within the horizon, learned online: `StandardScaler | LogisticRegression`.

    Learns from `Resolution`s (or `learn_one`); `churn_risk(x)` is meant to become a
    customer feature. Picklable: save and load it with `models.persistence`.

    Parameters
    ----------
    prior
        The churn rate assumed before any label: the intercept starts at logit(prior).
    learning_rate
        SGD step size of the weights and the intercept (inputs are standardised first).
    l2
        L2 penalty pulling the weights towards zero at every step.
    """

    def __init__(self, *, prior: float = 0.05, learning_rate: float = 0.02, l2: float = 0.0):
        if not 0.0 < prior < 1.0:
            raise ValueError(f"prior must be within (0, 1), got {prior}")
        if not learning_rate > 0.0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate}")
        if not l2 >= 0.0:
            raise ValueError(f"l2 must be zero or positive, got {l2}")
        self.prior = prior
        self.learning_rate = learning_rate
        self.l2 = l2
        self.labels_learned = 0
        self._pipeline = preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate),
            l2=l2,
            intercept_init=math.log(prior / (1.0 - prior)),
            intercept_lr=learning_rate,
        )

    def learn_one(self, x: Mapping[str, float], churned: bool) -> None:
        """Learn one label; `x` must be the snapshot's input, never later features."""
        self._pipeline.learn_one(dict(x), bool(churned))
        self.labels_learned += 1

    def churn_risk(self, x: Mapping[str, float]) -> float:
        """The probability that the customer churns within the horizon."""
        risk: float = self._pipeline.predict_proba_one(dict(x))[True]
        return risk

    def predict_proba_one(self, x: Mapping[str, float]) -> dict[bool, float]:
        """River's shape: {False: 1 − risk, True: risk}."""
        risk = self.churn_risk(x)
        return {False: 1.0 - risk, True: risk}
