"""RedisSessionStore and RedisLoginThrottle against this session's own Redis db."""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from domain.auth import new_id
from domain.errors import ServiceUnavailable
from domain.ports import Rotation
from storage.redis_store import (
    FAILURES,
    SESSION,
    USER_SESSIONS,
    RedisLoginThrottle,
    RedisSessionStore,
    make_redis,
)
from tests.support.infra import Urls

TTL = 600
WINDOW = 60


@pytest_asyncio.fixture
async def client(urls: Urls) -> AsyncIterator[aioredis.Redis]:
    redis = make_redis(urls.redis)
    yield redis
    await redis.aclose()


@pytest.fixture
def store(client: aioredis.Redis) -> RedisSessionStore:
    return RedisSessionStore(client, TTL)


@pytest.fixture
def throttle(client: aioredis.Redis) -> RedisLoginThrottle:
    return RedisLoginThrottle(client, max_failures=3, ip_max_failures=5, window=WINDOW)


def user_id() -> int:
    """Far above any id the e2e tests' database hands out, so the keys are this test's own."""
    return random.randint(10**12, 10**13)


async def assert_expiring(client: aioredis.Redis, key: str, at_most: int) -> None:
    ttl = await client.ttl(key)
    assert 0 < ttl <= at_most, (key, ttl)


# --- sessions ----------------------------------------------------------------------------


