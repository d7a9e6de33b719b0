"""The propensity model's signed checkpoints in Redis, with a version that only moves forward.

One writer (the worker that owns the `outcomes` partition) saves the model it learns; any
number of readers (API replicas) follow the version and load each new checkpoint. All of
it lives in one Redis hash, `{prefix}nba:model:propensity`, with the fields `version`
(1, 2, … ; absent means no checkpoint yet), `saved_ts` (Unix seconds) and `checkpoint`
(`models.persistence` bytes, HMAC-signed). One key, so a save is atomic and the layout
works on Redis Cluster.

A save names the version it builds on and fails if another writer got there first
(`StaleCheckpointError`): after a Kafka rebalance a worker that lost the partition can
never overwrite what the new owner learned. A checkpoint whose signature does not match
the key is refused before anything is unpickled (`CheckpointRefusedError`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from models import persistence
from models.online import OnlinePropensity

_SAVE_SCRIPT = """
local current = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if current ~= tonumber(ARGV[1]) then
  return {0, current}
end
redis.call('HSET', KEYS[1], 'version', current + 1, 'saved_ts', ARGV[2], 'checkpoint', ARGV[3])
return {1, current + 1}
"""


class StaleCheckpointError(RuntimeError):
    """The stored version moved on since the model being saved was loaded."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(
            f"checkpoint not saved: it builds on version {expected}, but version {current} "
            "was saved meanwhile"
        )
        self.current = current


class CheckpointRefusedError(ValueError):
    """The stored checkpoint failed its signature (or type) check and was not loaded."""

    def __init__(self, version: int, reason: str) -> None:
        super().__init__(f"checkpoint version {version} refused: {reason}")
        self.version = version
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified model and the version and time it was saved with (version 0: the priors)."""

    version: int
    saved_ts: float | None
    model: OnlinePropensity


def with_priors(model: OnlinePropensity, priors: Mapping[str, float]) -> OnlinePropensity:
    """`model`, plus every action of `priors` it does not know yet (e.g. new in the catalog).

    Actions the model knows keep what they learned; new ones start from their prior.
    """
    for action_id, prior in priors.items():
        if action_id not in model.priors:
            model.add_action(action_id, prior)
    return model


class CheckpointStore:
    """Save and load the signed checkpoints of one model, `{key_prefix}nba:model:<name>`."""

    def __init__(
        self, redis: Redis, *, key_prefix: str = "", signing_key: bytes, name: str = "propensity"
    ) -> None:
        if len(signing_key) < persistence.MIN_KEY_BYTES:
            raise ValueError(
                f"the checkpoint key must be at least {persistence.MIN_KEY_BYTES} bytes"
            )
        self._redis = redis
        self._signing_key = signing_key
        self.key = f"{key_prefix}nba:model:{name}"
        self._save_script = redis.register_script(_SAVE_SCRIPT)

    async def version(self) -> int:
        """The latest saved version; 0 when nothing was saved yet. One cheap Redis call."""
        raw = await self._redis.hget(self.key, "version")
        return int(raw) if raw is not None else 0

    async def latest(self) -> Checkpoint | None:
        """The latest checkpoint, verified; None when nothing was saved yet.

        Raises `CheckpointRefusedError` (unread: nothing is unpickled) when its signature
        does not match the key, i.e. it was altered or signed under another key.
        """
        version, saved_ts, data = await self._redis.hmget(
            self.key, ["version", "saved_ts", "checkpoint"]
        )
        if version is None or data is None:
            return None
        try:
            model = persistence.load(
                data if isinstance(data, bytes) else data.encode(),
                key=self._signing_key,
                expected_type=OnlinePropensity,
            )
        except (persistence.SignatureError, TypeError) as error:
            raise CheckpointRefusedError(int(version), str(error)) from error
        return Checkpoint(
            version=int(version),
            saved_ts=float(saved_ts) if saved_ts is not None else None,
            model=model,
        )

    async def save(self, model: OnlinePropensity, *, expected_version: int) -> Checkpoint:
        """Sign and store `model` as version `expected_version` + 1.

        Raises `StaleCheckpointError` (and stores nothing) when the stored version is no
        longer `expected_version`.
        """
        data = persistence.save(model, key=self._signing_key)
        saved_ts = time.time()
        saved, version = await self._save_script(
            keys=[self.key], args=[expected_version, repr(saved_ts), data]
        )
        if not saved:
            raise StaleCheckpointError(expected_version, int(version))
        return Checkpoint(version=int(version), saved_ts=saved_ts, model=model)
