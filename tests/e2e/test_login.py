"""Logging in over HTTP (JSON and the OAuth2 password form) and presenting the bearer token."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest
from sqlalchemy import text

from tests.conftest import PASSWORD, unique
from tests.e2e.test_edge_errors import assert_problem
from warden.bootstrap import Services
from warden.settings import Settings

TOKEN_PAIR_FIELDS = {
    "access_token",
    "refresh_token",
    "token_type",
    "expires_in",
    "refresh_expires_in",
}


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    email: str


async def register(http: aiohttp.ClientSession) -> Account:
    name = unique("Login")
    sent = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    async with http.post("/api/v1/users", json=sent) as r:
        assert r.status == 201, await r.text()
        user = await r.json()
    return Account(user["id"], user["username"], user["email"])


@pytest.fixture
async def account(http: aiohttp.ClientSession) -> Account:
    return await register(http)


@pytest.mark.parametrize(
    "login_name",
    [
        lambda a: a.username,
        lambda a: a.username.lower(),
        lambda a: a.username.upper(),
        lambda a: a.email,
        lambda a: a.email.upper(),
    ],
    ids=["username", "username-lower", "username-upper", "email", "email-upper"],
)
async def test_a_user_logs_in_with_json_by_username_or_email_in_any_case(
    http: aiohttp.ClientSession, account: Account, login_name: Any
) -> None:
    sent = {"username": login_name(account), "password": PASSWORD}
    async with http.post("/api/v1/auth/login", json=sent) as r:
        assert r.status == 200, await r.text()
        pair = await r.json()
    assert jwt.decode(pair["access_token"], options={"verify_signature": False})["sub"] == str(
        account.id
    )


@pytest.mark.parametrize(
    "grant",
    [{"grant_type": "password"}, {}, {"grant_type": ""}],
    # RFC 6749 3.1: a parameter sent without a value counts as not sent.
    ids=["grant_type=password", "no-grant_type", "empty-grant_type"],
)
async def test_a_user_logs_in_with_the_oauth2_password_form(
    http: aiohttp.ClientSession, account: Account, grant: dict[str, str]
) -> None:
    form = grant | {"username": account.email.upper(), "password": PASSWORD}
    async with http.post("/api/v1/auth/login", data=form) as r:
        assert r.request_info.headers["Content-Type"] == "application/x-www-form-urlencoded"
        assert r.status == 200, await r.text()
        assert r.headers["Cache-Control"] == "no-store"
        assert set(await r.json()) == TOKEN_PAIR_FIELDS


@pytest.mark.parametrize(
    "grant_type", ["client_credentials", "authorization_code", "PASSWORD", "password\x00"]
)
async def test_a_form_with_another_grant_type_is_a_400_unsupported_grant_type(
    http: aiohttp.ClientSession, account: Account, grant_type: str
) -> None:
    form = {"grant_type": grant_type, "username": account.username, "password": PASSWORD}
    async with http.post("/api/v1/auth/login", data=form) as r:
        problem = await assert_problem(r, 400, "unsupported_grant_type")
    assert problem["error"] == "unsupported_grant_type"


async def test_a_wrong_password_and_an_unknown_user_get_the_same_401(
    http: aiohttp.ClientSession, account: Account
) -> None:
    wrong = {"username": account.username, "password": PASSWORD + "!"}
    async with http.post("/api/v1/auth/login", json=wrong) as r:
        wrong_password = await assert_problem(r, 401, "invalid_credentials")
    nobody = {"username": unique("nobody"), "password": PASSWORD}
    async with http.post("/api/v1/auth/login", json=nobody) as r:
        unknown_user = await assert_problem(r, 401, "invalid_credentials")
    assert wrong_password == unknown_user


async def test_a_deactivated_user_with_the_right_password_gets_a_403_inactive_user(
    http: aiohttp.ClientSession, account: Account, worker: Services
) -> None:
    # Straight to the database: this test is about login, not about the admin routes.
    async with worker.engine.begin() as conn:
        sql = text("UPDATE users SET is_active = false WHERE id = :id")
        await conn.execute(sql, {"id": account.id})
    right = {"username": account.username, "password": PASSWORD}
    async with http.post("/api/v1/auth/login", json=right) as r:
        await assert_problem(r, 403, "inactive_user")
    wrong = {"username": account.username, "password": PASSWORD + "!"}
    async with http.post("/api/v1/auth/login", json=wrong) as r:
        await assert_problem(r, 401, "invalid_credentials")


async def test_a_login_answers_a_token_pair_that_is_not_cached(
    http: aiohttp.ClientSession, account: Account, settings: Settings
) -> None:
    sent = {"username": account.username, "password": PASSWORD}
    async with http.post("/api/v1/auth/login", json=sent) as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        assert r.headers["Cache-Control"] == "no-store"
        pair = await r.json()
    assert set(pair) == TOKEN_PAIR_FIELDS
    assert pair["token_type"] == "bearer"
    assert pair["expires_in"] == settings.access_token_ttl == 1800
    assert pair["refresh_expires_in"] == settings.refresh_token_ttl
    assert isinstance(pair["refresh_token"], str)
    assert pair["refresh_token"]
    assert pair["refresh_token"] != pair["access_token"]


async def test_the_access_token_carries_the_contract_claims(
    http: aiohttp.ClientSession, account: Account, settings: Settings
) -> None:
    sent = {"username": account.username, "password": PASSWORD}
    pairs = []
    for _ in range(2):
        async with http.post("/api/v1/auth/login", json=sent) as r:
            assert r.status == 200
            pairs.append(await r.json())
    first, second = (
        jwt.decode(p["access_token"], options={"verify_signature": False}) for p in pairs
    )
    header = jwt.get_unverified_header(pairs[0]["access_token"])
    assert header["alg"] == "EdDSA"  # the default: the key store's Ed25519 key
    assert isinstance(header["kid"], str)
    assert first["iss"] == settings.jwt_issuer
    assert first["sub"] == str(account.id)
    assert first["type"] == "access"
    assert isinstance(first["sid"], str)
    assert first["sid"]
    assert isinstance(first["jti"], str)
    assert first["jti"]
    assert first["exp"] - first["iat"] == settings.access_token_ttl
    assert abs(first["iat"] - time.time()) < 300, "issued now, give or take clock skew"
    assert first["sid"] != second["sid"], "each login is a session of its own"
    assert first["jti"] != second["jti"]


async def test_the_access_token_reads_the_user_itself(
    http: aiohttp.ClientSession, account: Account
) -> None:
    sent = {"username": account.email, "password": PASSWORD}
    async with http.post("/api/v1/auth/login", json=sent) as r:
        token = (await r.json())["access_token"]
    async with http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.status == 200
        me = await r.json()
    assert (me["id"], me["username"], me["email"]) == (account.id, account.username, account.email)


async def test_users_me_without_an_authorization_header_is_a_401_missing_token(
    http: aiohttp.ClientSession,
) -> None:
    async with http.get("/api/v1/users/me") as r:
        await assert_problem(r, 401, "missing_token")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "authorization",
    ["Basic x", "Basic dXNlcjpwYXNz", "Bearer garbage", "Bearer a.b.c", "garbage", "Bearer"],
)
async def test_users_me_with_a_bad_authorization_is_a_401_invalid_token(
    http: aiohttp.ClientSession, authorization: str
) -> None:
    async with http.get("/api/v1/users/me", headers={"Authorization": authorization}) as r:
        await assert_problem(r, 401, "invalid_token")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_refresh_token_is_no_access_token(
    http: aiohttp.ClientSession, account: Account
) -> None:
    sent = {"username": account.username, "password": PASSWORD}
    async with http.post("/api/v1/auth/login", json=sent) as r:
        refresh = (await r.json())["refresh_token"]
    async with http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {refresh}"}) as r:
        await assert_problem(r, 401, "invalid_token")
