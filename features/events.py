"""Event schema v1: one typed interaction event, decoded the same way by the API and the stream.

An event is what a contact point (branch, ATM, app, call centre, ...) reports about one
customer. On the wire an event is a JSON object; a Kafka message carries either one event
or a JSON array of events (an *envelope*) of customers that share a partition, so that
the worker pays Kafka's per-message cost once for many events.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum
from functools import cached_property
from operator import attrgetter
from typing import Annotated, Any, Self

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1

#: Identifiers are used inside Redis keys with a `{...}` hash tag, so braces and
#: whitespace are refused.
IDENTIFIER_PATTERN = r"^[A-Za-z0-9._:@\-]{1,64}$"


class Channel(StrEnum):
    """A contact point through which the bank or retailer meets the customer."""

    BRANCH = "branch"
    ATM = "atm"
    MOBILE = "mobile"
    WEB = "web"
    CALL_CENTRE = "call_centre"
    SMS = "sms"
    EMAIL = "email"
    SOCIAL = "social"
    POS = "pos"
    ADS = "ads"

    # hashed as its value, in C: Enum's own __hash__ is Python code, paid on every set and
    # dict lookup per event (the fold looks its function up by (type, channel))
    __hash__ = str.__hash__


class EventType(StrEnum):
    """What happened. Monetary types carry an `amount`; offer types an `action_id`."""

    __hash__ = str.__hash__  # as Channel's

    TRANSACTION = "transaction"
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    TRANSFER = "transfer"
    SALARY = "salary"
    LOGIN = "login"
    PAGE_VIEW = "page_view"
    PRODUCT_VIEW = "product_view"
    PRODUCT_OPENED = "product_opened"
    PRODUCT_CLOSED = "product_closed"
    BALANCE = "balance"  # a snapshot: `amount` is the product's balance now
    COMPLAINT = "complaint"
    COMPLAINT_RESOLVED = "complaint_resolved"
    SURVEY = "survey"  # attrs.score: satisfaction / NPS answer, 0..10
    CONSENT_UPDATE = "consent_update"  # attrs.marketing: consent to marketing on `channel`
    LOYALTY_EARNED = "loyalty_earned"  # `amount` points
    LOYALTY_REDEEMED = "loyalty_redeemed"  # `amount` points
    OFFER_IMPRESSION = "offer_impression"
    OFFER_CLICKED = "offer_clicked"
    OFFER_ACCEPTED = "offer_accepted"
    OFFER_DECLINED = "offer_declined"
    IDENTITY_LINKED = "identity_linked"  # attrs.identifier now means this customer


MONETARY_TYPES = frozenset(
    {
        EventType.TRANSACTION,
        EventType.DEPOSIT,
        EventType.WITHDRAWAL,
        EventType.TRANSFER,
        EventType.SALARY,
    }
)
#: Types whose `amount` is not money moving but a level or points.
AMOUNT_TYPES = MONETARY_TYPES | {
    EventType.BALANCE,
    EventType.LOYALTY_EARNED,
    EventType.LOYALTY_REDEEMED,
}
OFFER_TYPES = frozenset(
    {
        EventType.OFFER_IMPRESSION,
        EventType.OFFER_CLICKED,
        EventType.OFFER_ACCEPTED,
        EventType.OFFER_DECLINED,
    }
)
PRODUCT_TYPES = frozenset(
    {
        EventType.PRODUCT_VIEW,
        EventType.PRODUCT_OPENED,
        EventType.PRODUCT_CLOSED,
        EventType.BALANCE,
    }
)
#: Events the bank causes rather than the customer (an offer shown, identities linked, a
#: balance statement, a complaint closed): they do not make a customer active.
BANK_INITIATED_TYPES = frozenset(
    {
        EventType.OFFER_IMPRESSION,
        EventType.IDENTITY_LINKED,
        EventType.BALANCE,
        EventType.COMPLAINT_RESOLVED,
    }
)
MAX_SURVEY_SCORE = 10
#: The largest `amount` of one event: the stored features keep amounts as exact integers
#: of 1/10,000 units within 64 bits (features.registry.AMOUNT_SCALE), so a larger one could
#: not be stored; no retail event comes near it.
MAX_AMOUNT = 1e12
#: The optional fields an event of each type must carry.
_REQUIRED_FIELDS: dict[EventType, tuple[str, ...]] = {
    event_type: tuple(
        name
        for name, types in (
            ("amount", AMOUNT_TYPES),
            ("action_id", OFFER_TYPES),
            ("product", PRODUCT_TYPES),
        )
        if event_type in types
    )
    for event_type in EventType
}
_TYPES_WITH_REQUIRED_ATTRS = frozenset(
    {EventType.SURVEY, EventType.CONSENT_UPDATE, EventType.IDENTITY_LINKED}
)

IDENTIFIER_RE = re.compile(IDENTIFIER_PATTERN)
Identifier = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
#: Attributes are bounded so that any valid event fits in one Kafka message, whatever its
#: characters: 32 names of at most 64 characters and texts of at most 256 come to under
#: 64 KiB of JSON even if every character is escaped (engine.core.settings.MIN_MESSAGE_BYTES).
MAX_ATTRS = 32
MAX_ATTR_NAME_CHARS = 64
MAX_ATTR_TEXT_CHARS = 256
AttrValue = str | int | float | bool


class Event(BaseModel):
    """One interaction event (schema v1).

    `ts` is the event time (when it happened at the contact point), timezone-aware
    ISO-8601 or Unix seconds; features are computed by event time, not arrival time.

    >>> Event.model_validate({"event_id": "e1", "customer_id": "C1", "type": "login",
    ...     "channel": "mobile", "ts": "2026-01-05T09:30:00Z"}).channel
    <Channel.MOBILE: 'mobile'>
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier
    customer_id: Identifier
    type: EventType
    channel: Channel
    ts: AwareDatetime
    amount: float | None = Field(default=None, strict=True, allow_inf_nan=False)
    product: Identifier | None = None
    action_id: Identifier | None = None
    decision_id: Identifier | None = None
    attrs: dict[str, AttrValue] = Field(default_factory=dict, max_length=MAX_ATTRS)

    @field_validator("amount")
    @classmethod
    def _amount_in_range(cls, amount: float | None) -> float | None:
        if amount is not None and amount < 0:
            raise ValueError("must be zero or positive (the event type gives the direction)")
        if amount is not None and amount > MAX_AMOUNT:
            raise ValueError(f"must be at most {MAX_AMOUNT:,.0f}")
        return amount

    @model_validator(mode="after")
    def _complete_for_its_type(self) -> Event:
        """The fields and attributes the type needs; `ts` in UTC and `epoch_seconds` set.

        One validator for all of it: each Python validator costs a call out of
        pydantic's core per event, a noticeable share of a worker's time per event.
        """
        fields = self.__dict__
        for name in _REQUIRED_FIELDS[self.type]:
            if fields[name] is None:
                raise ValueError(f"{name} is required for events of type '{self.type}'")
        if self.attrs:
            _check_attr_sizes(self.attrs)
        if self.type in _TYPES_WITH_REQUIRED_ATTRS:
            self._check_attrs()
        # One form for every reader, whatever offset the event was sent with: the same
        # instant in the standard library's UTC.
        fields["ts"] = ts = self.ts.astimezone(UTC)
        fields["epoch_seconds"] = ts.timestamp()  # see epoch_seconds
        return self

    def _check_attrs(self) -> None:
        """The attributes some types need, so that features never guess at a missing one."""
        attrs = self.attrs
        if self.type is EventType.SURVEY:
            score = attrs.get("score")
            if isinstance(score, bool) or not isinstance(score, int | float):
                raise ValueError("attrs.score (a number 0..10) is required for a survey")
            if not 0 <= score <= MAX_SURVEY_SCORE:
                raise ValueError(f"attrs.score must be within 0..10, got {score}")
        elif self.type is EventType.CONSENT_UPDATE:
            if not isinstance(attrs.get("marketing"), bool):
                raise ValueError("attrs.marketing (true or false) is required for consent_update")
        elif self.type is EventType.IDENTITY_LINKED:
            identifier = attrs.get("identifier")
            if not isinstance(identifier, str) or not IDENTIFIER_RE.fullmatch(identifier):
                raise ValueError(
                    "attrs.identifier (e.g. 'card:4111...', 'phone:4477...', 'device:ab12') "
                    f"matching {IDENTIFIER_PATTERN} is required for identity_linked"
                )
            if identifier == self.customer_id:
                raise ValueError("attrs.identifier must differ from customer_id")

    @cached_property
    def epoch_seconds(self) -> float:
        """The event time as Unix seconds, the unit the feature store keeps.

        Computed once per event, by validation (which stores it where a cached property
        keeps its value, so that reading it is a plain attribute lookup): the store, the
        churn labels and the decision log each read it, and neither
        `datetime.timestamp()` nor the first call of a cached property is free at tens of
        thousands of events/s.
        """
        return self.ts.timestamp()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with `update` applied; its `epoch_seconds` is computed afresh."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("epoch_seconds", None)
        return copy

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready form of the event, without unset optional fields."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=False)


