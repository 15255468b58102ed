"""Benchmark of the user listing through a running edge and worker, at 1,000 and 1,000,000 users.

Usage, from the project root with the local Postgres, RabbitMQ and Redis running:

    uv run python -m bench.listing                            # 1,000 then 1,000,000 users
    uv run python -m bench.listing --sizes 1000 100000 --requests 100 --keep

What it does:

1. creates its own database (`warden_bench` on the WARDEN_DATABASE_URL server; an old one is
   dropped first), its own RabbitMQ vhost and takes an empty Redis db, then runs the same
   migrations as `warden migrate`;
2. seeds users with COPY (asyncpg `copy_records_to_table`) and ONE precomputed bcrypt hash:
   `created_at` spread over three years in registration order with hours of jitter,
   mixed-case usernames, 80 % with a full name, 5 % inactive, 0.1 % superusers. A big load
   drops the secondary indexes first and rebuilds them from their own definitions
   (`pg_indexes`) afterwards, two at a time, which is much faster than maintaining them row
   by row (a million users in 50-130 s on two shared cores);
3. for each size, starts `warden worker` and `warden edge` as subprocesses, logs a superuser in
   and times sequential HTTP requests through the edge (`--requests` timed ones per scenario
   after a warm-up), keep-alive, one at a time, the scenarios interleaved round by round so
   each meets the same background load;
4. prints a Markdown table of p50/p99 per scenario and size, the split of the p50 between
   the client, the edge's own and the worker's own time (from their log lines, found by
   X-Request-ID) and Postgres's execution time, and the `EXPLAIN (ANALYZE,
   BUFFERS)` of each scenario's query as storage/users.py builds it (compiled with literal
   values), plus whether the worker's prepared statement keeps that plan;
5. drops the database, the vhost and the Redis db (`--keep` keeps the database).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import bcrypt
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from contract.wire import ListUsersQuery
from domain.listing import CursorCodec, Sort, UserKey, UserQuery
from domain.model import NewUser
from storage.db import drop_database
from storage.users import SqlAlchemyUserRepository
from tests.support.infra import own_redis_db, own_vhost, with_database
from warden.bootstrap import asyncpg_dsn, build_services
from warden.cli import migrate
from warden.settings import Settings

BENCH_DB = "warden_bench"
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
WARM_UP = 20
DEEP_PAGES = 100  # pages of 100 rows walked to reach the deep page: 10,000 rows deep
DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class Scenario:
    name: str
    params: dict[str, str]


@dataclass
class Result:
    size: int
    scenario: str
    timings: list[float]
    plan: str = ""
    sql: str = ""
    prepared_plan_same: bool | None = None
    rows: int = 0
    tag: str = ""
    params: dict[str, str] = field(default_factory=dict)
    worker_ms: list[float] = field(default_factory=list)
    edge_ms: list[float] = field(default_factory=list)

    def percentile(self, p: float, of: list[float] | None = None) -> float:
        ordered = sorted(self.timings if of is None else of)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


@dataclass
class Bench:
    settings: Settings
    requests: int
    results: list[Result] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(20260101))


# --- seeding --------------------------------------------------------------------------------


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


# --- the service under test ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(settings: Settings, port: int) -> dict[str, str]:
    return os.environ | {
        "WARDEN_DATABASE_URL": settings.database_url.get_secret_value(),
        "WARDEN_AMQP_URL": settings.amqp_url.get_secret_value(),
        "WARDEN_REDIS_URL": settings.redis_url.get_secret_value(),
        "WARDEN_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "WARDEN_HTTP_PORT": str(port),
        "WARDEN_METRICS_PORT": "0",
        "WARDEN_LOG_FORMAT": "json",
        "WARDEN_LOG_LEVEL": "info",
    }


@contextlib.asynccontextmanager
async def running_warden(settings: Settings, log_path: Path) -> AsyncIterator[str]:
    """`warden worker` and `warden edge` as subprocesses; yields the edge's base URL."""
    port = free_port()
    env = service_env(settings, port)
    warden = str(Path(sys.executable).with_name("warden"))
    with log_path.open("ab") as log:
        procs = [
            await asyncio.create_subprocess_exec(warden, part, env=env, stdout=log, stderr=log)
            for part in ("worker", "edge")
        ]
        try:
            url = f"http://127.0.0.1:{port}"
            await _until_ready(url)
            yield url
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()


