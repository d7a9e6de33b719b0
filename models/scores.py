"""A customer's churn risk and segment, scored with the churn and segment models serving.

Both the profile (what a person reads) and a decision (what rules and the propensity
model read as the features `churn_risk` and `segment`) need the same two numbers with
the same caveats, so they are made here once. Pure: the caller passes the models it
serves (`CustomerModels`, read once so the scores and the versions they report agree).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from models.churn import ChurnModel
from models.features_vector import vectorise
from models.segments import Segmenter

#: The segment of a customer while segments are not learned yet (the warm-up).
NOT_SEGMENTED = -1


@dataclass(frozen=True, slots=True)
class ModelScores:
    """A customer's churn risk and segment as of now, and what they rest on, in words.

    `churn_risk` is the churn model's prior until it learned a label; `segment` is
    `NOT_SEGMENTED` (-1) until the segmenter's warm-up is over: never an invented number.
    """

    churn_risk: float
    segment: int
    churn_version: int
    segments_version: int
    notes: list[str] = field(default_factory=list)

    def as_features(self) -> dict[str, float | int]:
        """The scores as features, for decisions (rules and the propensity model)."""
        return {"churn_risk": self.churn_risk, "segment": self.segment}


@dataclass(frozen=True, slots=True)
class CustomerModels:
    """The churn and segment models serving at one moment, each with its version."""

    churn: ChurnModel
    churn_version: int
    segmenter: Segmenter
    segments_version: int

    def score(self, features: Mapping[str, float | int | str], now: float) -> ModelScores:
        """Score `features` (read at `now`, Unix seconds) with these models."""
        notes = []
        if self.churn.labels_learned == 0:
            notes.append(
                f"churn_risk is the prior ({self.churn.prior:g}): no churn label learned yet"
            )
        segmenter = self.segmenter
        if segmenter.ready:
            segment = segmenter.segment_of(features, now=now)
        else:
            segment = NOT_SEGMENTED
            notes.append(
                f"segment {NOT_SEGMENTED}: not segmented yet, {segmenter.customers_learned} of "
                f"{segmenter.warmup} customers sampled before segments are learned"
            )
        return ModelScores(
            churn_risk=self.churn.churn_risk(vectorise(features, now=now)),
            segment=segment,
            churn_version=self.churn_version,
            segments_version=self.segments_version,
            notes=notes,
        )
