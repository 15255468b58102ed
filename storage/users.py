"""Users in Postgres."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    delete,
    func,
    insert,
    literal,
    literal_column,
    not_,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.errors import EmailTaken, UsernameTaken
from domain.listing import UserKey, UserPage, UserQuery, sort_value
from domain.model import NewUser, User, UserChanges
from storage.lone import LoneStatements
from storage.tables import users

# One constant lock id serialises every change that could remove the last active superuser.
SUPERUSER_LOCK_ID = 0x5741_5244  # "WARD"
EMAIL_INDEX = "ux_users_email_lower"
USERNAME_INDEX = "ux_users_username_lower"

_SORT_COLUMNS: dict[str, ColumnElement[Any]] = {
    "created_at": users.c.created_at,
    "username": func.lower(users.c.username).collate("C"),
    "email": func.lower(users.c.email).collate("C"),
}
# The expression the trigram index covers; for a pattern with a space, the exact per-field
# test rechecks its matches (see _filters).
# Spaces as literal SQL, not bind parameters, so the planner matches the index expression.
_SPACE: ColumnElement[str] = literal_column("' '")
SEARCH_EXPRESSION = func.lower(
    users.c.email
    + _SPACE
    + users.c.username
    + _SPACE
    + func.coalesce(users.c.full_name, literal_column("''"))
)


class _UserReads:
    """The reads of one user, each one statement written once (_BY_ID, _BY_LOGIN).

    The unit of work sends them alone while it has no transaction yet (PostgresUserReader:
    every bearer check's read, every login's) and in its transaction after
    (SqlAlchemyUserRepository); `_fetchrow` is the way each runs a statement.
    """

    async def get(self, user_id: int) -> User | None:
        row = await self._fetchrow(_BY_ID, user_id)
        return None if row is None else _to_user(row)

    async def get_by_login(self, login: str) -> User | None:
        row = await self._fetchrow(_BY_LOGIN, login.lower())
        return None if row is None else _to_user(row)

    async def _fetchrow(self, query: str, *args: Any) -> RowMapping | None:
        raise NotImplementedError


class SqlAlchemyUserRepository(_UserReads):
    """UserRepository over one connection of a unit of work."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, new: NewUser) -> User:
        stmt = insert(users).values(
            email=new.email,
            username=new.username,
            hashed_password=new.hashed_password,
            full_name=new.full_name,
            is_active=new.is_active,
            is_superuser=new.is_superuser,
            is_verified=new.is_verified,
        )
        row = await self._write(stmt.returning(*users.c))
        return _to_user(row)

    async def _fetchrow(self, query: str, *args: Any) -> RowMapping | None:
        return (await self._conn.exec_driver_sql(query, args)).mappings().first()

    async def clash(self, email: str | None, username: str | None, exclude: int | None) -> None:
        conditions = []
        if email is not None:
            conditions.append(func.lower(users.c.email) == email.lower())
        if username is not None:
            conditions.append(func.lower(users.c.username) == username.lower())
        if not conditions:
            return
        stmt = select(users.c.email, users.c.username).where(or_(*conditions))
        if exclude is not None:
            stmt = stmt.where(users.c.id != exclude)
        for row in (await self._conn.execute(stmt)).mappings():
            if email is not None and row["email"].lower() == email.lower():
                raise EmailTaken
            raise UsernameTaken

    async def update(self, user: User, changes: UserChanges) -> User:
        values = changes.as_dict() | {"updated_at": func.now()}
        stmt = update(users).where(users.c.id == user.id).values(**values).returning(*users.c)
        return _to_user(await self._write(stmt))

    async def delete(self, user_id: int) -> None:
        await self._conn.execute(delete(users).where(users.c.id == user_id))

    async def lock_superusers(self) -> Sequence[int]:
        await self._conn.execute(select(func.pg_advisory_xact_lock(SUPERUSER_LOCK_ID)))
        stmt = select(users.c.id).where(users.c.is_superuser, users.c.is_active)
        return list((await self._conn.execute(stmt)).scalars())

    async def list(self, query: UserQuery) -> UserPage:
        key = _SORT_COLUMNS[query.sort.key]
        order = (key.desc(), users.c.id.desc()) if query.sort.descending else (key, users.c.id)
        stmt = select(users).where(*_filters(query)).order_by(*order).limit(query.limit + 1)
        if query.after is not None:
            position = tuple_(key, users.c.id)
            after = tuple_(_key_literal(query.sort.key, query.after.value), literal(query.after.id))
            stmt = stmt.where(position < after if query.sort.descending else position > after)
        rows = (await self._conn.execute(stmt)).mappings().all()
        items = [_to_user(r) for r in rows[: query.limit]]
        next_key = None
        if len(rows) > query.limit:
            last = items[-1]
            next_key = UserKey(sort_value(last, query.sort.key), last.id)
        return UserPage(items, next_key)

    async def _write(self, stmt: Any) -> RowMapping:
        try:
            return (await self._conn.execute(stmt)).mappings().one()
        except IntegrityError as exc:
            raise _clash_error(exc) from None


