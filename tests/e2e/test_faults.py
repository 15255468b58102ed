"""Faults, against the real services: a broker away at commit time, Postgres or the broker cut
from under Warden, a worker killed with requests in flight.

Warden reaches a service through a TCP proxy the test cuts and restores (the machine's
services stay up), on a database and a RabbitMQ vhost of this module's own, so neither the
session's worker nor its outbox relay answers for these tests. Each test counts: 0 lost
writes, 0 lost events, 0 duplicate users.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiohttp
import asyncpg
import orjson
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from domain.accounts import RegisterUser
from domain.errors import ServiceUnavailable
from domain.model import NewUser
from storage.db import asyncpg_dsn, make_engine
from storage.idempotency import PENDING_TTL
from storage.uow import SqlAlchemyUnitOfWorkFactory
from tests.conftest import PASSWORD, make_settings, own_world, unique
from tests.e2e.test_edge_errors import assert_problem
from tests.support.infra import Urls
from tests.support.proxy import TcpProxy
from tests.support.waiting import eventually
from warden.bootstrap import build_edge, running_worker
from warden.settings import Settings
from web.app import RPC_CLIENT

WARDEN = Path(sys.executable).with_name("warden")
STARTUP = 90.0  # a worker process imports for many seconds on a busy machine
RECOVERY = 10.0  # issue 5's promise: requests succeed again within 10 s of a dependency's return
# The contract: the broker unreachable is a 503 "at once rather than after the timeout" (10 s
# here); what a loaded two-core machine adds stays well inside this.
AT_ONCE = 3.0
READINESS_BOUND = 5.0  # the contract's 3 s for a readiness answer, and the load's share
RETRY_PAUSE = 0.2  # a careful client's pause before it sends a request again
DELIVERY = 15.0  # events committed while the broker was away, delivered after its return
EVENTS = 20
KILLED_LOAD = 30
KILLED_PREFETCH = 4  # requests a worker holds at once on the registration queue (the default)
EMAIL_TAKEN = "409 email_taken"
RETRYABLE = {(409, "idempotency_key_in_use"), (503, "service_unavailable")}
RETRYABLE_STATUS = {504}  # upstream_timeout: the caller cannot know whether the work was done


# --- a world of this module's own: database, vhost, proxies ---------------------------------


@pytest_asyncio.fixture(scope="module")
async def isolated(urls: Urls) -> AsyncIterator[Urls]:
    """A migrated database and a vhost of this module's own (the session's Redis)."""
    async with own_world(urls, "faults") as own:
        yield own


def through(proxy: TcpProxy, url: str) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{proxy.port}" if credentials else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


@contextlib.asynccontextmanager
async def proxy_to(url: str, default_port: int) -> AsyncIterator[TcpProxy]:
    parts = urlsplit(url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port) as proxy:
        yield proxy


async def fetch_value(database_url: str, query: str, *args: Any) -> Any:
    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def users_by_email(database_url: str, emails: list[str]) -> dict[str, int]:
    """How many users each email has (0, 1 or, if something went badly wrong, more)."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT email, count(*) AS n FROM users WHERE email = ANY($1::text[]) GROUP BY email",
            emails,
        )
    finally:
        await conn.close()
    counts = dict.fromkeys(emails, 0)
    counts.update({r["email"]: r["n"] for r in rows})
    return counts


# --- HTTP ------------------------------------------------------------------------------------


def registration() -> dict[str, str]:
    name = unique()
    return {"email": f"{name}@example.com", "username": name, "password": PASSWORD}


