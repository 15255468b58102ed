"""Statements that stand alone: one round trip each on a plain asyncpg pool.

The hot paths need no transaction: the read of a user every bearer request makes, the
events-only commit of a login or logout, the audit consumer's insert. Each is a single
statement, atomic by itself in autocommit, and under READ COMMITTED a lone SELECT sees
exactly what the first statement of a transaction would. Going around SQLAlchemy's
transaction (pool pre-ping, BEGIN, the statement, COMMIT) saves three round trips each,
and on a small VM every socket write is a system call that shows in the profile.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from domain.errors import ServiceUnavailable

# The database went away: the link broke or never came, or Postgres is shutting down or
# starting up. Answered as 503, never as a fault of ours (a lone statement retries once).
UNREACHABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


class LoneStatements:
    """An asyncpg pool, opened at its first use on the running loop, at most `max_size`.

    A statement that meets a pooled connection the server dropped is tried once more on
    another. Callers send only statements for which that is safe: reads, and inserts whose
    repeat is harmless (an event carries its id; subscribers de-duplicate on it).
    """

    def __init__(self, dsn: str, max_size: int) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        record: asyncpg.Record | None = await self._run("fetchrow", query, args)
        return record

    async def execute(self, query: str, *args: Any) -> str:
        status: str = await self._run("execute", query, args)
        return status

    async def _run(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        try:
            return await getattr(self._pool or await self._open(), method)(query, *args)
        except UNREACHABLE:  # a pooled connection the server dropped: once more, on another
            pass
        try:
            return await getattr(self._pool or await self._open(), method)(query, *args)
        except UNREACHABLE as exc:
            raise ServiceUnavailable("The database cannot be reached.") from exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=1,
                    max_size=self._max_size,
                    timeout=5,
                    command_timeout=30,
                    max_inactive_connection_lifetime=300,
                    reset=_keep,
                )
            return self._pool


async def _keep(_: asyncpg.Connection) -> None:
    """No reset on release: lone statements leave no session state behind (a round trip)."""
