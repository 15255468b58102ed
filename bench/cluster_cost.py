"""What replication costs (CONTRACT §10): Warden on one RabbitMQ node with the queues of before
(classic RPC queues: the code of a base commit), on one node with quorum queues (this tree),
and on the three-node cluster with quorum queues (this tree), in one sitting.

    uv run python -m bench.cluster_cost [--base COMMIT] [--seconds 10] [--connections 16]

Each configuration gets its own database, vhost and Redis db, one `warden worker` and one
`warden edge` (processes, as an operator runs them), then:
- registration latency: REQUESTS sequential registrations (one connection), p50/p99;
- login latency: REQUESTS sequential logins, p50/p99;
- /users/me: `--connections` concurrent keep-alive clients for `--seconds`, after a warm-up:
  requests per second, p50/p99.
The load is driven from this Python process (aiohttp), on the same machine: it competes for
the CPU with what it measures, equally in every configuration. bcrypt runs at 4 rounds so the
broker's share of a login is visible. Needs the cluster (scripts/rabbit-cluster.sh up) and
`git` (the base commit is checked out in a temporary worktree).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from storage.db import drop_database
from tests.support.infra import Urls, base_urls, own_redis_db, own_vhost, with_database
from tests.support.processes import WARDEN, Process, free_port, until_serving, warden_env
from warden.cli import migrate
from warden.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BASE_COMMIT = "2a5edb6"  # main before this work: classic RPC queues
REQUESTS = 40
PASSWORD = "correct horse battery"
CLUSTER_PORTS = (5681, 5682, 5683)


@dataclass
class Figures:
    name: str
    me_rps: float
    me_p50: float
    me_p99: float
    me_errors: int
    login_p50: float
    login_p99: float
    register_p50: float
    register_p99: float


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


@contextlib.contextmanager
def cluster_vhost() -> Iterator[str]:
    vhost = f"warden_bench_{uuid.uuid4().hex[:8]}"

    def ctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", "-n", "rc1@localhost", *args], check=True,
                       capture_output=True, timeout=60)  # fmt: skip

    ctl("add_vhost", vhost)
    ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield ",".join(f"amqp://guest:guest@127.0.0.1:{p}/{vhost}" for p in CLUSTER_PORTS)
    finally:
        ctl("delete_vhost", vhost)


@contextlib.contextmanager
def base_tree(commit: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="warden-base-") as parent:
        tree = Path(parent) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), commit],
                       check=True, capture_output=True)  # fmt: skip
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False, capture_output=True)  # fmt: skip


@contextlib.asynccontextmanager
async def stack(urls: Urls, amqp: str, code: Path | None, log: Path) -> AsyncIterator[str]:
    database = with_database(urls.database, f"warden_bench_{uuid.uuid4().hex[:8]}")
    own = Urls(database, amqp, urls.redis)
    await migrate(Settings(database_url=database, amqp_url=amqp.split(",")[0]))  # type: ignore[arg-type]
    port = free_port()
    env = warden_env(
        own,
        WARDEN_ENV="dev",
        WARDEN_BCRYPT_ROUNDS="4",
        WARDEN_METRICS_PORT="0",
        WARDEN_HTTP_PORT=str(port),
        WARDEN_LOG_LEVEL="warning",
        WARDEN_REGISTER_IP_MAX="1000000",
        WARDEN_LOGIN_IP_MAX_FAILURES="1000000",
    )
    if code is not None:  # the base commit's code, on this environment's packages
        env["PYTHONPATH"] = str(code)
    procs = [
        Process.spawn("worker", [str(WARDEN), "worker"], env, log, cwd=code),
        Process.spawn("edge", [str(WARDEN), "edge"], env, log, cwd=code),
    ]
    edge = f"http://127.0.0.1:{port}"
    try:
        await until_serving(f"{edge}/health/ready", procs[-1])
        yield edge
    finally:
        for p in procs:
            p.stop()
        await drop_database(database)


async def measure(name: str, edge: str, seconds: int, connections: int) -> Figures:
    async with aiohttp.ClientSession(edge) as http:
        register: list[float] = []
        login: list[float] = []
        tokens: list[str] = []
        for _ in range(REQUESTS):
            user = f"b{uuid.uuid4().hex[:12]}"
            body = {"email": f"{user}@example.com", "username": user, "password": PASSWORD}
            started = time.perf_counter()
            async with http.post("/api/v1/users", json=body) as r:
                assert r.status == 201, await r.text()
            register.append(time.perf_counter() - started)
            started = time.perf_counter()
            async with http.post(
                "/api/v1/auth/login", json={"username": user, "password": PASSWORD}
            ) as r:
                assert r.status == 200, await r.text()
                tokens.append((await r.json())["access_token"])
            login.append(time.perf_counter() - started)

    latencies: list[float] = []
    errors = 0
    stop_at = 0.0

    async def client(token: str, record: bool) -> None:
        nonlocal errors
        headers = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession(edge, headers=headers) as http:
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                async with http.get("/api/v1/users/me") as r:
                    await r.read()
                    ok = r.status == 200
                if record:
                    latencies.append(time.perf_counter() - started)
                    errors += not ok

    for record, length in ((False, 2), (True, seconds)):
        stop_at = time.perf_counter() + length
        started = time.perf_counter()
        await asyncio.gather(*(client(tokens[i % len(tokens)], record) for i in range(connections)))
    elapsed = time.perf_counter() - started
    return Figures(
        name,
        len(latencies) / elapsed,
        pct(latencies, 0.5),
        pct(latencies, 0.99),
        errors,
        statistics.median(login) * 1000,
        pct(login, 0.99),
        statistics.median(register) * 1000,
        pct(register, 0.99),
    )


async def main(args: argparse.Namespace) -> None:
    results: list[Figures] = []
    workdir = Path(tempfile.mkdtemp(prefix="warden-cluster-bench-"))
    with base_urls() as base, own_redis_db(base.redis) as redis, base_tree(args.base) as old:
        urls = Urls(base.database, base.amqp, redis)
        with own_vhost(base.amqp, "warden_bench") as amqp:
            async with stack(urls, amqp, old, workdir / "before.log") as edge:
                results.append(await measure("one node, classic RPC queues (before)", edge,
                                             args.seconds, args.connections))  # fmt: skip
        with own_vhost(base.amqp, "warden_bench") as amqp:
            async with stack(urls, amqp, None, workdir / "quorum1.log") as edge:
                results.append(await measure("one node, quorum queues", edge,
                                             args.seconds, args.connections))  # fmt: skip
        with cluster_vhost() as amqp:
            async with stack(urls, amqp, None, workdir / "cluster.log") as edge:
                results.append(await measure("three nodes, quorum queues", edge,
                                             args.seconds, args.connections))  # fmt: skip
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; "
          f"{args.connections} connections for {args.seconds} s; logs in {workdir}\n")  # fmt: skip
    print(
        "| configuration | /users/me req/s | p50 ms | p99 ms | errors | login p50 | login p99"
        " | register p50 | register p99 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for f in results:
        print(f"| {f.name} | {f.me_rps:.0f} | {f.me_p50:.1f} | {f.me_p99:.1f} | {f.me_errors} | "
              f"{f.login_p50:.1f} | {f.login_p99:.1f} | {f.register_p50:.1f} | "
              f"{f.register_p99:.1f} |")  # fmt: skip


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default=BASE_COMMIT, help="the commit of 'before'")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(_args()))
