"""How the edge turns an HTTP request into its RPC message: the client's address it passes on,
a login form it cannot read, and where a field of the path is said to be when it is wrong.

The address a worker was given shows in the `user.logged_in` event of a successful login.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.conftest import PASSWORD, unique
from tests.e2e.test_edge_errors import assert_problem
from tests.e2e.test_request_id import event_about, events_of
from tests.e2e.test_sessions import admin_token
from warden.bootstrap import Services, build_edge
from warden.settings import Settings
from web.app import RPC_CLIENT

FORM = "application/x-www-form-urlencoded"
LOOPBACK = "127.0.0.1"  # the test client's own address: a proxy the test settings trust
CLIENT = "203.0.113.7"  # RFC 5737: the client a proxy says it forwards for


async def registered(http: aiohttp.ClientSession) -> str:
    name = unique()
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 201, await r.text()
    return name


async def address_given_to_the_worker(
    http: aiohttp.ClientSession, settings: Settings, **headers: str
) -> Any:
    """Log a new user in with these headers: the client_ip of its `user.logged_in` event."""
    name = await registered(http)
    async with events_of(settings, "user.logged_in") as received:
        body = {"username": name, "password": PASSWORD}
        async with http.post("/api/v1/auth/login", json=body, headers=headers) as r:
            assert r.status == 200, await r.text()
        delivered = await event_about(received, name)
    return delivered.event["data"].get("client_ip")


async def test_a_trusted_proxy_names_the_client_behind_its_own_trusted_hops(
    http: aiohttp.ClientSession, settings: Settings
) -> None:
    forwarded = f"{CLIENT}, {LOOPBACK}"  # the client, then another proxy of ours
    given = await address_given_to_the_worker(http, settings, **{"X-Forwarded-For": forwarded})
    assert given == CLIENT


async def test_a_forwarded_hop_that_is_not_an_address_leaves_the_peer_as_the_client(
    http: aiohttp.ClientSession, settings: Settings
) -> None:
    forwarded = f"{CLIENT}, not-an-address"
    given = await address_given_to_the_worker(http, settings, **{"X-Forwarded-For": forwarded})
    assert given == LOOPBACK  # nothing behind an unreadable hop is believed


@contextlib.asynccontextmanager
async def unix_socket_edge(settings: Settings) -> AsyncIterator[aiohttp.ClientSession]:
    """The edge served on a unix socket (as behind a local reverse proxy), and a client of it."""
    directory = Path(tempfile.mkdtemp(prefix="warden-"))  # short: a socket path has a limit
    runner = web.AppRunner(build_edge(settings))
    await runner.setup()
    try:
        site = web.UnixSite(runner, str(directory / "edge.sock"))
        await site.start()
        await runner.app[RPC_CLIENT].wait_connected(10)
        connector = aiohttp.UnixConnector(path=str(directory / "edge.sock"))
        async with aiohttp.ClientSession("http://edge", connector=connector) as http:
            yield http
    finally:
        await runner.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


async def test_a_peer_without_an_address_is_served_and_no_address_is_passed_on(
    settings: Settings, worker: Services
) -> None:
    async with unix_socket_edge(settings) as http:
        given = await address_given_to_the_worker(http, settings, **{"X-Forwarded-For": CLIENT})
    assert given is None


async def test_a_login_form_that_is_not_utf8_is_a_400_malformed_json(
    http: aiohttp.ClientSession,
) -> None:
    body = b"grant_type=password&username=\xff\xfe&password=x"
    async with http.post("/api/v1/auth/login", data=body, headers={"Content-Type": FORM}) as r:
        problem = await assert_problem(r, 400, "malformed_json")
    assert "UTF-8" in problem["detail"]


async def test_an_invalid_id_in_the_path_is_a_422_located_in_the_path(
    http: aiohttp.ClientSession, worker: Services
) -> None:
    admin = await admin_token(worker, http)
    async with http.get("/api/v1/users/0", headers={"Authorization": f"Bearer {admin}"}) as r:
        problem = await assert_problem(r, 422, "validation_error")
    assert [e["loc"] for e in problem["errors"]] == [["path", "id"]]
