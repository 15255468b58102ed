"""The worker's metrics endpoint on WARDEN_METRICS_PORT (0 turns it off)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
from collections.abc import AsyncIterator

import structlog
from aio_pika.abc import AbstractConnection
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from handlers import metrics
from handlers.nodes import connect
from handlers.queues import DLQ
from warden.bootstrap import Services
from warden.security import BcryptPasswordHasher
from warden.settings import Settings

SAMPLE_TIMEOUT = 1.0  # a scrape never hangs on a dependency; the gauge keeps its last value

log = structlog.get_logger("warden")


class QueueDepth:
    """The number of messages in one queue: a passive declare on a connection of its own."""

    def __init__(self, amqp_urls: tuple[str, ...], queue: str) -> None:
        self._urls = amqp_urls
        self._tried = 0
        self._queue = queue
        self._connection: AbstractConnection | None = None

    async def read(self) -> int | None:
        if self._connection is None or self._connection.is_closed:
            # The next node each time: a scrape after a node's death finds a live one.
            url = self._urls[self._tried % len(self._urls)]
            self._tried += 1
            self._connection = await connect(url, within=SAMPLE_TIMEOUT)
        # A channel per read: a passive declare of a missing queue closes its channel.
        async with self._connection.channel() as channel:
            queue = await channel.declare_queue(self._queue, passive=True)
            result = queue.declaration_result
            return None if result is None else result.message_count

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None


async def _sample(services: Services, dead_letters: QueueDepth) -> None:
    if isinstance(services.hasher, BcryptPasswordHasher):  # a given hasher keeps no count
        metrics.BCRYPT_QUEUE.set(services.hasher.waiting)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(SAMPLE_TIMEOUT), services.engine.connect() as conn:
            row = (
                await conn.execute(
                    text(
                        "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)"
                        " FROM outbox"
                    )
                )
            ).one()
            metrics.OUTBOX_BACKLOG.set(row[0])
            metrics.OUTBOX_OLDEST.set(float(row[1]))
    with contextlib.suppress(Exception):
        async with asyncio.timeout(SAMPLE_TIMEOUT):
            depth = await dead_letters.read()
            if depth is not None:
                metrics.DEAD_LETTERED.set(depth)


@contextlib.asynccontextmanager
async def serve_worker_metrics(settings: Settings, services: Services) -> AsyncIterator[None]:
    if not settings.metrics_port:
        yield
        return
    dead_letters = QueueDepth(settings.amqp_urls, DLQ.name)

    async def scrape(_: web.Request) -> web.Response:
        await _sample(services, dead_letters)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await _listen(runner, settings)
        yield
    finally:
        await runner.cleanup()
        await dead_letters.close()


async def _listen(runner: web.AppRunner, settings: Settings) -> None:
    """Serve on the metrics port, or go on without metrics when another process holds it.

    Two workers started with the same settings on one host (the shipped defaults) must both
    serve: the second one's metrics are off, and it says so once. Any other failure to bind
    (a bad host, a privileged port) is a mistake in the settings and stops the worker.
    """
    try:
        await web.TCPSite(runner, settings.http_host, settings.metrics_port).start()
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        log.warning(
            "metrics port in use; this worker's metrics are off",
            port=settings.metrics_port,
            host=settings.http_host,
            hint="give each worker on a host its own WARDEN_METRICS_PORT",
        )
