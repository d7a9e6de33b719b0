"""Exits and restarts of the processes `nba up` supervises, kept in Redis.

Why: the supervisor restarts a worker, the learner or the API that dies, and the one
place every process of the system can read is Redis. The supervisor writes here (with a
synchronous client: it has no event loop) and `GET /healthz` reads it (asynchronously),
so an operator sees from the API that a process has been restarting, how often, and why
it last exited. A deployment run without `nba up` has no supervisor and an empty record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import orjson
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from features.keys import Keys
from features.redis_text import as_text


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """One supervised process: restarts so far in this run, and its last exit, if any.

    `last_exit` reads like "killed by SIGKILL" or "exited with status 1"; `last_exit_ts`
    is its wall-clock time (Unix seconds).
    """

    restarts: int = 0
    last_exit: str | None = None
    last_exit_ts: float | None = None


class ProcessRecord:
    """The supervised processes in the hash `{prefix}nba:processes`: one field per process
    name (`worker`, `worker-2`, `learner`, `api`, …), its `ProcessStatus` as JSON."""

    def __init__(self, *, key_prefix: str = "") -> None:
        self.key = Keys(key_prefix).processes

    def start(self, client: Redis, names: list[str]) -> None:
        """Forget any earlier run's record and list `names`, none restarted yet."""
        fresh = {name: orjson.dumps(asdict(ProcessStatus())) for name in names}
        with client.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            if fresh:
                pipe.hset(self.key, mapping=fresh)
            pipe.execute()

    def record(self, client: Redis, name: str, status: ProcessStatus) -> None:
        """Replace the status of process `name`."""
        client.hset(self.key, name, orjson.dumps(asdict(status)))

    async def read(self, client: AsyncRedis) -> dict[str, ProcessStatus]:
        """Every recorded process by name, sorted."""
        stored = await client.hgetall(self.key)
        return {
            as_text(name): ProcessStatus(**orjson.loads(raw))
            for name, raw in sorted(stored.items())
        }
