"""SqlAlchemyUserRepository and the outbox through SqlAlchemyUnitOfWork on real Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import pytest_asyncio
import structlog
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from domain import events
from domain.errors import EmailTaken, UsernameTaken
from domain.model import NewUser, User, UserChanges
from storage.db import drop_database, make_engine
from storage.lone import LoneStatements
from storage.tables import outbox, users
from storage.uow import SqlAlchemyUnitOfWork, SqlAlchemyUnitOfWorkFactory
from storage.users import PostgresUserReader
from tests.conftest import make_settings, unique
from tests.support.infra import Urls, with_database
from tests.support.waiting import eventually
from warden.cli import migrate

HASH = "$2b$04$" + "x" * 53  # shaped like a bcrypt hash; never checked here

# A deferred constraint trigger of the tests' own: Postgres runs it at COMMIT, after every
# statement of the transaction (the outbox insert too) went through. It refuses one username.
REFUSED_AT_COMMIT = "refused at commit"
_REFUSE_AT_COMMIT = (
    """CREATE FUNCTION test_refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.username = TG_ARGV[0] THEN
            RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation';
        END IF;
        RETURN NULL;
    END $$""",
    "CREATE CONSTRAINT TRIGGER test_refuse_at_commit AFTER INSERT ON users DEFERRABLE"
    " INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_refuse_at_commit('{name}')",
)
_ALLOW_AT_COMMIT = (
    "DROP TRIGGER IF EXISTS test_refuse_at_commit ON users",
    "DROP FUNCTION IF EXISTS test_refuse_at_commit()",
)

WAITING_ON_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


@pytest_asyncio.fixture(scope="module")
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database, pool_size=5, max_overflow=5)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(scope="module")
async def quiet_engine(urls: Urls) -> AsyncIterator[AsyncEngine]:
    """A database of this module's own that no outbox relay drains, to read the outbox."""
    url = with_database(urls.database, unique("warden_outbox_"))
    await migrate(make_settings(urls, database_url=url))
    engine = make_engine(url, pool_size=2, max_overflow=2)
    yield engine
    await engine.dispose()
    await drop_database(url)


@pytest_asyncio.fixture
async def refused_at_commit(quiet_engine: AsyncEngine) -> AsyncIterator[str]:
    """A username whose row Postgres accepts at INSERT and refuses at COMMIT."""
    name = unique("refused")
    async with quiet_engine.begin() as conn:
        for statement in _REFUSE_AT_COMMIT:
            await conn.exec_driver_sql(statement.format(name=name))
    yield name
    async with quiet_engine.begin() as conn:
        for statement in _ALLOW_AT_COMMIT:
            await conn.exec_driver_sql(statement)


def new_user(name: str | None = None, **fields: Any) -> NewUser:
    name = name or unique()
    values: dict[str, Any] = {
        "email": f"{name}@example.com",
        "username": name,
        "hashed_password": HASH,
    }
    return NewUser(**(values | fields))


async def add(engine: AsyncEngine, new: NewUser) -> User:
    async with SqlAlchemyUnitOfWork(engine) as uow:
        user = await uow.users.add(new)
        await uow.commit()
    return user


async def get(engine: AsyncEngine, user_id: int) -> User | None:
    async with SqlAlchemyUnitOfWork(engine) as uow:
        return await uow.users.get(user_id)


async def outbox_rows(engine: AsyncEngine, user_id: int) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(outbox).where(outbox.c.user_id == user_id))
        return [dict(r) for r in rows.mappings()]


async def until_a_transaction_waits_on_a_lock(engine: AsyncEngine) -> None:
    async def waiting() -> bool:
        # A transaction of its own each time: pg_stat_activity is a per-transaction snapshot.
        async with engine.connect() as observer:
            return bool(await observer.scalar(text(WAITING_ON_A_LOCK)))

    await eventually(waiting, 10, "no transaction waited on a lock")


async def test_an_added_user_is_read_back_by_id_with_its_stored_fields(
    engine: AsyncEngine,
) -> None:
    user = await add(engine, new_user(full_name="Ada Lovelace"))
    assert user.id > 0
    assert user.is_active is True
    assert user.is_superuser is False
    assert user.created_at.tzinfo is not None
    assert await get(engine, user.id) == user