def _filters(query: UserQuery) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if query.q:
        pattern = "%" + _escape_like(query.q.lower()) + "%"
        filters.append(SEARCH_EXPRESSION.like(pattern, escape="\\"))
        if " " in query.q:
            # The fields are joined by spaces: only a pattern holding one can match across
            # two of them, so only such a pattern needs the exact per-field test. Sparing it
            # otherwise halves the work per row and keeps the planner's estimate honest.
            filters.append(
                or_(
                    func.lower(users.c.email).like(pattern, escape="\\"),
                    func.lower(users.c.username).like(pattern, escape="\\"),
                    func.lower(users.c.full_name).like(pattern, escape="\\"),
                )
            )
    # Written as `is_superuser` / `NOT is_active`, with no bind parameter, so the planner can
    # match the partial indexes of migration 0004 (the columns are NOT NULL).
    if query.is_active is not None:
        filters.append(users.c.is_active if query.is_active else not_(users.c.is_active))
    if query.is_superuser is not None:
        filters.append(users.c.is_superuser if query.is_superuser else not_(users.c.is_superuser))
    return filters


def _key_literal(key: str, value: str) -> ColumnElement[Any]:
    if key == "created_at":
        return literal(datetime.fromisoformat(value), users.c.created_at.type)
    return literal(value).collate("C")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _clash_error(exc: IntegrityError) -> Exception:
    cause = getattr(exc.orig, "__cause__", None)
    constraint = getattr(cause, "constraint_name", None) or str(exc.orig)
    if EMAIL_INDEX in constraint:
        return EmailTaken()
    if USERNAME_INDEX in constraint:
        return UsernameTaken()
    return exc


def _to_user(row: RowMapping) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        username=row["username"],
        hashed_password=row["hashed_password"],
        full_name=row["full_name"],
        is_active=row["is_active"],
        is_superuser=row["is_superuser"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        is_verified=row["is_verified"],
    )


class PostgresUserReader(_UserReads):
    """Reads one user (by id, or by login) as a lone statement: one round trip (storage.lone)."""

    def __init__(self, lone: LoneStatements) -> None:
        self._lone = lone

    async def _fetchrow(self, query: str, *args: Any) -> RowMapping | None:
        return await self._lone.fetchrow(query, *args)


# Plain SQL, as asyncpg runs it either way (alone, or through SQLAlchemy's connection).
_BY_ID = (
    "SELECT id, email, username, hashed_password, full_name, is_active, is_superuser,"
    " created_at, updated_at, is_verified FROM users WHERE id = $1"
)
# `$1` is the login lower-cased. A username may look like another user's email: the
# username wins.
_BY_LOGIN = (
    "SELECT id, email, username, hashed_password, full_name, is_active, is_superuser,"
    " created_at, updated_at, is_verified FROM users"
    " WHERE lower(username) = $1 OR lower(email) = $1"
    " ORDER BY (lower(username) = $1) DESC LIMIT 1"
)
