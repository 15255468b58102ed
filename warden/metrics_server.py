"""The worker's metrics endpoint on WARDEN_METRICS_PORT (0 turns it off)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from handlers import metrics
from warden.bootstrap import Services
from warden.settings import Settings


async def _sample(services: Services) -> None:
    metrics.BCRYPT_QUEUE.set(services.hasher.waiting)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1), services.engine.connect() as conn:
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


@contextlib.asynccontextmanager
async def serve_worker_metrics(settings: Settings, services: Services) -> AsyncIterator[None]:
    if not settings.metrics_port:
        yield
        return

    async def scrape(_: web.Request) -> web.Response:
        await _sample(services)
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.metrics_port).start()
    try:
        yield
    finally:
        await runner.cleanup()
