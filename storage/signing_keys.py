"""The signing key store (CONTRACT §6): keys, their states, and every change in one place.

A key's life, one row (migration 0007):

| state     | published | signs | verifies | until                                          |
|-----------|-----------|-------|----------|------------------------------------------------|
| `next`    | yes       | no    | yes      | `activates_at` (made + WARDEN_JWKS_MAX_AGE)     |
| `active`  | yes       | yes   | yes      | the next key activates                          |
| `retired` | yes       | no    | yes      | `removes_at` (retired + access TTL + leeway)    |
| `gone`    | no        | no    | no       | for ever (its private half erased)              |
| `revoked` | no        | no    | no       | for ever: `warden keys rotate --now`            |

Every change runs in one transaction under one advisory lock, so workers that decide the
same thing at the same moment (a rotation falls due, a key's time is up) do it once: the
second finds it done. Partial unique indexes keep one active and at most one next key
whatever happens. A change NOTIFYs KEYS_CHANNEL at its commit (every worker reloads its
ring at once) and, when the published set changed, writes `signing_keys.changed` to the
outbox in the same transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg
import orjson

from domain.events import SIGNING_KEYS_CHANGED, Event
from storage.outbox import SqlAlchemyEventOutbox

KEYS_CHANNEL = "warden_signing_keys"
KEYS_LOCK_ID = 0x5741_4B45  # one change of the key set at a time
# The published keys in order: the signing key first, then the one to come, then the old ones.
_PUBLISHED = (
    "SELECT * FROM signing_keys WHERE state IN ('next', 'active', 'retired')"
    " ORDER BY CASE state WHEN 'active' THEN 0 WHEN 'next' THEN 1 ELSE 2 END, activates_at DESC"
)


class Sealer(Protocol):
    """AES-GCM with a context (warden.keys.AesGcmSealer)."""

    def seal(self, plaintext: bytes, context: bytes) -> bytes: ...

    def open(self, sealed: bytes, context: bytes) -> bytes | None: ...


@dataclass(frozen=True)
class NewKey:
    """A key pair just made: its id, algorithm, public JWK and private half (PKCS#8 DER)."""

    kid: str
    algorithm: str
    public_jwk: dict[str, Any]
    private_der: bytes


@dataclass(frozen=True)
class StoredKey:
    """One key as the store holds it; `private_der` only for a key that may sign."""

    kid: str
    algorithm: str
    state: str
    public_jwk: dict[str, Any]
    created_at: datetime
    activates_at: datetime
    retired_at: datetime | None
    removes_at: datetime | None
    private_der: bytes | None = None


@dataclass(frozen=True)
class Policy:
    """The timeline: how long a new key waits, how long an old one verifies, how often."""

    algorithm: str
    publish_ahead: timedelta  # WARDEN_JWKS_MAX_AGE: a key is published this long before it signs
    verify_after: timedelta  # access TTL + leeway: a retired key verifies this long
    rotate_every: timedelta  # WARDEN_KEY_ROTATION_DAYS


class UnreadableKey(RuntimeError):
    """A private key that does not open: another WARDEN_KEY_ENCRYPTION_KEY, or tampered with."""


class PostgresSigningKeyStore:
    """The key store on short asyncpg connections of its own (changes are rare)."""

    def __init__(
        self, dsn: str, sealer: Sealer, make_key: Callable[[str], NewKey], policy: Policy
    ) -> None:
        self._dsn = dsn
        self._sealer = sealer
        self._make_key = make_key
        self.policy = policy

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await asyncpg.connect(self._dsn, timeout=10)
        try:
            yield conn
        finally:
            await conn.close(timeout=5)

    async def listen(self, on_change: Callable[[], None]) -> asyncpg.Connection:
        """A connection of the caller's that calls `on_change` at every committed change."""
        conn = await asyncpg.connect(self._dsn, timeout=10)
        await conn.add_listener(KEYS_CHANNEL, lambda *_: on_change())
        return conn

    async def published(self, conn: asyncpg.Connection | None = None) -> list[StoredKey]:
        """The published keys, the active one first, its private half opened."""
        if conn is None:
            async with self._connection() as own:
                return await self.published(own)
        rows = await conn.fetch(_PUBLISHED)
        return [self._key(r, with_private=r["state"] == "active") for r in rows]

    async def every_key(self) -> list[StoredKey]:
        """Every key ever made, newest first, without private halves (for `warden keys list`)."""
        async with self._connection() as conn:
            rows = await conn.fetch("SELECT * FROM signing_keys ORDER BY created_at DESC, kid")
        return [self._key(r, with_private=False) for r in rows]

    async def advance(self) -> bool:
        """Do what the clock asks: the first key, a due activation, removal or rotation.

        True when anything changed.
        """
        async with self._changing() as change:
            await change.advance()
        return change.changed

    async def rotate(self, now: bool = False) -> str:
        """Make a new key (or keep the pending one) and return its kid.

        `now`: the new key signs at once and the active one is revoked at once (a leak).
        """
        async with self._changing() as change:
            kid = await (change.rotate_now() if now else change.rotate())
        return kid

    @contextlib.asynccontextmanager
    async def _changing(self) -> AsyncIterator[_Change]:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK_ID)
            change = _Change(self, conn, await conn.fetchval("SELECT clock_timestamp()"))
            yield change
            await change.finish()

    def _key(self, row: asyncpg.Record, with_private: bool) -> StoredKey:
        private = None
        if with_private:
            private = self._sealer.open(row["private_key"], row["kid"].encode())
            if private is None:
                raise UnreadableKey(
                    f"signing key {row['kid']} does not open with WARDEN_KEY_ENCRYPTION_KEY"
                )
        return StoredKey(
            kid=row["kid"],
            algorithm=row["algorithm"],
            state=row["state"],
            public_jwk=orjson.loads(row["public_jwk"]),
            created_at=row["created_at"],
            activates_at=row["activates_at"],
            retired_at=row["retired_at"],
            removes_at=row["removes_at"],
            private_der=private,
        )


