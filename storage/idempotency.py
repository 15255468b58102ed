"""Replies kept for Idempotency-Key repeats: in Redis, and a change's also in Postgres.

Nothing here holds a secret in a readable or fast-hashable form: the body fingerprint is
an HMAC under a server key (computed by the caller), and every kept reply (token pairs
among them) is sealed with AES-256-GCM, its slot as associated data, so a sealed reply
opens only under the key it was sealed with and only for the slot it was kept for.

Keys (every one has a TTL):
  warden:idempotency:{scope}:{queue}:{sha256 of the key}
      JSON {"fp", "holder"} while the first request is worked on: a lease of PENDING_TTL
      seconds that its handler renews; a claim whose holder's heartbeat is gone is taken
      over at once by the next claim with the same fingerprint. Then
      {"fp", "key": id of the sealing key, "reply": base64 of the sealed envelope} for
      WARDEN_IDEMPOTENCY_TTL (24 h by default). A reply sealed under another key (or
      written by a version before sealing) is not read: the next claim overwrites it.
  warden:worker-alive:{host}:{pid}:{random}
      "1": the heartbeat of one worker process (the holder named in its claims), for
      HEARTBEAT_TTL_MS, renewed every half second and by each claim it makes: gone within
      1.5 s of the process's death

Postgres table idempotent_replies (slot as above, fingerprint, reply: the sealed envelope,
expires_at)
    the reply of a change (registration, profile and user updates, password change,
    deletion), written by the unit of work its ReplyRecorder is handed to, in the change's
    own transaction, so it exists exactly when the change does; read when a retry finds
    no reply in Redis (its holder died). A row that does not open under the current key
    is ignored.
"""

from __future__ import annotations

import base64
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.errors import InternalError
from domain.model import User
from storage.lone import LoneStatements
from storage.redis_store import unavailable_on_error

log = structlog.get_logger("warden.idempotency")

PREFIX = "warden:idempotency:"
ALIVE = "warden:worker-alive:"
PENDING_TTL = 10  # seconds a claim outlives a holder that stops renewing it
HEARTBEAT_TTL_MS = 1500  # a holder silent this long is dead: its claims may be taken over
# How a change's reply renders the user the change left (None when it left none: a deletion).
Render = Callable[[User | None], dict[str, Any]]

# KEYS[1] the slot, KEYS[2] the claimer's heartbeat. ARGV: the pending value, PENDING_TTL,
# the fingerprint, the sealing key's id, the heartbeat prefix, HEARTBEAT_TTL_MS.
# Returns 1 (claimed), 2 (taken over from a dead holder) or the record found.
_CLAIM = """
redis.call('SET', KEYS[2], '1', 'PX', ARGV[6])
local current = redis.call('GET', KEYS[1])
local outcome = 1
if current then
  local ok, record = pcall(cjson.decode, current)
  if ok and type(record) == 'table' then
    if record.reply ~= nil then
      if record.key == ARGV[4] then return current end
    elseif record.holder and record.fp == ARGV[3]
        and redis.call('EXISTS', ARGV[5] .. record.holder) == 0 then
      outcome = 2
    else
      return current
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return outcome
"""
# Renews only a claim that is still pending with this fingerprint and holder.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Completes (ARGV[2] set, for ARGV[3] seconds) or releases (ARGV[2] empty) the slot, only
# while this holder (ARGV[1]) has it or nobody does: a claim taken over is the taker's.
_SETTLE = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, record = pcall(cjson.decode, current)
  if not (ok and type(record) == 'table' and record.holder == ARGV[1]) then return 0 end
end
if ARGV[2] == '' then return redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


class Sealer(Protocol):
    """Authenticated encryption of values kept at rest (warden.keys.AesGcmSealer)."""

    key_id: str

    def seal(self, plaintext: bytes, context: bytes) -> bytes: ...

    def open(self, sealed: bytes, context: bytes) -> bytes | None:
        """The plaintext, or None when `sealed` was not sealed with this key for `context`."""
        ...


