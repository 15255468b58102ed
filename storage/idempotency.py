"""Replies kept for Idempotency-Key repeats: in Redis, and a change's also in Postgres.

warden:idempotency:{scope}:{queue}:{sha256 of the key}
    JSON {"fp": body fingerprint} while the first request is worked on: a lease of
    PENDING_TTL seconds that its worker renews, so a dead worker's claim lapses quickly;
    then {"fp", "reply": envelope} for WARDEN_IDEMPOTENCY_TTL (24 h by default)

Postgres table idempotent_replies (slot as above, fingerprint, reply, expires_at)
    the reply of a change (registration, profile and user updates, password change,
    deletion), written by the unit of work in the change's own transaction, so it exists
    exactly when the change does; read when a retry finds no reply in Redis
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.lone import LoneStatements
from storage.redis_store import unavailable_on_error

PREFIX = "warden:idempotency:"
PENDING_TTL = 10  # seconds a claim outlives its worker; a live worker renews it
# Renews only a claim that is still pending with this fingerprint: never a stored reply.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class RedisIdempotencyStore:
    """Claim a key atomically (SET NX), then keep the reply for the repeats."""

    def __init__(self, client: aioredis.Redis, ttl: int) -> None:
        self._redis = client
        self._ttl = ttl

    async def claim(self, key: str, fingerprint: str) -> bool:
        async with unavailable_on_error():
            value = orjson.dumps({"fp": fingerprint})
            return bool(await self._redis.set(PREFIX + key, value, nx=True, ex=PENDING_TTL))

    async def renew(self, key: str, fingerprint: str) -> None:
        async with unavailable_on_error():
            value = orjson.dumps({"fp": fingerprint})
            await self._redis.eval(_RENEW, 1, PREFIX + key, value, PENDING_TTL)

    async def get(self, key: str) -> dict[str, Any] | None:
        async with unavailable_on_error():
            raw = await self._redis.get(PREFIX + key)
        return None if raw is None else orjson.loads(raw)

    async def complete(self, key: str, fingerprint: str, reply: dict[str, Any]) -> None:
        async with unavailable_on_error():
            value = orjson.dumps({"fp": fingerprint, "reply": reply})
            await self._redis.set(PREFIX + key, value, ex=self._ttl)

    async def release(self, key: str) -> None:
        async with unavailable_on_error():
            await self._redis.delete(PREFIX + key)


class PostgresReplyLedger:
    """The replies of changes, written by the unit of work in the change's own transaction.

    `recording` marks the current task's request (a context variable: each message runs in
    its own task); a unit of work that commits meanwhile calls `keep_reply` before COMMIT.
    """

    def __init__(self, lone: LoneStatements, ttl: int) -> None:
        self._lone = lone
        self._ttl = ttl

    async def get(self, key: str) -> dict[str, Any] | None:
        row = await self._lone.fetchrow(_GET, key)
        return (
            None if row is None else {"fp": row["fingerprint"], "reply": orjson.loads(row["reply"])}
        )

    @contextlib.contextmanager
    def recording(
        self, key: str, fingerprint: str, keep: Callable[[Any], dict[str, Any]]
    ) -> Iterator[None]:
        token = _RECORDING.set(_Recording(key, fingerprint, keep, self._ttl))
        try:
            yield
        finally:
            _RECORDING.reset(token)


@dataclass(frozen=True)
class _Recording:
    key: str
    fingerprint: str
    keep: Callable[[Any], dict[str, Any]]
    ttl: int


_RECORDING: ContextVar[_Recording | None] = ContextVar("warden_reply_recording", default=None)
_GET = "SELECT fingerprint, reply FROM idempotent_replies WHERE slot = $1 AND expires_at > now()"
# Each write also removes a few expired replies (never its own slot), so the table stays
# bounded by the writes of one key lifetime without a sweeper.
_KEEP = text(
    """
    WITH pruned AS (
        DELETE FROM idempotent_replies WHERE slot IN (
            SELECT slot FROM idempotent_replies
            WHERE expires_at < now() AND slot <> :slot
            ORDER BY expires_at LIMIT 10 FOR UPDATE SKIP LOCKED
        )
    )
    INSERT INTO idempotent_replies (slot, fingerprint, reply, expires_at)
    VALUES (:slot, :fp, CAST(:reply AS jsonb), now() + make_interval(secs => :ttl))
    ON CONFLICT (slot) DO UPDATE SET
        fingerprint = EXCLUDED.fingerprint,
        reply = EXCLUDED.reply,
        expires_at = EXCLUDED.expires_at
    """
)


def recording_reply() -> bool:
    """Whether a change committed now must keep its request's reply with it."""
    return _RECORDING.get() is not None


async def keep_reply(conn: AsyncConnection, outcome: object) -> None:
    """Inside a committing transaction: write the reply of the request being recorded, if any."""
    recording = _RECORDING.get()
    if recording is None:
        return
    reply = orjson.dumps(recording.keep(outcome)).decode()
    params = {"slot": recording.key, "fp": recording.fingerprint, "reply": reply}
    await conn.execute(_KEEP, params | {"ttl": recording.ttl})
