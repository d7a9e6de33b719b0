"""The decision log: each served decision, kept until its answer arrives, so the model learns.

Layout: one string per decision, `{prefix}cust:{<customer_id>}:d:<decision_id>`, holding
(orjson) the model input `x`, the channel, the decision time, the candidates, the shown
actions with their rank and logged probability, and the policy; it expires after
`ttl_seconds`. When an action of a decision has been answered, a marker
`{prefix}cust:{<id>}:d:<decision_id>:a:<action_id>` is set for as long. Every key carries
the customer's hash tag, so the layout works on Redis Cluster.

The leakage rule: the model learns only from the `x` stored with the decision, never
from the customer's features read when the answer arrives. Those later features already
include what happened after the decision — the answer event itself among it — and
learning from them would teach the model to predict an answer from its own aftermath.

Attribution (`attribute`), for outcome events that name a `decision_id`:

- `offer_accepted` is reward 1, `offer_declined` reward 0. An `offer_impression` with no
  answer is not learned from (yet): an ignored offer is not a decline.
- a decision that is not in the log (expired, never recorded, or made without the
  customer's features) is counted and skipped; so is an answer to an action the decision
  did not show.
- each shown action of a decision is learned from once: the first answer wins, and a
  replayed or repeated answer is counted as a duplicate.

Delivery: the worker forwards outcomes, then marks them answered (`settle`), then
acknowledges the events. A replay after the mark changes nothing; a crash between the
forward and the mark forwards those outcomes once more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from actions.decide import Decision
from features.events import Event, EventType
from features.redis_text import as_text
from models.learning import Outcome

#: The answers learned from, and their rewards.
REWARDS = {EventType.OFFER_ACCEPTED: 1, EventType.OFFER_DECLINED: 0}


@dataclass(frozen=True, slots=True)
class ShownAction:
    """An action as a decision showed it: where, and with which logged probability."""

    action_id: str
    rank: int
    probability: float


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """A recorded decision: what the model saw and what the customer was shown."""

    decision_id: str
    customer_id: str
    channel: str
    ts: float
    policy: str
    x: dict[str, float]
    candidates: list[str]
    shown: list[ShownAction]

    @classmethod
    def of(cls, decision: Decision) -> LoggedDecision:
        """The record of a decision, as `decide()` returned it."""
        return cls(
            decision_id=decision.decision_id,
            customer_id=decision.customer_id,
            channel=decision.channel,
            ts=decision.ts,
            policy=decision.policy,
            x=decision.x,
            candidates=decision.candidates,
            shown=[
                ShownAction(action.action_id, action.rank, action.probability)
                for action in decision.actions
            ],
        )

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> LoggedDecision:
        item: dict[str, Any] = orjson.loads(data)
        item["shown"] = [ShownAction(**shown) for shown in item["shown"]]
        return cls(**item)

    def shown_action(self, action_id: str) -> ShownAction | None:
        return next((shown for shown in self.shown if shown.action_id == action_id), None)


@dataclass(frozen=True, slots=True)
class OutcomeCounts:
    """What attribution did with outcome events: forwarded to learning, or why not."""

    forwarded: int = 0
    duplicates: int = 0
    unknown_decision: int = 0
    not_shown: int = 0


@dataclass(frozen=True, slots=True)
class Attribution:
    """The outcomes to learn from a batch of events, and the events skipped, by reason."""

    outcomes: list[Outcome] = field(default_factory=list)
    duplicates: list[Event] = field(default_factory=list)
    unknown_decision: list[Event] = field(default_factory=list)
    not_shown: list[Event] = field(default_factory=list)

    def counts(self) -> OutcomeCounts:
        return OutcomeCounts(
            forwarded=len(self.outcomes),
            duplicates=len(self.duplicates),
            unknown_decision=len(self.unknown_decision),
            not_shown=len(self.not_shown),
        )


@dataclass(frozen=True, slots=True)
class _Answer:
    """An accepted or declined event that names its decision (the schema requires action_id)."""

    event: Event
    decision_id: str
    action_id: str


def _answers(events: Sequence[Event]) -> list[_Answer]:
    return [
        _Answer(event, event.decision_id, event.action_id)
        for event in events
        if event.type in REWARDS and event.decision_id is not None and event.action_id is not None
    ]


class DecisionLog:
    """Decisions in Redis until their answers come, and the attribution of those answers."""

    def __init__(self, redis: Redis, *, key_prefix: str = "", ttl_seconds: int) -> None:
        self._redis = redis
        self._key_prefix = key_prefix
        self._ttl_seconds = ttl_seconds
        self._counts_key = f"{key_prefix}nba:outcomes"

    def decision_key(self, customer_id: str, decision_id: str) -> str:
        """The key of one decision; the `{id}` hash tag keeps it in the customer's slot."""
        return f"{self._key_prefix}cust:{{{customer_id}}}:d:{decision_id}"

    def _answered_key(self, customer_id: str, decision_id: str, action_id: str) -> str:
        return f"{self.decision_key(customer_id, decision_id)}:a:{action_id}"

    async def record(self, decision: Decision) -> None:
        """Store a decision for `ttl_seconds`: one Redis call."""
        await self._redis.set(
            self.decision_key(decision.customer_id, decision.decision_id),
            LoggedDecision.of(decision).to_json(),
            ex=self._ttl_seconds,
        )

    async def fetch(self, customer_id: str, decision_id: str) -> LoggedDecision | None:
        """A recorded decision, or None when it expired or was never recorded."""
        data = await self._redis.get(self.decision_key(customer_id, decision_id))
        return LoggedDecision.from_json(data) if data is not None else None

    async def attribute(self, events: Sequence[Event]) -> Attribution:
        """The outcomes the learnable events among `events` give, in one Redis round trip.

        Each outcome carries the x recorded with its decision (the leakage rule). Nothing
        is written: call `settle` once the outcomes are safely forwarded.
        """
        answers = _answers(events)
        if not answers:
            return Attribution()
        async with self._redis.pipeline(transaction=False) as pipe:
            for answer in answers:
                customer_id = answer.event.customer_id
                pipe.get(self.decision_key(customer_id, answer.decision_id))
                pipe.exists(self._answered_key(customer_id, answer.decision_id, answer.action_id))
            replies = await pipe.execute()
        attribution = Attribution()
        seen: set[tuple[str, str, str]] = set()
        for index, answer in enumerate(answers):
            data, answered = replies[2 * index], replies[2 * index + 1]
            event = answer.event
            identity = (event.customer_id, answer.decision_id, answer.action_id)
            if data is None:
                attribution.unknown_decision.append(event)
                continue
            decision = LoggedDecision.from_json(data)
            shown = decision.shown_action(answer.action_id)
            if shown is None:
                attribution.not_shown.append(event)
            elif answered or identity in seen:
                attribution.duplicates.append(event)
            else:
                seen.add(identity)
                attribution.outcomes.append(
                    Outcome(
                        event_id=event.event_id,
                        customer_id=event.customer_id,
                        decision_id=answer.decision_id,
                        action_id=answer.action_id,
                        reward=REWARDS[event.type],
                        rank=shown.rank,
                        probability=shown.probability,
                        x=decision.x,
                    )
                )
        return attribution

    async def settle(self, attribution: Attribution) -> None:
        """Mark the attributed answers as learned from and add the counts: one round trip."""
        counts = {name: value for name, value in asdict(attribution.counts()).items() if value}
        if not counts:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for outcome in attribution.outcomes:
                answered = self._answered_key(
                    outcome.customer_id, outcome.decision_id, outcome.action_id
                )
                pipe.set(answered, outcome.event_id, ex=self._ttl_seconds)
            for name, value in counts.items():
                pipe.hincrby(self._counts_key, name, value)
            await pipe.execute()

    async def counts(self) -> OutcomeCounts:
        """What attribution has done so far, over every worker."""
        stored = await self._redis.hgetall(self._counts_key)
        return OutcomeCounts(**{as_text(key): int(value) for key, value in stored.items()})
