"""The worker: one broker, one router per area, resources opened in the lifespan."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faststream.rabbit import RabbitBroker, RabbitExchange, RabbitQueue, RabbitRouter
from faststream.rabbit.schemas import ExchangeType

from contract.catalog import RPC
from domain.accounts import Accounts
from domain.auth import Auth
from domain.listing import CursorCodec
from handlers.idempotency import Idempotency, Replay
from handlers.rpc import DEAD_LETTER_EXCHANGE, RedeliveryCounter, UseCase, rpc

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
    edge_user: str  # the broker user whose x-client-ip is believed
    idempotency: Idempotency | None = None
    redeliveries: RedeliveryCounter | None = None

    def rpc(
        self,
        router: RabbitRouter,
        queue: str,
        *,
        bcrypt: bool = False,
        reply: Callable[[Any], Any] | None = None,
        replay: Replay | None = None,
    ) -> Callable[[UseCase], UseCase]:
        """`handlers.rpc.rpc` with this worker's prefetch, idempotency and redelivery count.

        `bcrypt` queues get the smaller prefetch: their messages wait for the hash pool.
        Idempotency-Keys are honoured on the queues the catalogue says.
        """
        prefetch = self.login_prefetch if bcrypt else self.prefetch
        idempotency = self.idempotency if RPC[queue].idempotent else None
        return rpc(
            router, queue, prefetch, self.edge_user, idempotency, reply, self.redeliveries, replay
        )


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
