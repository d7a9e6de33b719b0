"""GET /healthz: is this API process able to serve, and how far has ingestion got."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, status
from redis.exceptions import RedisError

from api.deps import ServicesDep
from api.responses import OrjsonResponse
from features.processes import ProcessRecord

router = APIRouter(tags=["health"])

KAFKA_CHECK_TIMEOUT_S = 2.0


@router.get("/healthz")
async def healthz(services: ServicesDep) -> OrjsonResponse:
    """200 when Redis and Kafka both answer, 503 naming the one that does not."""
    checks: dict[str, Any] = {}
    try:
        await services.redis.ping()
        checks["redis"] = "ok"
        checks["ingest"] = asdict(await services.ingest_stats.read())
        workers = await services.ingest_stats.live_workers()
        checks["workers"] = [asdict(worker) for worker in workers]
        # restarts and last exits of the processes `nba up` supervises (empty without it)
        processes = await ProcessRecord(key_prefix=services.settings.key_prefix).read(
            services.redis
        )
        checks["processes"] = {name: asdict(status) for name, status in processes.items()}
    except RedisError as error:
        checks["redis"] = f"unavailable: {error}"
    try:
        async with asyncio.timeout(KAFKA_CHECK_TIMEOUT_S):
            await services.producer.partitions_for(services.settings.events_topic)
        checks["kafka"] = "ok"
    except (TimeoutError, KafkaError) as error:
        checks["kafka"] = f"unavailable: {error!r}"
    healthy = checks["redis"] == "ok" and checks["kafka"] == "ok"
    checks["status"] = "ok" if healthy else "unavailable"
    code = status.HTTP_200_OK if healthy else status.HTTP_503_SERVICE_UNAVAILABLE
    return OrjsonResponse(checks, status_code=code)
