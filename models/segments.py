"""Behavioural segments: online k-means (river) over standardised features, described in words.

Every customer belongs to one of `n_segments` segments, learned one customer at a time
without a batch job, and each segment is described the way a relationship manager would
say it: "very high interactions on the mobile channel, low amount spent in transactions".

How a customer's features become a point in the clustering space, and why:

1. `models.features_vector.vectorise` (the propensity model's transform): counts and
   amounts become log1p (long tails would otherwise give every outlier a segment of its
   own), times log1p(days since `now`) plus a never-seen flag, and a text feature (a
   category) one 0/1 indicator per value seen.
2. `river.preprocessing.StandardScaler`, learned on every customer: z-scores, so that
   no feature dominates the distances by its unit.
3. z clipped into [−clip, clip]: a rare flag (1 in 100 customers has z ≈ 10) must not
   outweigh everything else.
4. `river.cluster.KMeans` on those points, once the first `warmup` customers have
   given the scaler its first estimates: every centre starts at the population mean
   (z = 0), and the warm-up customers, then every later one, pull them apart.

Why, measured on synthetic groups (three well separated, in 2 and in 10 dimensions;
three unbalanced, 80/15/5%; eight overlapping blobs): river's KMeans alone starts
from random centres while its scaler is still immature (the first customers all
standardise to ≈ 0), so one centre can win everything and others never: in two
dimensions it merged two groups in 3 of 10 draws. After the warm-up, over 20 draws,
≥ 99.9% (2 dimensions) and ≥ 98% (10 dimensions, k = 3 and 6) of customers landed in
a segment whose majority is their own group, and no minority group was merged into
the majority. Centres placed by greedy k-means++ did no better (the same spread within
segments on the blobs), so the simpler start stays. `halflife` 0.05–0.1 did best (0.5,
river's default: 72–96%); `STREAMKMeans` and `CluStream` were clearly worse (41–98%),
CluStream also ten times slower to learn.

Descriptions do not read the k-means centres (moving averages, noisy by design). Each
segment keeps the mean of the (vectorised) features of the customers learned into it;
its z-score against the population (the scaler's mean and deviation) says how it
differs: |z| ≥ 0.5 is "low"/"high", |z| ≥ 1 "very low"/"very high", and the
`max_traits` largest differences make the description. Labels are the first clause of
the features' descriptions (pass the registry's), or their names.
`centroid` gives the same means in the units of the features: counts and amounts as
their geometric-mean-like typical value, times as days since, never-seen flags and
category indicators as shares of the segment's customers.

Segment ids are stable while learning: a customer moves only when the centres move.
Deterministic, across processes too, with no seed to give: a feature enters every
centre at the population mean (z = 0), never at river's random draw, whose order
would follow Python's per-process string hashing.

>>> now = 1_767_605_400.0
>>> segments = Segmenter(n_segments=2, warmup=50)
>>> for i in range(400):  # one customer in four lives in the app, the others in branches
...     if i % 4 == 0:
...         customer = {"app_logins_count": 120.0 + i % 7, "branch_visits_count": 0.0}
...     else:
...         customer = {"app_logins_count": 0.0, "branch_visits_count": 25.0 + i % 5}
...     segments.learn_one(customer, now=now)
>>> app_user = {"app_logins_count": 90.0, "branch_visits_count": 1.0}
>>> app_segment = segments.describe()[segments.segment_of(app_user, now=now)]
>>> app_segment.description
'very high app logins count, very low branch visits count'
>>> round(app_segment.centroid["app_logins_count"]), app_segment.size
(123, 100)
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import orjson
from redis.asyncio import Redis
from river import cluster, preprocessing

from features.keys import Keys
from models.features_vector import Transform, transform_of, vectorise

#: |z| of a segment's mean from which the feature is "high"/"low", and "very high"/"very low".
NOTABLE_Z = 0.5
VERY_Z = 1.0

_LABEL_FILLERS = ("event time of ", "time of ", "the ")


class Unit(StrEnum):
    """How one model input maps back to the units of the features."""

    LOG = "log"  # sign(v)·log1p(|v|) of a count or amount
    DAYS = "days"  # log1p(days since) of a time
    NEVER = "never"  # 1.0 when a time was never seen
    CATEGORY = "category"  # 1.0 when a text feature has one value, 0.0 for its other values
    RAW = "raw"  # the feature's value


@dataclass(frozen=True, slots=True)
class _Export:
    """The scaler and the centres as arrays over the centres' features, for `segment_of`."""

    columns: dict[str, int]
    mean: np.ndarray
    inv_std: np.ndarray
    centres: np.ndarray  # n_segments × features


