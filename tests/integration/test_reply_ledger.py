"""The reply ledger on real Postgres: a change's reply stands or falls with the change."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.errors import EmailTaken
from domain.model import NewUser, User, UserChanges
from handlers.envelope import failure
from handlers.idempotency import Idempotency
from storage.db import asyncpg_dsn, make_engine
from storage.idempotency import PostgresReplyLedger, RedisIdempotencyStore, ReplyRecorder
from storage.lone import LoneStatements
from storage.redis_store import make_redis
from storage.uow import SqlAlchemyUnitOfWorkFactory
from tests.conftest import unique
from tests.support.infra import Urls
from warden.keys import IDEMPOTENCY_REPLY, AesGcmSealer, subkey
from warden.settings import Settings

SEALER = AesGcmSealer(subkey(b"a key of this module's own, 32 bytes+", IDEMPOTENCY_REPLY))


def keep(changed: User | None) -> dict[str, Any]:
    assert changed is not None
    return {"ok": True, "data": {"id": changed.id}}


@pytest_asyncio.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database, 2, 0)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture
async def ledger(settings: Settings) -> AsyncIterator[PostgresReplyLedger]:
    lone = LoneStatements(asyncpg_dsn(settings.database_url.get_secret_value()), 2)
    yield PostgresReplyLedger(lone, ttl=60, sealer=SEALER)
    await lone.close()


def new_user() -> NewUser:
    name = unique()
    return NewUser(f"{name}@example.com", name, "$2b$04$" + "x" * 53)


async def test_a_committed_change_keeps_its_reply_and_a_rolled_back_one_does_not(
    engine: AsyncEngine, ledger: PostgresReplyLedger
) -> None:
    units = SqlAlchemyUnitOfWorkFactory(engine)
    kept, dropped = unique("slot-"), unique("slot-")
    async with units.recording(ledger.recorder(kept, "fp-1", keep))() as uow:
        user = await uow.users.add(new_user())
        await uow.commit()
    async with units.recording(ledger.recorder(dropped, "fp-2", keep))() as uow:
        await uow.users.add(new_user())  # and the unit ends without a commit

    assert await ledger.get(kept) == {"fp": "fp-1", "reply": {"ok": True, "data": {"id": user.id}}}
    assert await ledger.get(dropped) is None


async def test_the_units_of_two_requests_in_one_task_each_keep_their_own_reply(
    engine: AsyncEngine, ledger: PostgresReplyLedger
) -> None:
    """Each unit writes the reply of the recorder it was opened with, and nothing else: no
    ambient state decides it, even for units interleaved in one task."""
    units = SqlAlchemyUnitOfWorkFactory(engine)
    first, second = unique("slot-"), unique("slot-")
    async with (
        units.recording(ledger.recorder(first, "fp-1", keep))() as one,
        units.recording(ledger.recorder(second, "fp-2", keep))() as other,
    ):
        mine = await one.users.add(new_user())
        theirs = await other.users.add(new_user())
        await other.commit()
        await one.commit()

    assert await ledger.get(first) == {"fp": "fp-1", "reply": {"ok": True, "data": {"id": mine.id}}}
    assert await ledger.get(second) == {
        "fp": "fp-2",
        "reply": {"ok": True, "data": {"id": theirs.id}},
    }


async def test_a_reply_renders_the_user_as_its_unit_left_it_and_none_once_deleted(
    engine: AsyncEngine, ledger: PostgresReplyLedger
) -> None:
    units = SqlAlchemyUnitOfWorkFactory(engine)
    async with units() as uow:
        user = await uow.users.add(new_user())
        await uow.commit()
    renamed, deleted = unique("slot-"), unique("slot-")

    def name_of(changed: User | None) -> dict[str, Any]:
        return {"ok": True, "data": None if changed is None else changed.full_name}

    async with units.recording(ledger.recorder(renamed, "fp", name_of))() as uow:
        await uow.users.update(user, UserChanges(full_name="First"))
        await uow.users.update(user, UserChanges(full_name="Second"))
        await uow.commit()
    async with units.recording(ledger.recorder(deleted, "fp", name_of))() as uow:
        await uow.users.update(user, UserChanges(full_name="Gone"))
        await uow.users.delete(user.id)
        await uow.commit()

    assert await ledger.get(renamed) == {"fp": "fp", "reply": {"ok": True, "data": "Second"}}
    assert await ledger.get(deleted) == {"fp": "fp", "reply": {"ok": True, "data": None}}


async def test_outside_a_recording_a_commit_keeps_nothing(engine: AsyncEngine) -> None:
    count = text("SELECT count(*) FROM idempotent_replies")
    async with engine.connect() as conn:
        before = (await conn.execute(count)).scalar_one()
    async with SqlAlchemyUnitOfWorkFactory(engine).for_request(unique("request-"))() as uow:
        await uow.users.add(new_user())
        await uow.commit()
    async with engine.connect() as conn:
        assert (await conn.execute(count)).scalar_one() == before


async def test_expired_replies_are_not_replayed_and_each_write_prunes_a_few(
    engine: AsyncEngine, ledger: PostgresReplyLedger
) -> None:
    old = [unique("old-") for _ in range(12)]
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO idempotent_replies (slot, fingerprint, reply, expires_at) "
                "SELECT s, 'fp', '\\x00'::bytea, now() - interval '1 second' "
                "FROM unnest(CAST(:s AS text[])) s"
            ),
            {"s": old},
        )
    assert await ledger.get(old[0]) is None  # expired: as if never kept

    recorder = ledger.recorder(unique("slot-"), "fp", keep)
    async with SqlAlchemyUnitOfWorkFactory(engine).recording(recorder)() as uow:
        await uow.users.add(new_user())
        await uow.commit()

    async with engine.connect() as conn:
        query = text("SELECT count(*) FROM idempotent_replies WHERE slot = ANY(:s)")
        assert (await conn.execute(query, {"s": old})).scalar_one() == 2  # ten gone at once


async def test_a_kept_reply_is_sealed_and_opens_only_in_its_own_slot_and_under_its_key(
    engine: AsyncEngine, ledger: PostgresReplyLedger, settings: Settings
) -> None:
    slot, moved = unique("slot-"), unique("slot-")
    user = new_user()
    async with SqlAlchemyUnitOfWorkFactory(engine).recording(
        ledger.recorder(slot, "fp", keep_email)
    )() as uow:
        await uow.users.add(user)
        await uow.commit()

    async with engine.begin() as conn:
        query = text("SELECT reply FROM idempotent_replies WHERE slot = :s")
        sealed = bytes((await conn.execute(query, {"s": slot})).scalar_one())
        await conn.execute(
            text(
                "INSERT INTO idempotent_replies (slot, fingerprint, reply, expires_at) "
                "SELECT :moved, fingerprint, reply, expires_at FROM idempotent_replies "
                "WHERE slot = :s"
            ),
            {"moved": moved, "s": slot},
        )
    assert user.email.encode() not in sealed
    assert await ledger.get(slot) == {"fp": "fp", "reply": {"ok": True, "data": user.email}}
    assert await ledger.get(moved) is None  # another slot's record does not open here

    lone = LoneStatements(asyncpg_dsn(settings.database_url.get_secret_value()), 1)
    other_key = AesGcmSealer(subkey(b"another key of 32 bytes or more!!", IDEMPOTENCY_REPLY))
    try:
        assert await PostgresReplyLedger(lone, 60, other_key).get(slot) is None
    finally:
        await lone.close()


def keep_email(changed: User | None) -> dict[str, Any]:
    assert changed is not None
    return {"ok": True, "data": changed.email}


async def test_a_refusal_defers_to_the_change_another_holder_committed_under_its_key(
    engine: AsyncEngine, ledger: PostgresReplyLedger, urls: Urls
) -> None:
    """A holder taken for dead commits after its successor looked in the ledger: the
    successor's work then meets that change (a registration meets its own email) and the
    caller gets the committed reply, not the refusal."""
    redis = make_redis(urls.redis)
    store = RedisIdempotencyStore(redis, 60, SEALER)
    fingerprints = subkey(b"fingerprints, 32 bytes or more", "fp")
    idempotency = Idempotency(store, anonymous, fingerprints, ledger)
    units = SqlAlchemyUnitOfWorkFactory(engine)
    key, body = unique("key-"), b'{"username": "late"}'
    slot = f"anonymous:warden.users.register:{hashlib.sha256(key.encode()).hexdigest()}"

    async def the_other_holder_commits() -> None:
        async with units.recording(ledger.recorder(slot, "fp-of-the-other-holder", keep))() as uow:
            await uow.users.add(new_user())
            await uow.commit()

    async def refused_by_the_change_just_committed(
        recorder: ReplyRecorder | None,
    ) -> dict[str, Any]:
        assert recorder is not None  # a change's work is handed the recorder of its reply
        await the_other_holder_commits()
        return failure(EmailTaken())

    try:
        reply = await idempotency.once(
            "warden.users.register", None, key, body, refused_by_the_change_just_committed, keep
        )
    finally:
        await redis.aclose()
    kept = await ledger.get(slot)
    assert kept is not None
    assert reply == kept["reply"]
    assert reply["ok"] is True


async def anonymous(_authorization: str | None) -> str:
    return "anonymous"
