"""Liveness and readiness of an edge whose worker, broker, Postgres and Redis are all up."""

from __future__ import annotations

import aiohttp
import pytest


@pytest.mark.parametrize("path", ["/health", "/health/live"])
async def test_liveness_passes(http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(path) as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        assert await r.json() == {"status": "pass"}
        assert r.headers["X-Request-ID"]


async def test_readiness_passes_with_every_check_timed(http: aiohttp.ClientSession) -> None:
    async with http.get("/health/ready") as r:
        assert r.status == 200, await r.text()
        assert r.content_type == "application/json"
        ready = await r.json()
    assert ready["status"] == "pass"
    assert set(ready["checks"]) == {"broker", "postgres", "redis", "workers"}
    for name, check in ready["checks"].items():
        assert check["status"] == "pass", (name, check)
        assert isinstance(check["latency_ms"], int | float), (name, check)
        assert check["latency_ms"] >= 0
        assert "error" not in check, (name, check)
