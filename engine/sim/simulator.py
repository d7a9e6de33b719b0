"""A seeded, reproducible simulated bank: customers, their daily events, their answers to offers.

`nba demo`, the tests and the benchmarks need traffic that looks like a bank's and a hidden
ground truth to score policies against. Each customer has hidden traits (segment, age, income,
digital affinity, channel preferences, spending, product interests, unhappiness, the products
held and their balances: `engine.sim.simulated_products`) that drive both what they do (the
observable events) and how likely they are to accept an action on a channel, so a learner
reading features built from the events can find each customer's best action: a customer who
holds an action's product almost never takes it again, one with money idle in the current
account takes a savings account more readily, and so on.
Everything is a pure function of the seed: the same seed gives the same bank, day by day, and
a day's events do not depend on which days were generated before.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, Literal

import numpy as np

from engine.sim.simulated_products import HOLDINGS, Holdings, has_balance
from engine.sim.simulated_wire import Attrs, Batch, code, make_batch, to_wire
from features.events import Channel, EventType

Answer = Literal["accept", "decline", "ignore"]
Rng = np.random.Generator

SEGMENTS = ("student", "young_digital", "family", "affluent", "senior_branch")
#: Channels whose use is a personal preference: the columns of `channel_weights`.
PREFERENCE_CHANNELS = tuple(map(Channel, ("branch", "atm", "mobile", "web", "call_centre")))
_BRANCH, _ATM, _MOBILE, _WEB, _CALLS = range(len(PREFERENCE_CHANNELS))
#: Products customers browse: the columns of `interest` (names as in the action catalog);
#: the holdings are these and everyone's current account.
PRODUCTS = HOLDINGS[1:]
CATEGORIES = ("grocery", "fuel", "dining", "retail", "travel")  # of card payments
_CATEGORY_VALUES = np.array(CATEGORIES, dtype=object)
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
_HOURS_RECORDS = np.array([1.0] + [0.0] * 23)  # 00:00-01:00: the bank's records on day 0
_HOURS_STATEMENTS = np.array([0.0] * 6 + [1.0] + [0.0] * 17)  # 06:00-07:00, after the credits
#: Complaints and closures: at the counter, on the phone or on the web, by the customer's
#: preference for each, with a weekly rhythm and each channel's opening hours.
_SERVICE_CHANNELS = (Channel.BRANCH, Channel.CALL_CENTRE, Channel.WEB)
_SERVICE_HOURS = np.stack([_HOURS_OFFICE, _HOURS_CALLS, _HOURS_ANY])
_COMPLAINT_CALM, _COMPLAINT_UNHAPPY = 0.001, 0.05  # a day: calm + unhappy * unhappiness²
_COMPLAINTS_BY_WEEKDAY = np.array([1.1, 1.0, 1.0, 1.0, 1.0, 0.6, 0.4])
_CALLS_FOR_COMPLAINTS = 3.0  # how much likelier a complaint is phoned in than other business
_RESOLVED_PER_DAY = 0.35  # chance that an open complaint is resolved on a given later day
_RESOLVED_WITHIN_DAYS = 14  # every complaint is resolved by then

#: Logit lifts by channel: complex products convert better with a person, simple ones in the app.
_LIFT_COMPLEX = {Channel.BRANCH: 0.8, Channel.CALL_CENTRE: 0.5, Channel.MOBILE: -0.3}
_LIFT_SIMPLE = {Channel.MOBILE: 0.4, Channel.WEB: 0.2, Channel.SMS: 0.0, Channel.EMAIL: -0.1}
_INTEREST_WEIGHT = 0.7
_PREFERENCE_WEIGHT = 1.5  # times (the customer's weight for the channel - an average 0.2)
#: Logit lift for holding, or having held, the action's own product: almost never again.
_HELD_LIFT = -6.0
#: Logit lifts for holding (or having held) other products, by action.
_HOLDING_LIFTS: dict[str, dict[str, float]] = {
    "travel_insurance": {"credit_card": 0.4},  # card holders travel
    "personal_loan": {"credit_card": 0.3, "mortgage": -0.6},  # already deep in debt
    "investment_fund": {"savings": 0.3},
    "fee_waiver_retention": {"credit_card": 0.3, "mortgage": 0.4},  # fees to save, much to lose
}
#: Logit lifts per unit of an account's balance score (log1p of the balance in thousands).
_BALANCE_LIFTS: dict[str, dict[str, float]] = {
    "savings_account": {"current_account": 0.5},  # money idle in the current account
    "investment_fund": {"savings": 0.25},  # savings large enough to invest
    "mortgage_consultation": {"savings": 0.2},  # saved a deposit
    "personal_loan": {"current_account": -0.4, "savings": -0.2},  # no need to borrow
}


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


def _holding_weights(action_id: str, product: str | None) -> tuple[list[float], list[float]]:
    """The action's logit lifts per held product and per balance score, in HOLDINGS order."""
    holding = [_HOLDING_LIFTS.get(action_id, {}).get(name, 0.0) for name in HOLDINGS]
    if product is not None:
        holding[HOLDINGS.index(product)] += _HELD_LIFT
    balance = [_BALANCE_LIFTS.get(action_id, {}).get(name, 0.0) for name in HOLDINGS]
    return holding, balance


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
    return np.array([code(option) for option in options])[_choose(rng, weights)]


