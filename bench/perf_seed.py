"""The users both services are measured with: one shared hash, seeded rows, a token each."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import asyncpg
import bcrypt

from storage.db import asyncpg_dsn

PASSWORD = "correct horse battery"
BCRYPT_ROUNDS = 12


def one_hash() -> str:
    """One cost-12 hash of the common password: every seeded user shares it."""
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


async def seed_warden(database_url: str, hashed: str, count: int) -> list[str]:
    names = [f"bench_u{i}" for i in range(count)]
    await _insert(
        database_url,
        "INSERT INTO users (email, username, hashed_password) VALUES ($1, $2, $3)",
        [(f"{n}@example.com", n, hashed) for n in names],
    )
    return names


async def seed_peer(database_url: str, hashed: str, count: int) -> list[str]:
    emails = [f"bench_u{i}@example.com" for i in range(count)]
    await _insert(
        database_url,
        'INSERT INTO "user" (id, email, hashed_password, is_active, is_superuser, is_verified)'
        " VALUES ($1, $2, $3, true, false, false)",
        [(uuid.uuid4(), e, hashed) for e in emails],
    )
    return emails


async def _insert(database_url: str, statement: str, rows: list[tuple[Any, ...]]) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        await conn.executemany(statement, rows)
    finally:
        await conn.close()


async def log_in_all(url: str, logins: list[str]) -> list[str]:
    """An access token per login, through the service's own login route (form body)."""
    sem = asyncio.Semaphore(8)

    async def one(http: aiohttp.ClientSession, login: str) -> str:
        async with sem:
            form = {"grant_type": "password", "username": login, "password": PASSWORD}
            async with http.post(url, data=form) as response:
                if response.status != 200:
                    raise RuntimeError(f"login {login} at {url}: {response.status}")
                return str((await response.json())["access_token"])

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        return list(await asyncio.gather(*(one(http, login) for login in logins)))
