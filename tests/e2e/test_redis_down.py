"""With Redis unreachable, Warden fails closed: 503, never a token it cannot check.

A worker and an edge of their own, whose Redis is this session's db behind a TCP proxy the
test cuts. They use a vhost of their own: the session's worker, which still reaches Redis,
must not answer their requests.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from tests.conftest import PASSWORD, make_settings, unique
from tests.support.infra import Urls, own_vhost
from tests.support.proxy import CutMode, TcpProxy
from warden.bootstrap import Services, build_edge, running_worker
from web.app import RPC_CLIENT


@dataclass
class CutOff:
    proxy: TcpProxy
    http: aiohttp.ClientSession


def through(proxy: TcpProxy, redis_url: str) -> str:
    """The same Redis db, reached through the proxy."""
    return urlunsplit(urlsplit(redis_url)._replace(netloc=f"127.0.0.1:{proxy.port}"))


@pytest_asyncio.fixture(scope="module")
async def cut_off(urls: Urls, worker: Services) -> AsyncIterator[CutOff]:
    # After the session's worker: its outbox relay already leads (an advisory lock in the
    # shared database), so this worker's relay stands by and events stay in the session's vhost.
    target = urlsplit(urls.redis)
    with contextlib.ExitStack() as stack:
        # rabbitmqctl is slow; let the loop go on meanwhile.
        vhost = await asyncio.to_thread(stack.enter_context, own_vhost(urls.amqp))
        async with TcpProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
            settings = make_settings(
                Urls(urls.database, vhost, through(proxy, urls.redis)), rpc_timeout=5
            )
            async with running_worker(settings):
                server = TestServer(build_edge(settings), host="127.0.0.1")
                await server.start_server()
                try:
                    assert server.app is not None
                    await server.app[RPC_CLIENT].wait_connected(10)
                    base = str(server.make_url("")).rstrip("/")
                    async with aiohttp.ClientSession(base) as http:
                        yield CutOff(proxy, http)
                finally:
                    await server.close()
        await asyncio.to_thread(stack.close)


async def call(
    http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, str | None]:
    async with http.request(method, path, **kwargs) as r:
        body = await r.read()
        data = await r.json(content_type=None) if body else None
        return r.status, data.get("code") if isinstance(data, dict) else None


@pytest.mark.parametrize("mode", ["refuse", "hang"])
async def test_with_redis_cut_off_bearer_calls_and_logins_are_503_until_it_returns(
    cut_off: CutOff, mode: CutMode
) -> None:
    http, proxy = cut_off.http, cut_off.proxy
    name = unique()
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    assert (await call(http, "POST", "/api/v1/users", json=body))[0] == 201
    login = {"username": name, "password": PASSWORD}
    async with http.post("/api/v1/auth/login", json=login) as r:
        assert r.status == 200
        pair = await r.json()
    auth = {"Authorization": f"Bearer {pair['access_token']}"}
    assert (await call(http, "GET", "/api/v1/users/me", headers=auth))[0] == 200

    spend = {"refresh_token": pair["refresh_token"]}
    other = unique()
    newcomer = {"email": f"{other}@example.com", "username": other, "password": PASSWORD}
    proxy.cut(mode)
    try:
        async with asyncio.timeout(15):  # only against a hang; the edge itself waits 5 s
            answers = await asyncio.gather(
                call(http, "GET", "/api/v1/users/me", headers=auth),
                call(http, "POST", "/api/v1/auth/login", json=login),
                call(http, "POST", "/api/v1/auth/refresh", json={"refresh_token": "x" * 20}),
                call(http, "POST", "/api/v1/auth/refresh", json=spend),
                call(http, "POST", "/api/v1/auth/logout", headers=auth),
                # Its per-address limit is counted in Redis.
                call(http, "POST", "/api/v1/users", json=newcomer),
            )
    finally:
        proxy.restore()
    # The garbage refresh token never needed Redis; everything else did, and failed closed.
    assert list(answers) == [
        (503, "service_unavailable"),
        (503, "service_unavailable"),
        (401, "invalid_token"),
        (503, "service_unavailable"),
        (503, "service_unavailable"),
        (503, "service_unavailable"),
    ]

    assert (await call(http, "GET", "/api/v1/users/me", headers=auth))[0] == 200
    async with http.post("/api/v1/auth/login", json=login) as r:
        assert r.status == 200
    refreshed = await call(http, "POST", "/api/v1/auth/refresh", json=spend)
    assert refreshed[0] == 200  # the refresh tried while cut off did not spend the token