def _service_channels(rng: Rng, weights: np.ndarray, weekday: int) -> tuple[np.ndarray, np.ndarray]:
    """Channel codes among _SERVICE_CHANNELS and times (micros) in each one's opening hours.

    `weights` are the customers' preferences for branch, call centre and web (rows), before
    the weekday's rhythm: branches close on Sundays, the phone lines are quieter at weekends.
    """
    rhythm = [_BRANCH_BY_WEEKDAY[weekday], _CALLS_BY_WEEKDAY[weekday], 1.0]
    choice = _choose(rng, weights * rhythm)
    hour = _choose(rng, _SERVICE_HOURS[choice])
    micros = hour * 3_600_000_000 + rng.integers(0, 3_600_000_000, len(choice))
    channels = np.array([code(channel) for channel in _SERVICE_CHANNELS])[choice]
    return channels, micros


def _offer_event_id(decision_id: str, kind: EventType) -> str:
    """A deterministic event id, within the 64-character limit whatever the decision id."""
    digest = hashlib.blake2b(f"{decision_id}/{kind.value}".encode(), digest_size=10)
    return f"offer-{digest.hexdigest()}"


@dataclass(frozen=True, slots=True)
class _Complaints:
    """The complaints made on one day, each with the day and time it is resolved."""

    rows: np.ndarray
    channels: np.ndarray
    micros: np.ndarray
    resolved_after: np.ndarray  # days, 1.._RESOLVED_WITHIN_DAYS
    resolved_micros: np.ndarray  # within that day, in office hours


