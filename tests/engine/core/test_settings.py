"""Settings: the checkpoint key is required where it is used, refused when short, never echoed."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from engine.core.settings import Settings

KEY = "a model key that is long enough"


@pytest.mark.parametrize("key", ["", "too short"])
def test_an_empty_or_short_model_key_is_refused_without_echoing_it(key: str) -> None:
    with pytest.raises(ValidationError, match="at least 16 bytes") as caught:
        Settings(model_key=key)
    if key:
        assert key not in str(caught.value)


def test_a_missing_model_key_is_a_clear_error_where_it_is_needed() -> None:
    with pytest.raises(ValueError, match="NBA_MODEL_KEY must be set"):
        Settings().require_model_key()


def test_the_learner_needs_redis_but_no_broker() -> None:
    assert Settings(redis_url="redis://r:6379/0").require_redis() == "redis://r:6379/0"
    with pytest.raises(ValueError, match="NBA_REDIS_URL must be set"):
        Settings(kafka_bootstrap="k:9092").require_redis()


def test_the_model_key_reaches_children_but_not_logs() -> None:
    settings = Settings(model_key=KEY)
    assert settings.require_model_key() == KEY.encode()
    assert settings.as_environment()["NBA_MODEL_KEY"] == KEY
    assert KEY not in repr(settings)
    assert KEY not in str(settings)


def test_the_environment_round_trips_every_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        model_key=SecretStr(KEY), exploration="epsilon_greedy", epsilon=0.3, outcomes_topic="o"
    )
    for name, value in settings.as_environment().items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings


@pytest.mark.parametrize(
    "bad",
    [{"exploration": "ucb"}, {"epsilon": 1.5}, {"thompson_draws": 0},
     {"checkpoint_interval_s": 0}, {"decision_ttl_seconds": 10}],
)  # fmt: skip
def test_bad_learning_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)  # type: ignore[arg-type]


def test_a_misspelt_variable_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBA_REDIS_ULR", "redis://somewhere:6379/0")
    with pytest.raises(ValueError, match=r"unknown setting.*NBA_REDIS_ULR"):
        Settings.from_environment()


def test_known_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBA_TOPIC_PARTITIONS", "12")
    assert Settings.from_environment().topic_partitions == 12


def test_the_no_answer_window_must_be_shorter_than_the_decision_ttl() -> None:
    assert Settings(no_answer_window_s=3599, decision_ttl_seconds=3600).no_answer_mode == "negative"
    with pytest.raises(ValidationError, match="must be shorter than NBA_DECISION_TTL_SECONDS"):
        Settings(no_answer_window_s=3600, decision_ttl_seconds=3600)


@pytest.mark.parametrize("bad", [{"no_answer_window_s": 0}, {"no_answer_mode": "decline"},
                                 {"offpolicy_log_size": 0}])  # fmt: skip
def test_bad_no_answer_and_offpolicy_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**bad)  # type: ignore[arg-type]


def test_the_clock_skew_reaches_the_feature_config_and_must_not_be_negative() -> None:
    assert Settings().max_clock_skew_s == 300
    assert Settings(max_clock_skew_s=5).feature_config().max_clock_skew_s == 5
    with pytest.raises(ValidationError, match="max_clock_skew_s"):
        Settings(max_clock_skew_s=-1)
