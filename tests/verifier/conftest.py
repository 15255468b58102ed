"""The verifier library's tests: a RabbitMQ vhost of their own (the library needs no Warden)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aio_pika
import pytest

from tests.support.infra import base_urls, own_vhost


@pytest.fixture(scope="session")
def amqp() -> Iterator[str]:
    """The vhost, with Warden's events exchange declared as Warden declares it at its start."""
    with base_urls() as base, own_vhost(base.amqp, prefix="verifier_test") as url:
        asyncio.run(_declare_events_exchange(url))
        yield url


async def _declare_events_exchange(url: str) -> None:
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        await channel.declare_exchange("warden.events", aio_pika.ExchangeType.TOPIC, durable=True)
