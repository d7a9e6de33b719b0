"""Segmenter: known groups land in their own segments, described by the right traits."""

from __future__ import annotations

import collections
import doctest
import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

import models.segments
from models import persistence
from models.segments import SegmentDescription, Segmenter, Unit, describe_input

NOW = 1_767_605_400.0
DAY = 86_400.0
KEY = b"a checkpoint key of 32 bytes...."
DESCRIPTIONS = {
    "app_logins_count": "logins to the mobile app, lifetime",
    "branch_visits_count": "visits to a branch, lifetime",
    "balance_amount": "balance of all accounts (EUR)",
    "age": "age in years",
    "last_login_ts": "time of the latest login (Unix s, 0 = never)",
}
GROUPS = ("digital", "traditional", "dormant")


def customer(group: str, rng: np.random.Generator) -> dict[str, float]:
    """One synthetic customer of a known group; long-tailed counts and amounts, as in a bank."""
    logins, visits, balance, age, idle_days = {
        "digital": (150.0, 0.5, 800.0, 25.0, 1.0),
        "traditional": (1.0, 20.0, 50_000.0, 65.0, 3.0),
        "dormant": (3.0, 1.0, 3_000.0, 45.0, 200.0),
    }[group]
    return {
        "app_logins_count": round(logins * rng.lognormal(0.0, 0.3)),
        "branch_visits_count": round(visits * rng.lognormal(0.0, 0.3)),
        "balance_amount": balance * rng.lognormal(0.0, 0.3),
        "age": age + rng.normal(0.0, 4.0),
        "last_login_ts": NOW - idle_days * DAY * rng.lognormal(0.0, 0.2),
    }


