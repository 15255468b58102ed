"""Redis adapters: live sessions, failed-login and registration counters, shared by every worker.

Keys (every one has a TTL, so nothing grows without bound):
  warden:session:{sid}          hash {uid, rid, prev, rot, created, used, aexp, ip, ua}: a live
                                session, its current refresh token id, the one the last
                                rotation spent and when (ms, Redis's clock), when it was opened
                                and last used (ms), the `exp` of its newest access token (s),
                                the client's address and user agent;
                                TTL = refresh token lifetime, renewed on each rotation
  warden:session-index:{uid}    sorted set of the user's session ids, scored by when each
                                expires (ms): lists and "revoke all" read it, never the
                                keyspace; expired members are pruned on every write and read;
                                TTL = refresh token lifetime, renewed with the newest member
  warden:user-sessions:{uid}    (before v2: a plain set of the user's session ids; no longer
                                written, read and deleted by "revoke all" until it expires)
  warden:login-failures:account:{account}, warden:login-failures:ip:{address}
                                failed-login counters; TTL = the login window from the first failure
  warden:login-lockout-reported:account:{account}, warden:login-lockout-reported:ip:{address}
                                set (NX) by the first refused login of a locked window, whose
                                event it wrote; expires with that window's counter
  warden:register-attempts:{address}
                                registrations from one address that reached the hashing;
                                TTL = the registration window from the first one
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from domain.errors import ServiceUnavailable
from domain.model import EndedSession, SessionInfo, SessionStart
from domain.ports import Lockout, Rotated, Rotation

SESSION = "warden:session:"
SESSION_INDEX = "warden:session-index:"
LEGACY_USER_SESSIONS = "warden:user-sessions:"
FAILURES = "warden:login-failures:"
REPORTED = "warden:login-lockout-reported:"
REGISTRATIONS = "warden:register-attempts:"

TOUCH_EVERY_MS = 60_000  # a bearer call notes its session's use at most once a minute
LISTED = 100  # sessions a list shows at most: the ones used last

# Every session script reads the time from Redis: one clock for every worker, so the reuse
# interval means the same whichever worker rotated and whichever is asked.
_NOW = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function ms(n) return string.format('%d', n) end
"""

# KEYS[1] session, KEYS[2] the user's index; ARGV: uid, refresh id, ttl (s), access token
# expiry (s), session id, ip, user agent ('' for none).
_CREATE = (
    _NOW
    + """
redis.call('HSET', KEYS[1], 'uid', ARGV[1], 'rid', ARGV[2], 'created', ms(now), 'used', ms(now),
  'aexp', ARGV[4])
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'ip', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'ua', ARGV[7]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ms(now))
redis.call('ZADD', KEYS[2], ms(now + ARGV[3] * 1000), ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""
)

# KEYS[1] session, KEYS[2] the user's index; ARGV: the token's user id, presented refresh id,
# new refresh id, ttl (s), the new access token's expiry (s), reuse interval (s), session id.
# Another user's session is answered as a missing one and left alone: a token signed for
# someone else must neither rotate nor revoke the owner's session. The token the last
# rotation spent, presented again within the interval, gets the current refresh id (both
# tabs then hold the same current pair); any other spent one ends the session. Returns
# {0} missing, {1, rid} rotated, {2, aexp} reused (this call ended it), {3, rid} retried.
_ROTATE = (
    _NOW
    + """
local s = redis.call('HMGET', KEYS[1], 'uid', 'rid', 'prev', 'rot', 'aexp')
local uid, current = s[1], s[2]
if not current or uid ~= ARGV[1] then return {0} end
local outcome, rid = 1, ARGV[3]
local interval = tonumber(ARGV[6]) * 1000
if current == ARGV[2] then
  redis.call('HSET', KEYS[1], 'rid', rid, 'prev', current, 'rot', ms(now))
elseif interval > 0 and s[3] == ARGV[2] and now - tonumber(s[4]) < interval then
  outcome, rid = 3, current
else
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[7])
  return {2, s[5] or ''}
