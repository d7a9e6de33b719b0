"""The proof-of-learning benchmark's mechanics, on a tiny simulated bank (seconds, not minutes).

What the figures rest on: decisions made as `decide` makes them, answers drawn as the bank
draws them, the same draw for every policy, an oracle no policy beats, regret that only
grows, learners that learn from the labels they are given, and the result's JSON shape.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from actions.catalog import Catalog, load_catalog
from actions.decide import decide
from benchmarks.common import SIMULATION_START
from benchmarks.learning_quality import (
    EXPLORATION,
    LEARN_IGNORED,
    POLICIES,
    Context,
    Learner,
    Shown,
    Sizes,
    Static,
    Stream,
    VowpalWabbit,
    answer_of,
    base_features,
    build_policies,
    decision_stream,
    figures_of,
    measure,
    play,
    reward_of,
    series_of,
)
from engine.core.settings import DEFAULT_CATALOG
from engine.sim.simulator import SimulatedBank
from features.events import Channel
from models.exploration import Greedy
from models.features_vector import SECONDS_PER_DAY
from models.propensity import BaseRateModel

SEED = 3
TINY = Sizes(
    customers=300, history_days=7, decisions=1_500, last=500, step=100, window=300, repeats=2
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(DEFAULT_CATALOG)


@pytest.fixture(scope="module")
def bank(catalog: Catalog) -> SimulatedBank:
    return SimulatedBank(
        customers=TINY.customers,
        seed=SEED,
        start=SIMULATION_START,
        action_ids=[action.id for action in catalog.actions],
    )


@pytest.fixture(scope="module")
def stream(bank: SimulatedBank, catalog: Catalog) -> Stream:
    now = bank.start.timestamp() + TINY.history_days * SECONDS_PER_DAY
    features = base_features(bank, TINY.history_days, now)
    rng = np.random.default_rng(SEED)
    return decision_stream(bank, features, catalog, TINY.decisions, now, rng)


@pytest.fixture(scope="module")
def shown(stream: Stream, catalog: Catalog) -> dict[str, Shown]:
    return play(stream, build_policies(stream, catalog, SEED))


# -- decisions and answers --------------------------------------------------------------------


def test_decisions_have_the_candidates_and_x_that_decide_gives(
    stream: Stream, bank: SimulatedBank, catalog: Catalog
) -> None:
    static = Greedy(BaseRateModel(catalog.base_rates()))
    for t in range(0, len(stream), 25):
        customer = int(stream.customers[t])
        decision = decide(
            customer_id=bank.customer_id(customer),
            channel=stream.channels[t],
            features=stream.features[customer],
            catalog=catalog,
            policy=static,
            n=1,
            now=stream.now,
        )
        context = stream.context(t)
        assert context.candidates == tuple(decision.candidates)
        assert context.x == decision.x
        assert context.x[f"channel_{stream.channels[t].value}"] == 1.0  # the channel is in x


def test_every_decision_has_a_candidate_and_uses_the_demo_channels(stream: Stream) -> None:
    assert len(stream) == TINY.decisions
    assert all(stream.candidates)
    assert len(set(stream.channels)) >= 5
    assert stream.truth.shape == (TINY.decisions, len(stream.action_ids))
    assert ((stream.truth > 0.0) & (stream.truth < 1.0)).all()


@pytest.mark.parametrize("seed", range(40))
def test_answers_are_drawn_as_the_bank_draws_them(bank: SimulatedBank, seed: int) -> None:
    action_id, channel = "savings_account", Channel.MOBILE
    expected = bank.respond(bank.customer_id(seed), action_id, channel, np.random.default_rng(seed))
    probability = bank.acceptance_probability(seed, action_id, channel)
    answer = answer_of(float(np.random.default_rng(seed).random()), probability)
    assert {True: "accept", False: "decline", None: "ignore"}[answer] == expected


def test_the_learner_is_the_engines_default_policy() -> None:
    assert EXPLORATION == "thompson"  # else `Learner` no longer plays the engine's default


def test_the_engine_defaults_decide_what_an_ignored_offer_teaches() -> None:
    assert reward_of(True) is True
    assert reward_of(False) is False
    assert reward_of(None) is (False if LEARN_IGNORED else None)


# -- pairing, the oracle, regret ----------------------------------------------------------------


def test_two_identical_policies_get_identical_answers(stream: Stream, catalog: Catalog) -> None:
    shown = play(stream, {"one": Static(catalog), "two": Static(catalog)})
    np.testing.assert_array_equal(shown["one"].accepted, shown["two"].accepted)
    np.testing.assert_array_equal(shown["one"].probability, shown["two"].probability)


def test_the_oracle_is_accepted_whenever_any_policy_is(shown: dict[str, Shown]) -> None:
    """One draw per decision: the likelier action is accepted whenever the other one is."""
    for name in POLICIES:
        assert not (shown[name].accepted & ~shown["oracle"].accepted).any(), name


def test_the_oracle_shows_the_likeliest_candidate_in_every_decision(
    shown: dict[str, Shown], stream: Stream
) -> None:
    for name in POLICIES:
        assert (shown["oracle"].probability >= shown[name].probability).all(), name
    for t in range(len(stream)):
        columns = [stream.action_ids.index(a) for a in stream.candidates[t]]
        assert shown["oracle"].probability[t] == stream.truth[t, columns].max()
    assert shown["oracle"].probability.mean() > 1.2 * shown["random"].probability.mean()


def test_regret_never_decreases_and_is_zero_for_the_oracle(shown: dict[str, Shown]) -> None:
    series = series_of(shown, TINY.step, TINY.window)
    for name in POLICIES:
        assert (np.diff(series["cumulative_regret"][name]) >= 0.0).all(), name
    assert series["cumulative_regret"]["oracle"] == [0.0] * len(series["decisions"])
    assert series["cumulative_regret"]["random"][-1] > 0.0


def test_accept_rate_series_are_trailing_window_means(shown: dict[str, Shown]) -> None:
    series = series_of(shown, TINY.step, TINY.window)
    assert series["decisions"] == list(range(TINY.step, TINY.decisions + 1, TINY.step))
    for name in POLICIES:
        accepted = shown[name].accepted
        for end, rate in zip(series["decisions"], series["accept_rate"][name], strict=True):
            assert rate == pytest.approx(accepted[max(0, end - TINY.window) : end].mean())


def test_figures_quote_rates_regrets_and_the_targets_ratios(shown: dict[str, Shown]) -> None:
    figures = figures_of(shown, TINY.last)
    learner = shown["learner"]
    assert figures["learner_accept_rate"] == learner.accepted.mean()
    assert figures["learner_accept_rate_last"] == learner.accepted[-TINY.last :].mean()
    assert figures["oracle_regret"] == 0.0
    assert figures["learner_over_random"] == pytest.approx(
        learner.accepted.mean() / shown["random"].accepted.mean()
    )
    assert figures["oracle_over_random"] >= figures["learner_over_random"]


# -- the learners learn from the labels they are given -----------------------------------------


def _prefers_the_accepted_action(make: Callable[[], Learner | VowpalWabbit]) -> float:
    """How often, over the last 100 of 600 decisions, a learner shows the action that is
    always accepted rather than the one always declined."""
    policy = make()
    context = Context({"f": 1.0, "channel_mobile": 1.0}, ("declined_one", "accepted_one"))
    chosen = []
    for t in range(600):
        action_id = policy.choose(t, context)
        policy.learn(context, action_id, action_id == "accepted_one")
        chosen.append(action_id == "accepted_one")
    return float(np.mean(chosen[-100:]))


def test_our_learner_learns_which_action_is_accepted() -> None:
    priors = {"declined_one": 0.5, "accepted_one": 0.05}  # the prior points the wrong way
    assert _prefers_the_accepted_action(lambda: Learner(priors, seed=1)) > 0.9


def test_vowpal_wabbit_learns_which_action_is_accepted() -> None:
    assert _prefers_the_accepted_action(lambda: VowpalWabbit(seed=1)) > 0.9


def test_vowpal_wabbit_learns_only_the_action_it_chose() -> None:
    policy = VowpalWabbit(seed=1)
    context = Context({"f": 1.0}, ("a", "b"))
    chosen = policy.choose(0, context)
    with pytest.raises(ValueError, match="another action"):
        policy.learn(context, "b" if chosen == "a" else "a", True)


# -- the result ------------------------------------------------------------------------------


def test_the_result_has_the_figures_targets_and_series_of_every_policy(tmp_path: Path) -> None:
    result = measure(TINY, quick=True)
    document = orjson.loads(result.write(tmp_path).read_bytes())
    assert document["name"] == "learning_quality"
    assert document["subject"]["figure"] == "learner_accept_rate"
    assert document["baseline"]["figure"] == "random_accept_rate"
    assert {target["figure"] for target in document["targets"]} == {
        "learner_over_random",
        "learner_over_oracle_last",
        "learner_over_vw",
    }
    for name in POLICIES:
        for suffix in ("accept_rate", "accept_rate_last", "regret"):
            assert len(document["figures"][f"{name}_{suffix}"]["repeats"]) == TINY.repeats
    series = document["series"]
    assert set(series) == {"decisions", "accept_rate", "cumulative_regret"}
    points = TINY.decisions // TINY.step
    assert len(series["decisions"]) == points
    for key in ("accept_rate", "cumulative_regret"):
        assert set(series[key]) == set(POLICIES)
        assert all(len(values) == points for values in series[key].values())
    first, second = (document["figures"]["random_accept_rate"]["repeats"][i] for i in (0, 1))
    assert first != second  # each repeat has its own seed
