"""The worker's queues on the broker: declared before it consumes, checked, and migrated.

A queue's type and arguments are fixed when it is first declared; declaring it again with
others is refused (406 PRECONDITION_FAILED). A deployment from before quorum queues has
classic queues of the same names, so a new worker would fail at its first declare and, if
its supervisor restarts it, crash-loop. Instead the worker checks every queue first
(`mismatched`), and while any differs it logs one clear error naming them and the command
that fixes it, then checks again: it never consumes from a queue of the wrong kind, and it
starts by itself once `warden migrate-queues` (`migrate`) has moved them over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractRobustConnection
from faststream.rabbit import RabbitBroker, RabbitExchange, RabbitQueue

from handlers.nodes import connect
from handlers.queues import DLQ, DLX, EVENTS_EXCHANGE, MAIL_QUEUE, MAIL_RETRY_QUEUE

log = structlog.get_logger("warden.topology")

MIGRATING_SUFFIX = ".migrating"
RECHECK_EVERY = 10.0  # seconds between checks while a queue is of the wrong kind
MIGRATE_COMMAND = "warden migrate-queues"


@dataclass(frozen=True)
class Declared:
    """One queue as the worker declares it, and the exchange it is bound to (if any)."""

    queue: RabbitQueue
    exchange: RabbitExchange | None = None

    @property
    def name(self) -> str:
        return self.queue.name

    @property
    def arguments(self) -> dict[str, Any]:
        return dict(self.queue.arguments or {})


def worker_queues(broker: RabbitBroker) -> list[Declared]:
    """Every queue `broker`'s subscribers consume, and warden.dlq, in a stable order."""
    found = {
        DLQ.name: Declared(DLQ, DLX),
        MAIL_RETRY_QUEUE.name: Declared(MAIL_RETRY_QUEUE),  # consumed by nobody: listed here
    }
    for subscriber in broker.subscribers:
        queue: RabbitQueue = subscriber.queue  # type: ignore[attr-defined]
        exchange: RabbitExchange = subscriber.exchange  # type: ignore[attr-defined]
        found[queue.name] = Declared(queue, exchange if exchange.name else None)
    return [found[name] for name in sorted(found)]


async def declare_topology(broker: RabbitBroker) -> None:
    """Exchanges and the dead-letter queue, declared before anything publishes to them."""
    await broker.declare_exchange(EVENTS_EXCHANGE)
    dlx = await broker.declare_exchange(DLX)
    dlq = await broker.declare_queue(DLQ)
    await dlq.bind(dlx, routing_key="")
    # Before the relay publishes a job to them: an unroutable job would be dropped.
    await broker.declare_queue(MAIL_QUEUE)
    await broker.declare_queue(MAIL_RETRY_QUEUE)


async def mismatched(connection: AbstractConnection, queues: Sequence[Declared]) -> list[str]:
    """The queues that exist with another type or other arguments than `queues` declare.

    Declares each as the worker will (creating the missing ones, as the worker would); a
    refused declare closes its channel, so the next one gets a new channel.
    """
    wrong: list[str] = []
    channel: AbstractChannel | None = None
    try:
        for declared in queues:
            if channel is None or channel.is_closed:
                channel = await connection.channel()
            try:
                await _declare(channel, declared.name, declared.arguments)
            except aiormq.exceptions.ChannelPreconditionFailed:
                wrong.append(declared.name)
    finally:
        if channel is not None:
            with contextlib.suppress(Exception):
                await channel.close()
    return wrong


async def wait_until_queues_match(broker: RabbitBroker, recheck: float | None = None) -> None:
    """Return once every queue of the worker is of the kind it declares; log while not."""
    recheck = RECHECK_EVERY if recheck is None else recheck
    queues = worker_queues(broker)
    while wrong := await _mismatched_on(broker, queues):
        log.error(
            "queues exist with another type or other arguments than this worker declares"
            f" (a deployment from before quorum queues?); run `{MIGRATE_COMMAND}` to move"
            " them over with their messages. Not consuming until then; checking again"
            f" every {recheck:g} s",
            queues=wrong,
        )
        await asyncio.sleep(recheck)


async def _mismatched_on(broker: RabbitBroker, queues: Sequence[Declared]) -> list[str]:
    """`mismatched` on a plain connection to the node `broker` is on: a robust channel that
    a refused declare closes would reopen and declare the same again, for ever."""
    robust = await broker.connect()
    connection = await connect(str(robust.url), within=10)
    try:
        return await mismatched(connection, queues)
    finally:
        await connection.close()


