"""Events leave through the outbox onto the `warden.events` exchange, and the audit log keeps
each one once."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest_asyncio
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.events import Event, session_revoked
from domain.model import EndedSession, RevokeReason, UserChanges, UserView
from storage.audit import PostgresAuditWriter
from storage.db import asyncpg_dsn, make_engine
from storage.lone import LoneStatements
from storage.outbox import SqlAlchemyEventOutbox
from storage.tables import audit_log, outbox
from storage.uow import SqlAlchemyUnitOfWorkFactory
from tests.conftest import PASSWORD, USER_FIELDS, unique
from tests.support.amqp import AmqpCaller
from tests.support.events import EventTap
from tests.support.waiting import eventually
from warden.settings import Settings

WITHIN = 10.0  # generous: only to keep a broken test from hanging


@pytest_asyncio.fixture(scope="module")
async def engine(database: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(database, pool_size=2, max_overflow=2)
    yield engine
    await engine.dispose()


async def register(amqp: AmqpCaller, **headers: Any) -> dict[str, Any]:
    name = unique()
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    reply = await amqp.call("warden.users.register", body, **headers)
    assert reply["ok"] is True, reply
    user: dict[str, Any] = reply["data"]
    return user


async def counted(engine: AsyncEngine, query: Any, expected: int) -> None:
    """Until `query` (a count) is `expected`, within WITHIN seconds."""

    async def reached() -> bool:
        async with engine.connect() as conn:
            return bool(await conn.scalar(query) == expected)

    await eventually(reached, WITHIN, f"the count never reached {expected}: {query}")


def outbox_rows(event_id: str) -> Any:
    return select(func.count()).select_from(outbox).where(outbox.c.event_id == event_id)


def audit_rows(event_id: str) -> Any:
    return select(func.count()).select_from(audit_log).where(audit_log.c.event_id == event_id)


async def test_a_registration_is_published_as_a_persistent_cloudevent_without_secrets(
    amqp: AmqpCaller, tap: EventTap
) -> None:
    request_id = unique("req-")
    user = await register(amqp, x_request_id=request_id)
    arrival = await tap.wait_for("user.registered", str(user["id"]))
    message, event = arrival.message, arrival.event
    assert message.content_type == "application/cloudevents+json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.routing_key == "user.registered"
    assert message.message_id == event["id"]
    assert message.headers.get("x-request-id") == request_id
    assert event["specversion"] == "1.0"
    assert event["source"] == "warden"
    assert event["subject"] == str(user["id"])
    assert event["datacontenttype"] == "application/json"
    assert event["time"].endswith("Z")
    assert str(uuid.UUID(event["id"])) == event["id"]  # a UUID in its canonical form
    assert event["data"]["user"] == user
    assert set(event["data"]["user"]) == USER_FIELDS
    assert PASSWORD.encode() not in message.body
    assert b"password" not in message.body
    assert b"$2b$" not in message.body  # no bcrypt hash


async def test_a_published_event_leaves_the_outbox_and_is_audited_exactly_once(
    amqp: AmqpCaller, tap: EventTap, engine: AsyncEngine
) -> None:
    user = await register(amqp)
    event = (await tap.wait_for("user.registered", str(user["id"]))).event
    await counted(engine, outbox_rows(event["id"]), 0)
    await counted(engine, audit_rows(event["id"]), 1)
    async with engine.connect() as conn:
        stored = (
            (await conn.execute(select(audit_log).where(audit_log.c.event_id == event["id"])))
            .mappings()
            .one()
        )
    assert (stored["type"], stored["user_id"]) == ("user.registered", user["id"])
    assert stored["data"] == event["data"]


async def test_storing_one_cloudevent_twice_keeps_it_once(
    amqp: AmqpCaller, tap: EventTap, engine: AsyncEngine, settings: Settings
) -> None:
    user = await register(amqp)
    delivered = (await tap.wait_for("user.registered", str(user["id"]))).event
    await counted(engine, audit_rows(delivered["id"]), 1)
    redelivery = delivered | {"id": str(uuid.uuid4())}
    lone = LoneStatements(asyncpg_dsn(settings.database_url.get_secret_value()), 1)
    try:
        audit = PostgresAuditWriter(lone)
        assert await audit.store(delivered) is False  # the audit consumer stored it already
        assert await audit.store(redelivery) is True
        assert await audit.store(redelivery) is False
    finally:
        await lone.close()
    async with engine.connect() as conn:
        assert await conn.scalar(audit_rows(delivered["id"])) == 1
        assert await conn.scalar(audit_rows(redelivery["id"])) == 1


async def test_every_one_of_many_registrations_is_delivered_and_its_latency_printed(
    amqp: AmqpCaller, tap: EventTap
) -> None:
    """Every registration's event arrives; prints how long after the reply (never asserted)."""
    latencies = []
    for _ in range(20):
        user = await register(amqp)
        replied = time.perf_counter()
        arrival = await tap.wait_for("user.registered", str(user["id"]))
        latencies.append((arrival.at - replied) * 1000)
    ordered = sorted(latencies)
    print(
        f"\ncommit-to-delivery after the register reply over {len(ordered)} registrations: "
        f"p50 {statistics.median(ordered):.2f} ms, p90 {ordered[int(len(ordered) * 0.9)]:.2f} ms, "
        f"min {ordered[0]:.2f} ms, max {ordered[-1]:.2f} ms (negative: the event came first)"
    )


