"""The worker's queues and exchanges, as it declares them: the one place their arguments live.

Every queue that holds work or events is a quorum queue (CONTRACT §10): replicated by Raft
over the cluster's nodes, it survives the loss of any one node of three with nothing lost,
where a classic queue lives on one node and is gone (not only its messages: declares and
consumers fail) while that node is down. On one node a quorum queue costs RPC throughput
(README, "Running at scale", has the figures); that is paid knowingly, because a classic RPC
queue on a cluster would turn one node's death into failed requests until it returns.

Build a queue with `rpc_queue` (an RPC request queue) or `event_queue` (a consumer of
`warden.events`, e.g. the audit log or a mailer): both take their arguments from here, so a
queue added by another area gets the right type and limits by construction.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from faststream.rabbit import QueueType, RabbitExchange, RabbitQueue
from faststream.rabbit.schemas import ExchangeType

DEAD_LETTER_EXCHANGE = "warden.dlx"
# A handler never raises, so a request goes back to its queue only when its worker died (or
# lost its channel) while holding it: two more deliveries, then the broker dead-letters it to
# warden.dlq (the quorum queue's x-delivery-limit counts them, across workers).
RPC_REDELIVERY_LIMIT = 2
EVENT_DELIVERY_LIMIT = 5  # an event consumer's failures; then dead-lettered: none loops

EVENTS_EXCHANGE = RabbitExchange("warden.events", type=ExchangeType.TOPIC, durable=True)
DLX = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.FANOUT, durable=True)

_QUORUM: dict[str, Any] = {
    # Leaders spread over the nodes (RabbitMQ's default puts them all where declared).
    "x-queue-leader-locator": "balanced",
}
# Dead-lettering with the broker's own publisher confirms: a message leaves its queue only
# once warden.dlq has it (at-most-once, the default, may drop it on the way). Needs
# reject-publish as the overflow behaviour.
_CONFIRMED_DEAD_LETTERS: dict[str, Any] = {
    "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def _quorum(name: str, arguments: dict[str, Any], routing_key: str = "") -> RabbitQueue:
    queue: RabbitQueue = RabbitQueue(
        name,
        queue_type=QueueType.QUORUM,
        durable=True,
        arguments=cast(Any, {**_QUORUM, **arguments}),
        routing_key=routing_key,
    )
    return queue


DLQ = _quorum("warden.dlq", {})


RpcQueueType = Literal["quorum", "classic"]


def rpc_queue(name: str, kind: RpcQueueType = "quorum") -> RabbitQueue:
    """An RPC request queue: bounded redeliveries, expired or rejected requests dead-lettered
    (at most once: a request past its deadline has nobody waiting for it).

    `quorum` (the default): replicated, and the broker counts redeliveries. `classic`
    (`WARDEN_RPC_QUEUE_TYPE`, for a broker of one node): half the broker's CPU per request,
    on one node only, and the broker counts nothing: the worker counts a request's
    redeliveries itself (handlers.rpc, RedeliveryCounter). Events and mail stay quorum.
    """
    if kind == "classic":
        queue: RabbitQueue = RabbitQueue(
            name,
            queue_type=QueueType.CLASSIC,
            durable=True,
            arguments=cast(Any, {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}),
        )
        return queue
    return _quorum(
        name,
        {"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE, "x-delivery-limit": RPC_REDELIVERY_LIMIT},
    )


def event_queue(
    name: str, routing_key: str = "#", delivery_limit: int = EVENT_DELIVERY_LIMIT
) -> RabbitQueue:
    """A consumer's queue of domain events, bound to warden.events by `routing_key`."""
    return _quorum(
        name, {**_CONFIRMED_DEAD_LETTERS, "x-delivery-limit": delivery_limit}, routing_key
    )


# CONTRACT §7: mail jobs. Private: no binding to warden.events; a job carries a (sealed) token.
# A job whose worker died holding it comes back; past the limit (a job that kills workers)
# the broker dead-letters it unworked, as it does an RPC request.
MAIL_DELIVERY_LIMIT = 5
MAIL = "warden.mail"
MAIL_QUEUE = _quorum(MAIL, {**_CONFIRMED_DEAD_LETTERS, "x-delivery-limit": MAIL_DELIVERY_LIMIT})
# A job waits out its backoff here (its own per-message expiration), then dead-letters back
# to warden.mail (with the broker's confirms, as every dead letter). Nothing consumes it.
MAIL_RETRY_QUEUE = _quorum(
    "warden.mail.retry",
    {
        **_CONFIRMED_DEAD_LETTERS,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": MAIL,
    },
)