@dataclass(frozen=True, slots=True)
class Trait:
    """One way a segment differs from the population: `word` `label`, e.g. "high" "age"."""

    feature: str
    label: str
    z: float
    word: str


@dataclass(frozen=True, slots=True)
class SegmentDescription:
    """One segment: its id, customers learned into it, centroid, and what sets it apart.

    `centroid` maps each model input (`vectorise`'s names: `txn_count`, `last_seen_days`,
    `last_seen_never`, ...) to the segment's mean in the features' units (see `Unit`);
    `traits` are the most distinguishing features, largest |z| first; `description`
    says them in words.
    """

    segment: int
    size: int
    centroid: dict[str, float]
    traits: tuple[Trait, ...]
    description: str


class Segmenter:
    """Behavioural segments learned online; `segment_of` gives a customer's segment id.

    Parameters
    ----------
    n_segments
        How many segments (k of k-means). Some may stay empty if the data has fewer groups.
    halflife
        How far a centre moves towards each customer learned into it (river's KMeans).
    warmup
        Customers the scaler learns before any clustering; `segment_of` answers 0 until then.
    clip
        Standardised values are clipped into [−clip, clip] before clustering.
    exclude
        Features never clustered on, e.g. the segment id or scores written back as features.
    descriptions
        What each stored feature means, by name (e.g. the feature registry's descriptions):
        their first clause labels the traits; a feature without one is labelled by its name.
    max_traits
        At most this many traits in a description.
    """

    def __init__(
        self,
        n_segments: int = 6,
        *,
        halflife: float = 0.05,
        warmup: int = 500,
        clip: float = 3.0,
        exclude: Collection[str] = (),
        descriptions: Mapping[str, str] | None = None,
        max_traits: int = 3,
    ) -> None:
        if n_segments < 1:
            raise ValueError(f"n_segments must be at least 1, got {n_segments}")
        if not 0.0 < halflife <= 1.0:
            raise ValueError(f"halflife must be within (0, 1], got {halflife}")
        if warmup < 2:
            raise ValueError(f"warmup must be at least 2 (a deviation needs two), got {warmup}")
        if not clip > 0.0:
            raise ValueError(f"clip must be positive, got {clip}")
        self.n_segments = n_segments
        self.halflife = halflife
        self.warmup = warmup
        self.clip = clip
        self.exclude = frozenset(exclude)
        self.descriptions = dict(descriptions or {})
        self.max_traits = max_traits
        self._scaler = preprocessing.StandardScaler()
        self._kmeans = cluster.KMeans(n_clusters=n_segments, halflife=halflife)
        self._units: dict[str, Unit] = {}
        self._labels: dict[str, str] = {}
        self._categories: dict[str, list[str]] = {}  # text feature → its values seen, in order
        self._sizes = [0] * n_segments
        self._sums: list[dict[str, float]] = [{} for _ in range(n_segments)]
        self._counts: list[dict[str, int]] = [{} for _ in range(n_segments)]
        self._warming: list[dict[str, float]] | None = []  # None once the warm-up is over
        self._export: _Export | None = None  # built at the first segment_of after learning

    # -- learning and assignment -----------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether the warm-up is over: before it, `segment_of` answers 0 for everyone."""
        return self._warming is None

    @property
    def customers_learned(self) -> int:
        """How many customers were learned, warm-up included."""
        return sum(self._sizes) + len(self._warming or ())

    def learn_one(self, features: Mapping[str, float | int | str], *, now: float) -> None:
        """Learn one customer's features (as stored), observed at `now` (Unix seconds).

        Learn each customer about once per period (e.g. at a snapshot), not at every
        event: segment sizes count what was learned. `features` is not modified.
        """
        self._remember_categories(features)
        x = self._inputs(features, now)
        for name in x:
            if name not in self._units:
                self._units[name], self._labels[name] = describe_input(
                    name, features, self.descriptions
                )
        self._scaler.learn_one(x)
        self._export = None
        if self._warming is None:
            self._cluster(x)
            return
        self._warming.append(x)
        if len(self._warming) == self.warmup:
            warming, self._warming = self._warming, None
            for past in warming:
                self._cluster(past)

    def _cluster(self, x: Mapping[str, float]) -> None:
        """Learn one customer into the k-means and into its segment's means."""
        self._introduce(x)
        segment: int = self._kmeans.learn_predict_one(self._standardise(x))
        self._sizes[segment] += 1
        sums, counts = self._sums[segment], self._counts[segment]
        for name, value in x.items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1

    def segment_of(self, features: Mapping[str, float | int | str], *, now: float) -> int:
        """The segment of a customer (0 … n_segments − 1); 0 until the warm-up is over.

        Does not learn; features never learned are ignored. The nearest centre is found
        with numpy over arrays exported from river after learning (the same answer as
        river's `predict_one`, several times faster).
        """
        if self._export is None:
            self._export = self._exported()
        export = self._export
        columns, values = [], []
        for name, value in self._inputs(features, now).items():
            column = export.columns.get(name)
            if column is not None:
                columns.append(column)
                values.append(value)
        z = np.zeros(len(export.columns))
        known = np.array(columns, dtype=np.intp)
        z[known] = (np.array(values) - export.mean[known]) * export.inv_std[known]
        np.clip(z, -self.clip, self.clip, out=z)
        return int(np.argmin(((export.centres - z) ** 2).sum(axis=1)))

    def _exported(self) -> _Export:
        """The scaler's means and inverse deviations (0 for a constant) and the centres."""
        names = list(self._kmeans.centers[0])
        mean = np.array([self._scaler.means.get(name, 0.0) for name in names])
        variance = np.array([self._scaler.vars.get(name, 0.0) for name in names])
        inv_std = np.divide(1.0, np.sqrt(variance), out=np.zeros_like(variance), where=variance > 0)
        centres = [[centre[name] for name in names] for centre in self._kmeans.centers.values()]
        return _Export(
            columns={name: column for column, name in enumerate(names)},
            mean=mean,
            inv_std=inv_std,
            centres=np.array(centres).reshape(self.n_segments, len(names)),
        )

    def _remember_categories(self, features: Mapping[str, float | int | str]) -> None:
        """Note the values of text features, so that every later input has all indicators."""
        for name, value in features.items():
            if isinstance(value, str) and name not in self.exclude:
                known = self._categories.setdefault(name, [])
                if value not in known:
                    known.append(value)

    def _inputs(self, features: Mapping[str, float | int | str], now: float) -> dict[str, float]:
        """The vectorised features, minus excluded ones; non-finite numbers are refused.

        A text feature's other known values get 0.0 (`vectorise` gives only the value it
        has): an indicator the scaler only ever saw at 1.0 would have no variance.
        """
        kept = {name: value for name, value in features.items() if name not in self.exclude}
        for name, value in kept.items():
            if not isinstance(value, str) and not math.isfinite(value):
                raise ValueError(f"feature {name!r} is {value}: features must be finite numbers")
        x = vectorise(kept, now=now)
        for name, value in kept.items():
            if isinstance(value, str):
                for known in self._categories.get(name, ()):
                    x.setdefault(f"{name}_{known}", 0.0)
        return x

    def _introduce(self, x: Mapping[str, float]) -> None:
        """Put features new to the centres at the population mean, z = 0 (see module doc)."""
        new = [name for name in x if name not in self._kmeans.centers[0]]
        for centre in self._kmeans.centers.values():
            for name in new:
                centre[name] = 0.0

    def _standardise(self, x: Mapping[str, float]) -> dict[str, float]:
        """z-scores under the population learned so far, clipped into [−clip, clip]."""
        z = self._scaler.transform_one(dict(x))
        return {name: min(max(value, -self.clip), self.clip) for name, value in z.items()}

    # -- description -----------------------------------------------------------------------

    def describe(self) -> list[SegmentDescription]:
        """Every segment, by id: size, centroid in the features' units, traits, words."""
        return [self._describe(segment) for segment in range(self.n_segments)]

    def _describe(self, segment: int) -> SegmentDescription:
        size = self._sizes[segment]
        means = {
            name: total / self._counts[segment][name]
            for name, total in sorted(self._sums[segment].items())
        }
        traits = self._traits(means)
        if not size:
            words = "no customers yet"
        elif traits:
            words = ", ".join(f"{trait.word} {trait.label}" for trait in traits)
        else:
            words = "close to the average customer"
        return SegmentDescription(
            segment=segment,
            size=size,
            centroid={name: _original_units(self._units[name], m) for name, m in means.items()},
            traits=traits,
            description=words,
        )

    def _traits(self, means: Mapping[str, float]) -> tuple[Trait, ...]:
        """The features whose segment mean is furthest from the population's, in z."""
        z_scores = {}
        for name, mean in means.items():
            variance = self._scaler.vars.get(name, 0.0)
            if variance > 0.0:
                z_scores[name] = (mean - self._scaler.means[name]) / math.sqrt(variance)
        notable = sorted(
            (name for name, z in z_scores.items() if abs(z) >= NOTABLE_Z),
            key=lambda name: (-abs(z_scores[name]), name),
        )
        return tuple(
            Trait(
                feature=name,
                label=self._labels[name],
                z=z_scores[name],
                word=_word(z_scores[name]),
            )
            for name in notable[: self.max_traits]
        )