def _check_attr_sizes(attrs: dict[str, AttrValue]) -> None:
    """Names and texts within their caps, integers within 64 bits (so the event fits in one
    message and encodes: orjson refuses larger integers)."""
    for name, value in attrs.items():
        if len(name) > MAX_ATTR_NAME_CHARS:
            raise ValueError(
                f"attrs: the name {name[:16]!r}… has {len(name)} characters; at most "
                f"{MAX_ATTR_NAME_CHARS}"
            )
        if isinstance(value, str) and len(value) > MAX_ATTR_TEXT_CHARS:
            raise ValueError(
                f"attrs.{name}: a text of {len(value)} characters; at most {MAX_ATTR_TEXT_CHARS}"
            )
        if type(value) is int and not -(2**63) <= value < 2**63:
            raise ValueError(f"attrs.{name}: an integer beyond 64 bits")


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one item could not be accepted as an event."""

    index: int
    event_id: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "reason": self.reason}


def describe_validation_error(error: ValidationError) -> str:
    """One human-readable line per bad field, e.g. `channel: Input should be 'branch', ...`."""
    parts = []
    for detail in error.errors(include_url=False):
        location = ".".join(str(part) for part in detail["loc"]) or "event"
        parts.append(f"{location}: {detail['msg']}")
    return "; ".join(parts)


def _ahead_of_clock(event: Event, index: int, now: float, max_ahead_s: float) -> Rejection:
    """The rejection of an event whose time is more than `max_ahead_s` after `now`."""
    ahead = math.ceil(event.epoch_seconds - now)
    when = event.ts.isoformat().replace("+00:00", "Z")
    return Rejection(
        index,
        event.event_id,
        f"ts: {when} is {ahead:,} s ahead of this server's clock; at most "
        f"{max_ahead_s:,g} s ahead is accepted (NBA_MAX_CLOCK_SKEW_S)",
    )


def parse_event(
    item: Any, index: int = 0, *, max_ahead_s: float | None = None, now: float | None = None
) -> Event | Rejection:
    """Validate one decoded JSON item; never raises for bad input.

    With `max_ahead_s`, an event whose time is more than that many seconds after `now`
    (default: this process's clock) is rejected: stored, its time would stand as the
    customer's latest event time, and events of today would be refused as late.
    """
    if not isinstance(item, dict):
        return Rejection(index, None, f"event must be a JSON object, got {type(item).__name__}")
    try:
        event = Event.model_validate(item)
    except ValidationError as error:
        event_id = item.get("event_id")
        return Rejection(
            index,
            event_id if isinstance(event_id, str) else None,
            describe_validation_error(error),
        )
    if max_ahead_s is not None:
        now = time.time() if now is None else now
        if event.epoch_seconds > now + max_ahead_s:
            return _ahead_of_clock(event, index, now, max_ahead_s)
    return event


def parse_items(
    items: list[Any], *, max_ahead_s: float | None = None, now: float | None = None
) -> tuple[list[Event], list[Rejection]]:
    """Split decoded JSON items into valid events and rejections, keeping their order.

    `max_ahead_s` and `now` as for `parse_event` (the clock is read once for all items).
    """
    if max_ahead_s is not None and now is None:
        now = time.time()
    events: list[Event] = []
    rejections: list[Rejection] = []
    for index, item in enumerate(items):
        parsed = parse_event(item, index, max_ahead_s=max_ahead_s, now=now)
        if isinstance(parsed, Event):
            events.append(parsed)
        else:
            rejections.append(parsed)
    return events, rejections


class _DecodedOnDemand(Sequence[Any]):
    """The raw items of an envelope, parsed only if someone asks (a dead letter)."""

    def __init__(self, payload: bytes) -> None:
        self._payload = payload
        self._items: list[Any] | None = None

    def _loaded(self) -> list[Any]:
        if self._items is None:
            self._items = orjson.loads(self._payload)
        return self._items

    def __getitem__(self, index: Any) -> Any:
        return self._loaded()[index]

    def __len__(self) -> int:
        return len(self._loaded())


_ENVELOPE = TypeAdapter(list[Event])
_EPOCH_SECONDS = attrgetter("epoch_seconds")


def _split_ahead(
    events: list[Event], now: float, max_ahead_s: float
) -> tuple[list[Event], list[Rejection]]:
    """The events of an envelope within `max_ahead_s` of `now`, and rejections of the rest
    by their position in the envelope."""
    not_after = now + max_ahead_s
    kept: list[Event] = []
    ahead: list[Rejection] = []
    for index, event in enumerate(events):
        if event.epoch_seconds > not_after:
            ahead.append(_ahead_of_clock(event, index, now, max_ahead_s))
        else:
            kept.append(event)
    return kept, ahead


def decode_message(
    payload: bytes, *, max_ahead_s: float | None = None, now: float | None = None
) -> tuple[list[Event], list[Rejection], Sequence[Any]]:
    """Decode one Kafka message value (an event or an envelope of events).

    Returns the valid events, the rejections, and the raw items (so that a rejected
    item can be sent to the dead-letter topic exactly as it arrived). An envelope whose
    items are all valid is validated straight from its bytes (pydantic's own JSON
    parser: about twice as fast); only one with a bad item is taken apart item by item.
    `max_ahead_s` and `now` as for `parse_event`: on the fast path only the latest event
    time is compared, and the events too far ahead are split off by position.
    """
    if payload[:1] == b"[":
        try:
            events = _ENVELOPE.validate_json(payload)
        except ValidationError:
            pass  # find which items are bad, one by one, below
        else:
            if max_ahead_s is not None and events:
                now = time.time() if now is None else now
                if max(map(_EPOCH_SECONDS, events)) > now + max_ahead_s:
                    kept, ahead = _split_ahead(events, now, max_ahead_s)
                    return kept, ahead, _DecodedOnDemand(payload)
            return events, [], _DecodedOnDemand(payload)
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError as error:
        return [], [Rejection(0, None, f"message is not valid JSON: {error}")], [payload]
    items = decoded if isinstance(decoded, list) else [decoded]
    events, rejections = parse_items(items, max_ahead_s=max_ahead_s, now=now)
    return events, rejections, items


def encode_envelope(events: list[Event]) -> bytes:
    """The wire form of several events travelling in one Kafka message."""
    return orjson.dumps([event.to_wire() for event in events])


def iter_customer_groups(events: list[Event]) -> Iterator[tuple[str, list[Event]]]:
    """Group events by customer, keeping each customer's events in arrival order."""
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(event.customer_id, []).append(event)
    yield from groups.items()
