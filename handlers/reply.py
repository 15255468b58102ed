"""The reply and the acknowledgement, written straight to aiormq on the request's channel."""

from __future__ import annotations

from typing import Any, cast

import aiormq
import orjson
from aio_pika import IncomingMessage
from pamqp.commands import Basic

from contract import protocol


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
    await ack(raw)


async def ack(raw: IncomingMessage) -> None:
    """Acknowledge the request without waiting for the frame to be written."""
    channel = cast(aiormq.Channel, raw.channel)  # raises if the channel is closed
    assert raw.delivery_tag is not None  # a consumed message always has one
    await channel.basic_ack(raw.delivery_tag, wait=False)
