"""The /users/me use case in-process: a bare aiohttp route, no broker, no edge machinery.

Run by bench.perf as `python -m bench.perf_inproc` with the same WARDEN_* environment as
the worker. It answers what the broker hop costs: the same `auth.authenticate` call and
the same reply body, minus the edge's RPC client, RabbitMQ and the worker's FastStream.
"""

from __future__ import annotations

import asyncio
import signal

import orjson
from aiohttp import web

from domain.errors import WardenError
from handlers.views import user_body
from warden import logs
from warden.bootstrap import build_services, follow_signing_keys
from warden.cli import freeze_startup_objects
from warden.settings import Settings


async def serve(settings: Settings) -> None:
    services = build_services(settings)
    follower = await follow_signing_keys(settings, services)  # the worker's keys, as it has them

    async def me(request: web.Request) -> web.Response:
        try:
            principal = await services.auth.authenticate(request.headers.get("Authorization"))
        except WardenError as exc:
            return web.Response(status=exc.status, text=exc.code)
        return web.Response(
            body=orjson.dumps(user_body(principal.user)), content_type="application/json"
        )

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="pass")

    app = web.Application()
    app.router.add_get("/api/v1/users/me", me)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port, backlog=1024).start()
    freeze_startup_objects()  # as the edge and worker do
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        if follower is not None:
            await follower.stop()
        await services.close()


def main() -> None:
    import uvloop

    settings = Settings()
    logs.configure(settings.log_format, settings.log_level)
    uvloop.run(serve(settings))


if __name__ == "__main__":
    main()
