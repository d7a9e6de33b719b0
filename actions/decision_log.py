"""The decision log: each served decision, kept until its answer arrives, so the model learns.

Layout: one string per decision, `{prefix}cust:{<customer_id>}:d:<decision_id>`, holding
(orjson) the model input `x`, the channel, the decision time, the candidates, the shown
actions with their rank and logged probability, and the policy; it expires after
`ttl_seconds`. When an action of a decision has been answered, a marker
`{prefix}cust:{<id>}:d:<decision_id>:a:<action_id>` is set for as long: the answer's
event id, or `NO_ANSWER_MARK` once its no-answer window closed. Every such key carries
the customer's hash tag, so the layout works on Redis Cluster.

The leakage rule: the model learns only from the `x` stored with the decision, never
from the customer's features read when the answer arrives. Those later features already
include what happened after the decision — the answer event itself among it — and
learning from them would teach the model to predict an answer from its own aftermath.

Attribution (`attribute`), for offer events that name a `decision_id`:

- `offer_accepted` is reward 1, `offer_declined` reward 0.
- `offer_impression` opens the action's no-answer window (`no_answer_window_s`, from
  when the worker attributes it): when it closes without an answer, the action counts
  as a negative (reward 0, the decision's `x`) in mode `negative`, or is only closed in
  mode `ignore`. An answer after that is `late`: counted, and it changes nothing.
- a decision that is not in the log (expired, never recorded, or made without the
  customer's features) is counted and skipped; so is an answer to an action the decision
  did not show.
- each shown action of a decision is learned from once: the first answer wins, and a
  replayed or repeated answer is counted as a duplicate.

Delivery: the worker forwards outcomes, then marks them answered (`settle`), then
acknowledges the events. A replay after the mark changes nothing; a crash between the
forward and the mark forwards those outcomes once more.

No-answer windows, exactly once. The open windows are indexed in keys of their own
slot, shared by every customer (the hash tag `{noanswer}`; a global index rather than
per-customer keys, so that one script can find every due window):
`{prefix}nba:{noanswer}:pending` (sorted set: `<customer> <decision> <action>` by
deadline), `…:expired` (sorted set: windows closed within the last window, by closing
time), `…:outbox` (stream: closed windows not yet handed on) and `…:counts` (hash).

- `attribute` opens windows and claims them for answers in one script, in event order:
  an answer removes its open window before it is forwarded, and a window already closed
  makes it late. Sweeps and answers are therefore serialised by Redis: a window is
  either answered or closed, never both.
- `expire_unanswered` (a worker timer) closes every due window in one script: out of
  `pending`, into `expired` and the `outbox` stream, counted. A worker killed before
  the script changed nothing; after it, the closed windows wait in the outbox.
- `forward_unanswered` reads the outbox's oldest entries, builds the negatives from the
  decisions' `x`, hands them on (the worker sends them to the `outcomes` topic and
  waits for the broker), marks the actions `NO_ANSWER_MARK` and only then deletes the
  entries. A worker killed before the delete hands the same entries on again; each
  negative carries its stream id (`Outcome.expiry_id`), and the learner saves the
  latest id it learned with each checkpoint and skips any negative at or before it, so
  a negative is learned, and counted, once.

Limits: the window must be shorter than the decision TTL (the negative needs its
decision's `x`); a closed window is remembered in `expired` for one window and by its
marker once forwarded, so a hand-on delayed longer than a window (the broker down that
long) could let a very late answer be learned beside its negative.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from actions.decide import Decision
from features.events import Event, EventType
from features.keys import Keys
from features.redis_text import as_text
from models.learning import Outcome

#: The answers learned from, and their rewards.
REWARDS = {EventType.OFFER_ACCEPTED: 1, EventType.OFFER_DECLINED: 0}
#: The answered marker of an action whose no-answer window closed (never an event id).
NO_ANSWER_MARK = "(no answer)"

NoAnswerMode = Literal["negative", "ignore"]
#: Sends outcomes on to learning and returns once they are safely delivered.
SendOutcomes = Callable[[list[Outcome]], Awaitable[None]]

# Opens ('o') and claims ('c') no-answer windows, in event order. KEYS: pending, expired;
# ARGV: the deadline of new windows, then op, member pairs. Returns per claim 1 if the
# window had already closed (a late answer), else 0.
_ATTRIBUTE_SCRIPT = """
local late = {}
for i = 2, #ARGV, 2 do
  local op, member = ARGV[i], ARGV[i + 1]
  local closed = redis.call('ZSCORE', KEYS[2], member)
  if op == 'o' then
    if not closed then redis.call('ZADD', KEYS[1], 'NX', ARGV[1], member) end
  elseif closed then
    late[#late + 1] = 1
  else
    redis.call('ZREM', KEYS[1], member)
    late[#late + 1] = 0
  end
end
return late
"""

# Closes the windows due by ARGV[1] (at most ARGV[2]) into expired and the outbox, to be
# learned as negatives if ARGV[4] is '1', and forgets windows closed more than ARGV[3]
# seconds ago. KEYS: pending, expired, outbox. Returns how many closed.
_EXPIRE_SCRIPT = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[3])))
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZADD', KEYS[2], now, member)
  redis.call('XADD', KEYS[3], '*', 'member', member, 'learn', ARGV[4])
end
return #due
"""

# Deletes handed-on outbox entries, counting each one that this call deleted under its
# count's name, so that two workers handing the same entry on count it once.
# KEYS: outbox, counts; ARGV: id, count name pairs.
_FORWARDED_SCRIPT = """
for i = 1, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1)
  end
end
"""


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
    """What attribution did with offer answers: forwarded to learning, or why not (`late`:
    after the action's no-answer window closed); and the closed no-answer windows handed
    on: as negatives (`no_answer`), ignored (`no_answer_ignored`, mode `ignore`), or
    counted in `unknown_decision` when their decision was gone.
    """

    forwarded: int = 0
    duplicates: int = 0
    unknown_decision: int = 0
    not_shown: int = 0
    late: int = 0
    no_answer: int = 0
    no_answer_ignored: int = 0


@dataclass(frozen=True, slots=True)
class Attribution:
    """The outcomes to learn from a batch of events, and the answers skipped, by reason."""

    outcomes: list[Outcome] = field(default_factory=list)
    duplicates: list[Event] = field(default_factory=list)
    unknown_decision: list[Event] = field(default_factory=list)
    not_shown: list[Event] = field(default_factory=list)
    late: list[Event] = field(default_factory=list)

    def counts(self) -> OutcomeCounts:
        return OutcomeCounts(
            forwarded=len(self.outcomes),
            duplicates=len(self.duplicates),
            unknown_decision=len(self.unknown_decision),
            not_shown=len(self.not_shown),
            late=len(self.late),
        )


@dataclass(frozen=True, slots=True)
class _Offer:
    """An offer event (impression or answer) that names its decision and action."""

    event: Event
    decision_id: str
    action_id: str

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.event.customer_id, self.decision_id, self.action_id)

    @property
    def is_answer(self) -> bool:
        return self.event.type in REWARDS


def _offers(events: Sequence[Event]) -> list[_Offer]:
    kinds = {*REWARDS, EventType.OFFER_IMPRESSION}
    return [
        _Offer(event, event.decision_id, event.action_id)
        for event in events
        if event.type in kinds and event.decision_id is not None and event.action_id is not None
    ]


def _member(identity: tuple[str, str, str]) -> str:
    """The member naming one shown action's no-answer window (ids never contain a space)."""
    return " ".join(identity)


def _outcome(event_id: str, decision: LoggedDecision, shown: ShownAction, reward: int) -> Outcome:
    """The outcome of one shown action of `decision`, with the x recorded with it."""
    return Outcome(
        event_id=event_id,
        customer_id=decision.customer_id,
        decision_id=decision.decision_id,
        action_id=shown.action_id,
        reward=reward,
        rank=shown.rank,
        probability=shown.probability,
        x=decision.x,
        candidates=decision.candidates,
    )


@dataclass(slots=True)
class _Classified:
    """A batch's offers sorted out: skipped answers, and the window operations to run."""

    attribution: Attribution = field(default_factory=Attribution)
    operations: list[str] = field(default_factory=list)  # op, member pairs for the script
    claims: list[tuple[Event, Outcome]] = field(default_factory=list)


class DecisionLog:
    """Decisions in Redis until their answers come, the attribution of those answers, and
    the no-answer windows of the actions shown.

    `no_answer_window_s` must be shorter than `ttl_seconds`; `no_answer_mode` says
    whether a closed window is learned as a negative or only closed.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str = "",
        ttl_seconds: int,
        no_answer_window_s: float,
        no_answer_mode: NoAnswerMode,
    ) -> None:
        if not 0 < no_answer_window_s < ttl_seconds:
            raise ValueError(
                f"the no-answer window ({no_answer_window_s} s) must be positive and shorter "
                f"than the decision TTL ({ttl_seconds} s)"
            )
        self._redis = redis
        self._key_prefix = key_prefix
        self._ttl_seconds = ttl_seconds
        self.no_answer_window_s = no_answer_window_s
        self.no_answer_mode = no_answer_mode
        self._keys = keys = Keys(key_prefix)
        self._counts_key = keys.outcome_counts
        self.pending_key = keys.no_answer("pending")
        self.expired_key = keys.no_answer("expired")
        self.outbox_key = keys.no_answer("outbox")
        self._window_counts_key = keys.no_answer("counts")
        self._attribute_script = redis.register_script(_ATTRIBUTE_SCRIPT)
        self._expire_script = redis.register_script(_EXPIRE_SCRIPT)
        self._forwarded_script = redis.register_script(_FORWARDED_SCRIPT)

    def decision_key(self, customer_id: str, decision_id: str) -> str:
        """The key of one decision; the `{id}` hash tag keeps it in the customer's slot."""
        return self._keys.decision(customer_id, decision_id)

    def _answered_key(self, customer_id: str, decision_id: str, action_id: str) -> str:
        return self._keys.answered(customer_id, decision_id, action_id)

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

    async def attribute(self, events: Sequence[Event], *, now: float | None = None) -> Attribution:
        """The outcomes the answers among `events` give; impressions open no-answer windows.

        Two Redis round trips when `events` hold offer events (the decisions and markers,
        then one script opening and claiming windows), none otherwise. Each outcome
        carries the x recorded with its decision (the leakage rule). Answered markers are
        not written: call `settle` once the outcomes are safely forwarded. `now` (Unix
        seconds, default the clock) starts the windows opened.
        """
        offers = _offers(events)
        if not offers:
            return Attribution()
        async with self._redis.pipeline(transaction=False) as pipe:
            for offer in offers:
                customer_id = offer.event.customer_id
                pipe.get(self.decision_key(customer_id, offer.decision_id))
                pipe.get(self._answered_key(customer_id, offer.decision_id, offer.action_id))
            replies = await pipe.execute()
        classified = _classify(offers, replies)
        if not classified.operations:
            return classified.attribution
        deadline = (time.time() if now is None else now) + self.no_answer_window_s
        late = await self._attribute_script(
            keys=[self.pending_key, self.expired_key],
            args=[repr(deadline), *classified.operations],
        )
        attribution = classified.attribution
        for (event, outcome), closed in zip(classified.claims, late, strict=True):
            if closed:
                attribution.late.append(event)
            else:
                attribution.outcomes.append(outcome)
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
        """What attribution and the no-answer windows have done so far, over every worker."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._counts_key)
            pipe.hgetall(self._window_counts_key)
            replies = await pipe.execute()
        totals: Counter[str] = Counter()
        for stored in replies:
            totals.update({as_text(name): int(value) for name, value in stored.items()})
        return OutcomeCounts(**totals)

    async def expire_unanswered(self, *, limit: int, now: float | None = None) -> int:
        """Close the no-answer windows due by `now` (at most `limit`, oldest first).

        One atomic script: each due window leaves `pending` for `expired` and the outbox,
        marked to be learned or not by the mode. Returns how many closed.
        """
        closed = await self._expire_script(
            keys=[self.pending_key, self.expired_key, self.outbox_key],
            args=[
                repr(time.time() if now is None else now),
                limit,
                repr(self.no_answer_window_s),
                1 if self.no_answer_mode == "negative" else 0,
            ],
        )
        return int(closed)

    async def forward_unanswered(self, send: SendOutcomes, *, limit: int) -> int:
        """Hand on the oldest closed windows (at most `limit`): negatives to `send`, in order.

        `send` must return only once the negatives are safely delivered. The actions are
        then marked `NO_ANSWER_MARK` and the entries deleted; a crash before the delete
        hands the same negatives on again, with the same `expiry_id`s (the learner skips
        them). Returns the number of negatives sent.
        """
        entries = await self._redis.xrange(self.outbox_key, count=limit)
        if not entries:
            return 0
        closed = [_ClosedWindow.of(entry_id, fields) for entry_id, fields in entries]
        negatives = await self._negatives([window for window in closed if window.learn])
        if negatives:
            await send(negatives)
        async with self._redis.pipeline(transaction=False) as pipe:
            for window in closed:
                pipe.set(self._answered_key(*window.identity), NO_ANSWER_MARK, ex=self._ttl_seconds)
            await pipe.execute()
        sent = {outcome.expiry_id for outcome in negatives}
        await self._forwarded_script(
            keys=[self.outbox_key, self._window_counts_key],
            args=[item for window in closed for item in (window.entry_id, window.count(sent))],
        )
        return len(negatives)

    async def _negatives(self, windows: Sequence[_ClosedWindow]) -> list[Outcome]:
        """The negative outcome of each window whose decision is still in the log."""
        if not windows:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for window in windows:
                pipe.get(self.decision_key(window.customer_id, window.decision_id))
            replies = await pipe.execute()
        negatives = []
        for window, data in zip(windows, replies, strict=True):
            decision = LoggedDecision.from_json(data) if data is not None else None
            shown = decision.shown_action(window.action_id) if decision is not None else None
            if decision is not None and shown is not None:
                event_id = f"no-answer:{window.decision_id}:{window.action_id}"
                negative = _outcome(event_id, decision, shown, reward=0)
                negatives.append(replace(negative, expiry_id=window.entry_id))
        return negatives


@dataclass(frozen=True, slots=True)
class _ClosedWindow:
    """An outbox entry: a shown action whose window closed, and whether to learn it."""

    entry_id: str
    customer_id: str
    decision_id: str
    action_id: str
    learn: bool

    @classmethod
    def of(cls, entry_id: bytes | str, fields: dict[Any, Any]) -> _ClosedWindow:
        values = {as_text(name): as_text(value) for name, value in fields.items()}
        customer_id, decision_id, action_id = values["member"].split(" ")
        return cls(as_text(entry_id), customer_id, decision_id, action_id, values["learn"] == "1")

    @property
    def identity(self) -> tuple[str, str, str]:
        return (self.customer_id, self.decision_id, self.action_id)

    def count(self, sent: set[str | None]) -> str:
        """The count this window adds to once handed on, given the expiry ids sent."""
        if not self.learn:
            return "no_answer_ignored"
        return "no_answer" if self.entry_id in sent else "unknown_decision"


def _classify(offers: Sequence[_Offer], replies: Sequence[Any]) -> _Classified:
    """Sort a batch's offers out, in order, from their decisions and answered markers.

    Answers that cannot be learned are filed by reason; the others become claims of
    their windows. An impression opens its action's window unless the action is
    answered (before, or earlier in the batch) or its window already closed.
    """
    classified = _Classified()
    skipped = classified.attribution
    answered: set[tuple[str, str, str]] = set()
    for index, offer in enumerate(offers):
        data, marker = replies[2 * index], replies[2 * index + 1]
        decision = LoggedDecision.from_json(data) if data is not None else None
        shown = decision.shown_action(offer.action_id) if decision is not None else None
        member = _member(offer.identity)
        if not offer.is_answer:
            if shown is not None and marker is None and offer.identity not in answered:
                classified.operations += ["o", member]
        elif decision is None:
            skipped.unknown_decision.append(offer.event)
        elif shown is None:
            skipped.not_shown.append(offer.event)
        elif marker is not None and as_text(marker) == NO_ANSWER_MARK:
            skipped.late.append(offer.event)
        elif marker is not None or offer.identity in answered:
            skipped.duplicates.append(offer.event)
        else:
            answered.add(offer.identity)
            classified.operations += ["c", member]
            reward = REWARDS[offer.event.type]
            outcome = _outcome(offer.event.event_id, decision, shown, reward)
            classified.claims.append((offer.event, outcome))
    return classified
