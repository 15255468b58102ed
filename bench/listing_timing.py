"""Timing the listing through the edge: the scenarios, sequential requests, their percentiles.

Every timed request carries an X-Request-ID of its own, so the edge's and the worker's log
lines about it give their share of the time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.listing_seed import ADMIN, PASSWORD

WARM_UP = 20
DEEP_PAGES = 100  # pages of 100 rows walked to reach the deep page: 10,000 rows deep


@dataclass(frozen=True)
class Scenario:
    name: str
    params: dict[str, str]


@dataclass
class Result:
    size: int
    scenario: str
    timings: list[float]
    plan: str = ""
    sql: str = ""
    prepared_plan_same: bool | None = None
    rows: int = 0
    tag: str = ""
    params: dict[str, str] = field(default_factory=dict)
    worker_ms: list[float] = field(default_factory=list)
    edge_ms: list[float] = field(default_factory=list)

    def percentile(self, p: float, of: list[float] | None = None) -> float:
        ordered = sorted(self.timings if of is None else of)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def scenarios(deep: str) -> list[Scenario]:
    return [
        Scenario("first page", {"limit": "20"}),
        Scenario("deep page, by cursor", {"limit": "20", "cursor": deep}),
        Scenario("first page, limit=100", {"limit": "100"}),
        Scenario("deep page, by cursor, limit=100", {"limit": "100", "cursor": deep}),
        Scenario("q=garcia (~1 % match)", {"q": "garcia"}),
        Scenario("q=garcia777 (a handful match)", {"q": "garcia777"}),
        Scenario("is_active=false, sort=username", {"is_active": "false", "sort": "username"}),
        Scenario("is_superuser=true, sort=-email", {"is_superuser": "true", "sort": "-email"}),
        Scenario(
            "q=garcia, is_active=true, sort=email",
            {"q": "garcia", "is_active": "true", "sort": "email"},
        ),
    ]


async def log_in(http: aiohttp.ClientSession) -> dict[str, str]:
    body = {"username": ADMIN, "password": PASSWORD}
    async with http.post("/api/v1/auth/login", json=body) as r:
        r.raise_for_status()
        return {"Authorization": f"Bearer {(await r.json())['access_token']}"}


async def get_page(
    http: aiohttp.ClientSession, auth: dict[str, str], params: dict[str, str], rid: str = ""
) -> dict[str, Any]:
    headers = auth | ({"X-Request-ID": rid} if rid else {})
    async with http.get("/api/v1/users", params=params, headers=headers) as r:
        if r.status != 200:
            raise RuntimeError(f"{params}: {r.status} {await r.text()}")
        page: dict[str, Any] = await r.json()
        return page


async def time_rounds(
    http: aiohttp.ClientSession, auth: dict[str, str], results: list[Result], n: int
) -> None:
    """`n` rounds of one request per scenario, after a warm-up: interleaved, so that every
    scenario meets the same background load, and sequential, one request in flight.

    Each timed request carries X-Request-ID `tag-i`, so the edge's and the worker's own log
    lines about it can be found afterwards (`server_times`)."""
    for result in results:
        for _ in range(WARM_UP):
            result.rows = len((await get_page(http, auth, result.params))["items"])
    for i in range(n):
        for result in results:
            started = time.perf_counter()
            await get_page(http, auth, result.params, f"{result.tag}-{i}")
            result.timings.append((time.perf_counter() - started) * 1000)


def server_times(results: list[Result], log_path: Path) -> None:
    """Fill each result's edge and worker durations from their JSON log lines."""
    by_tag = {r.tag: r for r in results}
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        tag = str(entry.get("request_id", "")).rpartition("-")[0]
        result = by_tag.get(tag)
        if result is None or "duration_ms" not in entry:
            continue
        if entry.get("event") == "message handled":
            result.worker_ms.append(float(entry["duration_ms"]))
        elif entry.get("event") == "request":
            result.edge_ms.append(float(entry["duration_ms"]))


async def deep_cursor(
    http: aiohttp.ClientSession, auth: dict[str, str], size: int
) -> tuple[str, int]:
    """The cursor 10,000 rows into the default order (less for a small table), by walking."""
    pages = min(DEEP_PAGES, (size - 100) // 100)
    cursor = None
    for _ in range(pages):
        params = {"limit": "100"} | ({"cursor": cursor} if cursor else {})
        cursor = (await get_page(http, auth, params))["next_cursor"]
    assert cursor is not None
    return cursor, pages * 100
