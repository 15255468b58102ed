"""The worker: one broker, one router per area, resources opened in the lifespan."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from handlers import auth, health, sessions, users
from handlers.deps import WorkerDeps
from handlers.queues import DLQ, DLX, EVENTS_EXCHANGE


def include_routers(broker: RabbitBroker, deps: WorkerDeps) -> None:
    """Attach every area's router to `broker`: the one place the worker's queues are listed."""
    broker.include_router(auth.router(deps))
    broker.include_router(users.router(deps))
    broker.include_router(sessions.router(deps))
    broker.include_router(health.router(deps))


async def declare_topology(broker: RabbitBroker) -> None:
    """Exchanges and the dead-letter queue, declared before anything publishes to them."""
    await broker.declare_exchange(EVENTS_EXCHANGE)
    dlx = await broker.declare_exchange(DLX)
    dlq = await broker.declare_queue(DLQ)
    await dlq.bind(dlx, routing_key="")
