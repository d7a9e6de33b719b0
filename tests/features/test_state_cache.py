"""The decoded-state cache: reuse only for the exact bytes, one owner at a time, bounded."""

from __future__ import annotations

import pytest

from features.config import FeatureConfig
from features.events import Event
from features.state import FeatureFold
from features.state_cache import StateCache

FOLD = FeatureFold(FeatureConfig())


def login(event_id: str) -> Event:
    return Event.model_validate(
        {
            "event_id": event_id,
            "customer_id": "C1",
            "type": "login",
            "channel": "web",
            "ts": "2026-01-05T09:00:00Z",
        }
    )


def stored(*event_ids: str) -> tuple[bytes, object]:
    state = FOLD.new_state()
    FOLD.apply_all(state, [login(event_id) for event_id in event_ids])
    return FOLD.encode(state), state


def test_a_state_is_reused_only_for_the_bytes_it_was_kept_with() -> None:
    cache = StateCache(FOLD, capacity=10)
    raw, state = stored("a")
    cache.keep([("k", raw, state)])
    assert cache.state("k", raw) is state
    cache.keep([("k", raw, state)])
    other_raw, _ = stored("a", "b")
    decoded = cache.state("k", other_raw)
    assert decoded is not state
    assert FOLD.encode(decoded) == other_raw
    assert (cache.hits, cache.misses) == (1, 1)


def test_a_state_handed_out_is_not_handed_out_again_until_kept() -> None:
    cache = StateCache(FOLD, capacity=10)
    raw, state = stored("a")
    cache.keep([("k", raw, state)])
    first = cache.state("k", raw)
    second = cache.state("k", raw)
    assert first is state
    assert second is not state
    assert FOLD.encode(second) == raw


def test_take_hands_out_a_kept_state_with_its_bytes_once() -> None:
    cache = StateCache(FOLD, capacity=10)
    raw, state = stored("a")
    cache.keep([("k", raw, state)])
    assert cache.take("k") == (raw, state)
    assert cache.take("k") is None  # handed out: not in the cache until kept again
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 0)


def test_a_missing_state_is_a_new_one() -> None:
    cache = StateCache(FOLD, capacity=10)
    assert FOLD.encode(cache.state("k", None)) == FOLD.encode(FOLD.new_state())


def test_the_least_recently_kept_states_are_evicted_first() -> None:
    cache = StateCache(FOLD, capacity=2)
    raw, state = stored("a")
    cache.keep([("k1", raw, state), ("k2", raw, state)])
    cache.keep([("k1", raw, state)])  # k1 is now the most recent
    cache.keep([("k3", raw, state)])
    assert len(cache) == 2
    assert cache.state("k2", raw) is not state
    assert cache.state("k1", raw) is state


def test_forgotten_and_disabled_caches_decode_again() -> None:
    raw, state = stored("a")
    cache = StateCache(FOLD, capacity=10)
    cache.keep([("k", raw, state)])
    cache.forget(["k"])
    assert cache.state("k", raw) is not state
    disabled = StateCache(FOLD, capacity=0)
    disabled.keep([("k", raw, state)])
    assert len(disabled) == 0
    with pytest.raises(ValueError, match="capacity"):
        StateCache(FOLD, capacity=-1)
