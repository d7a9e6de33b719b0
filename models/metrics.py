"""Progressive validation: every outcome is scored by the model *before* it learns from it.

Predict, then learn: each outcome is a test case for the model as it was when the
outcome arrived, so the figures measure how well the model predicts answers it has not
seen, without a held-out set, and they follow the model as it learns. `Learner` feeds
every outcome through `ProgressiveValidation.update` just before `learn_one`.

Figures, per action and for the whole model (every action's outcomes together):

- `outcomes`, `accepts`: counts; `accept_rate` = accepts / outcomes;
- `mean_prediction`: the mean predicted probability; next to `accept_rate` it shows
  calibration (a model that predicts 8% where 4% accept is over-confident);
- `log_loss`: river's `LogLoss` over every outcome since the model started (a model
  predicting the base rate scores its entropy, e.g. 0.199 at 5%);
- `roc_auc`: the exact ROC AUC of the last `auc_window` outcomes (river's
  `RollingROCAUC`), null while that window holds no acceptance or no decline. Rolling
  rather than since the start because river's cumulative `ROCAUC` bins predictions at
  fixed thresholds over [0, 1], which lumps propensities of a few percent together; and
  the recent window is the model's current skill. 0.5 is chance, 1 a perfect ranking.

>>> validation = ProgressiveValidation(auc_window=100)
>>> for p, accepted in [(0.2, False), (0.6, True), (0.1, False), (0.4, True)]:
...     validation.update("savings", p, accepted)
>>> figures = validation.report(["savings", "gold"])
>>> figures["actions"]["savings"]["roc_auc"], figures["actions"]["savings"]["accept_rate"]
(1.0, 0.5)
>>> figures["actions"]["gold"]["outcomes"], figures["actions"]["gold"]["log_loss"]
(0, None)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from river import metrics

#: Outcomes the rolling ROC AUC covers, per action and for the whole model.
AUC_WINDOW = 1000


class _Figures:
    """The running figures of one group of outcomes (one action, or the whole model)."""

    def __init__(self, auc_window: int) -> None:
        self.auc_window = auc_window
        self.outcomes = 0
        self.accepts = 0
        self.prediction_sum = 0.0
        self.last_accept = 0  # the outcome number of the latest acceptance (0: none yet)
        self.last_decline = 0
        self.log_loss = metrics.LogLoss()
        self.roc_auc = metrics.RollingROCAUC(window_size=auc_window)

    def update(self, p: float, accepted: bool) -> None:
        self.outcomes += 1
        self.prediction_sum += p
        if accepted:
            self.accepts += 1
            self.last_accept = self.outcomes
        else:
            self.last_decline = self.outcomes
        self.log_loss.update(accepted, p)
        self.roc_auc.update(accepted, p)

    def _in_window(self, outcome: int) -> bool:
        return outcome > 0 and self.outcomes - outcome < self.auc_window

    def report(self) -> dict[str, Any]:
        """The figures as plain numbers; ratios are null before the first outcome."""
        seen = self.outcomes > 0
        auc_defined = self._in_window(self.last_accept) and self._in_window(self.last_decline)
        return {
            "outcomes": self.outcomes,
            "accepts": self.accepts,
            "accept_rate": self.accepts / self.outcomes if seen else None,
            "mean_prediction": self.prediction_sum / self.outcomes if seen else None,
            "log_loss": self.log_loss.get() if seen else None,
            "roc_auc": self.roc_auc.get() if auc_defined else None,
            "roc_auc_window": min(self.outcomes, self.auc_window),
        }


class ProgressiveValidation:
    """Predict-then-learn figures per action and for the whole model (see the module doc).

    Parameters
    ----------
    auc_window
        How many of the latest outcomes the ROC AUC covers, per action and overall.
    """

    def __init__(self, *, auc_window: int = AUC_WINDOW) -> None:
        if auc_window < 1:
            raise ValueError(f"auc_window must be at least 1, got {auc_window}")
        self.auc_window = auc_window
        self._overall = _Figures(auc_window)
        self._actions: dict[str, _Figures] = {}

    def update(self, action_id: str, p: float, accepted: bool) -> None:
        """Count one outcome of `action_id` that the model predicted with probability `p`.

        Call it before the model learns the outcome: `p` must not have seen it.
        """
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability, got {p}")
        figures = self._actions.get(action_id)
        if figures is None:
            figures = self._actions[action_id] = _Figures(self.auc_window)
        figures.update(p, accepted)
        self._overall.update(p, accepted)

    def report(self, action_ids: Iterable[str] = ()) -> dict[str, Any]:
        """`{"overall": figures, "actions": {action_id: figures}}`.

        Every action of `action_ids` is listed (with zero outcomes if it has none yet),
        and every action that has outcomes.
        """
        actions = dict.fromkeys(action_ids) | dict.fromkeys(self._actions)
        empty = _Figures(self.auc_window)
        return {
            "overall": self._overall.report(),
            "actions": {
                action_id: self._actions.get(action_id, empty).report() for action_id in actions
            },
        }