class _Change:
    """One transaction of the store, under its lock; `now` is the database's clock."""

    def __init__(self, store: PostgresSigningKeyStore, conn: asyncpg.Connection, now: datetime):
        self._store = store
        self._conn = conn
        self._now = now
        self._policy = store.policy
        self.changed = False  # anything: the workers reload
        self.set_changed = False  # the published set: an event too

    async def _one(self, state: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._conn.fetchrow(
            "SELECT * FROM signing_keys WHERE state = $1", state
        )
        return row

    async def advance(self) -> None:
        active, pending = await self._one("active"), await self._one("next")
        if pending is not None and (active is None or pending["activates_at"] <= self._now):
            await self._retire_active()
            await self._set("active", pending["kid"], activates_at=self._now)
            active, pending = pending, None
        if active is None:
            await self._add("active", self._now)  # the first key: nothing to publish it before
        removed = await self._conn.fetch(
            "UPDATE signing_keys SET state = 'gone', private_key = NULL"
            " WHERE state = 'retired' AND removes_at <= $1 RETURNING kid",
            self._now,
        )
        self._mark(len(removed) > 0, set_changed=len(removed) > 0)
        if pending is None and active is not None and self._due(active):
            await self._add("next", self._now + self._policy.publish_ahead)

    def _due(self, active: asyncpg.Record) -> bool:
        """A rotation is due: the active key is old, or of another algorithm than configured."""
        old = active["activates_at"] + self._policy.rotate_every <= self._now
        return bool(old or active["algorithm"] != self._policy.algorithm)

    async def rotate(self) -> str:
        pending = await self._one("next")
        if pending is not None:
            return str(pending["kid"])  # already on its way: one rotation at a time
        if await self._one("active") is None:
            return await self._add("active", self._now)
        return await self._add("next", self._now + self._policy.publish_ahead)

    async def rotate_now(self) -> str:
        await self._conn.execute(
            "UPDATE signing_keys SET state = 'revoked', private_key = NULL, retired_at = $1,"
            " removes_at = $1 WHERE state = 'active'",
            self._now,
        )
        # A pending key was published beside the leaked one: it goes too, and one new key
        # takes over.
        await self._conn.execute(
            "UPDATE signing_keys SET state = 'gone', private_key = NULL, removes_at = $1"
            " WHERE state = 'next'",
            self._now,
        )
        return await self._add("active", self._now)

    async def _retire_active(self) -> None:
        status = await self._conn.execute(
            "UPDATE signing_keys SET state = 'retired', retired_at = $1, removes_at = $2"
            " WHERE state = 'active'",
            self._now,
            self._now + self._policy.verify_after,
        )
        self._mark(status != "UPDATE 0")

    async def _set(self, state: str, kid: str, activates_at: datetime) -> None:
        await self._conn.execute(
            "UPDATE signing_keys SET state = $1, activates_at = $2 WHERE kid = $3",
            state,
            activates_at,
            kid,
        )
        self._mark(True)

    async def _add(self, state: str, activates_at: datetime) -> str:
        key = self._store._make_key(self._policy.algorithm)
        sealed = self._store._sealer.seal(key.private_der, key.kid.encode())
        await self._conn.execute(
            "INSERT INTO signing_keys (kid, algorithm, state, public_jwk, private_key,"
            " created_at, activates_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)",
            key.kid,
            key.algorithm,
            state,
            orjson.dumps(key.public_jwk).decode(),
            sealed,
            self._now,
            activates_at,
        )
        self._mark(True, set_changed=True)
        return key.kid

    def _mark(self, changed: bool, set_changed: bool = False) -> None:
        self.changed = self.changed or changed
        self.set_changed = self.set_changed or set_changed

    async def finish(self) -> None:
        """Tell the workers (at commit), and the world when the published set changed."""
        if not self.changed:
            return
        if self.set_changed:
            kids = await self._conn.fetch(_PUBLISHED)
            outbox = SqlAlchemyEventOutbox()
            outbox.add(
                Event(SIGNING_KEYS_CHANGED, self._now, None, {"kids": [r["kid"] for r in kids]})
            )
            await outbox.flush_alone(self._conn)  # the outbox rows and their wake-up
        await self._conn.execute("SELECT pg_notify($1, '')", KEYS_CHANNEL)
