"""Proof of learning: how close the engine's learning policy gets to the best action per customer.

Each repeat builds, from its own seed:

- a simulated bank (`engine.sim.simulator`) and `history_days` days of its customers' events,
  from which each customer's features are computed as the engine would read them at the
  end of that history (`base_features`);
- a stream of decisions at that time: a customer drawn uniformly, a channel drawn with the
  demo's shares (`engine.sim.demo.DECISION_CHANNELS`). The candidates are the catalog's actions
  allowed on the channel whose eligibility rule passes, and the model input is
  `vectorise(features, now=..., channel=...)`, both as `actions.decide.decide` makes them:
  the channel is part of x. Decisions with no candidate are left out;
- the answers: the hidden truth `SimulatedBank.acceptance_probabilities` gives p(t, a) for
  every decision t and action a. One uniform draw u_t per decision is shared by every
  action and every policy (common random numbers): action a is accepted iff u_t < p(t, a),
  else declined or ignored as `SimulatedBank.respond` splits the rest. Two policies showing
  the same action get the same answer, and one showing a likelier action is accepted
  whenever the other is: the comonotone pairing, the least noisy comparison there is.

Five policies face the same stream. Each shows one action per decision and learns from
its answer right away, as the engine's defaults learn: an acceptance is 1, a decline 0,
and an ignored offer 0 too when `no_answer_mode` is "negative" (not learned from when it
is "ignore"):

- `learner`: the engine's default, Thompson sampling (`models.exploration`) over
  `models.online.OnlinePropensity` started from the catalog's base rates, with the
  default settings (`engine.core.settings`, and `models.learning.Learner`'s model);
- `random`: a uniformly random candidate;
- `static`: the engine's static policy, the candidates ranked by the catalog's base rate ×
  value whoever the customer (`Greedy` over `BaseRateModel`);
- `oracle`: the candidate with the highest true probability; it reads the hidden truth,
  which no other policy does;
- `vw`: Vowpal Wabbit's `cb_explore_adf` (VW_ARGUMENTS), fed the same x as shared features
  and the candidates as its actions; it returns a distribution, which the policy samples.

The objective is the accept rate, so the learner and VW rank by acceptance probability
alone (the engine multiplies it by each action's value when it serves; the static policy
keeps that ranking, as it is the engine's). Simplifications, the same for every policy:
the engine learns in batches within seconds, here at once; the features stay as they were
at the end of the history, so an offer changes neither them nor the contact history
(no decline cool-off or contact caps apply). The repeats run in parallel processes: the
figures are accept rates, not timings.

Figures per policy: `<policy>_accept_rate` over the stream, `<policy>_accept_rate_last`
over its last `last_decisions` decisions (the last 50,000; the last quarter in quick
mode), `<policy>_regret`: the expected cumulative regret against the oracle,
Σ_t p(t, oracle's action) − p(t, the policy's action), in accepts. Ratios:
`learner_over_random`, `learner_over_oracle_last`, `learner_over_vw` (and `_last`), and
`oracle_over_random`, the most any policy can reach on the first target. The issue's
targets: learner ≥ 2 × random, ≥ 85% of the oracle over the last 50,000 decisions, ≥ VW.
`series` holds, every `step` decisions, each policy's accept rate over the trailing
`window` decisions and its cumulative regret: the median over the repeats, point by point.

Run: `python -m benchmarks.learning_quality [--quick]`.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import vowpalwabbit

from actions.catalog import Catalog, load_catalog, rule_context
from benchmarks.common import SIMULATION_START, Result, Target, benchmark_main, median_of
from engine.core.settings import DEFAULT_CATALOG, Settings
from engine.sim.demo import DECISION_CHANNELS
from engine.sim.simulator import DECLINE_SHARE, SimulatedBank
from features.config import FeatureConfig
from features.events import Channel, Event
from features.reading import Features, read_features
from features.state import FeatureFold
from features.tiers import quintile_edges, rfm_values
from models.exploration import Greedy, ThompsonSampling
from models.features_vector import SECONDS_PER_DAY, vectorise
from models.online import OnlinePropensity
from models.propensity import BaseRateModel

NAME = "learning_quality"
POLICIES = ("learner", "random", "static", "oracle", "vw")
#: Vowpal Wabbit's contextual bandit with action-dependent features: x in namespace x, the
#: action's id in namespace a, crossed (-q xa) so that each action has its own weights on
#: x, as each of our actions has its own model. SquareCB is the exploration VW's docs
#: recommend; it did best of those tried here (epsilon-greedy 0.05, the default, cover 4,
#: and SquareCB's gamma_scale and learning rate varied).
VW_ARGUMENTS = "--cb_explore_adf --squarecb -q xa --quiet"
#: The engine's defaults, read from the settings' declarations (not from the environment).
EXPLORATION: str = Settings.model_fields["exploration"].default
THOMPSON_DRAWS: int = Settings.model_fields["thompson_draws"].default
LEARN_IGNORED: bool = Settings.model_fields["no_answer_mode"].default == "negative"


@dataclass(frozen=True, slots=True)
class Sizes:
    """How big one run is: the bank, its history, the stream and the series' resolution."""

    customers: int
    history_days: int
    decisions: int
    last: int  # the final decisions whose accept rate is compared with the oracle's
    step: int  # decisions between two points of a series
    window: int  # decisions behind each point of an accept-rate series
    repeats: int


