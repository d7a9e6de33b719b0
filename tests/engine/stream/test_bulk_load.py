"""`nba load` against the real embedded Valkey: a JSON-lines history into the store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from engine.cli import main
from engine.core.settings import Settings
from engine.stream.bulk_load import load_events, load_into
from engine.stream.embedded import free_port
from features.events import Event
from features.state import FeatureFold
from features.store import RedisFeatureStore

T0 = 1767605400.0
CUSTOMERS = [f"C{i}" for i in range(40)]


def history(count: int) -> list[Event]:
    """Logins and transactions of CUSTOMERS, a minute apart, in time order."""
    return [
        Event.model_validate(
            {
                "event_id": f"h{i}",
                "customer_id": CUSTOMERS[i % len(CUSTOMERS)],
                "type": "transaction" if i % 3 else "login",
                "channel": "mobile",
                "ts": T0 + 60 * i,
                **({"amount": 10.0 + i % 7} if i % 3 else {}),
            }
        )
        for i in range(count)
    ]


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def store_for(redis: Redis, settings: Settings, suffix: str = "") -> RedisFeatureStore:
    return RedisFeatureStore(
        redis,
        FeatureFold(settings.feature_config()),
        key_prefix=settings.key_prefix + suffix,
        cached_states=settings.state_cache_size,
    )


async def test_a_history_loads_as_the_stream_would_apply_it(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    events = history(1_300)
    late = events[0].model_copy(update={"event_id": "late", "ts": events[0].ts.replace(year=2025)})
    lines = [orjson.dumps(event.to_wire()) for event in events]
    lines[700:700] = [b"{not json", b"", b'{"event_id": "x", "type": "login"}']
    lines.append(orjson.dumps(late.to_wire()))
    source = write_lines(tmp_path / "history.jsonl", lines)
    loaded, reference = store_for(redis, settings, "load:"), store_for(redis, settings, "ref:")
    read: list[int] = []

    report = await load_events(loaded, source, tmp_path / "rejects", read.append)

    for start in range(0, len(events), 500):
        await reference.apply(events[start : start + 500])
    for customer in CUSTOMERS:
        assert await loaded.read(customer, now=T0) == await reference.read(customer, now=T0)
    assert (report.lines, report.applied, report.duplicates) == (1_304, 1_300, 0)
    assert (report.rejected, report.late, report.linked) == (2, 1, 0)
    assert sum(read) == source.stat().st_size
    rejects = [orjson.loads(line) for line in (tmp_path / "rejects").read_bytes().splitlines()]
    assert [reject.get("line") for reject in rejects] == [701, 703, None]
    assert "not valid JSON" in rejects[0]["reason"]
    assert rejects[1]["item"] == '{"event_id": "x", "type": "login"}'
    assert "customer_id" in rejects[1]["reason"]
    assert rejects[2]["item"]["event_id"] == "late"
    assert "allowed lateness" in rejects[2]["reason"]

    again = await load_events(loaded, source, tmp_path / "rejects-again")
    assert (again.applied, again.duplicates) == (0, 1_300)


async def test_an_event_ahead_of_the_clock_is_rejected_and_the_rest_loads(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    events = history(3)
    future = events[0].model_copy(
        update={"event_id": "future", "ts": datetime(2099, 1, 1, tzinfo=UTC)}
    )
    lines = [orjson.dumps(event.to_wire()) for event in [events[0], future, *events[1:]]]
    source = write_lines(tmp_path / "history.jsonl", lines)

    report = await load_events(store_for(redis, settings), source, tmp_path / "rejects")

    assert (report.applied, report.rejected, report.late) == (3, 1, 0)
    [reject] = [orjson.loads(line) for line in (tmp_path / "rejects").read_bytes().splitlines()]
    assert reject["line"] == 2
    assert reject["reason"].startswith("ts: 2099-01-01T00:00:00Z is ")
    assert "at most 300 s ahead is accepted (NBA_MAX_CLOCK_SKEW_S)" in reject["reason"]


async def test_events_after_a_link_reach_the_customer(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    """An identifier linked mid-file: its later events count for the customer at once."""
    link = {
        "event_id": "link",
        "customer_id": "C1",
        "type": "identity_linked",
        "channel": "branch",
        "ts": T0,
        "attrs": {"identifier": "card:4111"},
    }
    on_card = [
        {
            "event_id": f"c{i}",
            "customer_id": "card:4111",
            "type": "login",
            "channel": "atm",
            "ts": T0 + 60 * (i + 1),
        }
        for i in range(3)
    ]
    source = write_lines(tmp_path / "linked.jsonl", [orjson.dumps(e) for e in [link, *on_card]])
    store = store_for(redis, settings)

    report = await load_events(store, source, tmp_path / "rejects")

    assert (report.applied, report.linked) == (4, 1)
    assert await store.resolve("card:4111") == "C1"
    features = await store.read("C1", now=T0 + 600)
    assert features is not None
    assert features["event_count"] == 4
    assert not (tmp_path / "rejects").exists()


async def test_load_into_opens_the_configured_store(
    redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    source = write_lines(tmp_path / "h.jsonl", [orjson.dumps(e.to_wire()) for e in history(50)])
    report = await load_into(str(settings.redis_url), settings, source, tmp_path / "rejects")
    assert report.applied == 50
    features = await store_for(redis, settings).read("C0", now=T0)
    assert features is not None
    assert features["event_count"] == 2


@pytest.fixture
def environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `nba` command configured, through its environment, as `settings` says."""
    for name, value in settings.as_environment().items():
        monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("environment")
def test_the_command_reports_rejects_and_fails_on_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [orjson.dumps(event.to_wire()) for event in history(20)] + [b"[1, 2]"]
    source = write_lines(tmp_path / "h.jsonl", lines)

    assert main(["load", str(source)]) == 1

    output = capsys.readouterr().out
    assert "events applied" in output
    assert "h.jsonl.rejected" in output
    rejected = orjson.loads((tmp_path / "h.jsonl.rejected").read_bytes())
    assert rejected["line"] == 21
    assert "JSON object" in rejected["reason"]


@pytest.mark.usefixtures("environment")
def test_the_command_refuses_a_missing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", str(tmp_path / "absent.jsonl")]) == 2
    assert "absent.jsonl" in capsys.readouterr().out


def test_the_command_says_when_redis_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NBA_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    source = write_lines(tmp_path / "h.jsonl", [orjson.dumps(e.to_wire()) for e in history(5)])

    assert main(["load", str(source)]) == 1

    output = capsys.readouterr().out
    assert "failed" in output
    assert "loading it again is safe" in output