async def test_get_of_an_unknown_id_is_none(engine: AsyncEngine) -> None:
    assert await get(engine, 2**62) is None


async def test_a_user_is_found_by_username_or_email(engine: AsyncEngine) -> None:
    user = await add(engine, new_user())
    async with SqlAlchemyUnitOfWork(engine) as uow:
        assert await uow.users.get_by_login(user.username) == user
        assert await uow.users.get_by_login(user.email) == user
        assert await uow.users.get_by_login(unique("nobody")) is None


async def test_a_user_is_found_by_username_or_email_in_any_case(engine: AsyncEngine) -> None:
    name = unique("Mixed")
    user = await add(engine, new_user(name))
    async with SqlAlchemyUnitOfWork(engine) as uow:
        assert await uow.users.get_by_login(name.upper()) == user
        assert await uow.users.get_by_login(f"{name}@EXAMPLE.com") == user


async def test_a_username_wins_over_another_users_equal_email_alone_or_in_a_transaction(
    engine: AsyncEngine,
) -> None:
    """Both ways a login is looked up run the one statement: alone (a login's first read)
    or in a unit's transaction. The wire allows no '@' in a username; older names may."""
    name = unique()
    await add(engine, new_user(email=f"{name}@example.com"))  # first: the lower id
    owner = await add(engine, new_user(f"{name}@Example.com", email=f"{unique()}@example.com"))
    login = f"{name.upper()}@EXAMPLE.COM"
    async with SqlAlchemyUnitOfWork(engine) as uow:
        assert await uow.users.get_by_login(login) == owner
    lone = LoneStatements(engine.url.set(drivername="postgresql").render_as_string(False), 1)
    try:
        assert await PostgresUserReader(lone).get_by_login(login) == owner
    finally:
        await lone.close()


async def test_a_taken_email_in_another_case_is_refused_by_the_database(
    engine: AsyncEngine,
) -> None:
    name = unique()
    await add(engine, new_user(name))
    with pytest.raises(EmailTaken):
        await add(engine, new_user(unique(), email=f"{name.upper()}@EXAMPLE.COM"))


async def test_a_taken_username_in_another_case_is_refused_by_the_database(
    engine: AsyncEngine,
) -> None:
    name = unique("abc")
    await add(engine, new_user(name))
    with pytest.raises(UsernameTaken):
        await add(engine, new_user(name.upper(), email=f"{unique()}@example.com"))


async def test_of_two_racing_registrations_of_one_email_exactly_one_succeeds(
    engine: AsyncEngine,
) -> None:
    email = f"{unique()}@example.com"
    first = SqlAlchemyUnitOfWork(engine)
    second = SqlAlchemyUnitOfWork(engine)
    async with first, second:
        winner = await first.users.add(new_user(email=email))
        # The second insert waits on the unique index until the first transaction ends.
        loser = asyncio.create_task(second.users.add(new_user(email=email.upper())))
        await until_a_transaction_waits_on_a_lock(engine)
        await first.commit()
        with pytest.raises(EmailTaken):
            await loser
    assert await get(engine, winner.id) == winner


async def test_concurrent_registrations_of_one_email_store_one_user_and_refuse_the_others(
    engine: AsyncEngine,
) -> None:
    email = f"{unique()}@example.com"
    outcomes = await asyncio.gather(
        *(add(engine, new_user(email=email)) for _ in range(4)), return_exceptions=True
    )
    stored = [o for o in outcomes if isinstance(o, User)]
    refused = [o for o in outcomes if not isinstance(o, User)]
    assert len(stored) == 1
    assert all(isinstance(o, EmailTaken) for o in refused), refused


async def test_clash_names_the_taken_email_before_the_taken_username(
    engine: AsyncEngine,
) -> None:
    user = await add(engine, new_user())
    async with SqlAlchemyUnitOfWork(engine) as uow:
        with pytest.raises(EmailTaken):
            await uow.users.clash(user.email.upper(), user.username, exclude=None)
        with pytest.raises(UsernameTaken):
            await uow.users.clash(f"{unique()}@example.com", user.username.upper(), None)
        await uow.users.clash(f"{unique()}@example.com", unique(), exclude=None)
        await uow.users.clash(user.email, user.username, exclude=user.id)
        await uow.users.clash(None, None, exclude=None)


