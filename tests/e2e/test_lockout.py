"""Login throttling per account and per client address, shared by every worker."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from domain.auth import LogIn
from domain.errors import InvalidCredentials, TooManyAttempts
from tests.conftest import PASSWORD, fresh_ip, make_settings, unique
from tests.support.amqp import AmqpCaller
from tests.support.infra import Urls
from warden.bootstrap import Services, build_edge, running_worker
from warden.settings import Settings
from web.app import RPC_CLIENT

WRONG = "not the password"


async def new_user(http: aiohttp.ClientSession) -> str:
    name = unique()
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 201, await r.text()
    return name


async def log_in(
    http: aiohttp.ClientSession, name: str, password: str, ip: str | None = None
) -> tuple[int, str | None, str | None]:
    """Status, error code (None on success) and Retry-After of one login over HTTP."""
    headers = {"X-Forwarded-For": ip} if ip else {}
    body = {"username": name, "password": password}
    async with http.post("/api/v1/auth/login", json=body, headers=headers) as r:
        data = await r.json(content_type=None)
        return r.status, data.get("code"), r.headers.get("Retry-After")


async def amqp_login(
    amqp: AmqpCaller, name: str, password: str, ip: str | None = None, user_id: str | None = None
) -> dict[str, Any]:
    headers = {"x_client_ip": ip} if ip else {}
    body = {"username": name, "password": password}
    return await amqp.call("warden.auth.login", body, user_id=user_id, **headers)


def assert_locked(result: tuple[int, str | None, str | None], window: int) -> None:
    status, code, retry_after = result
    assert (status, code) == (429, "too_many_attempts")
    assert retry_after is not None
    assert 1 <= int(retry_after) <= window


async def fail(http: aiohttp.ClientSession, name: str, times: int, ip: str | None = None) -> None:
    """`times` wrong passwords at once: none may see the count they are building up to."""
    results = await asyncio.gather(*(log_in(http, name, WRONG, ip) for _ in range(times)))
    assert {r[:2] for r in results} == {(401, "invalid_credentials")}


# --- per account -------------------------------------------------------------------------


async def test_an_account_with_max_failures_is_locked_even_for_the_right_password(
    http: aiohttp.ClientSession, amqp: AmqpCaller, settings: Settings
) -> None:
    name = await new_user(http)
    await fail(http, name, settings.login_max_failures)
    assert_locked(await log_in(http, name, PASSWORD), settings.login_window)
    assert_locked(await log_in(http, name.upper(), WRONG), settings.login_window)
    # Another address does not help: the count belongs to the account.
    assert_locked(
        await log_in(http, f"{name}@example.com", PASSWORD, fresh_ip()), settings.login_window
    )
    reply = await amqp_login(amqp, name, PASSWORD)
    assert reply["ok"] is False
    error = reply["error"]
    assert (error["status"], error["code"]) == (429, "too_many_attempts")
    assert 1 <= error["retry_after"] <= settings.login_window


async def test_a_successful_login_before_the_limit_clears_the_accounts_count(
    http: aiohttp.ClientSession, settings: Settings
) -> None:
    name = await new_user(http)
    below = settings.login_max_failures - 1
    await fail(http, name, below)
    assert (await log_in(http, name, PASSWORD))[0] == 200
    await fail(http, name, below)
    assert (await log_in(http, name, PASSWORD))[0] == 200  # 8 failures, but never 5 in a row


async def test_locked_answers_do_not_count_as_failures(
    http: aiohttp.ClientSession, settings: Settings
) -> None:
    locked, other = await new_user(http), await new_user(http)
    ip = fresh_ip()
    await fail(http, locked, settings.login_max_failures, ip)
    # Enough further wrong tries from this address to pass its own limit, were they counted.
    extra = settings.login_ip_max_failures - settings.login_max_failures + 1
    for result in await asyncio.gather(*(log_in(http, locked, WRONG, ip) for _ in range(extra))):
        assert_locked(result, settings.login_window)
    assert (await log_in(http, other, PASSWORD, ip))[0] == 200


# --- per client address ------------------------------------------------------------------


async def fail_as_strangers(
    http: aiohttp.ClientSession, times: int, forwarded_for: Callable[[], str]
) -> None:
    """`times` logins of unknown users at once, each claiming to come from `forwarded_for()`."""
    logins = (log_in(http, unique("nobody"), WRONG, forwarded_for()) for _ in range(times))
    assert {r[:2] for r in await asyncio.gather(*logins)} == {(401, "invalid_credentials")}


async def test_an_address_with_max_failures_is_locked_for_every_account(
    http: aiohttp.ClientSession, amqp: AmqpCaller, settings: Settings, warden_user: str
) -> None:
    name = await new_user(http)
    ip = fresh_ip()
    await fail_as_strangers(http, settings.login_ip_max_failures, lambda: ip)
    assert_locked(await log_in(http, name, PASSWORD, ip), settings.login_window)
    # The same address, told over AMQP by a caller on the edge's broker user.
    reply = await amqp_login(amqp, name, PASSWORD, ip, user_id=warden_user)
    assert (reply["error"]["code"], reply["error"]["retry_after"] > 0) == (
        "too_many_attempts",
        True,
    )
    assert (await log_in(http, name, PASSWORD, fresh_ip()))[0] == 200


def loopback_address() -> str:
    """An address of 127.0.0.0/8 of this test's own: a peer no edge here trusts."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


