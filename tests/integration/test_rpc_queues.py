"""Requests that come back to their queue: a request is delivered at most
RPC_REDELIVERY_LIMIT + 1 times, then it is dead-lettered unworked to warden.dlq. On quorum
RPC queues (the default) the broker counts (x-delivery-limit); on classic ones
(WARDEN_RPC_QUEUE_TYPE=classic) each worker that takes a redelivered request counts it in
Redis.

A request comes back only when the worker holding it died. Here the test takes each request
and returns it unacknowledged (what a dead worker's channel does): the survivor once, then the
worker of this module's own vhost answers it; the poison as often as the limit allows, after
which no worker ever works on it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from handlers.queues import RPC_REDELIVERY_LIMIT
from storage.redis_store import RedisRedeliveryCounter
from tests.conftest import make_settings
from tests.support.infra import Urls, own_vhost
from tests.support.waiting import eventually
from warden.bootstrap import running_worker
from warden.settings import Settings

QUEUE = "warden.users.me"
WITHIN = 20.0


@pytest_asyncio.fixture(params=["quorum", "classic"])
async def isolated(
    request: pytest.FixtureRequest, urls: Urls, database: str
) -> AsyncIterator[Settings]:
    with own_vhost(urls.amqp) as amqp_url:
        settings = make_settings(urls, amqp_url=amqp_url, rpc_queue_type=request.param)
        async with running_worker(settings):
            pass  # declares the queues, then goes away: the requests wait for the next one
        yield settings


@pytest_asyncio.fixture
async def channel(isolated: Settings) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(isolated.amqp_url.get_secret_value(), timeout=10)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def returned(
    channel: aio_pika.abc.AbstractChannel, message_ids: list[str], times: int
) -> None:
    """Take each of these requests `times` times, giving it back unacknowledged each time.

    A request ahead of them in the queue (on a classic queue, the poison, which the broker
    never dead-letters) is taken too, and given back with them.
    """
    for _ in range(times):
        taken: list[aio_pika.abc.AbstractIncomingMessage] = []
        while not set(message_ids) <= {m.message_id for m in taken}:
            taken.append(await next_message(channel, QUEUE))
        for m in taken:
            await m.nack(requeue=True)


async def publish(channel: aio_pika.abc.AbstractChannel, reply_to: str, message_id: str) -> None:
    message = aio_pika.Message(
        b"{}", message_id=message_id, correlation_id=message_id, reply_to=reply_to
    )
    await channel.default_exchange.publish(message, routing_key=QUEUE)


async def next_message(
    channel: aio_pika.abc.AbstractChannel, name: str
) -> aio_pika.abc.AbstractIncomingMessage:
    """The next message on the queue, once there is one (unacknowledged)."""
    queue = await channel.get_queue(name, ensure=False)
    taken: list[aio_pika.abc.AbstractIncomingMessage] = []

    async def arrived() -> bool:
        message = await queue.get(fail=False, no_ack=False)
        if message is not None:
            taken.append(message)
        return message is not None

    await eventually(arrived, WITHIN, f"no message on {name}")
    return taken[0]


async def test_a_request_that_keeps_coming_back_is_dead_lettered_unworked(
    isolated: Settings, channel: aio_pika.abc.AbstractChannel
) -> None:
    replies = await channel.declare_queue(exclusive=True)
    poison, survivor = uuid.uuid4().hex, uuid.uuid4().hex
    # The poison request killed its worker on its first delivery and on every redelivery the
    # limit allows; the survivor came back once.
    await publish(channel, replies.name, poison)
    await returned(channel, [poison], RPC_REDELIVERY_LIMIT + 1)
    await publish(channel, replies.name, survivor)
    await returned(channel, [survivor], 1)
    if isolated.rpc_queue_type == "classic":
        # The broker counted nothing: the two workers that died holding the poison's
        # redeliveries each counted theirs; the next worker to take it counts the third.
        client = aioredis.Redis.from_url(isolated.redis_url.get_secret_value())
        try:
            counter = RedisRedeliveryCounter(client)
            for _ in range(RPC_REDELIVERY_LIMIT):
                await counter.count(QUEUE, poison)
        finally:
            await client.aclose()

    async with running_worker(isolated):
        dead = await next_message(channel, "warden.dlq")
        reply = await next_message(channel, replies.name)
        # The worker answers in order: a request sent now is answered after any (wrong)
        # reply it sent the poison, so the next reply being this one's means none was.
        probe = uuid.uuid4().hex
        await publish(channel, replies.name, probe)
        after = await next_message(channel, replies.name)
        assert after.correlation_id == probe  # the poison got no reply

    # A request back once is worked on as usual.
    assert reply.correlation_id == survivor
    assert orjson.loads(reply.body)["error"]["status"] == 401

    assert dead.message_id == poison
    headers = dead.headers or {}
    assert headers["x-first-death-queue"] == QUEUE
    reason = "delivery_limit" if isolated.rpc_queue_type == "quorum" else "rejected"
    assert headers["x-first-death-reason"] == reason
    await dead.ack()
