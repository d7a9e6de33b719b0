"""The simulated bank's products: who holds what when the simulation starts, balances, closures.

Holdings are hidden traits like the simulator's others, drawn once from a generator the
simulator seeds: which products each customer holds at the start (likelier by segment and,
within a segment, by wealth), a balance level per account, and the day on which a held
product is closed (sooner for unhappy customers: partial churn). They reach the engine only
as events, which the feature registry turns into its holds_*, opened/closed counts and
balance features:

- `product_opened` on day 0 for every holding: the bank's records as the simulation starts;
- `balance` snapshots of every account on day 0 and on the customer's monthly statement day;
- `product_closed` on the closing day, with a final zero balance.

A day's events depend on that day alone (closing days are drawn up front, not day by day),
so that any day can be generated without the ones before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.registry import PRODUCTS

#: Products a customer can hold: the feature registry's categories but its catch-all, in its
#: order — everyone's current account (where salary lands and card payments come from) first,
#: then the products customers browse. The tables below have a column per holding.
HOLDINGS = tuple(product for product in PRODUCTS if product != "other")
_CURRENT, _CARD, _SAVINGS, _INVESTMENT = map(
    HOLDINGS.index, ("current_account", "credit_card", "savings", "investment")
)
#: A closing day meaning "not within the simulation" (the largest uint16).
NEVER = np.iinfo(np.uint16).max
_DAYS_PER_MONTH = 30.44

# Per segment (rows in the simulator's SEGMENTS order), columns in HOLDINGS order.
_HOLDING_SHARE = np.array(  # of a segment's customers of median wealth holding the product
    [
        [1.0, 0.20, 0.06, 0.30, 0.00, 0.10, 0.02],  # student
        [1.0, 0.55, 0.20, 0.40, 0.12, 0.25, 0.08],  # young_digital
        [1.0, 0.60, 0.25, 0.50, 0.45, 0.45, 0.12],  # family
        [1.0, 0.80, 0.08, 0.75, 0.40, 0.50, 0.45],  # affluent
        [1.0, 0.35, 0.05, 0.60, 0.08, 0.30, 0.20],  # senior_branch
    ]
)
_SAVINGS_FACTOR = np.array([0.4, 0.8, 1.0, 2.0, 2.5])  # savings and investments, by segment

# Per product, in HOLDINGS order.
#: Logit lift per standard deviation of wealth within the segment: the richer hold more
#: savings, mortgages and investments, fewer personal loans.
_WEALTH_LIFT = np.array([0.0, 0.5, -0.3, 0.6, 0.5, 0.3, 0.9])
#: Median balance in months of the customer's income (insurance is a policy: no balance).
_BALANCE_MONTHS = np.array([0.8, 0.3, 4.0, 3.0, 30.0, 0.0, 6.0])
_BALANCE_SPREAD = np.array([0.6, 0.7, 0.5, 1.0, 0.4, 0.0, 1.0])  # sd of its log
_HAS_BALANCE = _BALANCE_MONTHS > 0
#: Change of the balance per month: loans are repaid, savings and investments grow.
_DRIFT_PER_MONTH = np.array([0.0, 0.0, -0.025, 0.01, -0.004, 0.0, 0.005])
_STATEMENT_NOISE = np.array([0.3, 0.35, 0.0, 0.03, 0.0, 0.0, 0.04])  # sd of its log
#: Daily hazard of closing a held product, for a customer of unhappiness u times
#: (_CLOSING_CALM + _CLOSING_UNHAPPY * u²): about 9% of them a year for the median customer,
#: 12% over all, half for the unhappiest 1%. The current account is never closed: the
#: simulated customers stay with the bank.
_CLOSING_RATE = np.array([0.0, 0.001, 0.0005, 0.0008, 0.0002, 0.001, 0.0007])
_CLOSING_CALM, _CLOSING_UNHAPPY = 0.2, 6.0


def has_balance(products: np.ndarray) -> np.ndarray:
    """Whether each product (a HOLDINGS column) has a balance: all but insurance."""
    return _HAS_BALANCE[products]


@dataclass(frozen=True, slots=True)
class ProductEvents:
    """Product events of one kind for one day: per event a customer row, a HOLDINGS column
    and an amount (a balance; zero where the event type carries none)."""

    rows: np.ndarray
    products: np.ndarray
    amounts: np.ndarray


class Holdings:
    """The products of every customer, stored as (customers, len(HOLDINGS)) arrays.

    `held`: held when the simulation starts; `level`: the balance then (0 where none is
    held or the product has no balance); `closing_day`: the day the product is closed
    (NEVER if not held or not closed within 65,534 days).
    """

    def __init__(
        self,
        rng: np.random.Generator,
        *,
        segment: np.ndarray,
        relative_wealth: np.ndarray,
        income: np.ndarray,
        spend_level: np.ndarray,
        unhappiness: np.ndarray,
    ) -> None:
        """Draw the holdings; `relative_wealth` is the customer's wealth z within the segment."""
        n, products = len(segment), len(HOLDINGS)
        share = _HOLDING_SHARE[segment].clip(1e-4, 1 - 1e-4)
        logit = np.log(share / (1 - share)) + np.outer(relative_wealth, _WEALTH_LIFT)
        held = rng.random((n, products)) < 1 / (1 + np.exp(-logit))
        held[:, _CURRENT] = True
        self.held = held
        self.level = self._levels(rng, held, segment, income, spend_level)
        self.closing_day = self._closing_days(rng, held, unhappiness)

    @staticmethod
    def _levels(
        rng: np.random.Generator,
        held: np.ndarray,
        segment: np.ndarray,
        income: np.ndarray,
        spend_level: np.ndarray,
    ) -> np.ndarray:
        """Balances in months of income: credit cards by spending, savings by segment."""
        months = np.broadcast_to(_BALANCE_MONTHS, held.shape).copy()
        months[:, _CARD] *= spend_level
        months[:, [_SAVINGS, _INVESTMENT]] *= _SAVINGS_FACTOR[segment][:, None]
        spread = rng.normal(0.0, 1.0, held.shape) * _BALANCE_SPREAD
        level = income[:, None] * months * np.exp(spread)
        return np.where(held, level, 0.0).astype(np.float32)

    @staticmethod
    def _closing_days(
        rng: np.random.Generator, held: np.ndarray, unhappiness: np.ndarray
    ) -> np.ndarray:
        """The day each held product is closed: an exponential wait at the daily hazard."""
        hazard = np.outer(_CLOSING_CALM + _CLOSING_UNHAPPY * unhappiness**2, _CLOSING_RATE)
        with np.errstate(divide="ignore"):
            wait = rng.exponential(1.0, held.shape) / hazard  # inf where never closed
        days = np.ceil(wait).clip(1, NEVER)
        return np.where(held, days, NEVER).astype(np.uint16)

    def held_on(self, day: int) -> np.ndarray:
        """Which products each customer holds during day `day` (closed that day: not held)."""
        return self.held & (self.closing_day > day)

    def balance_score(self, rows: np.ndarray) -> np.ndarray:
        """log1p(balance in thousands) at the start, per account: what the truth reads."""
        return np.log1p(self.level[rows] / 1000.0)

    def opened(self) -> ProductEvents:
        """Day 0: one `product_opened` per holding, in customer order."""
        rows, products = np.nonzero(self.held)
        return ProductEvents(rows, products, np.zeros(len(rows)))

    def statements(self, rng: np.random.Generator, day: int, due: np.ndarray) -> ProductEvents:
        """The balances on `day` of the accounts held by the customers whose statement is `due`.

        The start's level, moved by the monthly drift and a statement-to-statement noise.
        """
        rows, products = np.nonzero(self.held_on(day) & _HAS_BALANCE & due[:, None])
        trend = np.maximum(0.0, 1.0 + _DRIFT_PER_MONTH[products] * day / _DAYS_PER_MONTH)
        noise = np.exp(rng.normal(0.0, 1.0, len(rows)) * _STATEMENT_NOISE[products])
        return ProductEvents(rows, products, self.level[rows, products] * trend * noise)

    def closed(self, day: int) -> ProductEvents:
        """The products closed on `day` (their final balance is zero)."""
        rows, products = np.nonzero(self.closing_day == day)
        return ProductEvents(rows, products, np.zeros(len(rows)))
