"""Warden against the fastapi-users peer, in one sitting: `uv run python -m bench.perf`.

Makes its own database (warden_bench_perf, by the migrations), RabbitMQ vhost and Redis db;
starts the edge and the workers, the /users/me use case in-process behind a bare aiohttp
route, and the peer (../shared/peer-fastapi-users, `serve.sh PORT 2`) on its own database;
seeds the same users in both; drives them with wrk and prints one table against issue 19's
targets (v2):

  a. GET /users/me at 32 connections: throughput >= 2.0x the peer's, p99 <= 50 ms
  CPU per /users/me at 32 connections, in all (from /proc over the measured window, wrk
     apart): Warden (edge, workers, RabbitMQ, Postgres, Redis) <= 0.5x the peer's (its
     processes, Postgres) and <= 1.5x the in-process route's (its process, Postgres, Redis)
  b. the same use case in-process, no broker (context: the broker hop's price)
  c. logins at bcrypt cost 12, 8 connections, solo: >= 0.97x the raw bcrypt ceiling
     (2 threads of checkpw)
  d. /users/me while 8 connections flood logins: >= 60 % of solo with p99 <= 150 ms, and
     that share plus the logins' share of the ceiling >= 0.95
  e. peak RSS (VmHWM) of edge + workers (<= 200 MiB, v1's), and of the peer's processes

Extra WARDEN_* variables in the environment (say WARDEN_WORKER_PREFETCH) reach the edge and
workers, so a setting can be tried without editing anything. Every process started here is
stopped, and the databases, vhost and Redis db are removed, at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path

from bench.perf_load import Load, Target, Wrk, bcrypt_ceiling, bearer, form_logins
from bench.perf_seed import log_in_all, one_hash, seed_peer, seed_warden
from bench.perf_stack import Stack, require_tools
from bench.perf_table import Results, Side, cpu_lines, figures, machine, table
from bench.procstat import cpu_seconds, descendants, peak_rss_mib, pids_of, settle
from tests.support.infra import base_urls
from tests.support.processes import Process, free_port, until_serving

ME = "/api/v1/users/me"
WARMUP = 2  # seconds of load before each /users/me measurement, not counted
# What a CPU figure is read from: the processes, looked up after the warm-up, so that
# Postgres backends a pool opened under load (and any worker's children) are counted too.
Pids = Callable[[], list[int]]


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__.split("\n")[0])
    p.add_argument("--workers", type=int, default=1, help="Warden worker processes (1)")
    p.add_argument("--seconds", type=int, default=10, help="duration of each measurement (10)")
    p.add_argument("--connections", type=int, default=32, help="/users/me connections (32)")
    p.add_argument("--flood", type=int, default=8, help="login connections (8)")
    p.add_argument("--users", type=int, default=32, help="users seeded in each service (32)")
    p.add_argument("--no-peer", action="store_true", help="measure Warden only")
    p.add_argument("--only-me", action="store_true", help="only a. and b. (a quick look)")
    p.add_argument("--hold", action="store_true", help="keep everything running (to profile)")
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    return p.parse_args()


class Sitting:
    """The measurements, in a fixed order, against services already running and seeded."""

    def __init__(self, args: argparse.Namespace, wrk: Wrk) -> None:
        self.args = args
        self.wrk = wrk

    async def solo(self, me: Target, cpu_of: dict[str, Pids]) -> tuple[Load, dict[str, float]]:
        """/users/me at N connections after a warm-up, with the CPU each process spent on it.

        CPU time over the measured window, from /proc, per request, in µs; wrk's apart.
        """
        await self.wrk.run(me, self.args.connections, WARMUP, threads=2)
        pids = {k: find() for k, find in cpu_of.items()}
        before = {k: cpu_seconds(v) for k, v in pids.items()}
        wrk_before = _children_cpu()
        load = await self.wrk.run(me, self.args.connections, self.args.seconds, threads=2)
        per = 1e6 / max(load.requests, 1)
        cpu = {k: (cpu_seconds(v) - before[k]) * per for k, v in pids.items()}
        cpu["wrk"] = (_children_cpu() - wrk_before) * per
        return load, cpu

    async def side(self, me: Target, login: Target, cpu_of: dict[str, Pids]) -> Side:
        solo, cpu = await self.solo(me, cpu_of)
        one = await self.wrk.run(me, 1, max(self.args.seconds // 2, 3))
        side = Side(solo, one, cpu_us=cpu)
        if self.args.only_me:
            return side
        side.login = await self.wrk.run(login, self.args.flood, self.args.seconds)
        side.flood_me, side.flood_login = await asyncio.gather(
            self.wrk.run(me, self.args.connections, self.args.seconds, threads=2),
            self.wrk.run(login, self.args.flood, self.args.seconds),
        )
        return side


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> Results | None:
    require_tools()
    workdir = Path(tempfile.mkdtemp(prefix="warden-bench-"))
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with base_urls() as base:
        stack = Stack(base, workdir)
        try:
            return await _run(stack, args, workdir)
        finally:
            await asyncio.shield(stack.close())


async def _run(stack: Stack, args: argparse.Namespace, workdir: Path) -> Results | None:
    _say("preparing the database, vhost and Redis db")
    await stack.prepare()
    stack.migrate()
    assert stack.urls is not None
    hashed = one_hash()
    names = await seed_warden(stack.urls.database, hashed, args.users)
    edge_port, inproc_port, peer_port = free_port(), free_port(), free_port()
    _say(f"starting the edge, {args.workers} worker(s), the in-process route and the peer")
    warden = stack.start_warden(edge_port, args.workers)
    inproc = stack.start_inprocess(inproc_port)
    peer = None if args.no_peer else stack.start_peer(peer_port, 2)
    edge, peer_url = f"http://127.0.0.1:{edge_port}", f"http://127.0.0.1:{peer_port}"
    inproc_url = f"http://127.0.0.1:{inproc_port}"
    await until_serving(f"{edge}/health/ready", warden[-1])
    await until_serving(f"{inproc_url}/health", inproc)
    tokens = await log_in_all(f"{edge}/api/v1/auth/login", names)
    if peer is not None:
        await until_serving(f"{peer_url}/health", peer)
        emails = await seed_peer(stack.peer_database_url, hashed, args.users)
        peer_tokens = await log_in_all(f"{peer_url}/auth/jwt/login", emails)
    if args.hold:
        await _hold(edge, inproc_url, peer_url, tokens, workdir)
        return None
    sitting = Sitting(args, Wrk(workdir))
    postgres: Pids = partial(pids_of, "postgres")
    redis: Pids = partial(pids_of, "redis-server")
    shared: dict[str, Pids] = {"rabbitmq": partial(pids_of, "beam.smp")}
    shared |= {"postgres (all)": postgres, "redis": redis}
    ours = [pid for p in [*warden, inproc, *([peer] if peer else [])] for pid in descendants(p.pid)]
    await settle(ours)
    _say("bcrypt ceiling")
    ceiling_before = await asyncio.to_thread(bcrypt_ceiling)
    _say("Warden")

    # The workers' own children (the bcrypt helper) count as the workers'.
    def workers() -> list[int]:
        return [pid for p in warden[:-1] for pid in descendants(p.pid)]

    warden_cpu: dict[str, Pids] = {"edge": partial(descendants, warden[-1].pid)}
    warden_side = await sitting.side(
        bearer(edge + ME, tokens),
        form_logins(f"{edge}/api/v1/auth/login", names),
        warden_cpu | {"workers": workers} | shared,
    )
    await settle(ours)  # the flood's logins still in flight finish first
    _say("in-process route")
    inproc_me = bearer(inproc_url + ME, tokens)
    inprocess, inprocess_cpu = await sitting.solo(
        inproc_me,
        {
            "in-process": partial(descendants, inproc.pid),
            "postgres (all)": postgres,
            "redis": redis,
        },
    )
    inprocess_1 = await sitting.wrk.run(inproc_me, 1, max(args.seconds // 2, 3))
    peer_side = None
    if peer is not None:
        await settle(ours)
        _say("peer")
        peer_side = await sitting.side(
            bearer(peer_url + "/users/me", peer_tokens),
            form_logins(f"{peer_url}/auth/jwt/login", emails),
            {"peer": partial(descendants, peer.pid), "postgres (all)": postgres},
        )
    await settle(ours)  # the peer goes on hashing the logins wrk abandoned
    _say("bcrypt ceiling again")
    ceiling_after = await asyncio.to_thread(bcrypt_ceiling)
    _check_alive([*warden, inproc, *([peer] if peer else [])])
    _record_rss(warden_side, [pid for p in warden for pid in descendants(p.pid)])
    if peer is not None and peer_side is not None:
        _record_rss(peer_side, descendants(peer.pid))
    return Results(
        warden_side, peer_side, inprocess, inprocess_1, ceiling_before, ceiling_after,
        inprocess_cpu_us=inprocess_cpu,
    )  # fmt: skip


def _record_rss(side: Side, pids: list[int]) -> None:
    side.rss_mib, side.processes = peak_rss_mib(pids), len(pids)


def _check_alive(procs: list[Process]) -> None:
    dead = [p for p in procs if p.exited]
    if dead:
        raise RuntimeError(f"{dead[0].name} died during the run:\n{dead[0].tail()}")


async def _hold(edge: str, inproc: str, peer: str, tokens: list[str], workdir: Path) -> None:
    (workdir / "tokens.txt").write_text("\n".join(tokens) + "\n")
    _say(f"holding: edge {edge}, in-process {inproc}, peer {peer}")
    _say(f"tokens in {workdir / 'tokens.txt'}; logs in {workdir}; Ctrl-C or SIGTERM to stop")
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def main() -> None:
    args = _args()
    about = machine()
    try:
        results = asyncio.run(run(args))
    except KeyboardInterrupt:
        return
    if results is None:
        return
    print(f"\n{about}\n")
    print(table(results))
    print(f"\n{cpu_lines(results)}")
    if args.json:
        raw = asdict(results) | {"v2": figures(results)}
        args.json.write_text(json.dumps(raw, indent=2))


if __name__ == "__main__":
    main()
