"""The ping that readiness uses: a worker answers with the state of its own dependencies."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from faststream.rabbit import RabbitRouter

from contract.catalog import PING_QUEUE
from contract.wire import Empty, PingOut, dump
from handlers.deps import Probe, WorkerDeps
from handlers.envelope import Call

PROBE_TIMEOUT = 1.5


async def check(probe: Probe) -> dict[str, Any]:
    """Run one probe with a deadline; `{"status", "latency_ms", "error"?}`."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            await probe()
        result: dict[str, Any] = {"status": "pass"}
    except TimeoutError:
        result = {"status": "fail", "error": f"no answer within {PROBE_TIMEOUT} s"}
    except Exception as exc:  # a probe reports any failure, it never raises
        result = {"status": "fail", "error": type(exc).__name__}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def router(deps: WorkerDeps) -> RabbitRouter:
    r = RabbitRouter()

    @deps.rpc(r, PING_QUEUE)
    async def ping(call: Call[Empty]) -> dict[str, Any]:
        """Readiness ping: the worker's view of Postgres and Redis, and its broker node."""
        names = list(deps.probes)
        results = await asyncio.gather(*(check(deps.probes[n]) for n in names))
        node = deps.node() if deps.node is not None else None
        return dump(PingOut, {**dict(zip(names, results, strict=True)), "node": node})

    return r
