"""A deployment from before quorum queues, on the real broker: its classic queues of the same
names make the new worker wait with a clear error (never consume, never crash), and
`warden migrate-queues` moves them to quorum queues with their messages, after which the
waiting worker starts by itself.

The old topology is the one this version replaced: classic RPC queues and a classic
warden.dlq, and a quorum warden.audit without confirmed dead-lettering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

import aio_pika
import aiormq
import orjson
import pytest

from handlers import topology
from handlers.queues import DLQ, rpc_queue
from handlers.topology import MIGRATE_COMMAND, Declared, mismatched
from tests.conftest import make_settings
from tests.integration.test_dead_letters import cloudevent
from tests.support.infra import Urls, own_vhost
from tests.support.logs import captured_logs
from tests.support.waiting import eventually
from warden.bootstrap import running_worker
from warden.cli import migrate_queues
from warden.settings import Settings

WITHIN = 30.0
RPC = "warden.users.me"
OLD_RPC: dict[str, Any] = {"x-dead-letter-exchange": "warden.dlx"}
OLD_AUDIT: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-delivery-limit": 5,
    "x-dead-letter-exchange": "warden.dlx",
}


async def old_topology(channel: aio_pika.abc.AbstractChannel, reply_to: str) -> None:
    """The queues as the previous version declared them, each holding messages."""
    events = await channel.declare_exchange("warden.events", "topic", durable=True)
    dlx = await channel.declare_exchange("warden.dlx", "fanout", durable=True)
    dlq = await channel.declare_queue("warden.dlq", durable=True)
    await dlq.bind(dlx, routing_key="")
    audit = await channel.declare_queue("warden.audit", durable=True, arguments=OLD_AUDIT)
    await audit.bind(events, routing_key="#")
    await channel.declare_queue(RPC, durable=True, arguments=OLD_RPC)
    for n in range(3):
        message = aio_pika.Message(f"dead {n}".encode(), message_id=f"dead-{n}", delivery_mode=2)
        await channel.default_exchange.publish(message, routing_key="warden.dlq")
    request = aio_pika.Message(b"{}", correlation_id="waiting", reply_to=reply_to)
    await channel.default_exchange.publish(request, routing_key=RPC)


async def event(channel: aio_pika.abc.AbstractChannel, user: str) -> str:
    """Publish one event as Warden's relay does; its id."""
    body = cloudevent()
    exchange = await channel.get_exchange("warden.events")
    await exchange.publish(
        aio_pika.Message(orjson.dumps(body), message_id=body["id"], user_id=user, delivery_mode=2),
        routing_key="user.updated",
    )
    return str(body["id"])


async def count(connection: aio_pika.abc.AbstractConnection, name: str) -> int:
    async with connection.channel() as channel:
        queue = await channel.declare_queue(name, passive=True)
        assert queue.declaration_result is not None
        return int(queue.declaration_result.message_count or 0)


@contextlib.asynccontextmanager
async def vhost(urls: Urls) -> AsyncIterator[tuple[Settings, aio_pika.abc.AbstractConnection]]:
    with own_vhost(urls.amqp) as amqp_url:
        connection = await aio_pika.connect(amqp_url, timeout=10)
        try:
            yield make_settings(urls, amqp_url=amqp_url), connection
        finally:
            await connection.close()


async def test_a_worker_waits_on_classic_queues_and_migrate_queues_moves_them_with_messages(
    urls: Urls, database: str, warden_user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(topology, "RECHECK_EVERY", 0.3)
    async with vhost(urls) as (settings, connection):
        channel = await connection.channel()
        replies = await channel.declare_queue(exclusive=True)
        await old_topology(channel, replies.name)
        before = await event(channel, warden_user)  # waits in the old warden.audit

        stop = asyncio.Event()
        started = asyncio.Event()

        async def worker() -> None:
            async with running_worker(settings):
                started.set()
                await stop.wait()

        with captured_logs() as logs:
            task = asyncio.create_task(worker())
            try:
                # It waits: it neither consumes from a classic queue nor crashes.
                await eventually(
                    lambda: any(MIGRATE_COMMAND in str(r.get("event")) for r in logs.lines()),
                    WITHIN,
                    "the worker logged no error naming the migration",
                )
                await asyncio.sleep(1.0)
                assert not task.done()
                assert not started.is_set()
                named = next(r for r in logs.lines() if MIGRATE_COMMAND in str(r.get("event")))
                assert named["level"] == "error"
                assert {RPC, "warden.dlq", "warden.audit"} <= set(named["queues"])
                assert await count(connection, RPC) == 1  # the request still waits, untaken

                await migrate_queues(settings)
                await asyncio.wait_for(started.wait(), WITHIN)  # it started by itself
                after = await event(channel, warden_user)

                # The request that waited in the classic queue is answered from the quorum one.
                reply = await next_message(replies)
                assert reply.correlation_id == "waiting"
                assert orjson.loads(reply.body)["error"]["status"] == 401
                # Both events reached the audit log: the one moved, the one sent after.
                await eventually(
                    lambda: audited(database, [before, after]), WITHIN, "events not audited"
                )
                assert await count(connection, "warden.dlq") == 3
            finally:
                stop.set()
                if not started.is_set():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, WITHIN)

        # Every queue is now of the kind this version declares; the old kind is refused.
        now = [Declared(rpc_queue(RPC)), Declared(DLQ)]
        assert await mismatched(connection, now) == []
        old = [Declared(aio_queue(RPC, OLD_RPC)), Declared(aio_queue("warden.dlq", {}))]
        assert await mismatched(connection, old) == [RPC, "warden.dlq"]
        # Run again: nothing to move, nothing lost.
        await migrate_queues(settings)
        assert await count(connection, "warden.dlq") == 3
        with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):
            async with connection.channel() as check:
                await check.declare_queue("warden.dlq.migrating", passive=True)


def aio_queue(name: str, arguments: dict[str, Any]) -> Any:
    from faststream.rabbit import RabbitQueue

    return RabbitQueue(name, durable=True, arguments=cast(Any, arguments))


async def next_message(
    queue: aio_pika.abc.AbstractQueue,
) -> aio_pika.abc.AbstractIncomingMessage:
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def arrived() -> bool:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            taken.append(message)
        return message is not None

    await eventually(arrived, WITHIN, f"no message on {queue.name}")
    return taken[0]


async def audited(database: str, event_ids: list[str]) -> bool:
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(database).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM audit_log WHERE event_id = ANY($1::uuid[])", event_ids
        )
    finally:
        await conn.close()
    return bool(found == len(event_ids))
