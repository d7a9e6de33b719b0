"""`nba load`: a history of events loaded into the feature store from a JSON-lines file.

What a bank does when it adopts the engine — months of transactions and contacts from
its warehouse — or to replay a stream: the events go straight to Redis through
`RedisFeatureStore.apply_batches` (each batch's write in flight while the next batch is
folded, the faster of the store's two ways: `benchmarks.ingest_store`), not through
Kafka, and are not counted as ingested by the stream. One event per line, in the wire
form of `POST /v1/events`; blank lines are skipped.

Nothing is lost silently: a line that is not a valid event (one timed more than
`NBA_MAX_CLOCK_SKEW_S` ahead of the clock included), and an event the store refuses as
late (older than the allowed lateness behind its customer's latest event: give the file
in time order per customer), goes to the rejects file with its reason, and loading goes
on. Loading a file again changes nothing (event ids are deduplicated within the allowed
lateness). An `identity_linked` event links its identifier once the batch holding it is
written, as the worker does, so the events after it that name the identifier reach the
customer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from engine.core.clients import connect_redis
from engine.core.settings import Settings
from features.events import Event, EventType, Rejection, parse_event
from features.state import FeatureFold
from features.store import ApplyResult, LateEvent, RedisFeatureStore

#: Events per batch: as the benchmark measures (the cost is per customer of a batch).
LOAD_BATCH = 500


@dataclass(slots=True)
class LoadReport:
    """What a load did: lines read, events applied, already there, late, lines rejected,
    identifiers linked."""

    lines: int = 0
    applied: int = 0
    duplicates: int = 0
    late: int = 0
    rejected: int = 0
    linked: int = 0

    def add(self, result: ApplyResult) -> None:
        self.applied += result.applied
        self.duplicates += result.duplicates
        self.late += len(result.late)


@dataclass(slots=True)
class Rejects:
    """The rejects file, created at the first rejection: one JSON object per line."""

    path: Path
    _file: IO[bytes] | None = field(default=None, init=False)

    def write(self, record: dict[str, Any]) -> None:
        if self._file is None:
            self._file = self.path.open("wb")
        self._file.write(orjson.dumps(record) + b"\n")

    def line(self, number: int, rejection: Rejection, raw: bytes) -> None:
        """An input line that is not a valid event, as it was read."""
        text = raw.decode(errors="replace").rstrip("\n")
        self.write({"line": number, "reason": rejection.reason, "item": text})

    def late(self, refused: LateEvent) -> None:
        """An event the store refused as late."""
        self.write({"reason": refused.reason, "item": refused.event.to_wire()})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class EventLines:
    """A JSON-lines source read as batches of valid events, its invalid lines rejected.

    `batches()` stops after a batch that ends with an `identity_linked` event, so that
    the caller can link before the events after it are applied; call it again until
    `exhausted`. `on_bytes` is told the size of the lines read, once per batch. An event
    timed more than `max_ahead_s` ahead of the clock is rejected, as the API and the worker
    reject it (its time would make the customer's events of today late).
    """

    def __init__(
        self,
        source: IO[bytes],
        rejects: Rejects,
        report: LoadReport,
        on_bytes: Callable[[int], None] = lambda read: None,
        batch_size: int = LOAD_BATCH,
        max_ahead_s: float | None = None,
    ) -> None:
        self._max_ahead_s = max_ahead_s
        self._lines = enumerate(source, start=1)
        self._rejects = rejects
        self._report = report
        self._on_bytes = on_bytes
        self._batch_size = batch_size
        self.links: list[Event] = []
        self.exhausted = False

    def batches(self) -> Iterator[list[Event]]:
        batch: list[Event] = []
        read = 0
        for number, raw in self._lines:
            self._report.lines += 1
            read += len(raw)
            event = self._parse(number, raw)
            if event is None:
                continue
            batch.append(event)
            if event.type is EventType.IDENTITY_LINKED:
                self.links.append(event)
                self._on_bytes(read)
                yield batch
                return
            if len(batch) == self._batch_size:
                self._on_bytes(read)
                yield batch
                batch, read = [], 0
        self.exhausted = True
        self._on_bytes(read)
        if batch:
            yield batch

    def _parse(self, number: int, raw: bytes) -> Event | None:
        """The line's event; None for a blank line or a rejected one."""
        if not raw.strip():
            return None
        try:
            item = orjson.loads(raw)
            parsed = parse_event(item, index=number, max_ahead_s=self._max_ahead_s)
        except orjson.JSONDecodeError as error:
            parsed = Rejection(number, None, f"line is not valid JSON: {error}")
        if isinstance(parsed, Rejection):
            self._report.rejected += 1
            self._rejects.line(number, parsed, raw)
            return None
        return parsed


async def load_events(
    store: RedisFeatureStore,
    path: Path,
    rejects_path: Path,
    on_bytes: Callable[[int], None] = lambda read: None,
) -> LoadReport:
    """Load the events of the JSON-lines file at `path` into `store`; rejections to
    `rejects_path` (created only if there is one). `on_bytes` is told the bytes read, batch by
    batch, for a progress bar."""
    report = LoadReport()
    rejects = Rejects(rejects_path)
    try:
        with path.open("rb") as source:
            skew = store.fold.config.max_clock_skew_s
            lines = EventLines(source, rejects, report, on_bytes, max_ahead_s=skew)
            while not lines.exhausted:
                result = await store.apply_batches(lines.batches())
                report.add(result)
                for refused in result.late:
                    rejects.late(refused)
                for link in lines.links:
                    await store.link(link.customer_id, str(link.attrs["identifier"]))
                    report.linked += 1
                lines.links.clear()
    finally:
        rejects.close()
    return report


async def load_into(
    redis_url: str,
    settings: Settings,
    path: Path,
    rejects_path: Path,
    on_bytes: Callable[[int], None] = lambda read: None,
) -> LoadReport:
    """`load_events` into the store at `redis_url`, with the feature configuration, key
    prefix and state cache of `settings`."""
    redis = connect_redis(redis_url)
    try:
        store = RedisFeatureStore(
            redis,
            FeatureFold(settings.feature_config()),
            key_prefix=settings.key_prefix,
            cached_states=settings.state_cache_size,
        )
        return await load_events(store, path, rejects_path, on_bytes)
    finally:
        await redis.aclose()