@contextlib.asynccontextmanager
async def edge_client(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    """An edge in this process, and an HTTP client of it."""
    server = TestServer(build_edge(settings), host="127.0.0.1")
    await server.start_server()
    try:
        assert server.app is not None
        await server.app[RPC_CLIENT].wait_connected(10)
        async with aiohttp.ClientSession(str(server.make_url(""))) as http:
            yield http
    finally:
        await server.close()


async def post_user(
    http: aiohttp.ClientSession, body: dict[str, str], key: str | None = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Idempotency-Key": key} if key else {}
    async with http.post("/api/v1/users", json=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def readiness(http: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
    try:
        async with asyncio.timeout(READINESS_BOUND), http.get("/health/ready") as r:
            return r.status, await r.json()
    except TimeoutError:
        raise AssertionError(
            f"readiness answers within 3 s, even with a dependency cut: none in {READINESS_BOUND} s"
        ) from None


async def wait_ready(http: aiohttp.ClientSession, within: float, log: Path | None = None) -> None:
    async def ready() -> bool:
        return (await readiness(http))[0] == 200

    await eventually(ready, within, lambda: f"Warden was not ready\n{tail_of(log)}", 0.2)


def tail_of(log: Path | None) -> str:
    return log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""


@dataclass
class Outcome:
    """What one caller saw until its registration was created (or it gave up)."""

    body: dict[str, str]
    key: str
    statuses: list[str] = field(default_factory=list)
    user: dict[str, Any] | None = None


async def register_until_created(
    http: aiohttp.ClientSession, body: dict[str, str], within: float
) -> Outcome:
    """A careful client: one Idempotency-Key, retried on 409 in-use, 503 or 504 until a 201."""
    outcome = Outcome(body, unique("key-"))
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            status, reply = await post_user(http, body, outcome.key)
        except aiohttp.ClientConnectionError as exc:  # an edge going away mid-request
            outcome.statuses.append(type(exc).__name__)
            await asyncio.sleep(RETRY_PAUSE)
            continue
        outcome.statuses.append(f"{status} {reply.get('code', '')}".strip())
        if status == 201:
            outcome.user = reply
            return outcome
        if (status, reply.get("code")) not in RETRYABLE and status not in RETRYABLE_STATUS:
            return outcome  # a final answer that is not a 201: the assertions report it
        await asyncio.sleep(RETRY_PAUSE)
    return outcome


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    seen: dict[str, int] = {}
    for o in outcomes:
        for s in o.statuses:
            seen[s] = seen.get(s, 0) + 1
    return seen


async def assert_each_created_once(database_url: str, outcomes: list[Outcome]) -> None:
    """0 lost writes (every caller holds a 201 for a stored user), 0 duplicates."""
    failed = [(o.body["email"], o.statuses) for o in outcomes if o.user is None]
    assert not failed, f"callers without a 201: {failed}"
    counts = await users_by_email(database_url, [o.body["email"] for o in outcomes])
    assert set(counts.values()) == {1}, {e: n for e, n in counts.items() if n != 1}


# --- events ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bound_queue(amqp_url: str, routing_key: str) -> AsyncIterator[dict[str, dict[str, Any]]]:
    """A queue of the test's own bound to warden.events; yields {event id: CloudEvent}."""
    received: dict[str, dict[str, Any]] = {}
    connection = await aio_pika.connect(amqp_url, timeout=10)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "warden.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key)

        async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                event = orjson.loads(message.body)
                received[event["id"]] = event

        await queue.consume(on_event)
        yield received
    finally:
        await connection.close()


# --- worker processes ------------------------------------------------------------------------


def worker_env(settings: Settings, bcrypt_rounds: int = 10) -> dict[str, str]:
    return os.environ | {
        "WARDEN_DATABASE_URL": settings.database_url.get_secret_value(),
        "WARDEN_AMQP_URL": settings.amqp_url.get_secret_value(),
        "WARDEN_REDIS_URL": settings.redis_url.get_secret_value(),
        "WARDEN_BCRYPT_ROUNDS": str(bcrypt_rounds),
        # The tests' registrations share one address (the edge's peer) and one Redis db.
        "WARDEN_REGISTER_IP_MAX": str(settings.register_ip_max),
        "WARDEN_METRICS_PORT": "0",
        "WARDEN_ENV": "test",
        "WARDEN_LOG_FORMAT": "console",
    }


class WardenProcess:
    """`warden worker` or `warden edge` as a process of its own, its output in a log file."""

    def __init__(self, command: str, env: dict[str, str], log: Path) -> None:
        self.command = command
        self.env = env
        self.log = log
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> WardenProcess:
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                str(WARDEN), self.command, env=self.env, stdout=out, stderr=out
            )
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def wait_for_line(self, text: str, within: float = STARTUP) -> None:
        """Until the process logs `text` (e.g. "worker started"); fails if it exits first."""

        async def logged() -> bool:
            assert self.process is not None
            if self.process.returncode is not None:
                pytest.fail(f"warden {self.command} exited early:\n{self.output()[-3000:]}")
            return text in self.output()

        def failure() -> str:
            return f"warden {self.command} did not log {text!r}:\n{self.output()[-3000:]}"

        await eventually(logged, within, failure, 0.1)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self, within: float) -> int | None:
        """The exit code, or None if the process is still running after `within` seconds."""
        assert self.process is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                return await self.process.wait()
        return None

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        if await self.wait(20) is None:
            self.process.kill()
            await self.process.wait()


@contextlib.asynccontextmanager
async def workers(settings: Settings, logs: list[Path]) -> AsyncIterator[list[WardenProcess]]:
    """Worker processes started side by side; each has logged "worker started" on entry."""
    fleet = [WardenProcess("worker", worker_env(settings), log) for log in logs]
    try:
        await asyncio.gather(*(w.start() for w in fleet))
        await asyncio.gather(*(w.wait_for_line("worker started") for w in fleet))
        yield fleet
    finally:
        await asyncio.gather(*(w.stop() for w in fleet))


async def assert_recovered(http: aiohttp.ClientSession, refused: dict[str, str]) -> None:
    """After the dependency's return: the refused registration goes through, readiness passes."""
    outcome = await register_until_created(http, refused, RECOVERY)
    assert outcome.user is not None, outcome.statuses
    assert (await readiness(http))[0] == 200


async def assert_one_user_each(database_url: str, *bodies: dict[str, str]) -> None:
    """0 lost writes, 0 duplicate users."""
    emails = [b["email"] for b in bodies]
    assert await users_by_email(database_url, emails) == dict.fromkeys(emails, 1)


# --- the tests -------------------------------------------------------------------------------


async def test_events_committed_while_the_broker_is_away_go_out_and_requests_resume_on_its_return(
    isolated: Urls,
) -> None:
    async with (
        proxy_to(isolated.amqp, 5672) as proxy,
        bound_queue(isolated.amqp, "user.registered") as received,
    ):
        settings = make_settings(isolated, amqp_url=through(proxy, isolated.amqp))
        async with running_worker(settings) as services:
            proxy.cut()
            users = []
            for _ in range(EVENTS):
                b = registration()
                cmd = RegisterUser(b["email"], b["username"], b["password"])
                users.append(await services.accounts.register(cmd))
            ids = [u.id for u in users]
            # Each registration's rows: its events and its verification mail's job.
            waiting = "SELECT count(*) FROM outbox WHERE user_id = ANY($1::bigint[])"
            registered = f"{waiting} AND type = 'user.registered'"
            # Every change committed (0 lost writes); its event waits in the outbox.
            emails = [u.email for u in users]
            assert set((await users_by_email(isolated.database, emails)).values()) == {1}
            assert await fetch_value(isolated.database, registered, ids) == EVENTS
            assert not received

            proxy.restore()

            async def all_delivered() -> bool:
                return {e.get("subject") for e in received.values()} >= {str(i) for i in ids}

            await eventually(all_delivered, DELIVERY, lambda: f"{len(received)}/{EVENTS} arrived")

            async def outbox_drained() -> bool:
                return bool(await fetch_value(isolated.database, waiting, ids) == 0)

            await eventually(outbox_drained, 5, "the outbox was not drained")

            # The worker's consumers came back too: it answers requests again, unrestarted.
            async with edge_client(make_settings(isolated, rpc_timeout=5)) as http:
                outcome = await register_until_created(http, registration(), RECOVERY)
                assert outcome.user is not None, outcome.statuses
    ours = [e for e in received.values() if e.get("subject") in {str(i) for i in ids}]
    assert len(ours) == EVENTS  # one event id per registration: none lost, none invented
    assert {e["type"] for e in ours} == {"user.registered"}


async def test_with_postgres_cut_requests_get_503_readiness_names_it_and_both_recover(
    isolated: Urls,
) -> None:
    async with proxy_to(isolated.database, 5432) as proxy:
        settings = make_settings(
            isolated, database_url=through(proxy, isolated.database), rpc_timeout=10
        )
        async with running_worker(settings), edge_client(settings) as http:
            await wait_ready(http, RECOVERY)
            before = registration()
            assert (await post_user(http, before))[0] == 201

            proxy.cut()
            during = registration()
            async with http.post("/api/v1/users", json=during) as r:
                await assert_problem(r, 503, "service_unavailable")
            status, ready = await readiness(http)
            assert status == 503
            assert ready["checks"]["postgres"]["status"] == "fail"
            assert {k: c["status"] for k, c in ready["checks"].items() if k != "postgres"} == {
                "broker": "pass",
                "redis": "pass",
                "workers": "pass",
            }

            proxy.restore()
            # The refused registration was never acknowledged; the caller sends it again.
            await assert_recovered(http, during)
    await assert_one_user_each(isolated.database, before, during)


async def test_a_database_connection_lost_mid_transaction_is_a_503_and_commits_nothing(
    isolated: Urls,
) -> None:
    body = registration()
    async with proxy_to(isolated.database, 5432) as proxy:
        engine = make_engine(through(proxy, isolated.database))

        async def register_across_the_cut() -> None:
            async with SqlAlchemyUnitOfWorkFactory(engine)() as uow:
                await uow.users.add(NewUser(body["email"], body["username"], "hash"))
                proxy.cut()
                await uow.commit()

        try:
            with pytest.raises(ServiceUnavailable):  # not a driver error, which would be a 500
                await register_across_the_cut()
        finally:
            await engine.dispose()
    assert await users_by_email(isolated.database, [body["email"]]) == {body["email"]: 0}


async def test_with_the_edge_cut_from_the_broker_requests_get_503_at_once_and_recover(
    isolated: Urls,
) -> None:
    async with proxy_to(isolated.amqp, 5672) as proxy:
        edge_settings = make_settings(
            isolated, amqp_url=through(proxy, isolated.amqp), rpc_timeout=10
        )
        async with running_worker(make_settings(isolated)), edge_client(edge_settings) as http:
            await wait_ready(http, RECOVERY)
            before = registration()
            assert (await post_user(http, before))[0] == 201

            proxy.cut()

            async def broker_failing() -> bool:
                status, ready = await readiness(http)
                return status == 503 and ready["checks"]["broker"]["status"] == "fail"

            await eventually(broker_failing, 5, "readiness did not report the broker cut")
            during = registration()
            started = time.monotonic()
            async with http.post("/api/v1/users", json=during) as r:
                await assert_problem(r, 503, "service_unavailable")
            took = time.monotonic() - started
            assert took < AT_ONCE, (
                f"the broker unreachable is a 503 at once, not after the "
                f"{edge_settings.rpc_timeout} s RPC timeout: took {took:.2f} s"
            )

            proxy.restore()
            await assert_recovered(http, during)
    await assert_one_user_each(isolated.database, before, during)


async def test_a_worker_killed_with_requests_in_flight_loses_and_duplicates_nothing(
    isolated: Urls, tmp_path: Path
) -> None:
    """Observed: RabbitMQ hands the killed worker's unacknowledged requests to the other
    worker at once; their Idempotency-Keys stay claimed by the dead worker until its
    heartbeat lapses (1.5 s; tests/e2e/test_claim_takeover.py holds that promise), so
    those callers get 409 idempotency_key_in_use (or a 504) and retry until then; the
    retry that takes the claim over does the work and gets the 201. When the kill falls
    between a request's commit and the storing of its reply in Redis, the retry finds the
    reply the transaction kept in Postgres and replays it: never a false 409 email_taken."""
    settings = make_settings(isolated, rpc_timeout=10)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    async with workers(settings, logs) as (victim, survivor), edge_client(settings) as http:
        await wait_ready(http, RECOVERY, logs[0])
        bodies = [registration() for _ in range(KILLED_LOAD)]
        patience = PENDING_TTL + 2 * settings.rpc_timeout  # a dead worker's claim must lapse
        callers = [asyncio.create_task(register_until_created(http, b, patience)) for b in bodies]
        emails = [b["email"] for b in bodies]

        async def some_created() -> bool:
            return sum((await users_by_email(isolated.database, emails)).values()) >= 3

        await eventually(some_created, 30, "no registration went through before the kill")
        victim.signal(signal.SIGKILL)
        assert await victim.wait(10) == -signal.SIGKILL
        outcomes = await asyncio.gather(*callers)
        assert survivor.process is not None
        assert survivor.process.returncode is None  # it answered for the killed one
    print("statuses seen by the callers:", summary(outcomes))

    counts = await users_by_email(isolated.database, emails)
    assert set(counts.values()) == {1}, counts  # 0 lost writes, 0 duplicate users
    false_conflicts = [o for o in outcomes if o.user is None and o.statuses[-1] == EMAIL_TAKEN]
    assert false_conflicts == []  # a reply lost after its commit is replayed from Postgres
    assert all(o.user is not None for o in outcomes), [o.statuses for o in outcomes if not o.user]
