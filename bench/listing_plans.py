"""The plan of each scenario's query: built as the worker builds it, run under EXPLAIN.

Each statement is the one storage/users.py builds for the scenario's HTTP parameters
(through the same steps as the `warden.users.list` handler, cursor included), compiled with
literal values; and whether the worker's prepared statement keeps that plan once Postgres
may switch it to a generic one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from bench.listing_timing import Result
from contract.wire import ListUsersQuery
from domain.listing import CursorCodec, Sort, UserKey, UserQuery
from storage.users import SqlAlchemyUserRepository
from warden.bootstrap import build_services
from warden.settings import Settings

DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


class Recording:
    """Passes statements to a real connection and keeps them, to compile what was run."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.statements: list[Any] = []

    async def execute(self, statement: Any, *args: Any) -> Any:
        self.statements.append(statement)
        return await self.conn.execute(statement, *args)


def user_query(settings: Settings, params: dict[str, str]) -> UserQuery:
    """The query the worker builds for these HTTP parameters (the same steps as the handler)."""
    b = ListUsersQuery.model_validate(params)
    query = UserQuery(b.limit, Sort.parse(b.sort), b.q or None, b.is_active, b.is_superuser)
    if b.cursor:
        codec = CursorCodec(settings.jwt_secret.get_secret_value().encode())
        value, last_id = codec.decode(b.cursor, query.fingerprint())
        query = UserQuery(**(query.__dict__ | {"after": UserKey(value, last_id)}))
    return query


async def explain(settings: Settings, params: dict[str, str], result: Result) -> None:
    services = build_services(settings)
    try:
        async with services.engine.connect() as conn:
            recording = Recording(conn)
            await SqlAlchemyUserRepository(recording).list(user_query(settings, params))  # type: ignore[arg-type]
            statement = recording.statements[-1]
            literal = str(
                statement.compile(dialect=DIALECT, compile_kwargs={"literal_binds": True})
            )
            raw = await conn.get_raw_connection()
            driver: asyncpg.Connection = raw.driver_connection
            plan = await _plan(driver, literal, analyze=True)
            result.sql, result.plan = literal, plan
            result.prepared_plan_same = await _prepared_keeps_plan(driver, statement, literal)
    finally:
        await services.close()


async def _plan(conn: asyncpg.Connection, sql: str, analyze: bool) -> str:
    options = "ANALYZE, BUFFERS" if analyze else "COSTS OFF"
    rows = await conn.fetch(f"EXPLAIN ({options}) {sql}")
    return "\n".join(r[0] for r in rows)


async def _prepared_keeps_plan(conn: asyncpg.Connection, statement: Any, literal: str) -> bool:
    """Whether the statement, prepared as the worker's driver prepares it, keeps the plan chosen
    for the literal values once the server may switch to a generic plan (from the sixth run)."""
    compiled = statement.compile(dialect=DIALECT)
    args = ", ".join(_sql_literal(compiled.params[name]) for name in compiled.positiontup)
    await conn.execute(f"PREPARE bench_plan AS {compiled.string}")
    try:
        for _ in range(5):
            await conn.fetch(f"EXECUTE bench_plan({args})")
        cached = await conn.fetch(f"EXPLAIN (COSTS OFF) EXECUTE bench_plan({args})")
    finally:
        await conn.execute("DEALLOCATE bench_plan")
    fresh = await _plan(conn, literal, analyze=False)
    return _shape("\n".join(r[0] for r in cached)) == _shape(fresh)


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    return "'" + str(value).replace("'", "''") + "'"


def _shape(plan: str) -> list[str]:
    """The plan's nodes (with their index), without conditions, which differ as $n/literals."""
    lines = plan.splitlines()
    return [line.strip() for line in lines if "->" in line or not line.startswith(" ")]
