"""Cheap abuse is bounded: password guesses through a session, registrations per address,
events of refused logins, and the client address read from every X-Forwarded-For line."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiohttp
import pytest_asyncio
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from tests.conftest import PASSWORD, fresh_ip, make_settings, unique
from tests.e2e.test_request_id import Delivered, event_about, events_of
from tests.support.amqp import AmqpCaller
from tests.support.infra import Urls, own_vhost
from tests.support.waiting import eventually
from warden.bootstrap import Services, build_edge, running_worker
from warden.settings import Settings
from web.app import RPC_CLIENT

WRONG = "not the password"
NEW = "a brand new password"
WAIT = 15.0  # generous: only to avoid hanging

Answer = tuple[int, str | None, str | None]  # status, error code, Retry-After


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def registration(name: str) -> dict[str, str]:
    return {"email": f"{name}@example.com", "username": name, "password": PASSWORD}


async def answer(response: aiohttp.ClientResponse) -> Answer:
    body = await response.read()
    data = await response.json(content_type=None) if body else {}
    return response.status, data.get("code"), response.headers.get("Retry-After")


async def register(http: aiohttp.ClientSession, body: dict[str, str], ip: str | None) -> Answer:
    headers = {"X-Forwarded-For": ip} if ip else {}
    async with http.post("/api/v1/users", json=body, headers=headers) as r:
        return await answer(r)


async def new_user(http: aiohttp.ClientSession) -> tuple[int, str]:
    name = unique()
    async with http.post("/api/v1/users", json=registration(name)) as r:
        assert r.status == 201, await r.text()
        return int((await r.json())["id"]), name


async def log_in(http: aiohttp.ClientSession, name: str, password: str = PASSWORD) -> Answer:
    async with http.post("/api/v1/auth/login", json={"username": name, "password": password}) as r:
        return await answer(r)


async def access_token(http: aiohttp.ClientSession, name: str) -> str:
    async with http.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["access_token"])


async def change_password(http: aiohttp.ClientSession, token: str, current: str) -> Answer:
    body = {"current_password": current, "new_password": NEW}
    async with http.post("/api/v1/users/me/password", json=body, headers=bearer(token)) as r:
        return await answer(r)


def assert_too_many(result: Answer, window: int) -> None:
    status, code, retry_after = result
    assert (status, code) == (429, "too_many_attempts"), result
    assert retry_after is not None
    assert 1 <= int(retry_after) <= window


def assert_too_many_reply(reply: dict[str, Any], window: int) -> None:
    assert reply["ok"] is False, reply
    error = reply["error"]
    assert (error["status"], error["code"]) == (429, "too_many_attempts")
    assert 1 <= error["retry_after"] <= window


# --- a wrong current password counts toward the account's lockout -----------------------


async def test_wrong_current_passwords_lock_the_account_for_password_changes_and_logins(
    http: aiohttp.ClientSession, amqp: AmqpCaller, settings: Settings
) -> None:
    _, name = await new_user(http)
    token = await access_token(http, name)
    for _ in range(settings.login_max_failures):
        assert (await change_password(http, token, WRONG))[:2] == (400, "wrong_password")

    # The right current password no longer helps, here or at login: one count, the account's.
    assert_too_many(await change_password(http, token, PASSWORD), settings.login_window)
    assert_too_many(await log_in(http, name), settings.login_window)
    body = {"current_password": PASSWORD, "new_password": NEW}
    reply = await amqp.call("warden.users.change_password", body, token=token)
    assert_too_many_reply(reply, settings.login_window)


async def test_an_account_locked_by_failed_logins_cannot_change_its_password(
    http: aiohttp.ClientSession, settings: Settings
) -> None:
    _, name = await new_user(http)
    token = await access_token(http, name)
    for _ in range(settings.login_max_failures):
        assert (await log_in(http, name, WRONG))[:2] == (401, "invalid_credentials")

    assert_too_many(await change_password(http, token, PASSWORD), settings.login_window)


# --- registrations per client address ---------------------------------------------------

REGISTER_MAX = 3
REGISTER_WINDOW = 120


@dataclass
class Limited:
    """An edge and a worker of their own whose registration limit is small."""

    http: aiohttp.ClientSession
    amqp: AmqpCaller


@pytest_asyncio.fixture(scope="module")
async def limited(urls: Urls, worker: Services) -> AsyncIterator[Limited]:
    # A vhost of its own: the session's worker (with its generous limit) must not answer.
    # After the session's worker, so this one's outbox relay stands by (see test_redis_down).
    with contextlib.ExitStack() as stack:
        vhost = await asyncio.to_thread(stack.enter_context, own_vhost(urls.amqp))
        settings = make_settings(
            urls, amqp_url=vhost, register_ip_max=REGISTER_MAX, register_window=REGISTER_WINDOW
        )
        async with running_worker(settings):
            server = TestServer(build_edge(settings), host="127.0.0.1")
            await server.start_server()
            connection = await aio_pika.connect(vhost)
            try:
                assert server.app is not None
                await server.app[RPC_CLIENT].wait_connected(10)
                caller = AmqpCaller(await connection.channel())
                await caller.start()
                async with aiohttp.ClientSession(str(server.make_url(""))) as http:
                    yield Limited(http, caller)
            finally:
                await connection.close()
                await server.close()
        await asyncio.to_thread(stack.close)


async def test_registrations_past_an_addresss_limit_are_too_many_attempts(
    limited: Limited, http: aiohttp.ClientSession, warden_user: str
) -> None:
    ip = fresh_ip()
    _, taken = await new_user(http)
    # Refused before the hashing: not counted.
    for _ in range(REGISTER_MAX):
        clash = registration(taken) | {"username": unique()}
        assert (await register(limited.http, clash, ip))[:2] == (409, "email_taken")
    for _ in range(REGISTER_MAX):
        assert (await register(limited.http, registration(unique()), ip))[0] == 201

    refused = registration(unique())
    assert_too_many(await register(limited.http, refused, ip), REGISTER_WINDOW)
    # Over AMQP, as the edge (the only publisher whose x-client-ip is believed).
    reply = await limited.amqp.call(
        "warden.users.register", refused, user_id=warden_user, x_client_ip=ip
    )
    assert_too_many_reply(reply, REGISTER_WINDOW)
    # Another address is not limited, and the refused registration had stored nothing.
    assert (await register(limited.http, refused, fresh_ip()))[0] == 201


# --- one login_failed per locked window ----------------------------------------------------


async def arrival(received: list[Delivered], kind: str, user_id: int) -> None:
    def arrived() -> bool:
        return any(
            d.event["type"] == kind and d.event.get("subject") == str(user_id) for d in received
        )

    await eventually(arrived, WAIT, f"{kind} of user {user_id}")


def refusals_of(received: list[Delivered], user_id: int) -> list[dict[str, Any]]:
    return [
        d.event["data"]
        for d in received
        if d.event["type"] == "user.login_failed"
        and d.event.get("subject") == str(user_id)
        and d.event["data"]["reason"] == "too_many_attempts"
    ]


async def test_a_locked_account_writes_one_login_failed_event_per_window_across_workers(
    http: aiohttp.ClientSession,
    amqp: AmqpCaller,
    settings: Settings,
    urls: Urls,
    warden_user: str,
) -> None:
    user_id, name = await new_user(http)
    token = await access_token(http, name)
    ip = fresh_ip()
    async with events_of(settings, "user.login_failed", "user.updated") as received:
        for _ in range(settings.login_max_failures):
            assert (await log_in(http, name, WRONG))[:2] == (401, "invalid_credentials")
        async with running_worker(make_settings(urls)):
            # Two workers take these at once; each refusal races for the one event.
            logins = [
                amqp.call(
                    "warden.auth.login",
                    {"username": name, "password": p},
                    user_id=warden_user,
                    x_client_ip=ip,
                )
                for p in [PASSWORD, WRONG] * 6
            ]
            for reply in await asyncio.gather(*logins):
                assert_too_many_reply(reply, settings.login_window)
        assert_too_many(await log_in(http, name), settings.login_window)
        # A later event of the same user: events of one user arrive in commit order, so once
        # it is here, every event of the refusals before it is here too.
        body = {"full_name": unique("sentinel-")}
        async with http.patch("/api/v1/users/me", json=body, headers=bearer(token)) as r:
            assert r.status == 200, await r.text()
        await arrival(received, "user.updated", user_id)

    [refusal] = refusals_of(received, user_id)
    assert refusal["attempts"] == settings.login_max_failures
    assert refusal["limited_by"] == "account"
    assert refusal["client_ip"] == ip


# --- X-Forwarded-For across header lines ---------------------------------------------------


async def test_forwarded_for_is_read_across_all_its_header_lines(
    http: aiohttp.ClientSession, edge_url: str, settings: Settings
) -> None:
    _, name = await new_user(http)
    real = fresh_ip()
    # What the client wrote itself, then a line a proxy added: "<client's peer>, <a proxy>".
    headers = CIMultiDict(
        [("X-Forwarded-For", "203.0.113.66"), ("X-Forwarded-For", f"{real}, 127.0.0.1")]
    )
    async with events_of(settings, "user.logged_in") as received:
        async with aiohttp.ClientSession(edge_url) as client:  # no default X-Forwarded-For
            login = {"username": name, "password": PASSWORD}
            async with client.post("/api/v1/auth/login", json=login, headers=headers) as r:
                assert r.status == 200, await r.text()
        delivered = await event_about(received, name)

    assert delivered.event["data"]["client_ip"] == real
