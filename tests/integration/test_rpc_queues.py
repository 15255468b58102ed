"""The RPC queues on the real broker: quorum queues that dead-letter a request after a bounded
number of deliveries, and the start-up step that replaces an earlier version's classic queues.

No worker consumes here: the test stands in for a worker that dies while it holds a request
(its unacknowledged delivery goes back to the queue), on a vhost of this module's own.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
import pytest_asyncio
from faststream.rabbit import RabbitBroker

from handlers.app import adopt_rpc_queues, declare_topology
from handlers.rpc import RPC_DELIVERY_LIMIT, rpc_queue
from tests.support.infra import Urls, own_vhost

QUEUE = "warden.users.me"
WITHIN = 20.0


@pytest_asyncio.fixture
async def vhost(urls: Urls) -> AsyncIterator[str]:
    with own_vhost(urls.amqp) as amqp_url:
        yield amqp_url


@pytest_asyncio.fixture
async def channel(vhost: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(vhost, timeout=10)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def request(channel: aio_pika.abc.AbstractChannel, message_id: str) -> None:
    message = aio_pika.Message(b"{}", message_id=message_id, correlation_id=message_id)
    await channel.default_exchange.publish(message, routing_key=QUEUE)


async def next_delivery(
    channel: aio_pika.abc.AbstractChannel, name: str
) -> aio_pika.abc.AbstractIncomingMessage | None:
    queue = await channel.get_queue(name, ensure=False)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        message = await queue.get(fail=False, no_ack=False)
        if message is not None:
            return message
        await asyncio.sleep(0.02)
    return None


async def test_a_request_that_keeps_killing_its_worker_is_dead_lettered(
    vhost: str, channel: aio_pika.abc.AbstractChannel
) -> None:
    await adopt_rpc_queues(vhost)
    broker = RabbitBroker(vhost)
    await broker.connect()
    try:
        await declare_topology(broker)
    finally:
        await broker.stop()
    poison = uuid.uuid4().hex
    await request(channel, poison)

    deliveries = 0
    while (message := await next_delivery(channel, QUEUE)) is not None:
        assert message.message_id == poison
        deliveries += 1
        await message.nack(requeue=True)  # what a worker's death does to its delivery
        assert deliveries <= RPC_DELIVERY_LIMIT + 1, "the request keeps coming back"
    assert deliveries == RPC_DELIVERY_LIMIT + 1  # the first delivery and its redeliveries

    dead = await next_delivery(channel, "warden.dlq")
    assert dead is not None
    assert dead.message_id == poison
    headers = dead.headers or {}
    assert (headers["x-first-death-queue"], headers["x-first-death-reason"]) == (
        QUEUE,
        "delivery_limit",
    )
    await dead.ack()


async def test_an_earlier_versions_classic_queue_is_replaced_and_adoption_is_idempotent(
    vhost: str, channel: aio_pika.abc.AbstractChannel
) -> None:
    await channel.declare_queue(QUEUE, durable=True)  # as Warden 0.1 declared it
    await request(channel, "stale")
    quorum = dict(rpc_queue(QUEUE).arguments or {})
    probe = await aio_pika.connect(vhost, timeout=10)
    try:
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await (await probe.channel()).declare_queue(QUEUE, durable=True, arguments=quorum)
    finally:
        await probe.close()

    await adopt_rpc_queues(vhost)
    queue = await channel.declare_queue(QUEUE, durable=True, arguments=quorum)  # no 406 now
    assert queue.declaration_result.message_count == 0  # the stale request went with it

    await request(channel, "kept")
    await adopt_rpc_queues(vhost)  # a second worker starting: nothing to replace
    kept = await next_delivery(channel, QUEUE)
    assert kept is not None
    assert kept.message_id == "kept"
    await kept.ack()
