"""Compiles the registry's stored features into one plain Python function per event sort.

Applying an event must cost only the features it touches: a generic loop over feature
objects costs about a microsecond of interpreter overhead per feature touched, most of
an event's budget at tens of thousands of events per second. So, once per process, each
(event type, channel) gets a function whose body is one statement per feature it
touches, written out from the declarations — `source_for(...)` shows it. Nothing a user
writes reaches this code: names come from the registry and values from `repr`.

A compiled function is called as `apply(slots, ts, units, key_channel, key_product,
key_action, attrs, age)`, `age` being the event's time past the state's decay reference
(seconds); it weighs the event by 2^(age / half-life) once per distinct half-life among
the decayed features it touches, the half-lives being written into the source. The
weight cannot overflow, and the function does not check it (a check per event is what
this module exists to avoid): `FeatureFold.apply` moves the reference forward before
age / half-life passes `MAX_DECAY_EXPONENT`, and a negative age only makes it smaller. A
feature's `where` condition is written into the fold of the one event type it concerns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from features.config import SECONDS_PER_DAY
from features.events import Channel, EventType
from features.registry import Key, Kind, StoredFeature, Value

ApplyFunction = Callable[..., None]
_PARAMETERS = "slots, ts, units, channel, product, action, attrs, age"
_KEY_VARIABLE = {Key.CHANNEL: "channel", Key.PRODUCT: "product", Key.ACTION: "action"}


def attribute_number(value: Any) -> float | int | None:
    """A numeric attribute's value for a feature; booleans count as 1/0, others as absent."""
    if isinstance(value, bool):
        return int(value)
    return value if isinstance(value, int | float) else None


def _value_expression(feature: StoredFeature) -> str:
    if feature.value is Value.ONE:
        return "1"
    if feature.value is Value.AMOUNT:
        return "units"
    return "value"


def _statements(index: int, feature: StoredFeature, weight: str | None) -> list[str]:
    """The statements folding an event into one feature's slot `slots[index]`; `weight`
    names the variable holding a decayed feature's weight."""
    value = _value_expression(feature)
    if feature.kind is Kind.DECAYED:
        value = f"{value} * {weight}"
    slot = f"slots[{index}]"
    if feature.kind is Kind.DAILY:
        return [f"{slot}.add(ts // {SECONDS_PER_DAY}, {value})"]
    if feature.key is None:
        return {
            Kind.COUNT: [f"{slot} += {value}"],
            Kind.SUM: [f"{slot} += {value}"],
            Kind.DECAYED: [f"{slot} += {value}"],
            Kind.FIRST_TIME: [f"if not {slot} or ts < {slot}: {slot} = ts"],
            Kind.LAST_TIME: [f"if ts > {slot}: {slot} = ts"],
            Kind.LATEST: [
                f"latest = (ts, {value})",
                f"if {slot} is None or latest > {slot}: {slot} = latest",
            ],
        }[feature.kind]
    key = _KEY_VARIABLE[feature.key]
    keyed = {
        Kind.COUNT: [f"values[{key}] = values.get({key}, 0) + {value}"],
        Kind.SUM: [f"values[{key}] = values.get({key}, 0) + {value}"],
        Kind.DECAYED: [f"values[{key}] = values.get({key}, 0.0) + {value}"],
        Kind.FIRST_TIME: [
            f"known = values.get({key})",
            f"if known is None or ts < known: values[{key}] = ts",
        ],
        Kind.LAST_TIME: [f"if ts > values.get({key}, 0): values[{key}] = ts"],
        Kind.LATEST: [
            f"latest, known = (ts, {value}), values.get({key})",
            f"if known is None or latest > known: values[{key}] = latest",
        ],
    }[feature.kind]
    return [f"values = {slot}", *keyed]


def _guards(feature: StoredFeature, index: int, event_type: EventType) -> list[str]:
    """Conditions under which the feature's statements run for events of `event_type` (all
    must hold)."""
    guards = []
    where = feature.where
    if where is not None and where.event_type is event_type:
        guards.append(f"attrs.get({where.attr!r}) {'!=' if where.negate else '=='} {where.value!r}")
    if feature.key is not None and feature.keys is not None:
        guards.append(f"{_KEY_VARIABLE[feature.key]} in keys_{index}")
    if feature.value is Value.ATTR:
        guards.append(f"(value := attribute_number(attrs.get({feature.attr!r}))) is not None")
    return guards


def source_for(
    stored: Sequence[StoredFeature],
    event_type: EventType,
    channel: Channel,
    inverse_half_lives: Mapping[str, float],
) -> tuple[str, dict[str, Any]]:
    """The source of the apply function for one event sort, and the names it uses.

    `inverse_half_lives` gives 1 / half-life in seconds for each decay group.
    """
    namespace: dict[str, Any] = {
        "attribute_number": attribute_number,
    }
    body: list[str] = []
    touched = [
        (index, feature)
        for index, feature in enumerate(stored)
        if (feature.event_types is None or event_type in feature.event_types)
        and (feature.channel is None or feature.channel is channel)
    ]
    # one weight per distinct half-life (by default, four groups share one)
    rates = sorted({inverse_half_lives[f.decay] for _, f in touched if f.decay is not None})
    for number, rate in enumerate(rates):
        body.append(f"weight_{number} = 2.0 ** (age * {rate!r})")
    for index, feature in touched:
        namespace[f"keys_{index}"] = frozenset(feature.keys or ())
        weight = None
        if feature.decay is not None:
            weight = f"weight_{rates.index(inverse_half_lives[feature.decay])}"
        statements = _statements(index, feature, weight)
        guards = _guards(feature, index, event_type)
        body.append(f"# {feature.name}")
        if guards:
            body.append(f"if {' and '.join(guards)}:")
            body += [f"    {statement}" for statement in statements]
        else:
            body += statements
    lines = [f"def apply({_PARAMETERS}):", *(f"    {line}" for line in body or ["pass"])]
    return "\n".join(lines) + "\n", namespace


def compile_plans(
    stored: Sequence[StoredFeature], inverse_half_lives: Mapping[str, float]
) -> dict[tuple[EventType, Channel], ApplyFunction]:
    """One compiled apply function per (event type, channel)."""
    plans: dict[tuple[EventType, Channel], ApplyFunction] = {}
    for event_type in EventType:
        for channel in Channel:
            source, namespace = source_for(stored, event_type, channel, inverse_half_lives)
            code = compile(source, f"<features: {event_type.value} on {channel.value}>", "exec")
            exec(code, namespace)  # registry-generated source only; see the module docstring
            plans[event_type, channel] = namespace["apply"]
    return plans
