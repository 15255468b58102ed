"""JWT hardening at the edge and token introspection over the queue."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization

from tests.conftest import PASSWORD, unique
from tests.support.amqp import AmqpCaller
from tests.support.tokens import sign_as_warden
from warden.bootstrap import Services
from warden.security import Signer
from warden.settings import Settings
from warden.signing import make_key

Forge = Callable[[dict[str, Any], Signer], str]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(claims: dict[str, Any], kid: str | None = None) -> str:
    header = b64url(orjson.dumps({"alg": "none", "typ": "JWT"} | ({"kid": kid} if kid else {})))
    return f"{header}.{b64url(orjson.dumps(claims))}."


async def live_pair(http: aiohttp.ClientSession) -> tuple[str, dict[str, Any]]:
    """A new user's username and the token pair of a live session of theirs."""
    name = unique()
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 201, await r.text()
    async with http.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}) as r:
        assert r.status == 200, await r.text()
        return name, await r.json()


async def bearer_error(http: aiohttp.ClientSession, headers: dict[str, str]) -> tuple[int, str]:
    """Call a bearer route; return the status and code, checking the challenge header."""
    async with http.get("/api/v1/users/me", headers=headers) as r:
        body = await r.json(content_type=None)
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        return r.status, body["code"]


# --- wrong kind of token -----------------------------------------------------------------


async def test_a_refresh_token_is_no_bearer_token(
    http: aiohttp.ClientSession, amqp: AmqpCaller
) -> None:
    _, pair = await live_pair(http)
    status = await bearer_error(http, bearer(pair["refresh_token"]))
    assert status == (401, "invalid_token")
    reply = await amqp.call("warden.users.me", {}, token=pair["refresh_token"])
    assert reply["error"]["code"] == "invalid_token"


async def test_an_access_token_cannot_refresh(
    http: aiohttp.ClientSession, amqp: AmqpCaller
) -> None:
    _, pair = await live_pair(http)
    body = {"refresh_token": pair["access_token"]}
    async with http.post("/api/v1/auth/refresh", json=body) as r:
        assert r.status == 401
        assert (await r.json(content_type=None))["code"] == "invalid_token"
    reply = await amqp.call("warden.auth.refresh", body)
    assert (reply["error"]["status"], reply["error"]["code"]) == (401, "invalid_token")
    async with http.get("/api/v1/users/me", headers=bearer(pair["access_token"])) as r:
        assert r.status == 200  # the failed refresh did not touch the session


# --- forged and expired tokens -----------------------------------------------------------


def _alg_none(claims: dict[str, Any], signer: Signer) -> str:
    return unsigned(claims, signer.kid)


def _wrong_signature(claims: dict[str, Any], signer: Signer) -> str:
    other = make_key(signer.algorithm)  # another key of the same kind, under the right kid
    key: Any = serialization.load_der_private_key(other.private_der, password=None)
    return jwt.encode(claims, key, algorithm=signer.algorithm, headers={"kid": signer.kid})


