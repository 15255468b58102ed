"""A request as the worker hands it to a use case, and the reply envelope every one gets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from contract.wire import Failure, dump
from domain.errors import WardenError
from domain.model import Origin

B = TypeVar("B")


@dataclass(frozen=True)
class Call(Generic[B]):
    """One validated request and what travels with it.

    `origin` is the one place a request's client address is decided (see origin_of): per-
    address limits count `origin.address`, events carry `origin.client_ip`.
    """

    body: B
    origin: Origin
    request_id: str  # the caller's if it keeps the contract's pattern, else a new one
    authorization: str | None = None
    idempotency_key: str | None = None


UseCase = Callable[[Call[Any]], Awaitable[Any]]
Keep = Callable[[Any], dict[str, Any]]  # a change's outcome -> the envelope kept for repeats


def success(data: Any) -> dict[str, Any]:
    """The envelope of a reply whose data its reply model has already written."""
    return {"ok": True, "data": data}


def failure(error: WardenError) -> dict[str, Any]:
    """The envelope of a refusal or a fault, written through the contract's Failure model."""
    return dump(Failure, {"error": error.as_error()})


def no_content(_: object) -> None:
    """The reply data of a change that answers nothing but success."""
    return None
