"""A subscriber reads the body its queue's catalogue entry describes, or the worker won't start."""

from __future__ import annotations

import pytest
from faststream.rabbit import RabbitRouter

from contract.wire import LoginRequest, RefreshRequest
from handlers.envelope import Call
from handlers.rpc import rpc
from tests.unit.fakes import FakeClock, FakeUnitOfWorkFactory


async def log_in(call: Call[LoginRequest]) -> None:
    """Reads the login's body."""


async def log_in_with_a_refresh_body(call: Call[RefreshRequest]) -> None:
    """Reads another queue's body."""


async def log_in_with_anything(call: object) -> None:
    """Declares no request type."""


def register(use_case: object, queue: str = "warden.auth.login") -> RabbitRouter:
    router = RabbitRouter()
    units = FakeUnitOfWorkFactory(FakeClock())
    rpc(router, queue, prefetch=1, edge_user="edge", units=units)(use_case)  # type: ignore[arg-type]
    return router


def test_a_use_case_declaring_its_queues_request_model_is_subscribed() -> None:
    router = register(log_in)

    [subscriber] = router.subscribers
    assert subscriber.queue.name == "warden.auth.login"  # type: ignore[attr-defined]


def test_a_use_case_declaring_another_queues_request_model_is_refused_at_registration() -> None:
    with pytest.raises(TypeError, match=r"declares Call\[RefreshRequest\], but warden.auth.login"):
        register(log_in_with_a_refresh_body)


def test_a_use_case_declaring_no_request_model_is_refused_at_registration() -> None:
    with pytest.raises(TypeError, match=r"declares nothing, but .* takes Call\[LoginRequest\]"):
        register(log_in_with_anything)
