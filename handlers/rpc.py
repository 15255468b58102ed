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

from contract import protocol
from contract.catalog import RPC
from contract.errors import MalformedMessage, PayloadTooLarge
from contract.wire import load_json
from domain.errors import (
    FieldError,
    InternalError,
    UpstreamTimeout,
    ValidationFailed,
    WardenError,
)
from domain.model import Origin
from handlers import metrics
from handlers.idempotency import Idempotency, Replay
from handlers.trust import header_text, origin_of, refused_reply_to

log = structlog.get_logger("warden.worker")

M = TypeVar("M", bound=BaseModel)
B = TypeVar("B")
DEAD_LETTER_EXCHANGE = "warden.dlx"
# A handler never raises, so a request goes back to its queue only when its worker died (or
# lost its channel) while holding it: two more deliveries, then warden.dlq.
RPC_REDELIVERY_LIMIT = 2
DEADLINE_HEADER = protocol.DEADLINE


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


def received(raw: IncomingMessage, edge_user: str) -> Call[bytes]:
    """A request as it arrived, its body unparsed: headers read as text, its origin decided."""
    headers = raw.headers or {}
    return Call(
        body=raw.body,
        origin=origin_of(raw.user_id, headers.get(protocol.CLIENT_IP), edge_user),
        authorization=header_text(headers.get(protocol.AUTHORIZATION)),
        request_id=protocol.request_id_or_new(headers.get(protocol.REQUEST_ID)),
        idempotency_key=header_text(headers.get(protocol.IDEMPOTENCY_KEY)),
    )


async def serve(
    queue: str,
    model: type[M],
    use_case: UseCase,
    call: Call[bytes],
    headers: Mapping[str, Any],
    idempotency: Idempotency | None = None,
    keep: Keep | None = None,
    replay: Replay | None = None,
) -> dict[str, Any]:
    """Run one request to its envelope, logging one line with its outcome.

    `keep` renders a change's outcome as its envelope, for an idempotent request's reply to
    be written in the change's own transaction; `replay` checks a kept reply before a
    repeat gets it (see Idempotency.once).
    """
    structlog.contextvars.bind_contextvars(request_id=call.request_id, queue=queue)
    started = time.perf_counter()

    async def work() -> dict[str, Any]:
        return await _answer(model, use_case, call)

    try:
        _admit(call, headers)
        if idempotency is not None and call.idempotency_key is not None:
            key = call.idempotency_key
            envelope = await idempotency.once(
                queue, call.authorization, key, call.body, work, keep, replay
            )
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


def _admit(call: Call[bytes], headers: Mapping[str, Any]) -> None:
    """Refuse, before any parsing or work, a request that came too late or is too large."""
    if _past_deadline(headers):
        raise UpstreamTimeout("The caller's deadline passed before a worker took the request.")
    if len(call.body) > protocol.MAX_BODY_BYTES:
        raise PayloadTooLarge


async def _answer(model: type[M], use_case: UseCase, raw: Call[bytes]) -> dict[str, Any]:
    """Validate and run the use case; every outcome, a fault included, is an envelope."""
    try:
        body = parse(model, raw.body)
        call = Call(body, raw.origin, raw.request_id, raw.authorization, raw.idempotency_key)
        return success(await use_case(call))
    except WardenError as exc:
        return failure(exc)
    except Exception:
        log.exception("handler fault")
        return failure(InternalError())


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
    edge_user: str,
    idempotency: Idempotency | None = None,
    reply: Callable[[Any], Any] | None = None,
    redeliveries: RedeliveryCounter | None = None,
    replay: Replay | None = None,
) -> Callable[[UseCase], UseCase]:
    """Register `use_case` as the subscriber of `queue`, replying with the envelope.

    The request model comes from the catalogue, which the interface documents read too.
    `edge_user` is the broker user whose x-client-ip is believed (see handlers.trust).
    `reply`, for a use case that changes Postgres, renders its outcome as the reply's data:
    the reply to an idempotent request is then kept in the change's own transaction.
    `replay` checks a kept reply before a repeat with the same Idempotency-Key gets it.
    A request redelivered more than RPC_REDELIVERY_LIMIT times (counted by `redeliveries`)
    is rejected unworked and dead-lettered: a request that kills workers cannot loop.
    A request whose reply_to names one of Warden's own queues is acknowledged unworked.
    """
    model = RPC[queue].request

    def register(use_case: UseCase) -> UseCase:
        answer, keep = use_case, None
        if reply is not None:
            answer, keep = _rendered(use_case, reply), _keeper(reply)

        async def handler(message: Any) -> None:
            raw = message.raw_message
            if refused_reply_to(raw.reply_to):
                await _refuse(raw)
                return
            if raw.redelivered and redeliveries is not None and await _too_often(raw):
                await message.reject()  # to warden.dlq, with x-death saying where from
                return
            call = received(raw, edge_user)
            envelope = await serve(
                queue, model, answer, call, raw.headers or {}, idempotency, keep, replay
            )
            try:
                await reply_and_ack(raw, envelope, call.request_id)
            except Exception:
                # Not acknowledged: reject it rather than hold a prefetch slot until the
                # channel closes (it would then be redelivered).
                with contextlib.suppress(Exception):
                    await message.reject()
                raise

        async def _refuse(raw: IncomingMessage) -> None:
            # Acknowledged, not dead-lettered: it is refused for good, and a publisher that
            # floods such requests fills no queue of Warden's.
            metrics.REFUSED.labels(queue, "reply_to_reserved").inc()
            log.warning(
                "request refused: its reply_to names a Warden queue",
                queue=queue,
                reply_to=raw.reply_to,
                publisher=raw.user_id,
            )
            await _ack(raw)

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


async def reply_and_ack(raw: IncomingMessage, envelope: dict[str, Any], request_id: str) -> None:
    """Publish the envelope to the caller's `reply_to`, then acknowledge the request.

    Straight to aiormq (aio-pika's protocol layer, its public channel API), on the channel
    the request came by, without waiting for either frame to be written: FastStream's reply
    path (a response object, its publish middlewares, an aio-pika message and a publisher
    confirm per reply) cost the worker more than the use case itself. The reply needs no
    confirm: it is its own confirmation, and a caller whose reply is lost times out.
    """
    if raw.reply_to:
        channel = cast(aiormq.Channel, raw.channel)  # raises if the channel is closed
        properties = Basic.Properties(
            content_type="application/json",
            correlation_id=raw.correlation_id,
            message_id=raw.correlation_id or raw.message_id,
            headers={protocol.REQUEST_ID: request_id},
            delivery_mode=1,
        )
        await channel.basic_publish(
            orjson.dumps(envelope), routing_key=raw.reply_to, properties=properties, wait=False
        )
    await _ack(raw)


async def _ack(raw: IncomingMessage) -> None:
    channel = cast(aiormq.Channel, raw.channel)  # raises if the channel is closed
    assert raw.delivery_tag is not None  # a consumed message always has one
    await channel.basic_ack(raw.delivery_tag, wait=False)
