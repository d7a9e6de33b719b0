"""The feature registry: every customer feature declared once.

A feature says what it means, its default, and how an event updates it. The update is
pure: `updates_for(event)` returns the field operations an event implies, and the store
applies them in Redis. The profile API, the CEL rule variables and the model inputs are
all derived from `FEATURES`.

This is the small starter set (activity, transactions, channels); the full retail-CRM
set is tracked in its own issue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from features.events import Channel, Event, EventType


class Op(StrEnum):
    """How an event changes a feature's stored value."""

    ADD = "add"  # sum of the event's contributions (counts, amounts)
    MAX = "max"  # latest event time wins, whatever the arrival order
    MIN = "min"  # earliest event time wins, whatever the arrival order


@dataclass(frozen=True, slots=True)
class FeatureDef:
    """One customer feature: its meaning and how events update it.

    `contribution` returns what one event adds (ADD) or proposes (MAX/MIN), or None
    when the event does not touch the feature.
    """

    name: str
    family: str
    description: str
    op: Op
    contribution: Callable[[Event], float | None]
    integer: bool = False
    default: float = 0.0


def _always_one(_: Event) -> float:
    return 1.0


def _event_time(event: Event) -> float:
    return event.epoch_seconds


def _if_type(event_type: EventType, value: Callable[[Event], float | None]) -> Callable[
    [Event], float | None
]:
    return lambda event: value(event) if event.type == event_type else None


def _if_channel(channel: Channel, value: Callable[[Event], float | None]) -> Callable[
    [Event], float | None
]:
    return lambda event: value(event) if event.channel == channel else None


def _channel_features(channel: Channel) -> list[FeatureDef]:
    return [
        FeatureDef(
            name=f"ch_{channel}_count",
            family="channels",
            description=f"interactions on the {channel} channel",
            op=Op.ADD,
            contribution=_if_channel(channel, _always_one),
            integer=True,
        ),
        FeatureDef(
            name=f"ch_{channel}_last_ts",
            family="channels",
            description=f"event time of the last interaction on {channel} (Unix s, 0 = never)",
            op=Op.MAX,
            contribution=_if_channel(channel, _event_time),
        ),
    ]


FEATURES: tuple[FeatureDef, ...] = (
    FeatureDef(
        name="event_count",
        family="activity",
        description="interaction events of any type on any channel",
        op=Op.ADD,
        contribution=_always_one,
        integer=True,
    ),
    FeatureDef(
        name="first_seen_ts",
        family="activity",
        description="event time of the earliest event (Unix s, 0 = never seen)",
        op=Op.MIN,
        contribution=_event_time,
    ),
    FeatureDef(
        name="last_seen_ts",
        family="activity",
        description="event time of the latest event (Unix s, 0 = never seen)",
        op=Op.MAX,
        contribution=_event_time,
    ),
    FeatureDef(
        name="txn_count",
        family="transactions",
        description="card and POS transactions, lifetime",
        op=Op.ADD,
        contribution=_if_type(EventType.TRANSACTION, _always_one),
        integer=True,
    ),
    FeatureDef(
        name="txn_amount",
        family="transactions",
        description="amount spent in transactions, lifetime",
        op=Op.ADD,
        contribution=_if_type(EventType.TRANSACTION, lambda event: event.amount),
    ),
    *(feature for channel in Channel for feature in _channel_features(channel)),
)

FEATURES_BY_NAME: dict[str, FeatureDef] = {feature.name: feature for feature in FEATURES}


@dataclass(frozen=True, slots=True)
class Update:
    """One field operation an event implies."""

    field: str
    op: Op
    value: float


def updates_for(event: Event) -> list[Update]:
    """Every feature change one event implies, in registry order."""
    updates = []
    for feature in FEATURES:
        value = feature.contribution(event)
        if value is not None:
            updates.append(Update(feature.name, feature.op, value))
    return updates


def decode_features(stored: dict[str, str]) -> dict[str, float | int]:
    """Typed feature values from a stored hash, with defaults for what is not stored."""
    values: dict[str, float | int] = {}
    for feature in FEATURES:
        raw = stored.get(feature.name)
        value = float(raw) if raw is not None else feature.default
        values[feature.name] = int(value) if feature.integer else value
    return values


def default_features() -> dict[str, float | int]:
    """The feature values of a customer never seen."""
    return decode_features({})