async def test_events_committed_alone_go_out_in_order_in_one_statement(
    amqp: AmqpCaller, tap: EventTap, settings: Settings
) -> None:
    """A unit of work that wrote only events (a login, a logout) commits them as one lone
    statement with its NOTIFY: the relay wakes for them and keeps their order."""
    user = await register(amqp)
    now = datetime.now(UTC)
    fields = {k: v for k, v in user.items() if k not in ("created_at", "updated_at")}
    view = UserView(**fields, created_at=now, updated_at=now)
    # Each with the data its type carries: an event its model does not describe is refused.
    extras: dict[str, dict[str, Any]] = {
        "user.logged_in": {"session_id": "s", "amr": ["pwd"]},
        "user.logged_out": {"session_id": "s"},
        "user.login_failed": {"reason": "invalid_credentials"},
    }
    kinds = list(extras)
    outbox = SqlAlchemyEventOutbox()
    for kind in kinds:
        outbox.add(Event(kind, now, view, extras[kind]))
    lone = LoneStatements(asyncpg_dsn(settings.database_url.get_secret_value()), 1)
    try:
        await outbox.flush_alone(lone)
        await outbox.flush_alone(lone)  # nothing pending: nothing sent
    finally:
        await lone.close()
    arrived = [await tap.wait_for(kind, str(user["id"])) for kind in kinds]
    assert [a.at for a in arrived] == sorted(a.at for a in arrived)
    assert outbox.pending == []


async def test_a_unit_of_work_may_commit_again_and_its_later_events_go_out_too(
    amqp: AmqpCaller, tap: EventTap, revocations: EventTap, engine: AsyncEngine, settings: Settings
) -> None:
    """A deactivation commits, then announces a session that raced it in a second commit of
    the same unit (domain.accounts): both commits stand, and both events are published."""
    user = await register(amqp)
    lone = LoneStatements(asyncpg_dsn(settings.database_url.get_secret_value()), 1)
    units = SqlAlchemyUnitOfWorkFactory(engine, lone)
    raced = EndedSession(f"raced-{uuid.uuid4().hex}", user["id"], datetime.now(UTC))
    try:
        async with units() as uow:
            found = await uow.users.get(user["id"])
            assert found is not None
            changed = await uow.users.update(found, UserChanges(full_name="Committed Twice"))
            uow.outbox.add(Event("user.updated", datetime.now(UTC), changed.view()))
            await uow.commit()
            uow.outbox.add(session_revoked(raced, RevokeReason.DEACTIVATED, datetime.now(UTC)))
            await uow.commit()
    finally:
        await lone.close()

    updated = await tap.wait_for("user.updated", str(user["id"]))
    assert updated.event["data"]["user"]["full_name"] == "Committed Twice"
    announced = await revocations.wait_for("session.revoked", str(user["id"]))
    assert announced.event["data"]["session_id"] == raced.session_id
