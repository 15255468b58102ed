"""The unit of work: one Postgres transaction over users, the outbox and the audit log."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain.errors import ServiceUnavailable
from storage.audit import SqlAlchemyAuditLog
from storage.outbox import SqlAlchemyEventOutbox
from storage.users import SqlAlchemyUserRepository

# Errors that mean "the database is unreachable", answered as 503 rather than 500.
_UNREACHABLE = (OSError, TimeoutError, ConnectionError)


class SqlAlchemyUnitOfWork:
    """UnitOfWork on a pooled connection; leaving without commit rolls back."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> SqlAlchemyUnitOfWork:
        try:
            self._conn = await self._engine.connect()
        except _UNREACHABLE as exc:
            raise ServiceUnavailable("The database cannot be reached.") from exc
        except Exception as exc:
            if _is_connection_error(exc):
                raise ServiceUnavailable("The database cannot be reached.") from exc
            raise
        await self._conn.begin()
        self.users = SqlAlchemyUserRepository(self._conn)
        self.outbox = SqlAlchemyEventOutbox()
        self.audit = SqlAlchemyAuditLog(self._conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._conn is not None
        try:
            await self._conn.rollback()
        finally:
            await self._conn.close()
            self._conn = None

    async def commit(self) -> None:
        assert self._conn is not None
        await self.outbox.flush(self._conn)
        await self._conn.commit()


def _is_connection_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import DBAPIError, InterfaceError

    if isinstance(exc, InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class SqlAlchemyUnitOfWorkFactory:
    """Opens units of work on one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    def __call__(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self.engine)
