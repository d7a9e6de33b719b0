"""The segments resource: the behavioural segments the serving segmenter knows, in words."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import ServicesDep
from models.scores import NOT_SEGMENTED

router = APIRouter(prefix="/v1/segments", tags=["segments"])


@router.get("")
async def get_segments(services: ServicesDep) -> dict[str, Any]:
    """Every segment: id, size (customers learned into it), centroid (the segment's mean of
    each model input, in the features' units) and a plain-words description of how it
    differs from the average customer.

    While the segmenter is warming up, `segments` is empty, `ready` is false and `note`
    says how many customers it still needs; every customer's segment is then -1.
    """
    serving = services.segments_model.current
    segmenter = serving.model
    answer: dict[str, Any] = {
        "version": serving.version,
        "checkpoint_ts": serving.checkpoint_ts,
        "ready": segmenter.ready,
        "customers_learned": segmenter.customers_learned,
        "segments": [],
    }
    if not segmenter.ready:
        answer["note"] = (
            f"not segmented yet: {segmenter.customers_learned} of {segmenter.warmup} customers "
            f"sampled before segments are learned; every customer's segment is {NOT_SEGMENTED}"
        )
        return answer
    answer["segments"] = [
        {
            "segment": segment.segment,
            "size": segment.size,
            "centroid": segment.centroid,
            "description": segment.description,
            "traits": [
                {"feature": trait.feature, "label": trait.label, "z": trait.z, "word": trait.word}
                for trait in segment.traits
            ],
        }
        for segment in segmenter.describe()
    ]
    return answer