def describe_input(
    name: str,
    features: Mapping[str, float | int | str],
    descriptions: Mapping[str, str] | None = None,
) -> tuple[Unit, str]:
    """The unit and a short label of model input `name`, which `vectorise` made from `features`.

    The base label is the first clause of the stored feature's description (without a
    leading "time of the"), else its name.

    >>> describe_input("last_visit_days", {"last_visit_ts": 1.7e9},
    ...                {"last_visit_ts": "time of the latest visit (Unix s)"})
    (<Unit.DAYS: 'days'>, 'days since latest visit')
    >>> describe_input("tier_gold", {"tier": "gold"})
    (<Unit.CATEGORY: 'category'>, 'share with tier gold')
    """
    known = descriptions or {}
    if name in features:
        unit = Unit.LOG if transform_of(name) is Transform.LOG else Unit.RAW
        return unit, _label(name, known)
    for source, value in features.items():
        if isinstance(value, str) and name == f"{source}_{value}":
            return Unit.CATEGORY, f"share with {_label(source, known)} {value}"
    base, _, suffix = name.rpartition("_")
    if suffix == "days":
        return Unit.DAYS, f"days since {_label(f'{base}_ts', known)}"
    if suffix == "never":
        return Unit.NEVER, f"share with no {_label(f'{base}_ts', known)}"
    return Unit.RAW, _label(name, known)


