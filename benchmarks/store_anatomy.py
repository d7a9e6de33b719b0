"""Where Valkey's time goes when the feature store applies events: one part at a time.

Subject: Valkey's CPU per event for `RedisFeatureStore.apply` (the whole script).
Parts, each a script doing only that part for the same events, batches of 500:
the keys and arguments alone (the baseline: a script that only reads them), the
event-id marker (`SET NX EX` per event), and a customer's read-modify-write of six
fields (`HMGET` + `HSET`). What the parts do not explain is the script's own Lua work.

Run: `python -m benchmarks.store_anatomy [--quick]`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio import Redis

from benchmarks.common import (
    Result,
    Stopwatch,
    batches,
    benchmark_main,
    flush,
    fresh_servers,
    isolated_settings,
    median_of,
    simulated_events,
)
from engine.settings import Settings
from features.events import Event
from features.store import RedisFeatureStore

NAME = "store_anatomy"
BATCH_SIZE = 500
#: (customers, events, repeats)
FULL = (20_000, 200_000, 5)
QUICK = (10_000, 60_000, 3)

_ARGUMENTS_ONLY = """
local size = 0
for i = 1, #KEYS do size = size + #KEYS[i] + #ARGV[i + 1] end
return size
"""
_MARKERS = """
for i = 1, #KEYS do redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) end
return #KEYS
"""
_SIX_FIELDS = """
for i = 1, #KEYS do
  redis.call('HMGET', KEYS[i], 'a', 'b', 'c', 'd', 'e', 'f')
  redis.call('HSET', KEYS[i], 'a', '1', 'b', '2', 'c', '1772442000.5', 'd', '3', 'e', '4',
    'f', '1772442000.25')
end
return #KEYS
"""
#: part name → (script, key of one event given prefix, customer and event id)
PARTS: dict[str, tuple[str, Callable[[str, Event], str]]] = {
    "arguments_us_per_event": (_ARGUMENTS_ONLY, lambda p, e: f"{p}cust:{{{e.customer_id}}}:f"),
    "marker_us_per_event": (_MARKERS, lambda p, e: f"{p}cust:{{{e.customer_id}}}:e:{e.event_id}"),
    "six_fields_us_per_event": (_SIX_FIELDS, lambda p, e: f"{p}cust:{{{e.customer_id}}}:f"),
}


def run(quick: bool = False) -> Result:
    """Measure Valkey's CPU per event for each part and for the whole store script."""
    customers, count, repeats = QUICK if quick else FULL
    events = simulated_events(customers, limit=count)
    event_batches = batches(events, BATCH_SIZE)
    with fresh_servers(kafka=False) as services:
        settings = isolated_settings(services)
        print(f"{NAME}: {len(events):,} events, batches of {BATCH_SIZE}, {repeats} repeats")
        figures = median_of(repeats, lambda: asyncio.run(_one_repeat(settings, event_batches)))
    explained = sum(figures[name].median for name in PARTS)
    return Result(
        name=NAME,
        parameters={"quick": quick, "events": len(events), "customers": customers,
                    "batch_size": BATCH_SIZE, "repeats": repeats},
        figures=figures,
        subject="store_us_per_event",
        baseline="arguments_us_per_event",
        targets=[],
        notes=[
            "all figures: Valkey CPU (user + sys) per event over one pass of all batches",
            f"the parts explain {explained:.1f} of "
            f"{figures['store_us_per_event'].median:.1f} µs; the rest is the script's Lua "
            "folding and number formatting",
        ],
    )  # fmt: skip


async def _one_repeat(settings: Settings, event_batches: list[list[Event]]) -> dict[str, float]:
    redis = Redis.from_url(str(settings.redis_url))
    count = sum(len(batch) for batch in event_batches)
    prefix = settings.key_prefix
    figures: dict[str, float] = {}
    try:
        stopwatch = Stopwatch(redis)
        for name, (source, key_of) in PARTS.items():
            await flush(redis)
            script = redis.register_script(source)
            await stopwatch.start()
            for batch in event_batches:
                ids = [event.event_id for event in batch]
                await script(keys=[key_of(prefix, e) for e in batch], args=[86_400, *ids])
            figures[name] = (await stopwatch.stop())[2] / count * 1e6
        await flush(redis)
        store = RedisFeatureStore(redis, key_prefix=prefix, dedup_ttl_seconds=86_400)
        await stopwatch.start()
        for batch in event_batches:
            await store.apply(batch)
        figures["store_us_per_event"] = (await stopwatch.stop())[2] / count * 1e6
    finally:
        await redis.aclose()
    return figures


def main() -> None:
    benchmark_main(run, __doc__ or NAME)


if __name__ == "__main__":
    main()
