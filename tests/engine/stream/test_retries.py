"""Which failures the worker waits out, on the real errors of the real clients."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
)
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from engine.stream import retries
from engine.stream.embedded import free_port
from engine.stream.retries import is_transient, retrying


@pytest.mark.parametrize(
    "reply",
    [
        "OOM command not allowed when used memory > 'maxmemory'.",
        "LOADING Redis is loading the dataset in memory",
        "BUSY Redis is busy running a script.",
        "READONLY You can't write against a read only replica.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
        "MASTERDOWN Link with MASTER is down",
    ],
)
def test_redis_refusals_that_pass_by_themselves_are_transient(reply: str) -> None:
    assert is_transient(BaseParser.parse_error(reply))


@pytest.mark.parametrize(
    "reply", ["ERR unknown command 'NOPE'", "WRONGTYPE Operation against a key", "NOSCRIPT x"]
)
def test_other_redis_errors_are_not(reply: str) -> None:
    assert not is_transient(BaseParser.parse_error(reply))


def test_kafka_errors_are_transient_when_kafka_says_they_are_retriable() -> None:
    assert is_transient(KafkaConnectionError())
    assert is_transient(NotLeaderForPartitionError())
    assert is_transient(KafkaTimeoutError())
    assert not is_transient(MessageSizeTooLargeError())
    assert not is_transient(ValueError("a bug"))


async def test_retrying_waits_out_a_redis_that_is_not_there_yet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(retries, "FIRST_RETRY_DELAY_S", 0.01)
    client = Redis(port=free_port(), socket_connect_timeout=0.2)  # nothing listens there
    attempts = 0

    async def ping_then_give_up() -> str:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            await client.ping()  # a real refused connection
        return "done"

    try:
        assert await retrying(ping_then_give_up) == "done"
    finally:
        await client.aclose()
    assert attempts == 3


async def test_retrying_raises_what_is_not_transient_at_once() -> None:
    attempts = 0

    async def fail() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("not a passing failure")

    with pytest.raises(ValueError, match="not a passing failure"):
        await retrying(fail)
    assert attempts == 1
    assert is_transient(RedisConnectionError("gone"))
