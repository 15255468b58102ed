"""The committed AsyncAPI document and the served OpenAPI document match the code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp

from contract.catalog import RPC
from contract.routes import ID, ROUTES, SID
from handlers.asyncapi import render
from warden.bootstrap import build_broker, build_services
from warden.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_asyncapi_document_is_what_the_code_generates() -> None:
    committed = (ROOT / "asyncapi" / "asyncapi.json").read_text()
    assert committed == render(), "asyncapi/asyncapi.json is stale: run `make asyncapi`"


async def test_the_catalogue_lists_exactly_the_queues_the_worker_subscribes_to(
    settings: Settings,
) -> None:
    services = build_services(settings)
    try:
        broker = build_broker(settings, services)
        queues = {sub.queue.name for sub in broker.subscribers}  # type: ignore[attr-defined]
    finally:
        await services.close()
    assert queues == set(RPC) | {"warden.audit", "warden.mail"}


def test_every_http_route_names_a_queue_of_the_catalogue() -> None:
    assert {r.queue for r in ROUTES} <= set(RPC)


async def test_the_edge_serves_an_openapi_31_document_of_every_route(
    http: aiohttp.ClientSession,
) -> None:
    async with http.get("/api/v1/openapi.json") as r:
        assert r.status == 200
        doc: dict[str, Any] = await r.json()
    assert doc["openapi"] == "3.1.0"
    for route in ROUTES:
        path = route.path.replace(ID, "{id}").replace(SID, "{sid}")
        assert route.method.lower() in doc["paths"][path], (route.method, path)
    for path in ("/health", "/health/live", "/health/ready", "/metrics", "/api/v1/docs"):
        assert path in doc["paths"]
