"""The one settings class of the engine, read from `NBA_*` environment variables.

Domain packages never read the environment: the engine and the API build their clients
and pass values from here as arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.persistence import MIN_KEY_BYTES

DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "actions" / "catalog.yaml"


class Settings(BaseSettings):
    """Where the servers are and how the engine behaves.

    `redis_url` and `kafka_bootstrap` left unset mean "start the embedded servers"
    (only the CLI does that; the worker and the API need both set).
    """

    # hide_input_in_errors: a refused NBA_MODEL_KEY is not echoed into logs
    model_config = SettingsConfigDict(env_prefix="NBA_", extra="forbid", hide_input_in_errors=True)

    redis_url: str | None = Field(default=None, description="e.g. redis://host:6379/0")
    kafka_bootstrap: str | None = Field(default=None, description="e.g. host1:9092,host2:9092")
    events_topic: str = "events"
    dlq_topic: str = "events.dlq"
    topic_partitions: int = Field(default=8, ge=1)
    topic_replication: int = Field(default=1, ge=1, description="3 on a production cluster")
    key_prefix: str = Field(
        default="", description="prefix of every Redis key; lets several engines share one Redis"
    )
    dedup_ttl_seconds: int = Field(
        default=7 * 24 * 3600, ge=60, description="how long an event_id is remembered"
    )
    catalog_path: Path = DEFAULT_CATALOG
    worker_id: str = Field(default="nba-worker", description="Kafka consumer group of workers")
    kafka_session_timeout_s: float = Field(
        default=60.0,
        ge=3.0,
        description="a worker silent this long leaves the group; the embedded broker makes a "
        "joining worker wait half of it, so `nba up` uses 6 s there",
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    max_events_per_request: int = Field(default=10_000, ge=1)
    exploration: Literal["thompson", "epsilon_greedy", "none"] = Field(
        default="thompson", description="how the API explores while the model learns"
    )
    epsilon: float = Field(
        default=0.1, ge=0.0, le=1.0, description="epsilon_greedy: share of random rankings"
    )
    thompson_draws: int = Field(
        default=256, ge=1, description="thompson: posterior draws per decision"
    )
    model_key: SecretStr | None = Field(
        default=None,
        description="HMAC key signing model checkpoints (at least 16 bytes); the worker and "
        "the API must share it. `nba up` generates one per run when unset",
    )
    decision_ttl_seconds: int = Field(
        default=7 * 24 * 3600, ge=60, description="how long a decision waits for its answer"
    )
    checkpoint_interval_s: float = Field(
        default=2.0,
        gt=0.0,
        description="the learner learns and checkpoints the outcomes of every such interval "
        "(sooner when 1,000 outcome messages arrive first)",
    )
    outcomes_topic: str = Field(
        default="outcomes", description="answers with their decision's x, for the learner"
    )

    @field_validator("model_key")
    @classmethod
    def _key_long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value().encode()) < MIN_KEY_BYTES:
            raise ValueError(
                f"NBA_MODEL_KEY must be at least {MIN_KEY_BYTES} bytes (an HMAC is only as "
                "strong as its key); e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`"
            )
        return key

    def require_model_key(self) -> bytes:
        """The checkpoint signing key, or an error saying how to set it."""
        if self.model_key is None:
            raise ValueError(
                "NBA_MODEL_KEY must be set: the key (at least "
                f"{MIN_KEY_BYTES} bytes) that signs model checkpoints, shared by the worker "
                "and the API (`nba up` generates one per run)"
            )
        return self.model_key.get_secret_value().encode()

    @classmethod
    def from_environment(cls) -> Settings:
        """Settings from `NBA_*` variables; a variable that names no setting is an error.

        pydantic-settings ignores unknown prefixed variables, so a typo such as
        `NBA_REDIS_ULR` would otherwise silently leave the default in place.
        """
        known = {f"NBA_{name.upper()}" for name in cls.model_fields}
        unknown = sorted(name for name in os.environ if name.startswith("NBA_"))
        unknown = [name for name in unknown if name not in known]
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls()

    def require_servers(self) -> tuple[str, str]:
        """The Redis URL and Kafka bootstrap, or an error naming what is missing."""
        if self.redis_url and self.kafka_bootstrap:
            return self.redis_url, self.kafka_bootstrap
        missing = [
            name
            for name, value in (
                ("NBA_REDIS_URL", self.redis_url),
                ("NBA_KAFKA_BOOTSTRAP", self.kafka_bootstrap),
            )
            if not value
        ]
        raise ValueError(
            f"{' and '.join(missing)} must be set (or run `nba up`, which starts embedded servers)"
        )

    def as_environment(self) -> dict[str, str]:
        """These settings as `NBA_*` variables, to hand to a child process."""
        return {
            f"NBA_{name.upper()}": (
                value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            )
            for name, value in self.model_dump().items()
            if value is not None
        }
