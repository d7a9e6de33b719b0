"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status
from redis.exceptions import RedisError

from api.responses import OrjsonResponse
from api.routes import customers, events, health, models, segments
from api.services import open_services
from engine.core.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    """The API wired to the servers named in `settings` (both must be set)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_services(settings) as services:
            app.state.services = services
            yield

    app = FastAPI(
        title="nba-engine",
        summary="Real-time next-best-action decisions for retail banks and retailers",
        version="0.1.0",
        default_response_class=OrjsonResponse,
        lifespan=lifespan,
    )
    app.add_exception_handler(RedisError, _feature_store_unavailable)
    app.include_router(events.router)
    app.include_router(customers.router)
    app.include_router(models.router)
    app.include_router(segments.router)
    app.include_router(health.router)
    return app


async def _feature_store_unavailable(request: Request, error: Exception) -> OrjsonResponse:
    """Redis down is the server's problem, said plainly: 503, not a bare 500."""
    return OrjsonResponse(
        {"detail": f"the feature store is unavailable: {error}"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
    )
