"""Drift detection: ADWIN on each action's accept stream, raising an alert when it shifts.

Each action has its own `river.drift.ADWIN` fed with its outcomes as 1 (accepted) or 0
(declined, or no answer). ADWIN keeps an adaptive window of the latest outcomes and cuts
it where its older and newer parts differ by more than chance allows (confidence
`delta`): a change in the action's accept rate. The alert says what changed: the accept
rate of the part ADWIN dropped (before) and of the part it kept (after), with their
sizes, the action's and the model's outcome count and the time it was detected. ADWIN
cuts as soon as the difference is significant, so the part it keeps still holds many
outcomes from before the change and understates it; the report therefore also gives,
for each action's latest alert, the accept rate of the outcomes *since* the alert.

Why the accept stream and not the prediction error: the error of an online model falls
as it learns from its prior, so ADWIN on the error would flag every warm-up as drift,
while a shift in how often customers accept is what a marketer needs to hear about, in
units they read. What it cannot tell apart: the world changing (customers lose interest)
from the policy changing who is shown the action (exploration moves to other
customers); the alert says that the rate moved, the model's figures
(`models.metrics`) say whether it still predicts well.

After an alert the action's detector starts a new window (river resets a detector at the
update after a detection), so a lasting change is reported once, not at every outcome.

>>> import random
>>> rng = random.Random(7)
>>> detector = DriftDetector()
>>> rates = [0.05] * 2000 + [0.40] * 2000
>>> alerts = [alert for n, rate in enumerate(rates)
...           if (alert := detector.update("savings", rng.random() < rate, ts=float(n)))]
>>> len(alerts), alerts[0].accept_rate_before < 0.1, alerts[0].outcome > 2000
(1, True, True)
>>> round(detector.report()["alerts"][0]["accept_rate_since"], 1)
0.4
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from river import drift

#: ADWIN's confidence: smaller means fewer false alarms and later detection.
DEFAULT_DELTA = 0.002
#: How many of the latest alerts are kept for `GET /v1/models`.
KEPT_ALERTS = 20


@dataclass(frozen=True, slots=True)
class DriftAlert:
    """A change in one action's accept rate, and when it was detected.

    `outcome` is the action's outcome count and `model_outcome` the whole model's when
    the change was detected; `ts` is the learner's clock then (Unix seconds).
    `accept_rate_before` is over the `outcomes_before` older outcomes ADWIN dropped,
    `accept_rate_after` over the `outcomes_after` latest it kept (which may still include
    outcomes from before the change).
    """

    action_id: str
    ts: float
    outcome: int
    model_outcome: int
    accept_rate_before: float
    accept_rate_after: float
    outcomes_before: int
    outcomes_after: int

    def describe(self) -> str:
        """One line for the log."""
        return (
            f"drift in the accept rate of {self.action_id!r} after {self.outcome} outcomes: "
            f"{self.accept_rate_before:.2%} over {self.outcomes_before} outcomes before, "
            f"{self.accept_rate_after:.2%} over the latest {self.outcomes_after}"
        )


@dataclass(slots=True)
class _Raised:
    """An alert, and the outcomes of its action since (while it is the action's latest)."""

    alert: DriftAlert
    outcomes_since: int = 0
    accepts_since: int = 0

    def report(self) -> dict[str, Any]:
        since = self.outcomes_since
        return asdict(self.alert) | {
            "outcomes_since": since,
            "accept_rate_since": self.accepts_since / since if since else None,
        }


class _ActionWindow:
    """One action's ADWIN, its outcome count, its detections and its latest alert."""

    def __init__(self, delta: float) -> None:
        self.adwin = drift.ADWIN(delta=delta)
        self.outcomes = 0
        self.detected = 0
        self.latest: _Raised | None = None


class DriftDetector:
    """ADWIN per action on the accept stream; `update` returns an alert when one fires.

    Parameters
    ----------
    delta
        ADWIN's confidence parameter (river's default).
    kept_alerts
        How many of the latest alerts `report` lists (the counts cover all of them).
    """

    def __init__(self, *, delta: float = DEFAULT_DELTA, kept_alerts: int = KEPT_ALERTS) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be within (0, 1), got {delta}")
        self.delta = delta
        self.outcomes = 0
        self._actions: dict[str, _ActionWindow] = {}
        self._alerts: deque[_Raised] = deque(maxlen=kept_alerts)

    def update(self, action_id: str, accepted: bool, *, ts: float) -> DriftAlert | None:
        """Feed one outcome of `action_id`; the alert if ADWIN detects a change now, else None."""
        window = self._actions.get(action_id)
        if window is None:
            window = self._actions[action_id] = _ActionWindow(self.delta)
        adwin = window.adwin
        width, total = adwin.width, adwin.total
        value = 1.0 if accepted else 0.0
        adwin.update(value)
        window.outcomes += 1
        self.outcomes += 1
        if window.latest is not None:
            window.latest.outcomes_since += 1
            window.latest.accepts_since += int(accepted)
        if not adwin.drift_detected:
            return None
        window.detected += 1
        dropped = width + 1 - adwin.width
        alert = DriftAlert(
            action_id=action_id,
            ts=ts,
            outcome=window.outcomes,
            model_outcome=self.outcomes,
            accept_rate_before=(total + value - adwin.total) / dropped if dropped else 0.0,
            accept_rate_after=adwin.estimation,
            outcomes_before=int(dropped),
            outcomes_after=int(adwin.width),
        )
        window.latest = _Raised(alert)
        self._alerts.append(window.latest)
        return alert

    def report(self) -> dict[str, Any]:
        """Detections in total and per action, and the latest alerts (newest first), each
        with the action's accept rate since (until its next alert)."""
        by_action = {action_id: window.detected for action_id, window in self._actions.items()}
        return {
            "method": "ADWIN on each action's accept stream",
            "delta": self.delta,
            "detected": sum(by_action.values()),
            "by_action": {action_id: count for action_id, count in by_action.items() if count},
            "alerts": [raised.report() for raised in reversed(self._alerts)],
        }
