"""The composition root: everything is built here from one Settings object.

The worker, the edge, the CLI and the tests all come through these functions; nothing
connects at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypedDict, Unpack

import structlog

from domain.accounts import Accounts
from domain.auth import Auth, TokenLifetimes
from domain.errors import BearerError
from domain.listing import CursorCodec
from domain.ports import (
    Clock,
    LoginThrottle,
    PasswordHasher,
    RegistrationThrottle,
    SessionStore,
    TokenIssuer,
    UnitOfWorkFactory,
)
from domain.sessions import Sessions
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

    from handlers.idempotency import Idempotency, IdempotencyStore, ReplyLedger
    from handlers.trust import BrokerUsers
    from storage.lone import LoneStatements
    from storage.uow import SqlAlchemyUnitOfWorkFactory

log = structlog.get_logger("warden")


class UtcClock:
    """Clock of the real world."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class Overrides(TypedDict, total=False):
    """Adapters given by name instead of built from the settings (the unit tests' fakes)."""

    uow: UnitOfWorkFactory
    hasher: PasswordHasher
    tokens: TokenIssuer
    sessions: SessionStore
    throttle: LoginThrottle
    registrations: RegistrationThrottle
    clock: Clock
    idempotency_store: IdempotencyStore
    reply_ledger: ReplyLedger


class Resources:
    """What the adapters built from the settings hold open, each made at its first use.

    Making one connects nothing: the engine, the asyncpg pool and the Redis client connect at
    their first statement or command, bcrypt's threads start at the first hash. `close`
    closes what was made and nothing else: an adapter given instead is its giver's to close.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._made = contextlib.AsyncExitStack()

    @functools.cached_property
    def engine(self) -> AsyncEngine:
        from storage.db import make_engine

        s = self._settings
        engine = make_engine(s.database_url.get_secret_value(), s.db_pool_size, s.db_max_overflow)
        self._made.push_async_callback(engine.dispose)
        return engine

    @functools.cached_property
    def lone(self) -> LoneStatements:
        """The asyncpg pool of the hot statements that skip SQLAlchemy (storage/lone.py)."""
        from storage.db import asyncpg_dsn
        from storage.lone import LoneStatements

        s = self._settings
        lone = LoneStatements(asyncpg_dsn(s.database_url.get_secret_value()), s.db_pool_size)
        self._made.push_async_callback(lone.close)
        return lone

    @functools.cached_property
    def uow(self) -> SqlAlchemyUnitOfWorkFactory:
        """The units of work, and the readiness probe of the pool they take connections from."""
        from storage.uow import SqlAlchemyUnitOfWorkFactory

        return SqlAlchemyUnitOfWorkFactory(self.engine, self.lone)

    @functools.cached_property
    def redis(self) -> aioredis.Redis:
        from storage.redis_store import make_redis

        client = make_redis(self._settings.redis_url.get_secret_value())
        self._made.push_async_callback(client.aclose)
        return client

    @functools.cached_property
    def hasher(self) -> BcryptPasswordHasher:
        s = self._settings
        hasher = BcryptPasswordHasher(s.bcrypt_rounds, s.bcrypt_threads, s.bcrypt_nice)
        self._made.callback(hasher.close)
        return hasher

    async def close(self) -> None:
        await self._made.aclose()


@dataclass
class Services:
    """The use cases and the adapters they hold, for one process."""

    settings: Settings
    auth: Auth
    accounts: Accounts
    sessions: Sessions
    hasher: PasswordHasher
    cursors: CursorCodec
    idempotency: Idempotency
    resources: Resources

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy pool, for tools and tests that look into the database."""
        return self.resources.engine

    @property
    def redis(self) -> aioredis.Redis:
        """The Redis client, for tools and tests that look into Redis."""
        return self.resources.redis

    async def close(self) -> None:
        """Close what was built for these services (not the adapters given to them)."""
        await self.resources.close()


