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
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import structlog

from domain.accounts import Accounts
from domain.auth import Auth, TokenLifetimes
from domain.errors import BearerError
from domain.listing import CursorCodec
from domain.mail import Mailbox, MailPolicy
from domain.mfa import RecoveryCodes, SecondFactor
from domain.ports import (
    Clock,
    LoginThrottle,
    MfaChallenges,
    PasswordHasher,
    RegistrationThrottle,
    SessionStore,
    TokenIssuer,
    Totp,
    UnitOfWorkFactory,
)
from domain.recovery import Recovery
from domain.sessions import Sessions
from warden.keys import (
    IDEMPOTENCY_FINGERPRINT,
    IDEMPOTENCY_REPLY,
    MAIL_TOKEN,
    RECOVERY_CODES,
    REFRESH_TOKEN,
    SIGNING_KEY,
    TOTP_SECRET,
    AesGcmSealer,
    subkey,
)
from warden.security import BcryptPasswordHasher, JwtTokenIssuer, SharedSecret
from warden.settings import Settings
from warden.totp import PyotpTotp

if TYPE_CHECKING:
    # The worker's stack is imported where it is built, not here: the edge imports this
    # module for `build_edge` and would otherwise carry SQLAlchemy, redis and FastStream
    # (about 40 MiB of resident memory) without using them.
    import redis.asyncio as aioredis
    from aiohttp import web
    from faststream.rabbit import RabbitBroker
    from sqlalchemy.ext.asyncio import AsyncEngine

    from handlers.background import Background
    from handlers.idempotency import Idempotency, IdempotencyStore, ReplyLedger
    from handlers.trust import BrokerUsers
    from storage.lone import LoneStatements
    from storage.signing_keys import PostgresSigningKeyStore
    from storage.uow import SqlAlchemyUnitOfWorkFactory
    from warden.signing import KeyRing, KeyRingFollower

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
    challenges: MfaChallenges
    totp: Totp
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

        return SqlAlchemyUnitOfWorkFactory(
            self.engine, self.lone, mail_sealer=mail_sealer(self._settings)
        )

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

    @functools.cached_property
    def key_ring(self) -> KeyRing | SharedSecret:
        """What access tokens are signed with: the store's keys, or WARDEN_JWT_SECRET (HS*)."""
        s = self._settings
        if not s.asymmetric:
            return SharedSecret(s.jwt_secret.get_secret_value(), s.jwt_algorithm)
        from warden.signing import KeyRing

        return KeyRing()

    def closing(self, close: Callable[[], Awaitable[object]]) -> None:
        """Close `close`'s resource with the rest."""
        self._made.push_async_callback(close)

    async def close(self) -> None:
        await self._made.aclose()


def key_store(settings: Settings) -> PostgresSigningKeyStore:
    """The signing key store of CONTRACT §6, its private halves sealed under the KEK."""
    from datetime import timedelta

    from storage.db import asyncpg_dsn
    from storage.signing_keys import Policy, PostgresSigningKeyStore
    from warden.signing import make_key

    s = settings
    master = s.key_encryption_key.get_secret_value().encode()
    policy = Policy(
        algorithm=s.jwt_algorithm,
        publish_ahead=timedelta(seconds=s.jwks_max_age),
        verify_after=timedelta(seconds=s.access_token_ttl + s.jwt_leeway),
        rotate_every=timedelta(days=s.key_rotation_days),
    )
    sealer = AesGcmSealer(subkey(master, SIGNING_KEY))
    return PostgresSigningKeyStore(
        asyncpg_dsn(s.database_url.get_secret_value()), sealer, make_key, policy
    )


@dataclass
class Services:
    """The use cases and the adapters they hold, for one process."""

    settings: Settings
    auth: Auth
    accounts: Accounts
    mfa: SecondFactor
    recovery: Recovery
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
    from storage.redis_mfa import RedisMfaChallenges
    from storage.redis_store import (
        RedisLoginThrottle,
        RedisRegistrationThrottle,
        RedisSessionStore,
    )

    made = Resources(settings)
    uow = overrides.get("uow") or made.uow
    hasher = overrides.get("hasher") or made.hasher
    tokens = overrides.get("tokens") or token_issuer(settings, made.key_ring)
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
    challenges = overrides.get("challenges") or RedisMfaChallenges(made.redis)
    clock = overrides.get("clock") or UtcClock()
    lifetimes = TokenLifetimes(
        settings.access_token_ttl, settings.refresh_token_ttl, settings.refresh_reuse_interval
    )
    auth = Auth(
        uow,
        hasher,
        tokens,
        sessions,
        throttle,
        clock,
        lifetimes,
        challenges,
        settings.require_verified_email,
    )
    mailbox = Mailbox(clock, MailPolicy(settings.email_token_ttl, settings.mail_max_per_hour))
    return Services(
        settings=settings,
        auth=auth,
        accounts=Accounts(uow, hasher, sessions, throttle, registrations, clock, mailbox),
        mfa=_second_factor(settings, auth, uow, hasher, throttle, challenges, clock, overrides),
        recovery=Recovery(uow, hasher, sessions, clock, mailbox),
        sessions=Sessions(uow, sessions, clock),
        hasher=hasher,
        cursors=CursorCodec(settings.jwt_secret.get_secret_value().encode()),
        idempotency=_idempotency(settings, made, auth, overrides),
        resources=made,
    )