class RedisIdempotencyStore:
    """Claims (one Lua script: claim, or take over a dead holder's) and the sealed replies."""

    def __init__(
        self, client: aioredis.Redis, ttl: int, sealer: Sealer, holder: str | None = None
    ) -> None:
        self._redis = client
        self._ttl = ttl
        self._sealer = sealer
        # This process, in its claims and its heartbeat: host and pid say which one to look at.
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._settle = client.register_script(_SETTLE)

    async def beat(self) -> None:
        async with unavailable_on_error():
            await self._redis.set(ALIVE + self.holder, "1", px=HEARTBEAT_TTL_MS)

    async def claim(self, key: str, fingerprint: str) -> dict[str, Any] | None:
        keys = [PREFIX + key, ALIVE + self.holder]
        pending, key_id = self._pending(fingerprint), self._sealer.key_id
        async with unavailable_on_error():
            found = await self._claim(
                keys, [pending, PENDING_TTL, fingerprint, key_id, ALIVE, HEARTBEAT_TTL_MS]
            )
        if found == 2:
            log.info("idempotency claim taken over from a dead worker")
        if isinstance(found, int):
            return None
        return self._read(key, orjson.loads(found))

    async def renew(self, key: str, fingerprint: str) -> None:
        async with unavailable_on_error():
            await self._renew([PREFIX + key], [self._pending(fingerprint), PENDING_TTL])

    async def complete(self, key: str, fingerprint: str, reply: dict[str, Any]) -> None:
        sealed = self._sealer.seal(orjson.dumps(reply), key.encode())
        value = {"fp": fingerprint, "key": self._sealer.key_id, "reply": _b64(sealed)}
        async with unavailable_on_error():
            await self._settle([PREFIX + key], [self.holder, orjson.dumps(value), self._ttl])

    async def release(self, key: str) -> None:
        async with unavailable_on_error():
            await self._settle([PREFIX + key], [self.holder, "", 0])

    def _pending(self, fingerprint: str) -> bytes:
        return orjson.dumps({"fp": fingerprint, "holder": self.holder})

    def _read(self, key: str, record: dict[str, Any]) -> dict[str, Any]:
        if "reply" not in record:
            return {"fp": record["fp"]}  # pending
        opened = self._sealer.open(base64.b64decode(record["reply"]), key.encode())
        if opened is None:  # under our key id, yet it does not open: tampered with
            log.error("kept idempotent reply fails authentication")
            raise InternalError
        return {"fp": record["fp"], "reply": orjson.loads(opened)}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class PostgresReplyLedger:
    """The replies of changes: read here, written by the unit of work a recorder is handed to."""

    def __init__(self, lone: LoneStatements, ttl: int, sealer: Sealer) -> None:
        self._lone = lone
        self._ttl = ttl
        self._sealer = sealer

    async def get(self, key: str) -> dict[str, Any] | None:
        row = await self._lone.fetchrow(_GET, key)
        if row is None:
            return None
        opened = self._sealer.open(bytes(row["reply"]), key.encode())
        if opened is None:  # sealed under another key: as if never kept
            return None
        return {"fp": row["fingerprint"], "reply": orjson.loads(opened)}

    def recorder(self, key: str, fingerprint: str, render: Render) -> ReplyRecorder:
        """The recorder of one idempotent change's reply, to open its units of work with."""
        return ReplyRecorder(key, fingerprint, render, self._ttl, self._sealer)


@dataclass(frozen=True)
class ReplyRecorder:
    """The reply of one idempotent change, written by its unit of work as it commits.

    Made for one request (its slot, its body's fingerprint, how its reply renders the user
    the change left) and handed to that request's units of work only (storage.uow): the
    reply is written in the change's own transaction, so it exists exactly when the change
    does.
    """

    slot: str
    fingerprint: str
    render: Render
    ttl: int
    sealer: Sealer

    async def write(self, conn: AsyncConnection, changed: User | None) -> None:
        """Inside the committing transaction: the reply, sealed for its slot, under the slot."""
        sealed = self.sealer.seal(orjson.dumps(self.render(changed)), self.slot.encode())
        params = {"slot": self.slot, "fp": self.fingerprint, "reply": sealed, "ttl": self.ttl}
        await conn.execute(_KEEP, params)


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
    VALUES (:slot, :fp, :reply, now() + make_interval(secs => :ttl))
    ON CONFLICT (slot) DO UPDATE SET
        fingerprint = EXCLUDED.fingerprint,
        reply = EXCLUDED.reply,
        expires_at = EXCLUDED.expires_at
    """
)