end
if tonumber(ARGV[5]) > tonumber(s[5] or '0') then redis.call('HSET', KEYS[1], 'aexp', ARGV[5]) end
redis.call('HSET', KEYS[1], 'used', ms(now))
redis.call('HSETNX', KEYS[1], 'created', ms(now))
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ms(now + ARGV[4] * 1000), ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {outcome, rid}
"""
)

# KEYS[1] session; ARGV: user id, ms between notes of use. 1 while the session is the user's.
_TOUCH = (
    _NOW
    + """
local s = redis.call('HMGET', KEYS[1], 'uid', 'used')
if s[1] ~= ARGV[1] then return 0 end
if not s[2] or now - tonumber(s[2]) >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'used', ms(now))
end
return 1
"""
)

# KEYS[1] session; ARGV: index prefix, owner ('' for anyone's), session id. Returns
# {uid, aexp} when this call ended the session, nil when it was not (or not the owner's).
_REVOKE = """
local s = redis.call('HMGET', KEYS[1], 'uid', 'aexp')
if not s[1] or (ARGV[2] ~= '' and s[1] ~= ARGV[2]) then return false end
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. s[1], ARGV[3])
return {s[1], s[2] or ''}
"""

# KEYS[1] the user's index, KEYS[2] its pre-v2 set; ARGV: session prefix, id to keep ('' for
# none). Returns sid, aexp, sid, aexp... of the sessions this call deleted (DEL says which).
_REVOKE_ALL = """
local sids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[2])) do table.insert(sids, sid) end
local ended = {}
for _, sid in ipairs(sids) do
  if sid ~= ARGV[2] then
    local aexp = redis.call('HGET', ARGV[1] .. sid, 'aexp')
    if redis.call('DEL', ARGV[1] .. sid) == 1 then
      table.insert(ended, sid)
      table.insert(ended, aexp or '')
    end
    redis.call('ZREM', KEYS[1], sid)
    redis.call('SREM', KEYS[2], sid)
  end
end
return ended
"""

# KEYS[1] the user's index; ARGV: session prefix, how many. Prunes expired and ended members;
# returns sid, created, used, ip, ua... of the live ones used last.
_LIST = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms(now))
local found = {}
for _, sid in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  local s = redis.call('HMGET', ARGV[1] .. sid, 'uid', 'created', 'used', 'ip', 'ua')
  if s[1] then
    for _, v in ipairs({sid, s[2] or s[3] or '0', s[3] or s[2] or '0', s[4] or '', s[5] or ''}) do
      table.insert(found, v)
    end
  else
    redis.call('ZREM', KEYS[1], sid)
  end
end
return found
"""
)

# KEYS[1] a failure counter, KEYS[2] its reported-mark; ARGV: failures, fallback ttl (s).
# The mark expires in the very millisecond its counter does: the next window reports anew,
# and no refusal in this one can find the mark gone early.
_REPORT_ONCE = """
local left = redis.call('PTTL', KEYS[1])
if left == -2 then return 0 end
if left == -1 then left = tonumber(ARGV[2]) * 1000 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', left) then return 1 end
return 0
"""

_ROTATIONS = {0: Rotation.MISSING, 1: Rotation.ROTATED, 2: Rotation.REUSED, 3: Rotation.RETRIED}


POOL_SIZE = 100
TIMEOUT = 2  # seconds: well inside the edge's RPC timeout, so a hung Redis is a 503, not a 504


def make_redis(url: str) -> aioredis.Redis:
    """A client that gives up quickly, so a hung Redis fails requests instead of stalling them.

    The pool blocks: a worker runs hundreds of handlers at once, and the default pool raises
    MaxConnectionsError (a 503) past its size instead of letting a call wait for a connection.
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=TIMEOUT,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        health_check_interval=15,
        decode_responses=True,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


@asynccontextmanager
async def unavailable_on_error() -> AsyncIterator[None]:
    """Fail closed: an unreachable Redis is a 503, never an accepted token."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise ServiceUnavailable("The session store cannot be reached.") from exc