def _second_factor(
    settings: Settings,
    auth: Auth,
    uow: UnitOfWorkFactory,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    challenges: MfaChallenges,
    clock: Clock,
    overrides: Overrides,
) -> SecondFactor:
    """TOTP secrets sealed and recovery codes keyed under subkeys of the master key."""
    master = settings.key_encryption_key.get_secret_value().encode()
    return SecondFactor(
        uow,
        auth,
        hasher,
        throttle,
        challenges,
        overrides.get("totp") or PyotpTotp(),
        AesGcmSealer(subkey(master, TOTP_SECRET)),
        RecoveryCodes(subkey(master, RECOVERY_CODES)),
        clock,
        settings.mfa_issuer,
    )


def mail_sealer(settings: Settings) -> AesGcmSealer:
    """Seals the token a mail job carries from the outbox to the mailer (storage.mail)."""
    master = settings.key_encryption_key.get_secret_value().encode()
    return AesGcmSealer(subkey(master, MAIL_TOKEN))


def token_issuer(settings: Settings, keys: KeyRing | SharedSecret) -> JwtTokenIssuer:
    s = settings
    if s.asymmetric:  # refresh tokens: Warden's own, under a key derived from the KEK
        master = s.key_encryption_key.get_secret_value().encode()
        refresh = SharedSecret(subkey(master, REFRESH_TOKEN), "HS256")
    else:
        refresh = SharedSecret(s.jwt_secret.get_secret_value(), s.jwt_algorithm)
    return JwtTokenIssuer(  # HS*: `keys` is a SharedSecret of the same secret
        keys,
        refresh,
        s.jwt_issuer,
        s.access_token_ttl,
        s.refresh_token_ttl,
        s.jwt_audience,
        s.jwt_leeway,
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


def build_broker(
    settings: Settings, services: Services, background: Background | None = None
) -> RabbitBroker:
    """The worker's broker with every subscriber attached (not connected); `background` runs
    the work that replies do not wait for (drained by running_worker)."""
    from faststream.rabbit import RabbitBroker

    from handlers.app import include_routers
    from handlers.background import Background
    from handlers.deps import WorkerDeps
    from handlers.events import audit_router
    from handlers.nodes import failover_connection, node_of
    from storage.audit import PostgresAuditWriter
    from storage.redis_store import RedisRedeliveryCounter

    nodes = settings.amqp_urls
    broker = RabbitBroker(
        nodes[0],
        graceful_timeout=15,
        reconnect_interval=1.0,  # back within about a second of the broker's (or a node's) return
        log_level=logging.DEBUG,  # FastStream's own per-message lines; ours are at INFO
    )
    # aio-pika's robust connection, but moving to the next node at each reconnection
    # (handlers.nodes); FastStream offers no argument for the class, so it is set here.
    broker._connection_kwargs["connection_class"] = failover_connection(nodes)

    made = services.resources
    users = broker_users(settings)
    deps = WorkerDeps(
        auth=services.auth,
        accounts=services.accounts,
        mfa=services.mfa,
        recovery=services.recovery,
        sessions=services.sessions,
        cursors=services.cursors,
        probes={"postgres": made.uow.ping, "redis": made.redis.ping},
        prefetch=settings.worker_prefetch,
        login_prefetch=settings.worker_login_prefetch,
        edge_user=users.edge,
        units=made.uow,
        idempotency=services.idempotency,
        jwks=made.key_ring.jwks,
        node=lambda: node_of(broker),
        background=background or Background(),
        rpc_queue_type=settings.rpc_queue_type,
        redeliveries=RedisRedeliveryCounter(made.redis),
    )
    include_routers(broker, deps)

    audit = PostgresAuditWriter(made.lone)

    async def store_event(event: dict[str, object]) -> bool:
        return await audit.store(event)

    broker.include_router(audit_router(store_event, users.warden))
    mail = _mailer(settings, broker, made, users.warden)
    broker.include_router(mail)
    return broker


def _mailer(
    settings: Settings,
    broker: RabbitBroker,
    made: Resources,
    warden_user: str,
) -> Any:
    """The mail consumer: its ledger, sender (SMTP, or the log in dev), renderer and retries."""
    from handlers.mail_render import Branding, MailRenderer
    from handlers.mailer import Mailer, RetryPolicy, mailer_router
    from handlers.queues import MAIL_RETRY_QUEUE
    from storage.db import asyncpg_dsn
    from storage.mail import PostgresMailLedger
    from storage.smtp import LogMailSender, SmtpMailSender, SmtpTarget

    s = settings
    ledger = PostgresMailLedger(asyncpg_dsn(s.database_url.get_secret_value()), s.mail_prefetch)
    made.closing(ledger.close)
    url = s.smtp_url.get_secret_value()
    sender = SmtpMailSender(SmtpTarget.parse(url), s.smtp_timeout) if url else LogMailSender()
    renderer = MailRenderer(Branding(s.product_name, s.public_url, s.mail_from))
    mailer = Mailer(ledger, sender, renderer, mail_sealer(s))

    async def retry(body: bytes, headers: dict[str, Any], delay_ms: int) -> None:
        await broker.publish(
            body,
            routing_key=MAIL_RETRY_QUEUE.name,
            content_type="application/json",
            headers=headers,
            expiration=delay_ms / 1000,
            user_id=warden_user,  # kept through the dead-lettering back to warden.mail
            persist=True,
            timeout=10,
        )

    policy = RetryPolicy(s.mail_max_attempts, s.mail_retry_base, s.mail_retry_max)
    return mailer_router(mailer, retry, policy, warden_user, s.mail_prefetch)


def broker_users(settings: Settings) -> BrokerUsers:
    """Warden's own broker user (the worker's URL) and its edge's (the same unless set)."""
    from contract.protocol import broker_user
    from handlers.trust import BrokerUsers

    warden = broker_user(settings.amqp_urls[0])
    return BrokerUsers(warden=warden, edge=settings.amqp_edge_user or warden)


@contextlib.asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[Services]:
    """One worker: subscribers consuming and the outbox relay publishing, until the block ends."""
    from handlers.background import Background
    from handlers.events import OutboxRelay
    from handlers.nodes import node_of
    from handlers.topology import declare_topology, wait_until_queues_match
    from storage.db import asyncpg_dsn
    from storage.outbox import PostgresOutboxSource

    services = build_services(settings)
    try:
        follower = await follow_signing_keys(settings, services)
    except BaseException:
        await services.close()
        raise
    background = Background()
    broker = build_broker(settings, services, background)
    source = PostgresOutboxSource(asyncpg_dsn(settings.database_url.get_secret_value()))
    relay = OutboxRelay(source, broker, broker_users(settings).warden)
    relay_task: asyncio.Task[None] | None = None
    # The worker's heartbeat: while it beats, no other worker takes over its claimed keys.
    heartbeat = asyncio.create_task(services.idempotency.heartbeat(), name="heartbeat")
    try:
        await connect_when_reachable(broker)
        # A queue of another kind (a deployment from before quorum queues) is logged and
        # waited out, never consumed from and never a crash (handlers.topology).
        await wait_until_queues_match(broker)
        await declare_topology(broker)
        await broker.start()
        log.info("worker connected", node=node_of(broker))
        relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
        yield services
    finally:
        # Stop taking messages and let the in-flight ones finish (their replies go out and
        # their events land in the outbox), then let the relay publish those, then close.
        await _stop_consuming(broker)
        await background.drain(10)  # what the last replies started, before the relay stops
        heartbeat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await heartbeat
        relay.stop()
        if relay_task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(15):
                    await relay_task
        await broker.stop()
        if follower is not None:
            await follower.stop()
        await services.close()


async def follow_signing_keys(settings: Settings, services: Services) -> KeyRingFollower | None:
    """Load the signing keys (the first one made on the first start) and follow the store."""
    from warden.signing import KeyRing, KeyRingFollower

    ring = services.resources.key_ring
    if not isinstance(ring, KeyRing):
        return None  # HS*: a shared secret, nothing stored
    follower = KeyRingFollower(key_store(settings), ring)
    await follower.start()
    return follower


async def connect_when_reachable(broker: RabbitBroker) -> None:
    """Connect, waiting for a broker that is not up yet (cancel to give up).

    Refused credentials fail at once: waiting would not mend them. Anything else is waited
    out: besides a refused or reset connection, a port that accepts and closes before the
    AMQP handshake (a broker starting up, a proxy before it) ends aiormq's frame reader with
    a RuntimeError.
    """
    import aiormq

    from handlers.nodes import next_first_node, node_of

    delay = 0.5
    while True:
        try:
            await broker.connect()
            return
        except aiormq.exceptions.ProbableAuthenticationError:
            raise
        except Exception as exc:
            log.warning(
                "broker unreachable, waiting for it", error=type(exc).__name__, node=node_of(broker)
            )
        next_first_node(broker)  # the next attempt goes to the next node
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


async def _stop_consuming(broker: RabbitBroker) -> None:
    """Cancel every consumer, waiting (up to the graceful timeout) for in-flight messages."""
    with contextlib.suppress(Exception):
        await asyncio.gather(*(sub.stop() for sub in broker.subscribers))


def build_edge(settings: Settings) -> web.Application:
    from web.app import authorization_server_metadata, create_app

    return create_app(
        settings.amqp_urls,
        settings.rpc_timeout,
        settings.trusted_proxies,
        settings.jwks_max_age,
        authorization_server_metadata(settings.public_url, settings.jwt_issuer),
    )
