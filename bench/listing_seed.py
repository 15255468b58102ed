"""Seeding the listing benchmark: many users by COPY, sharing one precomputed bcrypt hash.

`created_at` is spread over three years in registration order with hours of jitter;
mixed-case usernames, 80 % with a full name, 5 % inactive, 0.1 % superusers. A big load
drops the secondary indexes first and rebuilds them from their own definitions afterwards,
two at a time, which is much faster than maintaining them row by row.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from domain.model import NewUser
from warden.bootstrap import build_services
from warden.settings import Settings

PASSWORD = "bench password 1"
ADMIN = "bench_admin"


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


COLUMNS = (
    "email",
    "username",
    "hashed_password",
    "full_name",
    "is_active",
    "is_superuser",
    "created_at",
    "updated_at",
)
FIRST = words(
    "ada alan alice amir ana ben carla chen dana david elena emma farid grace hana hugo "
    "ines ivan james jin julia kai kofi lara leo lina lucas maria mei nadia noah olga omar "
    "paula pedro priya rosa sam sara sofia tariq tomas uma victor wei yara yusuf zoe"
)
LAST = words(
    "adams ahmed alvarez bauer becker brown chen cohen costa cruz diaz dubois evans fischer "
    "garcia gomez gonzalez gray green hall hansen harris hoffmann huang ito jackson jansen "
    "johnson jones kaur khan kim king klein kowalski kumar lee lewis li lopez martin "
    "martinez meyer miller moore morales muller murphy nguyen novak ortiz park patel perez "
    "petrov popescu quinn ramos reyes richter rivera roberts rodriguez rossi ruiz sanchez "
    "santos sato schmidt schneider schulz scott silva singh smith sousa suzuki tanaka "
    "taylor thomas torres turner wagner walker wang weber white williams wilson wong wright "
    "xu yamamoto yang young zhang zhou"
)
DOMAINS = ("example.com", "example.org", "mail.example", "corp.example", "uni.example")
EPOCH = datetime(2022, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 3 * 365 * 24 * 3600
JITTER_SECONDS = 6 * 3600
COPY_BATCH = 100_000
BULK_THRESHOLD = 50_000  # above this many new rows, rebuild the indexes instead of updating


def people(
    start: int, end: int, total: int, hashed: str, rng: random.Random
) -> Iterator[tuple[Any, ...]]:
    """Rows start..end-1 of a seed of `total`; the number makes usernames and emails unique.

    `created_at` grows with the row number, with a few hours of jitter, as it does when users
    register over time and ids are handed out at insert (3 years for `total` users).
    """
    for i in range(start, end):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        username = f"{first}.{last}{i}"
        if rng.random() < 0.3:
            username = username.title()
        offset = i / total * SPAN_SECONDS + rng.uniform(-JITTER_SECONDS, JITTER_SECONDS)
        created = EPOCH + timedelta(seconds=max(0.0, offset))
        full_name = f"{first.title()} {last.title()}" if rng.random() < 0.8 else None
        email = f"{first}.{last}{i}@{rng.choice(DOMAINS)}"
        active, superuser = rng.random() >= 0.05, rng.random() < 0.001
        yield (email, username, hashed, full_name, active, superuser, created, created)


async def seed(
    dsn: str, start: int, end: int, total: int, hashed: str, rng: random.Random
) -> float:
    """Add users start..end-1 by COPY; returns the seconds it took."""
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        bulk = end - start >= BULK_THRESHOLD
        indexes = await _drop_secondary_indexes(conn) if bulk else []
        rows = people(start, end, total, hashed, rng)
        while batch := list(itertools.islice(rows, COPY_BATCH)):
            await conn.copy_records_to_table("users", records=batch, columns=COLUMNS)
        if indexes:
            # The trigram index takes longest: build it beside the others, one core each.
            trigram = [i for i in indexes if " gin " in i[1].lower()]
            others = [i for i in indexes if i not in trigram]
            await asyncio.gather(_build(dsn, trigram), _build(dsn, others))
        await conn.execute("VACUUM (ANALYZE) users")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _drop_secondary_indexes(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """Drop every index but the primary key; returns how to make each again, its statistics
    targets (which a definition does not carry) included."""
    rows = await conn.fetch(
        "SELECT i.indexname, i.indexdef || coalesce(string_agg(format("
        "  '; ALTER INDEX %I ALTER COLUMN %s SET STATISTICS %s',"
        "  i.indexname, a.attnum, a.attstattarget), '') FILTER (WHERE a.attnum IS NOT NULL), '')"
        "  AS make "
        "FROM pg_indexes i LEFT JOIN pg_attribute a "
        "  ON a.attrelid = format('%I', i.indexname)::regclass AND a.attstattarget > 0 "
        "WHERE i.tablename = 'users' AND i.indexname <> 'users_pkey' "
        "GROUP BY i.indexname, i.indexdef"
    )
    for row in rows:
        await conn.execute(f'DROP INDEX "{row["indexname"]}"')
    return [(row["indexname"], row["make"]) for row in rows]


async def _build(dsn: str, indexes: list[tuple[str, str]]) -> None:
    """Recreate `indexes` from their own definitions, on a connection of their own."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET maintenance_work_mem = '512MB'")
        for name, definition in indexes:
            started = time.perf_counter()
            await conn.execute(definition)
            print(f"  rebuilt {name} in {time.perf_counter() - started:.1f}s", flush=True)
    finally:
        await conn.close()


async def create_admin(settings: Settings, hashed: str) -> None:
    services = build_services(settings)
    try:
        new = NewUser(f"{ADMIN}@example.com", ADMIN, hashed, "Bench Admin", is_superuser=True)
        await services.accounts.create(new)
    finally:
        await services.close()
