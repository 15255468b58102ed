"""The worker: one broker, one router per area, resources opened in the lifespan."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from faststream.rabbit import RabbitBroker, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas import ExchangeType

from domain.accounts import Accounts
from domain.auth import Auth
from domain.listing import CursorCodec
from handlers.idempotency import Idempotency
from handlers.rpc import DEAD_LETTER_EXCHANGE

EVENTS_EXCHANGE = RabbitExchange("warden.events", type=ExchangeType.TOPIC, durable=True)
DLX = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.FANOUT, durable=True)
DLQ = RabbitQueue("warden.dlq", durable=True)

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