def _label(feature: str, descriptions: Mapping[str, str]) -> str:
    """The first clause of a feature's description, else its name in words."""
    description = descriptions.get(feature)
    return feature.replace("_", " ") if description is None else _first_clause(description)


def _first_clause(description: str) -> str:
    """ "time of the latest purchase (Unix s), lifetime" → "latest purchase"."""
    label = description
    for separator in "(,;:":
        label = label.split(separator)[0]
    label = label.strip()
    for filler in _LABEL_FILLERS:
        label = label.removeprefix(filler)
    return label


def _original_units(unit: Unit, mean: float) -> float:
    """A mean of model inputs back in the units of the features (see `Unit`)."""
    if unit is Unit.LOG:
        return math.copysign(math.expm1(abs(mean)), mean)
    if unit is Unit.DAYS:
        return math.expm1(mean)
    return mean


def _word(z: float) -> str:
    strength = "very " if abs(z) >= VERY_Z else ""
    return f"{strength}{'high' if z > 0 else 'low'}"


@dataclass(frozen=True, slots=True)
class SegmentSample:
    """One customer's features (as stored) at event time `ts`, for `Segmenter.learn_one`."""

    features: dict[str, float | int | str]
    ts: float


class SegmentSamples:
    """Samples waiting for the one learner, in a Redis list `{prefix}nba:segments:samples`.

    Workers push a customer's features when they take its churn snapshot (about once per
    customer per horizon, as `Segmenter.learn_one` wants); the learner pops them. A
    global key, written once per snapshot, never on every event. At most `max_len`
    samples wait: while no learner runs, the oldest are dropped rather than letting the
    list grow without bound. A popped sample not yet checkpointed when the learner dies
    is lost, never learned twice.
    """

    def __init__(self, redis: Redis, *, key_prefix: str = "", max_len: int = 100_000) -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {max_len}")
        self._redis = redis
        self.key = Keys(key_prefix).segment_samples
        self.max_len = max_len

    async def push(self, samples: Sequence[SegmentSample]) -> None:
        """Queue `samples` (one round trip), keeping the newest `max_len`."""
        if not samples:
            return
        encoded = [orjson.dumps({"features": s.features, "ts": s.ts}) for s in samples]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(self.key, *encoded)
            pipe.ltrim(self.key, -self.max_len, -1)
            await pipe.execute()

    async def pop(self, limit: int) -> list[SegmentSample]:
        """Up to `limit` of the oldest samples, removed from the list."""
        raw = await self._redis.lpop(self.key, limit)
        return [
            SegmentSample(features=item["features"], ts=float(item["ts"]))
            for item in map(orjson.loads, raw or ())
        ]
