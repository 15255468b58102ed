"""A raw AMQP caller of Warden's RPC queues, as another service would be: aio-pika, direct
reply-to. The tests' `amqp` fixture, and the benchmarks that call a worker without an edge."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aio_pika
import orjson


class AmqpCaller:
    """A raw AMQP caller, as another service would be: aio-pika, direct reply-to."""

    def __init__(self, channel: aio_pika.abc.AbstractChannel) -> None:
        self.channel = channel
        self._replies: dict[str, asyncio.Future[aio_pika.abc.AbstractIncomingMessage]] = {}

    async def start(self) -> None:
        queue = await self.channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await queue.consume(self._on_reply, no_ack=True)

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        future = self._replies.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(message)

    async def raw(
        self,
        queue: str,
        body: bytes,
        headers: dict[str, Any] | None = None,
        wait: float = 10,
        user_id: str | None = None,
    ) -> aio_pika.abc.AbstractIncomingMessage:
        """The reply to one request; `user_id` as RabbitMQ checks it (this connection's user)."""
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[aio_pika.abc.AbstractIncomingMessage]
        future = asyncio.get_running_loop().create_future()
        self._replies[correlation_id] = future
        message = aio_pika.Message(
            body,
            content_type="application/json",
            correlation_id=correlation_id,
            reply_to="amq.rabbitmq.reply-to",
            headers=headers or {},
            user_id=user_id,
        )
        await self.channel.default_exchange.publish(message, routing_key=queue)
        async with asyncio.timeout(wait):
            return await future

    async def call(
        self,
        queue: str,
        body: Any,
        token: str | None = None,
        user_id: str | None = None,
        **headers: Any,
    ) -> dict[str, Any]:
        if token:
            headers["authorization"] = f"Bearer {token}"
        headers = {k.replace("_", "-"): v for k, v in headers.items()}
        reply = await self.raw(queue, orjson.dumps(body), headers, user_id=user_id)
        decoded = orjson.loads(reply.body)
        assert isinstance(decoded, dict), f"a reply is a JSON object, not {decoded!r}"
        return decoded
