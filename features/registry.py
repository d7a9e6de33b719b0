"""The feature registry: every customer feature declared once.

Two sorts of feature:

- a `StoredFeature` is kept per customer and changed by events: which event types (and,
  optionally, channel or a condition) touch it, what they contribute and how it
  aggregates (`Kind`). A keyed feature (`Key`) keeps one value per channel, product or
  action. `features.fold_compiler` compiles these declarations into the fold that
  `features.state` runs per event.
- a `DerivedFeature` (declared in `features.derived` as `DERIVED`) is computed when the
  customer is read, from stored values, the read time and the base-wide RFM quantiles
  (tiers, stages, preferences).

The profile API, the docs table (`python -m features.docs`), the CEL rule variables and
the model inputs are all derived from `STORED` and `DERIVED`. Adding a feature is one
declaration plus its test.

Naming follows the model's input conventions (models/features_vector.py): `_ts` for Unix
seconds (0 = never), `_count`/`_amount` for long-tailed values that get a log scale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from features.config import WINDOWS_DAYS, FeatureConfig
from features.events import BANK_INITIATED_TYPES, Channel, EventType

#: Amounts are kept as whole ten-thousandths, so that sums are exact whatever the order
#: in which events arrive (float addition is not associative; integer addition is).
AMOUNT_SCALE = 10_000

#: Product categories with their own features; any other product counts as `other`.
PRODUCTS = (
    "current_account",
    "credit_card",
    "personal_loan",
    "savings",
    "mortgage",
    "insurance",
    "investment",
    "other",
)
#: Channels on which marketing consent is asked and kept.
MARKETING_CHANNELS = (
    Channel.SMS,
    Channel.EMAIL,
    Channel.MOBILE,
    Channel.WEB,
    Channel.SOCIAL,
    Channel.ADS,
    Channel.CALL_CENTRE,
)


class Kind(StrEnum):
    """How the contributions of the events touching a stored feature aggregate."""

    COUNT = "count"  # how many events
    SUM = "sum"  # their amounts, exact in 1/AMOUNT_SCALE units
    FIRST_TIME = "first_time"  # earliest event time
    LAST_TIME = "last_time"  # latest event time
    DECAYED = "decayed"  # exponentially decayed count or amount (half-life by `decay` group)
    DAILY = "daily"  # count and amount per UTC day over 90 days, distinct days, first day's amount
    LATEST = "latest"  # the value carried by the latest event (ties: the larger value)


class Value(StrEnum):
    """What one event contributes."""

    ONE = "one"
    AMOUNT = "amount"
    ATTR = "attr"  # a numeric attribute (`attr`), booleans as 1/0


class Key(StrEnum):
    """The dimension of a keyed feature: one value per..."""

    CHANNEL = "channel"  # the event's channel
    PRODUCT = "product"  # the event's product, in PRODUCTS (others: `other`)
    ACTION = "action"  # the event's action_id (open-ended: not part of the model input)


KEY_VALUES: dict[Key, tuple[str, ...]] = {
    Key.CHANNEL: tuple(channel.value for channel in Channel),
    Key.PRODUCT: PRODUCTS,
}


@dataclass(frozen=True, slots=True)
class AttrIs:
    """A condition on the events of one type: their attribute `attr` is `value` (with
    `negate`, is not). A feature's events of other types are not concerned.

    Declared as data rather than as a function, so that the fold compiler writes the test
    into the fold of that one type, and the others pay nothing for it.
    """

    event_type: EventType
    attr: str
    value: str
    negate: bool = False


@dataclass(frozen=True, slots=True, eq=False)  # identity: hashing stays cheap for caches
class StoredFeature:
    """A feature kept per customer and changed by events.

    `name` and `description` may hold `{key}` for keyed features; each key then gives
    one flat feature (e.g. `ch_{key}_count` → `ch_mobile_count`). `where` narrows the
    events of one of its types further (e.g. a transfer's direction).
    """

    name: str
    family: str
    description: str
    kind: Kind
    event_types: frozenset[EventType] | None = None
    value: Value = Value.ONE
    attr: str | None = None
    channel: Channel | None = None
    key: Key | None = None
    decay: str | None = None
    where: AttrIs | None = None
    keys: tuple[str, ...] | None = None
    default: float = 0.0

    def __post_init__(self) -> None:
        if (self.kind is Kind.DECAYED) != (self.decay is not None):
            raise ValueError(f"{self.name}: a decay group is required for, and only for, decayed")
        if (self.value is Value.ATTR) != (self.attr is not None):
            raise ValueError(f"{self.name}: `attr` is required for, and only for, Value.ATTR")
        if self.kind in (Kind.FIRST_TIME, Kind.LAST_TIME) and self.value is not Value.ONE:
            raise ValueError(f"{self.name}: time features take the event time, not a value")
        if self.kind is Kind.DAILY and self.key is not None:
            raise ValueError(f"{self.name}: daily buckets are kept per customer, not per key")
        if self.where is not None and self.where.event_type not in (self.event_types or ()):
            raise ValueError(f"{self.name}: `where` is about events that do not update it")

    def flat_keys(self) -> tuple[str, ...]:
        """The keys this feature is shown under in the flat profile (none for ACTION)."""
        if self.key is None:
            return ("",)
        if self.keys is not None:
            return self.keys
        return KEY_VALUES.get(self.key, ())

    def flat_name(self, key: str = "") -> str:
        return self.name.format(key=key)


@dataclass(frozen=True, slots=True)
class DerivedFeature:
    """A feature computed at read time from the flat stored values (`Reading`)."""

    name: str
    family: str
    description: str
    compute: Callable[[Reading], Any]
    options: tuple[str, ...] = ()  # a category's values; empty for a number

    @property
    def categorical(self) -> bool:
        return bool(self.options)


@dataclass(frozen=True, slots=True)
class Reading:
    """What a derived feature is computed from: the stored values as of `now`.

    `values` holds every flat stored feature (decayed values already brought to
    `now`, windows already counted back from `now`) and the derived features declared
    before this one. `rfm_edges` are the base-wide quantile edges of recency, frequency
    and monetary value (see features.tiers); empty before the first estimate.
    """

    values: Mapping[str, Any]
    now: float
    rfm_edges: Mapping[str, tuple[float, ...]]
    config: FeatureConfig


def _types(*types: EventType) -> frozenset[EventType]:
    return frozenset(types)


_TXN = _types(EventType.TRANSACTION)
_CUSTOMER_TYPES = frozenset(EventType) - BANK_INITIATED_TYPES


_TRANSFER_IN = AttrIs(EventType.TRANSFER, "direction", "in")
_TRANSFER_OUT = AttrIs(EventType.TRANSFER, "direction", "in", negate=True)
_INFLOW_TYPES = _types(EventType.DEPOSIT, EventType.SALARY, EventType.TRANSFER)
_OUTFLOW_TYPES = _types(EventType.WITHDRAWAL, EventType.TRANSACTION, EventType.TRANSFER)
_MARKETING_KEYS = tuple(channel.value for channel in MARKETING_CHANNELS)

STORED: tuple[StoredFeature, ...] = (
    # activity
    StoredFeature("event_count", "activity", "events of any kind, lifetime", Kind.COUNT),
    StoredFeature("first_seen_ts", "activity", "time of the earliest event", Kind.FIRST_TIME),
    StoredFeature("last_seen_ts", "activity", "time of the latest event", Kind.LAST_TIME),
    StoredFeature(
        "last_active_ts",
        "activity",
        "time of the latest event the customer initiated (not an offer shown)",
        Kind.LAST_TIME,
        _CUSTOMER_TYPES,
    ),
    # transactions (RFM)
    StoredFeature("txn_count", "rfm", "purchases (card/POS payments), lifetime", Kind.COUNT, _TXN),
    StoredFeature(
        "txn_amount", "rfm", "amount of purchases, lifetime", Kind.SUM, _TXN, Value.AMOUNT
    ),
    StoredFeature("txn_first_ts", "rfm", "time of the first purchase", Kind.FIRST_TIME, _TXN),
    StoredFeature("txn_last_ts", "rfm", "time of the latest purchase", Kind.LAST_TIME, _TXN),
    StoredFeature(
        "txn_decayed_count",
        "rfm",
        "purchase frequency, exponentially decayed (half-life: frequency)",
        Kind.DECAYED,
        _TXN,
        decay="frequency",
    ),
    StoredFeature(
        "txn_decayed_amount",
        "rfm",
        "purchase value, exponentially decayed (half-life: monetary)",
        Kind.DECAYED,
        _TXN,
        Value.AMOUNT,
        decay="monetary",
    ),
    StoredFeature(
        "txn", "rfm", "purchases per UTC day over the last 90 days", Kind.DAILY, _TXN, Value.AMOUNT
    ),
    # channels
    StoredFeature(
        "ch_{key}_count", "channels", "interactions on {key}, lifetime", Kind.COUNT, key=Key.CHANNEL
    ),
    StoredFeature(
        "ch_{key}_decayed_count",
        "channels",
        "interactions on {key}, exponentially decayed (half-life: channel)",
        Kind.DECAYED,
        _CUSTOMER_TYPES,
        key=Key.CHANNEL,
        decay="channel",
    ),
    StoredFeature(
        "ch_{key}_last_ts",
        "channels",
        "time of the last interaction on {key}",
        Kind.LAST_TIME,
        key=Key.CHANNEL,
    ),
    # products
    StoredFeature(
        "interest_{key}",
        "products",
        "views of {key}, exponentially decayed (half-life: interest)",
        Kind.DECAYED,
        _types(EventType.PRODUCT_VIEW),
        key=Key.PRODUCT,
        decay="interest",
    ),
    StoredFeature(
        "opened_{key}_count",
        "products",
        "{key} products opened, lifetime",
        Kind.COUNT,
        _types(EventType.PRODUCT_OPENED),
        key=Key.PRODUCT,
    ),
    StoredFeature(
        "closed_{key}_count",
        "products",
        "{key} products closed, lifetime",
        Kind.COUNT,
        _types(EventType.PRODUCT_CLOSED),
        key=Key.PRODUCT,
    ),
    StoredFeature(
        "balance_{key}_amount",
        "products",
        "latest reported balance of {key}",
        Kind.LATEST,
        _types(EventType.BALANCE),
        Value.AMOUNT,
        key=Key.PRODUCT,
    ),
    # fund flows
    StoredFeature(
        "inflow_decayed_amount",
        "flows",
        "money in (deposits, salary, incoming transfers), decayed (half-life: flows)",
        Kind.DECAYED,
        _INFLOW_TYPES,
        Value.AMOUNT,
        decay="flows",
        where=_TRANSFER_IN,
    ),
    StoredFeature(
        "outflow_decayed_amount",
        "flows",
        "money out (withdrawals, purchases, outgoing transfers), decayed (half-life: flows)",
        Kind.DECAYED,
        _OUTFLOW_TYPES,
        Value.AMOUNT,
        decay="flows",
        where=_TRANSFER_OUT,
    ),
    StoredFeature(
        "salary_last_ts",
        "flows",
        "time of the latest salary or pension credit",
        Kind.LAST_TIME,
        _types(EventType.SALARY),
    ),
    # service
    StoredFeature(
        "complaints_count",
        "service",
        "complaints made, lifetime",
        Kind.COUNT,
        _types(EventType.COMPLAINT),
    ),
    StoredFeature(
        "complaints_resolved_count",
        "service",
        "complaints resolved, lifetime",
        Kind.COUNT,
        _types(EventType.COMPLAINT_RESOLVED),
    ),
    StoredFeature(
        "complaint_last_ts",
        "service",
        "time of the latest complaint",
        Kind.LAST_TIME,
        _types(EventType.COMPLAINT),
    ),
    StoredFeature(
        "satisfaction_last",
        "service",
        "latest satisfaction / NPS answer, 0..10 (-1 = never answered)",
        Kind.LATEST,
        _types(EventType.SURVEY),
        Value.ATTR,
        attr="score",
        default=-1.0,
    ),
    # loyalty
    StoredFeature(
        "loyalty_earned_amount",
        "loyalty",
        "loyalty points earned, lifetime",
        Kind.SUM,
        _types(EventType.LOYALTY_EARNED),
        Value.AMOUNT,
    ),
    StoredFeature(
        "loyalty_redeemed_amount",
        "loyalty",
        "loyalty points redeemed, lifetime",
        Kind.SUM,
        _types(EventType.LOYALTY_REDEEMED),
        Value.AMOUNT,
    ),
    # consent
    StoredFeature(
        "consent_{key}",
        "consent",
        "marketing consent on {key}: 1 given, 0 refused or never asked",
        Kind.LATEST,
        _types(EventType.CONSENT_UPDATE),
        Value.ATTR,
        attr="marketing",
        key=Key.CHANNEL,
        keys=_MARKETING_KEYS,
    ),
    # contact history, per action (read by the decision policy, not a model input)
    StoredFeature(
        "impressions",
        "contacts",
        "times shown",
        Kind.COUNT,
        _types(EventType.OFFER_IMPRESSION),
        key=Key.ACTION,
    ),
    StoredFeature(
        "clicks",
        "contacts",
        "times clicked",
        Kind.COUNT,
        _types(EventType.OFFER_CLICKED),
        key=Key.ACTION,
    ),
    StoredFeature(
        "accepts",
        "contacts",
        "times accepted",
        Kind.COUNT,
        _types(EventType.OFFER_ACCEPTED),
        key=Key.ACTION,
    ),
    StoredFeature(
        "declines",
        "contacts",
        "times declined",
        Kind.COUNT,
        _types(EventType.OFFER_DECLINED),
        key=Key.ACTION,
    ),
    StoredFeature(
        "last_shown_ts",
        "contacts",
        "time last shown",
        Kind.LAST_TIME,
        _types(EventType.OFFER_IMPRESSION),
        key=Key.ACTION,
    ),
    StoredFeature(
        "last_declined_ts",
        "contacts",
        "time last declined",
        Kind.LAST_TIME,
        _types(EventType.OFFER_DECLINED),
        key=Key.ACTION,
    ),
)

STORED_BY_NAME: dict[str, StoredFeature] = {feature.name: feature for feature in STORED}


def daily_names(base: str) -> dict[str, str]:
    """The flat features a DAILY feature yields, with their descriptions."""
    names = {}
    for days in WINDOWS_DAYS:
        names[f"{base}_count_{days}d"] = f"purchases in the last {days} days (today included)"
        names[f"{base}_amount_{days}d"] = f"amount of purchases in the last {days} days"
    names[f"{base}_days_count"] = "distinct UTC days with a purchase, lifetime"
    names[f"{base}_first_day_amount"] = "amount purchased on the first purchase day"
    return names