FULL = Sizes(
    customers=5_000,
    history_days=28,
    decisions=200_000,
    last=50_000,
    step=2_000,
    window=10_000,
    repeats=3,
)
#: Quick: the first 12,000 decisions of smaller banks, so the whole suite stays in minutes
#: (a decision costs ~2 ms over the five policies: the learner ~1 ms, VW ~0.6 ms).
QUICK = Sizes(
    customers=2_000,
    history_days=14,
    decisions=12_000,
    last=3_000,
    step=300,
    window=1_500,
    repeats=3,
)


# -- customers: their events and features ---------------------------------------------------


def base_features(bank: SimulatedBank, days: int, now: float) -> list[Features]:
    """Every customer's features at `now`, after the bank's first `days` days, in row order.

    The one place that knows how events become features (`features.state`,
    `features.reading`): each customer's events are folded into their state as the feature
    store folds them, the base-wide RFM quintile edges are taken over every customer (the
    engine's walker samples them), and each customer is read as the API reads them.
    """
    fold = FeatureFold(FeatureConfig())
    states = [fold.new_state() for _ in range(bank.customers)]
    for day in range(days):
        for raw in bank.events_for_day(day):
            event = Event.model_validate(raw)
            fold.apply(states[bank.customer_index(event.customer_id)], event)
    sample = [values for state in states if (values := rfm_values(fold, state, now))]
    edges = {name: tuple(cuts) for name, cuts in quintile_edges(sample).items()}
    return [read_features(fold, state, now, edges) for state in states]


# -- the decision stream --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """What a policy sees of one decision: the model input and the eligible candidates."""

    x: dict[str, float]
    candidates: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Stream:
    """The decisions every policy faces, and the hidden truth that answers them.

    `truth[t, j]` is the true probability that decision t's customer accepts action
    `action_ids[j]` on t's channel; `draws[t]` is decision t's uniform draw.
    """

    features: list[Features]
    now: float
    customers: np.ndarray
    channels: list[Channel]
    candidates: list[tuple[str, ...]]
    action_ids: tuple[str, ...]
    truth: np.ndarray
    draws: np.ndarray

    def __len__(self) -> int:
        return len(self.customers)

    def context(self, t: int) -> Context:
        """Decision t as a policy sees it (x made as `decide` makes it)."""
        x = vectorise(self.features[self.customers[t]], now=self.now, channel=self.channels[t])
        return Context(x, self.candidates[t])

    def probability(self, t: int, action_id: str) -> float:
        """The true acceptance probability of `action_id` in decision t."""
        return float(self.truth[t, self.action_ids.index(action_id)])


def eligible(catalog: Catalog, features: Features, channel: Channel) -> tuple[str, ...]:
    """The candidates of a decision, as `decide` selects them: allowed on the channel, eligible."""
    context = rule_context(features, channel)
    return tuple(
        action.id for action in catalog.for_channel(channel) if action.is_eligible(context)
    )


