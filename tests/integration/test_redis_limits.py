"""The Redis adapters at their limits, against real Redis: a hung Redis or an exhausted pool
fails closed (503) before the edge would give up, the login throttle's waits come from the
counters' own windows."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection

from domain.auth import new_id
from domain.errors import ServiceUnavailable
from storage.redis_store import (
    FAILURES,
    POOL_SIZE,
    RedisLoginThrottle,
    RedisSessionStore,
    make_redis,
)
from tests.support.infra import Urls
from tests.support.proxy import TcpProxy

# The contract's default WARDEN_RPC_TIMEOUT: an answer later than this is the edge's 504, so
# a Redis that cannot serve must be a 503 before it.
RPC_TIMEOUT = 10.0
TTL, WINDOW, MAX_FAILURES, IP_MAX_FAILURES = 600, 60, 3, 5


@pytest.fixture
def throttle(client: aioredis.Redis) -> RedisLoginThrottle:
    return RedisLoginThrottle(client, MAX_FAILURES, IP_MAX_FAILURES, WINDOW)


def account() -> str:
    return f"user:{random.randint(10**12, 10**13)}"


def address() -> str:
    """An RFC 5737 address of this test's own, so no other test's failures count."""
    return f"203.0.{random.randint(0, 255)}.{random.randint(1, 254)}"


async def test_a_hung_redis_is_service_unavailable_before_the_rpc_timeout(urls: Urls) -> None:
    target = urlsplit(urls.redis)
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        proxy.cut("hang")  # connections accepted, never answered
        redis = make_redis(urlunsplit(target._replace(netloc=f"127.0.0.1:{proxy.port}")))
        try:
            async with asyncio.timeout(RPC_TIMEOUT):
                with pytest.raises(ServiceUnavailable):
                    await RedisSessionStore(redis, TTL, TTL).is_active(new_id(), 1)
        finally:
            await redis.aclose()


async def test_with_every_pooled_connection_busy_a_call_fails_closed_opening_no_more(
    client: aioredis.Redis,
) -> None:
    pool = client.connection_pool
    take: Callable[[], Awaitable[Connection]] = pool.get_connection  # unannotated in redis-py
    busy = [await take() for _ in range(POOL_SIZE)]
    try:
        async with asyncio.timeout(RPC_TIMEOUT):
            with pytest.raises(ServiceUnavailable):
                await RedisSessionStore(client, TTL, TTL).is_active(new_id(), 1)
    finally:
        for connection in busy:
            await pool.release(connection)


async def test_an_address_one_failure_short_of_its_limit_is_not_blocked(
    throttle: RedisLoginThrottle,
) -> None:
    ip = address()
    for _ in range(IP_MAX_FAILURES - 1):
        await throttle.record_failure(account(), ip)

    assert await throttle.lockout(account(), ip) is None


async def test_a_blocked_account_waits_what_is_left_of_its_own_window(
    throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    blocked = account()
    for _ in range(MAX_FAILURES):
        await throttle.record_failure(blocked, None)
    await client.expire(FAILURES + "account:" + blocked, 30)  # 30 s of its window left

    lockout = await throttle.lockout(blocked, address())  # from an address with no failures

    assert lockout is not None
    assert 0 < lockout.retry_after <= 30


async def test_a_counter_at_its_limit_that_lost_its_ttl_blocks_for_a_whole_window(
    throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    blocked = account()
    key = FAILURES + "account:" + blocked
    await client.set(key, MAX_FAILURES)  # no TTL: Redis answers -1
    try:
        lockout = await throttle.lockout(blocked, None)
        assert lockout is not None
        assert lockout.retry_after == WINDOW
    finally:
        await client.delete(key)  # every warden key has a TTL: leave none without
