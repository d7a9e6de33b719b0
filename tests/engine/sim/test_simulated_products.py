"""The simulated bank's products: holdings, balances and closures, seen through events and truth."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from engine.sim.simulated_products import HOLDINGS, NEVER, has_balance
from engine.sim.simulator import PRODUCTS, SEGMENTS, SimulatedBank
from features.config import FeatureConfig
from features.events import Event, decode_message
from features.reading import read_features
from features.state import FeatureFold

CATALOG = Path(__file__).resolve().parents[3] / "actions" / "catalog.yaml"
ACTIONS = yaml.safe_load(CATALOG.read_text())["actions"]
ACTION_IDS = [action["id"] for action in ACTIONS]
#: The catalog's actions that sell one of the simulated products, with that product.
PRODUCT_ACTIONS = {a["id"]: a["product"] for a in ACTIONS if a["product"] in PRODUCTS}
JANUARY = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 31
Events = list[dict[str, Any]]


def make_bank(customers: int = 2_000, seed: int = 7) -> SimulatedBank:
    return SimulatedBank(customers=customers, seed=seed, start=JANUARY, action_ids=ACTION_IDS)


@pytest.fixture(scope="module")
def bank() -> SimulatedBank:
    return make_bank()


@pytest.fixture(scope="module")
def january(bank: SimulatedBank) -> list[Events]:
    return [bank.events_for_day(day) for day in range(DAYS)]


def of_type(events: Events, kind: str) -> Events:
    return [event for event in events if event["type"] == kind]


def row(bank: SimulatedBank, event: dict[str, Any]) -> int:
    return bank.customer_index(str(event["customer_id"]))


def test_the_catalog_sells_every_simulated_product() -> None:
    assert sorted(PRODUCT_ACTIONS.values()) == sorted(PRODUCTS)
    assert HOLDINGS[0] == "current_account"
    assert HOLDINGS[1:] == PRODUCTS


def test_day_zero_opens_every_holding_and_no_later_day_opens_any(
    bank: SimulatedBank, january: list[Events]
) -> None:
    opened = defaultdict(set)
    for event in of_type(january[0], "product_opened"):
        opened[row(bank, event)].add(event["product"])
    held = bank.holdings.held
    assert len(opened) == bank.customers  # everyone has a current account
    for customer in range(bank.customers):
        assert opened[customer] == {HOLDINGS[j] for j in np.flatnonzero(held[customer])}
    assert not any(of_type(events, "product_opened") for events in january[1:])
    channels = Counter(event["channel"] for event in of_type(january[0], "product_opened"))
    assert set(channels) == {"branch", "web", "mobile"}


def test_holdings_depend_on_segment_and_wealth(bank: SimulatedBank) -> None:
    held = bank.holdings.held
    share = {name: held[bank.segment == code].mean(axis=0) for code, name in enumerate(SEGMENTS)}
    investment, mortgage = HOLDINGS.index("investment"), HOLDINGS.index("mortgage")
    assert share["affluent"][investment] > 3 * share["student"][investment]
    assert share["family"][mortgage] > 5 * share["student"][mortgage] + 0.1
    assert held[:, 0].all()
    family = bank.segment == SEGMENTS.index("family")
    richer = family & (bank.income > np.median(bank.income[family]))
    poorer = family & ~richer
    assert held[richer, investment].mean() > 1.3 * held[poorer, investment].mean()


def test_every_account_has_a_balance_on_day_zero_and_on_its_statement_day(
    bank: SimulatedBank, january: list[Events]
) -> None:
    """Statements of every account held: all on day 0, then on each customer's salary day."""
    with_balance = has_balance(np.arange(len(HOLDINGS)))
    for day, events in enumerate(january):
        closures = {(e["customer_id"], e["ts"]) for e in of_type(events, "product_closed")}
        statements = Counter(
            row(bank, e)
            for e in of_type(events, "balance")
            if (e["customer_id"], e["ts"]) not in closures  # not a closed product's final zero
        )
        held = bank.holdings.held_on(day) & with_balance
        due = np.ones(bank.customers, dtype=bool) if day == 0 else bank.salary_day == day + 1
        assert statements == {c: int(held[c].sum()) for c in np.flatnonzero(due)}, day
    day_zero = of_type(january[0], "balance")
    assert "insurance" not in {event["product"] for event in day_zero}
    assert all(event["channel"] == "email" and event["amount"] >= 0 for event in day_zero)


def test_balances_follow_the_hidden_levels(bank: SimulatedBank, january: list[Events]) -> None:
    """Savings move little from their level; loans are repaid month by month."""
    savings, loan = HOLDINGS.index("savings"), HOLDINGS.index("personal_loan")
    first = {(row(bank, e), e["product"]): e["amount"] for e in of_type(january[0], "balance")}
    later = {
        (row(bank, e), e["product"]): e["amount"]
        for events in january[1:]
        for e in of_type(events, "balance")
        if e["amount"] > 0
    }
    level = bank.holdings.level
    savers = [c for (c, product) in first if product == "savings"]
    assert savers
    assert all(first[c, "savings"] == pytest.approx(level[c, savings], rel=0.15) for c in savers)
    repaid = [first[key] - later[key] for key in later if key[1] == "personal_loan"]
    assert repaid
    assert all(amount > 0 for amount in repaid)
    assert level[bank.holdings.held[:, loan], loan].min() > 0


