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
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from actions.catalog import load_catalog
from engine.settings import Settings
from engine.simulator import SimulatedBank

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
DRAIN_TIMEOUT_S = 120.0
LEARN_TIMEOUT_S = 30.0


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
    """Drive the system at `api_url` with a simulated bank; return the report."""
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
        report.ingest = await _wait_for_ingest(client, report.events_sent)
        report.models = await _wait_for_learning(client)
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


async def _wait_for_learning(client: httpx.AsyncClient) -> dict[str, Any]:
    """Wait until the served model has learned every answer the workers forwarded."""
    deadline = time.monotonic() + LEARN_TIMEOUT_S
    while True:
        models: dict[str, Any] = (await client.get("/v1/models")).json()
        learned = sum(models["propensity"]["outcomes_learned"].values())
        forwarded = (models.get("attribution") or {}).get("forwarded", 0)
        if learned >= forwarded or time.monotonic() > deadline:
            return models
        await asyncio.sleep(0.25)


async def _wait_for_ingest(client: httpx.AsyncClient, expected: int) -> dict[str, int]:
    """Wait until the worker has processed every accepted event; return its counters."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        ingest: dict[str, int] = (await client.get("/healthz")).json().get("ingest", {})
        processed = sum(ingest.values())
        if processed >= expected or time.monotonic() > deadline:
            return ingest
        await asyncio.sleep(0.25)
