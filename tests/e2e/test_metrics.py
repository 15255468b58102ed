"""Prometheus metrics: the edge's GET /metrics and the worker's own endpoint, scraped and
parsed as Prometheus text exposition."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import aiohttp
import pytest_asyncio
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PASSWORD, make_settings, unique
from tests.support.amqp import AmqpCaller
from tests.support.infra import Urls
from tests.support.processes import free_port
from tests.support.waiting import eventually
from warden.bootstrap import build_edge
from warden.metrics_server import serve_worker_metrics
from web.app import RPC_CLIENT

API = "/api/v1"
WAIT = 15.0  # generous: only to avoid hanging

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scrape:
    """One scrape, parsed: sample values by name and labels, and the type of each family."""

    def __init__(self, text: str) -> None:
        self.values: Samples = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def labels_of(self, name: str) -> list[dict[str, str]]:
        return [dict(labels) for (n, labels) in self.values if n == name]

    def has(self, name: str) -> bool:
        return any(n == name for n, _ in self.values)


async def scrape(http: aiohttp.ClientSession, url: str) -> Scrape:
    async with http.get(url) as r:
        assert r.status == 200
        assert r.content_type == "text/plain"
        return Scrape(await r.text())


def grew(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


async def test_the_edge_counts_requests_by_route_template_method_and_status(
    http: aiohttp.ClientSession,
) -> None:
    before = await scrape(http, "/metrics")
    for user_id in (7, 42, 123456):
        async with http.get(f"{API}/users/{user_id}") as r:
            assert r.status == 401
    after = await scrape(http, "/metrics")

    route = {"route": "/api/v1/users/{id}", "method": "GET"}
    assert after.types["warden_http_requests"] == "counter"
    assert grew(before, after, "warden_http_requests_total", **route, status="401") == 3
    assert after.types["warden_http_request_duration_seconds"] == "histogram"
    assert grew(before, after, "warden_http_request_duration_seconds_count", **route) == 3
    inf = {**route, "le": "+Inf"}
    assert grew(before, after, "warden_http_request_duration_seconds_bucket", **inf) == 3
    # Templates, never raw paths: the label set stays bounded whatever ids are asked for.
    routes = {labels["route"] for labels in after.labels_of("warden_http_requests_total")}
    assert not [r for r in routes if re.search(r"/\d+(/|$)", r)], routes


async def test_the_edge_reports_the_requests_in_flight(http: aiohttp.ClientSession) -> None:
    metrics = await scrape(http, "/metrics")
    assert metrics.types["warden_http_requests_in_flight"] == "gauge"
    # The scrape is a request too, and it is in flight while the metrics are rendered.
    assert metrics.value("warden_http_requests_in_flight") >= 1


@pytest_asyncio.fixture
async def impatient_edge(urls: Urls, worker: Any) -> AsyncIterator[str]:
    """An edge that waits next to no time for a reply: every RPC times out."""
    server = TestServer(build_edge(make_settings(urls, rpc_timeout=1e-6)), host="127.0.0.1")
    await server.start_server()
    assert server.app is not None
    assert await server.app[RPC_CLIENT].wait_connected(10)
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_the_edge_counts_rpc_timeouts(
    http: aiohttp.ClientSession, impatient_edge: str
) -> None:
    before = await scrape(http, "/metrics")
    assert before.types["warden_rpc_timeouts"] == "counter"
    async with http.get(f"{impatient_edge}{API}/users/me") as r:
        assert r.status == 504
        assert (await r.json())["code"] == "upstream_timeout"
    after = await scrape(http, "/metrics")
    assert grew(before, after, "warden_rpc_timeouts_total") == 1


@pytest_asyncio.fixture
async def worker_metrics(urls: Urls, worker: Any) -> AsyncIterator[str]:
    """The worker's metrics endpoint, served for the running worker on a free port."""
    settings = make_settings(urls, metrics_port=free_port())
    async with serve_worker_metrics(settings, worker):
        yield f"http://{settings.http_host}:{settings.metrics_port}/metrics"


async def until(
    http: aiohttp.ClientSession, url: str, done: Callable[[Scrape], bool], what: str
) -> Scrape:
    """Scrape until `done`: events and dead letters are counted a moment after the request."""
    scrapes: list[Scrape] = []

    async def counted() -> bool:
        scrapes.append(await scrape(http, url))
        return done(scrapes[-1])

    await eventually(counted, WAIT, what)
    return scrapes[-1]


async def test_the_worker_counts_messages_by_queue_and_outcome_and_times_them(
    http: aiohttp.ClientSession, worker_metrics: str
) -> None:
    before = await scrape(http, worker_metrics)
    name = unique("metrics")
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    for expected in (201, 409):
        async with http.post(f"{API}/users", json=body) as r:
            assert r.status == expected
    after = await until(
        http,
        worker_metrics,
        lambda m: grew(before, m, "warden_events_published_total") >= 1,
        "the user.registered event was not counted as published",
    )

    queue = {"queue": "warden.users.register"}
    assert after.types["warden_worker_messages"] == "counter"
    assert grew(before, after, "warden_worker_messages_total", **queue, status="200") == 1
    assert grew(before, after, "warden_worker_messages_total", **queue, status="409") == 1
    assert after.types["warden_worker_handling_seconds"] == "histogram"
    assert grew(before, after, "warden_worker_handling_seconds_count", **queue) == 2
    inf = {**queue, "le": "+Inf"}
    assert grew(before, after, "warden_worker_handling_seconds_bucket", **inf) == 2


async def test_the_worker_reports_its_bcrypt_pool_and_outbox_backlog(
    http: aiohttp.ClientSession, worker_metrics: str
) -> None:
    metrics = await scrape(http, worker_metrics)
    for gauge in (
        "warden_bcrypt_pool_waiting",
        "warden_outbox_backlog",
        "warden_outbox_oldest_age_seconds",
        "warden_dead_lettered_messages",
    ):
        assert metrics.types.get(gauge) == "gauge", gauge
        assert metrics.has(gauge), gauge
        assert metrics.value(gauge) >= 0, gauge


async def test_the_worker_reports_how_long_bcrypt_calls_waited_for_a_thread(
    http: aiohttp.ClientSession, worker_metrics: str, amqp: AmqpCaller
) -> None:
    before = await scrape(http, worker_metrics)
    name = unique()
    body = {"email": f"{name}@example.com", "username": name, "password": "correct horse"}
    assert (await amqp.call("warden.users.register", body))["ok"] is True
    after = await scrape(http, worker_metrics)
    assert after.types["warden_bcrypt_pool_wait_seconds"] == "histogram"
    assert grew(before, after, "warden_bcrypt_pool_wait_seconds_count") >= 1


async def test_the_worker_reports_what_was_dead_lettered(
    http: aiohttp.ClientSession, worker_metrics: str, amqp: AmqpCaller
) -> None:
    before = await scrape(http, worker_metrics)
    dead = before.value("warden_dead_lettered_messages")
    events = await amqp.channel.get_exchange("warden.events", ensure=False)
    # Not a CloudEvent: the audit consumer dead-letters it at once.
    poison = aio_pika.Message(b"not an event", content_type="application/cloudevents+json")
    await events.publish(poison, routing_key=f"test.poison.{unique()}")
    await until(
        http,
        worker_metrics,
        lambda m: m.value("warden_dead_lettered_messages") >= dead + 1,
        "the dead-lettered message was not counted",
    )
