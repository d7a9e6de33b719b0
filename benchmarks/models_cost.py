"""What online learning costs in-process: scoring a candidate set, exploring, learning one outcome.

Setup: 100 actions, an `OnlinePropensity` warmed up on 20,000 outcomes, and customers whose
raw features are drawn for every feature of `features.registry` (counts, amounts, times,
some never seen) and vectorised on a channel, as a decision would (~160 learner inputs).

Each repeat measures, one call at a time:

- baseline: river scoring the 100 actions one by one (`predict_proba_one` per action);
- subject: `OnlinePropensity.score` of the same 100 actions, vectorised (median µs per call);
- the same right after a `learn_one` (one action's row re-exported to numpy first);
- `ThompsonSampling.rank` (256 posterior draws) over 100 and over 20 candidates, and
  `EpsilonGreedy.rank` over 100, each returning 3;
- `vectorise` of one customer's raw features;
- `learn_one` throughput, outcomes/s over a stream of outcomes of random actions, and
  `predict_learn_one`'s, the learner's step (the prediction before learning, for the
  progressive-validation figures, then the learning);
- the signed checkpoint of the model: size, and `save` + `load` time.

The issue's targets: scoring 100 actions ≤ 300 µs median; learning ≥ 5,000 outcomes/s,
held both by `learn_one` and by the step the worker runs, `predict_learn_one`.

Run: `python -m benchmarks.models_cost [--quick]`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from benchmarks.common import Result, Target, benchmark_main, median_of
from features.events import Channel
from features.reading import default_features
from models import persistence
from models.exploration import EpsilonGreedy, ThompsonSampling
from models.features_vector import vectorise
from models.online import OnlinePropensity

NAME = "models_cost"
ACTIONS = 100
TYPICAL_CANDIDATES = 20  # after channel and eligibility filtering
SHOWN = 3
NOW = 1_767_605_400.0  # 2026-01-05T09:30:00Z
WARM_UP = 20_000
KEY = b"benchmark checkpoint key, 32 b."
#: (calls per timed figure, outcomes learned per repeat, repeats)
FULL = (2_000, 20_000, 5)
QUICK = (300, 5_000, 3)


def _customers(rng: np.random.Generator, count: int) -> list[dict[str, float]]:
    """Learner inputs of `count` customers with plausible raw values for every feature."""
    customers = []
    for _ in range(count):
        raw = _raw_features(rng)
        channel = Channel(rng.choice([channel.value for channel in Channel]))
        customers.append(vectorise(raw, now=NOW, channel=channel))
    return customers


def _raw_features(rng: np.random.Generator) -> dict[str, float | int | str]:
    """Plausible values for every feature, by its naming convention (categories: default)."""
    raw: dict[str, float | int | str] = {}
    for name, default in default_features().items():
        if isinstance(default, str):
            raw[name] = default
        elif name.endswith("_ts"):  # a time, never for some customers
            never = rng.random() < 0.3
            raw[name] = 0 if never else int(NOW - rng.exponential(30 * 86_400))
        elif name.endswith("_count"):
            raw[name] = int(rng.poisson(20))
        elif name.endswith("_amount"):
            raw[name] = float(rng.lognormal(7.0, 1.5))
        else:
            raw[name] = float(rng.uniform(0.0, 5.0))
    return raw


def _median_us(calls: int, fn: Callable[[int], object]) -> float:
    """Median wall time of `fn(i)` for i in range(calls), in µs."""
    times = []
    for i in range(calls):
        started = time.perf_counter_ns()
        fn(i)
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1_000


def run(quick: bool = False) -> Result:
    """Measure scoring, exploration, learning and checkpoint costs; return the result."""
    calls, outcomes, repeats = QUICK if quick else FULL
    rng = np.random.default_rng(7)
    action_ids = [f"action_{i:03d}" for i in range(ACTIONS)]
    model = OnlinePropensity({a: float(rng.uniform(0.01, 0.15)) for a in action_ids})
    customers = _customers(rng, 1_000)
    stream = [
        (
            customers[int(rng.integers(len(customers)))],
            action_ids[int(rng.integers(ACTIONS))],
            bool(rng.random() < 0.08),
        )
        for _ in range(max(WARM_UP, outcomes))
    ]
    for x, action_id, accepted in stream[:WARM_UP]:
        model.learn_one(x, action_id, accepted)
    thompson = ThompsonSampling(model, seed=1)
    greedy = EpsilonGreedy(model, epsilon=0.1, seed=1)
    typical = action_ids[:TYPICAL_CANDIDATES]
    raw = _raw_features(rng)
    print(
        f"{NAME}: {ACTIONS} actions, {len(customers[0])} learner inputs per customer, "
        f"{calls} calls per figure, {outcomes:,} outcomes learned, {repeats} repeats",
        flush=True,
    )

    def customer(i: int) -> dict[str, float]:
        return customers[i % len(customers)]

    def learn_then_score(i: int) -> float:
        model.learn_one(*stream[i % len(stream)])
        started = time.perf_counter_ns()
        model.score(customer(i), action_ids)
        return (time.perf_counter_ns() - started) / 1_000

    def river_one_by_one(i: int) -> list[float]:
        return [model.pipeline(a).predict_proba_one(customer(i))[True] for a in action_ids]

    def one_repeat() -> dict[str, float]:
        river = _median_us(max(calls // 10, 20), river_one_by_one)
        score = _median_us(calls, lambda i: model.score(customer(i), action_ids))
        thompson_100 = _median_us(calls, lambda i: thompson.rank(customer(i), action_ids, SHOWN))
        thompson_20 = _median_us(calls, lambda i: thompson.rank(customer(i), typical, SHOWN))
        greedy_100 = _median_us(calls, lambda i: greedy.rank(customer(i), action_ids, SHOWN))
        vectorise_one = _median_us(calls, lambda i: vectorise(raw, now=NOW + i))
        after_learn = statistics.median(learn_then_score(i) for i in range(calls))
        started = time.perf_counter()
        for item in stream[:outcomes]:
            model.learn_one(*item)
        learn_per_s = outcomes / (time.perf_counter() - started)
        started = time.perf_counter()
        for item in stream[:outcomes]:
            model.predict_learn_one(*item)
        predict_learn_per_s = outcomes / (time.perf_counter() - started)
        started = time.perf_counter()
        checkpoint = persistence.save(thompson, key=KEY)
        persistence.load(checkpoint, key=KEY, expected_type=ThompsonSampling)
        return {
            "score_100_us": score,
            "river_score_100_us": river,
            "score_100_after_learn_us": after_learn,
            "thompson_rank_100_us": thompson_100,
            "thompson_rank_20_us": thompson_20,
            "epsilon_greedy_rank_100_us": greedy_100,
            "vectorise_us": vectorise_one,
            "learn_outcomes_per_s": learn_per_s,
            "predict_learn_outcomes_per_s": predict_learn_per_s,
            "checkpoint_kib": len(checkpoint) / 1024,
            "checkpoint_save_load_ms": (time.perf_counter() - started) * 1_000,
        }

    figures = median_of(repeats, one_repeat)
    return Result(
        name=NAME,
        parameters={
            "quick": quick,
            "actions": ACTIONS,
            "typical_candidates": TYPICAL_CANDIDATES,
            "shown": SHOWN,
            "learner_inputs": len(customers[0]),
            "warm_up_outcomes": WARM_UP,
            "outcomes_per_repeat": outcomes,
            "calls_per_figure": calls,
            "thompson_draws": thompson.draws,
        },
        figures=figures,
        subject="score_100_us",
        baseline="river_score_100_us",
        targets=[
            Target("score_100_us", at_most=300.0),
            Target("learn_outcomes_per_s", at_least=5_000.0),
            Target("predict_learn_outcomes_per_s", at_least=5_000.0),
        ],
        notes=[
            "one process, one call at a time; the machine may be shared (see load_average)",
            "thompson_rank includes scoring and the Monte Carlo estimate of the logged "
            "probabilities from its posterior draws",
        ],
    )


def main() -> None:
    benchmark_main(run, __doc__ or NAME)


if __name__ == "__main__":
    main()
