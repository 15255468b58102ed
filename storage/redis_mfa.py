"""Pending second-factor logins (mfa_tokens) in Redis, shared by every worker.

Keys (each expires with its token):
  warden:mfa-token:{sha256 of the token}   hash {uid, addr, failures}: a login whose password
                                           was right, waiting for its code; TTL = 5 minutes

The token itself is never stored: a reader of Redis cannot finish anyone's login. Spending
is one DEL (of two racing requests one wins); a wrong code's count and the token's death at
the limit are one script.
"""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis

from domain.model import MfaChallenge
from storage.redis_store import unavailable_on_error

MFA_TOKEN = "warden:mfa-token:"

# KEYS[1] the token's key; ARGV[1] the failures it survives. A spent or expired token is not
# brought back by its failure count.
_FAIL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures >= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]) end
return failures
"""


def _key(token: str) -> str:
    return MFA_TOKEN + hashlib.sha256(token.encode()).hexdigest()


class RedisMfaChallenges:
    """MfaChallenges in Redis hashes keyed by the token's digest."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client
        self._fail = client.register_script(_FAIL)

    async def open(self, token: str, challenge: MfaChallenge, ttl: int) -> None:
        key = _key(token)
        async with unavailable_on_error():
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(
                key, mapping={"uid": challenge.user_id, "addr": challenge.address, "failures": 0}
            )
            pipe.expire(key, ttl)
            await pipe.execute()

    async def find(self, token: str) -> MfaChallenge | None:
        async with unavailable_on_error():
            user_id, address = await self._redis.hmget(_key(token), ["uid", "addr"])
        if user_id is None or address is None:
            return None
        return MfaChallenge(int(user_id), str(address))

    async def fail(self, token: str, max_failures: int) -> None:
        async with unavailable_on_error():
            await self._fail([_key(token)], [max_failures])

    async def spend(self, token: str) -> bool:
        async with unavailable_on_error():
            return bool(await self._redis.delete(_key(token)))
