"""The migrations on databases of their own: the stairway, and `warden migrate` run twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest_asyncio
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from storage.db import asyncpg_dsn, create_database_if_missing, drop_database
from tests.conftest import make_settings, unique
from tests.support.infra import Urls, with_database
from tests.support.waiting import eventually
from warden.cli import migrate
from warden.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TABLES = {
    "users",
    "outbox",
    "audit_log",
    "idempotent_replies",
    "signing_keys",
    "user_totp",
    "mfa_recovery_codes",
    "email_tokens",
    "mail_jobs",
}
MIGRATION_LOCK_ID = 0x5741_524D  # migrations/env.py's lock
LOCK_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND objid = $1 AND database = (SELECT oid FROM pg_database"
    " WHERE datname = current_database()))"
)


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def revisions(config: Config) -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(config)
    return [r.revision for r in reversed(list(script.walk_revisions("base", "heads")))]


# Looks in the same round trip as the lock is granted, as quickly as the server can.
TAKE_LOCK_AND_LOOK = f"""
DO $$
DECLARE seen text;
BEGIN
  PERFORM pg_advisory_lock({MIGRATION_LOCK_ID});
  IF EXISTS (SELECT 1 FROM pg_class WHERE relname = 'alembic_version'
             AND relnamespace = 'public'::regnamespace) THEN
    EXECUTE 'SELECT version_num FROM alembic_version' INTO seen;
  END IF;
  PERFORM set_config('warden.seen_version', coalesce(seen, 'none'), false);
END $$
"""


async def version_of(conn: asyncpg.Connection) -> str | None:
    # As Alembic itself asks (pg_class under this statement's snapshot, unlike to_regclass).
    exists = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = 'alembic_version'"
        " AND relnamespace = 'public'::regnamespace)"
    )
    if not exists:
        return None
    version: str = await conn.fetchval("SELECT version_num FROM alembic_version")
    return version


async def schema_of(url: str) -> tuple[str | None, set[str]]:
    """The revision the database is at, and its tables (alembic_version aside)."""
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = {r["tablename"] for r in rows} - {"alembic_version"}
        return await version_of(conn), tables
    finally:
        await conn.close()


@pytest_asyncio.fixture
async def fresh_url(urls: Urls) -> AsyncIterator[str]:
    """The URL of a database of this test's own, which does not exist yet; dropped afterwards."""
    url = with_database(urls.database, unique("warden_mig_"))
    yield url
    await drop_database(url)


async def test_every_revision_upgrades_downgrades_and_upgrades_again(fresh_url: str) -> None:
    assert await create_database_if_missing(fresh_url) is True
    config = alembic_config(fresh_url)
    steps = revisions(config)
    assert steps, "no migrations found"
    previous: str | None = None
    for revision in steps:
        # Alembic's env.py runs its own event loop: keep it off this one.
        await asyncio.to_thread(command.upgrade, config, revision)
        at_revision = await schema_of(fresh_url)
        assert at_revision[0] == revision
        await asyncio.to_thread(command.downgrade, config, "-1")
        assert (await schema_of(fresh_url))[0] == previous
        await asyncio.to_thread(command.upgrade, config, revision)
        assert await schema_of(fresh_url) == at_revision
        previous = revision
    assert (await schema_of(fresh_url))[1] == TABLES


async def test_downgrading_to_base_leaves_no_table_behind(fresh_url: str) -> None:
    await create_database_if_missing(fresh_url)
    config = alembic_config(fresh_url)
    await asyncio.to_thread(command.upgrade, config, "head")
    await asyncio.to_thread(command.downgrade, config, "base")
    assert await schema_of(fresh_url) == (None, set())


async def test_warden_migrate_creates_the_database_and_is_safe_to_run_twice(
    urls: Urls, fresh_url: str
) -> None:
    settings: Settings = make_settings(urls, database_url=fresh_url)
    head = revisions(alembic_config(fresh_url))[-1]
    await migrate(settings)
    assert await schema_of(fresh_url) == (head, TABLES)
    await migrate(settings)
    assert await schema_of(fresh_url) == (head, TABLES)
    assert await create_database_if_missing(fresh_url) is False


async def test_of_concurrent_creations_of_one_database_exactly_one_creates_it(
    fresh_url: str,
) -> None:
    created = await asyncio.gather(*(create_database_if_missing(fresh_url) for _ in range(4)))
    assert sorted(created) == [False, False, False, True]


async def test_two_concurrent_migrates_both_succeed(urls: Urls, fresh_url: str) -> None:
    settings = make_settings(urls, database_url=fresh_url)
    head = revisions(alembic_config(fresh_url))[-1]
    await asyncio.gather(migrate(settings), migrate(settings))
    assert await schema_of(fresh_url) == (head, TABLES)


async def test_the_next_holder_of_the_migration_lock_sees_the_finished_migration(
    fresh_url: str,
) -> None:
    """What another `warden migrate` process sees when the lock it waited for is released."""
    await create_database_if_missing(fresh_url)
    config = alembic_config(fresh_url)
    head = revisions(config)[-1]
    observer = await asyncpg.connect(asyncpg_dsn(fresh_url), timeout=10)
    try:
        upgrade = asyncio.create_task(asyncio.to_thread(command.upgrade, config, "head"))

        async def upgrade_holds_the_lock() -> bool:
            return bool(await observer.fetchval(LOCK_HELD, MIGRATION_LOCK_ID))

        await eventually(upgrade_holds_the_lock, 30)
        async with asyncio.timeout(30):
            await observer.execute(TAKE_LOCK_AND_LOOK)
        version = await observer.fetchval("SELECT current_setting('warden.seen_version')")
        await observer.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    finally:
        await observer.close()
    await upgrade
    assert version == head
