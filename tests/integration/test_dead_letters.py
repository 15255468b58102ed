"""Poison events on the real broker: the audit consumer dead-letters them to warden.dlq after a
bounded number of attempts (a malformed one at once) and goes on with the next event.

A worker of this module's own runs on a RabbitMQ vhost of its own, so its audit queue and its
dead-letter queue hold only what these tests publish.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import orjson
import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from handlers.events import AUDIT_DELIVERY_LIMIT, AUDIT_QUEUE
from storage.audit import PostgresAuditWriter
from tests.conftest import make_settings
from tests.support.infra import Urls, own_vhost
from tests.support.waiting import eventually
from warden.bootstrap import running_worker

WITHIN = 20.0  # generous: only to keep a broken test from hanging


@pytest_asyncio.fixture(scope="module")
async def channel(urls: Urls, database: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A channel on a vhost that only this module's in-process worker consumes."""
    with own_vhost(urls.amqp) as amqp_url:
        async with running_worker(make_settings(urls, amqp_url=amqp_url)):
            connection = await aio_pika.connect(amqp_url, timeout=10)
            try:
                yield await connection.channel()
            finally:
                await connection.close()


def cloudevent(event_id: str | None = None) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id or str(uuid.uuid4()),
        "source": "warden",
        "type": "user.updated",
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {"user": None},
    }


async def publish(
    channel: aio_pika.abc.AbstractChannel, body: bytes, message_id: str, user_id: str
) -> None:
    """Publish as Warden's relay does: as `user_id`, Warden's broker user (the audit checks)."""
    exchange = await channel.get_exchange("warden.events")
    message = aio_pika.Message(
        body,
        content_type="application/cloudevents+json",
        message_id=message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        user_id=user_id,
    )
    await exchange.publish(message, routing_key="user.updated")


async def dead_lettered(
    channel: aio_pika.abc.AbstractChannel, message_id: str
) -> aio_pika.abc.AbstractIncomingMessage:
    """The message with this id, once it reaches warden.dlq (others are left there)."""
    dlq = await channel.get_queue("warden.dlq")
    found: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def arrived() -> bool:
        message = await dlq.get(fail=False, no_ack=False)
        if message is None:
            return False
        if message.message_id != message_id:
            await message.nack(requeue=True)
            return False
        await message.ack()
        found.append(message)
        return True

    await eventually(arrived, WITHIN, f"{message_id} did not reach warden.dlq")
    return found[0]


async def audit_entries(database: str, event_id: str) -> int:
    """How many audit entries the event has now."""
    dsn = make_url(database).set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        query = "SELECT count(*) FROM audit_log WHERE event_id = $1::uuid"
        return int(await conn.fetchval(query, event_id))
    finally:
        await conn.close()


async def audited(database: str, event_id: str) -> int:
    """The event's audit entries, once the consumer has stored it."""

    async def stored() -> bool:
        return await audit_entries(database, event_id) > 0

    await eventually(stored, WITHIN, f"event {event_id} was not audited")
    return await audit_entries(database, event_id)


def first_death(message: aio_pika.abc.AbstractIncomingMessage) -> tuple[Any, Any]:
    headers = message.headers or {}
    return headers.get("x-first-death-queue"), headers.get("x-first-death-reason")


async def test_a_malformed_event_is_dead_lettered_and_the_audit_consumer_goes_on(
    channel: aio_pika.abc.AbstractChannel, database: str, warden_user: str
) -> None:
    poison = f"malformed-{uuid.uuid4().hex}"
    await publish(channel, b"{not json", poison, warden_user)

    message = await dead_lettered(channel, poison)
    assert message.body == b"{not json"
    assert first_death(message) == (AUDIT_QUEUE.name, "rejected")  # at once, never retried

    healthy = cloudevent()
    await publish(channel, orjson.dumps(healthy), healthy["id"], warden_user)
    assert await audited(database, healthy["id"]) == 1


async def test_an_event_whose_storage_always_fails_is_retried_a_bounded_number_of_times(
    channel: aio_pika.abc.AbstractChannel,
    database: str,
    warden_user: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    poison = cloudevent()
    attempts = 0
    store = PostgresAuditWriter.store

    async def failing_store(self: PostgresAuditWriter, event: dict[str, Any]) -> bool:
        nonlocal attempts
        if event.get("id") != poison["id"]:
            return await store(self, event)
        attempts += 1
        raise RuntimeError("the audit log refuses this event")

    monkeypatch.setattr(PostgresAuditWriter, "store", failing_store)
    await publish(channel, orjson.dumps(poison), poison["id"], warden_user)

    message = await dead_lettered(channel, poison["id"])
    assert first_death(message) == (AUDIT_QUEUE.name, "delivery_limit")
    assert orjson.loads(message.body) == poison  # kept whole, to be replayed once fixed
    assert attempts == AUDIT_DELIVERY_LIMIT + 1  # the first delivery and its redeliveries

    healthy = cloudevent()
    await publish(channel, orjson.dumps(healthy), healthy["id"], warden_user)
    assert await audited(database, healthy["id"]) == 1
    # The consumer went past an event published after the poison's death, and the poison
    # was not tried again meanwhile: it does not loop.
    assert attempts == AUDIT_DELIVERY_LIMIT + 1
    assert await audit_entries(database, poison["id"]) == 0
