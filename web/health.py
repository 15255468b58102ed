"""Liveness touches nothing; readiness asks the broker and a worker, within 3 seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from contract.catalog import PING_QUEUE
from domain.errors import WardenError
from web.rpc_client import RpcClient

READY_BUDGET = 2.5  # seconds for the worker ping; the whole answer stays under 3 s
UNKNOWN = "no worker answered the readiness ping"


def add_routes(app: web.Application, client: Callable[[], RpcClient]) -> None:
    async def live(_: web.Request) -> web.Response:
        return _json({"status": "pass"}, 200)

    async def ready(_: web.Request) -> web.Response:
        checks = await readiness(client())
        ok = all(c["status"] == "pass" for c in checks.values())
        return _json({"status": "pass" if ok else "fail", "checks": checks}, 200 if ok else 503)

    app.router.add_get("/health", live)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)


async def readiness(client: RpcClient) -> dict[str, Any]:
    """Broker: the edge's own connection and its node. Workers (and the node of the one that
    answered), Postgres, Redis: one worker's ping reply."""
    started = time.perf_counter()
    broker: dict[str, Any] = {"status": "pass" if client.connected else "fail", "latency_ms": 0.0}
    if client.connected:
        broker["node"] = client.node  # CONTRACT §10: which node of the cluster
    else:
        broker["error"] = "not connected to the message broker"
    worker: dict[str, Any]
    deps: dict[str, Any] = {}
    try:
        envelope = await client.call(PING_QUEUE, b"{}", {}, READY_BUDGET)
        worker = {"status": "pass" if envelope.get("ok") else "fail"}
        deps = envelope.get("data") or {}
        if isinstance(deps.get("node"), str):
            worker["node"] = deps["node"]  # the answering worker's broker node
    except WardenError as exc:
        worker = {"status": "fail", "error": exc.detail}
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # readiness reports, it never fails
        worker = {"status": "fail", "error": type(exc).__name__}
    worker["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    unknown = {"status": "fail", "latency_ms": 0.0, "error": UNKNOWN}
    return {
        "broker": broker,
        "postgres": deps.get("postgres", unknown),
        "redis": deps.get("redis", unknown),
        "workers": worker,
    }


def _json(data: Any, status: int) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
