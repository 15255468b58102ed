"""An RPC client that keeps many requests in flight on one connection.

FastStream's `broker.request` holds one lock per broker for the whole round trip, so one slow
login would hold up every other request (see shared/FASTSTREAM.md). This client publishes
with RabbitMQ's direct reply-to and matches replies to callers by correlation id.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping
from typing import Any

import aio_pika
import orjson
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from domain.errors import InternalError, ServiceUnavailable, UpstreamTimeout

log = structlog.get_logger("warden.edge")

REPLY_TO = "amq.rabbitmq.reply-to"
DEADLINE_HEADER = "x-deadline"
RECONNECT_DELAY = 1.0


class RpcClient:
    """Connects in the background (the edge starts without a broker) and reconnects by itself."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.timeouts = 0

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_connected(), name="rpc-client")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect(ServiceUnavailable("The edge is shutting down."))

    async def wait_connected(self, within: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._ready.wait()
        return self.connected

    async def call(
        self, queue: str, body: bytes, headers: Mapping[str, str], budget: float
    ) -> dict[str, Any]:
        """Publish a request and wait for its envelope; 503 at once without a broker, 504 late."""
        channel = self._channel
        if not self.connected or channel is None:
            raise ServiceUnavailable("The message broker cannot be reached.")
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        deadline_ms = int((time.time() + budget) * 1000)
        message = aio_pika.Message(
            body,
            content_type="application/json",
            correlation_id=correlation_id,
            reply_to=REPLY_TO,
            # RabbitMQ drops a request nobody took before the caller gives up.
            expiration=max(budget, 0.001),
            headers={**headers, DEADLINE_HEADER: deadline_ms},
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        try:
            async with asyncio.timeout(budget):
                await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)
                return await future
        except TimeoutError:
            self.timeouts += 1
            raise UpstreamTimeout from None
        except (aio_pika.exceptions.AMQPError, ConnectionError) as exc:
            raise ServiceUnavailable("The message broker cannot be reached.") from exc
        finally:
            self._pending.pop(correlation_id, None)

    async def _keep_connected(self) -> None:
        while True:
            try:
                closed = await self._connect()
                log.info("broker connected")
                await closed.wait()
                log.warning("broker connection lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("broker connect failed", error=type(exc).__name__)
            await self._disconnect(ServiceUnavailable("The message broker connection was lost."))
            await asyncio.sleep(RECONNECT_DELAY)

    async def _connect(self) -> asyncio.Event:
        closed = asyncio.Event()
        connection = await aio_pika.connect(self._url, timeout=5)
        self._connection = connection
        connection.close_callbacks.add(lambda *_: closed.set())
        # No publisher confirms: the reply is the confirmation, and `mandatory` returns
        # a request for a queue no worker declared yet, which fails its caller at once.
        channel = await connection.channel(publisher_confirms=False)
        channel.close_callbacks.add(lambda *_: closed.set())
        channel.return_callbacks.add(self._on_return)
        reply_queue = await channel.get_queue(REPLY_TO, ensure=False)
        await reply_queue.consume(self._on_reply, no_ack=True)
        self._channel = channel
        self._ready.set()
        return closed

    async def _disconnect(self, reason: Exception) -> None:
        self._ready.clear()
        self._channel = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(reason)
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            return  # its caller gave up
        try:
            envelope = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            future.set_exception(InternalError("A worker sent a reply that is not JSON."))
            return
        future.set_result(envelope)

    def _on_return(self, _channel: Any, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_exception(ServiceUnavailable("No worker queue exists for this request."))
