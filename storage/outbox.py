"""The transactional outbox: events are rows written in the change's own transaction."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.events import Event
from storage.tables import outbox

OUTBOX_CHANNEL = "warden_outbox"


class SqlAlchemyEventOutbox:
    """EventOutbox that inserts its events when the unit of work commits."""

    def __init__(self) -> None:
        self.pending: list[Event] = []

    def add(self, event: Event) -> None:
        self.pending.append(event)

    async def flush(self, conn: AsyncConnection) -> None:
        if not self.pending:
            return
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        rows = [
            {
                "event_id": e.id,
                "type": e.type,
                "user_id": e.user_id,
                "payload": e.to_cloudevent(request_id),
            }
            for e in self.pending
        ]
        await conn.execute(outbox.insert(), rows)
        # Wakes the relay at commit (NOTIFY is delivered only if the transaction commits).
        await conn.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))
        self.pending.clear()


RELAY_LOCK_ID = 0x5741_5245  # one relay publishes at a time: commit order is kept


class PostgresOutboxSource:
    """What the relay reads: pending rows in id order, a leader lock, and commit wake-ups.

    Holds one dedicated asyncpg connection: its session-level advisory lock makes this
    process the only publisher, and LISTEN on it wakes the relay when a commit adds rows.
    """

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: Any = None
        self.wakeup = asyncio.Event()

    async def connect(self) -> None:
        self._conn = await asyncpg.connect(self._dsn, timeout=5)
        await self._conn.add_listener(OUTBOX_CHANNEL, lambda *_: self.wakeup.set())

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
            self._conn = None

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def try_lead(self) -> bool:
        return bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_ID))

    async def pending(self, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to `limit` unpublished events, oldest first: (id, type, CloudEvent JSON)."""
        rows = await self._conn.fetch(
            "SELECT id, type, payload::text AS payload FROM outbox ORDER BY id LIMIT $1", limit
        )
        return [(r["id"], r["type"], r["payload"].encode()) for r in rows]

    async def delete(self, ids: list[int]) -> None:
        await self._conn.execute("DELETE FROM outbox WHERE id = ANY($1::bigint[])", ids)

    async def backlog(self) -> tuple[int, float]:
        """(pending rows, age in seconds of the oldest)."""
        row = await self._conn.fetchrow(
            "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
            " FROM outbox"
        )
        return int(row["n"]), float(row["age"])
