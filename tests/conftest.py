"""Session fixtures: real Postgres, RabbitMQ and Redis of this session's own, a worker, an edge."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import pytest
import pytest_asyncio
import structlog
from aiohttp.test_utils import TestServer

from contract.protocol import broker_user
from storage.db import asyncpg_dsn, drop_database
from tests.support.amqp import AmqpCaller
from tests.support.events import EventTap
from tests.support.infra import Urls, base_urls, own_redis_db, own_vhost, with_database
from warden.bootstrap import build_edge, running_worker
from warden.cli import migrate
from warden.settings import Settings
from web.app import RPC_CLIENT

pytest_plugins = ["tests.support.deadline"]

# The worker and the edge run in this process, logging through structlog's defaults (no
# warden.logs.configure). Those render an exception with rich, every local of every frame,
# synchronously: on a busy machine seconds with the event loop stopped, which a readiness
# check's 2.5 s budget did not survive. A plain traceback instead, the rest as it was.
structlog.configure(
    processors=[
        *structlog.get_config()["processors"][:-1],
        structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        ),
    ]
)

PASSWORD = "correct horse battery"
# What a user is on the wire (the contract's user object): never a hash.
USER_FIELDS = {
    "id",
    "email",
    "username",
    "full_name",
    "is_active",
    "is_superuser",
    "created_at",
    "updated_at",
    "is_verified",
}


def unique(prefix: str = "u") -> str:
    """A name no other test uses: tests make their own data instead of truncating tables."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def fresh_ip() -> str:
    """A documentation-range address (RFC 5737), so each test has its own login-failure count."""
    return f"198.51.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest.fixture(scope="session")
def urls() -> Iterator[Urls]:
    with base_urls() as base, own_vhost(base.amqp) as amqp, own_redis_db(base.redis) as rds:
        database = with_database(base.database, f"warden_test_{uuid.uuid4().hex[:10]}")
        yield Urls(database, amqp, rds)


def make_settings(urls: Urls, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": urls.database,
        "amqp_url": urls.amqp,
        "redis_url": urls.redis,
        "env": "test",
        "bcrypt_rounds": 4,
        "metrics_port": 0,
        "rpc_timeout": 5,
        "login_max_failures": 5,
        "login_ip_max_failures": 20,
        "login_window": 60,
        # Many tests register from one address (the edge's peer, or none): only the test of
        # the limit itself, with a worker of its own, reaches one.
        "register_ip_max": 1_000_000,
        "trusted_proxies": "127.0.0.1",
        "log_format": "console",
    }
    return Settings(**(values | overrides))


@contextlib.asynccontextmanager
async def own_world(urls: Urls, name: str) -> AsyncIterator[Urls]:
    """A migrated database and a vhost of their own (the session's Redis), dropped after."""
    database = with_database(urls.database, f"warden_{name}_{uuid.uuid4().hex[:10]}")
    with own_vhost(urls.amqp) as amqp:
        own = Urls(database, amqp, urls.redis)
        await migrate(make_settings(own))
        await user_ids_of_its_own(database)
        try:
            yield own
        finally:
            await drop_database(database)


async def user_ids_of_its_own(database: str) -> None:
    """Start a world's user ids at a random point far above the session database's.

    A world shares the session's Redis, where sessions and login-failure counts are keyed by
    user id: were its user 3 also the session database's user 3, it would list that user's
    sessions and be locked out by that user's failed logins.
    """
    start = random.randrange(10**6, 10**12)
    conn = await asyncpg.connect(asyncpg_dsn(database), timeout=10)
    try:
        await conn.execute(f"ALTER TABLE users ALTER COLUMN id RESTART WITH {start}")
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def settings(urls: Urls) -> Settings:
    return make_settings(urls)


@pytest.fixture(scope="session")
def warden_user(urls: Urls) -> str:
    """The broker user Warden logs in as: its events and its edge's requests name it."""
    return broker_user(urls.amqp)


@pytest_asyncio.fixture(scope="session")
async def database(settings: Settings) -> AsyncIterator[str]:
    """This session's database, built by the migrations (never create_all)."""
    url = settings.database_url.get_secret_value()
    await migrate(settings)
    yield url
    await drop_database(url)


@pytest_asyncio.fixture(scope="session")
async def worker(settings: Settings, database: str) -> AsyncIterator[Any]:
    async with running_worker(settings) as services:
        yield services


@pytest_asyncio.fixture(scope="session")
async def edge_url(settings: Settings, worker: Any) -> AsyncIterator[str]:
    server = TestServer(build_edge(settings), host="127.0.0.1")
    await server.start_server()
    assert server.app is not None
    await server.app[RPC_CLIENT].wait_connected(10)
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest_asyncio.fixture
async def http(edge_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client of the running edge, from an address of this test's own."""
    headers = {"X-Forwarded-For": fresh_ip()}
    async with aiohttp.ClientSession(edge_url, headers=headers) as session:
        yield session


@pytest_asyncio.fixture(scope="session")
async def amqp(settings: Settings, worker: Any) -> AsyncIterator[AmqpCaller]:
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    channel = await connection.channel()
    caller = AmqpCaller(channel)
    await caller.start()
    yield caller
    await connection.close()


@contextlib.asynccontextmanager
async def tapping(amqp: AmqpCaller, routing_key: str) -> AsyncIterator[EventTap]:
    """The events Warden publishes under `routing_key` while the block runs."""
    tap = EventTap()
    exchange = await amqp.channel.get_exchange("warden.events")
    queue = await amqp.channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key=routing_key)
    tag = await queue.consume(tap.on_message, no_ack=True)
    yield tap
    await queue.cancel(tag)
    await queue.delete(if_unused=False, if_empty=False)


@pytest_asyncio.fixture(scope="module")
async def tap(amqp: AmqpCaller) -> AsyncIterator[EventTap]:
    """Every `user.*` event Warden publishes while the module's tests run."""
    async with tapping(amqp, "user.#") as tap:
        yield tap


@pytest_asyncio.fixture(scope="module")
async def revocations(amqp: AmqpCaller) -> AsyncIterator[EventTap]:
    """Every `session.revoked` Warden publishes while the module's tests run."""
    async with tapping(amqp, "session.revoked") as tap:
        yield tap
