"""Feature serving: one customer's features read through Feast's online API vs through ours.

The same customers, the same values, the same embedded Valkey, in the same run. The bank is
simulated for some days and its events applied with our store; every customer's features
are then read with ours at one fixed moment (`now`), and their numeric values (not the
categorical strings) are written as the parquet file of a Feast feature repository built in
a temporary directory at run time: a FileSource, the `customer_id` entity, one FeatureView
with those features, the Redis online store on the embedded Valkey and the file offline
store. `FeatureStore.apply` registers it and `materialize` copies the values into Valkey.

Before anything is timed, every customer's every feature is read back through Feast's
online API and compared with ours (floats to a relative 1e-9): a difference fails the
benchmark, because latency of unequal answers would compare nothing.

Figures: latency p50/p99 (µs) of reading one customer at a time, Feast's
`get_online_features(...).to_dict()` (the baseline) and our `RedisFeatureStore.read` (the
subject), alternating customer by customer so both see the same machine noise. They do not
do the same work: Feast serves the precomputed values it materialised, ours reads the
customer's compact state and computes every feature (decayed sums, windows, derived
features) as of the read time, which is what keeps its features fresh without a
materialisation job.

Feast is a peer installed by the `bench` extra; without it the benchmark is skipped.

Run: `python -m benchmarks.feature_serving [--quick]`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import math
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from redis.asyncio import Redis

from benchmarks.common import (
    SIMULATION_START,
    BenchmarkError,
    Result,
    batches,
    benchmark_main,
    fresh_servers,
    isolated_settings,
    median_of,
    percentiles,
    server_version,
    simulated_events,
)
from engine.core.clients import connect_redis
from engine.core.settings import Settings
from features.events import Event
from features.reading import Features
from features.state import FeatureFold
from features.store import RedisFeatureStore

if TYPE_CHECKING:
    from feast import FeatureStore

NAME = "feature_serving"
#: The Feast feature view and entity join key the benchmark registers.
FEATURE_VIEW = "customer_profile"
JOIN_KEY = "customer_id"
TIMESTAMP_COLUMN = "event_timestamp"
#: Relative tolerance of the equality check on floats (materialisation stores doubles).
REL_TOLERANCE = 1e-9
#: Customers per `get_online_features` call when checking every customer's values.
CHECK_BATCH = 500
WARM_UP_READS = 200
#: (customers, simulated days, timed reads per side and repeat, repeats)
FULL = (10_000, 14, 5_000, 5)
QUICK = (2_000, 7, 1_000, 3)
FEAST_MISSING = (
    f"{NAME} skipped: Feast is not installed; it is a peer from the `bench` extra "
    "(`pip install -e .[bench]`)"
)


class PeerNotInstalled(BenchmarkError):
    """The peer a benchmark compares against is not installed: the benchmark is skipped."""


@dataclass(frozen=True, slots=True)
class FeatureTable:
    """Our customers' numeric features as Feast's parquet holds them, one column each.

    `dtypes` maps each column to `int` or `float` (Feast's Int64 or Float64); `skipped` are
    the features left out because some customer's value is not a number (the categorical
    strings such as `lifecycle_stage`).
    """

    customer_ids: tuple[str, ...]
    columns: dict[str, list[int] | list[float]]
    dtypes: dict[str, type]
    skipped: tuple[str, ...]


def feature_table(features: Mapping[str, Features]) -> FeatureTable:
    """Columns of the numeric features of every customer, by customer id in the given order.

    A feature is an Int64 column when every customer's value is an int, a Float64 column
    when every value is a number and one is a float (the ints are then written as floats,
    since a column has one type), and left out otherwise; bools count as non-numbers.
    """
    if not features:
        raise ValueError("no customers")
    rows = list(features.values())
    names = list(rows[0])
    if any(list(row) != names for row in rows):
        raise ValueError("every customer must have the same features in the same order")
    columns: dict[str, list[int] | list[float]] = {}
    dtypes: dict[str, type] = {}
    skipped: list[str] = []
    for name in names:
        values = [row[name] for row in rows]
        kinds = {type(value) for value in values}
        if kinds == {int}:
            columns[name], dtypes[name] = values, int
        elif kinds <= {int, float}:
            columns[name], dtypes[name] = [float(value) for value in values], float
        else:
            skipped.append(name)
    return FeatureTable(tuple(features), columns, dtypes, tuple(skipped))


def mismatches(table: FeatureTable, served: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every (customer, feature) whose served value differs from the table's, described.

    Ints must be equal ints, floats equal to REL_TOLERANCE; a customer or a feature missing
    from `served` is a mismatch too.
    """
    found: list[str] = []
    for row, customer_id in enumerate(table.customer_ids):
        values = served.get(customer_id)
        if values is None:
            found.append(f"{customer_id}: not served")
            continue
        for name, column in table.columns.items():
            expected, got = column[row], values.get(name)
            if table.dtypes[name] is int:
                equal = type(got) is int and got == expected
            else:
                equal = isinstance(got, float) and math.isclose(
                    got, expected, rel_tol=REL_TOLERANCE
                )
            if not equal:
                found.append(f"{customer_id}.{name}: expected {expected!r}, served {got!r}")
    return found


