"""Sessions through the edge and the queues: rotation, reuse, logout, password change, admin."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import jwt
import pytest

from domain.model import NewUser
from tests.conftest import PASSWORD, unique
from tests.support.amqp import AmqpCaller
from warden.bootstrap import Services
from warden.settings import Settings

Answer = tuple[int, Any]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sid_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["sid"])


async def answer(response: aiohttp.ClientResponse) -> Answer:
    body = await response.read()
    return response.status, (await response.json(content_type=None)) if body else None


def code(result: Answer) -> tuple[int, str | None]:
    status, body = result
    return status, body.get("code") if isinstance(body, dict) else None


async def new_user(http: aiohttp.ClientSession) -> tuple[int, str]:
    name = unique()
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 201, await r.text()
        return int((await r.json())["id"]), name


async def log_in(http: aiohttp.ClientSession, name: str, password: str = PASSWORD) -> Answer:
    async with http.post("/api/v1/auth/login", json={"username": name, "password": password}) as r:
        return await answer(r)


async def session(http: aiohttp.ClientSession, name: str) -> dict[str, Any]:
    status, pair = await log_in(http, name)
    assert status == 200, pair
    return dict(pair)


async def me(http: aiohttp.ClientSession, access: str) -> Answer:
    async with http.get("/api/v1/users/me", headers=bearer(access)) as r:
        return await answer(r)


async def refresh(http: aiohttp.ClientSession, token: str) -> Answer:
    async with http.post("/api/v1/auth/refresh", json={"refresh_token": token}) as r:
        return await answer(r)


async def refresh_over_amqp(amqp: AmqpCaller, token: str) -> Answer:
    reply = await amqp.call("warden.auth.refresh", {"refresh_token": token})
    if reply["ok"]:
        return 200, reply["data"]
    return reply["error"]["status"], reply["error"]


async def assert_session_revoked(http: aiohttp.ClientSession, pair: dict[str, Any]) -> None:
    assert code(await me(http, pair["access_token"])) == (401, "token_revoked")
    assert code(await refresh(http, pair["refresh_token"])) == (401, "token_revoked")


# --- refresh rotation -------------------------------------------------------------------


async def test_a_refresh_returns_a_new_pair_of_the_same_session(
    http: aiohttp.ClientSession, settings: Settings
) -> None:
    _, name = await new_user(http)
    first = await session(http, name)
    async with http.post(
        "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    ) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "no-store"
        second = await r.json()
    assert second["token_type"] == "bearer"
    assert second["expires_in"] == settings.access_token_ttl
    assert second["refresh_expires_in"] == settings.refresh_token_ttl
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert sid_of(second["access_token"]) == sid_of(first["access_token"])
    assert sid_of(second["refresh_token"]) == sid_of(first["refresh_token"])
    assert (await me(http, second["access_token"]))[0] == 200


async def test_a_spent_refresh_token_presented_again_revokes_the_whole_session(
    http: aiohttp.ClientSession,
) -> None:
    _, name = await new_user(http)
    first = await session(http, name)
    status, second = await refresh(http, first["refresh_token"])
    assert status == 200
    assert code(await refresh(http, first["refresh_token"])) == (401, "token_reused")
    await assert_session_revoked(http, second)
    assert code(await me(http, first["access_token"])) == (401, "token_revoked")


async def test_refresh_over_amqp_rotates_and_detects_reuse(
    http: aiohttp.ClientSession, amqp: AmqpCaller
) -> None:
    _, name = await new_user(http)
    first = await session(http, name)
    status, second = await refresh_over_amqp(amqp, first["refresh_token"])
    assert status == 200
    assert sid_of(second["access_token"]) == sid_of(first["access_token"])
    me_reply = await amqp.call("warden.users.me", {}, token=second["access_token"])
    assert me_reply["ok"] is True
    assert code(await refresh_over_amqp(amqp, first["refresh_token"])) == (401, "token_reused")
    assert code(await refresh_over_amqp(amqp, second["refresh_token"])) == (401, "token_revoked")
    me_reply = await amqp.call("warden.users.me", {}, token=second["access_token"])
    assert (me_reply["ok"], me_reply["error"]["code"]) == (False, "token_revoked")


@pytest.mark.parametrize("routes", [("http", "http"), ("amqp", "amqp"), ("http", "amqp")])
async def test_of_two_concurrent_refreshes_of_one_token_exactly_one_wins(
    http: aiohttp.ClientSession, amqp: AmqpCaller, routes: tuple[str, str]
) -> None:
    _, name = await new_user(http)
    pair = await session(http, name)

    async def via(route: str) -> Answer:
        if route == "http":
            return await refresh(http, pair["refresh_token"])
        return await refresh_over_amqp(amqp, pair["refresh_token"])

    results = await asyncio.gather(*(via(route) for route in routes))
    assert sorted(code(result) for result in results) == [(200, None), (401, "token_reused")]
    # The loser presented a spent token: that is reuse, so the winner's session ends too.
    winner = next(body for status, body in results if status == 200)
    await assert_session_revoked(http, winner)


# --- logout ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{"data": b""}, {"json": {}}], ids=["empty", "empty-object"])
async def test_logout_ends_only_the_callers_session(
    http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    _, name = await new_user(http)
    leaving, staying = await session(http, name), await session(http, name)
    headers = bearer(leaving["access_token"])
    async with http.post("/api/v1/auth/logout", headers=headers, **body) as r:
        assert r.status == 204, await r.text()
        assert await r.read() == b""
    await assert_session_revoked(http, leaving)
    assert (await me(http, staying["access_token"]))[0] == 200
    assert (await refresh(http, staying["refresh_token"]))[0] == 200


async def test_logout_over_amqp_ends_the_session(
    http: aiohttp.ClientSession, amqp: AmqpCaller
) -> None:
    _, name = await new_user(http)
    pair = await session(http, name)
    reply = await amqp.call("warden.auth.logout", {}, token=pair["access_token"])
    assert reply == {"ok": True, "data": None}
    await assert_session_revoked(http, pair)


# --- password change ---------------------------------------------------------------------


async def change_password(
    http: aiohttp.ClientSession, access: str, current: str, new: str
) -> Answer:
    body = {"current_password": current, "new_password": new}
    async with http.post("/api/v1/users/me/password", json=body, headers=bearer(access)) as r:
        return await answer(r)


async def test_a_password_change_needs_the_current_password_and_a_valid_new_one(
    http: aiohttp.ClientSession,
) -> None:
    _, name = await new_user(http)
    pair = await session(http, name)
    wrong = await change_password(http, pair["access_token"], "not the password", "another one")
    assert code(wrong) == (400, "wrong_password")
    short = await change_password(http, pair["access_token"], PASSWORD, "short")
    assert code(short) == (422, "validation_error")
    assert (await log_in(http, name))[0] == 200  # neither attempt changed anything


async def test_a_password_change_ends_every_other_session_and_keeps_this_one(
    http: aiohttp.ClientSession,
) -> None:
    _, name = await new_user(http)
    current, other = await session(http, name), await session(http, name)
    new_password = "a brand new passphrase"
    assert await change_password(http, current["access_token"], PASSWORD, new_password) == (
        204,
        None,
    )
    await assert_session_revoked(http, other)
    assert (await me(http, current["access_token"]))[0] == 200
    assert (await refresh(http, current["refresh_token"]))[0] == 200
    assert (await log_in(http, name, new_password))[0] == 200
    assert code(await log_in(http, name, PASSWORD)) == (401, "invalid_credentials")


# --- deactivation and deletion by an admin ---------------------------------------------


async def admin_token(worker: Services, http: aiohttp.ClientSession) -> str:
    name = unique("admin")
    hashed = await worker.hasher.hash(PASSWORD)
    await worker.accounts.create(NewUser(f"{name}@example.com", name, hashed, is_superuser=True))
    return str((await session(http, name))["access_token"])


async def test_a_deactivated_users_tokens_die_at_once_and_stay_dead_after_reactivation(
    http: aiohttp.ClientSession, amqp: AmqpCaller, worker: Services
) -> None:
    admin = await admin_token(worker, http)
    user_id, name = await new_user(http)
    first, second = await session(http, name), await session(http, name)
    reply = await amqp.call("warden.users.update", {"id": user_id, "is_active": False}, admin)
    assert reply["ok"] is True, reply
    assert reply["data"]["is_active"] is False
    assert code(await me(http, first["access_token"])) == (401, "token_revoked")
    assert code(await refresh(http, second["refresh_token"])) == (401, "token_revoked")
    assert code(await log_in(http, name)) == (403, "inactive_user")

    reply = await amqp.call("warden.users.update", {"id": user_id, "is_active": True}, admin)
    assert reply["ok"] is True, reply
    await assert_session_revoked(http, first)
    assert code(await me(http, second["access_token"])) == (401, "token_revoked")
    fresh = await session(http, name)
    assert (await me(http, fresh["access_token"]))[0] == 200


async def test_a_deleted_users_tokens_die_at_once(
    http: aiohttp.ClientSession, amqp: AmqpCaller, worker: Services
) -> None:
    admin = await admin_token(worker, http)
    user_id, name = await new_user(http)
    first, second = await session(http, name), await session(http, name)
    reply = await amqp.call("warden.users.delete", {"id": user_id}, admin)
    assert reply == {"ok": True, "data": None}
    await assert_session_revoked(http, first)
    assert code(await me(http, second["access_token"])) == (401, "token_revoked")
    assert code(await log_in(http, name)) == (401, "invalid_credentials")
