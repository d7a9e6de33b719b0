"""Where the churn and segments models are checkpointed: the learner saves, the API reads."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from models.checkpoints import SignedModelStore
from models.churn_model import ChurnModel
from models.segments import Segmenter


@dataclass(frozen=True, slots=True)
class CustomerModelStores:
    """The signed checkpoints of the churn and segments models: the worker saves, the API reads."""

    churn: SignedModelStore[ChurnModel]
    segments: SignedModelStore[Segmenter]

    @classmethod
    def open(cls, redis: Redis, *, key_prefix: str, signing_key: bytes) -> CustomerModelStores:
        """Both stores, under the keys every worker and API replica agree on."""
        return cls(
            churn=SignedModelStore(
                redis,
                key_prefix=key_prefix,
                signing_key=signing_key,
                name="churn",
                model_type=ChurnModel,
            ),
            segments=SignedModelStore(
                redis,
                key_prefix=key_prefix,
                signing_key=signing_key,
                name="segments",
                model_type=Segmenter,
            ),
        )
