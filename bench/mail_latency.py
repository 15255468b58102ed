"""Commit-to-SMTP latency of a registration's verification mail (issue 19, target 4c).

The target: a registration's verification mail is handed to SMTP within 100 ms (p50) of the
commit that queued it, measured against an in-process SMTP server.

Registers users one at a time through the RPC queue `warden.users.register` of a `warden
worker` subprocess (so the worker has its own event loop: the SMTP server and the clients
here do not share it), mailing to an aiosmtpd server in this process, and times each mail's
DATA at that server (handle_DATA) from its registration's commit. The commit's exact moment
is not recorded by Postgres (track_commit_timestamp is off by default), so it is bracketed:

- `created_at` of the job's mail_jobs row: the transaction's start, before the commit. The
  figure this benchmark answers with: it can only overstate the latency.
- NOTIFY: the moment a LISTEN of this process on the outbox channel hears the commit's
  notification (Postgres sends it at the commit): the closest reading, a little after it.
- the RPC reply's arrival: after the commit by the reply's trip; understates the latency.

A stage line splits the NOTIFY reading at the worker's SMTP connect: before it, the relay's
wake-up and publish, the broker and the mailer's claim and render; after it, the SMTP
dialogue up to DATA.

    uv run python -m bench.mail_latency [--count 100] [--gap 0.05]

Uses a database, a RabbitMQ vhost and a Redis db of its own on the services named by the
WARDEN_* URLs (the local ones by default), all undone at the end, also on Ctrl-C or SIGTERM;
the worker runs with small pools, bcrypt cost 4 (the mail path is measured, not hashing) and
log level warning. Postgres's clock is compared with this process's: it must run on this
machine. Figures are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import orjson
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.outbox_latency import settings_for
from storage.db import asyncpg_dsn, drop_database
from storage.outbox import OUTBOX_CHANNEL
from tests.support.amqp import AmqpCaller
from tests.support.infra import Urls, base_urls, own_redis_db, own_vhost, with_database
from tests.support.processes import WARDEN, Process, free_port, warden_env
from warden import logs
from warden.cli import migrate

ROOT = Path(__file__).resolve().parent.parent
REGISTER = "warden.users.register"
PASSWORD = "correct horse battery staple"
TARGET_P50_MS = 100.0
STARTUP = 60.0  # seconds the worker may take to import and start serving on a busy machine
DELIVERY = 10.0  # seconds a mail may take before the run is given up
# The worker as measured: small pools (Postgres is shared), cheap hashing, quiet logs.
WORKER_SETTINGS = {
    "WARDEN_ENV": "test",
    "WARDEN_BCRYPT_ROUNDS": "4",
    "WARDEN_LOG_LEVEL": "warning",
    "WARDEN_LOG_FORMAT": "json",
    "WARDEN_METRICS_PORT": "0",
    "WARDEN_DB_POOL_SIZE": "2",
    "WARDEN_DB_MAX_OVERFLOW": "0",
    "WARDEN_MAIL_PREFETCH": "2",
    "WARDEN_REGISTER_IP_MAX": "1000000",  # every registration comes from this one publisher
    "WARDEN_MAIL_MAX_PER_HOUR": "1000",
}


# --- the SMTP server's side -------------------------------------------------------------------


class Receipts:
    """aiosmtpd handler: when each recipient's mail reached DATA, and when its session began
    (time.time(), the clock Postgres's timestamps are compared with)."""

    def __init__(self) -> None:
        self.data: dict[str, tuple[float, float]] = {}  # recipient: (connected, DATA)
        self.connected: dict[Session, float] = {}
        self._changed = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        now = time.time()
        connected = self.connected.pop(session, now)
        for rcpt in envelope.rcpt_tos:
            self.data.setdefault(rcpt.lower(), (connected, now))
        self._changed.set()
        return "250 2.0.0 OK"

    async def of(self, address: str) -> tuple[float, float]:
        async with asyncio.timeout(DELIVERY):
            while address not in self.data:
                self._changed.clear()
                await self._changed.wait()
        return self.data[address]


@contextlib.asynccontextmanager
async def smtp_server(receipts: Receipts) -> AsyncIterator[str]:
    """An aiosmtpd server on 127.0.0.1 in this event loop; yields its smtp:// URL."""
    loop = asyncio.get_running_loop()

    class Timed(SMTP):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            if self.session is not None:
                receipts.connected[self.session] = time.time()

    port = free_port()
    server = await loop.create_server(
        lambda: Timed(receipts, hostname="smtp.bench", loop=loop), "127.0.0.1", port
    )
    try:
        yield f"smtp://127.0.0.1:{port}"
    finally:
        server.close()


# --- the caller's side ------------------------------------------------------------------------


class Notifications:
    """When this process heard each NOTIFY on the outbox channel (each commit that queued)."""

    def __init__(self) -> None:
        self.heard: list[float] = []

    def on_notify(self, *_: object) -> None:
        self.heard.append(time.time())

    def first_after(self, start: float) -> float | None:
        return next((t for t in self.heard if t >= start), None)


# --- the measurement --------------------------------------------------------------------------


@dataclass
class Sample:
    address: str
    sent: float  # the request published
    notified: float | None  # NOTIFY heard
    replied: float  # the reply arrived
    connected: float  # the worker's SMTP connection accepted
    data: float  # DATA handed to the handler
    created: float = 0.0  # the mail_jobs row's created_at (the transaction's start)


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)


