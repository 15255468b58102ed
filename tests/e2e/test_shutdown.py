"""Graceful shutdown: SIGTERM to a worker or an edge process finishes what it holds, exits 0.

The processes are real `warden worker` / `warden edge` processes on a RabbitMQ vhost of this
module's own (the session's worker never answers for them), sharing the session's database
and Redis. Starting a process costs seconds, so the module keeps one small fleet that the
tests hand on: two workers and an edge start together; the rolling restart leaves one
worker, which the edge test uses and the last test stops.
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
import redis.asyncio as redis

from storage.idempotency import PREFIX as IDEMPOTENCY_PREFIX
from tests.conftest import make_settings, unique
from tests.e2e.test_faults import (
    Outcome,
    WardenProcess,
    assert_each_created_once,
    edge_client,
    post_user,
    registration,
    summary,
    wait_ready,
    worker_env,
)
from tests.support.infra import Urls, own_vhost
from tests.support.processes import free_port
from tests.support.waiting import eventually
from warden.settings import Settings

EXIT_WITHIN = 20.0  # seconds from SIGTERM to exit 0
IN_FLIGHT = 4  # the worker's prefetch on the registration queue (WARDEN_WORKER_LOGIN_PREFETCH)
REGISTER_QUEUE = "warden.users.register"
PACE = 0.05  # seconds each caller of the steady load waits between two registrations


class Fleet:
    """This module's worker and edge processes, each with a log file of its own."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.workers: list[WardenProcess] = []
        self.edge: WardenProcess | None = None
        self.edge_port = free_port()
        self._started = 0

    def _worker(self) -> WardenProcess:
        self._started += 1
        env = worker_env(self.settings) | {"WARDEN_WORKER_LOGIN_PREFETCH": str(IN_FLIGHT)}
        return WardenProcess("worker", env, self.logs / f"worker-{self._started}.log")

    async def ensure(self, workers: int, edge: bool = False) -> None:
        """Start what is missing, side by side: at least `workers` workers, and the edge."""
        self.workers = [w for w in self.workers if w.process and w.process.returncode is None]
        new = [self._worker() for _ in range(workers - len(self.workers))]
        if edge and self.edge is None:
            env = worker_env(self.settings) | {
                "WARDEN_HTTP_PORT": str(self.edge_port),
                "WARDEN_RPC_TIMEOUT": "10",
            }
            self.edge = WardenProcess("edge", env, self.logs / "edge.log")
            await self.edge.start()
        await asyncio.gather(*(w.start() for w in new))
        waits = [w.wait_for_line("worker started") for w in new]
        if edge and self.edge is not None:
            waits.append(self.edge.wait_for_line("edge listening"))
        await asyncio.gather(*waits)
        self.workers += new

    async def only(self, workers: int) -> list[WardenProcess]:
        """Exactly `workers` running workers (extra ones are stopped)."""
        await self.ensure(workers)
        for extra in self.workers[workers:]:
            await extra.stop()
        self.workers = self.workers[:workers]
        return self.workers

    async def replace(self, old: WardenProcess) -> WardenProcess:
        new = await self._worker().start()
        await new.wait_for_line("worker started")
        self.workers = [new if w is old else w for w in self.workers]
        return new

    async def close(self) -> None:
        processes = [*self.workers, *([self.edge] if self.edge else [])]
        await asyncio.gather(*(p.stop() for p in processes))


@pytest.fixture(scope="module")
def own_amqp(urls: Urls) -> Iterator[str]:
    with own_vhost(urls.amqp) as amqp:
        yield amqp


@pytest_asyncio.fixture(scope="module")
async def fleet(
    urls: Urls, database: str, own_amqp: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fleet]:
    settings = make_settings(urls, amqp_url=own_amqp, rpc_timeout=10)
    fleet = Fleet(settings, tmp_path_factory.mktemp("fleet"))
    try:
        await fleet.ensure(2, edge=True)  # everything the module needs, started at once
        yield fleet
    finally:
        await fleet.close()


async def assert_exits_0(process: WardenProcess) -> None:
    code = await process.wait(EXIT_WITHIN)
    assert code == 0, f"exit code {code}:\n{process.output()[-3000:]}"


class SteadyLoad:
    """Callers registering one user after another until stopped; every answer is kept."""

    def __init__(self, http: aiohttp.ClientSession, callers: int) -> None:
        self.http = http
        self.outcomes: list[Outcome] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._caller()) for _ in range(callers)]

    @property
    def created(self) -> int:
        return sum(o.user is not None for o in self.outcomes)

    async def _caller(self) -> None:
        while not self._stop.is_set():
            outcome = Outcome(registration(), unique("key-"))
            self.outcomes.append(outcome)
            status, reply = await post_user(self.http, outcome.body, outcome.key)
            outcome.statuses.append(f"{status} {reply.get('code', '')}".strip())
            if status == 201:
                outcome.user = reply
            await asyncio.sleep(PACE)

    async def until_created(self, more: int, within: float = 30) -> None:
        target = self.created + more

        async def enough() -> bool:
            return self.created >= target

        await eventually(enough, within, lambda: str(summary(self.outcomes)))

    async def stop(self) -> list[Outcome]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.outcomes


