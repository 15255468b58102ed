"""The worker: one broker, one router per area, resources opened in the lifespan."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from handlers import auth, health, mfa, recovery, sessions, users
from handlers.deps import WorkerDeps


def include_routers(broker: RabbitBroker, deps: WorkerDeps) -> None:
    """Attach every area's router to `broker`: the one place the worker's queues are listed."""
    broker.include_router(auth.router(deps))
    broker.include_router(mfa.router(deps))
    broker.include_router(users.router(deps))
    broker.include_router(recovery.router(deps, deps.recovery, deps.background))
    broker.include_router(sessions.router(deps))
    broker.include_router(health.router(deps))
