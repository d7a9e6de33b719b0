"""A customer's features as of a moment: flat stored values, then the derived ones.

Reading turns the compact stored state into what rules, models and people use: decayed
sums brought to `now`, windows counted back from `now`'s UTC day, amounts in currency
units, keyed features spread over their keys (`ch_mobile_count`, ...), defaults for
what was never touched, and every `DerivedFeature` in declaration order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from features.config import SECONDS_PER_DAY, WINDOWS_DAYS, FeatureConfig
from features.daily import DailyBuckets
from features.derived import CONTACT_FEATURES, DERIVED
from features.registry import AMOUNT_SCALE, Key, Kind, Reading, StoredFeature, Value
from features.state import CustomerState, FeatureFold

Features = dict[str, Any]


def default_value(feature: StoredFeature) -> Any:
    """What a never-touched feature reads as: 0 (int for counts and times), or its default."""
    if feature.kind is Kind.LATEST:
        return feature.default
    if feature.kind in (Kind.COUNT, Kind.FIRST_TIME, Kind.LAST_TIME):
        return 0
    return 0.0


@dataclass(frozen=True, slots=True)
class _FlatFeature:
    """How one stored slot reads out: its flat names (per key), scale and default."""

    index: int
    name: str
    kind: Kind
    scale: float  # what the stored number is divided by (AMOUNT_SCALE for amounts)
    default: Any
    names: tuple[tuple[str, str], ...]  # (key, flat name); ("", name) when not keyed
    keyed: bool


@lru_cache(maxsize=8)
def _read_plan(stored: tuple[StoredFeature, ...]) -> tuple[_FlatFeature, ...]:
    """The registry's stored features prepared for reading (names formatted once)."""
    plan = []
    for index, feature in enumerate(stored):
        if feature.key is Key.ACTION:
            continue
        plan.append(
            _FlatFeature(
                index=index,
                name=feature.name,
                kind=feature.kind,
                scale=AMOUNT_SCALE if feature.value is Value.AMOUNT else 1,
                default=default_value(feature),
                names=tuple((key, feature.flat_name(key)) for key in feature.flat_keys()),
                keyed=feature.key is not None,
            )
        )
    return tuple(plan)


def _daily(base: str, daily: DailyBuckets, now: float) -> Features:
    today = int(now // SECONDS_PER_DAY)
    values: Features = {}
    for days in WINDOWS_DAYS:
        count, units = daily.window(today, days)
        values[f"{base}_count_{days}d"] = count
        values[f"{base}_amount_{days}d"] = units / AMOUNT_SCALE
    values[f"{base}_days_count"] = daily.distinct_days
    values[f"{base}_first_day_amount"] = daily.first_day_units / AMOUNT_SCALE
    return values


def _readable(feature: _FlatFeature, stored: Any, factor: float) -> Any:
    """A stored value in the unit people read (currency units, valued at the read time)."""
    if stored is None:
        return feature.default
    if feature.kind is Kind.LATEST:
        stored = stored[1]
    elif factor != 1.0:
        stored *= factor
    return stored / feature.scale if feature.scale != 1 else stored


def stored_values(fold: FeatureFold, state: CustomerState, now: float) -> Features:
    """Every flat stored feature of the customer as of `now`."""
    values: Features = {}
    slots = state.slots
    for feature in _read_plan(fold.stored):
        slot = slots[feature.index]
        if feature.kind is Kind.DAILY:
            values.update(_daily(feature.name, slot, now))
            continue
        factor = (
            fold.decay_factor(state, feature.index, now) if feature.kind is Kind.DECAYED else 1.0
        )
        if not feature.keyed:
            values[feature.name] = _readable(feature, slot, factor)
            continue
        for key, name in feature.names:
            values[name] = _readable(feature, slot.get(key), factor)
    return values


def read_features(
    fold: FeatureFold,
    state: CustomerState | None,
    now: float,
    rfm_edges: Mapping[str, tuple[float, ...]] | None = None,
) -> Features:
    """All flat features (stored, then derived) of a customer; defaults when `state` is None."""
    values = stored_values(fold, state if state is not None else fold.new_state(), now)
    reading = Reading(values=values, now=now, rfm_edges=rfm_edges or {}, config=fold.config)
    for feature in DERIVED:
        values[feature.name] = feature.compute(reading)
    return values


def contact_history(fold: FeatureFold, state: CustomerState | None) -> dict[str, dict[str, int]]:
    """Per action: impressions, clicks, accepts, declines and the last shown/declined times."""
    history: dict[str, dict[str, int]] = {}
    if state is None:
        return history
    for index, feature in enumerate(fold.stored):
        if feature.name not in CONTACT_FEATURES:
            continue
        for action, value in state.slots[index].items():
            history.setdefault(action, dict.fromkeys(CONTACT_FEATURES, 0))[feature.name] = value
    return history


@lru_cache(maxsize=1)
def _default_fold() -> FeatureFold:
    return FeatureFold(FeatureConfig())


def default_features() -> Features:
    """The features of a customer never seen, with the default configuration."""
    return read_features(_default_fold(), None, now=0.0)
