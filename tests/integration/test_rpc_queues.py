"""Requests that come back to their queue: the worker works on a request at most
RPC_REDELIVERY_LIMIT + 1 times, then rejects it unworked to warden.dlq.

A request comes back only when the worker holding it died. Here the test takes each request
first and returns it unacknowledged (what a dead worker's channel does), so the worker of this
module's own vhost receives it marked redelivered; the earlier deaths of a request that has
already killed workers are stood in for by its count in Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import orjson
import pytest_asyncio
import redis.asyncio as aioredis

from handlers.queues import RPC_REDELIVERY_LIMIT
from storage.redis_store import REDELIVERIES
from tests.conftest import make_settings
from tests.support.infra import Urls, own_vhost
from tests.support.waiting import eventually
from warden.bootstrap import running_worker
from warden.settings import Settings

QUEUE = "warden.users.me"
WITHIN = 20.0


@pytest_asyncio.fixture
async def isolated(urls: Urls, database: str) -> AsyncIterator[Settings]:
    with own_vhost(urls.amqp) as amqp_url:
        settings = make_settings(urls, amqp_url=amqp_url)
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


async def returned_once(
    channel: aio_pika.abc.AbstractChannel, reply_to: str, message_ids: list[str]
) -> None:
    """Publish requests, then take each and give it back unacknowledged: now redelivered."""
    for message_id in message_ids:
        message = aio_pika.Message(
            b"{}", message_id=message_id, correlation_id=message_id, reply_to=reply_to
        )
        await channel.default_exchange.publish(message, routing_key=QUEUE)
    taken = [await next_message(channel, QUEUE) for _ in message_ids]
    assert [m.message_id for m in taken] == message_ids
    for m in taken:
        await m.nack(requeue=True)


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
    survivor, poison = uuid.uuid4().hex, uuid.uuid4().hex
    client = aioredis.from_url(isolated.redis_url.get_secret_value())
    try:
        # The poison request already killed its worker on its first delivery and on every
        # redelivery the limit allows.
        await client.set(f"{REDELIVERIES}{QUEUE}:{poison}", RPC_REDELIVERY_LIMIT)
        await returned_once(channel, replies.name, [survivor, poison])

        async with running_worker(isolated):
            reply = await next_message(channel, replies.name)
            dead = await next_message(channel, "warden.dlq")
            # The worker answers in order: a request sent now is answered after any (wrong)
            # reply it sent the poison, so the next reply being this one's means none was.
            probe = uuid.uuid4().hex
            message = aio_pika.Message(
                b"{}", message_id=probe, correlation_id=probe, reply_to=replies.name
            )
            await channel.default_exchange.publish(message, routing_key=QUEUE)
            after = await next_message(channel, replies.name)
            assert after.correlation_id == probe  # the poison got no reply

        # A request back once is worked on as usual.
        assert reply.correlation_id == survivor
        assert orjson.loads(reply.body)["error"]["status"] == 401
        assert await client.get(f"{REDELIVERIES}{QUEUE}:{survivor}") == b"1"
        assert 0 < await client.ttl(f"{REDELIVERIES}{QUEUE}:{survivor}") <= 3600

        assert dead.message_id == poison
        headers = dead.headers or {}
        assert headers["x-first-death-queue"] == QUEUE
        assert headers["x-first-death-reason"] == "rejected"
        await dead.ack()
    finally:
        await client.aclose()
