"""The core flow over HTTP and over raw AMQP."""

from __future__ import annotations

import aiohttp

from tests.conftest import PASSWORD, unique
from tests.support.amqp import AmqpCaller


async def test_a_user_registers_logs_in_and_reads_itself_over_http(
    http: aiohttp.ClientSession,
) -> None:
    name = unique()
    async with http.post(
        "/api/v1/users",
        json={"email": f"{name}@Example.com", "username": name, "password": PASSWORD},
    ) as r:
        assert r.status == 201, await r.text()
        user = await r.json()
        assert r.headers["Location"] == f"/api/v1/users/{user['id']}"
        assert user["email"] == f"{name}@example.com"
    async with http.post(
        "/api/v1/auth/login", json={"username": name.upper(), "password": PASSWORD}
    ) as r:
        assert r.status == 200
        assert r.headers["Cache-Control"] == "no-store"
        pair = await r.json()
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    async with http.get("/api/v1/users/me", headers=headers) as r:
        assert r.status == 200
        assert (await r.json())["id"] == user["id"]


async def test_a_service_registers_logs_in_and_reads_itself_over_amqp(amqp: AmqpCaller) -> None:
    name = unique()
    reply = await amqp.call(
        "warden.users.register",
        {"email": f"{name}@example.com", "username": name, "password": PASSWORD},
    )
    assert reply["ok"] is True
    login = await amqp.call(
        "warden.auth.login", {"username": f"{name}@EXAMPLE.com", "password": PASSWORD}
    )
    me = await amqp.call("warden.users.me", {}, token=login["data"]["access_token"])
    assert me == {"ok": True, "data": reply["data"]}