async def _until_ready(url: str) -> None:
    async with aiohttp.ClientSession(url) as http, asyncio.timeout(60):
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get("/health/ready") as r:
                    if r.status == 200:
                        return
            await asyncio.sleep(0.2)


async def create_admin(settings: Settings, hashed: str) -> None:
    services = build_services(settings)
    try:
        new = NewUser(f"{ADMIN}@example.com", ADMIN, hashed, "Bench Admin", is_superuser=True)
        await services.accounts.create(new)
    finally:
        await services.close()


async def log_in(http: aiohttp.ClientSession) -> dict[str, str]:
    body = {"username": ADMIN, "password": PASSWORD}
    async with http.post("/api/v1/auth/login", json=body) as r:
        r.raise_for_status()
        return {"Authorization": f"Bearer {(await r.json())['access_token']}"}


# --- measuring ------------------------------------------------------------------------------


async def get_page(
    http: aiohttp.ClientSession, auth: dict[str, str], params: dict[str, str], rid: str = ""
) -> dict[str, Any]:
    headers = auth | ({"X-Request-ID": rid} if rid else {})
    async with http.get("/api/v1/users", params=params, headers=headers) as r:
        if r.status != 200:
            raise RuntimeError(f"{params}: {r.status} {await r.text()}")
        page: dict[str, Any] = await r.json()
        return page


async def time_rounds(
    http: aiohttp.ClientSession, auth: dict[str, str], results: list[Result], n: int
) -> None:
    """`n` rounds of one request per scenario, after a warm-up: interleaved, so that every
    scenario meets the same background load, and sequential, one request in flight.

    Each timed request carries X-Request-ID `tag-i`, so the edge's and the worker's own log
    lines about it can be found afterwards (`server_times`)."""
    for result in results:
        for _ in range(WARM_UP):
            result.rows = len((await get_page(http, auth, result.params))["items"])
    for i in range(n):
        for result in results:
            started = time.perf_counter()
            await get_page(http, auth, result.params, f"{result.tag}-{i}")
            result.timings.append((time.perf_counter() - started) * 1000)


def server_times(results: list[Result], log_path: Path) -> None:
    """Fill each result's edge and worker durations from their JSON log lines."""
    by_tag = {r.tag: r for r in results}
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        tag = str(entry.get("request_id", "")).rpartition("-")[0]
        result = by_tag.get(tag)
        if result is None or "duration_ms" not in entry:
            continue
        if entry.get("event") == "message handled":
            result.worker_ms.append(float(entry["duration_ms"]))
        elif entry.get("event") == "request":
            result.edge_ms.append(float(entry["duration_ms"]))