async def test_a_new_session_and_the_users_session_set_expire(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, sid, rid = user_id(), new_id(), new_id()
    await store.create(uid, sid, rid)
    assert await client.hgetall(SESSION + sid) == {"uid": str(uid), "rid": rid}
    assert await client.smembers(USER_SESSIONS + str(uid)) == {sid}
    await assert_expiring(client, SESSION + sid, TTL)
    await assert_expiring(client, USER_SESSIONS + str(uid), TTL)
    assert await store.is_active(sid)


async def test_rotation_swaps_the_refresh_id_and_a_spent_id_revokes_the_session(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, sid, first, second = user_id(), new_id(), new_id(), new_id()
    await store.create(uid, sid, first)
    await client.expire(SESSION + sid, 30)  # so the renewal on rotation shows
    assert await store.rotate(sid, first, second) is Rotation.ROTATED
    assert await client.hget(SESSION + sid, "rid") == second
    assert await client.ttl(SESSION + sid) > 30
    await assert_expiring(client, SESSION + sid, TTL)
    assert await store.rotate(sid, first, new_id()) is Rotation.REUSED
    assert not await store.is_active(sid)
    assert await store.rotate(sid, second, new_id()) is Rotation.MISSING


async def test_of_twenty_concurrent_rotations_of_one_refresh_id_exactly_one_wins(
    store: RedisSessionStore,
) -> None:
    uid, sid, presented = user_id(), new_id(), new_id()
    await store.create(uid, sid, presented)
    outcomes = await asyncio.gather(*(store.rotate(sid, presented, new_id()) for _ in range(20)))
    # The first rotates; the next presents a spent id and revokes; the rest find no session.
    assert Counter(outcomes) == {Rotation.ROTATED: 1, Rotation.REUSED: 1, Rotation.MISSING: 18}
    assert not await store.is_active(sid)


async def test_revoke_ends_one_session_and_leaves_the_users_others(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, ending, staying = user_id(), new_id(), new_id()
    await store.create(uid, ending, new_id())
    await store.create(uid, staying, new_id())
    await store.revoke(ending)
    assert not await store.is_active(ending)
    assert await store.is_active(staying)
    assert await client.smembers(USER_SESSIONS + str(uid)) == {staying}
    await store.revoke(ending)  # twice is harmless


async def test_revoke_all_keeps_only_the_session_asked_for(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, other_uid = user_id(), user_id()
    sids = [new_id() for _ in range(3)]
    for sid in sids:
        await store.create(uid, sid, new_id())
    bystander = new_id()
    await store.create(other_uid, bystander, new_id())
    await store.revoke_all(uid, keep=sids[1])
    assert [await store.is_active(s) for s in sids] == [False, True, False]
    assert await client.smembers(USER_SESSIONS + str(uid)) == {sids[1]}
    await store.revoke_all(uid)
    assert not await store.is_active(sids[1])
    assert await store.is_active(bystander)


# --- failed-login counters ---------------------------------------------------------------


async def test_an_account_is_blocked_at_max_failures_until_cleared(
    throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    account = f"user:{user_id()}"
    for _ in range(2):
        await throttle.record_failure(account, None)
    assert await throttle.blocked_for(account, None) == 0
    await throttle.record_failure(account, None)
    assert 0 < await throttle.blocked_for(account, None) <= WINDOW
    await assert_expiring(client, FAILURES + "account:" + account, WINDOW)
    await throttle.clear(account)
    assert await throttle.blocked_for(account, None) == 0


async def test_an_address_is_blocked_at_its_own_limit_for_every_account(
    throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    ip = f"203.0.113.{random.randint(1, 254)}:{new_id()}"  # unique per run, never parsed
    for _ in range(5):
        await throttle.record_failure(f"login:{new_id()}", ip)
    await assert_expiring(client, FAILURES + "ip:" + ip, WINDOW)
    assert 0 < await throttle.blocked_for(f"user:{user_id()}", ip) <= WINDOW
    assert await throttle.blocked_for(f"user:{user_id()}", None) == 0


async def test_the_window_starts_at_the_first_failure_and_is_not_extended(
    throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    account = f"user:{user_id()}"
    await throttle.record_failure(account, None)
    await client.expire(FAILURES + "account:" + account, 5)  # as if 55 s had passed
    await throttle.record_failure(account, None)
    await assert_expiring(client, FAILURES + "account:" + account, 5)


# --- every key expires; an unreachable Redis fails closed; a busy one does not -----------


async def test_a_burst_of_concurrent_calls_waits_for_connections_instead_of_failing(
    store: RedisSessionStore,
) -> None:
    # More at once than a pool holds (a worker runs hundreds of handlers concurrently):
    # each must wait for a connection, not get a 503 for a Redis that is perfectly well.
    uid, sid = user_id(), new_id()
    await store.create(uid, sid, new_id())
    answers = await asyncio.gather(*(store.is_active(sid) for _ in range(300)))
    assert answers == [True] * 300


async def test_every_warden_key_in_the_db_has_a_ttl(
    store: RedisSessionStore, throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    uid = user_id()
    await store.create(uid, new_id(), new_id())
    await throttle.record_failure(f"user:{uid}", "192.0.2.1")
    # Keys of every kind, and whatever the e2e tests left in this session's db.
    keys = [key async for key in client.scan_iter(match="warden:*", count=1000)]
    assert {k.split(":")[1] for k in keys} >= {"session", "user-sessions", "login-failures"}
    pipe = client.pipeline(transaction=False)
    for key in keys:
        # redis-py types a pipeline's commands as its client's (awaitables); here they queue.
        pipe.ttl(key)  # type: ignore[unused-awaitable]
    ttls = dict(zip(keys, await pipe.execute(), strict=True))
    # -1 is a key without a TTL. A key another test left may expire between SCAN and TTL
    # (-2, gone) or have under a second left (0): both had their TTL.
    assert [k for k, ttl in ttls.items() if ttl == -1] == []


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_redis_is_service_unavailable_never_an_answer() -> None:
    redis = make_redis(f"redis://127.0.0.1:{closed_port()}/0")
    store = RedisSessionStore(redis, TTL)
    throttle = RedisLoginThrottle(redis, 3, 5, WINDOW)
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.is_active(new_id()),
            lambda: store.create(1, new_id(), new_id()),
            lambda: store.rotate(new_id(), new_id(), new_id()),
            lambda: store.revoke(new_id()),
            lambda: store.revoke_all(1),
            lambda: throttle.blocked_for("user:1", "192.0.2.1"),
            lambda: throttle.record_failure("user:1", "192.0.2.1"),
            lambda: throttle.clear("user:1"),
        ]
        for call in calls:
            with pytest.raises(ServiceUnavailable):
                await call()
    finally:
        await redis.aclose()
