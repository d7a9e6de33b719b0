"""The owner-checked lock on the real embedded Valkey: only its holder extends or frees it."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from engine.core.settings import Settings
from features.locks import RedisLock


def locks(redis: Redis, settings: Settings, ttl_s: float = 30.0) -> tuple[RedisLock, RedisLock]:
    key = f"{settings.key_prefix}lock:job"
    return (
        RedisLock(redis, key, owner="a", ttl_s=ttl_s),
        RedisLock(redis, key, owner="b", ttl_s=ttl_s),
    )


async def test_one_owner_at_a_time_and_the_other_cannot_extend_or_free_it(
    redis: Redis, settings: Settings
) -> None:
    a, b = locks(redis, settings)
    assert await a.acquire()
    assert not await b.acquire()
    assert not await a.acquire()  # not re-entrant: `hold` is the take-or-renew
    assert (await a.held(), await b.held()) == (True, False)
    assert not await b.extend()
    assert not await b.release()
    assert await redis.get(a.key) == b"a"
    assert 29_000 < await redis.pttl(a.key) <= 30_000


async def test_a_lapsed_lock_is_free_and_its_old_owner_can_no_longer_touch_it(
    redis: Redis, settings: Settings
) -> None:
    a, _ = locks(redis, settings, ttl_s=0.1)
    b = RedisLock(redis, a.key, owner="b", ttl_s=30.0)
    assert await a.acquire()
    await asyncio.sleep(0.3)  # a stalled past its TTL
    assert not await a.held()
    assert await b.acquire()
    # a wakes up late: its extend and release change nothing of b's lock
    assert not await a.extend()
    assert not await a.release()
    assert await redis.get(b.key) == b"b"
    assert await redis.pttl(b.key) > 1_000  # still b's TTL, not a's 0.1 s
    assert await b.held()


async def test_release_frees_the_lock_for_the_next_owner(redis: Redis, settings: Settings) -> None:
    a, b = locks(redis, settings)
    assert await a.acquire()
    assert await a.release()
    assert await redis.exists(a.key) == 0
    assert not await a.release()  # a second release finds nothing of ours
    assert await b.acquire()
    assert await b.held()


async def test_extend_restarts_the_ttl_of_its_owner(redis: Redis, settings: Settings) -> None:
    a, _ = locks(redis, settings, ttl_s=0.3)
    assert await a.acquire()
    for _ in range(3):  # 0.45 s in all: held only because each extend restarts the TTL
        await asyncio.sleep(0.15)
        assert await a.extend()
    assert await a.held()


async def test_hold_takes_a_free_lock_and_renews_its_own(redis: Redis, settings: Settings) -> None:
    a, b = locks(redis, settings)
    assert await a.hold()
    assert await a.hold()
    assert not await b.hold()
    assert await redis.get(a.key) == b"a"


def test_a_lock_needs_a_positive_ttl(redis: Redis) -> None:
    with pytest.raises(ValueError, match="TTL must be positive"):
        RedisLock(redis, "k", owner="a", ttl_s=0.0)