@pytest_asyncio.fixture
async def untrusting_edge(urls: Urls, worker: Services) -> AsyncIterator[str]:
    """A second edge on the same broker that believes no X-Forwarded-For at all."""
    server = TestServer(build_edge(make_settings(urls, trusted_proxies="")), host="127.0.0.1")
    await server.start_server()
    assert server.app is not None
    await server.app[RPC_CLIENT].wait_connected(10)
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_forwarded_for_from_an_untrusted_peer_does_not_escape_the_address_limit(
    http: aiohttp.ClientSession, untrusting_edge: str, settings: Settings
) -> None:
    name = await new_user(http)
    peer = loopback_address()
    connector = aiohttp.TCPConnector(local_addr=(peer, 0))
    async with aiohttp.ClientSession(untrusting_edge, connector=connector) as client:
        await fail_as_strangers(client, settings.login_ip_max_failures, fresh_ip)
        assert_locked(await log_in(client, name, PASSWORD, fresh_ip()), settings.login_window)
    # The lock is the peer's: another peer on the same edge logs in.
    connector = aiohttp.TCPConnector(local_addr=(loopback_address(), 0))
    async with aiohttp.ClientSession(untrusting_edge, connector=connector) as client:
        assert (await log_in(client, name, PASSWORD))[0] == 200


# --- across workers ----------------------------------------------------------------------


@pytest.fixture
def second_settings(urls: Urls) -> Settings:
    return make_settings(urls)


async def test_failures_are_counted_across_workers(
    http: aiohttp.ClientSession,
    amqp: AmqpCaller,
    worker: Services,
    second_settings: Settings,
) -> None:
    over_amqp, split = await new_user(http), await new_user(http)
    limit = second_settings.login_max_failures
    async with running_worker(second_settings) as second:
        for _ in range(limit):
            reply = await amqp_login(amqp, over_amqp, WRONG)
            assert reply["error"]["code"] == "invalid_credentials"
        # Two workers consume the queue; whichever takes each of these answers 429.
        for _ in range(4):
            reply = await amqp_login(amqp, over_amqp, PASSWORD)
            assert reply["error"]["code"] == "too_many_attempts"
        # The same, with each failure's worker known: they alternate, the count is one.
        for i in range(limit):
            with pytest.raises(InvalidCredentials):
                await (worker, second)[i % 2].auth.login(LogIn(split, WRONG))
        for services in (worker, second):
            with pytest.raises(TooManyAttempts):
                await services.auth.login(LogIn(split, PASSWORD))
