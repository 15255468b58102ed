"""The Redis adapters (sessions, login and registration throttles) against this session's own db."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis

from domain.auth import new_id
from domain.errors import ServiceUnavailable
from domain.model import EndedSession, SessionStart
from domain.ports import Lockout, Rotated, Rotation
from storage.redis_store import (
    FAILURES,
    LEGACY_USER_SESSIONS,
    LISTED,
    REGISTRATIONS,
    REPORTED,
    SESSION,
    SESSION_INDEX,
    RedisLoginThrottle,
    RedisRegistrationThrottle,
    RedisSessionStore,
    make_redis,
)

TTL = 600
WINDOW = 60


@pytest.fixture
def store(client: aioredis.Redis) -> RedisSessionStore:
    return RedisSessionStore(client, TTL, ACCESS_TTL)


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

ACCESS_TTL = 300
LATER = datetime(2030, 1, 1, tzinfo=UTC)  # an access token expiry, as the domain gives one


def start(ip: str | None = None, user_agent: str | None = None) -> SessionStart:
    return SessionStart(LATER, ip, user_agent)


async def outcome(
    store: RedisSessionStore, sid: str, uid: int, presented: str, new: str, interval: int = 0
) -> Rotation:
    return (await store.rotate(sid, uid, presented, new, LATER, interval)).outcome


async def test_a_new_session_and_the_users_index_expire(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, sid, rid = user_id(), new_id(), new_id()
    before = time.time()
    await store.create(uid, sid, rid, start("192.0.2.9", "Firefox/140"))
    stored = await client.hgetall(SESSION + sid)
    assert {k: stored[k] for k in ("uid", "rid", "aexp", "ip", "ua")} == {
        "uid": str(uid),
        "rid": rid,
        "aexp": str(int(LATER.timestamp())),
        "ip": "192.0.2.9",
        "ua": "Firefox/140",
    }
    assert stored["created"] == stored["used"]
    assert before - 1 <= int(stored["created"]) / 1000 <= time.time() + 1
    assert await client.zrange(SESSION_INDEX + str(uid), 0, -1) == [sid]
    score = await client.zscore(SESSION_INDEX + str(uid), sid)
    assert score is not None
    assert abs(score / 1000 - (time.time() + TTL)) < 5  # scored by when it expires
    await assert_expiring(client, SESSION + sid, TTL)
    await assert_expiring(client, SESSION_INDEX + str(uid), TTL)
    assert await store.is_active(sid, uid)


async def test_rotation_swaps_the_refresh_id_and_a_spent_id_revokes_the_session(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, sid, first, second = user_id(), new_id(), new_id(), new_id()
    await store.create(uid, sid, first, start())
    await client.expire(SESSION + sid, 30)  # so the renewal on rotation shows
    assert await store.rotate(sid, uid, first, second, LATER) == Rotated(Rotation.ROTATED, second)
    assert await client.hget(SESSION + sid, "rid") == second
    assert await client.ttl(SESSION + sid) > 30
    await assert_expiring(client, SESSION + sid, TTL)
    reused = await store.rotate(sid, uid, first, new_id(), LATER)
    assert reused == Rotated(Rotation.REUSED, ended=EndedSession(sid, uid, LATER))
    assert not await store.is_active(sid, uid)
    assert await client.zrange(SESSION_INDEX + str(uid), 0, -1) == []
    assert await outcome(store, sid, uid, second, new_id()) is Rotation.MISSING


async def test_a_rotation_keeps_the_latest_access_expiry_of_the_session(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, sid, first, second = user_id(), new_id(), new_id(), new_id()
    await store.create(uid, sid, first, start())
    sooner = LATER - timedelta(hours=1)
    await store.rotate(sid, uid, first, second, sooner)  # a clock behind the last one's
    assert await client.hget(SESSION + sid, "aexp") == str(int(LATER.timestamp()))
    later = LATER + timedelta(hours=1)
    await store.rotate(sid, uid, second, new_id(), later)
    assert await store.revoke(sid) == EndedSession(sid, uid, later)


async def test_within_the_reuse_interval_the_spent_id_gets_the_current_one(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, sid, first, second = user_id(), new_id(), new_id(), new_id()
    await store.create(uid, sid, first, start())
    await store.rotate(sid, uid, first, second, LATER, 5)

    retried = await store.rotate(sid, uid, first, new_id(), LATER, 5)

    assert retried == Rotated(Rotation.RETRIED, second)
    assert await store.current(sid) == (uid, second)
    # The interval counts from the rotation, by Redis's clock: once it is over, reuse.
    await client.hset(SESSION + sid, "rot", str(int(time.time() * 1000) - 5001))
    assert await outcome(store, sid, uid, first, new_id(), 5) is Rotation.REUSED


async def test_without_an_interval_the_spent_id_is_reuse_at_once(store: RedisSessionStore) -> None:
    uid, sid, first = user_id(), new_id(), new_id()
    await store.create(uid, sid, first, start())
    await store.rotate(sid, uid, first, new_id(), LATER, 0)
    assert await outcome(store, sid, uid, first, new_id(), 0) is Rotation.REUSED


async def test_the_interval_forgives_only_the_id_the_last_rotation_spent(
    store: RedisSessionStore,
) -> None:
    uid, sid, first, second = user_id(), new_id(), new_id(), new_id()
    await store.create(uid, sid, first, start())
    await store.rotate(sid, uid, first, second, LATER, 5)
    await store.rotate(sid, uid, second, new_id(), LATER, 5)
    assert await outcome(store, sid, uid, first, new_id(), 5) is Rotation.REUSED


async def test_current_names_a_live_sessions_user_and_refresh_id_and_nothing_once_it_ends(
    store: RedisSessionStore,
) -> None:
    uid, sid, first, second = user_id(), new_id(), new_id(), new_id()
    assert await store.current(sid) is None
    await store.create(uid, sid, first, start())
    assert await store.current(sid) == (uid, first)
    await store.rotate(sid, uid, first, second, LATER)
    assert await store.current(sid) == (uid, second)
    await store.revoke(sid)
    assert await store.current(sid) is None


async def test_of_twenty_concurrent_rotations_of_one_refresh_id_exactly_one_wins(
    store: RedisSessionStore,
) -> None:
    uid, sid, presented = user_id(), new_id(), new_id()
    await store.create(uid, sid, presented, start())
    outcomes = await asyncio.gather(
        *(outcome(store, sid, uid, presented, new_id()) for _ in range(20))
    )
    # The first rotates; the next presents a spent id and revokes; the rest find no session.
    assert Counter(outcomes) == {Rotation.ROTATED: 1, Rotation.REUSED: 1, Rotation.MISSING: 18}
    assert not await store.is_active(sid, uid)


async def test_within_the_interval_twenty_concurrent_refreshes_all_get_the_same_current_id(
    store: RedisSessionStore,
) -> None:
    uid, sid, presented = user_id(), new_id(), new_id()
    await store.create(uid, sid, presented, start())
    results = await asyncio.gather(
        *(store.rotate(sid, uid, presented, new_id(), LATER, 5) for _ in range(20))
    )
    assert Counter(r.outcome for r in results) == {Rotation.ROTATED: 1, Rotation.RETRIED: 19}
    assert len({r.refresh_id for r in results}) == 1
    assert await store.current(sid) == (uid, results[0].refresh_id)


async def test_another_users_session_is_not_active_for_them_and_they_cannot_rotate_or_revoke_it(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    owner, other, sid, current = user_id(), user_id(), new_id(), new_id()
    await store.create(owner, sid, current, start())
    before = await client.hgetall(SESSION + sid)
    assert not await store.is_active(sid, other)
    assert await outcome(store, sid, other, current, new_id()) is Rotation.MISSING
    assert await outcome(store, sid, other, new_id(), new_id()) is Rotation.MISSING  # "spent"
    assert await store.revoke(sid, other) is None
    assert await client.hgetall(SESSION + sid) == before
    assert await store.is_active(sid, owner)


async def test_a_bearer_call_notes_the_sessions_use_at_most_once_a_minute(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, sid = user_id(), new_id()
    await store.create(uid, sid, new_id(), start())
    a_while_ago = str(int(time.time() * 1000) - 30_000)
    await client.hset(SESSION + sid, "used", a_while_ago)
    assert await store.is_active(sid, uid)
    assert await client.hget(SESSION + sid, "used") == a_while_ago  # not yet a minute
    long_ago = str(int(time.time() * 1000) - 61_000)
    await client.hset(SESSION + sid, "used", long_ago)
    assert await store.is_active(sid, uid)
    assert int(await client.hget(SESSION + sid, "used") or 0) > int(long_ago) + 60_000
    await client.hdel(SESSION + sid, "used")  # a session opened before v2
    assert await store.is_active(sid, uid)
    assert await client.hget(SESSION + sid, "used") is not None


async def test_revoke_ends_one_session_once_and_leaves_the_users_others(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, ending, staying = user_id(), new_id(), new_id()
    await store.create(uid, ending, new_id(), start())
    await store.create(uid, staying, new_id(), start())
    assert await store.revoke(ending, uid) == EndedSession(ending, uid, LATER)
    assert not await store.is_active(ending, uid)
    assert await store.is_active(staying, uid)
    assert await client.zrange(SESSION_INDEX + str(uid), 0, -1) == [staying]
    assert await store.revoke(ending) is None  # twice ends nothing twice


async def test_of_concurrent_revocations_of_one_session_exactly_one_ends_it(
    store: RedisSessionStore,
) -> None:
    uid, sids = user_id(), [new_id() for _ in range(3)]
    for sid in sids:
        await store.create(uid, sid, new_id(), start())
    results = await asyncio.gather(
        *(store.revoke(sid) for sid in sids for _ in range(5)),
        *(store.revoke_all(uid) for _ in range(5)),
    )
    ended = [e for r in results for e in (r if isinstance(r, list) else [r]) if e is not None]
    assert sorted(e.session_id for e in ended) == sorted(sids)


async def test_revoke_all_keeps_only_the_session_asked_for(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, other_uid = user_id(), user_id()
    sids = [new_id() for _ in range(3)]
    for sid in sids:
        await store.create(uid, sid, new_id(), start())
    bystander = new_id()
    await store.create(other_uid, bystander, new_id(), start())
    ended = await store.revoke_all(uid, keep=sids[1])
    assert sorted(ended, key=lambda e: e.session_id) == sorted(
        [EndedSession(sids[0], uid, LATER), EndedSession(sids[2], uid, LATER)],
        key=lambda e: e.session_id,
    )
    assert [await store.is_active(s, uid) for s in sids] == [False, True, False]
    assert await client.zrange(SESSION_INDEX + str(uid), 0, -1) == [sids[1]]
    assert await store.revoke_all(uid, keep=sids[1]) == []
    assert [e.session_id for e in await store.revoke_all(uid)] == [sids[1]]
    assert await store.is_active(bystander, other_uid)


async def test_revoke_all_ends_sessions_opened_before_the_index_too(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    # A session as v1 wrote it: {uid, rid} and a plain set, with no access expiry kept.
    uid, old, new = user_id(), new_id(), new_id()
    await client.hset(SESSION + old, mapping={"uid": str(uid), "rid": new_id()})
    await client.expire(SESSION + old, TTL)
    await client.sadd(LEGACY_USER_SESSIONS + str(uid), old)
    await client.expire(LEGACY_USER_SESSIONS + str(uid), TTL)
    await store.create(uid, new, new_id(), start())
    before = time.time()

    ended = {e.session_id: e for e in await store.revoke_all(uid)}

    assert set(ended) == {old, new}
    # No expiry kept: bounded by the latest any access token issued until now can have.
    bound = ended[old].access_expires_at.timestamp()
    assert before + ACCESS_TTL - 1 <= bound <= time.time() + ACCESS_TTL + 1
    assert not await client.exists(SESSION + old, LEGACY_USER_SESSIONS + str(uid))
    assert await store.revoke(old) is None


async def test_the_list_shows_the_users_live_sessions_newest_first(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, first, second = user_id(), new_id(), new_id()
    await store.create(uid, first, new_id(), start("192.0.2.1", "Firefox/140"))
    await asyncio.sleep(0.01)
    await store.create(uid, second, new_id(), start())
    await store.create(user_id(), new_id(), new_id(), start())  # someone else's

    listed = await store.live(uid)

    assert [s.id for s in listed] == [second, first]
    assert (listed[1].ip, listed[1].user_agent) == ("192.0.2.1", "Firefox/140")
    assert (listed[0].ip, listed[0].user_agent) == (None, None)
    assert listed[1].created_at == listed[1].last_used_at
    assert abs(listed[0].created_at.timestamp() - time.time()) < 5


async def test_the_list_prunes_expired_and_ended_members_from_the_index(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, live, gone, expired = user_id(), new_id(), new_id(), new_id()
    for sid in (live, gone, expired):
        await store.create(uid, sid, new_id(), start())
    await client.delete(SESSION + gone)  # its key expired (or ended without the index)
    await client.zadd(SESSION_INDEX + str(uid), {expired: int(time.time() * 1000) - 1})

    assert [s.id for s in await store.live(uid)] == [live]
    assert await client.zrange(SESSION_INDEX + str(uid), 0, -1) == [live]


async def test_a_new_session_prunes_the_expired_members_of_the_index(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, stale, fresh = user_id(), new_id(), new_id()
    await client.zadd(SESSION_INDEX + str(uid), {stale: int(time.time() * 1000) - 1})
    await store.create(uid, fresh, new_id(), start())
    assert await client.zrange(SESSION_INDEX + str(uid), 0, -1) == [fresh]


async def test_the_list_shows_the_sessions_used_last_when_there_are_very_many(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid = user_id()
    sids = [new_id() for _ in range(LISTED + 5)]
    for sid in sids:
        await store.create(uid, sid, new_id(), start())
    listed = await store.live(uid)
    assert len(listed) == LISTED
    assert await client.zcard(SESSION_INDEX + str(uid)) == LISTED + 5


async def test_a_session_opened_before_v2_is_listed_from_its_first_rotation(
    store: RedisSessionStore, client: aioredis.Redis
) -> None:
    uid, sid, rid = user_id(), new_id(), new_id()
    await client.hset(SESSION + sid, mapping={"uid": str(uid), "rid": rid})
    await client.expire(SESSION + sid, TTL)
    assert await store.live(uid) == []  # in no index yet
    await store.rotate(sid, uid, rid, new_id(), LATER)
    (listed,) = await store.live(uid)
    assert (listed.id, listed.ip, listed.user_agent) == (sid, None, None)
    assert listed.created_at == listed.last_used_at


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
    await store.create(uid, sid, new_id(), start())
    answers = await asyncio.gather(*(store.is_active(sid, uid) for _ in range(300)))
    assert answers == [True] * 300


async def test_every_warden_key_in_the_db_has_a_ttl(
    store: RedisSessionStore, throttle: RedisLoginThrottle, client: aioredis.Redis
) -> None:
    uid = user_id()
    await store.create(uid, new_id(), new_id(), start())
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
        "session-index",
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
    store = RedisSessionStore(redis, TTL, ACCESS_TTL)
    throttle = RedisLoginThrottle(redis, 3, 5, WINDOW)
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.is_active(new_id(), 1),
            lambda: store.current(new_id()),
            lambda: store.create(1, new_id(), new_id(), start()),
            lambda: store.rotate(new_id(), 1, new_id(), new_id(), LATER),
            lambda: store.live(1),
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