async def test_update_returns_the_changed_row_and_moves_updated_at(engine: AsyncEngine) -> None:
    user = await add(engine, new_user(full_name="Before"))
    name = unique()
    async with SqlAlchemyUnitOfWork(engine) as uow:
        changes = UserChanges(username=name, full_name=None, is_active=False)
        updated = await uow.users.update(user, changes)
        await uow.commit()
    assert (updated.id, updated.username, updated.full_name) == (user.id, name, None)
    assert updated.is_active is False
    assert updated.email == user.email
    assert updated.created_at == user.created_at
    assert updated.updated_at > user.updated_at
    assert await get(engine, user.id) == updated


async def test_an_update_onto_a_taken_email_is_refused(engine: AsyncEngine) -> None:
    taken = await add(engine, new_user())
    user = await add(engine, new_user())
    async with SqlAlchemyUnitOfWork(engine) as uow:
        with pytest.raises(EmailTaken):
            await uow.users.update(user, UserChanges(email=taken.email.upper()))
    assert await get(engine, user.id) == user


async def test_a_deleted_user_is_gone(engine: AsyncEngine) -> None:
    user = await add(engine, new_user())
    async with SqlAlchemyUnitOfWork(engine) as uow:
        await uow.users.delete(user.id)
        await uow.commit()
    assert await get(engine, user.id) is None
    await add(engine, new_user(user.username, email=user.email))  # the names are free again


async def test_lock_superusers_lists_active_superusers_only(engine: AsyncEngine) -> None:
    active = await add(engine, new_user(is_superuser=True))
    inactive = await add(engine, new_user(is_superuser=True, is_active=False))
    plain = await add(engine, new_user())
    async with SqlAlchemyUnitOfWork(engine) as uow:
        ids = await uow.users.lock_superusers()
    assert active.id in ids
    assert inactive.id not in ids
    assert plain.id not in ids


async def test_lock_superusers_makes_a_second_transaction_wait_for_the_first(
    engine: AsyncEngine,
) -> None:
    promoted = await add(engine, new_user())
    async with SqlAlchemyUnitOfWork(engine) as first, SqlAlchemyUnitOfWork(engine) as second:
        await first.users.lock_superusers()
        waiting = asyncio.create_task(second.users.lock_superusers())
        await until_a_transaction_waits_on_a_lock(engine)
        assert not waiting.done()
        await first.users.update(promoted, UserChanges(is_superuser=True))
        await first.commit()
        # Released by the commit: the second sees the first's change.
        assert promoted.id in await waiting


async def test_leaving_a_unit_of_work_without_commit_stores_nothing(
    quiet_engine: AsyncEngine,
) -> None:
    name = unique()
    async with SqlAlchemyUnitOfWork(quiet_engine) as uow:
        user = await uow.users.add(new_user(name))
        uow.outbox.add(events.Event(events.USER_REGISTERED, datetime.now(UTC), user.view()))
    assert await get(quiet_engine, user.id) is None
    assert await outbox_rows(quiet_engine, user.id) == []
    await add(quiet_engine, new_user(name))  # nothing of it holds the names


async def test_an_error_inside_a_unit_of_work_rolls_it_back(quiet_engine: AsyncEngine) -> None:
    added: list[User] = []

    async def fail_after_adding() -> None:
        async with SqlAlchemyUnitOfWork(quiet_engine) as uow:
            user = await uow.users.add(new_user())
            uow.outbox.add(events.Event(events.USER_REGISTERED, datetime.now(UTC), user.view()))
            added.append(user)
            raise RuntimeError("abandoned")

    with pytest.raises(RuntimeError, match="abandoned"):
        await fail_after_adding()
    user = added[0]
    assert await get(quiet_engine, user.id) is None
    assert await outbox_rows(quiet_engine, user.id) == []


