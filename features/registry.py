"""The feature registry: every customer feature declared once.

A feature says what it means, its default, and — declaratively — which events update it
and how. `updates_for(event)` is the pure Python reading of those declarations; the
store compiles the same declarations into its Redis script. The profile API, the CEL
rule variables and the model inputs are all derived from `FEATURES`.

This is the small starter set (activity, transactions, channels); the full retail-CRM
set is tracked in its own issue.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from features.events import Channel, Event, EventType


class Op(StrEnum):
    """How an event changes a feature's stored value."""

    ADD = "add"  # sum of the event's contributions (counts, amounts)
    MAX = "max"  # latest event time wins, whatever the arrival order
    MIN = "min"  # earliest event time wins, whatever the arrival order


#: Amounts are kept as whole ten-thousandths, so that sums are exact whatever the order
#: in which events arrive (float addition is not associative; integer addition is).
AMOUNT_SCALE = 10_000


class Source(StrEnum):
    """What an event contributes to a feature it touches."""

    ONE = "one"  # counts
    EVENT_TIME = "event_time"  # Unix seconds of `ts`
    AMOUNT = "amount"  # the event's amount, stored in units of 1/AMOUNT_SCALE


@dataclass(frozen=True, slots=True)
class FeatureDef:
    """One customer feature: its meaning and, declaratively, how events update it.

    An event touches the feature when its type is in `event_types` (None: any type) and
    its channel is `channel` (None: any channel); it then contributes its `source` value,
    combined with the stored value by `op`. Being declarative, the same definition
    drives the Python reference (`contribution`) and the Redis script (features.store).
    """

    name: str
    family: str
    description: str
    op: Op
    source: Source
    event_types: frozenset[EventType] | None = None
    channel: Channel | None = None
    integer: bool = False
    default: float = 0.0

    def touches(self, event: Event) -> bool:
        return (self.event_types is None or event.type in self.event_types) and (
            self.channel is None or event.channel == self.channel
        )

    def contribution(self, event: Event) -> float | None:
        """What the event adds (ADD) or proposes (MAX/MIN); None if it does not touch it."""
        if not self.touches(event):
            return None
        if self.source is Source.ONE:
            return 1.0
        if self.source is Source.EVENT_TIME:
            return event.epoch_seconds
        return event.amount


def _channel_features(channel: Channel) -> list[FeatureDef]:
    return [
        FeatureDef(
            name=f"ch_{channel}_count",
            family="channels",
            description=f"interactions on the {channel} channel",
            op=Op.ADD,
            source=Source.ONE,
            channel=channel,
            integer=True,
        ),
        FeatureDef(
            name=f"ch_{channel}_last_ts",
            family="channels",
            description=f"event time of the last interaction on {channel} (Unix s, 0 = never)",
            op=Op.MAX,
            source=Source.EVENT_TIME,
            channel=channel,
        ),
    ]


FEATURES: tuple[FeatureDef, ...] = (
    FeatureDef(
        name="event_count",
        family="activity",
        description="interaction events of any type on any channel",
        op=Op.ADD,
        source=Source.ONE,
        integer=True,
    ),
    FeatureDef(
        name="first_seen_ts",
        family="activity",
        description="event time of the earliest event (Unix s, 0 = never seen)",
        op=Op.MIN,
        source=Source.EVENT_TIME,
    ),
    FeatureDef(
        name="last_seen_ts",
        family="activity",
        description="event time of the latest event (Unix s, 0 = never seen)",
        op=Op.MAX,
        source=Source.EVENT_TIME,
    ),
    FeatureDef(
        name="txn_count",
        family="transactions",
        description="card and POS transactions, lifetime",
        op=Op.ADD,
        source=Source.ONE,
        event_types=frozenset({EventType.TRANSACTION}),
        integer=True,
    ),
    FeatureDef(
        name="txn_amount",
        family="transactions",
        description="amount spent in transactions, lifetime",
        op=Op.ADD,
        source=Source.AMOUNT,
        event_types=frozenset({EventType.TRANSACTION}),
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
        if raw is None:
            value = feature.default
        elif feature.source is Source.AMOUNT:
            value = round(float(raw)) / AMOUNT_SCALE
        else:
            value = float(raw)
        values[feature.name] = int(value) if feature.integer else value
    return values


def default_features() -> dict[str, float | int]:
    """The feature values of a customer never seen."""
    return decode_features({})
