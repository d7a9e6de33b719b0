"""POST /v1/events: contact points report interaction events."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, HTTPException, Request, status

from api.deps import ServicesDep
from api.responses import OrjsonResponse
from features.events import parse_items

router = APIRouter(prefix="/v1/events", tags=["events"])


@router.post("", status_code=status.HTTP_202_ACCEPTED)
async def post_events(request: Request, services: ServicesDep) -> OrjsonResponse:
    """Accept one event or a JSON array of events and publish the valid ones to Kafka.

    Valid events are published even when others in the same batch are rejected: the
    answer is 202 when all were accepted, 422 listing each rejected item by index with
    its reason otherwise (an event timed more than `NBA_MAX_CLOCK_SKEW_S` ahead of this
    server's clock is one). Re-sending accepted events is harmless: features apply each
    `event_id` once.
    """
    try:
        body = orjson.loads(await _body_within(request, services.settings.max_request_bytes))
    except orjson.JSONDecodeError as error:
        detail = f"body is not valid JSON: {error}"
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail) from error
    items = body if isinstance(body, list) else [body]
    limit = services.settings.max_events_per_request
    if len(items) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{len(items)} events in one request; send at most {limit} per request",
        )
    events, rejections = parse_items(items, max_ahead_s=services.settings.max_clock_skew_s)
    await services.publisher.publish(events)
    content = {
        "accepted": len(events),
        "rejected": len(rejections),
        "errors": [rejection.to_dict() for rejection in rejections],
    }
    code = status.HTTP_422_UNPROCESSABLE_CONTENT if rejections else status.HTTP_202_ACCEPTED
    return OrjsonResponse(content, status_code=code)


async def _body_within(request: Request, limit: int) -> bytes:
    """The request's body, read no further than `limit` bytes (413 past it): a declared
    length over the limit is refused before anything is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, _too_large(f"{int(declared):,} bytes", limit)
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, _too_large("larger", limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: str, limit: int) -> str:
    return f"the body is {size}; send at most {limit:,} bytes per request (NBA_MAX_REQUEST_BYTES)"
