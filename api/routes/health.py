"""GET /healthz and GET /readyz: can this API serve, and is the stream keeping up.

`/healthz` is liveness: 200 while this process reaches Redis and Kafka, whatever the
workers do, so that a stalled worker never gets a healthy API restarted. It still tells
the truth about the stream: its `status` is `stalled` (not `ok`) while `/readyz` would
refuse. `/readyz` is the system's readiness: 503 while Redis or Kafka is unavailable, while
no worker is live, or while a worker has messages waiting and has made no progress for
`NBA_STALL_S` seconds. Both list each worker with its partitions, its lag on each and when
it last made progress.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, status
from redis.exceptions import RedisError

from api.deps import ServicesDep
from api.responses import OrjsonResponse
from api.services import Services
from features.processes import ProcessRecord

router = APIRouter(tags=["health"])

KAFKA_CHECK_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz(services: ServicesDep) -> OrjsonResponse:
    """200 when Redis and Kafka both answer (503 naming the one that does not); `status`
    says `stalled`, with the reasons, while the workers do not keep up."""
    checks = await _checks(services)
    reachable = checks["redis"] == "ok" and checks["kafka"] == "ok"
    code = status.HTTP_200_OK if reachable else status.HTTP_503_SERVICE_UNAVAILABLE
    return OrjsonResponse(checks, status_code=code)


@router.get("/readyz")
async def readyz(services: ServicesDep) -> OrjsonResponse:
    """200 only when the whole system serves and keeps up; 503 with `problems` otherwise."""
    checks = await _checks(services)
    code = status.HTTP_200_OK if checks["status"] == "ok" else status.HTTP_503_SERVICE_UNAVAILABLE
    return OrjsonResponse(checks, status_code=code)


async def _checks(services: Services) -> dict[str, Any]:
    checks: dict[str, Any] = {"problems": []}
    try:
        await services.redis.ping()
        checks["redis"] = "ok"
        checks["ingest"] = asdict(await services.ingest_stats.read())
        stream = await services.ingest_stats.health(stall_s=services.settings.stall_s)
        now = time.time()
        checks["workers"] = [worker.to_dict(now) for worker in stream.live]
        checks["problems"] += stream.problems
        # restarts and last exits of the processes `nba up` supervises (empty without it)
        processes = await ProcessRecord(key_prefix=services.settings.key_prefix).read(
            services.redis
        )
        checks["processes"] = {name: asdict(status) for name, status in processes.items()}
    except RedisError as error:
        checks["redis"] = f"unavailable: {error}"
        checks["problems"].append(f"Redis is unavailable: {error}")
    try:
        async with asyncio.timeout(KAFKA_CHECK_TIMEOUT_S):
            await services.producer.partitions_for(services.settings.events_topic)
        checks["kafka"] = "ok"
    except (TimeoutError, KafkaError) as error:
        checks["kafka"] = f"unavailable: {error!r}"
        checks["problems"].append(f"Kafka is unavailable: {error!r}")
    if checks["redis"] != "ok" or checks["kafka"] != "ok":
        checks["status"] = "unavailable"
    else:
        checks["status"] = "stalled" if checks["problems"] else "ok"
    return checks
