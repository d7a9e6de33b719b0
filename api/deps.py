"""FastAPI dependencies as `Annotated` aliases, so tests can override them."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from api.services import Services
from features.events import IDENTIFIER_PATTERN


async def get_services(request: Request) -> Services:
    """The process's services (async: a plain def would cost a thread-pool hop per request)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
CustomerId = Annotated[
    str, Path(pattern=IDENTIFIER_PATTERN, description="the customer's id", examples=["C000042"])
]
