"""The unit of work: one Postgres transaction over users, the outbox and the audit log.

The transaction opens at the first statement that needs it, not on entry. A read of one
user that comes before anything else (the whole of a bearer check, the start of a login)
goes out as a lone statement (storage.lone): under READ COMMITTED it sees what a
transaction's first statement would, without the pool checkout, pre-ping, BEGIN and
ROLLBACK round trips. Whatever follows it (a lock, a write, another read after those)
runs in the transaction. A unit that wrote nothing but events (a login, a logout) commits
them as one lone statement too.

A unit is opened for a request (SqlAlchemyUnitOfWorkFactory.for_request): its events carry
the request's id, and, for an idempotent change (`recording`), the unit writes the reply of
the request in the change's own transaction, rendered from the user the unit changed (as
cosmicpython's unit of work tracks the aggregates it has seen): the domain never names it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.errors import ServiceUnavailable, UpstreamTimeout
from domain.listing import AuditPage, AuditQuery, UserPage, UserQuery
from domain.model import EmailToken, Mail, NewUser, User, UserChanges
from storage.audit import SqlAlchemyAuditLog
from storage.idempotency import ReplyRecorder, Sealer
from storage.lone import (
    DATABASE_TIMED_OUT,
    DATABASE_UNREACHABLE,
    UNREACHABLE,
    LoneStatements,
    timed_out,
)
from storage.mail import SqlAlchemyEmailTokens, SqlAlchemyMailQueue
from storage.mfa import SqlAlchemyMfaRepository
from storage.outbox import SqlAlchemyEventOutbox
from storage.users import PostgresUserReader, SqlAlchemyUserRepository


@dataclass(frozen=True)
class RequestScope:
    """What the units of work of one request write beside their change."""

    request_id: str | None = None  # on each event, as its CloudEvents `requestid`
    recorder: ReplyRecorder | None = None  # an idempotent change's reply, kept with it


NO_REQUEST = RequestScope()


class SqlAlchemyUnitOfWork:
    """UnitOfWork on a pooled connection, taken at first need; leaving without commit rolls back."""

    def __init__(
        self,
        engine: AsyncEngine,
        lone: LoneStatements | None = None,
        scope: RequestScope = NO_REQUEST,
        mail_sealer: Sealer | None = None,
    ) -> None:
        self._engine = engine
        self._lone = lone
        self._scope = scope
        self._mail_sealer = mail_sealer
        self._reader = None if lone is None else PostgresUserReader(lone)
        self._conn: AsyncConnection | None = None
        self._repository: SqlAlchemyUserRepository | None = None

    async def __aenter__(self) -> SqlAlchemyUnitOfWork:
        self.users = _Users(self)
        self.outbox = SqlAlchemyEventOutbox(self._scope.request_id)
        self.audit = _Audit(self)
        self.mfa = SqlAlchemyMfaRepository(self.connection)
        self.tokens = _Tokens(self)
        self.mails = _Mails(self, SqlAlchemyMailQueue(self._mail_sealer, self._scope.request_id))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._conn is None:
            return
        try:
            await self._conn.rollback()  # a no-op after commit()
        except Exception as failed:
            if exc is None:
                _raise_for_database(failed)
                raise
            # Already failing: a dead connection must not hide the first error behind its own.
        finally:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
            self._repository = None
        if isinstance(exc, Exception):
            _raise_for_database(exc)

    async def commit(self) -> None:
        recorder = self._scope.recorder
        if self._conn is None and not self.outbox.pending:
            return  # nothing was written (a mail is queued only after its count, in a transaction)
        if self._conn is None and self._lone is not None and recorder is None:
            await self.outbox.flush_alone(self._lone)  # events only: one lone statement
            return
        conn = await self.connection()
        await self.outbox.flush(conn)
        await self.mails.queue.flush(conn)
        if recorder is not None:
            await recorder.write(conn, self.users.changed)
        await conn.commit()

    @property
    def idle(self) -> bool:
        """No transaction yet: a read now may go to the reader."""
        return self._conn is None and self._reader is not None

    @property
    def reader(self) -> PostgresUserReader:
        assert self._reader is not None
        return self._reader

    async def connection(self) -> AsyncConnection:
        """The unit's connection, in a transaction; taken from the pool at the first call."""
        if self._conn is not None:
            return self._conn
        try:
            conn = await self._engine.connect()
        except Exception as exc:
            # Connecting (or the pre-ping) that times out is as unreachable as a refusal.
            if isinstance(exc, TimeoutError) or _cause(exc) is not None:
                raise ServiceUnavailable(DATABASE_UNREACHABLE) from exc
            raise
        try:
            await conn.begin()
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        return conn

    async def repository(self) -> SqlAlchemyUserRepository:
        if self._repository is None:
            self._repository = SqlAlchemyUserRepository(await self.connection())
        return self._repository


