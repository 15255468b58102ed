"""The composition root: everything is built here from one Settings object.

The worker, the edge, the CLI and the tests all come through these functions; nothing
connects at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from domain.accounts import Accounts
from domain.auth import Auth, TokenLifetimes
from domain.errors import BearerError
from domain.listing import CursorCodec
from warden.keys import IDEMPOTENCY_FINGERPRINT, IDEMPOTENCY_REPLY, AesGcmSealer, subkey
from warden.security import BcryptPasswordHasher, JwtTokenIssuer
from warden.settings import Settings

if TYPE_CHECKING:
    # The worker's stack is imported where it is built, not here: the edge imports this
    # module for `build_edge` and would otherwise carry SQLAlchemy, redis and FastStream
    # (about 40 MiB of resident memory) without using them.
    import redis.asyncio as aioredis
    from aiohttp import web
    from faststream.rabbit import RabbitBroker
    from sqlalchemy.ext.asyncio import AsyncEngine

    from handlers.idempotency import Idempotency
    from handlers.trust import BrokerUsers
    from storage.lone import LoneStatements

log = structlog.get_logger("warden")


class UtcClock:
    """Clock of the real world."""

    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class Services:
    """The use cases and the adapters they hold, for one process."""

    settings: Settings
    engine: AsyncEngine
    lone: LoneStatements
    redis: aioredis.Redis
    hasher: BcryptPasswordHasher
    auth: Auth
    accounts: Accounts
    cursors: CursorCodec
    idempotency: Idempotency

    async def close(self) -> None:
        await self.engine.dispose()
        await self.lone.close()
        await self.redis.aclose()
        self.hasher.close()


def build_services(settings: Settings) -> Services:
    from handlers.idempotency import Idempotency
    from storage.db import make_engine
    from storage.idempotency import PostgresReplyLedger, RedisIdempotencyStore
    from storage.lone import LoneStatements
    from storage.redis_store import (
        RedisLoginThrottle,
        RedisRegistrationThrottle,
        RedisSessionStore,
        make_redis,
    )
    from storage.uow import SqlAlchemyUnitOfWorkFactory

    engine = make_engine(
        settings.database_url.get_secret_value(), settings.db_pool_size, settings.db_max_overflow
    )
    client = make_redis(settings.redis_url.get_secret_value())
    secret = settings.jwt_secret.get_secret_value()
    hasher = BcryptPasswordHasher(
        settings.bcrypt_rounds, settings.bcrypt_threads, settings.bcrypt_nice
    )
    tokens = JwtTokenIssuer(
        secret,
        settings.jwt_issuer,
        settings.access_token_ttl,
        settings.refresh_token_ttl,
        settings.jwt_algorithm,
        settings.jwt_leeway,
    )
    sessions = RedisSessionStore(client, settings.refresh_token_ttl)
    throttle = RedisLoginThrottle(
        client, settings.login_max_failures, settings.login_ip_max_failures, settings.login_window
    )
    registrations = RedisRegistrationThrottle(
        client, settings.register_ip_max, settings.register_window
    )
    # The bearer check's read of the user skips SQLAlchemy: see storage/uow.py.
    # Hot single statements skip SQLAlchemy's transaction: see storage/lone.py.
    lone = LoneStatements(asyncpg_dsn(settings), settings.db_pool_size)
    uow = SqlAlchemyUnitOfWorkFactory(engine, lone)
    clock = UtcClock()
    lifetimes = TokenLifetimes(settings.access_token_ttl, settings.refresh_token_ttl)
    auth = Auth(uow, hasher, tokens, sessions, throttle, clock, lifetimes)
    master = settings.key_encryption_key.get_secret_value().encode()
    sealer = AesGcmSealer(subkey(master, IDEMPOTENCY_REPLY))
    return Services(
        settings=settings,
        engine=engine,
        lone=lone,
        redis=client,
        hasher=hasher,
        auth=auth,
        accounts=Accounts(uow, hasher, sessions, throttle, registrations, clock),
        cursors=CursorCodec(secret.encode()),
        idempotency=Idempotency(
            RedisIdempotencyStore(client, settings.idempotency_ttl, sealer),
            _caller_of(auth),
            subkey(master, IDEMPOTENCY_FINGERPRINT),
            PostgresReplyLedger(lone, settings.idempotency_ttl, sealer),
        ),
    )


def _caller_of(auth: Auth) -> Callable[[str | None], Awaitable[str]]:
    """Idempotency keys are scoped to the token's user, or one scope for anonymous calls.

    The token must pass the whole bearer check (its session live and its user's, the user
    active), not only its signature: a revoked token is nobody's, so it never reaches the
    replies kept for its user. Its request is worked in the anonymous scope, where a bearer
    operation refuses it as it would without a key.
    """

    async def caller_of(authorization: str | None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "anonymous"
        try:
            principal = await auth.authenticate(authorization)
        except BearerError:
            return "anonymous"
        return f"user:{principal.user.id}"

    return caller_of


def build_broker(settings: Settings, services: Services) -> RabbitBroker:
    """The worker's broker with every subscriber attached (not connected)."""
    from faststream.rabbit import RabbitBroker
    from sqlalchemy import text

    from handlers.app import include_routers
    from handlers.deps import WorkerDeps
    from handlers.events import audit_router
    from storage.audit import PostgresAuditWriter
    from storage.redis_store import RedisRedeliveryCounter

    broker = RabbitBroker(
        settings.amqp_url.get_secret_value(),
        graceful_timeout=15,
        reconnect_interval=1.0,  # back within about a second of the broker's return
        log_level=logging.DEBUG,  # FastStream's own per-message lines; ours are at INFO
    )

    async def postgres() -> None:
        async with services.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def redis() -> None:
        await services.redis.ping()

    users = broker_users(settings)
    deps = WorkerDeps(
        auth=services.auth,
        accounts=services.accounts,
        cursors=services.cursors,
        probes={"postgres": postgres, "redis": redis},
        prefetch=settings.worker_prefetch,
        login_prefetch=settings.worker_login_prefetch,
        edge_user=users.edge,
        idempotency=services.idempotency,
        redeliveries=RedisRedeliveryCounter(services.redis),
    )
    include_routers(broker, deps)

    audit = PostgresAuditWriter(services.lone)

    async def store_event(event: dict[str, object]) -> bool:
        return await audit.store(event)

    broker.include_router(audit_router(store_event, users.warden))
    return broker


