"""Event schema v1: what is accepted, and rejections that name the bad field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from engine.core.settings import MIN_MESSAGE_BYTES
from features.events import (
    MAX_ATTR_NAME_CHARS,
    MAX_ATTR_TEXT_CHARS,
    MAX_ATTRS,
    Channel,
    Event,
    EventType,
    Rejection,
    decode_message,
    encode_envelope,
    iter_customer_groups,
    parse_event,
)


def raw(**overrides: Any) -> dict[str, Any]:
    """A valid transaction as it arrives on the wire, with `overrides` applied."""
    item: dict[str, Any] = {
        "event_id": "e1",
        "customer_id": "C1",
        "type": "transaction",
        "channel": "pos",
        "ts": "2026-01-05T09:30:00Z",
        "amount": 12.5,
    }
    item.update(overrides)
    return {key: value for key, value in item.items() if value is not None}


def rejection_of(item: dict[str, Any]) -> Rejection:
    parsed = parse_event(item, index=4)
    assert isinstance(parsed, Rejection), f"accepted: {parsed!r}"
    assert parsed.index == 4
    return parsed


def test_a_valid_event_is_accepted() -> None:
    event = parse_event(raw())
    assert isinstance(event, Event)
    assert event.type is EventType.TRANSACTION
    assert event.channel is Channel.POS
    assert event.amount == 12.5
    assert event.ts == datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("overrides", "reason_start", "reason_part"),
    [
        pytest.param({"channel": "fax"}, "channel: ", "'branch'", id="bad-channel"),
        pytest.param({"type": "purchase"}, "type: ", "'transaction'", id="bad-type"),
        pytest.param({"ts": "2026-01-05T09:30:00"}, "ts: ", "timezone", id="naive-ts"),
        pytest.param({"ts": "yesterday"}, "ts: ", "datetime", id="garbage-ts"),
        pytest.param({"amount": -0.01}, "amount: ", "zero or positive", id="negative-amount"),
        pytest.param({"amount": 2e12}, "amount: ", "at most 1,000,000,000,000", id="huge-amount"),
        pytest.param({"amount": float("nan")}, "amount: ", "finite", id="nan-amount"),
        pytest.param({"amount": float("inf")}, "amount: ", "finite", id="inf-amount"),
        pytest.param({"amount": True}, "amount: ", "valid number", id="boolean-amount"),
        pytest.param({"amount": "12.5"}, "amount: ", "valid number", id="string-amount"),
        pytest.param({"customer_id": "{C1}"}, "customer_id: ", "pattern", id="braces-customer"),
        pytest.param({"customer_id": "C 1"}, "customer_id: ", "pattern", id="space-customer"),
        pytest.param({"event_id": ""}, "event_id: ", "pattern", id="empty-event-id"),
        pytest.param({"colour": "red"}, "colour: ", "Extra inputs", id="unknown-field"),
    ],
)
def test_a_bad_field_is_named_in_the_rejection(
    overrides: dict[str, Any], reason_start: str, reason_part: str
) -> None:
    rejection = rejection_of(raw(**overrides))
    assert rejection.reason.startswith(reason_start), rejection.reason
    assert reason_part in rejection.reason
    assert rejection.event_id == raw(**overrides)["event_id"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        pytest.param({"type": "deposit", "amount": None}, "amount", id="monetary-no-amount"),
        pytest.param({"type": "salary", "amount": None}, "amount", id="salary-no-amount"),
        pytest.param({"type": "offer_accepted", "amount": None}, "action_id", id="offer-no-action"),
        pytest.param(
            {"type": "offer_impression", "amount": None}, "action_id", id="impression-no-action"
        ),
        pytest.param(
            {"type": "product_opened", "amount": None}, "product", id="product-no-product"
        ),
    ],
)
def test_a_field_required_by_the_type_is_named(overrides: dict[str, Any], named: str) -> None:
    rejection = rejection_of(raw(**overrides))
    event_type = overrides["type"]
    assert f"{named} is required for events of type '{event_type}'" in rejection.reason


def test_every_bad_field_is_listed() -> None:
    rejection = rejection_of(raw(channel="fax", amount=-1, colour="red"))
    assert rejection.reason.startswith("channel: ")
    assert "; amount: Value error, must be zero or positive" in rejection.reason
    assert "; colour: Extra inputs are not permitted" in rejection.reason


def test_a_rejection_without_a_string_event_id_has_none() -> None:
    assert rejection_of(raw(event_id=42)).event_id is None


def test_the_fields_required_by_the_type_make_it_valid() -> None:
    offer = parse_event(raw(type="offer_declined", amount=None, action_id="gold_card"))
    product = parse_event(raw(type="product_view", amount=None, product="mortgage"))
    login = parse_event(raw(type="login", amount=None, channel="mobile"))
    assert isinstance(offer, Event)
    assert offer.action_id == "gold_card"
    assert isinstance(product, Event)
    assert product.product == "mortgage"
    assert isinstance(login, Event)
    assert login.amount is None


def test_a_zero_amount_is_accepted() -> None:
    event = parse_event(raw(amount=0))
    assert isinstance(event, Event)
    assert event.amount == 0.0


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-01-05T09:30:00Z", datetime(2026, 1, 5, 9, 30, tzinfo=UTC)),
        (
            "2026-01-05T11:30:00+02:00",
            datetime(2026, 1, 5, 11, 30, tzinfo=timezone(timedelta(hours=2))),
        ),
        (1767605400, datetime(2026, 1, 5, 9, 30, tzinfo=UTC)),
        (1767605400.25, datetime(2026, 1, 5, 9, 30, 0, 250_000, tzinfo=UTC)),
    ],
)
def test_ts_accepts_aware_iso_and_unix_seconds(ts: str | float, expected: datetime) -> None:
    event = parse_event(raw(ts=ts))
    assert isinstance(event, Event)
    assert event.ts == expected
    assert event.ts.tzinfo is not None
    assert event.epoch_seconds == expected.timestamp()


def test_iso_with_offset_and_utc_give_the_same_epoch() -> None:
    utc = parse_event(raw(ts="2026-01-05T09:30:00Z"))
    offset = parse_event(raw(ts="2026-01-05T11:30:00+02:00"))
    assert isinstance(utc, Event)
    assert isinstance(offset, Event)
    assert utc.epoch_seconds == offset.epoch_seconds == 1767605400.0


def test_a_copy_with_another_time_has_its_own_epoch_seconds() -> None:
    event = parse_event(raw(ts=1_767_605_400))
    assert isinstance(event, Event)
    assert event.epoch_seconds == 1_767_605_400.0  # computed, and kept, before the copy
    later = event.model_copy(update={"ts": datetime(2026, 1, 6, tzinfo=UTC)})
    assert later.epoch_seconds == datetime(2026, 1, 6, tzinfo=UTC).timestamp()
    assert event.model_copy() == event


def test_decode_message_of_a_single_object() -> None:
    item = raw()
    events, rejections, items = decode_message(orjson.dumps(item))
    assert [event.event_id for event in events] == ["e1"]
    assert rejections == []
    assert items == [item]


def test_decode_message_of_an_envelope_keeps_the_neighbours_of_a_bad_item() -> None:
    good_before = raw(event_id="e0", customer_id="A")
    bad = raw(event_id="e1", customer_id="B", channel="fax")
    good_after = raw(event_id="e2", customer_id="C")
    payload = orjson.dumps([good_before, bad, good_after])
    events, rejections, items = decode_message(payload)
    assert [event.event_id for event in events] == ["e0", "e2"]
    assert len(rejections) == 1
    assert rejections[0].index == 1
    assert rejections[0].event_id == "e1"
    assert rejections[0].reason.startswith("channel: ")
    assert items[rejections[0].index] == bad  # the raw item, for the dead-letter topic


def test_decode_message_of_invalid_json() -> None:
    payload = b'{"event_id": "e1", '
    events, rejections, items = decode_message(payload)
    assert events == []
    assert len(rejections) == 1
    assert rejections[0].index == 0
    assert rejections[0].event_id is None
    assert rejections[0].reason.startswith("message is not valid JSON")
    assert items == [payload]


def test_decode_message_rejects_a_non_object_item() -> None:
    payload = orjson.dumps([raw(event_id="e0"), 42, "text", raw(event_id="e3")])
    events, rejections, _ = decode_message(payload)
    assert [event.event_id for event in events] == ["e0", "e3"]
    assert [(rejection.index, rejection.reason) for rejection in rejections] == [
        (1, "event must be a JSON object, got int"),
        (2, "event must be a JSON object, got str"),
    ]


def test_rejection_to_dict() -> None:
    assert Rejection(3, "e9", "why").to_dict() == {"index": 3, "event_id": "e9", "reason": "why"}


def test_to_wire_round_trips() -> None:
    event = Event.model_validate(
        raw(
            type="offer_accepted",
            amount=None,
            action_id="gold_card",
            decision_id="d-1",
            ts="2026-01-05T11:30:00.123456+02:00",
            attrs={"placement": "home", "slot": 2, "score": 0.5, "first": True},
        )
    )
    wire = event.to_wire()
    assert "amount" not in wire  # unset optional fields are left out
    assert "product" not in wire
    assert Event.model_validate(wire) == event
    assert Event.model_validate(orjson.loads(orjson.dumps(wire))) == event
    assert Event.model_validate(wire).attrs == {
        "placement": "home",
        "slot": 2,
        "score": 0.5,
        "first": True,
    }


def test_encode_envelope_decodes_to_the_same_events() -> None:
    events = [Event.model_validate(raw(event_id=f"e{i}", amount=float(i))) for i in range(3)]
    decoded, rejections, _ = decode_message(encode_envelope(events))
    assert rejections == []
    assert decoded == events


def test_iter_customer_groups_keeps_per_customer_order() -> None:
    order = ["A", "B", "A", "C", "B", "A"]
    events = [
        Event.model_validate(raw(event_id=f"e{i}", customer_id=customer))
        for i, customer in enumerate(order)
    ]
    groups = [
        (customer, [event.event_id for event in group])
        for customer, group in iter_customer_groups(events)
    ]
    assert groups == [("A", ["e0", "e2", "e5"]), ("B", ["e1", "e4"]), ("C", ["e3"])]


# --- event times ahead of the receiving clock --------------------------------------------

#: The receiving clock in these tests: 2026-01-05T09:30:00Z, the time of `raw()`'s event.
NOW = 1_767_605_400.0


def test_an_event_ahead_of_the_clock_by_more_than_the_skew_is_rejected_with_the_limit() -> None:
    parsed = parse_event(raw(ts="2099-01-01T00:00:00Z"), index=2, max_ahead_s=300, now=NOW)
    assert isinstance(parsed, Rejection)
    assert (parsed.index, parsed.event_id) == (2, "e1")
    ahead = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp() - NOW)
    assert parsed.reason == (
        f"ts: 2099-01-01T00:00:00Z is {ahead:,} s ahead of this server's clock; at most "
        "300 s ahead is accepted (NBA_MAX_CLOCK_SKEW_S)"
    )


def test_an_event_within_the_skew_is_accepted_and_one_second_more_is_not() -> None:
    at_limit = datetime.fromtimestamp(NOW + 300, UTC).isoformat()
    past_limit = datetime.fromtimestamp(NOW + 301, UTC).isoformat()
    assert isinstance(parse_event(raw(ts=at_limit), max_ahead_s=300, now=NOW), Event)
    assert isinstance(parse_event(raw(ts=past_limit), max_ahead_s=300, now=NOW), Rejection)
    # without a bound (the default), any valid time is accepted, as before
    assert isinstance(parse_event(raw(ts="9999-12-31T23:59:59Z")), Event)


def test_the_skew_check_reads_this_process_clock_when_no_time_is_given() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=60)
    late = datetime.now(UTC) + timedelta(hours=1)
    assert isinstance(parse_event(raw(ts=soon.isoformat()), max_ahead_s=300), Event)
    rejected = parse_event(raw(ts=late.isoformat()), max_ahead_s=300)
    assert isinstance(rejected, Rejection)
    assert "ahead of this server's clock" in rejected.reason


def test_decode_message_splits_future_events_off_an_otherwise_valid_envelope() -> None:
    items = [
        raw(event_id="e0", customer_id="A"),
        raw(event_id="e1", customer_id="B", ts="2099-01-01T00:00:00Z"),
        raw(event_id="e2", customer_id="C"),
    ]
    events, rejections, decoded = decode_message(orjson.dumps(items), max_ahead_s=300, now=NOW)
    assert [event.event_id for event in events] == ["e0", "e2"]
    [rejection] = rejections
    assert (rejection.index, rejection.event_id) == (1, "e1")
    assert rejection.reason.startswith("ts: 2099-01-01T00:00:00Z is ")
    assert decoded[rejection.index] == items[1]  # the raw item, for the dead-letter topic


def test_decode_message_rejects_a_future_event_beside_an_invalid_one() -> None:
    items = [
        raw(event_id="e0", ts="2099-01-01T00:00:00Z"),
        raw(event_id="e1", channel="fax"),
        raw(event_id="e2"),
    ]
    events, rejections, _ = decode_message(orjson.dumps(items), max_ahead_s=300, now=NOW)
    assert [event.event_id for event in events] == ["e2"]
    assert [(r.index, r.reason.split(":")[0]) for r in rejections] == [(0, "ts"), (1, "channel")]


def test_decode_message_of_a_single_future_event() -> None:
    payload = orjson.dumps(raw(ts="2099-01-01T00:00:00Z"))
    events, rejections, _ = decode_message(payload, max_ahead_s=0, now=NOW)
    assert events == []
    assert [rejection.event_id for rejection in rejections] == ["e1"]
    assert "at most 0 s ahead" in rejections[0].reason


def test_decode_message_keeps_an_envelope_of_present_events_whole() -> None:
    items = [raw(event_id=f"e{i}", ts=NOW - i) for i in range(5)]
    events, rejections, _ = decode_message(orjson.dumps(items), max_ahead_s=300, now=NOW)
    assert rejections == []
    assert [event.event_id for event in events] == [f"e{i}" for i in range(5)]


# --- attributes are bounded, so that any valid event fits in one message -----------------


def largest_event() -> dict[str, Any]:
    """The largest valid event on the wire: every id at its longest, 32 attributes with the
    longest names and texts, every character one that JSON must escape (`\\u0001`)."""
    escaped = "\x01"
    return raw(
        event_id="e" * 64,
        customer_id="c" * 64,
        type="offer_accepted",
        channel="call_centre",
        action_id="a" * 64,
        decision_id="d" * 64,
        product="p" * 64,
        amount=999_999_999_999.9999,
        attrs={
            f"{index:02d}" + escaped * (MAX_ATTR_NAME_CHARS - 2): escaped * MAX_ATTR_TEXT_CHARS
            for index in range(MAX_ATTRS)
        },
    )


def test_the_largest_valid_event_fits_in_the_smallest_message_allowed() -> None:
    event = Event.model_validate(largest_event())
    assert len(event.attrs) == MAX_ATTRS
    assert len(orjson.dumps(event.to_wire())) + 2 <= MIN_MESSAGE_BYTES  # as an envelope


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"note": "x" * 257}, "attrs.note: a text of 257 characters; at most 256"),
        ({"k" * 65: 1}, "attrs: the name 'kkkkkkkkkkkkkkkk'… has 65 characters; at most 64"),
        ({"big": 2**63}, "attrs.big: an integer beyond 64 bits"),
    ],
)
def test_attributes_beyond_their_caps_are_refused_by_name(
    attrs: dict[str, Any], reason: str
) -> None:
    assert rejection_of(raw(attrs=attrs)).reason == f"event: Value error, {reason}"
