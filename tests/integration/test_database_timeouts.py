"""A database that is there but does not finish in time is a 504, not "unreachable" (a 503).

Against real Postgres: another connection holds a lock (as a migration or a long transaction
would) and Warden's statement waits on it past either its own command timeout (asyncpg's,
client side) or the server's statement_timeout. A database that cannot be reached, even one
that accepts and never answers, stays a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal
from urllib.parse import urlsplit

import asyncpg
import pytest
from sqlalchemy import text

from domain.errors import ServiceUnavailable, UpstreamTimeout, WardenError
from domain.model import NewUser, User, UserChanges
from storage.db import asyncpg_dsn, make_engine
from storage.lone import LoneStatements
from storage.uow import SqlAlchemyUnitOfWorkFactory
from storage.users import PostgresUserReader
from tests.conftest import unique
from tests.support.proxy import TcpProxy
from warden.settings import Settings

Side = Literal["client", "server"]
SIDES: list[Side] = ["client", "server"]
SHORT = 0.3  # seconds: the statement's time, far below how long the lock is held
LOCKED_FOR = 30.0  # the holder lets go when the test is done, or after this at the latest
HASH = "$2b$04$" + "x" * 53
NEVER = "select pg_sleep(3600)"  # what a connection that is never answered would run


def assert_timed_out(error: WardenError) -> None:
    """The contract's shape of a timeout: 504 upstream_timeout, naming no internals."""
    assert isinstance(error, UpstreamTimeout), repr(error)
    assert error.as_error() == {
        "status": 504,
        "code": "upstream_timeout",
        "title": "Upstream timeout",
        "detail": "The database did not answer in time.",
    }


@contextlib.asynccontextmanager
async def holding(settings: Settings, lock: str, *args: object) -> AsyncIterator[None]:
    """Another connection, in a transaction that holds `lock` until the block ends."""
    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url.get_secret_value()), timeout=10)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '10s'")  # never stuck behind a test
            await conn.execute(f"SET LOCAL idle_in_transaction_session_timeout = '{LOCKED_FOR}s'")
            await conn.execute(lock, *args)
            yield
            await conn.execute("SELECT 1")  # still there: the lock was held all along
    finally:
        await conn.close()


async def a_user(settings: Settings) -> User:
    engine = make_engine(settings.database_url.get_secret_value(), 1, 0)
    try:
        async with SqlAlchemyUnitOfWorkFactory(engine)() as uow:
            name = unique()
            user = await uow.users.add(NewUser(f"{name}@example.com", name, HASH))
            await uow.commit()
        return user
    finally:
        await engine.dispose()


def lone_statements(settings: Settings, side: Side) -> LoneStatements:
    dsn = asyncpg_dsn(settings.database_url.get_secret_value())
    assert "?" not in dsn
    if side == "server":  # Postgres cancels the statement (asyncpg passes it as a setting)
        return LoneStatements(f"{dsn}?statement_timeout={int(SHORT * 1000)}", 2)
    return LoneStatements(dsn, 2, command_timeout=SHORT)


@pytest.mark.parametrize("side", SIDES)
async def test_a_read_kept_waiting_by_a_lock_past_its_timeout_is_a_504(
    settings: Settings, database: str, side: Side
) -> None:
    user = await a_user(settings)
    lone = lone_statements(settings, side)
    try:
        reader = PostgresUserReader(lone)
        assert await reader.get(user.id) == user  # the pool is open and the database there
        async with holding(settings, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE"):
            with pytest.raises(WardenError) as raised:
                await reader.get(user.id)
        assert_timed_out(raised.value)
        assert await reader.get(user.id) == user  # and the pool goes on serving
    finally:
        await lone.close()


@pytest.mark.parametrize("side", SIDES)
async def test_a_unit_of_work_kept_waiting_by_a_row_lock_is_a_504_and_changes_nothing(
    settings: Settings, database: str, side: Side
) -> None:
    user = await a_user(settings)
    command_timeout = SHORT if side == "client" else 30.0
    engine = make_engine(database, 2, 0, command_timeout=command_timeout)
    lone = LoneStatements(asyncpg_dsn(settings.database_url.get_secret_value()), 2)
    units = SqlAlchemyUnitOfWorkFactory(engine, lone)

    async def rename() -> None:
        async with units() as uow:
            if side == "server":
                conn = await uow.connection()
                await conn.execute(text(f"SET LOCAL statement_timeout = '{SHORT}s'"))
            found = await uow.users.get(user.id)
            assert found is not None
            await uow.users.update(found, UserChanges(full_name="never stored"))
            await uow.commit()

    try:
        async with holding(settings, "SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user.id):
            with pytest.raises(WardenError) as raised:
                await rename()
        assert_timed_out(raised.value)
        async with units() as uow:
            assert await uow.users.get(user.id) == user  # nothing was written
    finally:
        await engine.dispose()
        await lone.close()


async def test_a_database_that_accepts_but_never_answers_is_unreachable_not_slow(
    settings: Settings,
) -> None:
    """Connecting that times out is a 503, however the statement's own time is counted."""
    target = urlsplit(asyncpg_dsn(settings.database_url.get_secret_value()))
    async with TcpProxy(target.hostname or "127.0.0.1", target.port or 5432) as proxy:
        proxy.cut("hang")
        netloc = f"{target.netloc.rpartition('@')[0]}@127.0.0.1:{proxy.port}"
        dsn = target._replace(netloc=netloc).geturl()
        lone = LoneStatements(dsn, 1, command_timeout=SHORT)
        engine = make_engine(
            settings.database_url.get_secret_value().replace(target.netloc, netloc),
            1,
            0,
            command_timeout=SHORT,
        )

        async def read_alone() -> None:
            await lone.fetchrow(NEVER)

        async def read_in_a_unit() -> None:
            async with SqlAlchemyUnitOfWorkFactory(engine)() as uow:
                await (await uow.connection()).execute(text(NEVER))

        try:
            outcomes = await asyncio.gather(read_alone(), read_in_a_unit(), return_exceptions=True)
        finally:
            await engine.dispose()
            await lone.close()
    for outcome in outcomes:
        assert isinstance(outcome, ServiceUnavailable), repr(outcome)
        assert outcome.as_error()["status"] == 503