class RedisSessionStore:
    """SessionStore in Redis; each change is one Lua script: of two racing refreshes one
    wins, and of two racing revocations of a session exactly one is told it ended it."""

    def __init__(self, client: aioredis.Redis, ttl: int, access_ttl: int) -> None:
        self._redis = client
        self._ttl = ttl
        self._access_ttl = access_ttl
        self._create = client.register_script(_CREATE)
        self._rotate = client.register_script(_ROTATE)
        self._touch = client.register_script(_TOUCH)
        self._revoke = client.register_script(_REVOKE)
        self._revoke_all = client.register_script(_REVOKE_ALL)
        self._list = client.register_script(_LIST)

    async def create(
        self, user_id: int, session_id: str, refresh_id: str, start: SessionStart
    ) -> None:
        keys = [SESSION + session_id, SESSION_INDEX + str(user_id)]
        args: list[str | int] = [
            str(user_id),
            refresh_id,
            self._ttl,
            _seconds(start.access_expires_at),
            session_id,
            start.ip or "",
            start.user_agent or "",
        ]
        async with unavailable_on_error():
            await self._create(keys, args)

    async def rotate(
        self,
        session_id: str,
        user_id: int,
        presented_id: str,
        new_id: str,
        access_expires_at: datetime,
        reuse_interval: int = 0,
    ) -> Rotated:
        keys = [SESSION + session_id, SESSION_INDEX + str(user_id)]
        args: list[str | int] = [
            str(user_id),
            presented_id,
            new_id,
            self._ttl,
            _seconds(access_expires_at),
            reuse_interval,
            session_id,
        ]
        async with unavailable_on_error():
            result = await self._rotate(keys, args)
        outcome = _ROTATIONS[int(result[0])]
        if outcome is Rotation.MISSING:
            return Rotated(outcome)
        if outcome is Rotation.REUSED:
            return Rotated(outcome, ended=self._ended(session_id, user_id, result[1]))
        return Rotated(outcome, str(result[1]))

    async def is_active(self, session_id: str, user_id: int) -> bool:
        async with unavailable_on_error():
            live = await self._touch([SESSION + session_id], [str(user_id), TOUCH_EVERY_MS])
        return bool(live)

    async def current(self, session_id: str) -> tuple[int, str] | None:
        async with unavailable_on_error():
            user_id, refresh_id = await self._redis.hmget(SESSION + session_id, ["uid", "rid"])
        if user_id is None or refresh_id is None:
            return None
        return int(user_id), str(refresh_id)

    async def revoke(self, session_id: str, user_id: int | None = None) -> EndedSession | None:
        owner = "" if user_id is None else str(user_id)
        async with unavailable_on_error():
            result = await self._revoke([SESSION + session_id], [SESSION_INDEX, owner, session_id])
        if result is None:
            return None
        return self._ended(session_id, int(result[0]), result[1])

    async def revoke_all(self, user_id: int, keep: str | None = None) -> list[EndedSession]:
        keys = [SESSION_INDEX + str(user_id), LEGACY_USER_SESSIONS + str(user_id)]
        async with unavailable_on_error():
            flat = await self._revoke_all(keys, [SESSION, keep or ""])
        pairs = zip(flat[::2], flat[1::2], strict=True)
        return [self._ended(sid, user_id, aexp) for sid, aexp in pairs]

    async def live(self, user_id: int) -> list[SessionInfo]:
        async with unavailable_on_error():
            flat = await self._list([SESSION_INDEX + str(user_id)], [SESSION, LISTED])
        found = [
            SessionInfo(sid, _moment(created), _moment(used), ip or None, ua or None)
            for sid, created, used, ip, ua in zip(*[iter(flat)] * 5, strict=True)
        ]
        return sorted(found, key=lambda s: (s.created_at, s.id), reverse=True)

    def _ended(self, session_id: str, user_id: int, access_expires_at: Any) -> EndedSession:
        """A session a call ended; one opened before v2 has no recorded access expiry, so
        its bound is the latest any access token issued until now can have."""
        if access_expires_at:
            expires = datetime.fromtimestamp(int(access_expires_at), UTC)
        else:
            expires = datetime.fromtimestamp(int(time.time()) + self._access_ttl, UTC)
        return EndedSession(session_id, user_id, expires)


