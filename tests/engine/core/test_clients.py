"""The engine's Redis clients (hiredis-packed commands) against the embedded Valkey."""

from __future__ import annotations

import pytest
from redis.exceptions import DataError

from engine.core.clients import HiredisPackingConnection, connect_redis, redis_from_settings
from engine.core.settings import Settings


async def test_commands_round_trip_every_argument_type(settings: Settings) -> None:
    redis = connect_redis(str(settings.redis_url))
    prefix = settings.key_prefix
    try:
        await redis.mset({f"{prefix}s": "tête", f"{prefix}b": b"\x00\xff", f"{prefix}i": 42})
        await redis.set(f"{prefix}f", 2.5)
        assert await redis.mget([f"{prefix}s", f"{prefix}b", f"{prefix}i", f"{prefix}f"]) == [
            "tête".encode(),
            b"\x00\xff",
            b"42",
            b"2.5",
        ]
        assert await redis.object("encoding", f"{prefix}i") == b"int"  # "OBJECT ENCODING"
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(f"{prefix}i")
            pipe.get(f"{prefix}i")
            assert await pipe.execute() == [43, b"43"]
        pool = redis.connection_pool
        assert pool.connection_class is HiredisPackingConnection
    finally:
        await redis.aclose()


async def test_values_redis_py_refuses_are_refused(settings: Settings) -> None:
    redis = connect_redis(str(settings.redis_url))
    try:
        with pytest.raises(DataError, match="bool"):
            await redis.set(f"{settings.key_prefix}flag", True)
        with pytest.raises(DataError):
            await redis.set(f"{settings.key_prefix}none", None)  # type: ignore[arg-type]
    finally:
        await redis.aclose()


async def test_the_processes_client_comes_from_settings(settings: Settings) -> None:
    redis = redis_from_settings(settings, timeout_s=0.5)
    try:
        assert await redis.ping()
        kwargs = redis.connection_pool.connection_kwargs
        assert redis.connection_pool.connection_class is HiredisPackingConnection
        assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.5
    finally:
        await redis.aclose()
    untimed = redis_from_settings(settings)
    try:
        assert untimed.connection_pool.connection_kwargs.get("socket_timeout") is None
    finally:
        await untimed.aclose()
    with pytest.raises(ValueError, match="NBA_REDIS_URL"):
        redis_from_settings(Settings(redis_url=None))