def population(seed: int, n: int) -> Iterator[tuple[str, dict[str, float]]]:
    """n customers of random groups, with their group."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        group = GROUPS[rng.integers(len(GROUPS))]
        yield group, customer(group, rng)


def trained(n_segments: int, *, seed: int = 0, customers: int = 3000) -> Segmenter:
    """A segmenter that learned `customers` of the population drawn with `seed`."""
    segments = Segmenter(n_segments, descriptions=DESCRIPTIONS, max_traits=4)
    for _, features in population(seed, customers):
        segments.learn_one(features, now=NOW)
    return segments


def assignments(segments: Segmenter, seed: int) -> dict[str, collections.Counter[int]]:
    """For fresh customers of each group, how many land in each segment."""
    counts: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for group, features in population(seed + 1000, 1500):
        counts[group][segments.segment_of(features, now=NOW)] += 1
    return counts


def majority_segments(segments: Segmenter, seed: int) -> dict[str, SegmentDescription]:
    described = segments.describe()
    return {
        group: described[counts.most_common(1)[0][0]]
        for group, counts in assignments(segments, seed).items()
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_with_as_many_segments_as_groups_each_group_lands_in_its_own(seed: int) -> None:
    segments = trained(3, seed=seed)
    counts = assignments(segments, seed)
    majorities = {group: counts[group].most_common(1)[0] for group in GROUPS}
    assert len({segment for segment, _ in majorities.values()}) == 3
    for group, (_, n) in majorities.items():
        assert n / counts[group].total() > 0.95, (group, counts[group])


@pytest.mark.parametrize("seed", [0, 1])
def test_with_more_segments_than_groups_no_segment_mixes_groups(seed: int) -> None:
    segments = trained(6, seed=seed)
    by_segment: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for group, counts in assignments(segments, seed).items():
        for segment, n in counts.items():
            by_segment[segment][group] += n
    in_own = sum(counts.most_common(1)[0][1] for counts in by_segment.values())
    assert in_own / 1500 > 0.97


def test_descriptions_name_the_distinguishing_features_in_the_right_direction() -> None:
    majorities = majority_segments(trained(6), seed=0)
    expected = {
        "digital": {"app_logins_count": "high", "age": "low"},
        "traditional": {"branch_visits_count": "high", "balance_amount": "high", "age": "high"},
        "dormant": {"last_login_days": "high", "app_logins_count": "low"},
    }
    for group, traits in expected.items():
        found = {trait.feature: trait for trait in majorities[group].traits}
        for feature, direction in traits.items():
            assert feature in found, (group, majorities[group].description)
            assert found[feature].word.endswith(direction), (group, found[feature])
            assert f"{found[feature].word} {found[feature].label}" in (
                majorities[group].description
            )
    assert "high logins to the mobile app" in majorities["digital"].description
    assert "high days since latest login" in majorities["dormant"].description


def test_traits_are_the_largest_differences_first_and_at_most_max_traits() -> None:
    for described in trained(6).describe():
        z = [abs(trait.z) for trait in described.traits]
        assert z == sorted(z, reverse=True)
        assert len(z) <= 4
        assert all(value >= models.segments.NOTABLE_Z for value in z)


def test_centroids_are_in_the_units_of_the_features() -> None:
    majorities = majority_segments(trained(6), seed=0)
    digital, traditional = majorities["digital"].centroid, majorities["traditional"].centroid
    dormant = majorities["dormant"].centroid
    assert 120 < digital["app_logins_count"] < 180
    assert 22 < digital["age"] < 28
    assert 40_000 < traditional["balance_amount"] < 60_000
    assert 170 < dormant["last_login_days"] < 230
    assert dormant["last_login_never"] == 0.0


def test_segment_of_gives_the_nearest_centre_as_river_would() -> None:
    segments = trained(6, customers=1500)
    rng = np.random.default_rng(11)
    for i, (_, features) in enumerate(population(12, 1000)):
        if i % 3 == 0:
            features.pop(str(rng.choice(list(features))))
        if i % 5 == 0:
            features["never_learned_count"] = 3.0
        inputs = segments._inputs(features, NOW)  # river's own path, to compare with
        centre = segments._kmeans.centers[0]
        known = {name: value for name, value in inputs.items() if name in centre}
        river_segment = segments._kmeans.predict_one(segments._standardise(known))
        assert segments.segment_of(features, now=NOW) == river_segment


def test_sizes_count_every_customer_learned() -> None:
    described = trained(6, customers=2000).describe()
    assert sum(segment.size for segment in described) == 2000
    assert [segment.segment for segment in described] == list(range(6))


def test_a_single_segment_is_the_average_customer() -> None:
    [only] = trained(1, customers=600).describe()
    assert (only.size, only.traits, only.description) == (600, (), "close to the average customer")


def test_before_the_warm_up_every_customer_is_in_segment_0_and_nothing_is_described() -> None:
    segments = Segmenter(4, warmup=100)
    for _, features in population(0, 99):
        segments.learn_one(features, now=NOW)
    assert segments.segment_of(customer("digital", np.random.default_rng(0)), now=NOW) == 0
    assert all(s.size == 0 and s.description == "no customers yet" for s in segments.describe())
    segments.learn_one(customer("dormant", np.random.default_rng(1)), now=NOW)
    assert sum(s.size for s in segments.describe()) == 100


def test_the_same_data_give_the_same_segments() -> None:
    first, second = trained(6, seed=5, customers=1200), trained(6, seed=5, customers=1200)
    assert first.describe() == second.describe()
    assert assignments(first, 5) == assignments(second, 5)


_IN_A_FRESH_PROCESS = """
import sys
sys.path.insert(0, {root!r})
from tests.models.test_segments import NOW, population, trained
segments = trained(6, seed=3, customers=1200)
late = {{f"late_{{name}}_count": 1.0 + i for i, name in enumerate("abcdefgh")}}
for i, (_, features) in enumerate(population(4, 300)):
    segments.learn_one({{**features, **{{k: v * (i % 3) for k, v in late.items()}}}}, now=NOW)
