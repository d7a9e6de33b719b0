"""The feature registry: what each event changes, decoding, and a contract over FEATURES."""

from __future__ import annotations

from typing import Any

import pytest

from features.events import Channel, Event
from features.registry import (
    FEATURES,
    FEATURES_BY_NAME,
    FeatureDef,
    Op,
    decode_features,
    default_features,
    updates_for,
)

TS = 1767605400.0  # 2026-01-05T09:30:00Z


def event(**fields: Any) -> Event:
    base: dict[str, Any] = {"event_id": "e1", "customer_id": "C1", "ts": TS}
    return Event.model_validate(base | fields)


def as_table(updates: list[Any]) -> dict[str, tuple[Op, float]]:
    table = {update.field: (update.op, update.value) for update in updates}
    assert len(table) == len(updates), "a feature was updated twice by one event"
    return table


def test_a_pos_transaction_updates_activity_transactions_and_its_channel() -> None:
    updates = updates_for(event(type="transaction", channel="pos", amount=12.5))
    assert as_table(updates) == {
        "event_count": (Op.ADD, 1.0),
        "first_seen_ts": (Op.MIN, TS),
        "last_seen_ts": (Op.MAX, TS),
        "txn_count": (Op.ADD, 1.0),
        "txn_amount": (Op.ADD, 12.5),
        "ch_pos_count": (Op.ADD, 1.0),
        "ch_pos_last_ts": (Op.MAX, TS),
    }


def test_updates_come_in_registry_order() -> None:
    updates = updates_for(event(type="transaction", channel="pos", amount=12.5))
    order = [feature.name for feature in FEATURES]
    positions = [order.index(update.field) for update in updates]
    assert positions == sorted(positions)


def test_a_login_has_no_transaction_updates() -> None:
    table = as_table(updates_for(event(type="login", channel="mobile")))
    assert set(table) == {
        "event_count",
        "first_seen_ts",
        "last_seen_ts",
        "ch_mobile_count",
        "ch_mobile_last_ts",
    }


def test_a_monetary_event_that_is_not_a_transaction_is_not_counted_as_one() -> None:
    table = as_table(updates_for(event(type="deposit", channel="atm", amount=500.0)))
    assert "txn_count" not in table
    assert "txn_amount" not in table
    assert table["ch_atm_count"] == (Op.ADD, 1.0)


def test_decode_features_of_nothing_is_the_defaults() -> None:
    decoded = decode_features({})
    assert decoded == default_features()
    assert list(decoded) == [feature.name for feature in FEATURES]
    assert all(decoded[feature.name] == feature.default for feature in FEATURES)


def test_decode_features_types_integers_and_floats() -> None:
    # amounts are stored in whole 1/AMOUNT_SCALE units: "125000" is 12.5
    decoded = decode_features(
        {"event_count": "3", "txn_count": "2.0", "txn_amount": "125000", "last_seen_ts": str(TS)}
    )
    assert decoded["event_count"] == 3
    assert type(decoded["event_count"]) is int
    assert decoded["txn_count"] == 2
    assert type(decoded["txn_count"]) is int
    assert decoded["txn_amount"] == 12.5
    assert type(decoded["txn_amount"]) is float
    assert decoded["last_seen_ts"] == TS
    assert decoded["ch_pos_count"] == 0
    assert type(decoded["ch_pos_count"]) is int


def test_decode_features_ignores_fields_it_does_not_know() -> None:
    assert decode_features({"retired_feature": "7"}) == default_features()


def test_feature_names_are_unique() -> None:
    names = [feature.name for feature in FEATURES]
    assert len(names) == len(set(names))
    assert set(FEATURES_BY_NAME) == set(names)


@pytest.mark.parametrize("channel", list(Channel), ids=str)
def test_every_channel_has_its_two_features(channel: Channel) -> None:
    count = FEATURES_BY_NAME[f"ch_{channel.value}_count"]
    last = FEATURES_BY_NAME[f"ch_{channel.value}_last_ts"]
    assert (count.op, count.integer) == (Op.ADD, True)
    assert (last.op, last.integer) == (Op.MAX, False)
    touching = event(type="login", channel=channel.value)
    assert count.contribution(touching) == 1.0
    assert last.contribution(touching) == TS
    other = next(other for other in Channel if other != channel)
    assert count.contribution(event(type="login", channel=other.value)) is None


@pytest.mark.parametrize("feature", FEATURES, ids=lambda feature: feature.name)
def test_feature_contract(feature: FeatureDef) -> None:
    assert feature.name.isidentifier()  # usable as a CEL variable
    assert feature.family
    assert feature.description.strip()
    assert isinstance(feature.default, int | float)
    assert not isinstance(feature.default, bool)
    assert isinstance(feature.op, Op)
    if feature.integer:
        assert feature.op is Op.ADD
        assert float(feature.default).is_integer()
    for sample in (
        event(type="transaction", channel="pos", amount=3.5),
        event(type="login", channel="mobile"),
        event(type="offer_accepted", channel="web", action_id="gold"),
    ):
        value = feature.contribution(sample)
        assert value is None or isinstance(value, float | int)