def feast_installed() -> bool:
    """Whether Feast (the peer, from the `bench` extra) can be imported."""
    return importlib.util.find_spec("feast") is not None


def run(quick: bool = False) -> Result:
    """Materialise our features with Feast, check they are equal, time both reads."""
    if not feast_installed():
        raise PeerNotInstalled(FEAST_MISSING)
    customers, days, reads, repeats = QUICK if quick else FULL
    events = simulated_events(customers, days=days)
    now = (SIMULATION_START + timedelta(days=days)).timestamp()
    with fresh_servers(kafka=False) as services, tempfile.TemporaryDirectory() as repo:
        settings = isolated_settings(services)
        features = asyncio.run(load_features(settings, events, now))
        table = feature_table(features)
        print(
            f"{NAME}: {len(table.customer_ids):,} customers, {len(table.columns)} numeric "
            f"features materialised by Feast, {repeats} repeats",
            flush=True,
        )
        with feast_store(settings, Path(repo), table, now, project="nba_bench") as store:
            found = mismatches(table, read_through_feast(store, table))
            if found:
                raise BenchmarkError(
                    f"Feast and ours serve different values ({len(found):,}): {found[:5]}"
                )
            rng = random.Random(customers)
            asyncio.run(timed_reads(settings, store, table, now, WARM_UP_READS, rng))

            def one_repeat() -> dict[str, float]:
                return asyncio.run(timed_reads(settings, store, table, now, reads, rng))

            figures = median_of(repeats, one_repeat)
        valkey_version = asyncio.run(server_version(settings))
    ours_count = len(next(iter(features.values())))
    return Result(
        name=NAME,
        parameters={
            "quick": quick,
            "customers": len(table.customer_ids),
            "events_loaded": len(events),
            "simulated_days": days,
            "reads_per_side_per_repeat": reads,
            "warm_up_reads": WARM_UP_READS,
            "feast_features_per_read": len(table.columns),
            "ours_features_per_read": ours_count,
            "features_left_out_of_feast": list(table.skipped),
            "equality_checked": f"every customer and feature, floats to {REL_TOLERANCE:g} relative",
            "feast_version": importlib.metadata.version("feast"),
            "feast_online_store": "redis (redis-py), one get_online_features call per read",
            "repeats": repeats,
            "valkey_version": valkey_version,
        },
        figures=figures,
        subject="ours_p50_us",
        baseline="feast_p50_us",
        notes=[
            "baseline: Feast's get_online_features(...).to_dict() for one customer; subject: "
            "our RedisFeatureStore.read for the same customer, alternating customer by "
            "customer on the same Valkey",
            f"Feast serves {len(table.columns)} precomputed values materialised from a "
            f"parquet file; ours reads the customer's compact state and computes all "
            f"{ours_count} features (decayed sums, windows, derived features and "
            f"{len(table.skipped)} categorical strings) at read time, so they are fresh "
            "without a materialisation job",
            f"values equal for all {len(table.customer_ids):,} customers × "
            f"{len(table.columns)} features (floats to {REL_TOLERANCE:g} relative)",
            f"p99 in µs: Feast {figures['feast_p99_us'].median:,.0f}, ours "
            f"{figures['ours_p99_us'].median:,.0f}",
        ],
    )


async def load_features(settings: Settings, events: list[Event], now: float) -> dict[str, Features]:
    """Apply the events with our store; every customer's features read with ours at `now`."""
    redis = connect_redis(str(settings.redis_url))
    try:
        store = _our_store(redis, settings)
        for batch in batches(events, 500):
            await store.apply(batch)
        customer_ids = sorted({event.customer_id for event in events})
        features: dict[str, Features] = {}
        for customer_id in customer_ids:
            read = await store.read(customer_id, now=now)
            if read is None:
                raise BenchmarkError(f"{customer_id} has events but no features")
            features[customer_id] = read
        return features
    finally:
        await redis.aclose()


def _our_store(redis: Redis, settings: Settings) -> RedisFeatureStore:
    return RedisFeatureStore(
        redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
    )


