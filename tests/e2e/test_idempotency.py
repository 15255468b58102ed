"""Idempotency-Key: the first reply is kept and replayed; the work is done once."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from domain.errors import ServiceUnavailable
from storage.idempotency import PREFIX, RedisIdempotencyStore
from tests.conftest import PASSWORD, AmqpCaller, unique
from tests.support.waiting import eventually


def registration() -> dict[str, str]:
    name = unique()
    return {"email": f"{name}@example.com", "username": name, "password": PASSWORD}


async def post(
    http: aiohttp.ClientSession, path: str, body: Any, key: str, **headers: str
) -> tuple[int, Any]:
    async with http.post(path, json=body, headers={"Idempotency-Key": key, **headers}) as r:
        return r.status, await r.json(content_type=None)


async def users_with_email(worker: Any, email: str) -> int:
    async with worker.engine.connect() as conn:
        query = text("SELECT count(*) FROM users WHERE email = :e")
        result = await conn.execute(query, {"e": email})
        return int(result.scalar_one())


async def test_a_repeated_registration_gets_the_first_reply_and_creates_one_user(
    http: aiohttp.ClientSession, worker: Any
) -> None:
    body, key = registration(), unique("key-")
    first = await post(http, "/api/v1/users", body, key)
    again = await post(http, "/api/v1/users", dict(reversed(list(body.items()))), key)
    assert first[0] == again[0] == 201
    assert first[1] == again[1]
    assert await users_with_email(worker, body["email"]) == 1


async def test_a_reply_lost_between_the_commit_and_redis_is_replayed_not_done_again(
    http: aiohttp.ClientSession, worker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worst moment for a worker to die: the registration committed, its reply not yet
    in Redis. Stood in for by a Redis store that loses the reply, then the claim lapsing."""
    body, key = registration(), unique("key-")

    async def lost(*_: Any) -> None:
        raise ServiceUnavailable("The worker died here.")

    monkeypatch.setattr(RedisIdempotencyStore, "complete", lost)
    status, _ = await post(http, "/api/v1/users", body, key)
    assert status == 503  # the caller never learnt that the user was made
    monkeypatch.undo()
    slot = f"anonymous:warden.users.register:{hashlib.sha256(key.encode()).hexdigest()}"
    assert await worker.redis.delete(PREFIX + slot) == 1  # the dead worker's claim lapses

    status, user = await post(http, "/api/v1/users", body, key)
    assert status == 201  # not a false 409 email_taken
    assert user["email"] == body["email"]
    assert await users_with_email(worker, body["email"]) == 1
    assert await post(http, "/api/v1/users", body, key) == (201, user)  # from Redis again
    status, problem = await post(http, "/api/v1/users", registration(), key)
    assert (status, problem["code"]) == (422, "idempotency_key_reused")


async def test_the_same_key_with_another_body_is_refused(http: aiohttp.ClientSession) -> None:
    key = unique("key-")
    assert (await post(http, "/api/v1/users", registration(), key))[0] == 201
    status, problem = await post(http, "/api/v1/users", registration(), key)
    assert status == 422
    assert problem["code"] == "idempotency_key_reused"


async def test_a_repeat_while_the_first_is_worked_on_is_told_the_key_is_in_use(
    http: aiohttp.ClientSession, worker: Any
) -> None:
    body, key = registration(), unique("key-")
    gate, working = asyncio.Event(), asyncio.Event()
    register = worker.accounts.register

    async def slow_register(cmd: Any) -> Any:
        working.set()  # the first request holds the key's claim from here on
        await gate.wait()
        return await register(cmd)

    worker.accounts.register = slow_register
    try:
        first = asyncio.create_task(post(http, "/api/v1/users", body, key))
        await eventually(working.is_set, 10, "the first request never reached the use case")
        status, problem = await post(http, "/api/v1/users", body, key)
        assert status == 409
        assert problem["code"] == "idempotency_key_in_use"
        gate.set()
        assert (await first)[0] == 201
    finally:
        del worker.accounts.register
        gate.set()
    assert (await post(http, "/api/v1/users", body, key))[0] == 201


async def test_a_4xx_reply_is_kept_too(http: aiohttp.ClientSession) -> None:
    body = registration()
    assert (await post(http, "/api/v1/users", body, unique("key-")))[0] == 201
    key = unique("key-")
    first = await post(http, "/api/v1/users", body, key)
    assert first[0] == 409
    assert first[1]["code"] == "email_taken"
    assert await post(http, "/api/v1/users", body, key) == first


async def test_keys_are_scoped_to_the_caller(http: aiohttp.ClientSession, amqp: AmqpCaller) -> None:
    key = unique("key-")
    sessions = []
    for _ in range(2):
        body = registration()
        await amqp.call("warden.users.register", body)
        login = await amqp.call(
            "warden.auth.login", {"username": body["username"], "password": PASSWORD}
        )
        sessions.append(login["data"]["access_token"])
    for token in sessions:
        status, _ = await post(
            http, "/api/v1/auth/logout", {}, key, Authorization=f"Bearer {token}"
        )
        assert status == 204
    for token in sessions:
        async with http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}) as r:
            assert r.status == 401  # both logouts were done, not one replayed for the other


async def test_a_service_retrying_a_registration_over_amqp_never_gets_a_false_conflict(
    amqp: AmqpCaller,
) -> None:
    body, key = registration(), unique("key-")
    first = await amqp.call("warden.users.register", body, idempotency_key=key)
    retry = await amqp.call("warden.users.register", body, idempotency_key=key)
    assert first["ok"] is True
    assert retry == first


async def test_a_malformed_key_is_a_validation_error_over_http_and_amqp(
    http: aiohttp.ClientSession, amqp: AmqpCaller
) -> None:
    status, problem = await post(http, "/api/v1/users", registration(), "x" * 256)
    assert (status, problem["code"]) == (422, "validation_error")
    reply = await amqp.call("warden.users.register", registration(), idempotency_key="tab\there")
    assert reply["error"]["code"] == "validation_error"