print([(s.size, s.description, s.centroid) for s in segments.describe()])
print([sorted((k, round(v, 9)) for k, v in c.items()) for c in segments._kmeans.centers.values()])
"""


def test_segments_do_not_depend_on_the_process_string_hashing() -> None:
    """Features first seen after the warm-up too: river alone would draw their centre
    coordinates in the order of a set of strings, which differs between processes."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    outputs = {
        subprocess.run(
            [sys.executable, "-c", _IN_A_FRESH_PROCESS.format(root=root)],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_a_saved_segmenter_loads_back_signed_and_keeps_learning_the_same_way() -> None:
    segments = trained(6, customers=1000)
    restored = persistence.load(
        persistence.save(segments, key=KEY), key=KEY, expected_type=Segmenter
    )
    assert restored.describe() == segments.describe()
    for _, features in population(7, 300):
        segments.learn_one(features, now=NOW)
        restored.learn_one(features, now=NOW)
    assert restored.describe() == segments.describe()
    with pytest.raises(persistence.SignatureError):
        persistence.load(
            persistence.save(segments, key=KEY),
            key=b"another key of 32 bytes.........",
            expected_type=Segmenter,
        )


def test_inputs_are_not_modified_and_new_or_missing_features_are_tolerated() -> None:
    segments = trained(3, customers=800)
    features = customer("digital", np.random.default_rng(3))
    before = dict(features)
    segment = segments.segment_of(features, now=NOW)
    segments.learn_one(features, now=NOW)
    assert features == before
    assert segments.segment_of({**features, "brand_new_count": 5.0}, now=NOW) == segment
    partial = {name: value for name, value in features.items() if name != "age"}
    assert segments.segment_of(partial, now=NOW) == segment
    segments.learn_one({**features, "brand_new_count": 5.0}, now=NOW)
    assert segments.segment_of({**features, "brand_new_count": 5.0}, now=NOW) == segment


def test_excluded_features_are_not_clustered_on() -> None:
    segments = Segmenter(2, warmup=20, exclude={"segment"})
    rng = np.random.default_rng(0)
    for i in range(100):
        segments.learn_one({**customer(GROUPS[i % 2], rng), "segment": float(i % 2)}, now=NOW)
    assert all("segment" not in s.centroid for s in segments.describe())


def test_inputs_are_labelled_from_the_first_clause_of_descriptions_or_the_name() -> None:
    stored = customer("digital", np.random.default_rng(0)) | {"last_login_ts": 0.0}

    def label(name: str) -> tuple[Unit, str]:
        return describe_input(name, stored, DESCRIPTIONS)

    assert label("age") == (Unit.RAW, "age in years")
    assert label("balance_amount") == (Unit.LOG, "balance of all accounts")
    assert label("last_login_days") == (Unit.DAYS, "days since latest login")
    assert label("last_login_never") == (Unit.NEVER, "share with no latest login")
    assert describe_input("ch_sms_count", {"ch_sms_count": 2}) == (Unit.LOG, "ch sms count")
    assert describe_input("tier_gold", {"tier": "gold"}, {"tier": "value tier: gold, …"}) == (
        Unit.CATEGORY,
        "share with value tier gold",
    )


def test_text_features_are_described_by_the_share_of_each_value() -> None:
    segments = Segmenter(2, warmup=40, descriptions={"tier": "value tier"})
    rng = np.random.default_rng(0)
    for i in range(400):
        group = GROUPS[i % 2]
        segments.learn_one(
            {**customer(group, rng), "tier": "gold" if group == "traditional" else "basic"}, now=NOW
        )
    gold = segments.describe()[
        segments.segment_of({**customer("traditional", rng), "tier": "gold"}, now=NOW)
    ]
    assert gold.centroid["tier_gold"] == 1.0
    assert gold.centroid["tier_basic"] == 0.0
    assert "high share with value tier gold" in gold.description


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_segments": 0}, "n_segments"),
        ({"halflife": 0.0}, "halflife"),
        ({"warmup": 1}, "warmup"),
        ({"clip": 0.0}, "clip"),
    ],
)
def test_invalid_parameters_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Segmenter(**kwargs)


def test_non_finite_features_are_refused_with_their_name() -> None:
    with pytest.raises(ValueError, match="'age'"):
        Segmenter().learn_one({"age": float("nan")}, now=NOW)


def test_the_documented_examples_run() -> None:
    result = doctest.testmod(models.segments)
    assert result.attempted > 5
    assert result.failed == 0
