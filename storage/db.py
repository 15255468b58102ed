"""How Warden reaches Postgres: the engine here, and two more ways, each for its own reason.

- The SQLAlchemy engine (`make_engine`): every unit of work's transaction (storage.uow),
  on a pool that pre-pings each checkout, so a connection the server dropped is replaced
  before a transaction starts on it. Statements that vary with their input (the listing's
  filters and keyset) are built with SQLAlchemy Core; driver errors are translated once.
- LoneStatements (storage.lone): a plain asyncpg pool for the single statements of the hot
  paths (a bearer check's read of its user, a login's, an events-only commit, the audit
  consumer's insert). Measured: a user read went from 1,733 to 260 µs of worker CPU and
  from four round trips to one (bench/RESULTS.md); a dropped connection is retried there.
- The outbox relay's own connection (storage.outbox.PostgresOutboxSource): the session
  that holds the relay leader's advisory lock and LISTENs for commits; a pooled connection
  cannot keep either.

A statement is written once whichever of the first two runs it (storage.users, outbox).
Besides these, `warden migrate` connects to the server's `postgres` database to create
Warden's (below), and Alembic runs the migrations on an engine of its own.
"""

from __future__ import annotations

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from storage.lone import COMMAND_TIMEOUT


def make_engine(
    url: str, pool_size: int = 20, max_overflow: int = 10, command_timeout: float = COMMAND_TIMEOUT
) -> AsyncEngine:
    """The worker's pool: `pool_size` kept connections plus `max_overflow` on demand."""
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=True,
        hide_parameters=True,  # SQL errors must never carry a password hash into a log
        pool_recycle=1800,
        connect_args={"command_timeout": command_timeout, "timeout": 5},
    )


def asyncpg_dsn(url: str, database: str | None = None) -> str:
    """The DSN asyncpg takes for `url` (SQLAlchemy's form); `database` names another one."""
    target = make_url(url).set(drivername="postgresql")
    if database is not None:
        target = target.set(database=database)
    return target.render_as_string(hide_password=False)


async def create_database_if_missing(url: str) -> bool:
    """Create the database named in `url` unless it exists; True when it was created."""
    name = make_url(url).database
    if not name:
        raise ValueError("the database URL names no database")
    conn = await asyncpg.connect(asyncpg_dsn(url, database="postgres"), timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        # Another `warden migrate` may win the race: Postgres says so with a duplicate database
        # or, when both CREATE DATABASE statements overlap, a unique violation in its catalog.
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False
        return True
    finally:
        await conn.close()


async def drop_database(url: str) -> None:
    """Drop the database named in `url` (tests use it to clean up their own databases)."""
    conn = await asyncpg.connect(asyncpg_dsn(url, database="postgres"), timeout=10)
    try:
        quoted = '"' + (make_url(url).database or "").replace('"', '""') + '"'
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await conn.close()
