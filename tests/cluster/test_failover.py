"""Warden on a real three-node RabbitMQ cluster under steady registrations and logins
(CONTRACT §10): the node that leads warden.audit is killed with `kill -9`, brought back, then
the node the edge is on. Nothing written is lost, no event is lost, no user is doubled, no
request waits past its deadline, and every request started 5 s after a kill succeeds.

Two workers and an edge run as `warden worker` / `warden edge` processes, every one given all
three nodes; the load retries a failed registration with its Idempotency-Key, as a careful
client does.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy.engine import make_url

from storage.db import drop_database
from tests.cluster.conftest import PORT_BASE, Cluster
from tests.conftest import PASSWORD, fresh_ip, make_settings
from tests.support.infra import Urls, with_database
from tests.support.processes import WARDEN, Process, free_port, until_serving, warden_env
from tests.support.waiting import eventually
from warden.cli import migrate

pytestmark = pytest.mark.cluster

RPC_TIMEOUT = 5.0
SLACK = 1.5  # seconds past the deadline an answer may take to travel back on a loaded machine
BACK_WITHIN = 5.0  # every request started this long after a kill succeeds
CLIENTS = 6
SETTLE = 8.0  # seconds of load after each kill before the node comes back
WITHIN = 60.0


@dataclass
class Sample:
    kind: str
    started: float
    ended: float
    status: int
    code: str | None = None


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    registered: dict[str, int] = field(default_factory=dict)  # email -> user id (201s)
    logins: Counter[int] = field(default_factory=Counter)  # user id -> 200s
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(
        self, http: aiohttp.ClientSession, kind: str, path: str, body: Any, **headers: str
    ) -> tuple[int, Any]:
        started = time.monotonic()
        try:
            async with http.post(path, json=body, headers=headers) as r:
                data = await r.json(content_type=None)
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            data, status = {"code": type(exc).__name__}, 0
        code = data.get("code") if isinstance(data, dict) and status >= 400 else None
        self.samples.append(Sample(kind, started, time.monotonic(), status, code))
        return status, data

    async def client(self, base: str) -> None:
        """Register a user, log in as them, again; every failure retried until it succeeds."""
        timeout = aiohttp.ClientTimeout(total=RPC_TIMEOUT * 3)
        async with aiohttp.ClientSession(
            base, timeout=timeout, headers={"X-Forwarded-For": fresh_ip()}
        ) as http:
            while not self.stop.is_set():
                name = f"c{uuid.uuid4().hex[:12]}"
                body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
                key = uuid.uuid4().hex
                while True:  # the same key until it succeeds: one user, whatever happened
                    status, data = await self.request(
                        http, "register", "/api/v1/users", body, **{"Idempotency-Key": key}
                    )
                    if status == 201:
                        self.registered[body["email"]] = int(data["id"])
                        break
                    await asyncio.sleep(0.2)
                login = {"username": name, "password": PASSWORD}
                while True:
                    status, _ = await self.request(http, "login", "/api/v1/auth/login", login)
                    if status == 200:
                        self.logins[self.registered[body["email"]]] += 1
                        break
                    await asyncio.sleep(0.2)


@dataclass
class Stack:
    edge: str
    database: str
    processes: list[Process]


@pytest_asyncio.fixture
async def stack(cluster: Cluster, urls: Urls, tmp_path: Path) -> AsyncIterator[Stack]:
    database = with_database(urls.database, f"warden_cluster_{uuid.uuid4().hex[:10]}")
    own = Urls(database, cluster.amqp_url, urls.redis)
    await migrate(make_settings(own))
    port = free_port()
    env = warden_env(
        own,
        WARDEN_ENV="test",
        WARDEN_BCRYPT_ROUNDS="4",
        WARDEN_METRICS_PORT="0",
        WARDEN_RPC_TIMEOUT=str(RPC_TIMEOUT),
        WARDEN_HTTP_PORT=str(port),
        WARDEN_TRUSTED_PROXIES="127.0.0.1",
        WARDEN_REGISTER_IP_MAX="1000000",
        WARDEN_LOG_FORMAT="json",
    )
    processes = [
        Process.spawn(f"worker{n}", [str(WARDEN), "worker"], env, tmp_path / f"worker{n}.log")
        for n in (1, 2)
    ]
    processes.append(Process.spawn("edge", [str(WARDEN), "edge"], env, tmp_path / "edge.log"))
    edge = f"http://127.0.0.1:{port}"
    try:
        await until_serving(f"{edge}/health/ready", processes[-1])
        yield Stack(edge, database, processes)
    finally:
        for process in processes:
            process.stop()
        await drop_database(database)


async def ready(edge: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{edge}/health/ready") as r:
        data: dict[str, Any] = await r.json()
        return data


def node_number(address: str) -> int:
    return int(address.rpartition(":")[2]) - PORT_BASE


async def kill_and_watch(cluster: Cluster, node: int, edge: str) -> float:
    """kill -9 `node`, keep the load on for SETTLE s, start it again; the kill's time.

    Before it is back, readiness passes with the edge and the answering worker elsewhere.
    """
    killed = time.monotonic()
    cluster.kill(node)
    await asyncio.sleep(SETTLE)
    report = await ready(edge)
    assert report["status"] == "pass", report
    assert node_number(report["checks"]["broker"]["node"]) != node
    assert node_number(report["checks"]["workers"]["node"]) != node
    await asyncio.to_thread(cluster.start, node)
    await eventually(lambda: asyncio.to_thread(cluster.all_running), WITHIN, "no rejoin")
    return killed


async def test_killing_the_audit_leader_then_the_edges_node_loses_nothing(
    cluster: Cluster, stack: Stack
) -> None:
    report = await ready(stack.edge)
    assert report["status"] == "pass"
    assert report["checks"]["broker"]["node"].startswith(
        "127.0.0.1:568"
    )  # readiness names the node
    assert report["checks"]["workers"]["node"].startswith("127.0.0.1:568")

    load = Load()
    clients = [asyncio.create_task(load.client(stack.edge)) for _ in range(CLIENTS)]
    try:
        await asyncio.sleep(3.0)  # steady
        alive = next(n for n in (1, 2, 3) if cluster.pid(n))
        audit_leader = cluster.leader("warden.audit", alive)
        first = await kill_and_watch(cluster, audit_leader, stack.edge)
        edge_node = node_number((await ready(stack.edge))["checks"]["broker"]["node"])
        second = await kill_and_watch(cluster, edge_node, stack.edge)
        await asyncio.sleep(3.0)  # load spreads again over the three
    finally:
        load.stop.set()
        async with asyncio.timeout(WITHIN):
            await asyncio.gather(*clients)
    for process in stack.processes:
        assert not process.exited, f"{process.name} exited:\n{process.tail()}"

    kills = [first, second]
    late = [s for s in load.samples if s.ended - s.started > RPC_TIMEOUT + SLACK]
    assert not late, f"requests waited past their deadline: {late[:5]}"
    failed = [s for s in load.samples if not 200 <= s.status < 300]
    outside = [
        s for s in failed if not any(k <= s.started < k + BACK_WITHIN for k in kills)
        and not any(s.started < k <= s.ended for k in kills)
    ]  # fmt: skip
    timeline = sorted((round(s.started - kills[0], 2), s.kind, s.status, s.code) for s in failed)
    print(f"\nsecond kill at {second - first:.2f}; failures after the first kill: {timeline}")
    assert not outside, f"failures outside {BACK_WITHIN} s of a kill: {outside[:5]}"
    # A retried registration gets its kept reply, never the 409 of its own first attempt.
    assert not [s for s in failed if s.code in ("email_taken", "username_taken")]
    assert len(load.registered) > CLIENTS * 4, "too little load to mean anything"

    # Nothing lost, nothing doubled; every event audited.
    await eventually(lambda: all_audited(stack.database, load), WITHIN, "events not audited")
    conn = await connect(stack.database)
    try:
        rows = await conn.fetch(
            "SELECT email, count(*) AS n FROM users WHERE email = ANY($1::text[]) GROUP BY email",
            list(load.registered),
        )
    finally:
        await conn.close()
    assert {r["email"] for r in rows} == set(load.registered)  # 0 lost writes
    assert all(r["n"] == 1 for r in rows)  # 0 duplicate users

    # The killed nodes rejoined: all three run, each a member of the audit queue again.
    assert cluster.all_running()
    statuses = Counter(s.status for s in load.samples)
    print(f"\nrequests by status: {dict(statuses)}; users: {len(load.registered)}")


async def connect(database: str) -> Any:
    url = make_url(database).set(drivername="postgresql")
    return await asyncpg.connect(url.render_as_string(hide_password=False))


async def all_audited(database: str, load: Load) -> bool:
    """Every registration's event and at least one user.logged_in per successful login."""
    conn = await connect(database)
    try:
        rows = await conn.fetch(
            "SELECT user_id, type, count(*) AS n FROM audit_log"
            " WHERE user_id = ANY($1::bigint[]) GROUP BY user_id, type",
            list(load.registered.values()),
        )
    finally:
        await conn.close()
    counts = {(r["user_id"], r["type"]): r["n"] for r in rows}
    return all(
        counts.get((uid, "user.registered"), 0) == 1
        and counts.get((uid, "user.logged_in"), 0) >= load.logins[uid]
        for uid in load.registered.values()
    )
