"""The reply ledger on real Postgres: a change's reply stands or falls with the change."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.errors import EmailTaken
from domain.model import NewUser
from handlers.envelope import failure
from handlers.idempotency import Idempotency
from storage.db import make_engine
from storage.idempotency import PostgresReplyLedger, RedisIdempotencyStore
from storage.lone import LoneStatements
from storage.redis_store import make_redis
from storage.uow import SqlAlchemyUnitOfWorkFactory
from tests.conftest import unique
from tests.support.infra import Urls
from warden.bootstrap import asyncpg_dsn
from warden.keys import IDEMPOTENCY_REPLY, AesGcmSealer, subkey
from warden.settings import Settings

SEALER = AesGcmSealer(subkey(b"a key of this module's own, 32 bytes+", IDEMPOTENCY_REPLY))


def keep(outcome: Any) -> dict[str, Any]:
    return {"ok": True, "data": {"id": outcome.id}}


@pytest_asyncio.fixture
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database, 2, 0)
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture
async def ledger(settings: Settings) -> AsyncIterator[PostgresReplyLedger]:
    lone = LoneStatements(asyncpg_dsn(settings), 2)
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
    with ledger.recording(kept, "fp-1", keep):
        async with units() as uow:
            user = await uow.users.add(new_user())
            await uow.commit(user)
    with ledger.recording(dropped, "fp-2", keep):
        async with units() as uow:
            await uow.users.add(new_user())  # and the unit ends without a commit

    assert await ledger.get(kept) == {"fp": "fp-1", "reply": {"ok": True, "data": {"id": user.id}}}
    assert await ledger.get(dropped) is None


async def test_outside_a_recording_a_commit_keeps_nothing(engine: AsyncEngine) -> None:
    count = text("SELECT count(*) FROM idempotent_replies")
    async with engine.connect() as conn:
        before = (await conn.execute(count)).scalar_one()
    async with SqlAlchemyUnitOfWorkFactory(engine)() as uow:
        user = await uow.users.add(new_user())
        await uow.commit(user)
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

    with ledger.recording(unique("slot-"), "fp", keep):
        async with SqlAlchemyUnitOfWorkFactory(engine)() as uow:
            await uow.commit(await uow.users.add(new_user()))

    async with engine.connect() as conn:
        query = text("SELECT count(*) FROM idempotent_replies WHERE slot = ANY(:s)")
        assert (await conn.execute(query, {"s": old})).scalar_one() == 2  # ten gone at once


async def test_a_kept_reply_is_sealed_and_opens_only_in_its_own_slot_and_under_its_key(
    engine: AsyncEngine, ledger: PostgresReplyLedger, settings: Settings
) -> None:
    slot, moved = unique("slot-"), unique("slot-")
    user = new_user()
    with ledger.recording(slot, "fp", keep_email):
        async with SqlAlchemyUnitOfWorkFactory(engine)() as uow:
            await uow.commit(await uow.users.add(user))

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

    lone = LoneStatements(asyncpg_dsn(settings), 1)
    other_key = AesGcmSealer(subkey(b"another key of 32 bytes or more!!", IDEMPOTENCY_REPLY))
    try:
        assert await PostgresReplyLedger(lone, 60, other_key).get(slot) is None
    finally:
        await lone.close()


def keep_email(outcome: Any) -> dict[str, Any]:
    return {"ok": True, "data": outcome.email}


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
        with ledger.recording(slot, "fp-of-the-other-holder", keep):
            async with units() as uow:
                await uow.commit(await uow.users.add(new_user()))

    async def refused_by_the_change_just_committed() -> dict[str, Any]:
        # In a context of its own, as the other worker's task would be.
        await asyncio.create_task(the_other_holder_commits(), context=contextvars.Context())
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
