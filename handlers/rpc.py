"""Registering a use case as the subscriber of its RPC queue.

The queue's request model comes from the catalogue; the use case must declare the same
(`Call[Model]`), or the worker refuses to start. Everything a request goes through once it is
taken is in handlers.pipeline; its reply and acknowledgement in handlers.reply.
"""

from __future__ import annotations

import contextlib
import hashlib
import typing
from collections.abc import Callable
from typing import Any, Protocol

import structlog
from aio_pika import IncomingMessage
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitRouter
from pydantic import BaseModel

from contract.catalog import RPC
from handlers import metrics
from handlers.decoding import whole_message
from handlers.envelope import Call, Keep, RequestUnits, UseCase, success
from handlers.idempotency import Idempotency, Replay
from handlers.pipeline import received, serve
from handlers.queues import RPC_REDELIVERY_LIMIT, RpcQueueType, rpc_queue
from handlers.reply import ack, reply_and_ack
from handlers.trust import refused_reply_to

log = structlog.get_logger("warden.worker")


class RedeliveryCounter(Protocol):
    """Counts the redeliveries of one request across workers (classic RPC queues only: a
    quorum queue's x-delivery-limit counts them in the broker)."""

    async def count(self, queue: str, message_id: str) -> int:
        """This redelivery's number: 1 for the first time the request came back."""
        ...


def rpc(
    router: RabbitRouter,
    queue: str,
    prefetch: int,
    edge_user: str,
    units: RequestUnits,
    idempotency: Idempotency | None = None,
    reply: Callable[[Any], Any] | None = None,
    replay: Replay | None = None,
    changes: bool = False,
    kind: RpcQueueType = "quorum",
    redeliveries: RedeliveryCounter | None = None,
) -> Callable[[UseCase], UseCase]:
    """Register `use_case` as the subscriber of `queue`, replying with the envelope.

    The request model comes from the catalogue, which the interface documents read too.
    `edge_user` is the broker user whose x-client-ip is believed (see handlers.trust).
    `units` open each request's units of work (see Call).
    `reply` renders the use case's result as the reply's data (else it is the data).
    `changes`: the use case changes Postgres (its result the user it changed, if any), and
    the reply to an idempotent request is kept in the change's own transaction.
    `replay` checks a kept reply before a repeat with the same Idempotency-Key gets it.
    A request that came back more than RPC_REDELIVERY_LIMIT times is dead-lettered unworked:
    by the broker on a quorum queue (its x-delivery-limit), on a `classic` one (`kind`) by the
    worker, which counts a redelivered request's returns in `redeliveries` (a request seen
    for the first time costs nothing). A request that kills workers cannot loop.
    A request whose reply_to names one of Warden's own queues is acknowledged unworked.
    """
    model = RPC[queue].request
    if changes and reply is None:
        raise TypeError(f"{queue}: a change's reply is rendered from the user it changed")
    if kind == "classic" and redeliveries is None:
        raise TypeError(f"{queue}: a classic queue counts nothing; its worker must count")

    def register(use_case: UseCase) -> UseCase:
        check_declared_request(queue, use_case)
        answer = use_case if reply is None else _rendered(use_case, reply)
        keep = _keeper(reply) if reply is not None and changes else None

        async def handler(message: Any) -> None:
            raw = message.raw_message
            if refused_reply_to(raw.reply_to):
                await _refuse(raw)
                return
            if raw.redelivered and redeliveries is not None and await _too_often(raw):
                await message.reject()  # to warden.dlq, x-death naming the queue
                return
            call = received(raw, edge_user, units)
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
            await ack(raw)

        async def _too_often(raw: IncomingMessage) -> bool:
            assert redeliveries is not None
            key = raw.message_id or raw.correlation_id or hashlib.sha256(raw.body).hexdigest()
            try:
                count = await redeliveries.count(queue, key)
            except Exception:  # no count without Redis: the request is worked on as usual
                return False
            if count <= RPC_REDELIVERY_LIMIT:
                return False
            metrics.REFUSED.labels(queue, "redelivered_too_often").inc()
            log.warning("request dead-lettered", queue=queue, deliveries=count + 1)
            return True

        handler.__name__ = queue.replace(".", "_")
        handler.__doc__ = use_case.__doc__
        router.subscriber(
            rpc_queue(queue, kind),
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


def check_declared_request(queue: str, use_case: UseCase) -> None:
    """Refuse a use case whose `Call[Model]` is not the queue's request model: the body it
    reads would not be the one the catalogue (and both documents) describe."""
    expected = RPC[queue].request
    declared = _declared_request(use_case)
    if declared is not expected:
        name = "nothing" if declared is None else f"Call[{declared.__name__}]"
        raise TypeError(
            f"{use_case.__name__} declares {name}, but {queue} takes Call[{expected.__name__}]"
            " (contract/catalog.py)"
        )


def _declared_request(use_case: UseCase) -> type[BaseModel] | None:
    hints = typing.get_type_hints(use_case)
    hints.pop("return", None)
    first = next(iter(hints.values()), None)
    if typing.get_origin(first) is not Call:
        return None
    model: type[BaseModel] = typing.get_args(first)[0]
    return model