def decision_stream(
    bank: SimulatedBank,
    features: list[Features],
    catalog: Catalog,
    decisions: int,
    now: float,
    rng: np.random.Generator,
) -> Stream:
    """`decisions` decisions at `now` with at least one candidate, their truth and draws."""
    channels = [Channel(name) for name in DECISION_CHANNELS]
    shares = np.array(list(DECISION_CHANNELS.values()))
    known: dict[tuple[int, Channel], tuple[str, ...]] = {}
    rows: list[int] = []
    picked: list[Channel] = []
    while len(rows) < decisions:
        customer = int(rng.integers(bank.customers))
        channel = channels[int(rng.choice(len(channels), p=shares / shares.sum()))]
        if (customer, channel) not in known:
            known[customer, channel] = eligible(catalog, features[customer], channel)
        if known[customer, channel]:
            rows.append(customer)
            picked.append(channel)
    customers = np.array(rows)
    action_ids = tuple(action.id for action in catalog.actions)
    truth = np.empty((decisions, len(action_ids)))
    for channel in set(picked):
        on_channel = np.array([option is channel for option in picked])
        truth[on_channel] = bank.acceptance_probabilities(
            customers[on_channel], action_ids, channel
        )
    return Stream(
        features=features,
        now=now,
        customers=customers,
        channels=picked,
        candidates=[known[row, channel] for row, channel in zip(rows, picked, strict=True)],
        action_ids=action_ids,
        truth=truth,
        draws=rng.random(decisions),
    )


def answer_of(draw: float, probability: float) -> bool | None:
    """The answer `draw` gives to an offer accepted with `probability`: True accepted, False
    declined, None ignored, split as `SimulatedBank.respond` splits them."""
    if draw < probability:
        return True
    return False if (draw - probability) / (1.0 - probability) < DECLINE_SHARE else None


def reward_of(answer: bool | None) -> bool | None:
    """What the engine's defaults learn from an answer: None when it learns nothing."""
    if answer is None:
        return False if LEARN_IGNORED else None
    return answer


# -- the policies ---------------------------------------------------------------------------


class Policy(Protocol):
    """Shows one candidate per decision and learns from the answer to it."""

    def choose(self, t: int, context: Context) -> str:
        """The action shown in decision t."""
        ...

    def learn(self, context: Context, action_id: str, accepted: bool) -> None:
        """Learn the answer to the action this policy just chose for `context`."""
        ...


class Learner:
    """The engine's learning policy with the engine's defaults, seeded for reproducibility."""

    def __init__(self, priors: Mapping[str, float], seed: int) -> None:
        self.model = OnlinePropensity(priors)
        self.policy = ThompsonSampling(self.model, draws=THOMPSON_DRAWS, seed=seed)

    def choose(self, t: int, context: Context) -> str:
        return self.policy.rank(context.x, context.candidates, 1)[0].action_id

    def learn(self, context: Context, action_id: str, accepted: bool) -> None:
        self.model.learn_one(context.x, action_id, accepted)


class Uniform:
    """A uniformly random candidate; learns nothing."""

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def choose(self, t: int, context: Context) -> str:
        return context.candidates[int(self._rng.integers(len(context.candidates)))]

    def learn(self, context: Context, action_id: str, accepted: bool) -> None:
        """Nothing to learn."""


class Static:
    """The engine's static policy: greedy by the catalog's base rate × value; learns nothing."""

    def __init__(self, catalog: Catalog) -> None:
        self._greedy = Greedy(BaseRateModel(catalog.base_rates()))
        self._value = {action.id: action.spec.value for action in catalog.actions}

    def choose(self, t: int, context: Context) -> str:
        values = [self._value[action_id] for action_id in context.candidates]
        return self._greedy.rank(context.x, context.candidates, 1, values=values)[0].action_id

    def learn(self, context: Context, action_id: str, accepted: bool) -> None:
        """Nothing to learn."""


class Oracle:
    """The candidate with the highest true probability: the best any policy can do."""

    def __init__(self, stream: Stream) -> None:
        self._truth = stream.truth
        self._column = {action_id: j for j, action_id in enumerate(stream.action_ids)}

    def choose(self, t: int, context: Context) -> str:
        columns = [self._column[action_id] for action_id in context.candidates]
        return context.candidates[int(np.argmax(self._truth[t, columns]))]

    def learn(self, context: Context, action_id: str, accepted: bool) -> None:
        """Nothing to learn."""