async def deep_cursor(
    http: aiohttp.ClientSession, auth: dict[str, str], size: int
) -> tuple[str, int]:
    """The cursor 10,000 rows into the default order (less for a small table), by walking."""
    pages = min(DEEP_PAGES, (size - 100) // 100)
    cursor = None
    for _ in range(pages):
        params = {"limit": "100"} | ({"cursor": cursor} if cursor else {})
        cursor = (await get_page(http, auth, params))["next_cursor"]
    assert cursor is not None
    return cursor, pages * 100


def scenarios(deep: str) -> list[Scenario]:
    return [
        Scenario("first page", {"limit": "20"}),
        Scenario("deep page, by cursor", {"limit": "20", "cursor": deep}),
        Scenario("first page, limit=100", {"limit": "100"}),
        Scenario("deep page, by cursor, limit=100", {"limit": "100", "cursor": deep}),
        Scenario("q=garcia (~1 % match)", {"q": "garcia"}),
        Scenario("q=garcia777 (a handful match)", {"q": "garcia777"}),
        Scenario("is_active=false, sort=username", {"is_active": "false", "sort": "username"}),
        Scenario("is_superuser=true, sort=-email", {"is_superuser": "true", "sort": "-email"}),
        Scenario(
            "q=garcia, is_active=true, sort=email",
            {"q": "garcia", "is_active": "true", "sort": "email"},
        ),
    ]


async def measure(bench: Bench, size: int, log_path: Path) -> None:
    print(f"  load average before: {_load()}", flush=True)
    async with (
        running_warden(bench.settings, log_path) as url,
        aiohttp.ClientSession(url) as http,
    ):
        auth = await log_in(http)
        deep, depth = await deep_cursor(http, auth, size)
        print(f"  the deep page starts {depth:,} rows in (walked with limit=100)", flush=True)
        results = [
            Result(size, scenario.name, [], tag=f"bench{size}s{number}", params=scenario.params)
            for number, scenario in enumerate(scenarios(deep))
        ]
        await time_rounds(http, auth, results, bench.requests)
    for result in results:
        await explain(bench.settings, result.params, result)
        print(
            f"  {size:>9,}  {result.scenario:<45} p50 {result.percentile(50):6.2f} ms"
            f"  p99 {result.percentile(99):6.2f} ms  rows {result.rows}",
            flush=True,
        )
    print(f"  load average after: {_load()}", flush=True)
    server_times(results, log_path)
    bench.results.extend(results)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- plans ----------------------------------------------------------------------------------


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


# --- reporting ------------------------------------------------------------------------------


def report(bench: Bench) -> None:
    sizes = sorted({r.size for r in bench.results})
    names = list(dict.fromkeys(r.scenario for r in bench.results))
    header = " | ".join(f"{s:,} users p50 / p99 (ms)" for s in sizes)
    print(f"\n| scenario | {header} |")
    print("|---|" + "---|" * len(sizes))
    for name in names:
        cells = []
        for size in sizes:
            r = next((r for r in bench.results if r.size == size and r.scenario == name), None)
            cells.append("n/a" if r is None else f"{r.percentile(50):.2f} / {r.percentile(99):.2f}")
        print(f"| {name} | {' | '.join(cells)} |")
    print(
        f"\n| at {sizes[-1]:,} users, p50 (ms) | client, through the edge | edge's own "
        "| worker's own | Postgres execution (EXPLAIN ANALYZE) |\n|---|---|---|---|---|"
    )
    for r in (r for r in bench.results if r.size == sizes[-1]):
        execution = r.plan.rpartition("Execution Time: ")[2].strip()
        print(
            f"| {r.scenario} | {r.percentile(50):.2f} | {r.percentile(50, r.edge_ms):.2f} "
            f"| {r.percentile(50, r.worker_ms):.2f} | {execution} |"
        )
    for r in bench.results:
        if r.size != sizes[-1]:
            continue
        kept = "yes" if r.prepared_plan_same else "NO: the server switched to a generic plan"
        print(f"\n#### {r.scenario} at {r.size:,} users\n")
        print(f"Prepared statement keeps this plan: {kept}\n")
        print(f"```sql\n{r.sql}\n```\n\n```\n{r.plan}\n```")


# --- main -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    base = Settings()
    with (
        own_vhost(base.amqp_url.get_secret_value()) as amqp,
        own_redis_db(base.redis_url.get_secret_value()) as redis_url,
    ):
        database = with_database(base.database_url.get_secret_value(), BENCH_DB)
        settings = base.model_copy(
            update={
                "database_url": type(base.database_url)(database),
                "amqp_url": type(base.amqp_url)(amqp),
                "redis_url": type(base.redis_url)(redis_url),
            }
        )
        await drop_database(database)
        try:
            await _run_sizes(Bench(settings, args.requests), args.sizes, args.log)
        finally:
            if not args.keep:
                await drop_database(database)


async def _run_sizes(bench: Bench, sizes: list[int], log_path: Path) -> None:
    await migrate(bench.settings)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(bench.settings.bcrypt_rounds)).decode()
    await create_admin(bench.settings, hashed)
    dsn = asyncpg_dsn(bench.settings)
    have = 1
    for size in sorted(sizes):
        took = await seed(dsn, have, size, max(sizes), hashed, bench.rng)
        print(f"seeded {size - have:,} users (now {size:,}) in {took:.1f}s", flush=True)
        have = size
        await measure(bench, size, log_path)
    report(bench)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.listing", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 1_000_000])
    parser.add_argument("--requests", type=int, default=200, help="timed requests per scenario")
    parser.add_argument("--keep", action="store_true", help="keep the warden_bench database")
    parser.add_argument(
        "--log", type=Path, default=Path("/tmp/warden-bench.log"), help="worker and edge logs"
    )
    args = parser.parse_args()
    args.log.write_bytes(b"")
    import uvloop

    uvloop.run(run(args))


if __name__ == "__main__":
    main()
