"""The clients of every engine process, built from settings: Redis (redis-py asyncio, commands
packed by hiredis).

`redis_from_settings` is how the worker, the learner and the API connect, so that all three
speak to Redis through the same connection class; `connect_redis` takes a URL, for callers
that hold one (bulk load, benchmarks).

Why: redis-py's synchronous connection packs commands with hiredis's C packer when hiredis
is installed, but its asyncio connection always packs them in Python, argument by argument.
The feature store sends one MGET and one MSET of about a thousand arguments per batch; packed
in Python they cost about a fifth of the store's client time per event (cProfile of
`benchmarks.ingest_store`). This connection hands the arguments to `hiredis.pack_command`.

`rediss://` and `unix://` URLs keep redis-py's SSL and Unix-socket connections (the URL's
scheme decides), packed as redis-py packs them.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError
from redis.typing import EncodableT

from engine.core.settings import Settings


class HiredisPackingConnection(Connection):
    """A TCP connection to Redis whose commands are packed by hiredis (C) instead of Python."""

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        """The command in the Redis protocol; the same argument rules as redis-py's packer."""
        name = args[0]
        if isinstance(name, str):
            args = (*name.encode().split(), *args[1:])
        elif isinstance(name, bytes) and b" " in name:
            args = (*name.split(), *args[1:])
        if bool in map(type, args):
            raise DataError(
                "Invalid input of type: 'bool'. Convert to a bytes, string, int or float first."
            )
        try:
            return [hiredis.pack_command(args)]
        except TypeError as error:
            raise DataError(str(error)) from error


def connect_redis(url: str, **options: Any) -> Redis:
    """A client for `url` (not connected until first used); `options` as for `Redis.from_url`."""
    return Redis.from_url(url, connection_class=HiredisPackingConnection, **options)


def redis_from_settings(settings: Settings, *, timeout_s: float | None = None) -> Redis:
    """A client for `settings.redis_url` (or an error saying how to set it).

    `timeout_s` bounds each connect and each reply (the API's requests must not hang on a
    Redis that went away); `None` keeps redis-py's default, no timeout (the stream
    processes retry on their own terms, `engine.stream.retries`).
    """
    options: dict[str, Any] = {}
    if timeout_s is not None:
        options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    return connect_redis(settings.require_redis(), **options)
