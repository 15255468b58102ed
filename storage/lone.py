"""Statements that stand alone: one round trip each on a plain asyncpg pool.

The hot paths need no transaction: the read of a user every bearer request makes, the
events-only commit of a login or logout, the audit consumer's insert. Each is a single
statement, atomic by itself in autocommit, and under READ COMMITTED a lone SELECT sees
exactly what the first statement of a transaction would. Going around SQLAlchemy's
transaction (pool pre-ping, BEGIN, the statement, COMMIT) saves three round trips each,
and on a small VM every socket write is a system call that shows in the profile (the
user read: 1,733 → 260 µs of worker CPU, bench/RESULTS.md). Everything else goes through
the unit of work's SQLAlchemy engine (storage.db says which way is for what).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from domain.errors import ServiceUnavailable, UpstreamTimeout

COMMAND_TIMEOUT = 30.0  # seconds a statement may take before asyncpg gives up on it
# The database went away: the link broke or never came, or Postgres is shutting down or
# starting up. Answered as 503, never as a fault of ours (a lone statement retries once).
# A statement that ran out of time is in these classes too (TimeoutError is an OSError, a
# cancelled query an operator intervention): `timed_out` tells it apart, and it comes first.
UNREACHABLE = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)
DATABASE_UNREACHABLE = "The database cannot be reached."
DATABASE_TIMED_OUT = "The database did not answer in time."


def timed_out(exc: BaseException) -> bool:
    """Whether `exc` says a statement ran out of time on a database that was there.

    asyncpg's command timeout (an asyncio TimeoutError, with no errno: an OS-level ETIMEDOUT
    is a dead link), or Postgres cancelling the statement (statement_timeout) or giving up
    on a lock (lock_timeout). A timeout while connecting is not one: see `LoneStatements`.
    """
    if isinstance(exc, TimeoutError):
        return exc.errno is None
    return isinstance(exc, (asyncpg.QueryCanceledError, asyncpg.LockNotAvailableError))


class LoneStatements:
    """An asyncpg pool, opened at its first use on the running loop, at most `max_size`.

    A statement that meets a pooled connection the server dropped is tried once more on
    another. Callers send only statements for which that is safe: reads, and inserts whose
    repeat is harmless (an event carries its id; subscribers de-duplicate on it).
    """

    def __init__(self, dsn: str, max_size: int, command_timeout: float = COMMAND_TIMEOUT) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self._command_timeout = command_timeout
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
            return await self._once(method, query, args)
        except UNREACHABLE:  # a pooled connection the server dropped: once more, on another
            pass
        try:
            return await self._once(method, query, args)
        except UNREACHABLE as exc:
            raise ServiceUnavailable(DATABASE_UNREACHABLE) from exc

    async def _once(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        # Connecting that times out is as unreachable as a refusal; a statement that times
        # out met a database that was there, and is not tried again (it would wait as long).
        async with (self._pool or await self._open()).acquire() as conn:
            try:
                return await getattr(conn, method)(query, *args)
            except Exception as exc:
                if timed_out(exc):
                    raise UpstreamTimeout(DATABASE_TIMED_OUT) from exc
                raise

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
                    command_timeout=self._command_timeout,
                    max_inactive_connection_lifetime=300,
                    reset=_keep,
                )
            return self._pool


async def _keep(_: asyncpg.Connection) -> None:
    """No reset on release: lone statements leave no session state behind (a round trip)."""
