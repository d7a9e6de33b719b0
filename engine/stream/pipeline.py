"""Applying batches of `events` messages: the worker's main job, without Faust.

One batch is several Kafka messages (each one event or an envelope of events): their valid
events are applied to the feature store in one transaction, identities linked, the churn
and segment feed told, answers to offers attributed to their decisions and forwarded with
the decision's x to learning, and every invalid item or event too late to apply sent to the
dead-letter topic with its reason. Every step is idempotent (event ids remembered per
customer, answered markers in the decision log), so applying a batch again after a crash
or a failure changes nothing twice.

Failures (why the worker can never stay alive doing nothing):
- transient ones (Redis or the broker away for a while) are waited out with backoff
  (`engine.stream.retries`): nothing is lost and nothing skipped;
- any other failure of a batch is met by applying its items one at a time: each item that
  fails alone goes to the dead-letter topic with the error as its reason, and the others
  are applied. One bad event costs that event, not the batch, the customer or the worker.
- if even the dead letter cannot be sent, `apply` raises: the caller must end the process
  (`engine.stream.worker`), so that its supervisor restarts it and the broker hands the
  unacknowledged messages to the next worker.

`progress` says how far the pipeline got (the offset after the last message applied per
partition, and when it last moved), for the worker's heartbeat and `/readyz`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from actions.decision_log import Attribution, DecisionLog
from engine.stream.retries import retrying
from features.events import Event, EventType, Rejection, decode_message
from features.stats import IngestCounts, IngestStats
from features.store import LateEvent, RedisFeatureStore
from features.tiers import EdgesCache
from models.learning import pack_outcomes
from models.snapshots import CustomerModelsFeed

log = logging.getLogger(__name__)

#: Sends one message to a topic and returns once the broker has it.
Send = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the `events` topic: its value and where it was read.

    `first_index` is the position of its first item in the message it came from: an item
    applied alone keeps its place in the envelope for its dead letter.
    """

    value: bytes
    partition: int
    offset: int
    first_index: int = 0


@dataclass(slots=True)
class Progress:
    """How far the pipeline has applied each partition, and when it last moved."""

    #: partition -> the offset after the last message applied
    positions: dict[int, int] = field(default_factory=dict)
    #: when a batch was last applied (Unix seconds); the pipeline's start before that
    applied_ts: float = field(default_factory=time.time)

    def advance(self, messages: Sequence[Message]) -> None:
        for message in messages:
            if message.offset >= self.positions.get(message.partition, 0):
                self.positions[message.partition] = message.offset + 1
        self.applied_ts = time.time()


