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
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import bcrypt

from bench.listing_plans import explain
from bench.listing_report import report
from bench.listing_seed import PASSWORD, create_admin, seed
from bench.listing_timing import Result, deep_cursor, log_in, scenarios, server_times, time_rounds
from storage.db import asyncpg_dsn, drop_database
from tests.support.infra import Urls, own_redis_db, own_vhost, with_database
from tests.support.processes import WARDEN, Process, free_port, until_serving, warden_env
from warden.cli import migrate
from warden.settings import Settings

BENCH_DB = "warden_bench"
STOP_WITHIN = 30  # seconds from SIGTERM before a process of ours is killed


@dataclass
class Bench:
    settings: Settings
    urls: Urls  # the same services as `settings`: the benchmark's own database, vhost, Redis db
    requests: int
    results: list[Result] = field(default_factory=list)
    rng: random.Random = field(default_factory=lambda: random.Random(20260101))


# --- the service under test ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_warden(bench: Bench, log_path: Path) -> AsyncIterator[str]:
    """`warden worker` and `warden edge` as subprocesses; yields the edge's base URL."""
    port = free_port()
    env = warden_env(
        bench.urls,
        WARDEN_JWT_SECRET=bench.settings.jwt_secret.get_secret_value(),
        WARDEN_HTTP_PORT=str(port),
        WARDEN_METRICS_PORT="0",
        WARDEN_LOG_FORMAT="json",
        WARDEN_LOG_LEVEL="info",
    )
    # Both write to one log: server_times() reads the two sides of each request from it.
    procs = [Process.spawn(part, [str(WARDEN), part], env, log_path) for part in ("worker", "edge")]
    try:
        url = f"http://127.0.0.1:{port}"
        await until_serving(f"{url}/health/ready", procs[-1])
        yield url
    finally:
        await asyncio.gather(*(asyncio.to_thread(proc.stop, STOP_WITHIN) for proc in procs))


# --- measuring ------------------------------------------------------------------------------


async def measure(bench: Bench, size: int, log_path: Path) -> None:
    print(f"  load average before: {_load()}", flush=True)
    async with (
        running_warden(bench, log_path) as url,
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


# --- main -----------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    base = Settings()
    with (
        own_vhost(base.amqp_url.get_secret_value()) as amqp,
        own_redis_db(base.redis_url.get_secret_value()) as redis_url,
    ):
        urls = Urls(with_database(base.database_url.get_secret_value(), BENCH_DB), amqp, redis_url)
        settings = base.model_copy(
            update={
                "database_url": type(base.database_url)(urls.database),
                "amqp_url": type(base.amqp_url)(urls.amqp),
                "redis_url": type(base.redis_url)(urls.redis),
            }
        )
        await drop_database(urls.database)
        try:
            await _run_sizes(Bench(settings, urls, args.requests), args.sizes, args.log)
        finally:
            if not args.keep:
                await drop_database(urls.database)


async def _run_sizes(bench: Bench, sizes: list[int], log_path: Path) -> None:
    await migrate(bench.settings)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(bench.settings.bcrypt_rounds)).decode()
    await create_admin(bench.settings, hashed)
    dsn = asyncpg_dsn(bench.urls.database)
    have = 1
    for size in sorted(sizes):
        took = await seed(dsn, have, size, max(sizes), hashed, bench.rng)
        print(f"seeded {size - have:,} users (now {size:,}) in {took:.1f}s", flush=True)
        have = size
        await measure(bench, size, log_path)
    report(bench.results)


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
