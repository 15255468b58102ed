"""An RPC client that keeps many requests in flight on one connection.

FastStream's `broker.request` holds one lock per broker for the whole round trip, so one slow
login would hold up every other request (see shared/FASTSTREAM.md). This client publishes
with RabbitMQ's direct reply-to and matches replies to callers by correlation id.

It speaks aiormq, the AMQP layer under aio-pika, directly: every HTTP request passes through
here twice, and aio-pika's message objects, the wait for each frame to be written and a task
per reply cost the edge more than aiohttp does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from collections.abc import Mapping
from typing import Any, cast

import aiormq
import orjson
import structlog
from aiormq.abc import AbstractConnection, DeliveredMessage
from pamqp.commands import Basic

from contract.protocol import DEADLINE, DIRECT_REPLY_TO, broker_user, node_address
from domain.errors import InternalError, ServiceUnavailable, UpstreamTimeout

log = structlog.get_logger("warden.edge")

RECONNECT_DELAY = 1.0
# After losing its node, the pause before the next (see handlers.nodes.LOSS_SETTLE): requests
# meanwhile get 503 at once.
LOSS_SETTLE = 2.0
CONNECT_TIMEOUT = 5.0
_LINK_ERRORS = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)


class RpcClient:
    """Connects in the background (the edge starts without a broker) and reconnects by itself.

    Given several nodes of one cluster (CONTRACT §10) it takes them in a shuffled order, so a
    fleet of edges spreads over them, and moves to the next one whenever its link drops or a
    connection attempt fails: requests in flight on the lost link fail at once (503), and
    new ones are taken again within about RECONNECT_DELAY of the loss.
    """

    def __init__(self, urls: str | tuple[str, ...], rng: random.Random | None = None) -> None:
        nodes = [urls] if isinstance(urls, str) else list(urls)
        (rng or random.SystemRandom()).shuffle(nodes)
        self._nodes = nodes
        self._url = nodes[0]
        # Every request names its publisher: RabbitMQ refuses a user_id that is not this
        # connection's user, so the worker may believe the x-client-ip of such a request.
        self._user = broker_user(self._url)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._connection: AbstractConnection | None = None
        # Direct reply-to on one node. On a cluster a reply queue of this connection's own
        # (exclusive, server-named): RabbitMQ 3.10 crashes the *replying worker's* connection
        # (541 INTERNAL_ERROR, rabbit_channel:deliver_reply) when it replies to a direct
        # reply-to consumer whose node has died, so one edge's lost node would knock every
        # worker that held one of its requests off the broker. A reply to a queue that died
        # with its node is merely unroutable.
        self._own_reply_queue = len(nodes) > 1
        self._reply_to = DIRECT_REPLY_TO
        self._channel: aiormq.Channel | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Correlation ids only have to be unique among this client's calls in flight.
        self._ids = map(f"{os.urandom(4).hex()}-{{}}".format, itertools.count())
        self.timeouts = 0

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    @property
    def node(self) -> str:
        """host:port of the node this client is connected to (or trying next)."""
        return node_address(self._url)

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
        correlation_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        deadline_ms = int((time.time() + budget) * 1000)
        properties = Basic.Properties(
            content_type="application/json",
            correlation_id=correlation_id,
            reply_to=self._reply_to,
            # RabbitMQ drops a request nobody took before the caller gives up.
            expiration=str(max(int(budget * 1000), 1)),
            headers={**headers, DEADLINE: deadline_ms},
            delivery_mode=1,
            message_id=correlation_id,
            user_id=self._user,
        )
        try:
            async with asyncio.timeout(budget):
                # No `mandatory`: without publisher confirms aiormq cannot hand a returned
                # message back, so a request for a queue nobody declared simply times out.
                await channel.basic_publish(
                    body, routing_key=queue, properties=properties, wait=False
                )
                return await future
        except TimeoutError:
            self.timeouts += 1
            raise UpstreamTimeout from None
        except _LINK_ERRORS as exc:
            raise ServiceUnavailable("The message broker cannot be reached.") from exc
        finally:
            self._pending.pop(correlation_id, None)

    async def _keep_connected(self) -> None:
        for attempt in itertools.count():
            self._url = self._nodes[attempt % len(self._nodes)]
            try:
                closed = await self._connect()
                log.info("broker connected", node=self.node)
                await closed
                log.warning("broker connection lost", node=self.node)
                await self._disconnect(
                    ServiceUnavailable("The message broker connection was lost.")
                )
                await asyncio.sleep(LOSS_SETTLE if len(self._nodes) > 1 else RECONNECT_DELAY)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("broker connect failed", node=self.node, error=type(exc).__name__)
            await self._disconnect(ServiceUnavailable("The message broker connection was lost."))
            # A failed attempt: the next node at once; a pause once every node was tried,
            # so a broker that is down entirely is not hammered.
            if len(self._nodes) == 1 or (attempt + 1) % len(self._nodes) == 0:
                await asyncio.sleep(RECONNECT_DELAY)

    async def _connect(self) -> asyncio.Future[None]:
        """Connect, consume replies; the returned future ends when the link is gone."""
        async with asyncio.timeout(CONNECT_TIMEOUT):
            connection = await aiormq.connect(self._url)
            self._connection = connection
            # No publisher confirms: the reply is the confirmation.
            channel = cast(aiormq.Channel, await connection.channel(publisher_confirms=False))
            reply_to = DIRECT_REPLY_TO
            if self._own_reply_queue:
                declared = await channel.queue_declare("", exclusive=True, auto_delete=True)
                reply_to = declared.queue or ""
            await channel.basic_consume(reply_to, self._on_reply, no_ack=True)
            self._reply_to = reply_to
        closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def link_lost(done: asyncio.Future[Any]) -> None:
            if not done.cancelled():
                done.exception()  # retrieved, so asyncio does not log it as forgotten
            if not closed.done():
                closed.set_result(None)

        connection.closing.add_done_callback(link_lost)
        channel.closing.add_done_callback(link_lost)
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
            connection, self._connection = self._connection, None
            with contextlib.suppress(Exception):
                await connection.close()

    async def _on_reply(self, message: DeliveredMessage) -> None:
        future = self._pending.get(message.header.properties.correlation_id or "")
        if future is None or future.done():
            return  # its caller gave up
        try:
            envelope = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            future.set_exception(InternalError("A worker sent a reply that is not JSON."))
            return
        future.set_result(envelope)
