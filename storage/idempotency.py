"""Replies kept for Idempotency-Key repeats, in Redis.

warden:idempotency:{scope}:{queue}:{sha256 of the key}
    JSON {"fp": body fingerprint} while the first request is worked on: a lease of
    PENDING_TTL seconds that its worker renews, so a dead worker's claim lapses quickly;
    then {"fp", "reply": envelope} for WARDEN_IDEMPOTENCY_TTL (24 h by default)
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis

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
