"""Derived features: computed when a customer is read, from stored values and the read time.

Recency, windows, tiers and stages depend on *when* one asks, so they are computed at
read time rather than stored: a customer who stops coming becomes `at_risk` and then
`dormant` without any event. Each is declared here once, with its family and
description; `FEATURES` lists every flat feature (stored then derived) for the profile
API, the rule variables and the docs.

RFM follows the customer-lifetime-value literature (e.g. the `lifetimes` library's
`summary_data_from_transaction_data` with daily periods): `clv_frequency` is the number
of repeat purchase days (distinct days minus one), `clv_recency_days` the days between
the first and the last purchase day, `clv_t_days` the days from the first purchase day
to the read day, `clv_monetary` the mean amount of the repeat purchase days.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from features.config import DEFAULT_LOYALTY_TIERS, SECONDS_PER_DAY
from features.registry import (
    PRODUCTS,
    STORED,
    DerivedFeature,
    Key,
    Kind,
    Reading,
    daily_names,
)

#: Channels whose use is a customer's choice (outbound channels say little of preference).
_PREFERENCE_CHANNELS = ("branch", "atm", "mobile", "web", "call_centre", "pos", "social")
RFM_SCORES = 5  # quintiles


def _days_since(ts: float, now: float) -> float:
    return max(0.0, (now - ts) / SECONDS_PER_DAY)


def _today(reading: Reading) -> int:
    return int(reading.now // SECONDS_PER_DAY)


def _clv_frequency(r: Reading) -> int:
    return max(0, int(r.values["txn_days_count"]) - 1)


def _first_purchase_day(r: Reading) -> int | None:
    first = r.values["txn_first_ts"]
    return int(first // SECONDS_PER_DAY) if first else None


def _clv_recency_days(r: Reading) -> int:
    first = _first_purchase_day(r)
    return 0 if first is None else int(r.values["txn_last_ts"] // SECONDS_PER_DAY) - first


def _clv_t_days(r: Reading) -> int:
    first = _first_purchase_day(r)
    # a first purchase ahead of the read day (kept from before event times were bounded) is
    # as old as today's, as `_days_since` counts it, not a negative age
    return 0 if first is None else max(0, _today(r) - first)


def _clv_monetary(r: Reading) -> float:
    frequency = r.values["clv_frequency"]
    if not frequency:
        return 0.0
    return (r.values["txn_amount"] - r.values["txn_first_day_amount"]) / frequency


def _purchase_recency_days(r: Reading) -> float:
    last = r.values["txn_last_ts"]
    return round(_days_since(last, r.now), 2) if last else -1.0


def score(value: float, edges: tuple[float, ...]) -> int:
    """1 + how many quantile edges `value` exceeds: 1..len(edges)+1."""
    return 1 + sum(1 for edge in edges if value > edge)


def _rfm_score(dimension: str, value_name: str, *, lower_is_better: bool = False) -> Any:
    def compute(r: Reading) -> int:
        edges = r.rfm_edges.get(dimension)
        if not edges or not r.values["txn_count"]:
            return 0
        result = score(r.values[value_name], edges)
        return RFM_SCORES + 1 - result if lower_is_better else result

    return compute


def _value_tier(r: Reading) -> str:
    """high / medium / low / potential from the RFM scores (see docs/features.md)."""
    recency, frequency, monetary = (r.values[f"rfm_{d}_score"] for d in "rfm")
    if not r.rfm_edges:
        return "unscored"
    if not r.values["txn_count"]:
        recently_seen = _days_since(r.values["last_active_ts"], r.now)
        return "potential" if recently_seen < r.config.lifecycle.at_risk_after_days else "low"
    value = (frequency + monetary) / 2
    if value >= 4 and recency >= 3:
        return "high"
    if value >= 2.5:
        return "medium"
    return "potential" if recency >= 4 else "low"


def _held(r: Reading, product: str) -> bool:
    return r.values[f"opened_{product}_count"] > r.values[f"closed_{product}_count"]


def _lifecycle_stage(r: Reading) -> str:
    """prospect / new / active / at_risk / dormant / churned (thresholds: FeatureConfig)."""
    thresholds = r.config.lifecycle
    closed_everything = any(r.values[f"opened_{p}_count"] for p in PRODUCTS) and not any(
        _held(r, p) for p in PRODUCTS
    )
    if closed_everything:
        return "churned"
    if not r.values["txn_count"]:
        return "prospect"
    if _days_since(r.values["txn_first_ts"], r.now) < thresholds.new_days:
        return "new"
    idle = _days_since(r.values["last_active_ts"], r.now)
    if idle >= thresholds.churned_after_days:
        return "churned"
    if idle >= thresholds.dormant_after_days:
        return "dormant"
    if idle >= thresholds.at_risk_after_days:
        return "at_risk"
    return "active"


def _preferred_channel(r: Reading) -> str:
    weights = {c: r.values[f"ch_{c}_decayed_count"] for c in _PREFERENCE_CHANNELS}
    best = max(weights, key=lambda channel: (weights[channel], channel))
    return best if weights[best] > 0 else "none"


def _loyalty_points(r: Reading) -> float:
    return r.values["loyalty_earned_amount"] - r.values["loyalty_redeemed_amount"]


def _loyalty_tier(r: Reading) -> str:
    points = r.values["loyalty_points"]
    tier = r.config.loyalty_tiers[0][0]
    for name, minimum in r.config.loyalty_tiers:
        if points >= minimum:
            tier = name
    return tier


def _holding(product: str) -> DerivedFeature:
    return DerivedFeature(
        f"holds_{product}",
        "products",
        f"1 if more {product} products were opened than closed",
        lambda r: int(_held(r, product)),
    )


DERIVED: tuple[DerivedFeature, ...] = (
    DerivedFeature(
        "tenure_days",
        "activity",
        "whole days since the earliest event",
        lambda r: (
            int(_days_since(r.values["first_seen_ts"], r.now)) if r.values["first_seen_ts"] else 0
        ),
    ),
    DerivedFeature(
        "clv_frequency", "rfm", "repeat purchase days (distinct days - 1)", _clv_frequency
    ),
    DerivedFeature(
        "clv_recency_days", "rfm", "days from first to last purchase day", _clv_recency_days
    ),
    DerivedFeature("clv_t_days", "rfm", "days from first purchase day to today", _clv_t_days),
    DerivedFeature("clv_monetary", "rfm", "mean amount of the repeat purchase days", _clv_monetary),
    DerivedFeature(
        "purchase_recency_days",
        "rfm",
        "days since the latest purchase (-1 = never)",
        _purchase_recency_days,
    ),
    DerivedFeature(
        "rfm_r_score",
        "rfm",
        "recency quintile 1..5 in the customer base (5 = most recent, 0 = unscored)",
        _rfm_score("r", "purchase_recency_days", lower_is_better=True),
    ),
    DerivedFeature(
        "rfm_f_score",
        "rfm",
        "decayed purchase frequency quintile 1..5 in the customer base (0 = unscored)",
        _rfm_score("f", "txn_decayed_count"),
    ),
    DerivedFeature(
        "rfm_m_score",
        "rfm",
        "decayed purchase value quintile 1..5 in the customer base (0 = unscored)",
        _rfm_score("m", "txn_decayed_amount"),
    ),
    DerivedFeature(
        "value_tier",
        "rfm",
        "high / medium / low / potential by RFM scores (unscored before the first estimate)",
        _value_tier,
        options=("unscored", "high", "medium", "low", "potential"),
    ),
    DerivedFeature(
        "lifecycle_stage",
        "activity",
        "prospect / new / active / at_risk / dormant / churned",
        _lifecycle_stage,
        options=("prospect", "new", "active", "at_risk", "dormant", "churned"),
    ),
    DerivedFeature(
        "preferred_channel",
        "channels",
        "the channel with the most decayed interactions (none if no interaction)",
        _preferred_channel,
        options=("none", *_PREFERENCE_CHANNELS),
    ),
    *(_holding(product) for product in PRODUCTS),
    DerivedFeature(
        "products_held_count",
        "products",
        "products held (opened minus closed, per product)",
        lambda r: sum(int(_held(r, p)) for p in PRODUCTS),
    ),
    DerivedFeature(
        "total_balance_amount",
        "products",
        "sum of the latest balances of all products",
        lambda r: sum(r.values[f"balance_{p}_amount"] for p in PRODUCTS),
    ),
    DerivedFeature(
        "net_flow_decayed_amount",
        "flows",
        "decayed inflow minus decayed outflow",
        lambda r: r.values["inflow_decayed_amount"] - r.values["outflow_decayed_amount"],
    ),
    DerivedFeature(
        "open_complaints_count",
        "service",
        "complaints made and not yet resolved",
        lambda r: max(0, r.values["complaints_count"] - r.values["complaints_resolved_count"]),
    ),
    DerivedFeature("loyalty_points", "loyalty", "points earned minus redeemed", _loyalty_points),
    DerivedFeature(
        "loyalty_tier",
        "loyalty",
        "tier by points balance",
        _loyalty_tier,
        options=tuple(name for name, _ in DEFAULT_LOYALTY_TIERS),
    ),
)


@dataclass(frozen=True, slots=True)
class FeatureInfo:
    """One flat feature as the profile API and the docs show it."""

    name: str
    family: str
    description: str
    categorical: bool = False


def _stored_infos() -> list[FeatureInfo]:
    infos = []
    for feature in STORED:
        if feature.key is Key.ACTION:
            continue
        if feature.kind is Kind.DAILY:
            infos += [
                FeatureInfo(name, feature.family, description)
                for name, description in daily_names(feature.name).items()
            ]
            continue
        for key in feature.flat_keys():
            infos.append(
                FeatureInfo(
                    feature.flat_name(key), feature.family, feature.description.format(key=key)
                )
            )
    return infos


FEATURES: tuple[FeatureInfo, ...] = (
    *_stored_infos(),
    *(FeatureInfo(f.name, f.family, f.description, f.categorical) for f in DERIVED),
)
#: The values of every category feature, so that a model input carries all of them.
CATEGORIES: dict[str, tuple[str, ...]] = {f.name: f.options for f in DERIVED if f.categorical}
FEATURES_BY_NAME: dict[str, FeatureInfo] = {info.name: info for info in FEATURES}
CONTACT_FEATURES: tuple[str, ...] = tuple(f.name for f in STORED if f.key is Key.ACTION)
