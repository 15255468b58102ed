"""RabbitMQ's own round trip, with no Warden code: `uv run python -m bench.broker_rtt`.

One aiormq connection publishes a 200-byte transient message (as the edge's requests are)
to a queue it consumes itself and acknowledges, first one at a time (latency), then with 32
in flight (throughput), for a classic and for a quorum queue. It is the floor under the
broker hop of bench.perf: a request crosses the broker twice (request and reply), and this
is one publish plus one delivery and its ack. Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from typing import Any, cast

import aiormq
from pamqp.commands import Basic

from warden.settings import DEFAULT_URLS

BODY = b"x" * 200
WARMUP = 200


async def measure(
    url: str, kind: str, sequential: int, parallel: int
) -> tuple[float, float, float]:
    connection = await aiormq.connect(url)
    channel = cast(aiormq.Channel, await connection.channel(publisher_confirms=False))
    queue = f"bench-rtt-{kind}-{uuid.uuid4().hex[:8]}"
    arguments: dict[str, Any] = {"x-queue-type": "quorum"} if kind == "quorum" else {}
    await channel.queue_declare(queue, durable=True, arguments=arguments)
    await channel.basic_qos(prefetch_count=32)
    waiting: dict[str, asyncio.Future[None]] = {}

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        tag = message.delivery_tag
        assert tag is not None  # a consumer's delivery always has one
        await channel.basic_ack(tag, wait=False)
        future = waiting.pop(message.header.properties.correlation_id or "", None)
        if future is not None:
            future.set_result(None)

    async def one(key: str) -> None:
        future = asyncio.get_running_loop().create_future()
        waiting[key] = future
        properties = Basic.Properties(correlation_id=key, delivery_mode=1, expiration="10000")
        await channel.basic_publish(BODY, routing_key=queue, properties=properties, wait=False)
        await future

    consumer = await channel.basic_consume(queue, on_message)
    try:
        latencies = []
        for i in range(WARMUP + sequential):
            started = time.perf_counter()
            await one(f"s{i}")
            latencies.append(time.perf_counter() - started)
        latencies = sorted(latencies[WARMUP:])
        gate = asyncio.Semaphore(32)

        async def gated(i: int) -> None:
            async with gate:
                await one(f"p{i}")

        started = time.perf_counter()
        await asyncio.gather(*(gated(i) for i in range(parallel)))
        rate = parallel / (time.perf_counter() - started)
        p50 = latencies[len(latencies) // 2] * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000
        return p50, p99, rate
    finally:
        await channel.basic_cancel(consumer.consumer_tag or "")
        await channel.queue_delete(queue)
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_rtt", description=__doc__)
    parser.add_argument(
        "--url", default=os.environ.get("WARDEN_AMQP_URL", DEFAULT_URLS["WARDEN_AMQP_URL"])
    )
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--parallel", type=int, default=4000)
    args = parser.parse_args()
    print("| queue | p50, one in flight | p99, one in flight | messages/s, 32 in flight |")
    print("|---|---|---|---|")
    for kind in ("classic", "quorum"):
        p50, p99, rate = await measure(args.url, kind, args.sequential, args.parallel)
        print(f"| {kind} | {p50:.2f} ms | {p99:.2f} ms | {rate:,.0f} |")


if __name__ == "__main__":
    asyncio.run(main())