def broker_users(settings: Settings) -> BrokerUsers:
    """Warden's own broker user (the worker's URL) and its edge's (the same unless set)."""
    from contract.protocol import broker_user
    from handlers.trust import BrokerUsers

    warden = broker_user(settings.amqp_url.get_secret_value())
    return BrokerUsers(warden=warden, edge=settings.amqp_edge_user or warden)


def asyncpg_dsn(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url.get_secret_value())
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Services]:
    """One worker: subscribers consuming and the outbox relay publishing, until the block ends."""
    from handlers.app import declare_topology
    from handlers.events import OutboxRelay
    from storage.outbox import PostgresOutboxSource

    services = build_services(settings)
    broker = build_broker(settings, services)
    source = PostgresOutboxSource(asyncpg_dsn(settings))
    relay = OutboxRelay(source, broker, broker_users(settings).warden)
    relay_task: asyncio.Task[None] | None = None
    # The worker's heartbeat: while it beats, no other worker takes over its claimed keys.
    heartbeat = asyncio.create_task(services.idempotency.heartbeat(), name="heartbeat")
    try:
        await connect_when_reachable(broker)
        await declare_topology(broker)
        await broker.start()
        relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
        yield services
    finally:
        # Stop taking messages and let the in-flight ones finish (their replies go out and
        # their events land in the outbox), then let the relay publish those, then close.
        await _stop_consuming(broker)
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        relay.stop()
        if relay_task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(15):
                    await relay_task
        await broker.stop()
        await services.close()


async def connect_when_reachable(broker: RabbitBroker) -> None:
    """Connect, waiting for a broker that is not up yet (cancel to give up).

    Refused credentials fail at once: waiting would not mend them. Anything else is waited
    out: besides a refused or reset connection, a port that accepts and closes before the
    AMQP handshake (a broker starting up, a proxy before it) ends aiormq's frame reader with
    a RuntimeError.
    """
    import aiormq

    delay = 0.5
    while True:
        try:
            await broker.connect()
            return
        except aiormq.exceptions.ProbableAuthenticationError:
            raise
        except Exception as exc:
            log.warning("broker unreachable, waiting for it", error=type(exc).__name__)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def _stop_consuming(broker: RabbitBroker) -> None:
    """Cancel every consumer, waiting (up to the graceful timeout) for in-flight messages."""
    with contextlib.suppress(Exception):
        await asyncio.gather(*(sub.stop() for sub in broker.subscribers))


def build_edge(settings: Settings) -> web.Application:
    from web.app import create_app

    return create_app(
        settings.amqp_url.get_secret_value(), settings.rpc_timeout, settings.trusted_proxies
    )