async def register(caller: AmqpCaller, wait: float) -> tuple[str, float, float]:
    """Register a new user; (its address, when the request left, when the reply came)."""
    name = f"mb{uuid.uuid4().hex[:14]}"
    address = f"{name}@example.com"
    body = {"email": address, "username": name, "password": PASSWORD}
    sent = time.time()
    reply = orjson.loads((await caller.raw(REGISTER, orjson.dumps(body), wait=wait)).body)
    if not (isinstance(reply, dict) and reply.get("ok")):
        raise RuntimeError(f"{REGISTER} failed: {reply!r}")
    return address, sent, time.time()


async def until_serving(caller: AmqpCaller, receipts: Receipts, worker: Process) -> None:
    """Until a registration is answered and its mail arrives (a warm-up, not measured)."""
    deadline = time.monotonic() + STARTUP
    while True:
        if worker.exited:
            raise RuntimeError(f"warden worker exited:\n{worker.tail()}")
        try:
            address, _, _ = await register(caller, wait=2.0)
            break
        except TimeoutError:  # its queue not declared yet: the request went nowhere
            if time.monotonic() > deadline:
                tail = worker.tail()
                raise RuntimeError(f"the worker did not answer in {STARTUP} s:\n{tail}") from None
    await receipts.of(address)


async def measure(urls: Urls, smtp_url: str, receipts: Receipts, workdir: Path, run: Run,
                  count: int, gap: float) -> None:  # fmt: skip
    env = warden_env(urls, **WORKER_SETTINGS, WARDEN_SMTP_URL=smtp_url)
    worker = Process.spawn("worker", [str(WARDEN), "worker"], env, workdir / "worker.log", ROOT)
    listener: asyncpg.Connection | None = None
    connection: aio_pika.abc.AbstractRobustConnection | None = None
    try:
        notifications = Notifications()
        listener = await asyncpg.connect(asyncpg_dsn(urls.database), timeout=10)
        await listener.add_listener(OUTBOX_CHANNEL, notifications.on_notify)
        connection = await aio_pika.connect_robust(urls.amqp)
        caller = AmqpCaller(await connection.channel())
        await caller.start()
        await until_serving(caller, receipts, worker)
        for n in range(count):
            address, sent, replied = await register(caller, wait=DELIVERY)
            connected, data = await receipts.of(address)
            run.samples.append(
                Sample(address, sent, notifications.first_after(sent), replied, connected, data)
            )
            if n + 1 < count:
                await asyncio.sleep(gap)  # idle between registrations: no batching helps
        rows = await listener.fetch(
            "SELECT address, extract(epoch FROM created_at)::float8 AS at FROM mail_jobs"
            " WHERE kind = 'verify_email' AND address = any($1::text[])",
            [s.address for s in run.samples],
        )
        created = {r["address"]: r["at"] for r in rows}
        for s in run.samples:
            s.created = created[s.address]
    finally:
        if connection is not None:
            await connection.close()
        if listener is not None:
            await listener.close()
        await asyncio.to_thread(worker.stop)


# --- the report -------------------------------------------------------------------------------


def row(name: str, seconds: list[float]) -> str:
    ms = sorted(x * 1000 for x in seconds)
    if not ms:
        return f"| {name} | - | - | - | - | 0 |"
    if len(ms) == 1:
        p90 = p99 = ms[0]
    else:
        q = statistics.quantiles(ms, n=100, method="inclusive")
        p90, p99 = q[89], q[98]
    median = statistics.median(ms)
    return f"| {name} | {median:.1f} | {p90:.1f} | {p99:.1f} | {ms[-1]:.1f} | {len(ms)} |"


def table(run: Run) -> str:
    s = run.samples
    heard = [(x, x.notified) for x in s if x.notified is not None]
    p50 = statistics.median(x.data - x.created for x in s) * 1000
    verdict = "met" if p50 <= TARGET_P50_MS else "NOT met"
    return "\n".join(
        [
            "Verification mail: registration commit -> DATA at the SMTP server, ms",
            "",
            "| from | p50 | p90 | p99 | max | count |",
            "|---|---:|---:|---:|---:|---:|",
            row("**transaction start** (mail_jobs.created_at; over the commit's figure)",
                [x.data - x.created for x in s]),
            row("commit, as its NOTIFY reached a listener", [x.data - at for x, at in heard]),
            row("RPC reply received (after the commit; under it)", [x.data - x.replied for x in s]),
            row("stage: NOTIFY -> worker's SMTP connect (relay, broker, claim, render)",
                [x.connected - at for x, at in heard]),
            row("stage: SMTP connect -> DATA", [x.data - x.connected for x in s]),
            row("(registration: request -> reply)", [x.replied - x.sent for x in s]),
            "",
            f"Target ≤ {TARGET_P50_MS:.0f} ms p50 from commit (first row): {verdict} "
            f"({p50:.1f} ms).",
        ]
    )  # fmt: skip


async def main(count: int, gap: float) -> None:
    logs.configure("console", "warning")
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    run = Run()
    receipts = Receipts()
    with contextlib.ExitStack() as made:
        base = made.enter_context(base_urls())
        amqp = made.enter_context(own_vhost(base.amqp, "warden_bench_mail"))
        redis = made.enter_context(own_redis_db(base.redis))
        workdir = Path(made.enter_context(tempfile.TemporaryDirectory(prefix="warden-mail-")))
        database = with_database(base.database, f"warden_bench_mail_{uuid.uuid4().hex[:8]}")
        urls = Urls(database, amqp, redis)
        try:
            await migrate(settings_for(urls))
            async with smtp_server(receipts) as smtp_url:
                await measure(urls, smtp_url, receipts, workdir, run, count, gap)
        finally:
            await drop_database(database)
    print(table(run))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100, help="registrations measured")
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between registrations")
    args = parser.parse_args()
    if args.count < 1 or args.gap < 0:
        parser.error("--count must be at least 1 and --gap not negative")
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(main(args.count, args.gap))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(130)
