"""Redis adapters: live sessions, failed-login and registration counters, shared by every worker.

Keys (every one has a TTL, so nothing grows without bound):
  warden:session:{sid}          hash {uid, rid}: a live session and its current refresh token id;
                                TTL = refresh token lifetime, renewed on each rotation
  warden:user-sessions:{uid}    set of the user's session ids, for "revoke all"; same TTL
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

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from domain.errors import ServiceUnavailable
from domain.ports import Lockout, Rotation

SESSION = "warden:session:"
USER_SESSIONS = "warden:user-sessions:"
FAILURES = "warden:login-failures:"
REPORTED = "warden:login-lockout-reported:"
REGISTRATIONS = "warden:register-attempts:"

# KEYS[1] session; ARGV: the token's user id, presented refresh id, new refresh id, ttl,
# user-sessions prefix. Another user's session is answered as a missing one and left alone:
# a token signed for someone else must neither rotate nor revoke the owner's session.
_ROTATE = """
local session = redis.call('HMGET', KEYS[1], 'uid', 'rid')
local uid, current = session[1], session[2]
if not current or uid ~= ARGV[1] then return 0 end
if current == ARGV[2] then
  redis.call('HSET', KEYS[1], 'rid', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  redis.call('EXPIRE', ARGV[5] .. uid, ARGV[4])
  return 1
end
redis.call('DEL', KEYS[1])
return 2
"""

# KEYS[1] user-sessions set; ARGV: session prefix, session id to keep ('' for none).
_REVOKE_ALL = """
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if sid ~= ARGV[2] then
    redis.call('DEL', ARGV[1] .. sid)
    redis.call('SREM', KEYS[1], sid)
  end
end
return 1
"""

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

_ROTATIONS = {0: Rotation.MISSING, 1: Rotation.ROTATED, 2: Rotation.REUSED}


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
    """SessionStore in Redis; rotation is one Lua script: of two racing refreshes, one wins."""

    def __init__(self, client: aioredis.Redis, ttl: int) -> None:
        self._redis = client
        self._ttl = ttl
        self._rotate = client.register_script(_ROTATE)
        self._revoke_all = client.register_script(_REVOKE_ALL)

    async def create(self, user_id: int, session_id: str, refresh_id: str) -> None:
        async with unavailable_on_error():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(SESSION + session_id, mapping={"uid": user_id, "rid": refresh_id})
            pipe.expire(SESSION + session_id, self._ttl)
            pipe.sadd(USER_SESSIONS + str(user_id), session_id)
            pipe.expire(USER_SESSIONS + str(user_id), self._ttl)
            await pipe.execute()

    async def rotate(
        self, session_id: str, user_id: int, presented_id: str, new_id: str
    ) -> Rotation:
        async with unavailable_on_error():
            keys = [SESSION + session_id]
            args: list[str | int] = [str(user_id), presented_id, new_id, self._ttl, USER_SESSIONS]
            result = await self._rotate(keys, args)
        return _ROTATIONS[int(result)]

    async def is_active(self, session_id: str, user_id: int) -> bool:
        async with unavailable_on_error():
            owner = await self._redis.hget(SESSION + session_id, "uid")
        return owner == str(user_id)

    async def current(self, session_id: str) -> tuple[int, str] | None:
        async with unavailable_on_error():
            user_id, refresh_id = await self._redis.hmget(SESSION + session_id, ["uid", "rid"])
        if user_id is None or refresh_id is None:
            return None
        return int(user_id), str(refresh_id)

    async def revoke(self, session_id: str) -> None:
        async with unavailable_on_error():
            user_id = await self._redis.hget(SESSION + session_id, "uid")
            pipe = self._redis.pipeline(transaction=True)
            pipe.delete(SESSION + session_id)
            if user_id is not None:
                pipe.srem(USER_SESSIONS + str(user_id), session_id)
            await pipe.execute()

    async def revoke_all(self, user_id: int, keep: str | None = None) -> None:
        async with unavailable_on_error():
            await self._revoke_all([USER_SESSIONS + str(user_id)], [SESSION, keep or ""])


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
