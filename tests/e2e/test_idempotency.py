"""Idempotency-Key: the first reply is kept and replayed; the work is done once."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiohttp
import orjson
import pytest
from sqlalchemy import text

from domain.errors import ServiceUnavailable
from storage.idempotency import PREFIX, RedisIdempotencyStore
from storage.redis_store import SESSION, SESSION_INDEX
from tests.conftest import PASSWORD, unique
from tests.e2e.test_sessions import sid_of
from tests.support.amqp import AmqpCaller
from tests.support.events import EventTap
from tests.support.waiting import eventually
from warden.bootstrap import Services


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


# --- what a repeat of a token operation gets (issue 11 item 5, issue 17 mutant 1) ---------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def slot_of(scope: str, queue: str, key: str) -> str:
    return f"{scope}:{queue}:{hashlib.sha256(key.encode()).hexdigest()}"


async def new_user(http: aiohttp.ClientSession) -> tuple[int, dict[str, str]]:
    body = registration()
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 201, await r.text()
        return int((await r.json())["id"]), {"username": body["username"], "password": PASSWORD}


async def login(http: aiohttp.ClientSession, credentials: dict[str, str]) -> dict[str, Any]:
    async with http.post("/api/v1/auth/login", json=credentials) as r:
        assert r.status == 200, await r.text()
        pair: dict[str, Any] = await r.json()
        return pair


async def status_of_me(http: aiohttp.ClientSession, access: str) -> tuple[int, str | None]:
    async with http.get("/api/v1/users/me", headers=bearer(access)) as r:
        return r.status, (await r.json()).get("code") if r.status != 200 else None


# A registration's events: the user, and the verification mail it was sent (CONTRACT §7).
REGISTERED = ["user.registered", "user.verification_requested"]


async def sessions_of(worker: Services, user_id: int) -> set[str]:
    members = await worker.redis.zrange(SESSION_INDEX + str(user_id), 0, -1)
    return {str(m) for m in members}


async def log_out(http: aiohttp.ClientSession, access: str) -> None:
    async with http.post("/api/v1/auth/logout", json={}, headers=bearer(access)) as r:
        assert r.status == 204, await r.text()


async def test_a_repeated_login_gets_the_same_pair_and_opens_one_session(
    http: aiohttp.ClientSession, worker: Services, tap: EventTap
) -> None:
    user_id, credentials = await new_user(http)
    key = unique("key-")
    first = await post(http, "/api/v1/auth/login", credentials, key)
    again = await post(http, "/api/v1/auth/login", dict(reversed(credentials.items())), key)
    assert first[0] == again[0] == 200
    assert again[1] == first[1]  # the same pair, not a second login's
    assert await sessions_of(worker, user_id) == {sid_of(first[1]["access_token"])}

    await log_out(http, first[1]["access_token"])
    kinds = await tap.kinds_until("user.logged_out", user_id)
    assert kinds == [*REGISTERED, "user.logged_in", "user.logged_out"]


async def test_a_repeated_refresh_gets_the_same_pair_and_is_not_reuse(
    http: aiohttp.ClientSession, worker: Services, tap: EventTap
) -> None:
    user_id, credentials = await new_user(http)
    pair = await login(http, credentials)
    key, body = unique("key-"), {"refresh_token": pair["refresh_token"]}
    first = await post(http, "/api/v1/auth/refresh", body, key)
    again = await post(http, "/api/v1/auth/refresh", body, key)
    assert first[0] == again[0] == 200, again
    assert again[1] == first[1]  # no token_reused: the repeat did not spend the token again
    assert await sessions_of(worker, user_id) == {sid_of(pair["access_token"])}
    assert await status_of_me(http, first[1]["access_token"]) == (200, None)

    await log_out(http, first[1]["access_token"])
    kinds = await tap.kinds_until("user.logged_out", user_id)
    assert kinds == [*REGISTERED, "user.logged_in", "user.logged_out"]  # no reuse event


async def test_a_spent_refresh_token_repeated_under_its_key_is_reuse_and_revokes_the_session(
    http: aiohttp.ClientSession, worker: Services, tap: EventTap
) -> None:
    user_id, credentials = await new_user(http)
    first_pair = await login(http, credentials)
    key, body = unique("key-"), {"refresh_token": first_pair["refresh_token"]}
    status, second_pair = await post(http, "/api/v1/auth/refresh", body, key)
    assert status == 200
    third = await post(
        http,
        "/api/v1/auth/refresh",
        {"refresh_token": second_pair["refresh_token"]},
        unique("key-"),
    )
    assert third[0] == 200

    status, problem = await post(http, "/api/v1/auth/refresh", body, key)
    assert (status, problem["code"]) == (401, "token_reused")  # not the second pair again
    assert await worker.redis.exists(SESSION + sid_of(first_pair["access_token"])) == 0
    assert await status_of_me(http, third[1]["access_token"]) == (401, "token_revoked")
    kinds = await tap.kinds_until("user.token_reuse_detected", user_id)
    assert kinds == [*REGISTERED, "user.logged_in", "user.token_reuse_detected"]


async def test_a_repeated_login_never_hands_out_a_pair_that_is_no_longer_live(
    http: aiohttp.ClientSession,
) -> None:
    """A kept pair is a live credential: once its session ended (or the pair was refreshed),
    the repeat gets 401 token_revoked, never the dead pair as if it were live."""
    _, credentials = await new_user(http)
    ended, refreshed = unique("key-"), unique("key-")
    status, pair = await post(http, "/api/v1/auth/login", credentials, ended)
    assert status == 200
    await log_out(http, pair["access_token"])
    status, problem = await post(http, "/api/v1/auth/login", credentials, ended)
    assert (status, problem["code"]) == (401, "token_revoked")

    status, pair = await post(http, "/api/v1/auth/login", credentials, refreshed)
    assert status == 200
    async with http.post(
        "/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}
    ) as r:
        assert r.status == 200
    status, problem = await post(http, "/api/v1/auth/login", credentials, refreshed)
    assert (status, problem["code"]) == (401, "token_revoked")  # its refresh token is spent


async def test_a_repeated_logout_is_replayed_to_the_user_and_never_to_a_dead_token(
    http: aiohttp.ClientSession, tap: EventTap
) -> None:
    """Keys are scoped to the user: a repeat with the same key and body from a live session of
    that user gets the first reply, without the work being done again. The token that logged
    out is dead: it is nobody's, so it gets no kept reply (401 token_revoked, nothing done)."""
    user_id, credentials = await new_user(http)
    ended, other = await login(http, credentials), await login(http, credentials)
    key = unique("key-")
    first = await post(http, "/api/v1/auth/logout", {}, key, **bearer(ended["access_token"]))
    assert first[0] == 204
    again = await post(http, "/api/v1/auth/logout", {}, key, **bearer(other["access_token"]))
    assert again[0] == 204
    assert await status_of_me(http, other["access_token"]) == (200, None)  # replayed, not done
    status, problem = await post(
        http, "/api/v1/auth/logout", {}, key, **bearer(ended["access_token"])
    )
    assert (status, problem["code"]) == (401, "token_revoked")

    async with http.patch(
        "/api/v1/users/me", json={"full_name": "Barrier"}, headers=bearer(other["access_token"])
    ) as r:
        assert r.status == 200
    kinds = await tap.kinds_until("user.updated", user_id)
    logins = ["user.logged_in", "user.logged_in"]
    assert kinds == [*REGISTERED, *logins, "user.logged_out", "user.updated"]


