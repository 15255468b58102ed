"""The transactional outbox: events are rows written in the change's own transaction."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg
import orjson
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from contract.events import cloudevent
from domain.events import Event
from storage.lone import LoneStatements
from storage.tables import outbox

OUTBOX_CHANNEL = "warden_outbox"


class SqlAlchemyEventOutbox:
    """EventOutbox that inserts its events when the unit of work commits."""

    def __init__(self) -> None:
        self.pending: list[Event] = []

    def add(self, event: Event) -> None:
        self.pending.append(event)

    async def flush(self, conn: AsyncConnection) -> None:
        """Insert the pending events in the unit's transaction."""
        if not self.pending:
            return
        await conn.execute(outbox.insert(), self._rows())
        # Wakes the relay at commit (NOTIFY is delivered only if the transaction commits).
        await conn.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))
        self.pending.clear()

    async def flush_alone(self, lone: LoneStatements) -> None:
        """Insert the pending events as one statement of their own, the NOTIFY with them.

        For a unit of work that changed nothing else (a login, a logout): the statement is
        its own transaction, so the events and the wake-up commit together, in one round trip.
        """
        if not self.pending:
            return
        rows = self._rows()
        await lone.execute(
            _APPEND,
            [r["event_id"] for r in rows],
            [r["type"] for r in rows],
            [r["user_id"] for r in rows],
            [orjson.dumps(r["payload"]).decode() for r in rows],
            OUTBOX_CHANNEL,
        )
        self.pending.clear()

    def _rows(self) -> list[dict[str, Any]]:
        request_id = structlog.contextvars.get_contextvars().get("request_id")
        return [
            {
                "event_id": e.id,
                "type": e.type,
                "user_id": e.user_id,
                "payload": cloudevent(e, request_id),
            }
            for e in self.pending
        ]


_APPEND = """
WITH added AS (
    INSERT INTO outbox (event_id, type, user_id, payload)
    SELECT e, t, u, p::jsonb
    FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[]) WITH ORDINALITY
        AS rows (e, t, u, p, n)
    ORDER BY n
    RETURNING 1
)
SELECT pg_notify($5, '') FROM (SELECT 1 FROM added LIMIT 1) AS any_added
"""


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