@contextmanager
def feast_store(
    settings: Settings, repo: Path, table: FeatureTable, now: float, *, project: str
) -> Iterator[FeatureStore]:
    """A Feast feature repository in `repo` whose online store is `settings`' Redis,
    with `table` applied and materialised as of `now`; its keys are removed on exit.

    `project` names the Feast project, whose name is part of every key Feast writes.
    """
    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
    from feast.types import Float64, Int64, String

    timestamp = datetime.fromtimestamp(now, UTC)
    parquet = repo / "customer_features.parquet"
    frame = pd.DataFrame({JOIN_KEY: list(table.customer_ids), **table.columns})
    frame[TIMESTAMP_COLUMN] = pd.Timestamp(timestamp)
    frame.to_parquet(parquet, index=False)
    url = urlsplit(str(settings.redis_url))
    database = url.path.lstrip("/") or "0"
    config = RepoConfig(
        project=project,
        registry=str(repo / "registry.db"),
        provider="local",
        online_store={
            "type": "redis",
            "connection_string": f"{url.hostname}:{url.port},db={database}",
        },
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
    )
    store = FeatureStore(config=config)
    customer = Entity(name="customer", join_keys=[JOIN_KEY], value_type=ValueType.STRING)
    feature_types = {int: Int64, float: Float64}
    view = FeatureView(
        name=FEATURE_VIEW,
        entities=[customer],
        ttl=timedelta(days=1),
        schema=[
            Field(name=JOIN_KEY, dtype=String),
            *(Field(name=name, dtype=feature_types[table.dtypes[name]]) for name in table.columns),
        ],
        source=FileSource(path=str(parquet), timestamp_field=TIMESTAMP_COLUMN),
        online=True,
    )
    store.apply([customer, view])
    try:
        store.materialize(timestamp - timedelta(hours=1), timestamp + timedelta(seconds=1))
        yield store
    finally:
        store.teardown()


def feature_refs(table: FeatureTable) -> list[str]:
    """Feast's references to every feature of the table (`view:feature`)."""
    return [f"{FEATURE_VIEW}:{name}" for name in table.columns]


def read_through_feast(store: FeatureStore, table: FeatureTable) -> dict[str, dict[str, Any]]:
    """Every customer's values through Feast's online API, CHECK_BATCH customers a call."""
    refs = feature_refs(table)
    served: dict[str, dict[str, Any]] = {}
    for start in range(0, len(table.customer_ids), CHECK_BATCH):
        chunk = table.customer_ids[start : start + CHECK_BATCH]
        rows = [{JOIN_KEY: customer_id} for customer_id in chunk]
        answer = store.get_online_features(features=refs, entity_rows=rows).to_dict()
        for index, customer_id in enumerate(answer[JOIN_KEY]):
            served[customer_id] = {name: answer[name][index] for name in table.columns}
    return served


async def timed_reads(
    settings: Settings,
    feast: FeatureStore,
    table: FeatureTable,
    now: float,
    reads: int,
    rng: random.Random,
) -> dict[str, float]:
    """p50/p99 (µs) of `reads` single-customer reads on each side, alternating.

    Each drawn customer is read through both; which side goes first alternates, so neither
    always finds the customer's key freshly touched by the other.
    """
    refs = feature_refs(table)
    feast_us: list[float] = []
    ours_us: list[float] = []
    redis = connect_redis(str(settings.redis_url))
    try:
        ours = _our_store(redis, settings)
        for number in range(reads):
            customer_id = rng.choice(table.customer_ids)
            for side in (0, 1) if number % 2 else (1, 0):
                started = time.perf_counter_ns()
                if side == 0:
                    feast.get_online_features(
                        features=refs, entity_rows=[{JOIN_KEY: customer_id}]
                    ).to_dict()
                    feast_us.append((time.perf_counter_ns() - started) / 1000)
                else:
                    await ours.read(customer_id, now=now)
                    ours_us.append((time.perf_counter_ns() - started) / 1000)
    finally:
        await redis.aclose()
    figures: dict[str, float] = {}
    for name, latencies in (("feast", feast_us), ("ours", ours_us)):
        figures[f"{name}_p50_us"], figures[f"{name}_p99_us"] = percentiles(latencies, 50, 99)
    return figures


def main() -> None:
    """`python -m benchmarks.feature_serving [--quick]`; exits 0 with a message without Feast."""
    try:
        benchmark_main(run, __doc__ or NAME)
    except PeerNotInstalled as skipped:
        print(skipped)
        sys.exit(0)


if __name__ == "__main__":
    main()
