"""The Redis adapters (sessions, login and registration throttles) against this session's own db."""

from __future__ import annotations

import asyncio
import random
import socket
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from domain.auth import new_id
from domain.errors import ServiceUnavailable
from domain.ports import Lockout, Rotation
from storage.redis_store import (
    FAILURES,
    REGISTRATIONS,
    REPORTED,
    SESSION,
    USER_SESSIONS,
    RedisLoginThrottle,
    RedisRegistrationThrottle,
    RedisSessionStore,
    make_redis,
)

TTL = 600
WINDOW = 60


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
    assert await store.is_active(sid, uid)


async def test_rotation_swaps_the_refresh_id_and_a_spent_id_revokes_the_session(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, sid, first, second = user_id(), new_id(), new_id(), new_id()
    await store.create(uid, sid, first)
    await client.expire(SESSION + sid, 30)  # so the renewal on rotation shows
    assert await store.rotate(sid, uid, first, second) is Rotation.ROTATED
    assert await client.hget(SESSION + sid, "rid") == second
    assert await client.ttl(SESSION + sid) > 30
    await assert_expiring(client, SESSION + sid, TTL)
    assert await store.rotate(sid, uid, first, new_id()) is Rotation.REUSED
    assert not await store.is_active(sid, uid)
    assert await store.rotate(sid, uid, second, new_id()) is Rotation.MISSING


async def test_current_names_a_live_sessions_user_and_refresh_id_and_nothing_once_it_ends(
    store: RedisSessionStore,
) -> None:
    uid, sid, first, second = user_id(), new_id(), new_id(), new_id()
    assert await store.current(sid) is None
    await store.create(uid, sid, first)
    assert await store.current(sid) == (uid, first)
    await store.rotate(sid, uid, first, second)
    assert await store.current(sid) == (uid, second)
    await store.revoke(sid)
    assert await store.current(sid) is None


async def test_of_twenty_concurrent_rotations_of_one_refresh_id_exactly_one_wins(
    store: RedisSessionStore,
) -> None:
    uid, sid, presented = user_id(), new_id(), new_id()
    await store.create(uid, sid, presented)
    outcomes = await asyncio.gather(
        *(store.rotate(sid, uid, presented, new_id()) for _ in range(20))
    )
    # The first rotates; the next presents a spent id and revokes; the rest find no session.
    assert Counter(outcomes) == {Rotation.ROTATED: 1, Rotation.REUSED: 1, Rotation.MISSING: 18}
    assert not await store.is_active(sid, uid)


async def test_another_users_session_is_not_active_for_them_and_they_cannot_rotate_or_revoke_it(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    owner, other, sid, current = user_id(), user_id(), new_id(), new_id()
    await store.create(owner, sid, current)
    assert not await store.is_active(sid, other)
    assert await store.rotate(sid, other, current, new_id()) is Rotation.MISSING
    assert await store.rotate(sid, other, new_id(), new_id()) is Rotation.MISSING  # "spent"
    assert await client.hgetall(SESSION + sid) == {"uid": str(owner), "rid": current}
    assert await store.is_active(sid, owner)


async def test_revoke_ends_one_session_and_leaves_the_users_others(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, ending, staying = user_id(), new_id(), new_id()
    await store.create(uid, ending, new_id())
    await store.create(uid, staying, new_id())
    await store.revoke(ending)
    assert not await store.is_active(ending, uid)
    assert await store.is_active(staying, uid)
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
    assert [await store.is_active(s, uid) for s in sids] == [False, True, False]
    assert await client.smembers(USER_SESSIONS + str(uid)) == {sids[1]}
    await store.revoke_all(uid)
    assert not await store.is_active(sids[1], uid)
    assert await store.is_active(bystander, other_uid)


# --- failed-login counters ---------------------------------------------------------------


async def test_an_account_is_blocked_at_max_failures_until_cleared(
    throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    account = f"user:{user_id()}"
    for _ in range(2):
        await throttle.record_failure(account, None)
    assert await throttle.lockout(account, None) is None
    await throttle.record_failure(account, None)
    lockout = await throttle.lockout(account, None)
    assert lockout is not None
    assert (lockout.failures, lockout.limited_by) == (3, "account")
    assert 0 < lockout.retry_after <= WINDOW
    await assert_expiring(client, FAILURES + "account:" + account, WINDOW)
    await throttle.clear(account)
    assert await throttle.lockout(account, None) is None


async def test_an_address_is_blocked_at_its_own_limit_for_every_account(
    throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    ip = f"203.0.113.{random.randint(1, 254)}:{new_id()}"  # unique per run, never parsed
    for _ in range(5):
        await throttle.record_failure(f"login:{new_id()}", ip)
    await assert_expiring(client, FAILURES + "ip:" + ip, WINDOW)
    lockout = await throttle.lockout(f"user:{user_id()}", ip)
    assert lockout is not None
    assert (lockout.failures, lockout.limited_by) == (5, "client_ip")
    assert 0 < lockout.retry_after <= WINDOW
    assert await throttle.lockout(f"user:{user_id()}", None) is None


async def test_the_longest_wait_of_the_limits_reached_is_the_lockout(
    throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    account, ip = f"user:{user_id()}", f"203.0.113.1:{new_id()}"
    for _ in range(5):
        await throttle.record_failure(account, ip)
    await client.expire(FAILURES + "ip:" + ip, 5)  # as if the address's window began earlier
    lockout = await throttle.lockout(account, ip)
    assert lockout is not None
    assert (lockout.failures, lockout.limited_by) == (5, "account")
    assert lockout.retry_after > 5


async def locked(throttle: RedisLoginThrottle, account: str) -> Lockout:
    """The lockout of `account` after as many failures as the throttle allows (3)."""
    for _ in range(3):
        await throttle.record_failure(account, None)
    lockout = await throttle.lockout(account, None)
    assert lockout is not None
    return lockout


async def test_of_twenty_concurrent_refusals_in_a_locked_window_exactly_one_is_reported(
    throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    account = f"user:{user_id()}"
    lockout = await locked(throttle, account)
    firsts = await asyncio.gather(
        *(throttle.report_once(account, None, lockout) for _ in range(20))
    )
    assert sorted(firsts) == [False] * 19 + [True]
    # The mark ends with the window that refused: the same moment, not a rounded second.
    counter, mark = FAILURES + "account:" + account, REPORTED + "account:" + account
    pipe = client.pipeline(transaction=True)
    pipe.pttl(counter)  # type: ignore[unused-awaitable]
    pipe.pttl(mark)  # type: ignore[unused-awaitable]
    counter_left, mark_left = await pipe.execute()
    assert 0 < mark_left <= counter_left <= mark_left + 50
    # A success clears the mark with the count: the account's next lockout is reported.
    await throttle.clear(account)
    again = await locked(throttle, account)
    assert await throttle.report_once(account, None, again)


async def test_a_refusal_whose_window_ended_meanwhile_reports_nothing(
    throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    account = f"user:{user_id()}"
    lockout = await locked(throttle, account)
    await client.delete(FAILURES + "account:" + account)  # as if it expired just now
    assert not await throttle.report_once(account, None, lockout)
    assert not await client.exists(REPORTED + "account:" + account)


async def test_an_address_lockout_is_reported_once_whatever_account_is_tried(
    throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    ip = f"203.0.113.2:{new_id()}"
    for _ in range(5):
        await throttle.record_failure(f"login:{new_id()}", ip)
    accounts = [f"user:{user_id()}" for _ in range(5)]
    lockouts = [await throttle.lockout(a, ip) for a in accounts]
    reported = [
        await throttle.report_once(a, ip, lockout)
        for a, lockout in zip(accounts, lockouts, strict=True)
        if lockout is not None
    ]
    assert reported == [True, False, False, False, False]
    await assert_expiring(client, REPORTED + "ip:" + ip, WINDOW)


# --- registrations per address -----------------------------------------------------------


async def test_registrations_from_an_address_are_admitted_up_to_the_limit_in_a_fixed_window(
    client: aioredis.Redis,
) -> None:
    registrations = RedisRegistrationThrottle(client, max_per_address=3, window=WINDOW)
    ip = f"203.0.113.3:{new_id()}"
    assert [await registrations.admit(ip) for _ in range(3)] == [0, 0, 0]
    wait = await registrations.admit(ip)
    assert 0 < wait <= WINDOW
    await assert_expiring(client, REGISTRATIONS + ip, WINDOW)
    await client.expire(REGISTRATIONS + ip, 5)  # as if 55 s had passed: not extended by more
    assert 0 < await registrations.admit(ip) <= 5
    await assert_expiring(client, REGISTRATIONS + ip, 5)
    assert await registrations.admit(f"203.0.113.4:{new_id()}") == 0


async def test_of_concurrent_registrations_from_one_address_only_the_limit_are_admitted(
    client: aioredis.Redis,
) -> None:
    registrations = RedisRegistrationThrottle(client, max_per_address=3, window=WINDOW)
    ip = f"203.0.113.5:{new_id()}"
    waits = await asyncio.gather(*(registrations.admit(ip) for _ in range(10)))
    assert sum(1 for w in waits if w == 0) == 3


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
    answers = await asyncio.gather(*(store.is_active(sid, uid) for _ in range(300)))
    assert answers == [True] * 300


async def test_every_warden_key_in_the_db_has_a_ttl(
    store: RedisSessionStore, throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    uid = user_id()
    await store.create(uid, new_id(), new_id())
    for _ in range(3):
        await throttle.record_failure(f"user:{uid}", "192.0.2.1")
    lockout = await throttle.lockout(f"user:{uid}", None)
    assert lockout is not None
    await throttle.report_once(f"user:{uid}", None, lockout)
    await RedisRegistrationThrottle(client, 3, WINDOW).admit("192.0.2.1")
    # Keys of every kind, and whatever the e2e tests left in this session's db.
    keys = [key async for key in client.scan_iter(match="warden:*", count=1000)]
    assert {k.split(":")[1] for k in keys} >= {
        "session",
        "user-sessions",
        "login-failures",
        "login-lockout-reported",
        "register-attempts",
    }
    pipe = client.pipeline(transaction=False)
    for key in keys:
        # redis-py types a pipeline's commands as its client's (awaitables); here they queue.
        pipe.pttl(key)  # type: ignore[unused-awaitable]
    ttls = dict(zip(keys, await pipe.execute(), strict=True))
    # -1 is a key without a TTL. A key may expire between SCAN and PTTL (-2, gone): a
    # heartbeat lives 1.5 s, and the e2e tests leave hundreds of counters of a minute.
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
            lambda: store.is_active(new_id(), 1),
            lambda: store.current(new_id()),
            lambda: store.create(1, new_id(), new_id()),
            lambda: store.rotate(new_id(), 1, new_id(), new_id()),
            lambda: store.revoke(new_id()),
            lambda: store.revoke_all(1),
            lambda: throttle.lockout("user:1", "192.0.2.1"),
            lambda: throttle.record_failure("user:1", "192.0.2.1"),
            lambda: throttle.clear("user:1"),
            lambda: throttle.report_once("user:1", None, Lockout(1, 3, "account")),
            lambda: RedisRegistrationThrottle(redis, 3, WINDOW).admit("192.0.2.1"),
        ]
        for call in calls:
            with pytest.raises(ServiceUnavailable):
                await call()
    finally:
        await redis.aclose()
