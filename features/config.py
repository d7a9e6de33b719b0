"""The tunable parts of the feature definitions: half-lives, lateness, stage and tier thresholds.

Domain code takes a `FeatureConfig` as an argument (the engine builds it from `NBA_*`
settings); the defaults are the documented behaviour of a fresh install.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SECONDS_PER_DAY = 86_400

#: The event-time windows of the windowed features, in days (today and the days before).
WINDOWS_DAYS = (7, 30, 90)


@dataclass(frozen=True, slots=True)
class LifecycleThresholds:
    """Days that separate the lifecycle stages (see `features.view.lifecycle_stage`).

    A customer who never transacted is a `prospect`; one whose first transaction is less
    than `new_days` old is `new`; otherwise the days since the last customer-initiated
    activity decide: under `at_risk_after_days` `active`, then `at_risk`, from
    `dormant_after_days` `dormant`, from `churned_after_days` `churned`. A customer who
    held products and closed them all is `churned` whatever the days.
    """

    new_days: int = 90
    at_risk_after_days: int = 30
    dormant_after_days: int = 90
    churned_after_days: int = 180

    def __post_init__(self) -> None:
        if not 0 < self.at_risk_after_days < self.dormant_after_days < self.churned_after_days:
            raise ValueError(
                "lifecycle thresholds must grow: 0 < at_risk < dormant < churned days, got "
                f"{self.at_risk_after_days}, {self.dormant_after_days}, {self.churned_after_days}"
            )
        if self.new_days <= 0:
            raise ValueError(f"new_days must be positive, got {self.new_days}")


#: Loyalty tiers by points balance, lowest first: (tier, minimum points).
DEFAULT_LOYALTY_TIERS: tuple[tuple[str, float], ...] = (
    ("none", 0.0),
    ("bronze", 1.0),
    ("silver", 1_000.0),
    ("gold", 5_000.0),
    ("platinum", 20_000.0),
)


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Everything about the features a deployment may want to change.

    `half_lives_days` maps a decay group of the registry (`Feature.decay`) to its
    half-life: an interaction that happened that many days ago counts half as much as
    one happening now. `allowed_lateness_s` bounds how far behind the customer's latest
    event time an event may arrive and still be applied (it also bounds the event ids
    kept for deduplication); later ones are refused with a reason. `max_clock_skew_s` is
    how far ahead of the clock of the process applying it an event time is believed:
    such an event is refused where events are decoded, and a customer whose stored latest
    event time is further ahead than that (kept from before the check, or from a clock
    that ran fast) has the lateness of new events measured from the clock plus this
    skew instead, so that one bad time cannot refuse the customer's events for good.
    """

    half_lives_days: dict[str, float] = field(
        default_factory=lambda: {
            "frequency": 30.0,
            "monetary": 30.0,
            "channel": 30.0,
            "interest": 14.0,
            "flows": 30.0,
        }
    )
    allowed_lateness_s: int = 2 * SECONDS_PER_DAY
    max_clock_skew_s: int = 300
    lifecycle: LifecycleThresholds = field(default_factory=LifecycleThresholds)
    loyalty_tiers: tuple[tuple[str, float], ...] = DEFAULT_LOYALTY_TIERS

    def __post_init__(self) -> None:
        for group, days in self.half_lives_days.items():
            if not days > 0:
                raise ValueError(f"half-life of {group!r} must be positive days, got {days}")
        if not 0 <= self.allowed_lateness_s <= 30 * SECONDS_PER_DAY:
            raise ValueError(
                "allowed_lateness_s must be between 0 and 30 days (the windows keep 90 days "
                f"of daily buckets), got {self.allowed_lateness_s}"
            )
        if self.max_clock_skew_s < 0:
            raise ValueError(f"max_clock_skew_s must be 0 or more, got {self.max_clock_skew_s}")
        minimums = [minimum for _, minimum in self.loyalty_tiers]
        if not minimums or minimums != sorted(minimums):
            raise ValueError("loyalty tiers must be given lowest first, with growing minimums")

    def half_life_s(self, group: str) -> float:
        """The half-life of a decay group in seconds; an unknown group is a clear error."""
        try:
            return self.half_lives_days[group] * SECONDS_PER_DAY
        except KeyError:
            raise ValueError(
                f"no half-life configured for decay group {group!r}; "
                f"known: {', '.join(sorted(self.half_lives_days))}"
            ) from None