async def test_restarting_two_workers_one_at_a_time_under_steady_load_fails_no_request(
    fleet: Fleet,
) -> None:
    first, second = await fleet.only(2)
    async with edge_client(fleet.settings) as http:
        await wait_ready(http, 10)
        load = SteadyLoad(http, callers=3)
        try:
            await load.until_created(5)
            first.signal(signal.SIGTERM)
            await assert_exits_0(first)
            await load.until_created(5)  # the other worker carries the load alone
            await fleet.replace(first)
            await load.until_created(5)
            second.signal(signal.SIGTERM)
            await assert_exits_0(second)
            await load.until_created(5)
        finally:
            outcomes = await load.stop()
    failed = [o.statuses for o in outcomes if o.user is None]
    assert not failed, f"failed requests {summary(outcomes)}"
    await assert_each_created_once(fleet.settings.database_url.get_secret_value(), outcomes)
    for stopped in (first, second):
        assert "worker stopped" in stopped.output()


async def edge_in_flight(http: aiohttp.ClientSession) -> float:
    """The edge's own gauge of requests being served (this scrape counts itself)."""
    async with http.get("/metrics") as r:
        text = await r.text()
    for line in text.splitlines():
        if line.startswith("warden_http_requests_in_flight "):
            return float(line.split()[1]) - 1
    return 0.0


async def test_an_edge_given_sigterm_completes_its_in_flight_requests_and_exits_0(
    fleet: Fleet,
) -> None:
    await fleet.ensure(1, edge=True)
    assert fleet.edge is not None
    bodies = [registration() for _ in range(8)]
    async with aiohttp.ClientSession(f"http://127.0.0.1:{fleet.edge_port}") as http:
        await wait_ready(http, 10, fleet.edge.log)
        calls = [asyncio.create_task(post_user(http, b)) for b in bodies]

        async def all_in_flight() -> bool:
            return await edge_in_flight(http) >= len(bodies)

        await eventually(all_in_flight, 10, "the edge never held every request at once")
        fleet.edge.signal(signal.SIGTERM)
        replies = await asyncio.gather(*calls)
        assert [status for status, _ in replies] == [201] * len(bodies), replies
    async with aiohttp.ClientSession(f"http://127.0.0.1:{fleet.edge_port}") as fresh:
        with pytest.raises(aiohttp.ClientConnectionError):  # it accepts no new connection
            async with fresh.get("/health/live"):
                pass
    await assert_exits_0(fleet.edge)
    assert "edge stopped" in fleet.edge.output()
    fleet.edge = None


def claim_key(idempotency_key: str) -> str:
    """Where a worker claims an anonymous registration's key when it starts working on it."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"{IDEMPOTENCY_PREFIX}anonymous:{REGISTER_QUEUE}:{digest}"


async def test_a_worker_given_sigterm_answers_the_requests_it_holds_and_exits_0(
    fleet: Fleet,
) -> None:
    (worker,) = await fleet.only(1)  # no other worker could answer for it
    bodies = [registration() for _ in range(IN_FLIGHT)]
    keys = [unique("key-") for _ in bodies]
    rds = redis.Redis.from_url(fleet.settings.redis_url.get_secret_value())
    try:
        async with edge_client(fleet.settings) as http:
            await wait_ready(http, 10)
            calls = [
                asyncio.create_task(post_user(http, b, k))
                for b, k in zip(bodies, keys, strict=True)
            ]

            async def all_taken() -> bool:  # the worker is working on every one of them
                return await rds.exists(*(claim_key(k) for k in keys)) == len(keys)

            await eventually(all_taken, 10, "the worker never held every request", 0.01)
            worker.signal(signal.SIGTERM)
            replies = await asyncio.gather(*calls)
    finally:
        await rds.aclose()
    assert [status for status, _ in replies] == [201] * IN_FLIGHT, replies
    await assert_exits_0(worker)
    log = worker.output()
    assert log.index("worker stopping") < log.index("worker stopped")
    outcomes = [
        Outcome(b, k, [str(s)], r) for b, k, (s, r) in zip(bodies, keys, replies, strict=True)
    ]
    await assert_each_created_once(fleet.settings.database_url.get_secret_value(), outcomes)