class VowpalWabbit:
    """Vowpal Wabbit's `cb_explore_adf`: x as shared features, one example line per candidate.

    VW returns a probability per candidate; the policy samples its choice from it (seeded)
    and gives VW the chosen line's cost (−1 accepted, 0 not) with that probability.
    """

    def __init__(self, seed: int, arguments: str = VW_ARGUMENTS) -> None:
        self._vw = vowpalwabbit.Workspace(f"{arguments} --random_seed {seed}", enable_logging=False)
        self._rng = np.random.default_rng(seed)
        #: The last choice: its example lines, its index among the candidates, its probability.
        self._chosen: tuple[list[str], int, float] = ([], 0, 1.0)

    def choose(self, t: int, context: Context) -> str:
        shared = " ".join(f"{name}:{value:.6g}" for name, value in context.x.items())
        lines = [f"shared |x {shared}", *(f"|a {action_id}" for action_id in context.candidates)]
        pmf = np.asarray(self._vw.predict(lines), dtype=float)
        index = int(self._rng.choice(len(pmf), p=pmf / pmf.sum()))
        self._chosen = (lines, index, float(pmf[index]))
        return context.candidates[index]

    def learn(self, context: Context, action_id: str, accepted: bool) -> None:
        lines, index, probability = self._chosen
        if context.candidates[index] != action_id:
            raise ValueError(f"learn {action_id!r}: the last choice was another action")
        labelled = list(lines)
        labelled[index + 1] = f"0:{-1.0 if accepted else 0.0}:{probability} {lines[index + 1]}"
        self._vw.learn(labelled)


# -- one run --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shown:
    """What one policy did over a stream: the true probability of each action it showed,
    and whether it was accepted."""

    probability: np.ndarray
    accepted: np.ndarray


def play(stream: Stream, policies: Mapping[str, Policy]) -> dict[str, Shown]:
    """Every policy, decision after decision, on the same stream and the same draws."""
    size = len(stream)
    shown = {name: Shown(np.empty(size), np.zeros(size, dtype=bool)) for name in policies}
    for t in range(size):
        context = stream.context(t)
        for name, policy in policies.items():
            action_id = policy.choose(t, context)
            probability = stream.probability(t, action_id)
            answer = answer_of(float(stream.draws[t]), probability)
            shown[name].probability[t] = probability
            shown[name].accepted[t] = answer is True
            reward = reward_of(answer)
            if reward is not None:
                policy.learn(context, action_id, reward)
    return shown


def build_policies(stream: Stream, catalog: Catalog, seed: int) -> dict[str, Policy]:
    """The five policies, in POLICIES order, each seeded from the run's seed."""
    return {
        "learner": Learner(catalog.base_rates(), seed + 1),
        "random": Uniform(seed + 2),
        "static": Static(catalog),
        "oracle": Oracle(stream),
        "vw": VowpalWabbit(seed + 3),
    }


def figures_of(shown: Mapping[str, Shown], last: int) -> dict[str, float]:
    """Accept rates (whole stream, last `last` decisions), regrets and the targets' ratios."""
    best = shown["oracle"].probability
    figures: dict[str, float] = {}
    for name in POLICIES:
        figures[f"{name}_accept_rate"] = float(shown[name].accepted.mean())
        figures[f"{name}_accept_rate_last"] = float(shown[name].accepted[-last:].mean())
        figures[f"{name}_regret"] = float((best - shown[name].probability).sum())
    for numerator, denominator, suffix in [
        ("learner", "random", ""),
        ("learner", "oracle", "_last"),
        ("learner", "vw", ""),
        ("learner", "vw", "_last"),
        ("oracle", "random", ""),
    ]:
        figures[f"{numerator}_over_{denominator}{suffix}"] = (
            figures[f"{numerator}_accept_rate{suffix}"]
            / figures[f"{denominator}_accept_rate{suffix}"]
        )
    return figures


def series_of(shown: Mapping[str, Shown], step: int, window: int) -> dict[str, Any]:
    """Every `step` decisions: each policy's accept rate over the trailing `window` decisions
    (fewer at the start) and its cumulative regret against the oracle."""
    size = len(shown["oracle"].probability)
    ends = np.arange(step, size + 1, step)
    starts = np.maximum(ends - window, 0)
    best = shown["oracle"].probability
    rates: dict[str, list[float]] = {}
    regrets: dict[str, list[float]] = {}
    for name in POLICIES:
        accepts = np.concatenate([[0], np.cumsum(shown[name].accepted)])
        rates[name] = ((accepts[ends] - accepts[starts]) / (ends - starts)).tolist()
        regrets[name] = np.cumsum(best - shown[name].probability)[ends - 1].tolist()
    return {"decisions": ends.tolist(), "accept_rate": rates, "cumulative_regret": regrets}


