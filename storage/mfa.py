"""TOTP enrolments and recovery codes in Postgres, on a unit of work's transaction.

Every check-and-spend is one statement, so two workers racing for the same code cannot both
win: a time-step is spent by an UPDATE whose WHERE demands it be later than the last one, a
recovery code by a DELETE ... RETURNING. Both hold their row until the transaction ends, so
the use case can make the spending depend on what else it does (spending the mfa_token).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.model import TotpState
from storage.tables import mfa_recovery_codes, user_totp


class SqlAlchemyMfaRepository:
    """MfaRepository on a unit of work's transaction, taken at its first statement."""

    def __init__(self, connection: Callable[[], Awaitable[AsyncConnection]]) -> None:
        self._connection = connection

    async def _execute(self, stmt: Any, rows: Any = None) -> Any:
        conn = await self._connection()
        return await conn.execute(stmt) if rows is None else await conn.execute(stmt, rows)

    async def get(self, user_id: int) -> TotpState | None:
        stmt = select(user_totp.c.secret, user_totp.c.confirmed).where(
            user_totp.c.user_id == user_id
        )
        row = (await self._execute(stmt)).first()
        return None if row is None else TotpState(user_id, bytes(row.secret), row.confirmed)

    async def enabled(self, user_id: int) -> bool:
        stmt = select(user_totp.c.confirmed).where(user_totp.c.user_id == user_id)
        return bool((await self._execute(stmt)).scalar())

    async def put_pending(self, user_id: int, sealed_secret: bytes) -> bool:
        stmt = pg_insert(user_totp).values(user_id=user_id, secret=sealed_secret)
        stmt = stmt.on_conflict_do_update(
            index_elements=[user_totp.c.user_id],
            set_={"secret": sealed_secret, "last_step": None, "created_at": func.now()},
            where=user_totp.c.confirmed.is_(False),
        )
        result = await self._execute(stmt.returning(user_totp.c.user_id))
        return result.first() is not None

    async def confirm(
        self, user_id: int, sealed_secret: bytes, step: int, recovery_digests: Sequence[bytes]
    ) -> bool:
        stmt = (
            update(user_totp)
            .where(
                user_totp.c.user_id == user_id,
                user_totp.c.secret == sealed_secret,
                user_totp.c.confirmed.is_(False),
            )
            .values(confirmed=True, last_step=step, confirmed_at=func.now())
            .returning(user_totp.c.user_id)
        )
        if (await self._execute(stmt)).first() is None:
            return False
        await self._execute(
            delete(mfa_recovery_codes).where(mfa_recovery_codes.c.user_id == user_id)
        )
        rows = [{"user_id": user_id, "digest": d} for d in recovery_digests]
        await self._execute(insert(mfa_recovery_codes), rows)
        return True

    async def remove(self, user_id: int) -> bool:
        await self._execute(
            delete(mfa_recovery_codes).where(mfa_recovery_codes.c.user_id == user_id)
        )
        stmt = (
            delete(user_totp).where(user_totp.c.user_id == user_id).returning(user_totp.c.confirmed)
        )
        return bool((await self._execute(stmt)).scalar())

    async def spend_step(self, user_id: int, step: int) -> bool:
        stmt = (
            update(user_totp)
            .where(
                user_totp.c.user_id == user_id,
                user_totp.c.confirmed.is_(True),
                or_(user_totp.c.last_step.is_(None), user_totp.c.last_step < step),
            )
            .values(last_step=step)
            .returning(user_totp.c.user_id)
        )
        return (await self._execute(stmt)).first() is not None

    async def spend_recovery_code(self, user_id: int, digest: bytes) -> bool:
        stmt = (
            delete(mfa_recovery_codes)
            .where(mfa_recovery_codes.c.user_id == user_id, mfa_recovery_codes.c.digest == digest)
            .returning(mfa_recovery_codes.c.user_id)
        )
        return (await self._execute(stmt)).first() is not None
