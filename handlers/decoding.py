"""Decoding a request's body: JSON, then the queue's model, errors where the caller wrote."""

from __future__ import annotations

from typing import Any, TypeVar

from faststream.message import StreamMessage
from pydantic import BaseModel, ValidationError

from contract.errors import MalformedMessage
from contract.wire import json_object, load_json
from domain.errors import FieldError, ValidationFailed

M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], body: bytes) -> M:
    """The body as `model`, or MalformedMessage / ValidationFailed; input values never echoed."""
    try:
        data = load_json(body) if body else None
    except ValueError as exc:
        raise MalformedMessage(str(exc) or None) from None
    data = json_object(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(validation_errors(exc, "body", data)) from None


def validation_errors(exc: ValidationError, where: str, data: Any) -> list[FieldError]:
    """pydantic's errors, each located where the caller wrote (or left out) the input."""
    return [
        FieldError((where, *caller_path(e["loc"], data, e["type"])), _message(e["msg"]), e["type"])
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def caller_path(loc: tuple[str | int, ...], data: Any, kind: str) -> tuple[str | int, ...]:
    """The part of a pydantic location that is a path in the caller's input.

    pydantic also names the validators it went through (a union's branches, for instance:
    `function-after[...]`, `none`): those are no place in the input, and are left out. A
    missing field keeps its name, the one place the caller should have written.
    """
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if _holds(node, part):
            node = node[part]
            path.append(part)
        elif kind == "missing" and i == len(loc) - 1 and isinstance(node, dict):
            path.append(part)
        # anything else is a validator's name (a union's branch, say), not a place in the input
    return tuple(path)


def _holds(node: Any, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


async def raw_body(message: StreamMessage[Any]) -> bytes:
    """Decoder that leaves the body as bytes, so a non-JSON body reaches `parse` as a 422."""
    return message.body


async def whole_message(message: StreamMessage[Any]) -> StreamMessage[Any]:
    """Decoder that hands the subscriber the message itself: body, headers, correlation id.

    A `RabbitMessage` (context) parameter would cost a thread hop per message: FastDepends
    resolves that synchronous context lookup on anyio's worker threads.
    """
    return message