def median_series(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The series of several repeats (the same x in each), point by point the median."""

    def median(key: str) -> dict[str, list[float]]:
        return {
            name: np.median([run[key][name] for run in runs], axis=0).round(6).tolist()
            for name in POLICIES
        }

    return {
        "decisions": runs[0]["decisions"],
        "accept_rate": median("accept_rate"),
        "cumulative_regret": median("cumulative_regret"),
    }


def run_once(sizes: Sizes, seed: int) -> tuple[dict[str, float], dict[str, Any]]:
    """One repeat on the bank and the stream of `seed`: its figures and its series."""
    catalog = load_catalog(DEFAULT_CATALOG)
    bank = SimulatedBank(
        customers=sizes.customers,
        seed=seed,
        start=SIMULATION_START,
        action_ids=[action.id for action in catalog.actions],
    )
    started = time.perf_counter()
    now = bank.start.timestamp() + sizes.history_days * SECONDS_PER_DAY
    features = base_features(bank, sizes.history_days, now)
    rng = np.random.default_rng([seed, 1])
    stream = decision_stream(bank, features, catalog, sizes.decisions, now, rng)
    prepared = time.perf_counter()
    shown = play(stream, build_policies(stream, catalog, seed))
    print(
        f"  seed {seed}: features and stream {prepared - started:.0f} s, "
        f"policies {time.perf_counter() - prepared:.0f} s",
        flush=True,
    )
    return figures_of(shown, sizes.last), series_of(shown, sizes.step, sizes.window)


def run(quick: bool = False) -> Result:
    """The benchmark at its full or quick sizes."""
    return measure(QUICK if quick else FULL, quick=quick)


def measure(sizes: Sizes, *, quick: bool) -> Result:
    """Play the five policies on `sizes.repeats` simulated banks; the medians and the series.

    The repeats run in parallel processes, one per usable core.
    """
    print(
        f"{NAME}: {sizes.decisions:,} decisions over {sizes.customers:,} customers with "
        f"{sizes.history_days} days of history, {sizes.repeats} repeats",
        flush=True,
    )
    seeds = range(1, sizes.repeats + 1)
    workers = min(sizes.repeats, len(os.sched_getaffinity(0)))
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        repeats = list(pool.map(run_once, [sizes] * sizes.repeats, seeds))
    figures = iter(figures for figures, _ in repeats)
    return Result(
        name=NAME,
        parameters={
            "quick": quick,
            "customers": sizes.customers,
            "history_days": sizes.history_days,
            "decisions": sizes.decisions,
            "last_decisions": sizes.last,
            "series_step": sizes.step,
            "series_window": sizes.window,
            "decision_channels": DECISION_CHANNELS,
            "shown_per_decision": 1,
            "exploration": EXPLORATION,
            "thompson_draws": THOMPSON_DRAWS,
            "ignored_offers_learned_as_declines": LEARN_IGNORED,
            "vw_arguments": VW_ARGUMENTS,
            "vowpalwabbit": vowpalwabbit.__version__,
        },
        figures=median_of(sizes.repeats, lambda: next(figures)),
        subject="learner_accept_rate",
        baseline="random_accept_rate",
        targets=[
            Target("learner_over_random", at_least=2.0),
            Target("learner_over_oracle_last", at_least=0.85),
            Target("learner_over_vw", at_least=1.0),
        ],
        notes=[
            "every policy faces the same decisions and the same draws (one uniform per "
            "decision, shared by every action and policy); regret is the expected regret "
            "against the oracle, in accepts",
            "the objective is the accept rate: learner and vw rank by acceptance probability "
            "alone; static ranks by the catalog's base rate × value, as the engine's static "
            "policy does",
            "oracle_over_random bounds learner_over_random: no policy can beat the oracle",
        ],
        series=median_series([series for _, series in repeats]),
    )


def main() -> None:
    benchmark_main(run, __doc__ or NAME)


if __name__ == "__main__":
    main()
