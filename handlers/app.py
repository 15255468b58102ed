"""The worker: one broker, one router per area, resources opened in the lifespan."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import structlog
from faststream.rabbit import RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas import ExchangeType

from domain.accounts import Accounts
from domain.auth import Auth
from domain.listing import CursorCodec
from handlers.catalog import RPC
from handlers.idempotency import Idempotency
from handlers.rpc import DEAD_LETTER_EXCHANGE, rpc_queue

EVENTS_EXCHANGE = RabbitExchange("warden.events", type=ExchangeType.TOPIC, durable=True)
DLX = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.FANOUT, durable=True)
DLQ = RabbitQueue("warden.dlq", durable=True)

log = structlog.get_logger("warden.worker")
Probe = Callable[[], Awaitable[object]]


@dataclass(frozen=True)
class WorkerDeps:
    """What the subscribers call: the use cases and the health probes."""

    auth: Auth
    accounts: Accounts
    cursors: CursorCodec
    probes: dict[str, Probe]
    prefetch: int
    login_prefetch: int
    idempotency: Idempotency | None = None


def include_routers(broker: RabbitBroker, deps: WorkerDeps) -> None:
    """Attach every area's router to `broker`: the one place the worker's queues are listed."""
    from handlers import auth, health, users

    broker.include_router(auth.router(deps))
    broker.include_router(users.router(deps))
    broker.include_router(health.router(deps))


async def declare_topology(broker: RabbitBroker) -> None:
    """Exchanges and the dead-letter queue, declared before anything publishes to them."""
    await broker.declare_exchange(EVENTS_EXCHANGE)
    dlx = await broker.declare_exchange(DLX)
    dlq = await broker.declare_queue(DLQ)
    await dlq.bind(dlx, routing_key="")


async def adopt_rpc_queues(amqp_url: str) -> None:
    """Replace RPC queues an earlier Warden declared as classic queues by quorum queues.

    A queue cannot change its type, and declaring it with other arguments fails (and closes
    the channel), so each one is tried on a channel of its own connection. A replaced
    queue's waiting requests are dropped: their callers time out, as when no worker runs.
    Upgrade every worker: an old one cannot declare the new queues.
    """
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        for name in RPC:
            arguments = rpc_queue(name).arguments
            channel = await connection.channel()
            try:
                await channel.declare_queue(name, durable=True, arguments=arguments)
                await channel.close()
                continue
            except aio_pika.exceptions.ChannelPreconditionFailed:
                pass  # declared with other arguments: an earlier version's queue
            channel = await connection.channel()
            deleted = await channel.queue_delete(name)
            await channel.declare_queue(name, durable=True, arguments=arguments)
            await channel.close()
            log.warning(
                "rpc queue replaced by a quorum queue",
                queue=name,
                dropped_requests=deleted.message_count,
            )
    finally:
        await connection.close()
