"""The one settings class of the engine, read from `NBA_*` environment variables.

Domain packages never read the environment: the engine and the API build their clients
and pass values from here as arguments.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "actions" / "catalog.yaml"


class Settings(BaseSettings):
    """Where the servers are and how the engine behaves.

    `redis_url` and `kafka_bootstrap` left unset mean "start the embedded servers"
    (only the CLI does that; the worker and the API need both set).
    """

    model_config = SettingsConfigDict(env_prefix="NBA_", extra="forbid")

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
            f"NBA_{name.upper()}": str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }
