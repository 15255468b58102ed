"""A request as the worker hands it to a use case, and the reply envelope every one gets."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from contract.wire import Failure, dump
from domain.errors import WardenError
from domain.model import Origin
from domain.ports import UnitOfWork
from storage.idempotency import ReplyRecorder

B = TypeVar("B")


class RequestUnits(Protocol):
    """Opens units of work, and binds them to one request (storage.uow)."""

    def __call__(self) -> UnitOfWork: ...

    def for_request(self, request_id: str) -> RequestUnits:
        """Units whose events carry the request's id."""
        ...

    def recording(self, recorder: ReplyRecorder) -> RequestUnits:
        """Units that write an idempotent change's reply in the change's transaction."""
        ...


@dataclass(frozen=True)
class Call(Generic[B]):
    """One validated request and what travels with it.

    `origin` is the one place a request's client address is decided (see origin_of): per-
    address limits count `origin.address`, events carry `origin.client_ip`. `units` are the
    request's units of work: a use case that writes runs on them (`Accounts.using`), so its
    events carry the request id and an idempotent change keeps its reply with it.
    """

    body: B
    origin: Origin
    request_id: str  # the caller's if it keeps the contract's pattern, else a new one
    units: RequestUnits
    authorization: str | None = None
    idempotency_key: str | None = None


UseCase = Callable[[Call[Any]], Awaitable[Any]]
Keep = Callable[[Any], dict[str, Any]]  # the user a change left -> the envelope kept for it


def success(data: Any) -> dict[str, Any]:
    """The envelope of a reply whose data its reply model has already written."""
    return {"ok": True, "data": data}


def failure(error: WardenError) -> dict[str, Any]:
    """The envelope of a refusal or a fault, written through the contract's Failure model."""
    return dump(Failure, {"error": error.as_error()})


def no_content(_: object) -> None:
    """The reply data of a change that answers nothing but success."""
    return None