async def migrate(connection: AbstractConnection, queues: Sequence[Declared]) -> list[str]:
    """Bring every queue in `queues` to its declared kind, keeping its messages; the names moved.

    For each queue that differs: a temporary queue of the new kind (`<name>.migrating`) takes
    the queue's bindings, so events published meanwhile land there; the old queue's messages
    are moved to it (each acknowledged only after the broker confirmed its copy); the old
    queue is deleted and declared anew; the messages move back the same way, the temporary
    queue's bindings go and it is deleted. Requests published to an RPC queue in the moment
    between its deletion and its new declaration are not routed (their callers time out and
    retry); run it with the workers stopped or while a deployment rolls. Safe to run again,
    also after an interruption (a leftover temporary queue is emptied into its queue).
    """
    moved: list[str] = []
    user = getattr(connection, "url", None) and connection.url.user  # type: ignore[attr-defined]
    for declared in queues:
        channel = await connection.channel(publisher_confirms=True)
        try:
            exists = await _exists(connection, declared.name)
            temporary = declared.name + MIGRATING_SUFFIX
            if exists and await _matches(connection, declared):
                if await _exists(connection, temporary):  # an interrupted run: finish it
                    await _move(channel, temporary, declared.name, user)
                    await _drop(channel, temporary, declared, user)
                continue
            if not exists:
                await _declare(channel, declared.name, declared.arguments)
                await _bind(channel, declared.name, declared)
                continue
            log.info("migrating queue", queue=declared.name)
            await _declare(channel, temporary, declared.arguments)
            await _bind(channel, temporary, declared)
            await _move(channel, declared.name, temporary, user)
            await channel.queue_delete(declared.name)
            await channel.close()
            # A new channel for the new queue: RabbitMQ 3.10 crashes a channel that published
            # to a queue deleted and declared anew under the same name with another type.
            channel = await connection.channel(publisher_confirms=True)
            await _declare(channel, declared.name, declared.arguments)
            await _bind(channel, declared.name, declared)
            await _move(channel, temporary, declared.name, user)
            await _drop(channel, temporary, declared, user)
            moved.append(declared.name)
            log.info("queue migrated", queue=declared.name)
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
    return moved


async def _declare(channel: AbstractChannel, name: str, arguments: dict[str, Any]) -> None:
    await channel.declare_queue(name, durable=True, arguments=arguments)


async def _exists(connection: AbstractConnection, name: str) -> bool:
    channel = await connection.channel()
    try:
        await channel.declare_queue(name, passive=True)
        return True
    except aiormq.exceptions.ChannelNotFoundEntity:
        return False
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def _matches(connection: AbstractConnection, declared: Declared) -> bool:
    return not await mismatched(connection, [declared])


async def _bind(channel: AbstractChannel, name: str, declared: Declared) -> None:
    if declared.exchange is None:
        return
    queue = await channel.get_queue(name, ensure=False)
    await queue.bind(declared.exchange.name, routing_key=declared.queue.routing())


async def _drop(channel: AbstractChannel, name: str, declared: Declared, user: str | None) -> None:
    """Unbind the temporary queue, move what reached it meanwhile, delete it."""
    if declared.exchange is not None:
        queue = await channel.get_queue(name, ensure=False)
        await queue.unbind(declared.exchange.name, routing_key=declared.queue.routing())
    await _move(channel, name, declared.name, user)
    await channel.queue_delete(name)


async def _move(channel: AbstractChannel, source: str, target: str, user: str | None) -> int:
    """Move every message of `source` to `target`, each acked once its copy is confirmed.

    A message keeps its user_id when it is this connection's user (Warden's events); RabbitMQ
    refuses to publish any other, so a request another broker user sent loses it (the worker
    then counts it as from an unknown publisher, never as the edge's).
    """
    queue = await channel.get_queue(source, ensure=False)
    count = 0
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        copy = aio_pika.Message(
            message.body,
            headers=message.headers,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            delivery_mode=message.delivery_mode,
            priority=message.priority,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            expiration=message.expiration,
            message_id=message.message_id,
            timestamp=message.timestamp,
            type=message.type,
            user_id=message.user_id if message.user_id == user else None,
            app_id=message.app_id,
        )
        await channel.default_exchange.publish(copy, routing_key=target)  # confirmed
        await message.ack()
        count += 1
    return count


def current_connection(broker: RabbitBroker) -> AbstractRobustConnection | None:
    return broker._connection
