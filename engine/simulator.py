"""A seeded, reproducible simulated bank: customers, their daily events, their answers to offers.

`nba demo`, the tests and the benchmarks need traffic that looks like a bank's and a hidden
ground truth to score policies against. Each customer has hidden traits (segment, age, income,
digital affinity, channel preferences, spending, product interests, unhappiness) that drive both
what they do (the observable events) and how likely they are to accept an action on a channel,
so a learner reading features built from the events can find each customer's best action.
Everything is a pure function of the seed: the same seed gives the same bank, day by day.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np

from features.events import AMOUNT_TYPES, PRODUCT_TYPES, Channel, EventType

Answer = Literal["accept", "decline", "ignore"]
Attrs = list[dict[str, Any] | None]
Rng = np.random.Generator

SEGMENTS = ("student", "young_digital", "family", "affluent", "senior_branch")
#: Channels whose use is a personal preference: the columns of `channel_weights`.
PREFERENCE_CHANNELS = tuple(map(Channel, ("branch", "atm", "mobile", "web", "call_centre")))
_BRANCH, _ATM, _MOBILE, _WEB, _CALLS = range(len(PREFERENCE_CHANNELS))
#: Products customers browse: the columns of `interest` (names as in the action catalog).
PRODUCTS = ("credit_card", "personal_loan", "savings", "mortgage", "insurance", "investment")
CATEGORIES = ("grocery", "fuel", "dining", "retail", "travel")  # of card payments
DECLINE_SHARE = 0.4  # of the answers that are not an acceptance; the rest are ignored
ANSWER_DELAY = timedelta(seconds=20)  # from an impression to the customer's answer

# Per segment, rows in SEGMENTS order.
_SEGMENT_SHARE = [0.10, 0.25, 0.30, 0.15, 0.20]
_AGE_RANGE = np.array([[18, 26], [22, 40], [30, 56], [35, 71], [62, 91]])  # [low, high)
_MEDIAN_INCOME = np.array([700.0, 2600.0, 3400.0, 8500.0, 1900.0])  # monthly
_INCOME_SPREAD = 0.35  # of log income within a segment
_DIGITAL_BETA = np.array([[8.0, 2.0], [9.0, 1.5], [5.0, 3.0], [4.0, 3.0], [1.5, 6.0]])
_EMPLOYED_SHARE = np.array([0.35, 0.92, 0.90, 0.85, 0.95])  # seniors: a pension, paid monthly
_CHANNEL_BASE = np.array(  # columns in PREFERENCE_CHANNELS order
    [
        [0.05, 0.20, 0.60, 0.12, 0.03],
        [0.04, 0.14, 0.60, 0.18, 0.04],
        [0.12, 0.22, 0.36, 0.22, 0.08],
        [0.18, 0.12, 0.30, 0.28, 0.12],
        [0.42, 0.25, 0.05, 0.08, 0.20],
    ]
)
_INTEREST_BASE = np.array(  # columns in PRODUCTS order
    [
        [-0.8, 0.3, -0.3, -1.5, 0.6, -1.2],
        [0.6, 0.3, 0.0, 0.5, 0.5, -0.2],
        [0.2, 0.8, 0.3, 0.9, 0.0, -0.3],
        [0.3, -1.0, 0.2, 0.3, 0.4, 1.2],
        [-0.8, -0.8, 0.7, -1.5, -0.5, 0.4],
    ]
)
# Log income over the whole population, to express wealth as a z-score whatever its size.
_LOG_INCOME_MEAN = float(np.dot(_SEGMENT_SHARE, np.log(_MEDIAN_INCOME)))
_BETWEEN_SEGMENTS = np.dot(_SEGMENT_SHARE, (np.log(_MEDIAN_INCOME) - _LOG_INCOME_MEAN) ** 2)
_LOG_INCOME_SD = float(np.sqrt(_BETWEEN_SEGMENTS + _INCOME_SPREAD**2))
_APP_THRESHOLD = 0.3  # customers below this digital affinity never use the mobile app
_BRANCH_BY_WEEKDAY = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.35, 0.0])  # Monday first
_CALLS_BY_WEEKDAY = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.6, 0.3])
_HOURS_ANY = np.array([1, 1, 1, 1, 1, 2, 4, 6, 8, 8, 8, 9, 10, 9, 8, 8, 8, 9, 10, 10, 9, 7, 4, 2.0])
_HOURS_OFFICE = np.array([0.0] * 9 + [1.0] * 8 + [0.0] * 7)  # 09:00-17:00
_HOURS_CALLS = np.array([0.0] * 8 + [1.0] * 12 + [0.0] * 4)  # 08:00-20:00
_HOURS_NIGHT = np.array([0.0] + [1.0] * 5 + [0.0] * 18)  # 01:00-06:00, batch credits

#: Logit lifts by channel: complex products convert better with a person, simple ones in the app.
_LIFT_COMPLEX = {Channel.BRANCH: 0.8, Channel.CALL_CENTRE: 0.5, Channel.MOBILE: -0.3}
_LIFT_SIMPLE = {Channel.MOBILE: 0.4, Channel.WEB: 0.2, Channel.SMS: 0.0, Channel.EMAIL: -0.1}
_INTEREST_WEIGHT = 0.7
_PREFERENCE_WEIGHT = 1.5  # times (the customer's weight for the channel - an average 0.2)


@dataclass(frozen=True, slots=True)
class _Profile:
    """The hidden acceptance model of one action, as logit lifts around its base rate."""

    product: str | None  # its column in `interest`, if customers browse the product
    base_rate: float
    complex: bool
    segment_lift: tuple[float, ...]  # per segment
    trait_weight: tuple[float, ...] = (0, 0, 0, 0)  # wealth z, digital - 0.5, unhappiness, app

    def channel_lift(self, channel: Channel) -> float:
        """Complex products sell best in person, simple ones in the app; web is neutral."""
        if self.complex:
            return _LIFT_COMPLEX.get(channel, 0.0 if channel is Channel.WEB else -0.7)
        return _LIFT_SIMPLE.get(channel, -0.3)


_PROFILES = {
    "credit_card_gold": ("credit_card", 0.04, False, (-1, 0.6, 0.2, 0.3, -0.8), (0.4, 0.3, 0, 0)),
    "personal_loan": ("personal_loan", 0.02, True, (0.2, 0.5, 0.9, -1.2, -0.8), (-0.5, 0, 0.3, 0)),
    "savings_account": ("savings", 0.06, False, (-0.4, 0, 0.2, -0.2, 0.7), (0.2, 0, 0, 0)),
    "mortgage_consultation": ("mortgage", 0.01, True, (-1.5, 0.8, 1.3, 0.4, -1.2), (0.4, 0, 0, 0)),
    "travel_insurance": ("insurance", 0.05, False, (0.7, 0.5, 0, 0.3, -0.5), (0.2, 0.3, 0, 0)),
    "investment_fund": ("investment", 0.015, True, (-1, -0.2, -0.4, 0.8, 0.5), (0.6, 0, -0.3, 0)),
    "mobile_app_onboarding": (None, 0.15, False, (0, 0, 0, 0, 0.4), (0, 1.5, 0, -2.5)),
    "paperless_statements": (None, 0.05, False, (0.3, 0.4, 0, -0.2, -1), (0, 2, -0.5, 0)),
    "fee_waiver_retention": (None, 0.03, True, (0, 0, 0.2, 0.3, 0), (0.2, 0, 3, 0)),
    "service_callback": (None, 0.04, True, (-0.5, -0.5, 0, 0.2, 0.8), (0, -0.5, 2, 0)),
}

_TYPES = list(EventType)
_CHANNELS = list(Channel)
_TYPE_VALUES = [kind.value for kind in _TYPES]
_CHANNEL_VALUES = [channel.value for channel in _CHANNELS]
_NEEDS_AMOUNT = [kind in AMOUNT_TYPES for kind in _TYPES]
_NEEDS_PRODUCT = [kind in PRODUCT_TYPES for kind in _TYPES]


def _code(option: EventType | Channel) -> int:
    """The position of a type or channel in its enum: the compact form used inside batches."""
    return _TYPES.index(option) if isinstance(option, EventType) else _CHANNELS.index(option)


def _utc(moment: datetime) -> datetime:
    """The moment in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _choose(rng: Rng, weights: np.ndarray) -> np.ndarray:
    """One column index per row of `weights`, drawn in proportion to the (unnormalised) row."""
    cumulative = np.cumsum(weights, axis=1)
    draw = (1.0 - rng.random(len(weights))) * cumulative[:, -1]
    return (cumulative < draw[:, None]).sum(axis=1)