def _seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def _moment(ms: str) -> datetime:
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


class RedisLoginThrottle:
    """LoginThrottle with fixed windows that start at the first failure."""

    def __init__(
        self, client: aioredis.Redis, max_failures: int, ip_max_failures: int, window: int
    ) -> None:
        self._redis = client
        self._max = max_failures
        self._ip_max = ip_max_failures
        self._window = window
        self._report_once = client.register_script(_REPORT_ONCE)

    def _limits(
        self, account: str, client_ip: str | None
    ) -> list[tuple[Literal["account", "client_ip"], str, int]]:
        """(whose limit, counter suffix, limit) of every window that applies to a login."""
        limits: list[tuple[Literal["account", "client_ip"], str, int]] = [
            ("account", "account:" + account, self._max)
        ]
        if client_ip:
            limits.append(("client_ip", "ip:" + client_ip, self._ip_max))
        return limits

    async def lockout(self, account: str, client_ip: str | None) -> Lockout | None:
        limits = self._limits(account, client_ip)
        async with unavailable_on_error():
            pipe = self._redis.pipeline(transaction=False)
            for _, suffix, _ in limits:
                pipe.get(FAILURES + suffix)
                pipe.ttl(FAILURES + suffix)
            replies = await pipe.execute()
        found = None
        for i, (whose, _, limit) in enumerate(limits):
            count, ttl = replies[2 * i], replies[2 * i + 1]
            if count is None or int(count) < limit:
                continue
            wait = ttl if ttl > 0 else self._window
            if found is None or wait > found.retry_after:  # the longest wait is the answer
                found = Lockout(wait, int(count), whose)
        return found

    async def record_failure(self, account: str, client_ip: str | None) -> None:
        async with unavailable_on_error():
            pipe = self._redis.pipeline(transaction=True)
            for _, suffix, _ in self._limits(account, client_ip):
                pipe.incr(FAILURES + suffix)
                pipe.expire(FAILURES + suffix, self._window, nx=True)
            await pipe.execute()

    async def clear(self, account: str) -> None:
        async with unavailable_on_error():
            await self._redis.delete(
                FAILURES + "account:" + account, REPORTED + "account:" + account
            )

    async def report_once(self, account: str, client_ip: str | None, lockout: Lockout) -> bool:
        suffix = "account:" + account if lockout.limited_by == "account" else f"ip:{client_ip}"
        async with unavailable_on_error():
            keys = [FAILURES + suffix, REPORTED + suffix]
            first = await self._report_once(keys, [lockout.failures, self._window])
        return bool(first)


class RedisRegistrationThrottle:
    """RegistrationThrottle with fixed windows that start at an address's first registration."""

    def __init__(self, client: aioredis.Redis, max_per_address: int, window: int) -> None:
        self._redis = client
        self._max = max_per_address
        self._window = window

    async def admit(self, client_ip: str) -> int:
        key = REGISTRATIONS + client_ip
        async with unavailable_on_error():
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, self._window, nx=True)
            pipe.ttl(key)
            count, _, ttl = await pipe.execute()
        if int(count) <= self._max:
            return 0
        return int(ttl) if ttl > 0 else self._window


REDELIVERIES = "warden:redeliveries:"
REDELIVERY_MEMORY = 3600  # seconds a request's redeliveries are remembered


class RedisRedeliveryCounter:
    """How often a request came back to its (classic) queue, shared by every worker."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    async def count(self, queue: str, message_id: str) -> int:
        key = f"{REDELIVERIES}{queue}:{message_id}"
        async with unavailable_on_error():
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, REDELIVERY_MEMORY)
            count, _ = await pipe.execute()
        return int(count)