def _key_confusion(claims: dict[str, Any], signer: Signer) -> str:
    # HS256 keyed with the published key: a verifier that believed the header's alg would
    # check it with the public key as an HMAC secret.
    public = signer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = b64url(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": signer.kid}))
    signing_input = f"{header}.{b64url(orjson.dumps(claims))}"
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


def _unknown_kid(claims: dict[str, Any], signer: Signer) -> str:
    return jwt.encode(claims, signer.key, algorithm=signer.algorithm, headers={"kid": "unknown"})


def _sign(claims: dict[str, Any], signer: Signer) -> str:
    return jwt.encode(claims, signer.key, algorithm=signer.algorithm, headers={"kid": signer.kid})


def _wrong_issuer(claims: dict[str, Any], signer: Signer) -> str:
    return _sign(claims | {"iss": "not-warden"}, signer)


def _no_type(claims: dict[str, Any], signer: Signer) -> str:
    return _sign({k: v for k, v in claims.items() if k != "type"}, signer)


def _tampered(claims: dict[str, Any], signer: Signer) -> str:
    header, _, signature = _sign(claims, signer).split(".")
    return f"{header}.{b64url(orjson.dumps(claims | {'sub': '1'}))}.{signature}"


@pytest.mark.parametrize(
    "forge",
    [
        _alg_none,
        _wrong_signature,
        _key_confusion,
        _unknown_kid,
        _wrong_issuer,
        _no_type,
        _tampered,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
async def test_a_forged_token_of_a_live_session_is_an_invalid_token(
    http: aiohttp.ClientSession, worker: Services, forge: Forge
) -> None:
    _, pair = await live_pair(http)
    signer = worker.resources.key_ring.signing()
    assert signer.kid is not None  # the default: EdDSA with the key store's active key
    token = forge(claims_of(pair["access_token"]), signer)
    assert await bearer_error(http, bearer(token)) == (401, "invalid_token")


async def test_the_same_claims_rightly_signed_are_accepted(
    http: aiohttp.ClientSession, worker: Services
) -> None:
    """The forgeries above are refused for what they change, not for being made here."""
    _, pair = await live_pair(http)
    token = _sign(claims_of(pair["access_token"]), worker.resources.key_ring.signing())
    async with http.get("/api/v1/users/me", headers=bearer(token)) as r:
        assert r.status == 200


def expired_copy(token: str, settings: Settings, worker: Services) -> str:
    """The same claims, rightly signed, expired longer ago than the leeway forgives."""
    now = int(time.time())
    exp = now - settings.jwt_leeway - 60
    claims = claims_of(token) | {"iat": exp - settings.access_token_ttl, "exp": exp}
    return sign_as_warden(settings, worker, claims)


async def test_an_expired_access_token_is_token_expired(
    http: aiohttp.ClientSession, settings: Settings, worker: Services
) -> None:
    _, pair = await live_pair(http)
    token = expired_copy(pair["access_token"], settings, worker)
    assert await bearer_error(http, bearer(token)) == (401, "token_expired")


async def test_an_expired_refresh_token_cannot_refresh(
    http: aiohttp.ClientSession, settings: Settings, worker: Services
) -> None:
    _, pair = await live_pair(http)
    body = {"refresh_token": expired_copy(pair["refresh_token"], settings, worker)}
    async with http.post("/api/v1/auth/refresh", json=body) as r:
        assert r.status == 401
        assert (await r.json(content_type=None))["code"] == "token_expired"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "missing_token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "invalid_token"),
        ({"Authorization": "Bearer "}, "invalid_token"),
        ({"Authorization": "Bearer not.a.jwt"}, "invalid_token"),
    ],
    ids=["no-header", "basic", "empty-bearer", "garbage"],
)
async def test_a_bearer_route_without_a_usable_token_is_challenged(
    http: aiohttp.ClientSession, headers: dict[str, str], expected: str
) -> None:
    assert await bearer_error(http, headers) == (401, expected)


# --- introspection -----------------------------------------------------------------------


async def introspect(amqp: AmqpCaller, token: str) -> dict[str, Any]:
    reply = await amqp.call("warden.auth.introspect", {"token": token})
    assert reply["ok"] is True, reply
    return dict(reply["data"])


async def test_introspecting_a_live_access_token_gives_its_claims_and_the_user(
    http: aiohttp.ClientSession, amqp: AmqpCaller, settings: Settings
) -> None:
    name, pair = await live_pair(http)
    claims = claims_of(pair["access_token"])
    assert await introspect(amqp, pair["access_token"]) == {
        "active": True,
        "sub": claims["sub"],
        "sid": claims["sid"],
        "username": name,
        "is_superuser": False,
        "exp": claims["exp"],
        "iat": claims["iat"],
    }
    assert claims["exp"] - claims["iat"] == settings.access_token_ttl


async def test_introspecting_anything_but_a_live_access_token_is_inactive(
    http: aiohttp.ClientSession, amqp: AmqpCaller, settings: Settings, worker: Services
) -> None:
    _, pair = await live_pair(http)
    _, revoked = await live_pair(http)
    async with http.post("/api/v1/auth/logout", headers=bearer(revoked["access_token"])) as r:
        assert r.status == 204
    dead = {
        "revoked": revoked["access_token"],
        "expired": expired_copy(pair["access_token"], settings, worker),
        "garbage": "not-a-token",
        "refresh": pair["refresh_token"],
        "alg-none": unsigned(claims_of(pair["access_token"])),
    }
    for kind, token in dead.items():
        assert await introspect(amqp, token) == {"active": False}, kind
    assert (await introspect(amqp, pair["access_token"]))["active"] is True
