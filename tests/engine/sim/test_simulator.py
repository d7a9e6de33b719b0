"""The simulated bank: reproducible, schema-valid traffic and a hidden truth worth learning."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from engine.sim.simulated_products import HOLDINGS
from engine.sim.simulator import DECLINE_SHARE, SEGMENTS, Answer, SimulatedBank
from features.events import Channel, Event

CATALOG = Path(__file__).resolve().parents[3] / "actions" / "catalog.yaml"
ACTIONS = yaml.safe_load(CATALOG.read_text())["actions"]
ACTION_IDS = [action["id"] for action in ACTIONS]
ACTION_PRODUCTS = [action["product"] for action in ACTIONS]
JANUARY = datetime(2026, 1, 1, tzinfo=UTC)  # a Thursday
DAYS_IN_JANUARY = 31


def make_bank(customers: int = 500, seed: int = 7, **kwargs: object) -> SimulatedBank:
    return SimulatedBank(
        customers=customers, seed=seed, start=JANUARY, action_ids=ACTION_IDS, **kwargs
    )


@pytest.fixture(scope="module")
def bank() -> SimulatedBank:
    return make_bank()


@pytest.fixture(scope="module")
def january(bank: SimulatedBank) -> list[list[dict[str, object]]]:
    """Every day of January for 500 customers: the events of each day."""
    return [bank.events_for_day(day) for day in range(DAYS_IN_JANUARY)]


def test_the_same_seed_gives_identical_events_and_truth() -> None:
    first, second = make_bank(seed=11), make_bank(seed=11)
    assert [first.events_for_day(d) for d in (0, 1, 5)] == [
        second.events_for_day(d) for d in (0, 1, 5)
    ]
    rows = np.arange(first.customers)
    assert np.array_equal(
        first.acceptance_probabilities(rows, ACTION_IDS, "mobile"),
        second.acceptance_probabilities(rows, ACTION_IDS, "mobile"),
    )


def test_a_day_does_not_depend_on_which_days_came_before() -> None:
    fresh, used = make_bank(seed=3), make_bank(seed=3)
    used.events_for_day(0)
    used.events_for_day(1)
    assert fresh.events_for_day(2) == used.events_for_day(2)
    assert fresh.events_for_day(20) == used.events_for_day(20)  # resolves earlier complaints


def test_different_seeds_differ() -> None:
    first, second = make_bank(seed=1), make_bank(seed=2)
    assert first.events_for_day(0) != second.events_for_day(0)
    assert not np.array_equal(first.segment, second.segment)


def test_every_event_is_valid_schema_v1_sorted_within_its_day(
    january: list[list[dict[str, object]]],
) -> None:
    for day, events in enumerate(january):
        assert events
        parsed = [Event.model_validate(event) for event in events]
        assert set().union(*(event.keys() for event in events)) <= set(Event.model_fields)
        start = JANUARY + timedelta(days=day)
        assert all(start <= event.ts < start + timedelta(days=1) for event in parsed)
        assert [event.ts for event in parsed] == sorted(event.ts for event in parsed)
    survey_scores = [e["attrs"]["score"] for d in january for e in d if e["type"] == "survey"]
    assert survey_scores
    assert all(0 <= score <= 10 for score in survey_scores)


def test_a_few_events_per_customer_per_day(
    bank: SimulatedBank, january: list[list[dict[str, object]]]
) -> None:
    per_customer_day = sum(map(len, january)) / (bank.customers * DAYS_IN_JANUARY)
    assert 1.5 < per_customer_day < 6.0
    busier = make_bank(activity=2.0)
    assert len(busier.events_for_day(1)) > 1.5 * len(january[1])  # day 0: the records too


def test_the_main_channels_all_appear(january: list[list[dict[str, object]]]) -> None:
    channels = {event["channel"] for events in january[:3] for event in events}
    assert {"branch", "atm", "mobile", "web", "call_centre", "sms", "pos"} <= channels


def test_event_ids_are_unique(bank: SimulatedBank, january: list[list[dict[str, object]]]) -> None:
    ids = [event["event_id"] for events in january for event in events]
    answers: list[Answer] = ["accept", "decline", "ignore"]
    for number, answer in enumerate(answers * 3):
        decision = f"decision-{number}"
        outcome = bank.outcome_events(
            "C000001", "savings_account", decision, "web", answer, JANUARY
        )
        ids += [event["event_id"] for event in outcome]
    assert len(ids) == len(set(ids))


def test_salary_arrives_once_a_month_for_each_employed_customer(
    bank: SimulatedBank, january: list[list[dict[str, object]]]
) -> None:
    salaries = Counter(
        bank.customer_index(str(event["customer_id"]))
        for events in january
        for event in events
        if event["type"] == "salary"
    )
    assert set(salaries) == set(np.flatnonzero(bank.employed).tolist())
    assert set(salaries.values()) == {1}
    assert 0 < bank.employed.sum() < bank.customers  # some students have no salary


def test_fewer_branch_visits_at_weekends(january: list[list[dict[str, object]]]) -> None:
    visits: dict[bool, list[int]] = {True: [], False: []}  # by "is a weekend day"
    for day, events in enumerate(january):
        weekend = (JANUARY + timedelta(days=day)).weekday() >= 5
        visits[weekend].append(sum(event["channel"] == "branch" for event in events))
    assert len(visits[True]) == 9
    assert np.mean(visits[True]) < 0.5 * np.mean(visits[False])


def test_complaints_come_from_unhappy_customers_and_are_resolved_within_two_weeks(
    bank: SimulatedBank, january: list[list[dict[str, object]]]
) -> None:
    open_complaints: Counter[tuple[object, object]] = Counter()  # by (customer, channel)
    per_customer = np.zeros(bank.customers)
    made_by_day: list[int] = []  # complaints made up to each day
    resolved = 0
    for day, events in enumerate(january):
        sunday = (JANUARY + timedelta(days=day)).weekday() == 6
        for event in events:
            key = (event["customer_id"], event["channel"])
            if event["type"] == "complaint":
                open_complaints[key] += 1
                per_customer[bank.customer_index(str(event["customer_id"]))] += 1
                assert event["channel"] in {"branch", "call_centre", "web"}
                assert not (sunday and event["channel"] == "branch")
            elif event["type"] == "complaint_resolved":
                assert open_complaints[key] > 0, "resolved before it was made"
                open_complaints[key] -= 1
                resolved += 1
                assert not sunday
        made_by_day.append(int(per_customer.sum()))
    last = len(january) - 1
    assert resolved >= made_by_day[last - 14] > 10  # every complaint is resolved within 14 days
    unhappy = bank.unhappiness > np.quantile(bank.unhappiness, 0.75)
    calm = bank.unhappiness < np.quantile(bank.unhappiness, 0.25)
    assert per_customer[unhappy].mean() > 3 * per_customer[calm].mean()


def test_survey_scores_fall_with_unhappiness(
    bank: SimulatedBank, january: list[list[dict[str, object]]]
) -> None:
    surveys = [event for events in january for event in events if event["type"] == "survey"]
    unhappiness = [bank.unhappiness[bank.customer_index(str(e["customer_id"]))] for e in surveys]
    scores = [e["attrs"]["score"] for e in surveys]
    assert len(surveys) > 50
    assert np.corrcoef(unhappiness, scores)[0, 1] < -0.4


def test_probabilities_are_realistic_and_depend_on_the_channel(bank: SimulatedBank) -> None:
    rows = np.arange(bank.customers)
    by_channel = {
        channel: bank.acceptance_probabilities(rows, ACTION_IDS, channel) for channel in Channel
    }
    every = np.stack(list(by_channel.values()))
    assert every.shape == (len(Channel), bank.customers, len(ACTION_IDS))
    assert ((every > 0) & (every < 1)).all()
    # realistic where the customer does not hold the action's product already (those almost
    # never accept: tests/engine/sim/test_simulated_products.py)
    holds_it = np.zeros((bank.customers, len(ACTION_IDS)), dtype=bool)
    for j, product in enumerate(ACTION_PRODUCTS):
        if product in HOLDINGS:
            holds_it[:, j] = bank.holdings.held[:, HOLDINGS.index(product)]
    open_pairs = every[:, ~holds_it]
    assert np.mean((open_pairs >= 0.005) & (open_pairs <= 0.4)) > 0.8
    mortgage = ACTION_IDS.index("mortgage_consultation")
    insurance = ACTION_IDS.index("travel_insurance")
    assert by_channel["branch"][:, mortgage].mean() > 1.5 * by_channel["sms"][:, mortgage].mean()
    assert by_channel["mobile"][:, insurance].mean() > by_channel["branch"][:, insurance].mean()
    one = bank.acceptance_probability("C000042", "personal_loan", Channel.CALL_CENTRE)
    assert one == pytest.approx(by_channel["call_centre"][41, ACTION_IDS.index("personal_loan")])


def test_the_best_action_differs_between_segments(bank: SimulatedBank) -> None:
    rows = np.arange(bank.customers)
    for channel in ("mobile", "branch"):
        probabilities = bank.acceptance_probabilities(rows, ACTION_IDS, channel)
        best = {
            ACTION_IDS[probabilities[bank.segment == code].mean(axis=0).argmax()]
            for code in range(len(SEGMENTS))
        }
        assert len(best) >= 3, (channel, best)
        # choosing per customer beats any one action shown to everybody
        assert probabilities.max(axis=1).mean() > 1.3 * probabilities.mean(axis=0).max()


def test_unknown_actions_get_a_seeded_segment_dependent_truth() -> None:
    def truth(seed: int) -> np.ndarray:
        bank = SimulatedBank(customers=300, seed=seed, start=JANUARY, action_ids=["new_offer"])
        return bank.acceptance_probabilities(np.arange(300), ["new_offer"], "web")[:, 0]

    assert np.array_equal(truth(5), truth(5))
    assert not np.array_equal(truth(5), truth(6))
    assert 0.001 < truth(5).mean() < 0.2


def test_respond_draws_answers_with_the_true_probability(bank: SimulatedBank) -> None:
    customer = "C000123"
    probability = bank.acceptance_probability(customer, "savings_account", "mobile")
    rng = np.random.default_rng(2026)
    draws = 20_000
    answers = Counter(
        bank.respond(customer, "savings_account", "mobile", rng) for _ in range(draws)
    )
    assert set(answers) <= {"accept", "decline", "ignore"}
    tolerance = 4 * np.sqrt(probability * (1 - probability) / draws)
    assert abs(answers["accept"] / draws - probability) < tolerance
    declined = answers["decline"] / (answers["decline"] + answers["ignore"])
    assert declined == pytest.approx(DECLINE_SHARE, abs=0.02)


@pytest.mark.parametrize(
    ("answer", "types"),
    [
        ("accept", ["offer_impression", "offer_accepted"]),
        ("decline", ["offer_impression", "offer_declined"]),
        ("ignore", ["offer_impression"]),
    ],
)
def test_outcome_events_are_valid_offer_events(
    bank: SimulatedBank, answer: Answer, types: list[str]
) -> None:
    shown = JANUARY + timedelta(hours=10)
    events = bank.outcome_events("C000007", "credit_card_gold", "dec-1", "mobile", answer, shown)
    assert [event["type"] for event in events] == types
    parsed = [Event.model_validate(event) for event in events]
    assert all(e.action_id == "credit_card_gold" and e.decision_id == "dec-1" for e in parsed)
    assert parsed[0].ts == shown
    assert all(e.ts >= shown for e in parsed)


def test_identities(bank: SimulatedBank) -> None:
    ids = bank.customer_ids()
    assert ids[0] == bank.customer_id(0) == "C000001"
    assert len(ids) == len(set(ids)) == bank.customers
    assert all(bank.customer_index(cid) == index for index, cid in enumerate(ids))
    assert bank.segment_of("C000001") == bank.segment_of(0) in SEGMENTS
    for bad in ("C000000", "C999999", "X000001", "C"):
        with pytest.raises(KeyError):
            bank.customer_index(bad)
    with pytest.raises(IndexError):
        bank.customer_id(bank.customers)


def test_a_hundred_thousand_customers_are_cheap_to_build() -> None:
    began = time.perf_counter()
    bank = make_bank(customers=100_000, seed=1)
    assert time.perf_counter() - began < 10.0
    assert bank.customer_id(99_999) == "C100000"
    assert bank.channel_weights.shape == (100_000, 5)
    assert set(np.unique(bank.segment).tolist()) == set(range(len(SEGMENTS)))
    assert bank.holdings.held.shape == bank.holdings.level.shape == (100_000, len(HOLDINGS))
    probabilities = bank.acceptance_probabilities(np.arange(100_000), ACTION_IDS, "web")
    assert probabilities.shape == (100_000, len(ACTION_IDS))


def test_a_day_of_thirty_thousand_customers_is_cheap_to_generate() -> None:
    """Day 0 is the busiest (the bank's records too): vectorised, it takes a few seconds."""
    bank = make_bank(customers=30_000, seed=1)
    began = time.perf_counter()
    events = bank.events_for_day(0)
    assert time.perf_counter() - began < 30.0
    assert len(events) > 30_000 * 5
    assert {event["customer_id"] for event in events} == set(bank.customer_ids())
