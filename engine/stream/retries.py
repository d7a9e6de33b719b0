"""Which failures are worth waiting out, and waiting them out with backoff.

Why: a worker must never stay alive doing nothing. A failure that goes away by itself
(Redis restarting or refusing writes at `maxmemory`, a broker leader moving, a request
timing out) is retried with backoff, for as long as it lasts, because giving up would lose
the work and a restart would meet the same outage. Any other failure is not retried: it
says something is wrong with the work itself (a bug, a message the broker refuses), and
the caller isolates the items it concerns (`engine.stream.pipeline`) or exits so that its
supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka.errors import KafkaError, KafkaTimeoutError
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)
T = TypeVar("T")

FIRST_RETRY_DELAY_S = 0.1
MAX_RETRY_DELAY_S = 5.0
#: Redis refusals that pass by themselves: writes refused at `maxmemory`, a replica that
#: is read-only for now, a cluster resharding or not ready, a master down for the moment.
#: (Loading after a restart is a `ConnectionError` in redis-py.)
TRANSIENT_REDIS_REFUSALS = (
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
    ClusterDownError,
    MasterDownError,
)
#: Error codes of replies redis-py has no class for: a script running too long.
TRANSIENT_REDIS_CODES = frozenset({"BUSY", "NOREPLICAS"})


def is_transient(error: BaseException) -> bool:
    """True for a failure that goes away by itself, so waiting it out loses nothing."""
    if isinstance(error, RedisConnectionError | RedisTimeoutError | TimeoutError):
        return True
    if isinstance(error, TRANSIENT_REDIS_REFUSALS):
        return True
    if isinstance(error, ResponseError):
        return str(error).split(" ", 1)[0] in TRANSIENT_REDIS_CODES
    if isinstance(error, KafkaTimeoutError):
        return True
    return isinstance(error, KafkaError) and error.retriable


async def retrying(operation: Callable[[], Awaitable[T]], *, what: str = "Redis") -> T:
    """Run `operation`, waiting out transient failures with backoff; others are raised.

    `what` names the part in the log line each retry writes.
    """
    delay = FIRST_RETRY_DELAY_S
    while True:
        try:
            return await operation()
        except Exception as error:
            if not is_transient(error):
                raise
            log.warning("%s unavailable (%s); retrying in %.1f s", what, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY_S)
