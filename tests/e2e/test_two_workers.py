"""Two `warden worker` processes on one host with the same settings both serve.

As shipped, every worker asks for the same metrics port: the second one finds it taken, says
so in one warning line and serves without metrics. The workers run in subprocesses on a
RabbitMQ vhost of this module's own, so the consumers counted are theirs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from asyncio.subprocess import PIPE, Process
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aio_pika
import aiohttp
import pytest
import pytest_asyncio

from tests.conftest import PASSWORD, make_settings, unique
from tests.e2e.test_worker_outage import LAUNCHER, STARTUP, release, tail, worker_env
from tests.support.amqp import AmqpCaller
from tests.support.infra import Urls, own_vhost
from tests.support.processes import free_port
from warden.settings import Settings

REGISTER = "warden.users.register"
METRICS_IN_USE = "metrics port in use; this worker's metrics are off"


@pytest.fixture(scope="module")
def isolated(urls: Urls, database: str) -> Iterator[Settings]:
    with own_vhost(urls.amqp) as amqp_url:
        yield make_settings(urls, amqp_url=amqp_url, metrics_port=free_port())


@pytest_asyncio.fixture
async def caller(isolated: Settings) -> AsyncIterator[AmqpCaller]:
    connection = await aio_pika.connect(isolated.amqp_url.get_secret_value())
    try:
        channel = await connection.channel()
        amqp = AmqpCaller(channel)
        await amqp.start()
        yield amqp
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def worker_process(settings: Settings, log: Path) -> AsyncIterator[Process]:
    """A `warden worker` held back until `release`, with the settings' own metrics port."""
    env = worker_env(settings) | {"WARDEN_METRICS_PORT": str(settings.metrics_port)}
    with log.open("ab") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LAUNCHER, env=env, stdin=PIPE, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def logged(log: Path) -> str:
    return log.read_text()


async def started(process: Process, log: Path) -> None:
    """Until the worker logs that it serves; fails at once if it exits instead."""
    deadline = time.monotonic() + STARTUP
    while "worker started" not in logged(log):
        assert process.returncode is None, f"the worker exited:\n{tail(log)}"
        assert time.monotonic() < deadline, f"no start within {STARTUP} s:\n{tail(log)}"
        await asyncio.sleep(0.2)


async def metrics_answer(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(url) as r:
            return r.status == 200 and "warden_" in await r.text()
    except aiohttp.ClientError:
        return False


async def consumers(caller: AmqpCaller, queue: str) -> int:
    declared = await caller.channel.declare_queue(queue, passive=True)
    assert declared.declaration_result is not None
    return declared.declaration_result.consumer_count or 0


async def test_two_workers_with_the_shipped_metrics_port_both_serve(
    isolated: Settings, caller: AmqpCaller, tmp_path: Path
) -> None:
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    metrics = f"http://127.0.0.1:{isolated.metrics_port}/metrics"
    async with (
        worker_process(isolated, first_log) as first,
        worker_process(isolated, second_log) as second,
    ):
        await release(first)
        await started(first, first_log)
        assert await metrics_answer(metrics), tail(first_log)
        await release(second)
        await started(second, second_log)

        assert first.returncode is None
        assert second.returncode is None
        warnings = [line for line in logged(second_log).splitlines() if "metrics" in line]
        assert len(warnings) == 1, tail(second_log)
        assert METRICS_IN_USE in warnings[0]
        assert f"port={isolated.metrics_port}" in warnings[0]
        assert METRICS_IN_USE not in logged(first_log)
        assert await consumers(caller, REGISTER) == 2  # both take requests
        assert await metrics_answer(metrics)  # the first one's endpoint is untouched

        os.kill(first.pid, signal.SIGKILL)  # the second one alone now: it answers
        await first.wait()
        name = unique()
        body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
        reply = await caller.call(REGISTER, body)
        assert reply["ok"] is True, reply
        assert second.returncode is None
