"""When the only worker dies the edge answers 504 in time and readiness fails; both recover.

The session's worker runs in this process and would answer too, so these tests have a
RabbitMQ vhost of their own with a worker in a subprocess that can really be killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from tests.conftest import PASSWORD, make_settings, unique
from tests.e2e.test_edge_errors import assert_problem
from tests.support.infra import Urls, own_vhost
from tests.support.proxy import TcpProxy
from tests.support.waiting import eventually
from warden.bootstrap import build_edge
from warden.settings import Settings

RPC_TIMEOUT = 2.0
STARTUP = 60.0  # generous: a worker process imports for many seconds on a busy machine
RECOVERY = 15.0
STOP_WITHIN = 20.0
# The contract's times: readiness answers within 3 s; the broker unreachable is a 503 at once
# rather than after WARDEN_RPC_TIMEOUT. What a loaded two-core machine adds on top, at most.
READINESS_PROMISE = 3.0
LOAD_MARGIN = 2.0
AT_ONCE = 3.0  # against an RPC timeout of 10 s: "at once" is well before it
PYCACHE = Path(tempfile.gettempdir()) / "warden-test-pycache"
CLOSED_PORT_AMQP = "amqp://guest:guest@127.0.0.1:1/"
BROKER_TRIES = 3  # connection attempts seen failing before the broker is let through
# What the `warden` console script runs, after doing its slow imports up front and waiting
# for a line on stdin: a standby worker can then be started the moment the test needs it.
LAUNCHER = (
    "import sys, warden.bootstrap, warden.metrics_server, warden.cli\n"
    "sys.stdin.readline()\n"
    "warden.cli.main(['worker'])\n"
)


@pytest.fixture(scope="module")
def isolated(urls: Urls, database: str) -> Iterator[Settings]:
    """Settings on the session's database and Redis, but a vhost no other worker serves."""
    with own_vhost(urls.amqp) as amqp_url:
        yield make_settings(urls, amqp_url=amqp_url, rpc_timeout=RPC_TIMEOUT)


def worker_env(settings: Settings) -> dict[str, str]:
    # Test sessions run with PYTHONDONTWRITEBYTECODE: a bytecode cache outside the repository
    # spares each worker process compiling its imports again, seconds of CPU each.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {
        "PYTHONPYCACHEPREFIX": str(PYCACHE),
        "WARDEN_DATABASE_URL": settings.database_url.get_secret_value(),
        "WARDEN_AMQP_URL": settings.amqp_url.get_secret_value(),
        "WARDEN_REDIS_URL": settings.redis_url.get_secret_value(),
        "WARDEN_BCRYPT_ROUNDS": "4",
        # The tests' registrations share one address (the edge's peer) and one Redis db.
        "WARDEN_REGISTER_IP_MAX": str(settings.register_ip_max),
        "WARDEN_METRICS_PORT": "0",
        "WARDEN_ENV": "test",
        "WARDEN_LOG_FORMAT": "console",
    }


@contextlib.asynccontextmanager
async def worker_process(settings: Settings, log: Path) -> AsyncIterator[Process]:
    """A `warden worker` process held back until `release`; stopped when the block ends."""
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            LAUNCHER,
            env=worker_env(settings),
            stdin=asyncio.subprocess.PIPE,
            stdout=out,
            stderr=out,
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            # SIGTERM: a worker shuts down and writes its coverage data; SIGKILL if it hangs.
            process.terminate()
            try:
                async with asyncio.timeout(STOP_WITHIN):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def release(process: Process) -> None:
    assert process.stdin is not None
    process.stdin.write(b"start\n")
    await process.stdin.drain()