async def test_a_change_whose_commit_fails_leaves_no_event_behind(
    quiet_engine: AsyncEngine, refused_at_commit: str
) -> None:
    """The events are rows of the change's own transaction: when its COMMIT fails after they
    were written, no outbox row remains, so nothing announces a change that never happened."""
    dsn = quiet_engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    lone = LoneStatements(dsn, 1)  # as the worker builds its units of work
    added: list[User] = []

    async def register_and_announce() -> None:
        async with SqlAlchemyUnitOfWork(quiet_engine, lone) as uow:
            user = await uow.users.add(new_user(refused_at_commit))
            added.append(user)
            uow.outbox.add(events.Event(events.USER_REGISTERED, datetime.now(UTC), user.view()))
            await uow.commit()

    try:
        with pytest.raises(IntegrityError, match=REFUSED_AT_COMMIT):
            await register_and_announce()
    finally:
        await lone.close()
    user = added[0]
    assert await get(quiet_engine, user.id) is None
    assert await outbox_rows(quiet_engine, user.id) == [], "an event of a change never committed"


async def test_commit_writes_the_outbox_rows_as_cloudevents_without_the_hash(
    quiet_engine: AsyncEngine,
) -> None:
    async with SqlAlchemyUnitOfWork(quiet_engine) as uow:
        user = await uow.users.add(new_user())
        registered = events.Event(events.USER_REGISTERED, datetime.now(UTC), user.view())
        updated = events.Event(events.USER_UPDATED, datetime.now(UTC), user.view())
        uow.outbox.add(registered)
        uow.outbox.add(updated)
        await uow.commit()
    rows = sorted(await outbox_rows(quiet_engine, user.id), key=lambda r: r["id"])
    assert [(r["event_id"], r["type"]) for r in rows] == [
        (registered.id, "user.registered"),
        (updated.id, "user.updated"),
    ]
    payload = rows[0]["payload"]
    assert isinstance(payload, dict)
    assert payload["specversion"] == "1.0"
    assert payload["id"] == registered.id
    assert payload["source"] == "warden"
    assert payload["type"] == "user.registered"
    assert payload["subject"] == str(user.id)
    assert payload["datacontenttype"] == "application/json"
    assert payload["data"]["user"]["id"] == user.id
    assert payload["data"]["user"]["email"] == user.email
    serialized = orjson.dumps([r["payload"] for r in rows])
    assert HASH.encode() not in serialized
    assert b"password" not in serialized


async def test_a_commit_without_events_writes_no_outbox_row(quiet_engine: AsyncEngine) -> None:
    async with quiet_engine.connect() as conn:
        before = await conn.scalar(select(func.count()).select_from(outbox))
    user = await add(quiet_engine, new_user())
    async with quiet_engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(outbox)) == before
        stored = await conn.scalar(select(users.c.hashed_password).where(users.c.id == user.id))
    assert stored == HASH


@pytest.mark.parametrize("alone", [False, True], ids=["in-a-transaction", "events-alone"])
async def test_the_events_of_a_requests_units_carry_its_id_and_others_none_whatever_is_logged(
    quiet_engine: AsyncEngine, alone: bool
) -> None:
    """The request id comes from the request the unit was opened for, never from the
    logging context (which is bound to the id of whatever request ran last)."""
    user = await add(quiet_engine, new_user())
    dsn = quiet_engine.url.set(drivername="postgresql").render_as_string(False)
    lone = LoneStatements(dsn, 1) if alone else None
    units, request_id = SqlAlchemyUnitOfWorkFactory(quiet_engine, lone), unique("request-")
    structlog.contextvars.bind_contextvars(request_id="the-logs-request")
    try:
        for opened in (units.for_request(request_id), units):
            async with opened() as uow:
                if not alone:
                    await uow.users.update(user, UserChanges(full_name=unique()))
                uow.outbox.add(events.Event(events.USER_UPDATED, datetime.now(UTC), user.view()))
                await uow.commit()
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
        if lone is not None:
            await lone.close()
    rows = sorted(await outbox_rows(quiet_engine, user.id), key=lambda r: r["id"])
    assert [r["payload"].get("requestid") for r in rows] == [request_id, None]
