"""How long a decision takes: in-process and over HTTP.

Setup: the simulated bank's customers get two days of events in the store, so decisions
are made on real features of known customers (picked at random, seeded).

- in-process, on uvloop as the API runs, one request at a time, on the API's own services
  (`api.services.open_services`), p50/p99 in µs:
  - the FastAPI app called through its ASGI interface: all but uvicorn and the socket;
  - the next-best-actions route handler called directly: everything the API does for a
    request except HTTP and FastAPI (the baseline);
  - `actions.next_best.next_best_actions` as the API wires it (`Services.next_best_actions`):
    the decision itself — state read, model scores, `decide()` with contacts and cool-off,
    recording — without the route's response rendering;
  - the customer's state read alone (`RedisFeatureStore.read_state`): the Redis part of
    the decision's read, so the rest is the Python and the record.
- over HTTP (the subject): `python -m engine.cli api` (one uvicorn process) asked
  `GET /v1/customers/{id}/next-best-actions?channel=mobile&n=3`, after a warm-up:
  - sequentially over one kept-alive connection (p50/p99, and the API's CPU per request),
    from a minimal HTTP/1.1 client (a `wrk` stand-in) and again from httpx, which is what
    a Python caller sees;
  - with 16 connections each always awaiting an answer, for a fixed time (requests/s,
    p50/p99, and how much CPU the API process and this client used).

No trivial HTTP route exists to separate HTTP from the decision, so the ratio quoted is
HTTP p50 over the in-process handler's p50: the cost of HTTP and FastAPI around the same
work (the ASGI figure splits it between FastAPI and uvicorn). The load generator shares
the two cores with the API; its CPU share is reported so a client-bound figure can be
told from an API-bound one.

Run: `python -m benchmarks.decision_latency [--quick]`.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import httpx
import uvloop
from fastapi import FastAPI

from api.app import create_app
from api.routes.customers import get_next_best_actions
from api.services import open_services
from benchmarks.common import (
    BenchmarkError,
    Result,
    batches,
    benchmark_main,
    engine_process,
    ensure_running,
    fresh_servers,
    isolated_settings,
    median_of,
    percentiles,
    process_cpu_seconds,
    server_version,
    simulated_events,
)
from engine.core.clients import connect_redis
from engine.core.settings import Settings
from engine.stream.embedded import free_port
from engine.stream.topics import ensure_topics
from features.events import Channel, Event
from features.state import FeatureFold
from features.store import RedisFeatureStore

NAME = "decision_latency"
CHANNEL = Channel.MOBILE
ACTIONS = 3
IN_FLIGHT = 16
WARM_UP_REQUESTS = 500
API_READY_TIMEOUT_S = 60.0
#: (customers, in-process requests, sequential HTTP requests, concurrent seconds, repeats)
FULL = (10_000, 5_000, 3_000, 10.0, 3)
QUICK = (2_000, 1_000, 500, 2.0, 3)


def run(quick: bool = False) -> Result:
    """Measure in-process and HTTP decision latency; return the result (not yet written)."""
    customers, in_process, sequential, seconds, repeats = QUICK if quick else FULL
    events = simulated_events(customers, days=2)
    known = sorted({event.customer_id for event in events})
    with fresh_servers() as services, tempfile.TemporaryDirectory(prefix="nba-bench-") as logs:
        settings = isolated_settings(services, api_port=free_port())
        asyncio.run(_load(settings, events))
        asyncio.run(ensure_topics(settings))
        log_path = Path(logs) / "api.log"
        print(f"{NAME}: {len(known):,} known customers, {repeats} repeats", flush=True)
        with engine_process("api", settings, log_path) as api:
            base_url = f"http://{settings.api_host}:{settings.api_port}"
            _wait_until_healthy(base_url, api, log_path)

            def one_repeat() -> dict[str, float]:
                rng = random.Random(len(known))
                with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                    figures = runner.run(_in_process(settings, known, in_process, rng))
                    figures |= runner.run(
                        _http_sequential(settings, known, sequential, rng, api.pid)
                    )
                    figures |= _httpx_sequential(base_url, known, sequential, rng)
                    figures |= runner.run(_http_concurrent(settings, known, seconds, rng, api.pid))
                return figures

            _httpx_sequential(base_url, known, WARM_UP_REQUESTS, random.Random(0))
            figures = median_of(repeats, one_repeat)
        valkey_version = asyncio.run(server_version(settings))
    http_p50 = figures["http_p50_us"].median / 1000
    http_p99 = figures["http_p99_us"].median / 1000
    return Result(
        name=NAME,
        parameters={
            "quick": quick,
            "customers_known": len(known),
            "events_loaded": len(events),
            "channel": CHANNEL.value,
            "exploration": settings.exploration,
            "actions_per_decision": ACTIONS,
            "in_process_requests": in_process,
            "http_sequential_requests": sequential,
            "http_in_flight": IN_FLIGHT,
            "http_concurrent_seconds": seconds,
            "http_warm_up_requests": WARM_UP_REQUESTS,
            "http_clients": f"minimal HTTP/1.1 keep-alive client on uvloop; httpx "
            f"{httpx.__version__} (sync) for the httpx_* figures",
            "repeats": repeats,
            "valkey_version": valkey_version,
        },
        figures=figures,
        subject="http_p50_us",
        baseline="handler_p50_us",
        notes=[
            "baseline: the next-best-actions route handler called in-process (uvloop) on the "
            "API's own services; subject: the same request over HTTP from a minimal "
            "keep-alive client on the same machine",
            f"p50 in µs: state read {figures['state_read_p50_us'].median:,.0f}, decision "
            f"(actions.next_best) {figures['next_best_p50_us'].median:,.0f}, route handler "
            f"{figures['handler_p50_us'].median:,.0f}, FastAPI via ASGI "
            f"{figures['asgi_p50_us'].median:,.0f}, HTTP {figures['http_p50_us'].median:,.0f}",
            f"over HTTP, sequential: p50 {http_p50:.2f} ms, p99 {http_p99:.2f} ms "
            f"(from httpx: p50 {figures['httpx_p50_us'].median / 1000:.2f} ms); the API "
            f"process spent {figures['api_cpu_us_per_request'].median:,.0f} µs CPU per request",
            f"with {IN_FLIGHT} in flight: {figures['http_concurrent_requests_per_s'].median:,.0f} "
            f"requests/s, the API process at {figures['api_cpu_share'].median:.0%} of a core "
            f"and the client at {figures['client_cpu_share'].median:.0%}",
        ],
    )


async def _load(settings: Settings, events: list[Event]) -> None:
    """Apply the events to the store the API reads (outside every timed section)."""
    redis = connect_redis(str(settings.redis_url))
    try:
        store = RedisFeatureStore(
            redis, FeatureFold(settings.feature_config()), key_prefix=settings.key_prefix
        )
        for batch in batches(events, 500):
            await store.apply(batch)
    finally:
        await redis.aclose()


def _wait_until_healthy(base_url: str, api: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait for `GET /healthz` to answer 200 (Redis and Kafka reachable)."""
    deadline = time.monotonic() + API_READY_TIMEOUT_S
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            ensure_running(api, log_path)
            try:
                if client.get(f"{base_url}/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise BenchmarkError(f"the API at {base_url} was not healthy within {API_READY_TIMEOUT_S} s")


async def _in_process(
    settings: Settings, known: list[str], requests: int, rng: random.Random
) -> dict[str, float]:
    """p50/p99 in this process, one request at a time, on the API's own services.

    Four nested figures: the FastAPI app called through ASGI (all but uvicorn and the
    socket), the route handler called directly (all but FastAPI too), the decision as
    the route makes it (`Services.next_best_actions`, all but the response), and the
    state read alone.
    """
    customers = [rng.choice(known) for _ in range(requests)]
    asgi: list[float] = []
    handler: list[float] = []
    next_best: list[float] = []
    state_read: list[float] = []
    app = create_app(settings)
    async with open_services(settings) as services:
        app.state.services = services  # what the app's lifespan does in the API process
        for customer_id in customers:
            started = time.perf_counter_ns()
            await _asgi_get(app, customer_id)
            asgi.append((time.perf_counter_ns() - started) / 1000)
        for customer_id in customers:
            started = time.perf_counter_ns()
            await get_next_best_actions(
                customer_id=customer_id, services=services, channel=CHANNEL, n=ACTIONS
            )
            handler.append((time.perf_counter_ns() - started) / 1000)
        for customer_id in customers:
            started = time.perf_counter_ns()
            await services.next_best_actions(customer_id, CHANNEL, ACTIONS, now=time.time())
            next_best.append((time.perf_counter_ns() - started) / 1000)
        for customer_id in customers:
            started = time.perf_counter_ns()
            await services.store.read_state(customer_id)
            state_read.append((time.perf_counter_ns() - started) / 1000)
    figures = {}
    for name, latencies in (
        ("asgi", asgi),
        ("handler", handler),
        ("next_best", next_best),
        ("state_read", state_read),
    ):
        figures[f"{name}_p50_us"], figures[f"{name}_p99_us"] = percentiles(latencies, 50, 99)
    return figures


async def _asgi_get(app: FastAPI, customer_id: str) -> None:
    """One next-best-actions request through the app's ASGI interface, as uvicorn calls it."""
    path, query = _path(customer_id).split("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    if status != 200:
        raise BenchmarkError(f"GET {path}?{query} through ASGI answered {status}")


def _path(customer_id: str) -> str:
    return f"/v1/customers/{customer_id}/next-best-actions?channel={CHANNEL.value}&n={ACTIONS}"


class _Connection:
    """A minimal HTTP/1.1 GET client on one kept-alive connection: a `wrk` stand-in.

    Why not httpx: on this machine httpx spends more CPU per request than the API itself
    (its async client saturates a core near 300 requests/s), so it would measure itself.
    This client parses only the status line and Content-Length, a few µs per request.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> _Connection:
        return cls(*await asyncio.open_connection(host, port))

    async def get(self, path: str) -> bytes:
        """GET `path`; the body of a 200 answer, BenchmarkError for anything else."""
        self._writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(
            (int(line[15:]) for line in lines if line[:15].lower() == b"content-length:"), None
        )
        if length is None:
            raise BenchmarkError(f"no Content-Length in {lines[0]!r}")
        body = await self._reader.readexactly(length)
        if lines[0][9:12] != b"200":
            raise BenchmarkError(f"GET {path}: {lines[0]!r} {body[:200]!r}")
        return body

    def close(self) -> None:
        self._writer.close()


async def _http_sequential(
    settings: Settings, known: list[str], requests: int, rng: random.Random, api_pid: int
) -> dict[str, float]:
    """p50/p99 of one request at a time over a kept-alive connection; the API's CPU each."""
    connection = await _Connection.open(settings.api_host, settings.api_port)
    latencies: list[float] = []
    api_cpu = process_cpu_seconds(api_pid)
    try:
        for _ in range(requests):
            started = time.perf_counter_ns()
            await connection.get(_path(rng.choice(known)))
            latencies.append((time.perf_counter_ns() - started) / 1000)
    finally:
        connection.close()
    api_cpu = process_cpu_seconds(api_pid) - api_cpu
    p50, p99 = percentiles(latencies, 50, 99)
    return {
        "http_p50_us": p50,
        "http_p99_us": p99,
        "api_cpu_us_per_request": api_cpu / requests * 1e6,
    }


def _httpx_sequential(
    base_url: str, known: list[str], requests: int, rng: random.Random
) -> dict[str, float]:
    """p50/p99 as a Python caller using httpx (sync, kept-alive) sees them."""
    latencies: list[float] = []
    with httpx.Client(base_url=base_url, timeout=10.0) as client:
        for _ in range(requests):
            started = time.perf_counter_ns()
            client.get(_path(rng.choice(known))).raise_for_status()
            latencies.append((time.perf_counter_ns() - started) / 1000)
    p50, p99 = percentiles(latencies, 50, 99)
    return {"httpx_p50_us": p50, "httpx_p99_us": p99}


async def _http_concurrent(
    settings: Settings, known: list[str], seconds: float, rng: random.Random, api_pid: int
) -> dict[str, float]:
    """Requests/s and latency with IN_FLIGHT connections each always awaiting an answer."""
    connections = [
        await _Connection.open(settings.api_host, settings.api_port) for _ in range(IN_FLIGHT)
    ]
    latencies: list[float] = []

    async def requester(connection: _Connection, deadline: float) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter_ns()
            await connection.get(_path(rng.choice(known)))
            latencies.append((time.perf_counter_ns() - started) / 1000)

    try:
        api_cpu, client_cpu = process_cpu_seconds(api_pid), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(requester(c, started + seconds) for c in connections))
        elapsed = time.perf_counter() - started
        api_cpu = process_cpu_seconds(api_pid) - api_cpu
        client_cpu = time.process_time() - client_cpu
    finally:
        for connection in connections:
            connection.close()
    p50, p99 = percentiles(latencies, 50, 99)
    return {
        "http_concurrent_requests_per_s": len(latencies) / elapsed,
        "http_concurrent_p50_us": p50,
        "http_concurrent_p99_us": p99,
        "api_cpu_share": api_cpu / elapsed,
        "client_cpu_share": client_cpu / elapsed,
    }


def main() -> None:
    benchmark_main(run, __doc__ or NAME)


if __name__ == "__main__":
    main()
