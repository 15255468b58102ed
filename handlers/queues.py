"""The worker's queues and exchanges, as it declares them."""

from __future__ import annotations

from faststream.rabbit import RabbitExchange, RabbitQueue
from faststream.rabbit.schemas import ExchangeType

DEAD_LETTER_EXCHANGE = "warden.dlx"
# A handler never raises, so a request goes back to its queue only when its worker died (or
# lost its channel) while holding it: two more deliveries, then warden.dlq.
RPC_REDELIVERY_LIMIT = 2

EVENTS_EXCHANGE = RabbitExchange("warden.events", type=ExchangeType.TOPIC, durable=True)
DLX = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.FANOUT, durable=True)
DLQ = RabbitQueue("warden.dlq", durable=True)


def rpc_queue(name: str) -> RabbitQueue:
    """A classic queue: requests are transient (they expire with their caller's patience), so
    nothing is written to disk for them. Redeliveries are bounded by the worker (see rpc)."""
    return RabbitQueue(
        name, durable=True, arguments={"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}
    )


# CONTRACT §7: mail jobs. Private: no binding to warden.events; a job carries a (sealed) token.
MAIL_QUEUE = RabbitQueue(
    "warden.mail", durable=True, arguments={"x-dead-letter-exchange": DEAD_LETTER_EXCHANGE}
)
# A job waits out its backoff here (its own per-message expiration), then dead-letters back
# to warden.mail. Nothing consumes it.
MAIL_RETRY_QUEUE = RabbitQueue(
    "warden.mail.retry",
    durable=True,
    arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "warden.mail"},
)