def build_services(settings: Settings, **overrides: Unpack[Overrides]) -> Services:
    """The use cases, on adapters built from `settings` but for those given by name.

    Nothing connects here: pools connect at their first use. Nothing is made that no adapter
    built here needs: services on a fake unit of work make no engine. (An adapter is never
    falsy, so `or` takes the one given whenever there is one.)
    """
    from storage.redis_store import (
        RedisLoginThrottle,
        RedisRegistrationThrottle,
        RedisSessionStore,
    )

    made = Resources(settings)
    uow = overrides.get("uow") or made.uow
    hasher = overrides.get("hasher") or made.hasher
    tokens = overrides.get("tokens") or _tokens(settings)
    sessions = overrides.get("sessions") or RedisSessionStore(
        made.redis, settings.refresh_token_ttl, settings.access_token_ttl
    )
    throttle = overrides.get("throttle") or RedisLoginThrottle(
        made.redis,
        settings.login_max_failures,
        settings.login_ip_max_failures,
        settings.login_window,
    )
    registrations = overrides.get("registrations") or RedisRegistrationThrottle(
        made.redis, settings.register_ip_max, settings.register_window
    )
    clock = overrides.get("clock") or UtcClock()
    lifetimes = TokenLifetimes(
        settings.access_token_ttl, settings.refresh_token_ttl, settings.refresh_reuse_interval
    )
    auth = Auth(uow, hasher, tokens, sessions, throttle, clock, lifetimes)
    return Services(
        settings=settings,
        auth=auth,
        accounts=Accounts(uow, hasher, sessions, throttle, registrations, clock),
        sessions=Sessions(uow, sessions, clock),
        hasher=hasher,
        cursors=CursorCodec(settings.jwt_secret.get_secret_value().encode()),
        idempotency=_idempotency(settings, made, auth, overrides),
        resources=made,
    )


def _tokens(settings: Settings) -> JwtTokenIssuer:
    return JwtTokenIssuer(
        settings.jwt_secret.get_secret_value(),
        settings.jwt_issuer,
        settings.access_token_ttl,
        settings.refresh_token_ttl,
        settings.jwt_algorithm,
        settings.jwt_leeway,
    )


def _idempotency(
    settings: Settings, made: Resources, auth: Auth, overrides: Overrides
) -> Idempotency:
    """Claims and replies in Redis; a change's reply also in its own transaction (the ledger)."""
    from handlers.idempotency import Idempotency
    from storage.idempotency import PostgresReplyLedger, RedisIdempotencyStore

    master = settings.key_encryption_key.get_secret_value().encode()
    sealer = AesGcmSealer(subkey(master, IDEMPOTENCY_REPLY))
    ttl = settings.idempotency_ttl
    store = overrides.get("idempotency_store") or RedisIdempotencyStore(made.redis, ttl, sealer)
    ledger = overrides.get("reply_ledger") or PostgresReplyLedger(made.lone, ttl, sealer)
    fingerprints = subkey(master, IDEMPOTENCY_FINGERPRINT)
    return Idempotency(store, _caller_of(auth), fingerprints, ledger)


def _caller_of(auth: Auth) -> Callable[[str | None], Awaitable[str]]:
    """Idempotency keys are scoped to the token's user, or one scope for anonymous calls.

    The token must pass the whole bearer check (its session live and its user's, the user
    active), not only its signature: a revoked token is nobody's, so it never reaches the
    replies kept for its user. Its request is worked in the anonymous scope, where a bearer
    operation refuses it as it would without a key. So is a request with no bearer header.
    """

    async def caller_of(authorization: str | None) -> str:
        try:
            principal = await auth.authenticate(authorization)
        except BearerError:
            return "anonymous"
        return f"user:{principal.user.id}"

    return caller_of


def build_broker(settings: Settings, services: Services) -> RabbitBroker:
    """The worker's broker with every subscriber attached (not connected)."""
    from faststream.rabbit import RabbitBroker

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

    made = services.resources
    users = broker_users(settings)
    deps = WorkerDeps(
        auth=services.auth,
        accounts=services.accounts,
        sessions=services.sessions,
        cursors=services.cursors,
        probes={"postgres": made.uow.ping, "redis": made.redis.ping},
        prefetch=settings.worker_prefetch,
        login_prefetch=settings.worker_login_prefetch,
        edge_user=users.edge,
        units=made.uow,
        idempotency=services.idempotency,
        redeliveries=RedisRedeliveryCounter(made.redis),
    )
    include_routers(broker, deps)

    audit = PostgresAuditWriter(made.lone)

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


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Services]:
    """One worker: subscribers consuming and the outbox relay publishing, until the block ends."""
    from handlers.app import declare_topology
    from handlers.events import OutboxRelay
    from storage.db import asyncpg_dsn
    from storage.outbox import PostgresOutboxSource

    services = build_services(settings)
    broker = build_broker(settings, services)
    source = PostgresOutboxSource(asyncpg_dsn(settings.database_url.get_secret_value()))
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