class _Users:
    """The unit's UserRepository: each call takes the unit's transaction, but a first read.

    `changed` is the user as the unit last wrote it (added or updated; None once deleted):
    what an idempotent change's reply renders.
    """

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        self._uow = uow
        self.changed: User | None = None

    async def get(self, user_id: int) -> User | None:
        if self._uow.idle:
            return await self._uow.reader.get(user_id)
        return await (await self._uow.repository()).get(user_id)

    async def add(self, new: NewUser) -> User:
        self.changed = await (await self._uow.repository()).add(new)
        return self.changed

    async def get_by_login(self, login: str) -> User | None:
        if self._uow.idle:
            return await self._uow.reader.get_by_login(login)
        return await (await self._uow.repository()).get_by_login(login)

    async def clash(self, email: str | None, username: str | None, exclude: int | None) -> None:
        await (await self._uow.repository()).clash(email, username, exclude)

    async def update(self, user: User, changes: UserChanges) -> User:
        self.changed = await (await self._uow.repository()).update(user, changes)
        return self.changed

    async def delete(self, user_id: int) -> None:
        await (await self._uow.repository()).delete(user_id)
        if self.changed is not None and self.changed.id == user_id:
            self.changed = None

    async def lock_superusers(self) -> Sequence[int]:
        return await (await self._uow.repository()).lock_superusers()

    async def list(self, query: UserQuery) -> UserPage:
        return await (await self._uow.repository()).list(query)


class _Audit:
    """The unit's AuditLog, on the unit's transaction."""

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        self._uow = uow

    async def list(self, query: AuditQuery) -> AuditPage:
        return await SqlAlchemyAuditLog(await self._uow.connection()).list(query)


class _Tokens:
    """The unit's EmailTokenRepository, on the unit's transaction."""

    def __init__(self, uow: SqlAlchemyUnitOfWork) -> None:
        self._uow = uow

    async def _repository(self) -> SqlAlchemyEmailTokens:
        return SqlAlchemyEmailTokens(await self._uow.connection())

    async def add(self, token: EmailToken) -> None:
        await (await self._repository()).add(token)

    async def find(self, digest: bytes, kind: str, now: datetime) -> EmailToken | None:
        return await (await self._repository()).find(digest, kind, now)

    async def spend(self, digest: bytes, kind: str, now: datetime) -> EmailToken | None:
        return await (await self._repository()).spend(digest, kind, now)

    async def spend_all(self, user_id: int, kind: str, now: datetime) -> None:
        await (await self._repository()).spend_all(user_id, kind, now)


class _Mails:
    """The unit's MailQueue: counted on its transaction, written at its commit."""

    def __init__(self, uow: SqlAlchemyUnitOfWork, queue: SqlAlchemyMailQueue) -> None:
        self._uow = uow
        self.queue = queue

    async def count_since(self, kind: str, address: str, since: datetime) -> int:
        return await self.queue.count_since(await self._uow.connection(), kind, address, since)

    def add(self, mail: Mail) -> None:
        self.queue.add(mail)


def _raise_for_database(exc: Exception) -> None:
    """The database timing out is a 504 and losing the link a 503, never a fault of ours."""
    match _cause(exc):
        case "timed out":
            raise UpstreamTimeout(DATABASE_TIMED_OUT) from exc
        case "unreachable":
            raise ServiceUnavailable("The database connection was lost.") from exc


def _cause(exc: BaseException) -> Literal["timed out", "unreachable"] | None:
    """What `exc`, or the first error in its chain that says, tells of the database.

    "timed out" (a statement ran out of time: storage.lone.timed_out), "unreachable" (the
    database went away) or None. SQLAlchemy flags only some of the latter
    (`connection_invalidated`): a link cut during COMMIT arrives as a plain DBAPIError caused
    by asyncpg's ConnectionDoesNotExistError.
    """
    from sqlalchemy.exc import DBAPIError, InterfaceError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if timed_out(current):
            return "timed out"
        if isinstance(current, (*UNREACHABLE, InterfaceError)):
            return "unreachable"
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return "unreachable"
        current = current.__cause__ or current.__context__
    return None


@dataclasses.dataclass(frozen=True)
class SqlAlchemyUnitOfWorkFactory:
    """Opens units of work on one engine, with `lone` for the statements that stand alone."""

    engine: AsyncEngine
    lone: LoneStatements | None = None
    scope: RequestScope = NO_REQUEST
    mail_sealer: Sealer | None = None  # seals the token of each mail job (storage.mail)

    def __call__(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.engine, self.lone, self.scope, self.mail_sealer)

    def for_request(self, request_id: str) -> SqlAlchemyUnitOfWorkFactory:
        """Units of one request: each event they commit carries its id."""
        return dataclasses.replace(
            self, scope=dataclasses.replace(self.scope, request_id=request_id)
        )

    def recording(self, recorder: ReplyRecorder) -> SqlAlchemyUnitOfWorkFactory:
        """Units of an idempotent change: one that commits writes `recorder`'s reply with it."""
        return dataclasses.replace(self, scope=dataclasses.replace(self.scope, recorder=recorder))

    async def ping(self) -> None:
        """Readiness: one statement on the pool the units of work take their connections from."""
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