@contextlib.asynccontextmanager
async def edge(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    """An edge in this process, and an HTTP client of it."""
    server = TestServer(build_edge(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession(str(server.make_url(""))) as http:
            yield http
    finally:
        await server.close()


async def timed(
    http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[aiohttp.ClientResponse, float]:
    """The response, its body read, and how long it took."""
    started = time.monotonic()
    async with http.request(method, path, **kwargs) as r:
        await r.read()
    return r, time.monotonic() - started


async def wait_until_ready(http: aiohttp.ClientSession, log: Path) -> None:
    async def ready() -> bool:
        async with http.get("/health/ready") as r:
            return r.status == 200

    await eventually(ready, STARTUP, lambda: f"no worker became ready; its log:\n{tail(log)}")


def tail(log: Path) -> str:
    return log.read_text()[-3000:]


def registration() -> dict[str, Any]:
    name = unique()
    return {"email": f"{name}@example.com", "username": name, "password": PASSWORD}


async def test_a_killed_worker_makes_requests_time_out_until_another_one_starts(
    isolated: Settings, tmp_path: Path
) -> None:
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    async with (
        edge(isolated) as http,
        worker_process(isolated, first_log) as first,
        worker_process(isolated, second_log) as second,
    ):
        await release(first)
        await wait_until_ready(http, first_log)
        async with http.post("/api/v1/users", json=registration()) as r:
            assert r.status == 201, await r.text()

        first.kill()  # SIGKILL: no graceful shutdown, as when its host dies
        await first.wait()
        late = registration()
        (timed_out, waited), (ready, checked) = await asyncio.gather(
            timed(http, "POST", "/api/v1/users", json=late), timed(http, "GET", "/health/ready")
        )
        await assert_problem(timed_out, 504, "upstream_timeout")
        assert waited < RPC_TIMEOUT + LOAD_MARGIN, (
            f"no reply within WARDEN_RPC_TIMEOUT ({RPC_TIMEOUT} s) is a 504 then: "
            f"took {waited:.2f} s"
        )
        assert ready.status == 503
        assert checked < READINESS_PROMISE + LOAD_MARGIN, (
            f"readiness answers within {READINESS_PROMISE} s: took {checked:.2f} s"
        )
        checks = (await ready.json())["checks"]
        assert checks["workers"]["status"] == "fail"
        assert checks["broker"]["status"] == "pass"

        await release(second)

        async def registers() -> bool:
            async with http.post("/api/v1/users", json=registration()) as r:
                return r.status == 201

        await eventually(registers, RECOVERY, lambda: tail(second_log))
        async with http.get("/health/ready") as r:
            assert r.status == 200
        # The request that timed out expired in its queue: no worker registered it later.
        async with http.post("/api/v1/users", json=late) as r:
            assert r.status == 201, await r.text()


async def test_an_edge_without_a_broker_starts_and_refuses_requests_at_once(
    urls: Urls,
) -> None:
    settings = make_settings(urls, amqp_url=CLOSED_PORT_AMQP, rpc_timeout=10)
    async with edge(settings) as http:
        async with http.get("/health/live") as r:
            assert r.status == 200
            assert await r.json() == {"status": "pass"}

        async with http.get("/health/ready") as r:
            assert r.status == 503
            ready = await r.json()
        assert ready["status"] == "fail"
        assert ready["checks"]["broker"]["status"] == "fail"
        assert ready["checks"]["workers"]["status"] == "fail"

        r, took = await timed(http, "POST", "/api/v1/users", json=registration())
        await assert_problem(r, 503, "service_unavailable")
        assert took < AT_ONCE, (
            f"the broker unreachable is a 503 at once, not after the {settings.rpc_timeout} s "
            f"RPC timeout: took {took:.2f} s"
        )


async def test_a_worker_started_before_its_broker_waits_for_it_then_serves(
    isolated: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "early.log"
    amqp = urlsplit(isolated.amqp_url.get_secret_value())
    async with TcpProxy(amqp.hostname or "127.0.0.1", amqp.port or 5672) as proxy:
        proxy.cut("refuse")  # the broker is not up yet
        netloc = f"{amqp.netloc.rpartition('@')[0]}@127.0.0.1:{proxy.port}"
        early = isolated.model_copy(
            update={"amqp_url": SecretStr(urlunsplit(amqp._replace(netloc=netloc)))}
        )
        async with edge(isolated) as http, worker_process(early, log) as worker:
            await release(worker)

            def tried_again() -> bool:
                assert worker.returncode is None, tail(log)  # still waiting, not gone
                return log.read_text().count("broker unreachable") >= BROKER_TRIES

            # Found unreachable, then tried again and again: it waits for its broker.
            await eventually(tried_again, STARTUP, lambda: tail(log))

            proxy.restore()  # the broker comes up
            await wait_until_ready(http, log)
            async with http.post("/api/v1/users", json=registration()) as r:
                assert r.status == 201, await r.text()
