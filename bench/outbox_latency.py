"""Commit-to-delivery latency of the outbox relay.

Registers users one at a time through the worker's use case (the commit writes the user and
its `user.registered` row to the outbox; NOTIFY wakes the relay) and times each event's
arrival at a queue bound to `warden.events` (a consumer in this process, so both ends read
the same clock) from the unit of work's commit() being called and from its return.

    uv run python bench/outbox_latency.py [--events 50] [--gap 0.1]

Uses a database and a RabbitMQ vhost of its own (both removed at the end) on the services
named by the WARDEN_* URLs (the local ones by default). Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import aio_pika
import orjson

from domain.model import NewUser
from storage.db import drop_database
from storage.uow import SqlAlchemyUnitOfWork
from tests.support.infra import Urls, base_urls, own_vhost, with_database
from warden import logs
from warden.bootstrap import running_worker
from warden.cli import migrate
from warden.settings import Settings


def settings_for(urls: Urls) -> Settings:
    return Settings(
        database_url=urls.database,  # type: ignore[arg-type]
        amqp_url=urls.amqp,  # type: ignore[arg-type]
        redis_url=urls.redis,  # type: ignore[arg-type]
        env="test",
        metrics_port=0,
        log_level="warning",
        log_format="console",
    )


class Arrivals:
    """When each user's `user.registered` event arrived (perf_counter), by subject."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self._changed = asyncio.Event()

    async def on_event(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrived = time.perf_counter()
        await message.ack()
        self.seen.setdefault(orjson.loads(message.body)["subject"], arrived)
        self._changed.set()

    async def of(self, subject: str) -> float:
        async with asyncio.timeout(10):
            while subject not in self.seen:
                self._changed.clear()
                await self._changed.wait()
        return self.seen[subject]


@asynccontextmanager
async def bound_queue(amqp_url: str) -> AsyncIterator[Arrivals]:
    arrivals = Arrivals()
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "warden.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "user.registered")
        await queue.consume(arrivals.on_event)
        yield arrivals
    finally:
        await connection.close()


@contextmanager
def commit_times() -> Iterator[list[tuple[float, float]]]:
    """(perf_counter as the unit's commit() is called, as it returns) for every commit.

    The first reading includes writing the outbox rows and the COMMIT round trip; Postgres
    delivers the NOTIFY at the commit itself, so the event may reach the relay before the
    committing coroutine resumes. The commit-to-delivery time lies between the two.
    """
    times: list[tuple[float, float]] = []
    commit = SqlAlchemyUnitOfWork.commit

    async def timed(self: SqlAlchemyUnitOfWork) -> None:
        sent = time.perf_counter()
        await commit(self)
        times.append((sent, time.perf_counter()))

    SqlAlchemyUnitOfWork.commit = timed  # type: ignore[method-assign]
    try:
        yield times
    finally:
        SqlAlchemyUnitOfWork.commit = commit  # type: ignore[method-assign]


async def measure(urls: Urls, events: int, gap: float) -> tuple[list[float], list[float]]:
    """Seconds to each event's arrival from its commit() being called, and from its return."""
    from_sent: list[float] = []
    from_done: list[float] = []
    async with running_worker(settings_for(urls)) as services, bound_queue(urls.amqp) as arrivals:
        await asyncio.sleep(1.0)  # the relay has taken the lead and is waiting
        with commit_times() as commits:
            for _ in range(events):
                name = f"bench{uuid.uuid4().hex[:12]}"
                user = await services.accounts.create(NewUser(f"{name}@example.com", name, "x"))
                arrived = await arrivals.of(str(user.id))
                sent, done = commits[-1]
                from_sent.append(arrived - sent)
                from_done.append(arrived - done)
                await asyncio.sleep(gap)  # idle between events: no batching helps
    return from_sent, from_done


def table(from_sent: list[float], from_done: list[float]) -> str:
    columns = [sorted(x * 1000 for x in xs) for xs in (from_sent, from_done)]

    def stat(ms: list[float], name: str) -> float:
        q = statistics.quantiles(ms, n=100, method="inclusive")
        return {
            "min": ms[0],
            "p50": statistics.median(ms),
            "p90": q[89],
            "p99": q[98],
            "max": ms[-1],
            "mean": statistics.fmean(ms),
        }[name]

    lines = [
        f"commit -> delivery, {len(from_sent)} events (outbox relay, NOTIFY wake-up), ms",
        f"{'':<6}{'commit() called':>16}{'commit() returned':>19}",
    ]
    for name in ("min", "p50", "p90", "p99", "max", "mean"):
        lines.append(f"{name:<6}{stat(columns[0], name):>16.1f}{stat(columns[1], name):>19.1f}")
    return "\n".join(lines)


async def main(events: int, gap: float) -> None:
    logs.configure("console", "warning")
    with base_urls() as base, own_vhost(base.amqp) as amqp:
        database = with_database(base.database, f"warden_bench_outbox_{uuid.uuid4().hex[:8]}")
        urls = Urls(database, amqp, base.redis)
        await migrate(settings_for(urls))
        try:
            from_sent, from_done = await measure(urls, events, gap)
        finally:
            await drop_database(database)
    print(table(from_sent, from_done))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50)
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between registrations")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(main(args.events, args.gap))
    else:
        uvloop.run(main(args.events, args.gap))