async def test_a_repeated_introspection_never_vouches_for_a_token_revoked_since(
    amqp: AmqpCaller, http: aiohttp.ClientSession
) -> None:
    _, credentials = await new_user(http)
    pair = await login(http, credentials)
    key, body = unique("key-"), {"token": pair["access_token"]}
    first = await amqp.call("warden.auth.introspect", body, idempotency_key=key)
    again = await amqp.call("warden.auth.introspect", body, idempotency_key=key)
    assert first["data"]["active"] is True
    assert again == first
    await log_out(http, pair["access_token"])
    late = await amqp.call("warden.auth.introspect", body, idempotency_key=key)
    assert late == {"ok": True, "data": {"active": False}}  # not the kept "active": true


async def test_a_kept_reply_is_replayed_only_to_a_token_that_is_still_live(
    amqp: AmqpCaller, http: aiohttp.ClientSession
) -> None:
    """The signature alone does not make the caller: a revoked token of the user never gets
    the replies kept for that user."""
    _, credentials = await new_user(http)
    pair = await login(http, credentials)
    key, change = unique("key-"), {"full_name": "Kept"}
    token = pair["access_token"]
    first = await amqp.call("warden.users.update_me", change, token, idempotency_key=key)
    assert first["ok"] is True
    assert await amqp.call("warden.users.update_me", change, token, idempotency_key=key) == first

    await log_out(http, token)
    late = await amqp.call("warden.users.update_me", change, token, idempotency_key=key)
    assert (late["ok"], late.get("error", {}).get("code")) == (False, "token_revoked")


async def test_kept_records_hold_no_token_password_or_plain_body_digest(
    amqp: AmqpCaller, http: aiohttp.ClientSession, worker: Services
) -> None:
    """In Redis and in Postgres: the reply is sealed and the fingerprint is keyed."""
    body, key = registration(), unique("key-")
    created = await amqp.call("warden.users.register", body, idempotency_key=key)
    credentials = {"username": body["username"], "password": body["password"]}
    pair = await amqp.call("warden.auth.login", credentials, idempotency_key=key)
    assert created["ok"] is True
    assert pair["ok"] is True

    plain_digests = {
        hashlib.sha256(orjson.dumps(b, option=orjson.OPT_SORT_KEYS)).hexdigest()
        for b in (body, credentials)
    }
    records = [
        await worker.redis.get(PREFIX + slot_of("anonymous", queue, key))
        for queue in ("warden.users.register", "warden.auth.login")
    ]
    async with worker.engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT fingerprint, reply FROM idempotent_replies WHERE slot = :s"),
                {"s": slot_of("anonymous", "warden.users.register", key)},
            )
        ).one()
    secrets = [body["password"], body["email"], pair["data"]["access_token"]]
    secrets.append(pair["data"]["refresh_token"])
    for record in records:
        assert record is not None
        assert [s for s in secrets if s in record] == []
        assert orjson.loads(record)["fp"] not in plain_digests
    assert [s for s in secrets if s.encode() in bytes(row.reply)] == []
    assert row.fingerprint not in plain_digests
