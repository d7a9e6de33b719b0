"""The one settings class of the engine, read from `NBA_*` environment variables.

Domain packages never read the environment: the engine and the API build their clients
and pass values from here as arguments.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import orjson
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.config import SECONDS_PER_DAY, FeatureConfig, LifecycleThresholds
from features.publisher import DEFAULT_MAX_MESSAGE_BYTES
from models.persistence import MIN_KEY_BYTES

DEFAULT_CATALOG = Path(__file__).resolve().parents[2] / "actions" / "catalog.yaml"
#: A message must hold the largest valid event (32 attributes of the longest strings).
MIN_MESSAGE_BYTES = 64 * 1024
#: aiokafka's and Faust's producers refuse a message over about 1,000,000 bytes.
MAX_MESSAGE_BYTES = 990_000


class Settings(BaseSettings):
    """Where the servers are and how the engine behaves.

    `redis_url` and `kafka_bootstrap` left unset mean "start the embedded servers"
    (only the CLI does that; the worker and the API need both set).
    """

    # hide_input_in_errors: a refused NBA_MODEL_KEY is not echoed into logs
    model_config = SettingsConfigDict(env_prefix="NBA_", extra="forbid", hide_input_in_errors=True)

    redis_url: str | None = Field(
        default=None,
        description="the Redis or Valkey server, e.g. `redis://host:6379/0`; unset, `nba up` "
        "and `nba demo` start an embedded Valkey",
    )
    kafka_bootstrap: str | None = Field(
        default=None,
        description="the Kafka brokers, e.g. `host1:9092,host2:9092`; unset, `nba up` and "
        "`nba demo` start an embedded Kafka-compatible broker, for development",
    )
    events_topic: str = Field(default="events", description="the topic events are sent to")
    dlq_topic: str = Field(
        default="events.dlq", description="the dead-letter topic: bad events with the reason"
    )
    topic_partitions: int = Field(
        default=8,
        ge=1,
        description="partitions of the events and dead-letter topics: the unit of worker "
        "parallelism (one customer's events always land in one partition)",
    )
    topic_replication: int = Field(default=1, ge=1, description="3 on a production cluster")
    embedded_kafka_retention_s: float = Field(
        default=3600.0,
        ge=10.0,
        description="the embedded broker's safety net (`nba up` without NBA_KAFKA_BOOTSTRAP): "
        "an event or outcome no worker consumed within this long is dropped. `nba up` deletes "
        "what the workers have committed every few seconds, so the broker, which snapshots "
        "all it holds every second, holds little more than what waits. Dead letters are kept "
        "by size only",
    )
    embedded_kafka_retention_mb: float = Field(
        default=64.0,
        ge=0.25,
        description="MiB each partition of the embedded broker holds at most (~400,000 events) "
        "before the oldest are dropped, consumed or not: bounds its memory when no worker "
        "keeps up (`nba up` warns as the broker grows)",
    )
    key_prefix: str = Field(
        default="", description="prefix of every Redis key; lets several engines share one Redis"
    )
    allowed_lateness_s: int = Field(
        default=FeatureConfig().allowed_lateness_s,
        ge=0,
        le=30 * SECONDS_PER_DAY,
        description="how far behind a customer's latest event time an event may arrive and "
        "still be applied (event ids are remembered that long); later ones go to the DLQ",
    )
    max_clock_skew_s: int = Field(
        default=FeatureConfig().max_clock_skew_s,
        ge=0,
        description="how far ahead of the receiving server's clock an event time may be; an "
        "event further ahead is refused by the API and dead-lettered by the worker (its "
        "time would otherwise stand as the customer's latest event time and make the "
        "customer's next events late)",
    )
    state_cache_size: int = Field(
        default=20_000,
        ge=0,
        description="decoded customer states a worker keeps between batches (3-12 KB each) "
        "so that it does not decode them again; 0 turns the cache off",
    )
    half_lives_days: dict[str, float] = Field(
        default_factory=dict,
        description="half-lives of decayed features by group, JSON, merged over the "
        "defaults: frequency, monetary, channel, flows 30 days; interest 14 days",
    )
    decline_cooloff_days: float = Field(
        default=7.0, ge=0.0, description="an action declined this recently is not offered again"
    )
    lifecycle_new_days: int = Field(
        default=LifecycleThresholds().new_days,
        gt=0,
        description="a customer whose first purchase is younger than this is `new`",
    )
    lifecycle_at_risk_days: int = Field(
        default=LifecycleThresholds().at_risk_after_days,
        gt=0,
        description="days without a customer-initiated event from which a customer is "
        "`at_risk` (`active` before)",
    )
    lifecycle_dormant_days: int = Field(
        default=LifecycleThresholds().dormant_after_days,
        gt=0,
        description="days without a customer-initiated event from which a customer is "
        "`dormant` (more than the at-risk days)",
    )
    lifecycle_churned_days: int = Field(
        default=LifecycleThresholds().churned_after_days,
        gt=0,
        description="days without a customer-initiated event from which a customer is "
        "`churned` (more than the dormant days)",
    )
    catalog_path: Path = Field(
        default=DEFAULT_CATALOG, description="the action catalog (YAML) decisions choose from"
    )
    worker_id: str = Field(default="nba-worker", description="Kafka consumer group of workers")
    worker_instance_id: str | None = Field(
        default=None,
        description="this worker's static membership in the group (Kafka's "
        "`group.instance.id`), unique per worker: a worker restarted with the same id takes "
        "back its partitions at once, where a new member waits for the group to give up on "
        "the old one. `nba up` gives each of its workers one",
    )
    learner_in_workers: bool = Field(
        default=True,
        description="workers also run the churn and segment learner and the walk over the "
        "customer base (one process at a time, by lock); `nba up` turns it off and runs them "
        "in an `nba learner` process, off the workers' event loops",
    )
    kafka_session_timeout_s: float = Field(
        default=60.0,
        ge=6.0,
        description="a worker silent this long leaves the group; `nba up` uses 6 s on the "
        "embedded broker, the least it accepts (as a Kafka broker by default)",
    )
    api_host: str = Field(default="127.0.0.1", description="where `nba api` listens")
    api_port: int = Field(default=8000, ge=0, le=65535, description="the port `nba api` listens on")
    max_events_per_request: int = Field(
        default=10_000, ge=1, description="events `POST /v1/events` takes at most (413 past it)"
    )
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=MIN_MESSAGE_BYTES,
        description="the largest body `POST /v1/events` reads; a larger one is refused (413) "
        "before it is parsed",
    )
    max_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES,
        ge=MIN_MESSAGE_BYTES,
        le=MAX_MESSAGE_BYTES,
        description="the largest Kafka message any part of the engine sends (events, "
        "outcomes, dead letters): batches are split to stay under it. Below the broker's "
        "`max.message.bytes` and the producers' request limit (both about 1 MB by default)",
    )
    stall_s: float = Field(
        default=30.0,
        ge=5.0,
        description="a worker with messages waiting that has applied nothing for this long, "
        "or silent this long (it heartbeats every 2 s), is stalled: `/readyz` answers 503 and "
        "`/healthz` says so",
    )
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
    no_answer_window_s: float = Field(
        default=24 * 3600.0,
        gt=0.0,
        description="an action shown (reported by an `offer_impression`) and not answered this "
        "long after the worker took the impression in is handled as `no_answer_mode` says; "
        "an answer after that is counted as late and changes nothing. Shorter than "
        "`decision_ttl_seconds`, whose x the negative is learned with",
    )
    no_answer_mode: Literal["negative", "ignore"] = Field(
        default="negative",
        description="`negative`: learn an unanswered action as a decline (reward 0, the x "
        "recorded with its decision); `ignore`: close its window without learning",
    )
    offpolicy_log_size: int = Field(
        default=10_000,
        ge=1,
        description="the latest rank-1 outcomes the learner keeps in Redis for the off-policy "
        "report (`GET /v1/models/offpolicy` reads at most this many)",
    )
    churn_horizon_days: float = Field(
        default=90.0,
        gt=0.0,
        description="a churn snapshot is labelled churned if the customer closes a product "
        "within this many days after it, or is dormant when they end",
    )
    churn_dormant_days: float = Field(
        default=60.0,
        gt=0.0,
        description="dormant: no customer-initiated event in the last this many days of the "
        "churn horizon (at most `churn_horizon_days`)",
    )
    churn_snapshots_per_s: float = Field(
        default=20.0,
        gt=0.0,
        description="customer snapshots (a churn label to wait for and a segment sample) a "
        "worker takes per second at most; customers left out get one at a later event",
    )
    segments_count: int = Field(default=6, ge=1, description="behavioural segments (k-means k)")
    segments_warmup: int = Field(
        default=500,
        ge=2,
        description="customers sampled before segments are learned; until then every "
        "customer's segment is -1 (not segmented yet)",
    )

    @model_validator(mode="after")
    def _dormancy_within_horizon(self) -> Settings:
        if self.churn_dormant_days > self.churn_horizon_days:
            raise ValueError(
                f"NBA_CHURN_DORMANT_DAYS ({self.churn_dormant_days:g}) must not exceed "
                f"NBA_CHURN_HORIZON_DAYS ({self.churn_horizon_days:g}): dormancy is judged "
                "inside the horizon"
            )
        return self

    @model_validator(mode="after")
    def _window_within_decision_ttl(self) -> Settings:
        if self.no_answer_window_s >= self.decision_ttl_seconds:
            raise ValueError(
                f"NBA_NO_ANSWER_WINDOW_S ({self.no_answer_window_s:g}) must be shorter than "
                f"NBA_DECISION_TTL_SECONDS ({self.decision_ttl_seconds}): a negative is learned "
                "with its decision's x, which must still be there when the window closes"
            )
        return self

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

    @model_validator(mode="after")
    def _feature_config_valid(self) -> Settings:
        self.feature_config()  # thresholds in order, half-lives positive: fail at start-up
        return self

    def feature_config(self) -> FeatureConfig:
        """The feature definitions' tunables (half-lives, lateness, lifecycle thresholds)."""
        defaults = FeatureConfig()
        return FeatureConfig(
            half_lives_days={**defaults.half_lives_days, **self.half_lives_days},
            allowed_lateness_s=self.allowed_lateness_s,
            max_clock_skew_s=self.max_clock_skew_s,
            lifecycle=LifecycleThresholds(
                new_days=self.lifecycle_new_days,
                at_risk_after_days=self.lifecycle_at_risk_days,
                dormant_after_days=self.lifecycle_dormant_days,
                churned_after_days=self.lifecycle_churned_days,
            ),
        )

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

    def require_redis(self) -> str:
        """The Redis URL, or an error saying how to set it (the learner needs no broker)."""
        if self.redis_url:
            return self.redis_url
        raise ValueError(
            "NBA_REDIS_URL must be set (or run `nba up`, which starts embedded servers)"
        )

    def as_environment(self) -> dict[str, str]:
        """These settings as `NBA_*` variables, to hand to a child process."""
        return {
            f"NBA_{name.upper()}": _environment_value(value)
            for name, value in self.model_dump().items()
            if value is not None
        }


def _environment_value(value: object) -> str:
    """A setting as an environment variable: secrets revealed, collections as JSON."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)
