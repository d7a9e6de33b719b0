"""`nba demo`: a simulated bank driving a running system through its HTTP API.

Each simulated day the bank's customers generate their interaction events on every
channel (posted to `POST /v1/events` as a contact point would), then some of them meet
the engine on a channel: the demo asks `GET /v1/customers/{id}/next-best-actions`,
shows the top action and answers it by the simulator's hidden ground truth, reporting
the impression and the answer back as events. The worker learns from those answers and
the API serves each new model version, so the accept rate can move from day to day. The
report says what the system did, day by day, and how far the model learned.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from actions.catalog import load_catalog
from engine.core.settings import Settings
from engine.sim.simulator import SimulatedBank

#: Where customers meet the engine, and how often each channel asks for a decision.
DECISION_CHANNELS = {
    "mobile": 0.35,
    "web": 0.2,
    "branch": 0.15,
    "call_centre": 0.1,
    "email": 0.1,
    "sms": 0.05,
    "atm": 0.05,
}
ANSWERS = ("accept", "decline", "ignore")
EVENTS_PER_REQUEST = 2000
CONCURRENT_REQUESTS = 4
#: The demo waits for the worker and the learner as long as they make progress, and gives
#: up on one that has moved nothing for this long.
STALL_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.25


class FellBehind(RuntimeError):
    """A part of the system did not finish its work: `part` names the process (`worker`),
    the message says what it did not do; `report` holds what the demo saw until then."""

    def __init__(self, part: str, message: str, report: DemoReport) -> None:
        super().__init__(message)
        self.part = part
        self.report = report


@dataclass(frozen=True, slots=True)
class DemoConfig:
    customers: int = 3000
    days: int = 14
    decisions_per_day: int = 600
    seed: int = 7


@dataclass
class DemoReport:
    """What the demo sent, what the system did with it, and how the customers answered."""

    events_sent: int = 0
    events_rejected: int = 0
    decisions: int = 0
    empty_decisions: int = 0
    degraded_decisions: int = 0
    answers: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ANSWERS, 0))
    #: (accepted, shown) per simulated day
    days: list[tuple[int, int]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    ingest: dict[str, int] = field(default_factory=dict)
    #: `GET /v1/models` once the worker has learned every forwarded answer
    models: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0

    def latency_percentiles(self) -> dict[str, float]:
        if len(self.latencies_ms) < 2:
            return {}
        cuts = statistics.quantiles(self.latencies_ms, n=100, method="inclusive")
        return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}

    def accept_rate(self) -> float:
        shown = sum(self.answers.values())
        return self.answers["accept"] / shown if shown else 0.0

    def as_table(self) -> Table:
        table = Table(title="nba demo report", show_header=False)
        table.add_row("events sent (API accepted)", f"{self.events_sent:,}")
        table.add_row("events rejected by the API", f"{self.events_rejected:,}")
        table.add_row(
            "events processed by the worker",
            f"{self.ingest.get('applied', 0):,} applied, "
            f"{self.ingest.get('duplicates', 0):,} duplicates, "
            f"{self.ingest.get('dead_lettered', 0):,} dead-lettered",
        )
        table.add_row("decisions served", f"{self.decisions:,}")
        table.add_row("decisions with no eligible action", f"{self.empty_decisions:,}")
        table.add_row("degraded decisions", f"{self.degraded_decisions:,}")
        latency = self.latency_percentiles()
        if latency:
            table.add_row(
                "decision latency over HTTP",
                " / ".join(f"{name} {value:.1f} ms" for name, value in latency.items()),
            )
        table.add_row(
            "answers to the top action",
            ", ".join(f"{count:,} {answer}" for answer, count in self.answers.items()),
        )
        table.add_row("accept rate", f"{self.accept_rate():.2%}")
        if self.days:
            table.add_row(
                "accept rate by day",
                " ".join(
                    f"{accepted / shown:.1%}" if shown else "–" for accepted, shown in self.days
                ),
            )
        if self.models:
            propensity = self.models["propensity"]
            attribution = self.models.get("attribution") or {}
            table.add_row(
                "model learned",
                f"{propensity['model']} version {propensity['version']}: "
                f"{sum(propensity['outcomes_learned'].values()):,} answers learned, "
                f"{attribution.get('unknown_decision', 0):,} with an unknown decision "
                f"({self.models['exploration']['policy']} exploration)",
            )
        table.add_row("wall time", f"{self.elapsed_s:.1f} s")
        return table


def simulation_start(days: int, now: datetime) -> datetime:
    """The first simulated day, so that the last one is yesterday: features are read at
    the wall-clock time of each decision (recency, windows, stages), so the simulated
    history must end where the clock is."""
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days)


def run_demo(api_url: str, settings: Settings, config: DemoConfig, console: Console) -> DemoReport:
    """Drive the system at `api_url` with a simulated bank; return the report.

    Raises `FellBehind` if the worker does not apply every accepted event, or the model
    does not learn every answer forwarded to it, while the demo waits for them.
    """
    catalog = load_catalog(settings.catalog_path)
    bank = SimulatedBank(
        customers=config.customers,
        seed=config.seed,
        start=simulation_start(config.days, datetime.now(UTC)),
        action_ids=[action.id for action in catalog.actions],
    )
    return asyncio.run(_drive(api_url, bank, config, console))


async def _drive(
    api_url: str, bank: SimulatedBank, config: DemoConfig, console: Console
) -> DemoReport:
    report = DemoReport()
    rng = np.random.default_rng(config.seed)
    channels = list(DECISION_CHANNELS)
    weights = np.array(list(DECISION_CHANNELS.values()))
    in_flight = asyncio.Semaphore(CONCURRENT_REQUESTS)
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=CONCURRENT_REQUESTS)
    async with httpx.AsyncClient(base_url=api_url, timeout=30.0, limits=limits) as client:
        with Progress(
            TextColumn("simulated day"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("days", total=config.days, status="")
            for day in range(config.days):
                accepted, shown = report.answers["accept"], sum(report.answers.values())
                await _post_events(client, bank.events_for_day(day), report)
                customers = rng.integers(0, bank.customers, size=config.decisions_per_day)
                day_channels = rng.choice(channels, size=len(customers), p=weights / weights.sum())
                outcomes = await asyncio.gather(
                    *(
                        _decide_and_answer(
                            client, bank, int(c), str(ch), day, rng, report, in_flight
                        )
                        for c, ch in zip(customers, day_channels, strict=True)
                    )
                )
                await _post_events(client, [e for events in outcomes for e in events], report)
                report.days.append(
                    (report.answers["accept"] - accepted, sum(report.answers.values()) - shown)
                )
                progress.update(
                    task,
                    advance=1,
                    status=f"{report.events_sent:,} events, {report.decisions:,} decisions, "
                    f"accept rate {report.accept_rate():.1%}",
                )
        try:
            await _wait_for_ingest(client, report)
            await _wait_for_learning(client, report)
        finally:
            report.elapsed_s = time.perf_counter() - started
    return report


async def _post_events(
    client: httpx.AsyncClient, events: list[dict[str, Any]], report: DemoReport
) -> None:
    for start in range(0, len(events), EVENTS_PER_REQUEST):
        response = await client.post("/v1/events", json=events[start : start + EVENTS_PER_REQUEST])
        if response.status_code not in (202, 422):
            response.raise_for_status()
        body = response.json()
        report.events_sent += body["accepted"]
        report.events_rejected += body["rejected"]


async def _decide_and_answer(
    client: httpx.AsyncClient,
    bank: SimulatedBank,
    customer: int,
    channel: str,
    day: int,
    rng: np.random.Generator,
    report: DemoReport,
    in_flight: asyncio.Semaphore,
) -> list[dict[str, Any]]:
    """Ask for the customer's next-best actions; answer the top one; return the outcome events.

    Latency is timed inside the `in_flight` semaphore, so it excludes the demo's own queue.
    """
    customer_id = bank.customer_id(customer)
    async with in_flight:
        asked = time.perf_counter()
        response = await client.get(
            f"/v1/customers/{customer_id}/next-best-actions", params={"channel": channel, "n": 3}
        )
        report.latencies_ms.append((time.perf_counter() - asked) * 1000)
    response.raise_for_status()
    decision = response.json()
    report.decisions += 1
    report.degraded_decisions += decision["degraded"]
    if not decision["actions"]:
        report.empty_decisions += 1
        return []
    top = decision["actions"][0]["action_id"]
    answer = bank.respond(customer_id, top, channel, rng)
    report.answers[answer] += 1
    shown_at = bank.start + timedelta(days=day, hours=float(rng.uniform(8, 21)))
    return bank.outcome_events(customer_id, top, decision["decision_id"], channel, answer, shown_at)


async def _wait_for_ingest(client: httpx.AsyncClient, report: DemoReport) -> None:
    """Wait until the worker has applied every accepted event (`report.ingest` follows it).

    Raises `FellBehind` if it applies nothing more for STALL_TIMEOUT_S with events left.
    """
    expected = report.events_sent

    async def applied() -> int:
        report.ingest = (await client.get("/healthz")).json().get("ingest", {})
        return int(report.ingest.get("applied", 0))

    done = await _wait_while_moving(applied, expected)
    if done < expected:
        raise FellBehind(
            "worker",
            f"the worker applied {done:,} of the {expected:,} events the API accepted and "
            f"applied none for {STALL_TIMEOUT_S:.0f} s",
            report,
        )


async def _wait_for_learning(client: httpx.AsyncClient, report: DemoReport) -> None:
    """Wait until the served model has learned every answer the demo reported (each accept
    and decline of a shown action), and is at least version 1 if there were any;
    `report.models` follows it.

    The target is the demo's own count, not the worker's `forwarded` counter: the worker
    counts an event applied before it forwards the answer it carries, so right after the
    last event is applied that counter can still be short of the truth. Raises `FellBehind`
    if the model learns nothing more for STALL_TIMEOUT_S with answers left.
    """
    answered = report.answers["accept"] + report.answers["decline"]

    async def learned() -> int:
        report.models = (await client.get("/v1/models")).json()
        return sum(report.models["propensity"]["outcomes_learned"].values())

    done = await _wait_while_moving(learned, answered)
    version = report.models["propensity"]["version"]
    if done < answered or (answered and version < 1):
        forwarded = (report.models.get("attribution") or {}).get("forwarded", 0)
        raise FellBehind(
            "worker",
            f"the worker that learns (it owns the `outcomes` topic) learned {done:,} of the "
            f"{answered:,} answers reported ({forwarded:,} forwarded to it; served version "
            f"{version}) and learned none for {STALL_TIMEOUT_S:.0f} s",
            report,
        )


async def _wait_while_moving(progress: Callable[[], Awaitable[int]], target: int) -> int:
    """Poll `progress` until it reaches `target` or stops moving for STALL_TIMEOUT_S;
    return the last value."""
    last, moved = -1, time.monotonic()
    while True:
        value = await progress()
        if value >= target:
            return value
        if value != last:
            last, moved = value, time.monotonic()
        elif time.monotonic() - moved > STALL_TIMEOUT_S:
            return value
        await asyncio.sleep(POLL_INTERVAL_S)