class SimulatedBank:
    """A population of customers with hidden traits, stored as numpy arrays (one row each).

    Traits: `segment` (codes into SEGMENTS), `age`, `income` (monthly), `digital_affinity`
    (0..1), `has_app`, `employed` (gets a monthly salary or pension on `salary_day`),
    `spend_level`, `unhappiness` (0..1, drives complaints, low survey scores and closed
    products), `channel_weights` (rows over PREFERENCE_CHANNELS), `interest` (rows over
    PRODUCTS) and `holdings` (products held at the start, balances, closing days).
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
        self.holdings = Holdings(
            np.random.default_rng([seed, 3]),
            segment=self.segment,
            relative_wealth=(log_income - np.log(_MEDIAN_INCOME[self.segment])) / _INCOME_SPREAD,
            income=self.income,
            spend_level=self.spend_level,
            unhappiness=self.unhappiness,
        )
        complaints = _COMPLAINT_CALM + _COMPLAINT_UNHAPPY * self.unhappiness.astype(np.float64) ** 2
        self._complaints_cumulative = np.cumsum(complaints * activity)
        self._truth_weights(action_ids)

    def _truth_weights(self, action_ids: Sequence[str]) -> None:
        """The hidden acceptance model's weights, one column per action."""
        self._action_column = {action_id: i for i, action_id in enumerate(action_ids)}
        profiles = [self._profile(action_id) for action_id in action_ids]
        self._base_logit = np.log([p.base_rate / (1 - p.base_rate) for p in profiles])
        lifts = [[p.channel_lift(channel) for p in profiles] for channel in Channel]
        self._channel_lift = np.array(lifts).reshape(len(Channel), -1)  # rows by code()
        self._segment_lift = np.array([p.segment_lift for p in profiles]).reshape(-1, 5).T
        self._trait_weight = np.array([p.trait_weight for p in profiles]).reshape(-1, 4).T
        products = [PRODUCTS.index(p.product) if p.product else -1 for p in profiles]
        self._product_column = np.array(products, dtype=np.int64)
        weights = [
            _holding_weights(a, p.product) for a, p in zip(action_ids, profiles, strict=True)
        ]
        shape = (-1, len(HOLDINGS))
        self._holding_weight = np.array([w[0] for w in weights]).reshape(shape).T
        self._balance_weight = np.array([w[1] for w in weights]).reshape(shape).T

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
        """True acceptance probabilities, shape (*shape of customer_index, len(action_ids)).

        Holdings count as they were at the start: a product closed since was left unhappy,
        and its opening is still in the customer's features (opened_*_count).
        """
        rows = np.asarray(customer_index, dtype=np.int64)
        columns = np.array([self._action_column[action_id] for action_id in action_ids])
        channel = Channel(channel)
        products = self._product_column[columns]
        interest = np.where(products >= 0, self.interest[rows][..., products.clip(0)], 0.0)
        held = self.holdings.held[rows].astype(np.float32)
        logit = (
            self._base_logit[columns]
            + self._channel_lift[code(channel), columns]
            + self._segment_lift[self.segment[rows]][..., columns]
            + self._traits[rows] @ self._trait_weight[:, columns]
            + _INTEREST_WEIGHT * interest
            + held @ self._holding_weight[:, columns]
            + self.holdings.balance_score(rows) @ self._balance_weight[:, columns]
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
            *self._accounts(rng, day, date.day, weekday),
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
            *self._complaints(day),
        ]
        return to_wire(batches, date, f"sim{self.seed}-d{day}-", self._id_table)

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
        product: np.ndarray | None = None,
    ) -> Batch:
        """Complete a batch: times from the hourly profile, browsed products by interest."""
        hour = rng.choice(24, size=len(rows), p=hours / hours.sum())
        micros = hour * 3_600_000_000 + rng.integers(0, 3_600_000_000, len(rows))
        if isinstance(types, EventType):
            types = np.full(len(rows), code(types))
        if product is None:
            product = self._browsed(rng, rows, types)
        return make_batch(rows, types, channels, micros, amount, product, attrs)

    def _browsed(self, rng: Rng, rows: np.ndarray, types: np.ndarray) -> np.ndarray:
        """The product of each product view (by interest; HOLDINGS columns), 0 for the others."""
        product = np.zeros(len(rows), dtype=np.int64)
        views = types == code(EventType.PRODUCT_VIEW)
        if views.any():  # PRODUCTS → HOLDINGS: one more
            product[views] = 1 + _choose(rng, np.exp(self.interest[rows[views]]))
        return product

    def _amounts(self, rng: Rng, rows: np.ndarray, base: float, share: float) -> np.ndarray:
        """Log-normal amounts around `base` plus `share` of the customer's monthly income."""
        return rng.lognormal(np.log(base + share * self.income[rows]), 0.8)

    def _accounts(self, rng: Rng, day: int, day_of_month: int, weekday: int) -> list[Batch]:
        """The products' events: the holdings and balances on day 0, monthly statements, and
        the products closed today."""
        batches = [self._statements(rng, day, day_of_month)]
        if day == 0:
            batches.append(self._opened(rng))
        return batches + self._closures(rng, day, weekday)

    def _statements(self, rng: Rng, day: int, day_of_month: int) -> Batch:
        """Balances of the accounts held, e-mailed: all on day 0 (the bank's records), then
        each customer's monthly statement on their salary day, after the overnight credit."""
        due = np.full(self.customers, day == 0) | (self.salary_day == day_of_month)
        balances = self.holdings.statements(rng, day, due)
        hours = _HOURS_RECORDS if day == 0 else _HOURS_STATEMENTS
        kind, rows, products = EventType.BALANCE, balances.rows, balances.products
        return self._batch(rng, rows, kind, Channel.EMAIL, hours, balances.amounts, None, products)

    def _opened(self, rng: Rng) -> Batch:
        """Day 0: every holding, as opened at the branch, on the web or in the app."""
        opened = self.holdings.opened()
        weights = self.channel_weights[opened.rows][:, [_BRANCH, _WEB, _MOBILE]]
        channels = _pick(rng, (Channel.BRANCH, Channel.WEB, Channel.MOBILE), weights)
        kind, hours = EventType.PRODUCT_OPENED, _HOURS_RECORDS
        return self._batch(rng, opened.rows, kind, channels, hours, None, None, opened.products)

    def _closures(self, rng: Rng, day: int, weekday: int) -> list[Batch]:
        """The products closed today at the branch, on the phone or on the web (by preference),
        each with its final zero balance at the same moment."""
        closed = self.holdings.closed(day)
        weights = self.channel_weights[closed.rows][:, [_BRANCH, _CALLS, _WEB]]
        channels, micros = _service_channels(rng, weights, weekday)
        final = has_balance(closed.products)
        kind = EventType.PRODUCT_CLOSED
        return [
            make_batch(closed.rows, kind, channels, micros, None, closed.products),
            make_batch(
                closed.rows[final],
                EventType.BALANCE,
                Channel.EMAIL,
                micros[final],
                closed.amounts[final],
                closed.products[final],
            ),
        ]

    def _salaries(self, rng: Rng, day_of_month: int) -> Batch:
        """Salaries and pensions, credited electronically overnight; shown as web events."""
        rows = np.flatnonzero(self.employed & (self.salary_day == day_of_month))
        amount = self.income[rows] * rng.normal(1.0, 0.02, len(rows))
        return self._batch(rng, rows, EventType.SALARY, Channel.WEB, _HOURS_NIGHT, amount)

    def _online(self, rng: Rng, kind: EventType, rates: np.ndarray) -> Batch:
        """Logins, transfers or product views in the app or on the web, by preference."""
        rows = self._occurrences(rng, rates)
        weights = self.channel_weights[rows][:, [_MOBILE, _WEB]]
        channels = _pick(rng, (Channel.MOBILE, Channel.WEB), weights)
        amount = self._amounts(rng, rows, 50.0, 0.05)
        return self._batch(rng, rows, kind, channels, _HOURS_ANY, amount)

    def _card_payments(self, rng: Rng) -> Batch:
        """Card payments in shops (pos) or online (web); travel spend reveals insurance interest."""
        rows = self._occurrences(rng, 0.4 + 0.8 * self.spend_level)
        travel = np.clip(0.03 * np.exp(self.interest[rows, PRODUCTS.index("insurance")]), 0, 0.3)
        category = _choose(rng, np.column_stack([np.outer(1 - travel, [4, 1.5, 2, 2.5]), travel]))
        online = rng.random(len(rows)) < 0.1 + 0.4 * self.digital_affinity[rows]
        channels = np.where(online, code(Channel.WEB), code(Channel.POS))
        amount = self._amounts(rng, rows, 8.0, 0.008) * np.where(category == 4, 4.0, 1.0)
        attrs = ("category", _CATEGORY_VALUES[category].tolist())
        return self._batch(rng, rows, EventType.TRANSACTION, channels, _HOURS_ANY, amount, attrs)

    def _atm_visits(self, rng: Rng) -> Batch:
        """Cash withdrawals (multiples of 20) and occasional deposits."""
        rows = self._occurrences(rng, 0.6 * self.channel_weights[:, _ATM])
        deposit = rng.random(len(rows)) < 0.15
        types = np.where(deposit, code(EventType.DEPOSIT), code(EventType.WITHDRAWAL))
        cash = 20.0 * rng.integers(1, 16, len(rows))
        amount = np.where(deposit, self._amounts(rng, rows, 100.0, 0.02), cash)
        return self._batch(rng, rows, types, Channel.ATM, _HOURS_ANY, amount)

    def _branch_visits(self, rng: Rng, weekday: int) -> Batch:
        """Counter business or advice on a product; fewer at weekends (complaints: apart)."""
        rates = 0.3 * self.channel_weights[:, _BRANCH] * _BRANCH_BY_WEEKDAY[weekday]
        rows = self._occurrences(rng, rates)
        options = (EventType.DEPOSIT, EventType.WITHDRAWAL, EventType.TRANSFER)
        types = _pick(rng, (*options, EventType.PRODUCT_VIEW), np.ones((len(rows), 4)))
        amount = self._amounts(rng, rows, 150.0, 0.05)
        return self._batch(rng, rows, types, Channel.BRANCH, _HOURS_OFFICE, amount)

    def _calls(self, rng: Rng, weekday: int) -> Batch:
        """Calls to the contact centre with a question about a product (complaints: apart)."""
        rates = 0.08 * self.channel_weights[:, _CALLS] * _CALLS_BY_WEEKDAY[weekday]
        rows = self._occurrences(rng, rates)
        kind, channel = EventType.PRODUCT_VIEW, Channel.CALL_CENTRE
        return self._batch(rng, rows, kind, channel, _HOURS_CALLS)

    def _messages(
        self, rng: Rng, kind: EventType, rate: float, shares: dict[Channel, float]
    ) -> Batch:
        """Surveys (a 0..10 score, lower when unhappy) or consent updates (marketing yes/no)."""
        rows = self._occurrences(rng, rate)
        picks = rng.choice(len(shares), size=len(rows), p=list(shares.values()))
        channels = np.array([code(channel) for channel in shares])[picks]
        if kind is EventType.SURVEY:
            score = np.clip(np.rint(rng.normal(8.6 - 9.0 * self.unhappiness[rows], 1.2)), 0, 10)
            attrs: Attrs = ("score", score.astype(int).tolist())
        else:
            attrs = ("marketing", (rng.random(len(rows)) < 0.6).tolist())
        return self._batch(rng, rows, kind, channels, _HOURS_ANY, None, attrs)

    def _complaints(self, day: int) -> list[Batch]:
        """Today's complaints, and those of the last _RESOLVED_WITHIN_DAYS days resolved today
        (on the channel they were made on)."""
        made = self._complaints_made(day)
        batches = [make_batch(made.rows, EventType.COMPLAINT, made.channels, made.micros)]
        for before in range(max(0, day - _RESOLVED_WITHIN_DAYS), day):
            earlier = self._complaints_made(before)
            due = earlier.resolved_after == day - before
            rows, channels = earlier.rows[due], earlier.channels[due]
            micros, kind = earlier.resolved_micros[due], EventType.COMPLAINT_RESOLVED
            batches.append(make_batch(rows, kind, channels, micros))
        return batches

    def _complaints_made(self, day: int) -> _Complaints:
        """The complaints of day `day`, from that day's own generator (so that later days can
        find which to resolve without the rest of its events): each customer complains at a
        daily rate that grows with the square of their unhappiness, fewer at weekends."""
        rng = np.random.default_rng([self.seed, 4, day])
        weekday = (self.start + timedelta(days=day)).weekday()
        total = float(self._complaints_cumulative[-1])
        count = rng.poisson(total * _COMPLAINTS_BY_WEEKDAY[weekday])
        draws = (1.0 - rng.random(count)) * total  # in (0, total]: a row in proportion to its rate
        rows = np.searchsorted(self._complaints_cumulative, draws).clip(0, self.customers - 1)
        weights = self.channel_weights[rows][:, [_BRANCH, _CALLS, _WEB]]
        weights[:, 1] *= _CALLS_FOR_COMPLAINTS
        channels, micros = _service_channels(rng, weights, weekday)
        after = rng.geometric(_RESOLVED_PER_DAY, count).clip(1, _RESOLVED_WITHIN_DAYS - 1)
        after += (weekday + after) % 7 == 6  # the complaints team does not work on Sundays
        office = _HOURS_OFFICE / _HOURS_OFFICE.sum()
        resolved = rng.choice(24, size=count, p=office) * 3_600_000_000
        resolved += rng.integers(0, 3_600_000_000, count)
        return _Complaints(rows, channels, micros, after, resolved)

    @cached_property
    def _id_table(self) -> np.ndarray:
        """Every customer id, in row order, as one shared string object each."""
        return np.array(self.customer_ids(), dtype=object)
