"""Token introspection over AMQP, pipelined: `uv run python -m bench.introspect`.

Issue 19, target 5: `warden.auth.introspect` against Ory Hydra's published figure for its
introspection endpoint (5.1k req/s at p50 13 ms on 2 CPUs). Makes its own database (by the
migrations), RabbitMQ vhost and Redis db; seeds --tokens users, starts ONE `warden worker`
and logs each user in over AMQP (`warden.auth.login`) for an access token. Then a
closed-loop client on one aiormq connection and channel keeps K introspections outstanding
(direct reply-to, counter correlation ids, as web/rpc_client.py does): each reply sends the
next request. Every reply is checked (ok, active, the token's own username), so an error
path is never measured by mistake; a non-ok, inactive or wrong reply, or no reply within
TIMEOUT, is an error. Prints one markdown table per run, and the CPU each process spent per
introspection (from /proc; RabbitMQ, Postgres and Redis are shared with whatever else runs
on the machine). Everything made here is removed at the end, on Ctrl-C or SIGTERM too.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiormq
import bcrypt
import orjson
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from bench.perf_seed import PASSWORD, seed_warden
from bench.perf_stack import Stack, _exclusive
from bench.procstat import cpu_seconds, descendants, pids_of, settle
from contract.protocol import DEADLINE, DIRECT_REPLY_TO, broker_user
from storage.db import drop_database
from tests.support.infra import Urls, base_urls, own_redis_db, own_vhost, with_database
from tests.support.processes import WARDEN, Process

INTROSPECT = "warden.auth.introspect"
LOGIN = "warden.auth.login"
BENCH_DB = "warden_bench_introspect"
TIMEOUT = 5.0  # seconds without a reply: the request is an error, and another takes its place
HYDRA = "Ory Hydra (published): 5.1k req/s, p50 13 ms, on 2 CPUs"
# The worker as measured: small pools (the machine's Postgres is shared), cheap bcrypt.
WORKER = {
    "WARDEN_LOG_LEVEL": "warning",
    "WARDEN_BCRYPT_ROUNDS": "4",
    "WARDEN_DB_POOL_SIZE": "4",
    "WARDEN_DB_MAX_OVERFLOW": "2",
}


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.introspect", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--in-flight", type=_counts, default=[64],
        help="requests kept outstanding; a list (1,16,64) runs each in turn (64)",
    )  # fmt: skip
    p.add_argument("--seconds", type=float, default=10, help="measured seconds per run (10)")
    p.add_argument("--warmup", type=float, default=2, help="unmeasured seconds before each (2)")
    p.add_argument("--tokens", type=int, default=32, help="distinct users and tokens (32)")
    p.add_argument("--hold", action="store_true", help="print the worker's pid, wait for Enter")
    args = p.parse_args()
    if args.tokens < 1 or args.seconds <= 0 or args.warmup < 0:
        p.error("--tokens must be at least 1, --seconds positive, --warmup not negative")
    return args


def _counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("every in-flight count must be at least 1")
    return counts


# -- what the run made ---------------------------------------------------------------------


@dataclass
class IntrospectStack(Stack):
    """bench.perf's Stack with a database, vhost and lock of this benchmark's own."""

    async def prepare(self) -> None:
        self._lock = _exclusive(self.workdir.parent / "warden-bench-introspect.lock")
        url = with_database(self.base.database, BENCH_DB)
        await drop_database(url)
        self.databases.append(url)
        amqp = self._made.enter_context(own_vhost(self.base.amqp, "warden_bench_introspect"))
        redis = self._made.enter_context(own_redis_db(self.base.redis))
        self.urls = Urls(url, amqp, redis)

    def start_worker(self) -> Process:
        return self.spawn("worker", [str(WARDEN), "worker"], self.warden_env(**WORKER))


# -- the client ----------------------------------------------------------------------------


@dataclass
class Window:
    """What one measured run saw: latencies of the replies that came within it, and errors."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    wrong: list[str] = field(default_factory=list)  # the first few wrong replies, to show