def test_closed_products_end_with_a_zero_balance_and_no_more_statements(
    bank: SimulatedBank, january: list[Events]
) -> None:
    closures = 0
    for day, events in enumerate(january):
        key = ("customer_id", "product", "ts")
        zero = {tuple(e[k] for k in key) for e in of_type(events, "balance") if not e["amount"]}
        for event in of_type(events, "product_closed"):
            closures += 1
            customer, product = row(bank, event), HOLDINGS.index(str(event["product"]))
            assert bank.holdings.closing_day[customer, product] == day
            assert not bank.holdings.held_on(day)[customer, product]
            if has_balance(np.array([product]))[0]:
                assert tuple(event[k] for k in key) in zero
            assert event["channel"] in {"branch", "call_centre", "web"}
    assert closures > 5
    assert not of_type(january[0], "product_closed")


def test_unhappy_customers_close_more_and_current_accounts_stay(bank: SimulatedBank) -> None:
    holdings = bank.holdings
    within_a_year = (holdings.closing_day <= 365) & holdings.held
    unhappy = bank.unhappiness > np.quantile(bank.unhappiness, 0.8)
    calm = bank.unhappiness < np.quantile(bank.unhappiness, 0.2)
    assert within_a_year[unhappy, 1:].mean() > 3 * within_a_year[calm, 1:].mean()
    assert (holdings.closing_day[:, 0] == NEVER).all()
    assert (holdings.closing_day[~holdings.held] == NEVER).all()


def test_the_worker_accepts_every_event_as_sent(january: list[Events]) -> None:
    """Day 0 (the records) and a later day, through the worker's own decoding."""
    for events in (january[0], january[20]):
        decoded, rejections, _ = decode_message(orjson.dumps(events))
        assert not rejections
        assert [event.to_wire() for event in decoded] == [
            Event.model_validate(event).to_wire() for event in events
        ]
        assert len(decoded) == len(events)


def test_the_engine_sees_the_holdings_and_balances_the_truth_uses(
    bank: SimulatedBank, january: list[Events]
) -> None:
    """Folded as the feature store folds them, the events give holds_* and balances."""
    fold = FeatureFold(FeatureConfig())
    watched = range(0, bank.customers, 10)
    states = {customer: fold.new_state() for customer in watched}
    for events in january:
        for raw in events:
            if (customer := row(bank, raw)) in states:
                fold.apply(states[customer], Event.model_validate(raw))
    now = (JANUARY + timedelta(days=DAYS)).timestamp()
    held = bank.holdings.held_on(DAYS - 1)
    for customer, state in states.items():
        features = read_features(fold, state, now)
        for j, product in enumerate(HOLDINGS):
            assert features[f"holds_{product}"] == held[customer, j]
            assert features[f"opened_{product}_count"] == bank.holdings.held[customer, j]
        if held[customer, HOLDINGS.index("savings")]:
            assert features["balance_savings_amount"] > 0


def test_holders_almost_never_take_their_product_again(bank: SimulatedBank) -> None:
    rows = np.arange(bank.customers)
    for channel in ("web", "branch", "mobile"):
        truth = bank.acceptance_probabilities(rows, list(PRODUCT_ACTIONS), channel)
        for j, product in enumerate(PRODUCT_ACTIONS.values()):
            holders = bank.holdings.held[:, HOLDINGS.index(product)]
            assert 0 < holders.sum() < bank.customers
            assert truth[holders, j].mean() < 0.004
            assert np.quantile(truth[holders, j], 0.99) < 0.02
            assert truth[~holders, j].mean() > 5 * truth[holders, j].mean()


def test_savings_balances_lift_the_investment_fund() -> None:
    bank = make_bank(customers=300, seed=5)
    savings = HOLDINGS.index("savings")
    before = bank.acceptance_probabilities(np.arange(300), ["investment_fund"], "branch")
    bank.holdings.level[:, savings] *= 20  # as if every saver had saved 20 times more
    after = bank.acceptance_probabilities(np.arange(300), ["investment_fund"], "branch")
    investors = bank.holdings.held[:, HOLDINGS.index("investment")]
    lifted = bank.holdings.held[:, savings] & ~investors
    assert (after[lifted] > before[lifted]).all()
    assert (after[~bank.holdings.held[:, savings]] == before[~bank.holdings.held[:, savings]]).all()


def test_holdings_are_a_pure_function_of_the_seed() -> None:
    first, second, other = make_bank(500, seed=3), make_bank(500, seed=3), make_bank(500, seed=4)
    for name in ("held", "level", "closing_day"):
        assert np.array_equal(getattr(first.holdings, name), getattr(second.holdings, name))
    assert not np.array_equal(first.holdings.level, other.holdings.level)
