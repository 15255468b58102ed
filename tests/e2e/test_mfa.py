"""TOTP second factor through the edge, on the real broker, Postgres and Redis.

Codes are computed here from the secret the enrolment answered, as an authenticator app
would. A code is accepted once: the one that confirms spends its time-step, so the first
login after it uses the next step's code (one step of drift is allowed).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest
from sqlalchemy import text

from tests.conftest import PASSWORD, fresh_ip, unique
from tests.support.amqp import AmqpCaller
from tests.support.events import EventTap
from tests.support.waiting import eventually
from warden.bootstrap import Services
from warden.settings import Settings
from warden.totp import PyotpTotp

TOTP = PyotpTotp()
API = "/api/v1"
NOT_A_CODE = "aaaa-aaaa-aaaa-aaaa"  # no user's recovery code, never a TOTP code


def code_for(secret: str, steps_ahead: int = 0) -> str:
    return TOTP.code_at(secret, int(time.time()) + 30 * steps_ahead)


def amr_of(access_token: str) -> list[str]:
    claims: dict[str, Any] = jwt.decode(access_token, options={"verify_signature": False})
    return list(claims["amr"])


@dataclass
class Account:
    name: str
    user_id: int
    access: str
    secret: str = ""
    recovery: tuple[str, ...] = ()

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


async def answer(response: aiohttp.ClientResponse) -> tuple[int, dict[str, Any]]:
    body = await response.json(content_type=None) if response.status != 204 else {}
    return response.status, body


async def post(
    http: aiohttp.ClientSession, path: str, body: Any = None, **headers: str
) -> tuple[int, dict[str, Any]]:
    async with http.post(API + path, json=body, headers=headers) as r:
        return await answer(r)


async def log_in(
    http: aiohttp.ClientSession, name: str, **headers: str
) -> tuple[int, dict[str, Any]]:
    return await post(http, "/auth/login", {"username": name, "password": PASSWORD}, **headers)


async def mfa_token(http: aiohttp.ClientSession, name: str, **headers: str) -> str:
    status, body = await log_in(http, name, **headers)
    assert (status, body["code"]) == (403, "mfa_required"), body
    token: str = body["mfa_token"]
    return token


async def second_step(
    http: aiohttp.ClientSession, token: str, code: str, **headers: str
) -> tuple[int, dict[str, Any]]:
    return await post(http, "/auth/mfa", {"mfa_token": token, "code": code}, **headers)


async def new_account(http: aiohttp.ClientSession) -> Account:
    name = unique()
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    status, user = await post(http, "/users", body)
    assert status == 201, user
    status, pair = await log_in(http, name)
    assert status == 200, pair
    return Account(name, user["id"], pair["access_token"])


async def with_totp(http: aiohttp.ClientSession) -> Account:
    """An account that enrolled and confirmed TOTP."""
    account = await new_account(http)
    status, enrollment = await post(http, "/users/me/mfa/totp", **account.bearer)
    assert status == 200, enrollment
    account.secret = enrollment["secret"]
    status, confirmed = await post(
        http, "/users/me/mfa/totp/confirm", {"code": code_for(account.secret)}, **account.bearer
    )
    assert status == 200, confirmed
    account.recovery = tuple(confirmed["recovery_codes"])
    return account


async def test_the_whole_flow_from_enrolment_to_a_refreshed_pair_with_amr(
    http: aiohttp.ClientSession, tap: EventTap
) -> None:
    account = await new_account(http)
    assert amr_of(account.access) == ["pwd"]

    async with http.post(API + "/users/me/mfa/totp", headers=account.bearer) as r:
        status, enrollment = await answer(r)
        assert r.headers["Cache-Control"] == "no-store"
    assert status == 200
    secret = enrollment["secret"]
    assert enrollment["otpauth_uri"].startswith(f"otpauth://totp/Warden:{account.name}?")
    assert f"secret={secret}" in enrollment["otpauth_uri"]
    assert "issuer=Warden" in enrollment["otpauth_uri"]
    # Not active until confirmed: the password alone still logs in.
    assert (await log_in(http, account.name))[0] == 200

    status, confirmed = await post(
        http, "/users/me/mfa/totp/confirm", {"code": code_for(secret)}, **account.bearer
    )
    assert status == 200
    assert len(set(confirmed["recovery_codes"])) == 10
    await tap.wait_for("user.mfa_enabled", str(account.user_id))

    async with http.post(API + "/auth/logout", headers=account.bearer) as r:
        assert r.status == 204

    async with http.post(
        API + "/auth/login", json={"username": account.name, "password": PASSWORD}
    ) as r:
        assert (r.status, r.content_type) == (403, "application/problem+json")
        problem = await r.json(content_type=None)
    assert problem["code"] == "mfa_required"
    assert len(problem["mfa_token"]) >= 43

    async with http.post(
        API + "/auth/mfa", json={"mfa_token": problem["mfa_token"], "code": code_for(secret, 1)}
    ) as r:
        status, pair = await answer(r)
        assert r.headers["Cache-Control"] == "no-store"
    assert status == 200, pair
    assert amr_of(pair["access_token"]) == ["pwd", "otp"]
    async with http.get(
        API + "/users/me", headers={"Authorization": "Bearer " + pair["access_token"]}
    ) as r:
        assert r.status == 200

    status, refreshed = await post(http, "/auth/refresh", {"refresh_token": pair["refresh_token"]})
    assert status == 200
    assert amr_of(refreshed["access_token"]) == ["pwd", "otp"]

    def logged_in() -> list[dict[str, Any]]:
        return [
            a.event
            for a in tap.arrivals
            if a.event["type"] == "user.logged_in" and a.event["subject"] == str(account.user_id)
        ]

    # Two password logins, then the one with the code.
    await eventually(lambda: len(logged_in()) >= 3, 10, "user.logged_in events missing")
    assert [e["data"]["amr"] for e in logged_in()] == [["pwd"], ["pwd"], ["pwd", "otp"]]


async def test_a_code_is_accepted_once(http: aiohttp.ClientSession) -> None:
    account = await with_totp(http)
    code = code_for(account.secret, 1)
    assert (await second_step(http, await mfa_token(http, account.name), code))[0] == 200

    status, body = await second_step(http, await mfa_token(http, account.name), code)

    assert (status, body["code"]) == (401, "invalid_mfa_code")
    # Nor is the code that confirmed the enrolment (its step is spent as well).
    token = await mfa_token(http, account.name)
    status, body = await second_step(http, token, code_for(account.secret))
    assert (status, body["code"]) == (401, "invalid_mfa_code")


async def test_wrong_codes_count_toward_the_accounts_lockout(
    http: aiohttp.ClientSession, settings: Settings, tap: EventTap
) -> None:
    account = await with_totp(http)
    first = await mfa_token(http, account.name)
    for _ in range(settings.login_max_failures - 2):
        status, body = await second_step(http, first, NOT_A_CODE)
        assert (status, body["code"]) == (401, "invalid_mfa_code")
    # The right password again gives a new token and clears nothing.
    second = await mfa_token(http, account.name)
    for _ in range(2):
        assert (await second_step(http, second, NOT_A_CODE))[0] == 401

    status, body = await log_in(http, account.name)
    assert (status, body["code"]) == (429, "too_many_attempts")
    status, body = await second_step(http, second, code_for(account.secret, 1))
    assert (status, body["code"]) == (429, "too_many_attempts")
    failed = await tap.wait_for("user.login_failed", str(account.user_id))
    assert failed.event["data"]["reason"] == "invalid_mfa_code"


async def test_an_mfa_token_dies_after_five_wrong_codes(http: aiohttp.ClientSession) -> None:
    survivor, victim = await with_totp(http), await with_totp(http)
    alive = await mfa_token(http, survivor.name)
    dying = await mfa_token(http, victim.name)
    for _ in range(4):
        assert (await second_step(http, alive, NOT_A_CODE))[0] == 401
        assert (await second_step(http, dying, NOT_A_CODE))[0] == 401
    assert (await second_step(http, dying, NOT_A_CODE))[0] == 401  # the fifth

    assert (await second_step(http, alive, code_for(survivor.secret, 1)))[0] == 200
    status, body = await second_step(http, dying, code_for(victim.secret, 1))
    assert (status, body["code"]) == (401, "invalid_token")


async def test_an_mfa_token_is_single_use(http: aiohttp.ClientSession) -> None:
    account = await with_totp(http)
    token = await mfa_token(http, account.name)
    assert (await second_step(http, token, account.recovery[0]))[0] == 200

    status, body = await second_step(http, token, account.recovery[1])

    assert (status, body["code"]) == (401, "invalid_token")


async def test_an_mfa_token_expires(http: aiohttp.ClientSession, worker: Services) -> None:
    account = await with_totp(http)
    token = await mfa_token(http, account.name)
    key = "warden:mfa-token:" + hashlib.sha256(token.encode()).hexdigest()
    assert 290 <= await worker.redis.ttl(key) <= 300  # five minutes
    assert await worker.redis.exists(key)

    await worker.redis.pexpire(key, 1)  # as if five minutes had passed
    await asyncio.sleep(0.05)

    status, body = await second_step(http, token, code_for(account.secret, 1))
    assert (status, body["code"]) == (401, "invalid_token")


async def test_an_mfa_token_is_refused_from_another_address(http: aiohttp.ClientSession) -> None:
    account = await with_totp(http)
    home = fresh_ip()
    token = await mfa_token(http, account.name, **{"X-Forwarded-For": home})
    code = code_for(account.secret, 1)

    status, body = await second_step(http, token, code, **{"X-Forwarded-For": fresh_ip()})
    assert (status, body["code"]) == (401, "invalid_token")

    assert (await second_step(http, token, code, **{"X-Forwarded-For": home}))[0] == 200


async def test_a_recovery_code_works_once(http: aiohttp.ClientSession) -> None:
    account = await with_totp(http)
    recovery = account.recovery[5]

    status, pair = await second_step(http, await mfa_token(http, account.name), recovery)
    assert status == 200
    assert amr_of(pair["access_token"]) == ["pwd", "recovery"]

    status, body = await second_step(http, await mfa_token(http, account.name), recovery)
    assert (status, body["code"]) == (401, "invalid_mfa_code")


async def test_enrolling_while_enabled_is_a_conflict(http: aiohttp.ClientSession) -> None:
    account = await with_totp(http)

    status, body = await post(http, "/users/me/mfa/totp", **account.bearer)

    assert (status, body["code"]) == (409, "mfa_already_enabled")


async def test_disable_needs_the_password(http: aiohttp.ClientSession, tap: EventTap) -> None:
    account = await with_totp(http)

    async with http.delete(
        API + "/users/me/mfa/totp", json={"password": "not it"}, headers=account.bearer
    ) as r:
        status, body = await answer(r)
    assert (status, body["code"]) == (400, "wrong_password")
    assert (await log_in(http, account.name))[0] == 403

    async with http.delete(
        API + "/users/me/mfa/totp", json={"password": PASSWORD}, headers=account.bearer
    ) as r:
        assert r.status == 204
    await tap.wait_for("user.mfa_disabled", str(account.user_id))
    status, pair = await log_in(http, account.name)
    assert status == 200
    assert amr_of(pair["access_token"]) == ["pwd"]


async def test_the_secret_and_the_recovery_codes_are_not_readable_in_the_database(
    http: aiohttp.ClientSession, worker: Services
) -> None:
    account = await with_totp(http)

    async with worker.engine.connect() as conn:
        secret = (
            await conn.execute(
                text("SELECT secret FROM user_totp WHERE user_id = :id"), {"id": account.user_id}
            )
        ).scalar_one()
        digests = (
            (
                await conn.execute(
                    text("SELECT digest FROM mfa_recovery_codes WHERE user_id = :id"),
                    {"id": account.user_id},
                )
            )
            .scalars()
            .all()
        )

    stored = bytes(secret)
    raw = base64.b32decode(account.secret)
    assert account.secret.encode() not in stored
    assert raw not in stored
    assert len(stored) == 12 + 32 + 16  # nonce, the 32 characters sealed, tag
    assert len(digests) == 10
    for code in account.recovery:
        assert all(code.encode() not in bytes(d) for d in digests)
        assert hashlib.sha256(code.encode()).digest() not in digests


async def test_over_amqp_the_failure_carries_the_mfa_token(
    http: aiohttp.ClientSession, amqp: AmqpCaller
) -> None:
    account = await with_totp(http)

    reply = await amqp.call("warden.auth.login", {"username": account.name, "password": PASSWORD})

    assert reply["ok"] is False
    assert (reply["error"]["status"], reply["error"]["code"]) == (403, "mfa_required")
    token = reply["error"]["mfa_token"]
    done = await amqp.call(
        "warden.auth.mfa", {"mfa_token": token, "code": code_for(account.secret, 1)}
    )
    assert done["ok"] is True
    assert amr_of(done["data"]["access_token"]) == ["pwd", "otp"]


@pytest.mark.parametrize(
    "body",
    [
        {"mfa_token": "x", "code": ""},
        {"mfa_token": "", "code": "123456"},
        {"mfa_token": "x" * 257, "code": "123456"},
        {"mfa_token": "x", "code": "1" * 65},
        {"mfa_token": "a\u0000b", "code": "123456"},
        {"mfa_token": "x"},
    ],
)
async def test_malformed_second_steps_are_422s(
    http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    status, problem = await post(http, "/auth/mfa", body)

    assert (status, problem["code"]) == (422, "validation_error")