class Client:
    """One connection, one channel, direct reply-to; replies matched by correlation id."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._user = broker_user(url)
        self._ids = map(f"{os.urandom(4).hex()}-{{}}".format, itertools.count())
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._connection: aiormq.abc.AbstractConnection | None = None
        self.channel: aiormq.Channel | None = None
        # The pipeline's: a reply no call waits on is handed to it.
        self.on_reply: Callable[[str, bytes], Awaitable[None]] | None = None

    async def start(self) -> None:
        self._connection = await aiormq.connect(self._url)
        self.channel = cast(
            aiormq.Channel, await self._connection.channel(publisher_confirms=False)
        )
        await self.channel.basic_consume(DIRECT_REPLY_TO, self._on_reply, no_ack=True)

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()

    def properties(self, correlation_id: str) -> Basic.Properties:
        return Basic.Properties(
            content_type="application/json",
            correlation_id=correlation_id,
            reply_to=DIRECT_REPLY_TO,
            # RabbitMQ drops a request nobody took before we stop waiting, as the edge's.
            expiration=str(int(TIMEOUT * 1000)),
            headers={DEADLINE: int((time.time() + TIMEOUT) * 1000)},
            delivery_mode=1,
            user_id=self._user,
        )

    def next_id(self) -> str:
        return next(self._ids)

    async def call(self, queue: str, body: dict[str, Any], within: float = 30) -> dict[str, Any]:
        """One request and its envelope (for the logins)."""
        assert self.channel is not None
        correlation_id = self.next_id()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        try:
            await self.channel.basic_publish(
                orjson.dumps(body), routing_key=queue,
                properties=self.properties(correlation_id), wait=False,
            )  # fmt: skip
            async with asyncio.timeout(within):
                envelope: dict[str, Any] = orjson.loads(await future)
                return envelope
        finally:
            self._pending.pop(correlation_id, None)

    async def _on_reply(self, message: DeliveredMessage) -> None:
        correlation_id = message.header.properties.correlation_id or ""
        future = self._pending.pop(correlation_id, None)
        if future is not None:
            if not future.done():
                future.set_result(message.body)
        elif self.on_reply is not None:
            await self.on_reply(correlation_id, message.body)


class Pipeline:
    """Keeps `in_flight` introspections outstanding; each reply (or timeout) sends the next."""

    def __init__(self, client: Client, tokens: list[tuple[str, str]], in_flight: int) -> None:
        self.client = client
        # Each token's body, made once, and the username its introspection must name.
        self.bodies = [(orjson.dumps({"token": t}), name) for t, name in tokens]
        self.in_flight = in_flight
        self._next_token = itertools.cycle(range(len(tokens)))
        self._sent: dict[str, tuple[float, int]] = {}  # correlation id -> (sent at, token)
        self._window: Window | None = None  # None while warming up
        self._window_ends = 0.0
        self._running = False
        self.warmup_failure: str | None = None
        self._drained = asyncio.Event()  # set when the last reply is in after the run

    async def run(self, warmup: float, seconds: float) -> Window:
        self.client.on_reply = self._on_reply
        self._running = True
        watchdog = asyncio.create_task(self._watch())
        try:
            for _ in range(self.in_flight):
                await self._send()
            await asyncio.sleep(warmup)
            if self.warmup_failure is not None:
                raise RuntimeError(f"introspection failed while warming up: {self.warmup_failure}")
            window = Window()
            self._window = window
            started = time.perf_counter()
            self._window_ends = started + seconds
            await asyncio.sleep(seconds)
            self._window = None
            self._running = False
            await self._drain()
            return window
        finally:
            self._running = False
            self._window = None
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    async def _send(self) -> None:
        channel = self.client.channel
        assert channel is not None
        index = next(self._next_token)
        correlation_id = self.client.next_id()
        self._sent[correlation_id] = (time.perf_counter(), index)
        await channel.basic_publish(
            self.bodies[index][0], routing_key=INTROSPECT,
            properties=self.client.properties(correlation_id), wait=False,
        )  # fmt: skip

    async def _on_reply(self, correlation_id: str, body: bytes) -> None:
        now = time.perf_counter()
        sent = self._sent.pop(correlation_id, None)
        if sent is None:
            return  # timed out and counted already
        window = self._window
        if window is not None and now <= self._window_ends:
            problem = _wrong(body, self.bodies[sent[1]][1])
            if problem is None:
                window.latencies.append(now - sent[0])
            else:
                window.errors += 1
                if len(window.wrong) < 3:
                    window.wrong.append(problem)
        elif window is None and self._running and self.warmup_failure is None:
            # A warm-up that fails is a run that would fail: it is stopped before measuring.
            self.warmup_failure = _wrong(body, self.bodies[sent[1]][1])
        if self._running:
            await self._send()
        elif not self._sent:
            self._drained.set()

    async def _watch(self) -> None:
        """A request with no reply within TIMEOUT is an error; another takes its place."""
        while True:
            await asyncio.sleep(0.25)
            cutoff = time.perf_counter() - TIMEOUT
            late = [cid for cid, (at, _) in self._sent.items() if at < cutoff]
            for cid in late:
                del self._sent[cid]
                if self._window is not None:
                    self._window.errors += 1
                if self._running:
                    await self._send()

    async def _drain(self) -> None:
        """Until the requests still out have come back, so the next run starts from none."""
        if self._sent:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TIMEOUT + 1):
                    await self._drained.wait()
        self._sent.clear()


def _wrong(body: bytes, username: str) -> str | None:
    """What is wrong with an introspection's reply, or None when it is the active token's."""
    try:
        envelope = orjson.loads(body)
        data = envelope.get("data") if envelope.get("ok") is True else None
        if data and data.get("active") is True and data.get("username") == username:
            return None
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return body[:300].decode(errors="replace")


# -- the run -------------------------------------------------------------------------------


@dataclass
class Row:
    in_flight: int
    seconds: float
    window: Window
    cpu_us: dict[str, float]

    @property
    def requests(self) -> int:
        return len(self.window.latencies)

    def pct(self, q: float) -> float:
        ordered = sorted(self.window.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(args: argparse.Namespace) -> list[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="warden-bench-introspect-"))
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with base_urls() as base:
        stack = IntrospectStack(base, workdir)
        failed = False
        try:
            return await _run(stack, args)
        except Exception:
            failed = True
            _say(f"the worker's log is kept in {workdir}")
            raise
        finally:
            _say("cleaning up")
            await asyncio.shield(stack.close())
            if not failed:
                shutil.rmtree(workdir, ignore_errors=True)


async def _run(stack: IntrospectStack, args: argparse.Namespace) -> list[Row]:
    _say("preparing the database, vhost and Redis db")
    await stack.prepare()
    await asyncio.to_thread(stack.migrate)
    assert stack.urls is not None
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(int(WORKER["WARDEN_BCRYPT_ROUNDS"])))
    names = await seed_warden(stack.urls.database, hashed.decode(), args.tokens)
    _say("starting one worker")
    worker = stack.start_worker()
    client = Client(stack.urls.amqp)
    try:
        await _until_consuming(stack.urls.amqp, worker, (LOGIN, INTROSPECT))
        await client.start()
        tokens = await _log_in(client, names)
        if args.hold:
            await _hold(worker)
        worker_pids = descendants(worker.pid)
        processes = {
            "worker": worker_pids,
            "rabbitmq": pids_of("beam.smp"),
            "redis": pids_of("redis-server"),
            "postgres (all)": pids_of("postgres"),
        }
        rows = []
        for k in args.in_flight:
            await settle(worker_pids)
            _say(f"{k} in flight: {args.warmup:g} s warm-up, {args.seconds:g} s measured")
            rows.append(await _measure(client, tokens, k, args, processes))
            if worker.exited:
                raise RuntimeError(f"the worker died during the run:\n{worker.tail()}")
        return rows
    finally:
        await client.close()


async def _measure(
    client: Client,
    tokens: list[tuple[str, str]],
    in_flight: int,
    args: argparse.Namespace,
    processes: dict[str, list[int]],
) -> Row:
    pipeline = Pipeline(client, tokens, in_flight)
    measuring = asyncio.create_task(pipeline.run(args.warmup, args.seconds))
    await asyncio.sleep(args.warmup)
    before = {k: cpu_seconds(v) for k, v in processes.items()}
    own_before = _own_cpu()
    window = await measuring
    # CPU read at the window's end (the drain after it is a few ms of replies at most).
    per = 1e6 / max(len(window.latencies), 1)
    cpu = {k: (cpu_seconds(v) - before[k]) * per for k, v in processes.items()}
    cpu["bench client"] = (_own_cpu() - own_before) * per
    return Row(in_flight, args.seconds, window, cpu)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _until_consuming(amqp: str, worker: Process, queues: tuple[str, ...]) -> None:
    """Until the worker consumes every queue of `queues` (it declares them as it starts)."""
    connection = await aiormq.connect(amqp)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if worker.exited:
                raise RuntimeError(f"the worker exited:\n{worker.tail()}")
            if all([await _consumers(connection, q) > 0 for q in queues]):
                return
            await asyncio.sleep(0.25)
        raise RuntimeError(f"the worker did not consume {queues} within 120 s:\n{worker.tail()}")
    finally:
        await connection.close()


async def _consumers(connection: aiormq.abc.AbstractConnection, queue: str) -> int:
    """A queue's consumer count; 0 while it does not exist (a passive declare closes the
    channel it fails on, so each asks on a channel of its own)."""
    channel = await connection.channel()
    try:
        declared = await channel.queue_declare(queue, passive=True)
        return declared.consumer_count or 0
    except aiormq.exceptions.ChannelNotFoundEntity:
        return 0
    finally:
        with contextlib.suppress(Exception):
            await channel.close()


async def _log_in(client: Client, names: list[str]) -> list[tuple[str, str]]:
    """An access token per user, by warden.auth.login over AMQP: (token, username)."""
    sem = asyncio.Semaphore(8)

    async def one(name: str) -> tuple[str, str]:
        async with sem:
            envelope = await client.call(LOGIN, {"username": name, "password": PASSWORD})
        if not envelope.get("ok"):
            raise RuntimeError(f"login {name}: {envelope}")
        return str(envelope["data"]["access_token"]), name

    _say(f"logging {len(names)} users in over AMQP")
    tokens = list(await asyncio.gather(*(one(n) for n in names)))
    _check_subjects(tokens)
    return tokens


def _check_subjects(tokens: list[tuple[str, str]]) -> None:
    """Distinct tokens of distinct users (the sub claim, read without checking the signature)."""
    subs = set()
    for token, _ in tokens:
        payload = token.split(".")[1]
        subs.add(orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])
    if len(subs) != len(tokens) or len({t for t, _ in tokens}) != len(tokens):
        raise RuntimeError("the logins did not give one token per user")


async def _hold(worker: Process) -> None:
    _say(f"holding: the worker's pid is {worker.pid}; press Enter to measure")
    await asyncio.to_thread(sys.stdin.readline)


# -- the report ----------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = [
        "| in-flight | seconds | requests | req/s | p50 ms | p99 ms | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.in_flight} | {r.seconds:g} | {r.requests} | {r.requests / r.seconds:,.0f} | "
            f"{r.pct(0.50):.2f} | {r.pct(0.99):.2f} | {r.window.errors} |"
        )
    return "\n".join(lines)


def cpu_table(rows: list[Row]) -> str:
    names = list(rows[0].cpu_us) if rows else []
    lines = [
        "| in-flight | " + " | ".join(f"{n} µs" for n in names) + " |",
        "|---:|" + "---:|" * len(names),
    ]
    for r in rows:
        lines.append(
            f"| {r.in_flight} | " + " | ".join(f"{r.cpu_us[n]:,.0f}" for n in names) + " |"
        )
    return "\n".join(lines)


def machine() -> str:
    """The CPUs, Python and load average before the run (bench.perf's line asks for wrk)."""
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), platform.processor(),
    )  # fmt: skip
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; load average before the run: {load}"
    )


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _iter_wrong(rows: list[Row]) -> Iterator[str]:
    for r in rows:
        for problem in r.window.wrong:
            yield f"in-flight {r.in_flight}: {problem}"


def main() -> None:
    args = _args()
    about = machine()
    try:
        rows = asyncio.run(run(args))
    except KeyboardInterrupt:
        print("interrupted; everything the run made is removed", file=sys.stderr)
        sys.exit(130)
    print(f"\n{about}\n")
    print(f"`warden.auth.introspect` over AMQP, one worker, {args.tokens} tokens; {HYDRA}\n")
    print(table(rows))
    print("\nCPU per introspection (shared services count all their work):\n")
    print(cpu_table(rows))
    wrong = list(_iter_wrong(rows))
    if wrong:
        print("\nwrong replies (first few):", *wrong, sep="\n  ")


if __name__ == "__main__":
    main()