def _pick(rng: Rng, options: Sequence[EventType | Channel], weights: np.ndarray) -> np.ndarray:
    """The codes of one of `options` per row of `weights`, drawn in proportion to the row."""
    return np.array([_code(option) for option in options])[_choose(rng, weights)]


def _offer_event_id(decision_id: str, kind: EventType) -> str:
    """A deterministic event id, within the 64-character limit whatever the decision id."""
    digest = hashlib.blake2b(f"{decision_id}/{kind.value}".encode(), digest_size=10)
    return f"offer-{digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class _Batch:
    """Events of one kind for one day as parallel arrays; amount and product used per type."""

    customer: np.ndarray
    type: np.ndarray
    channel: np.ndarray
    micros: np.ndarray  # since the start of the day
    amount: np.ndarray
    product: np.ndarray
    attrs: Attrs


class SimulatedBank:
    """A population of customers with hidden traits, stored as numpy arrays (one row each).

    Traits: `segment` (codes into SEGMENTS), `age`, `income` (monthly), `digital_affinity`
    (0..1), `has_app`, `employed` (gets a monthly salary or pension on `salary_day`),
    `spend_level`, `unhappiness` (0..1, drives complaints and low survey scores),
    `channel_weights` (rows over PREFERENCE_CHANNELS) and `interest` (rows over PRODUCTS).
    """

    def __init__(
        self,
        *,
        customers: int,
        seed: int,
        start: datetime,
        action_ids: Sequence[str],
        activity: float = 1.0,
    ) -> None:
        """Draw the population; `start` gives the first day (its UTC date); `activity` scales."""
        if customers < 1:
            raise ValueError("customers must be at least 1")
        self.customers, self.seed, self.activity = customers, seed, activity
        self.start = _utc(start).replace(hour=0, minute=0, second=0, microsecond=0)
        rng, n = np.random.default_rng([seed, 0]), customers
        self.segment = rng.choice(len(SEGMENTS), size=n, p=_SEGMENT_SHARE).astype(np.int8)
        ages = _AGE_RANGE[self.segment]
        self.age = rng.integers(ages[:, 0], ages[:, 1]).astype(np.uint8)
        log_income = np.log(_MEDIAN_INCOME[self.segment]) + rng.normal(0.0, _INCOME_SPREAD, n)
        self.income = np.exp(log_income).astype(np.float32)
        beta = _DIGITAL_BETA[self.segment]
        self.digital_affinity = rng.beta(beta[:, 0], beta[:, 1]).astype(np.float32)
        self.has_app = self.digital_affinity >= _APP_THRESHOLD
        self.employed = rng.random(n) < _EMPLOYED_SHARE[self.segment]
        self.salary_day = rng.integers(1, 29, n).astype(np.uint8)
        self.spend_level = rng.lognormal(0.0, 0.4, n).astype(np.float32)
        self.unhappiness = rng.beta(1.2, 6.0, n).astype(np.float32)
        weights = _CHANNEL_BASE[self.segment] * rng.gamma(4.0, 0.25, (n, len(PREFERENCE_CHANNELS)))
        weights[~self.has_app, _MOBILE] = 0.0
        self.channel_weights = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
        noise = rng.normal(0.0, 0.6, (n, len(PRODUCTS)))
        self.interest = (_INTEREST_BASE[self.segment] + noise).astype(np.float32)
        wealth_z = (log_income - _LOG_INCOME_MEAN) / _LOG_INCOME_SD
        traits = [wealth_z, self.digital_affinity - 0.5, self.unhappiness, self.has_app]
        self._traits = np.column_stack(traits).astype(np.float32)  # as _Profile.trait_weight
        self._action_column = {action_id: i for i, action_id in enumerate(action_ids)}
        profiles = [self._profile(action_id) for action_id in action_ids]
        self._base_logit = np.log([p.base_rate / (1 - p.base_rate) for p in profiles])
        lifts = [[p.channel_lift(channel) for p in profiles] for channel in _CHANNELS]
        self._channel_lift = np.array(lifts).reshape(len(_CHANNELS), -1)
        self._segment_lift = np.array([p.segment_lift for p in profiles]).reshape(-1, 5).T
        self._trait_weight = np.array([p.trait_weight for p in profiles]).reshape(-1, 4).T
        products = [PRODUCTS.index(p.product) if p.product else -1 for p in profiles]
        self._product_column = np.array(products, dtype=np.int64)

    def _profile(self, action_id: str) -> _Profile:
        """The known profile of a catalog action, or a seeded segment-dependent generic one."""
        if action_id in _PROFILES:
            return _Profile(*_PROFILES[action_id])
        rng = np.random.default_rng([self.seed, 2, zlib.crc32(action_id.encode())])
        return _Profile(None, 0.03, False, tuple(rng.normal(0.0, 0.6, len(SEGMENTS)).tolist()))

    # -- identities ------------------------------------------------------------------------

    def customer_id(self, index: int) -> str:
        """The customer id of row `index`: C000001 for row 0."""
        if not 0 <= index < self.customers:
            raise IndexError(f"no customer at index {index}")
        return f"C{index + 1:06d}"

    def customer_index(self, customer_id: str) -> int:
        """The row of a customer id (the inverse of `customer_id`)."""
        digits = customer_id[1:]
        if not (customer_id[:1] == "C" and digits.isdigit() and 1 <= int(digits) <= self.customers):
            raise KeyError(f"unknown customer {customer_id!r}")
        return int(digits) - 1

    def customer_ids(self) -> list[str]:
        """All customer ids, in row order."""
        return [f"C{number:06d}" for number in range(1, self.customers + 1)]

    def segment_of(self, customer: str | int) -> str:
        """The segment label of a customer, by id or row."""
        return SEGMENTS[self.segment[self._index(customer)]]

    def _index(self, customer: str | int) -> int:
        if isinstance(customer, str):
            return self.customer_index(customer)
        self.customer_id(int(customer))  # range check
        return int(customer)

    # -- hidden ground truth ---------------------------------------------------------------

    def acceptance_probabilities(
        self, customer_index: int | np.ndarray, action_ids: Sequence[str], channel: Channel | str
    ) -> np.ndarray:
        """True acceptance probabilities, shape (*shape of customer_index, len(action_ids))."""
        rows = np.asarray(customer_index, dtype=np.int64)
        columns = np.array([self._action_column[action_id] for action_id in action_ids])
        channel = Channel(channel)
        products = self._product_column[columns]
        interest = np.where(products >= 0, self.interest[rows][..., products.clip(0)], 0.0)
        logit = (
            self._base_logit[columns]
            + self._channel_lift[_code(channel), columns]
            + self._segment_lift[self.segment[rows]][..., columns]
            + self._traits[rows] @ self._trait_weight[:, columns]
            + _INTEREST_WEIGHT * interest
        )
        if channel in PREFERENCE_CHANNELS:
            preference = self.channel_weights[rows, PREFERENCE_CHANNELS.index(channel)]
            logit = logit + _PREFERENCE_WEIGHT * (preference[..., None] - 0.2)
        return np.clip(1.0 / (1.0 + np.exp(-logit)), 0.001, 0.9)

    def acceptance_probability(
        self, customer: str | int, action_id: str, channel: Channel | str
    ) -> float:
        """The true probability that the customer (id or row) accepts the action on the channel."""
        return float(self.acceptance_probabilities(self._index(customer), [action_id], channel)[0])

    def respond(self, customer_id: str, action_id: str, channel: Channel | str, rng: Rng) -> Answer:
        """Draw the customer's answer: accept with the true probability, else decline/ignore."""
        probability = self.acceptance_probability(customer_id, action_id, channel)
        draw = rng.random()  # one draw: past `probability` it is uniform again
        if draw < probability:
            return "accept"
        return "decline" if (draw - probability) / (1 - probability) < DECLINE_SHARE else "ignore"

    def outcome_events(
        self,
        customer_id: str,
        action_id: str,
        decision_id: str,
        channel: Channel | str,
        answer: Answer,
        ts: datetime,
    ) -> list[dict[str, Any]]:
        """The wire events of an impression at `ts` and of its answer (none for "ignore")."""
        if answer not in ("accept", "decline", "ignore"):
            raise ValueError(f"unknown answer {answer!r}")
        self.customer_index(customer_id)
        kinds = [(EventType.OFFER_IMPRESSION, _utc(ts))]
        if answer != "ignore":
            kind = EventType.OFFER_ACCEPTED if answer == "accept" else EventType.OFFER_DECLINED
            kinds.append((kind, _utc(ts) + ANSWER_DELAY))
        return [
            {
                "event_id": _offer_event_id(decision_id, kind),
                "customer_id": customer_id,
                "type": kind.value,
                "channel": Channel(channel).value,
                "ts": _iso(moment),
                "action_id": action_id,
                "decision_id": decision_id,
            }
            for kind, moment in kinds
        ]

    # -- daily behaviour -------------------------------------------------------------------

    def events_for_day(self, day: int) -> list[dict[str, Any]]:
        """The wire events of simulated day `day` (0 is `start`), sorted by time."""
        if day < 0:
            raise ValueError("day must be zero or positive")
        date = self.start + timedelta(days=day)
        rng = np.random.default_rng([self.seed, 1, day])
        weekday = date.weekday()
        surveys = {Channel.SMS: 0.5, Channel.EMAIL: 0.25, Channel.WEB: 0.25}
        consents = {Channel.SMS: 0.6, Channel.WEB: 0.2, Channel.MOBILE: 0.2}
        # product pages seen online: more for digital customers with strong interests
        browsing = 0.02 * np.exp(self.interest).sum(axis=1) * self.digital_affinity
        batches = [
            self._salaries(rng, date.day),
            self._online(rng, EventType.LOGIN, 1.4 * self.digital_affinity),
            self._card_payments(rng),
            self._atm_visits(rng),
            self._branch_visits(rng, weekday),
            self._calls(rng, weekday),
            self._online(rng, EventType.TRANSFER, 0.2 * self.spend_level),
            self._online(rng, EventType.PRODUCT_VIEW, browsing),
            self._messages(rng, EventType.SURVEY, 0.012, surveys),
            self._messages(rng, EventType.CONSENT_UPDATE, 0.006, consents),
        ]
        return self._to_wire(batches, date, day)

    def _occurrences(self, rng: Rng, rates: np.ndarray | float) -> np.ndarray:
        """Customer rows, one per event, from a Poisson draw of each customer's daily count."""
        rates = np.broadcast_to(np.asarray(rates) * self.activity, (self.customers,))
        return np.repeat(np.arange(self.customers), rng.poisson(rates))

    def _batch(
        self,
        rng: Rng,
        rows: np.ndarray,
        types: np.ndarray | EventType,
        channels: np.ndarray | Channel,
        hours: np.ndarray,
        amount: np.ndarray | None = None,
        attrs: Attrs | None = None,
    ) -> _Batch:
        """Complete a batch: times from the hourly profile, browsed products by interest."""
        hour = rng.choice(24, size=len(rows), p=hours / hours.sum())
        micros = hour * 3_600_000_000 + rng.integers(0, 3_600_000_000, len(rows))
        product = _choose(rng, np.exp(self.interest[rows]))
        types = np.full(len(rows), _code(types)) if isinstance(types, EventType) else types
        if isinstance(channels, Channel):
            channels = np.full(len(rows), _code(channels))
        amount = np.zeros(len(rows)) if amount is None else amount
        return _Batch(rows, types, channels, micros, amount, product, attrs or [None] * len(rows))

    def _amounts(self, rng: Rng, rows: np.ndarray, base: float, share: float) -> np.ndarray:
        """Log-normal amounts around `base` plus `share` of the customer's monthly income."""
        return rng.lognormal(np.log(base + share * self.income[rows]), 0.8)

    def _salaries(self, rng: Rng, day_of_month: int) -> _Batch:
        """Salaries and pensions, credited electronically overnight; shown as web events."""
        rows = np.flatnonzero(self.employed & (self.salary_day == day_of_month))
        amount = self.income[rows] * rng.normal(1.0, 0.02, len(rows))
        return self._batch(rng, rows, EventType.SALARY, Channel.WEB, _HOURS_NIGHT, amount)

    def _online(self, rng: Rng, kind: EventType, rates: np.ndarray) -> _Batch:
        """Logins, transfers or product views in the app or on the web, by preference."""
        rows = self._occurrences(rng, rates)
        weights = self.channel_weights[rows][:, [_MOBILE, _WEB]]
        channels = _pick(rng, (Channel.MOBILE, Channel.WEB), weights)
        amount = self._amounts(rng, rows, 50.0, 0.05)
        return self._batch(rng, rows, kind, channels, _HOURS_ANY, amount)

    def _card_payments(self, rng: Rng) -> _Batch:
        """Card payments in shops (pos) or online (web); travel spend reveals insurance interest."""
        rows = self._occurrences(rng, 0.4 + 0.8 * self.spend_level)
        travel = np.clip(0.03 * np.exp(self.interest[rows, PRODUCTS.index("insurance")]), 0, 0.3)
        category = _choose(rng, np.column_stack([np.outer(1 - travel, [4, 1.5, 2, 2.5]), travel]))
        online = rng.random(len(rows)) < 0.1 + 0.4 * self.digital_affinity[rows]
        channels = np.where(online, _code(Channel.WEB), _code(Channel.POS))
        amount = self._amounts(rng, rows, 8.0, 0.008) * np.where(category == 4, 4.0, 1.0)
        attrs: Attrs = [{"category": CATEGORIES[c]} for c in category.tolist()]
        return self._batch(rng, rows, EventType.TRANSACTION, channels, _HOURS_ANY, amount, attrs)

    def _atm_visits(self, rng: Rng) -> _Batch:
        """Cash withdrawals (multiples of 20) and occasional deposits."""
        rows = self._occurrences(rng, 0.6 * self.channel_weights[:, _ATM])
        deposit = rng.random(len(rows)) < 0.15
        types = np.where(deposit, _code(EventType.DEPOSIT), _code(EventType.WITHDRAWAL))
        cash = 20.0 * rng.integers(1, 16, len(rows))
        amount = np.where(deposit, self._amounts(rng, rows, 100.0, 0.02), cash)
        return self._batch(rng, rows, types, Channel.ATM, _HOURS_ANY, amount)

    def _branch_visits(self, rng: Rng, weekday: int) -> _Batch:
        """Counter business, advice on a product or a complaint; fewer at weekends."""
        rates = 0.3 * self.channel_weights[:, _BRANCH] * _BRANCH_BY_WEEKDAY[weekday]
        rows = self._occurrences(rng, rates)
        options = (EventType.DEPOSIT, EventType.WITHDRAWAL, EventType.TRANSFER)
        options += (EventType.PRODUCT_VIEW, EventType.COMPLAINT)
        complaint = 0.03 + 0.3 * self.unhappiness[rows]
        types = _pick(rng, options, np.column_stack([np.full((len(rows), 4), 0.25), complaint]))
        amount = self._amounts(rng, rows, 150.0, 0.05)
        return self._batch(rng, rows, types, Channel.BRANCH, _HOURS_OFFICE, amount)

    def _calls(self, rng: Rng, weekday: int) -> _Batch:
        """Calls to the contact centre: a complaint or a question about a product."""
        rates = 0.08 * self.channel_weights[:, _CALLS] + 0.02 * self.unhappiness
        rows = self._occurrences(rng, rates * _CALLS_BY_WEEKDAY[weekday])
        complaint = rng.random(len(rows)) < 0.05 + 0.5 * self.unhappiness[rows]
        types = np.where(complaint, _code(EventType.COMPLAINT), _code(EventType.PRODUCT_VIEW))
        return self._batch(rng, rows, types, Channel.CALL_CENTRE, _HOURS_CALLS)

    def _messages(
        self, rng: Rng, kind: EventType, rate: float, shares: dict[Channel, float]
    ) -> _Batch:
        """Surveys (a 0..10 score, lower when unhappy) or consent updates (marketing yes/no)."""
        rows = self._occurrences(rng, rate)
        picks = rng.choice(len(shares), size=len(rows), p=list(shares.values()))
        channels = np.array([_code(channel) for channel in shares])[picks]
        if kind is EventType.SURVEY:
            score = np.clip(np.rint(rng.normal(8.6 - 9.0 * self.unhappiness[rows], 1.2)), 0, 10)
            attrs: Attrs = [{"score": int(s)} for s in score.tolist()]
        else:
            attrs = [{"marketing": bool(b)} for b in (rng.random(len(rows)) < 0.6).tolist()]
        return self._batch(rng, rows, kind, channels, _HOURS_ANY, None, attrs)

    def _to_wire(self, batches: list[_Batch], date: datetime, day: int) -> list[dict[str, Any]]:
        """Merge the batches into JSON-ready event dicts, sorted by time, with stable ids."""
        micros = np.concatenate([b.micros for b in batches])
        order = np.argsort(micros, kind="stable")

        def merged(arrays: list[np.ndarray]) -> list[Any]:
            return np.concatenate(arrays)[order].tolist()

        rows, types = merged([b.customer for b in batches]), merged([b.type for b in batches])
        channels = merged([b.channel for b in batches])
        amounts = merged([np.round(b.amount, 2) for b in batches])
        products = merged([b.product for b in batches])
        unsorted_attrs = [item for b in batches for item in b.attrs]
        attrs = [unsorted_attrs[i] for i in order.tolist()]
        midnight = np.datetime64(date.replace(tzinfo=None), "us")
        stamps = np.datetime_as_string(midnight + micros[order].astype("timedelta64[us]"))
        events = []
        for i, stamp in enumerate(stamps.tolist()):
            event = {
                "event_id": f"sim{self.seed}-d{day}-{i:06d}",
                "customer_id": f"C{rows[i] + 1:06d}",
                "type": _TYPE_VALUES[types[i]],
                "channel": _CHANNEL_VALUES[channels[i]],
                "ts": f"{stamp}Z",
            }
            if _NEEDS_AMOUNT[types[i]]:
                event["amount"] = amounts[i]
            if _NEEDS_PRODUCT[types[i]]:
                event["product"] = PRODUCTS[products[i]]
            if attrs[i]:
                event["attrs"] = attrs[i]
            events.append(event)
        return events
