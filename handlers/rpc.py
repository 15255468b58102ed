"""The RPC machinery every subscriber shares: decode, validate, call one use case, reply.

A handler here never raises: FastStream publishes no reply when one does, and the caller
would only time out. Every outcome, a fault included, is the contract's envelope.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

import aiormq
import orjson
import structlog
from aio_pika import IncomingMessage
from faststream import AckPolicy
from faststream.message import StreamMessage
from faststream.rabbit import Channel, RabbitQueue, RabbitRouter
from pamqp.commands import Basic
from pydantic import BaseModel, ValidationError

from domain.errors import (
    FieldError,
    InternalError,
    MalformedMessage,
    UpstreamTimeout,
    ValidationFailed,
    WardenError,
)
from handlers import metrics
from handlers.catalog import RPC
from handlers.idempotency import Idempotency
from handlers.wire import load_json

log = structlog.get_logger("warden.worker")

M = TypeVar("M", bound=BaseModel)
B = TypeVar("B")
DEAD_LETTER_EXCHANGE = "warden.dlx"
# A handler never raises, so a request goes back to its queue only when its worker died (or
# lost its channel) while holding it: two more deliveries, then warden.dlq.
RPC_REDELIVERY_LIMIT = 2
DEADLINE_HEADER = "x-deadline"  # epoch milliseconds after which the caller no longer waits


@dataclass(frozen=True)
class Call(Generic[B]):
    """One validated request and the headers that travel with it."""

    body: B
    authorization: str | None = None
    client_ip: str | None = None
    request_id: str | None = None
    idempotency_key: str | None = None


UseCase = Callable[[Call[Any]], Awaitable[Any]]
Keep = Callable[[Any], dict[str, Any]]  # a change's outcome -> the envelope kept for repeats


def success(data: Any) -> dict[str, Any]:
    return {"ok": True, "data": data}


def failure(error: WardenError) -> dict[str, Any]:
    return {"ok": False, "error": error.as_error()}


def parse(model: type[M], body: bytes) -> M:
    """The body as `model`, or MalformedMessage / ValidationFailed; input values never echoed."""
    try:
        data = load_json(body) if body else None
    except ValueError as exc:
        raise MalformedMessage(str(exc) or None) from None
    if not isinstance(data, dict):
        raise ValidationFailed(
            [FieldError(("body",), "the body must be a JSON object", "dict_type")]
        )
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


async def serve(
    queue: str,
    model: type[M],
    use_case: UseCase,
    body: bytes,
    headers: Mapping[str, Any],
    idempotency: Idempotency | None = None,
    keep: Keep | None = None,
) -> dict[str, Any]:
    """Run one request to its envelope, logging one line with its outcome.

    `keep` renders a change's outcome as its envelope, for an idempotent request's reply to
    be written in the change's own transaction (see Idempotency.once).
    """
    request_id = _text(headers.get("x-request-id"))
    structlog.contextvars.bind_contextvars(request_id=request_id, queue=queue)
    started = time.perf_counter()
    call = Call(
        body=body,
        authorization=_text(headers.get("authorization")),
        client_ip=_text(headers.get("x-client-ip")),
        request_id=request_id,
        idempotency_key=_text(headers.get("idempotency-key")),
    )

    async def work() -> dict[str, Any]:
        return await _answer(model, use_case, call)

    try:
        if _past_deadline(headers):
            raise UpstreamTimeout("The caller's deadline passed before a worker took the request.")
        if idempotency is not None and call.idempotency_key is not None:
            key = call.idempotency_key
            envelope = await idempotency.once(queue, call.authorization, key, body, work, keep)
        else:
            envelope = await work()
    except WardenError as exc:
        envelope = failure(exc)
    except Exception:  # every request gets a reply: a caller never waits out its timeout
        log.exception("handler fault")
        envelope = failure(InternalError())
    status = 200 if envelope["ok"] else envelope["error"]["status"]
    elapsed = time.perf_counter() - started
    metrics.MESSAGES.labels(queue, str(status)).inc()
    metrics.HANDLING.labels(queue).observe(elapsed)
    log.info("message handled", status=status, duration_ms=round(elapsed * 1000, 2))
    return envelope


async def _answer(model: type[M], use_case: UseCase, raw: Call[Any]) -> dict[str, Any]:
    """Validate and run the use case; every outcome, a fault included, is an envelope."""
    try:
        call = Call(
            parse(model, raw.body),
            raw.authorization,
            raw.client_ip,
            raw.request_id,
            raw.idempotency_key,
        )
        return success(await use_case(call))
    except WardenError as exc:
        return failure(exc)
    except Exception:
        log.exception("handler fault")
        return failure(InternalError())


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _past_deadline(headers: Mapping[str, Any]) -> bool:
    deadline = headers.get(DEADLINE_HEADER)
    try:
        return deadline is not None and time.time() * 1000 > float(deadline)
    except (TypeError, ValueError):
        return False


async def raw_body(message: StreamMessage[Any]) -> bytes:
    """Decoder that leaves the body as bytes, so a non-JSON body reaches `parse` as a 422."""
    return message.body


async def whole_message(message: StreamMessage[Any]) -> StreamMessage[Any]:
    """Decoder that hands the subscriber the message itself: body, headers, correlation id.

    A `RabbitMessage` (context) parameter would cost a thread hop per message: FastDepends
    resolves that synchronous context lookup on anyio's worker threads.
    """
    return message


def rpc_queue(name: str) -> RabbitQueue:
    """A classic queue: requests are transient (they expire with their caller's patience), so
    nothing is written to disk for them. Redeliveries are bounded by the worker (see rpc)."""
    return RabbitQueue(
        name, durable=True, arguments={"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}
    )


class RedeliveryCounter(Protocol):
    """Counts the redeliveries of one request, across workers."""

    async def count(self, queue: str, message_id: str) -> int:
        """This redelivery's number: 1 for the first time the request came back."""
        ...


def rpc(
    router: RabbitRouter,
    queue: str,
    prefetch: int,
    idempotency: Idempotency | None = None,
    reply: Callable[[Any], Any] | None = None,
    redeliveries: RedeliveryCounter | None = None,
) -> Callable[[UseCase], UseCase]:
    """Register `use_case` as the subscriber of `queue`, replying with the envelope.

    The request model comes from the catalogue, which the interface documents read too.
    `reply`, for a use case that changes Postgres, renders its outcome as the reply's data:
    the reply to an idempotent request is then kept in the change's own transaction.
    A request redelivered more than RPC_REDELIVERY_LIMIT times (counted by `redeliveries`)
    is rejected unworked and dead-lettered: a request that kills workers cannot loop.
    """
    model = RPC[queue].request

    def register(use_case: UseCase) -> UseCase:
        answer, keep = use_case, None
        if reply is not None:
            answer, keep = _rendered(use_case, reply), _keeper(reply)

        async def handler(message: Any) -> None:
            raw = message.raw_message
            if raw.redelivered and redeliveries is not None and await _too_often(raw):
                await message.reject()  # to warden.dlq, with x-death saying where from
                return
            headers = message.headers or {}
            envelope = await serve(queue, model, answer, message.body, headers, idempotency, keep)
            try:
                await reply_and_ack(message.raw_message, envelope, headers)
            except Exception:
                # Not acknowledged: reject it rather than hold a prefetch slot until the
                # channel closes (it would then be redelivered).
                with contextlib.suppress(Exception):
                    await message.reject()
                raise

        async def _too_often(raw: IncomingMessage) -> bool:
            assert redeliveries is not None
            key = raw.message_id or raw.correlation_id or hashlib.sha256(raw.body).hexdigest()
            try:
                count = await redeliveries.count(queue, key)
            except Exception:  # no count without Redis: the request is worked on as usual
                return False
            if count <= RPC_REDELIVERY_LIMIT:
                return False
            metrics.REDELIVERED_TOO_OFTEN.labels(queue).inc()
            log.warning("request dead-lettered", queue=queue, deliveries=count + 1)
            return True

        handler.__name__ = queue.replace(".", "_")
        handler.__doc__ = use_case.__doc__
        router.subscriber(
            rpc_queue(queue),
            # No publisher confirms on the consuming channel: the reply is its own
            # confirmation, and the caller times out if it is lost.
            channel=Channel(prefetch_count=prefetch, publisher_confirms=False),
            decoder=whole_message,
            # The handler acknowledges together with its reply (see reply_and_ack).
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,
            description=use_case.__doc__,
        )(handler)
        return use_case

    return register


def _rendered(use_case: UseCase, reply: Callable[[Any], Any]) -> UseCase:
    async def answer(call: Call[Any]) -> Any:
        return reply(await use_case(call))

    return answer


def _keeper(reply: Callable[[Any], Any]) -> Keep:
    return lambda outcome: success(reply(outcome))


def no_content(_: object) -> None:
    """The reply data of a change that answers nothing but success."""
    return None


async def reply_and_ack(
    raw: IncomingMessage, envelope: dict[str, Any], headers: Mapping[str, Any]
) -> None:
    """Publish the envelope to the caller's `reply_to`, then acknowledge the request.

    Straight to aiormq (aio-pika's protocol layer, its public channel API), on the channel
    the request came by, without waiting for either frame to be written: FastStream's reply
    path (a response object, its publish middlewares, an aio-pika message and a publisher
    confirm per reply) cost the worker more than the use case itself. The reply needs no
    confirm: it is its own confirmation, and a caller whose reply is lost times out.
    """
    channel = cast(aiormq.Channel, raw.channel)  # raises if the channel is closed
    assert raw.delivery_tag is not None  # a consumed message always has one
    if raw.reply_to:
        properties = Basic.Properties(
            content_type="application/json",
            correlation_id=raw.correlation_id,
            message_id=raw.correlation_id or raw.message_id,
            headers={"x-request-id": headers.get("x-request-id") or ""},
            delivery_mode=1,
        )
        await channel.basic_publish(
            orjson.dumps(envelope), routing_key=raw.reply_to, properties=properties, wait=False
        )
    await channel.basic_ack(raw.delivery_tag, wait=False)