def dead_letter(rejection: Rejection, item: Any, message: Message, *, max_bytes: int) -> bytes:
    """The dead-letter record: the item as received, the reason and its origin.

    An item too large for a message of `max_bytes` is cut to fit (`item_truncated`); the
    whole of it stays on the events topic at the partition and offset given.
    """
    raw = item.decode(errors="replace") if isinstance(item, bytes) else item
    record = {
        "reason": rejection.reason,
        "index": message.first_index + rejection.index,
        "item": raw,
        "partition": message.partition,
        "offset": message.offset,
    }
    encoded = orjson.dumps(record)
    if len(encoded) <= max_bytes:
        return encoded
    text = raw if isinstance(raw, str) else orjson.dumps(raw).decode()
    record["item_bytes"] = len(text.encode())
    record["item_truncated"] = True
    record["item"] = text[: max(0, max_bytes // 2 - len(rejection.reason) - 200)]
    return orjson.dumps(record)


def late_rejections(late: list[LateEvent], items: Sequence[Any]) -> list[Rejection]:
    """Rejections for events the store refused as too late, pointing at their envelope item.

    The envelope's items are decoded only when there is a late event to point at.
    """
    if not late:
        return []
    index_of = {
        item.get("event_id"): index for index, item in enumerate(items) if isinstance(item, dict)
    }
    return [
        Rejection(index_of[refused.event.event_id], refused.event.event_id, refused.reason)
        for refused in late
    ]


class EventsPipeline:
    """Applies batches of `events` messages; see the module's docstring for what and how.

    `send_dead_letter` and `send_outcomes` send one message to the dead-letter and the
    outcomes topic; every message they are given is at most `max_message_bytes`. An event
    more than `max_clock_skew_s` ahead of this process's clock is dead-lettered.
    """

    def __init__(
        self,
        *,
        store: RedisFeatureStore,
        stats: IngestStats,
        decision_log: DecisionLog,
        customer_feed: CustomerModelsFeed,
        rfm_edges: EdgesCache,
        send_dead_letter: Send,
        send_outcomes: Send,
        max_message_bytes: int,
        max_clock_skew_s: float,
    ) -> None:
        self._store = store
        self._stats = stats
        self._decision_log = decision_log
        self._customer_feed = customer_feed
        self._rfm_edges = rfm_edges
        self._send_dead_letter = send_dead_letter
        self._send_outcomes = send_outcomes
        self._max_message_bytes = max_message_bytes
        self._max_clock_skew_s = max_clock_skew_s
        self.progress = Progress()

    async def apply(self, messages: Sequence[Message]) -> None:
        """Apply a batch, whatever happens to it; raises only if a dead letter cannot be sent."""
        try:
            await self._apply(messages)
        except Exception as error:
            log.exception(
                "a batch of %d messages failed (%s); applying its items one at a time",
                len(messages),
                error,
            )
            for message in messages:
                await self._apply_alone(message)
        self.progress.advance(messages)

    async def _apply_alone(self, message: Message) -> None:
        """Apply each item of a message on its own; an item that fails is dead-lettered."""
        items = _items_of(message.value)
        for index, item in enumerate(items):
            single = Message(
                orjson.dumps(item) if not isinstance(item, bytes) else item,
                message.partition,
                message.offset,
                message.first_index + index,
            )
            try:
                await self._apply([single])
            except Exception as error:
                reason = f"could not be processed: {type(error).__name__}: {error}"
                log.error("item %d of offset %d: %s", single.first_index, message.offset, reason)
                event_id = item.get("event_id") if isinstance(item, dict) else None
                rejection = Rejection(0, event_id if isinstance(event_id, str) else None, reason)
                await self._dead_letters([rejection], [item], single)
                await retrying(partial(self._stats.add, IngestCounts(dead_lettered=1)))

    async def _apply(self, messages: Sequence[Message]) -> None:
        """One pass over a batch; transient failures waited out, others raised."""
        skew = self._max_clock_skew_s  # an event further ahead of the clock: dead-lettered
        decoded = [(m, *decode_message(m.value, max_ahead_s=skew)) for m in messages]
        events: list[Event] = []
        for message, valid, rejections, items in decoded:
            events += valid
            await self._dead_letters(rejections, items, message)
        rejected = sum(len(rejections) for _, _, rejections, _ in decoded)
        result = await retrying(
            partial(self._store.apply, events, count_into=self._stats, rejected=rejected)
        )
        for linked in (event for event in events if event.type is EventType.IDENTITY_LINKED):
            identifier = str(linked.attrs["identifier"])
            await retrying(partial(self._store.link, linked.customer_id, identifier))
        await retrying(partial(self._customer_feed.observe, events, self._rfm_edges.current))
        if result.late:
            for message, valid, _, items in decoded:
                ids = {event.event_id for event in valid}
                late = [refused for refused in result.late if refused.event.event_id in ids]
                await self._dead_letters(late_rejections(late, items), items, message)
        attribution = await retrying(partial(self._decision_log.attribute, events))
        for outcomes in pack_outcomes(attribution.outcomes, max_bytes=self._max_message_bytes):
            # on the broker before the answers are marked learned
            await retrying(partial(self._send_outcomes, outcomes), what="Kafka")
        await retrying(partial(self._decision_log.settle, attribution))
        _log_skipped(attribution)

    async def _dead_letters(
        self, rejections: Sequence[Rejection], items: Sequence[Any], message: Message
    ) -> None:
        for rejection in rejections:
            record = dead_letter(
                rejection, items[rejection.index], message, max_bytes=self._max_message_bytes
            )
            # on the broker before the message is acknowledged
            await retrying(partial(self._send_dead_letter, record), what="Kafka")


def _items_of(value: bytes) -> list[Any]:
    """A message's items: an envelope's elements, one event, or the raw bytes if not JSON."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return [value]
    return decoded if isinstance(decoded, list) else [decoded]


def _log_skipped(attribution: Attribution) -> None:
    """One log line per answer that cannot be learned from, saying why."""
    for reason, events in (
        ("its decision is unknown (expired or never recorded)", attribution.unknown_decision),
        ("its decision did not show that action", attribution.not_shown),
    ):
        for event in events:
            log.warning(
                "answer %s (%s of %s, decision %s) not learned from: %s",
                event.event_id,
                event.type,
                event.action_id,
                event.decision_id,
                reason,
            )
