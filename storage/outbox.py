"""The transactional outbox: events are rows written in the change's own transaction.

One statement writes them (_APPEND: the rows and the relay's wake-up together), whether in
the unit of work's transaction or, for a unit that wrote nothing else, alone (storage.lone).
The relay reads them back on a connection of its own (PostgresOutboxSource): a session
that holds the leader's advisory lock and LISTENs, which a pooled connection cannot do.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

import asyncpg
import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from contract.events import cloudevent
from domain.events import Event
from storage.lone import LoneStatements

OUTBOX_CHANNEL = "warden_outbox"


class Executes(Protocol):
    """Runs one statement by itself: storage.lone's pool, or an asyncpg connection."""

    async def execute(self, query: str, *args: Any) -> str: ...


class SqlAlchemyEventOutbox:
    """EventOutbox that inserts its events when the unit of work commits.

    `request_id` is the request the unit of work was opened for (None outside one, as for
    the CLI): each event carries it as its CloudEvents `requestid`.
    """

    def __init__(self, request_id: str | None = None) -> None:
        self.pending: list[Event] = []
        self._request_id = request_id

    def add(self, event: Event) -> None:
        self.pending.append(event)

    async def flush(self, conn: AsyncConnection) -> None:
        """Insert the pending events in the unit's transaction; the relay wakes at its commit
        (a notification is delivered only if the transaction commits)."""
        if self.pending:
            await conn.exec_driver_sql(_APPEND, self._arguments())
            self.pending.clear()

    async def flush_alone(self, lone: LoneStatements | Executes) -> None:
        """Insert the pending events as one statement of their own, the wake-up with them.

        For a unit of work that changed nothing else (a login, a logout): the statement is
        its own transaction, so the events and the wake-up commit together, in one round trip.
        """
        if self.pending:
            await lone.execute(_APPEND, *self._arguments())
            self.pending.clear()

    def _arguments(self) -> tuple[list[str], list[str], list[int | None], list[str], str]:
        """_APPEND's parameters: the pending events column by column, in order, then the channel."""
        events, request_id = self.pending, self._request_id
        return (
            [e.id for e in events],
            [e.type for e in events],
            [e.user_id for e in events],
            [orjson.dumps(cloudevent(e, request_id)).decode() for e in events],
            OUTBOX_CHANNEL,
        )


# The rows keep the order the events were added in (the ids the relay publishes by), and
# the channel is notified once, if any row was added.
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

    Holds one dedicated asyncpg connection, apart from both pools (storage.db): its
    session-level advisory lock makes this process the only publisher, and LISTEN on it
    wakes the relay when a commit adds rows. Both are state of one session that must live
    as long as the relay leads; a pooled connection is reset and handed to others.
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
