"""Published keys through the edge (CONTRACT §6): tokens verified offline with nothing but the
key set, a rotation with `warden keys rotate` that fails no request, `--now` for a leaked
key, ES256, HS256 with an empty set, the RFC 8414 metadata.

Each test runs its own worker and edge on a database of its own, with short lifetimes.
The verification "offline" is plain PyJWT: no Warden code reads the tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp
import jwt
import orjson
import pytest
from aiohttp.test_utils import TestServer

from tests.conftest import PASSWORD, make_settings, own_world, unique
from tests.integration.test_cli import warden
from tests.support.infra import Urls
from tests.support.waiting import eventually
from warden.bootstrap import build_edge, running_worker
from warden.settings import Settings
from web.app import RPC_CLIENT

# Long enough for a `warden` process to start on a loaded machine within the max-age.
ROTATION = {"jwks_max_age": 20, "access_token_ttl": 12, "jwt_leeway": 0}


@contextlib.asynccontextmanager
async def warden_at(urls: Urls, **overrides: Any) -> AsyncIterator[tuple[Settings, Any]]:
    """A worker and an edge of their own on a fresh database; the settings and an HTTP client."""
    async with own_world(urls, "jwks") as own:
        settings = make_settings(own, **overrides)
        async with running_worker(settings):
            server = TestServer(build_edge(settings), host="127.0.0.1")
            await server.start_server()
            try:
                assert server.app is not None
                await server.app[RPC_CLIENT].wait_connected(10)
                async with aiohttp.ClientSession(str(server.make_url(""))) as http:
                    yield settings, http
            finally:
                await server.close()


@contextlib.asynccontextmanager
async def key_events(settings: Settings) -> AsyncIterator[list[dict[str, Any]]]:
    """Every signing_keys.changed event Warden publishes while the block runs."""
    received: list[dict[str, Any]] = []
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange("warden.events")
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="signing_keys.#")

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            received.append(orjson.loads(message.body))

        await queue.consume(on_message, no_ack=True)
        yield received


async def log_in(http: aiohttp.ClientSession) -> tuple[str, str]:
    """A new user's name and access token."""
    name = unique()
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    async with http.post("/api/v1/users", json=body) as r:
        assert r.status == 201, await r.text()
    return name, await again(http, name)


async def again(http: aiohttp.ClientSession, name: str) -> str:
    async with http.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["access_token"])


async def key_set(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get("/.well-known/jwks.json") as r:
        assert r.status == 200, await r.text()
        assert r.headers["Cache-Control"].startswith("public, max-age=")
        return dict(await r.json())


def kids(jwks: dict[str, Any]) -> list[str]:
    return [k["kid"] for k in jwks["keys"]]


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def verify_offline(token: str, jwks: dict[str, Any], issuer: str = "warden") -> dict[str, Any]:
    """What a service that knows only the key set does: plain PyJWT, the key's own alg."""
    key = jwt.PyJWKSet.from_dict(jwks)[kid_of(token)]
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=[key.algorithm_name], issuer=issuer
    )
    return claims


async def me(http: aiohttp.ClientSession, token: str) -> tuple[int, str | None]:
    async with http.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"}) as r:
        body = await r.json(content_type=None)
        return r.status, body.get("code")


async def test_a_token_verifies_offline_with_only_the_published_key_set(urls: Urls) -> None:
    async with warden_at(urls) as (_, http):
        _, token = await log_in(http)
        async with http.get("/.well-known/jwks.json") as r:
            assert r.headers["Cache-Control"] == "public, max-age=300"
            assert r.headers["Content-Type"].startswith("application/json")
            jwks = await r.json()
        [key] = jwks["keys"]
        assert {k: key[k] for k in ("kty", "crv", "use", "alg")} == {
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
        }
        assert set(key) == {"kty", "crv", "x", "kid", "use", "alg"}  # no private member
        assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
        claims = verify_offline(token, jwks)
        assert set(claims) == {"iss", "sub", "sid", "jti", "type", "iat", "exp", "amr"}
        assert claims["type"] == "access"


async def test_rotation_keeps_old_tokens_until_they_expire_and_new_ones_carry_the_new_kid(
    urls: Urls,
) -> None:
    async with warden_at(urls, **ROTATION) as (settings, http):
        name, first = await log_in(http)
        [old] = kids(await key_set(http))
        assert kid_of(first) == old

        # Two operators rotate at the same moment, in two processes: one new key.
        (code_a, out_a), (code_b, out_b) = await asyncio.gather(
            warden(settings, "keys", "rotate", **env_of(settings)),
            warden(settings, "keys", "rotate", **env_of(settings)),
        )
        assert (code_a, code_b) == (0, 0), out_a + out_b
        new = re.findall(r"signing key (\S+) published", out_a + out_b)
        assert len(new) == 2, out_a + out_b
        assert new[0] == new[1], out_a + out_b
        rotated_at = time.monotonic()
        await eventually(lambda: _published(http, [old, new[0]]), 3, "new key not published")

        code, listing = await warden(settings, "keys", "list", **env_of(settings))
        assert code == 0
        assert re.search(rf"{re.escape(old)}\s+EdDSA\s+active", listing), listing
        assert re.search(rf"{re.escape(new[0])}\s+EdDSA\s+next", listing), listing

        # Within the max-age tokens are still signed by the old key; then by the new one.
        issued = [await again(http, name)]
        if time.monotonic() - rotated_at < settings.jwks_max_age - 2:
            assert kid_of(issued[0]) == old

        async def signs_with_the_new_key() -> bool:
            issued.append(await again(http, name))
            return bool(kid_of(issued[-1]) == new[0])

        await eventually(signs_with_the_new_key, settings.jwks_max_age + 3, "no new kid")
        last_of_old = [t for t in issued if kid_of(t) == old][-1]  # signed just before the switch
        jwks = await key_set(http)
        assert kids(jwks) == [new[0], old]
        assert await me(http, last_of_old) == (200, None)  # the old key still verifies
        verify_offline(last_of_old, jwks)
        verify_offline(issued[-1], jwks)

        # Once every token of the old key expired, it leaves the set.
        await eventually(
            lambda: _published(http, [new[0]]), settings.access_token_ttl + 5, "old key stayed"
        )
        # ...not before: the last token it signed had expired when it left.
        assert jwt.decode(last_of_old, options={"verify_signature": False})["exp"] <= time.time()
        # Its tokens now name a key nobody publishes: not even their expiry can be believed.
        assert await me(http, last_of_old) == (401, "invalid_token")


async def test_rotate_now_refuses_the_old_keys_tokens_at_once(urls: Urls) -> None:
    async with (
        warden_at(urls, **ROTATION) as (settings, http),
        key_events(settings) as events,
    ):
        name, token = await log_in(http)
        [leaked] = kids(await key_set(http))
        assert await me(http, token) == (200, None)  # verified, and remembered by the worker
        code, out = await warden(settings, "keys", "rotate", "--now", **env_of(settings))
        assert code == 0, out
        done = time.monotonic()
        await eventually(
            lambda: _refused(http, token), 2, "a token of the revoked key was still accepted"
        )
        assert time.monotonic() - done < 2
        [new] = kids(await key_set(http))
        assert new != leaked
        fresh = await again(http, name)
        assert kid_of(fresh) == new  # the new key signs at once
        assert await me(http, fresh) == (200, None)
        # Subscribers hear that the published set changed, and what it is now.
        await eventually(
            lambda: any(e["data"]["kids"] == [new] for e in events), 10, "no signing_keys event"
        )
        assert all(e["type"] == "signing_keys.changed" for e in events)


async def test_es256_tokens_verify_offline(urls: Urls) -> None:
    async with warden_at(urls, jwt_algorithm="ES256") as (_, http):
        _, token = await log_in(http)
        jwks = await key_set(http)
        [key] = jwks["keys"]
        assert (key["kty"], key["crv"], key["alg"]) == ("EC", "P-256", "ES256")
        assert jwt.get_unverified_header(token)["alg"] == "ES256"
        verify_offline(token, jwks)
        assert await me(http, token) == (200, None)


async def test_hs256_still_works_and_publishes_an_empty_key_set(urls: Urls) -> None:
    async with warden_at(urls, jwt_algorithm="HS256") as (settings, http):
        _, token = await log_in(http)
        assert await key_set(http) == {"keys": []}
        assert "kid" not in jwt.get_unverified_header(token)
        jwt.decode(token, settings.jwt_secret.get_secret_value(), algorithms=["HS256"])
        assert await me(http, token) == (200, None)
        code, out = await warden(settings, "keys", "rotate", **env_of(settings))
        assert code == 2
        assert "no keys to rotate" in out


async def test_the_audience_is_carried_and_checked(urls: Urls) -> None:
    async with warden_at(urls, jwt_audience="orders") as (_, http):
        _, token = await log_in(http)
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["aud"] == "orders"
        assert await me(http, token) == (200, None)


async def test_the_authorization_server_metadata_links_absolutely(urls: Urls) -> None:
    public = "https://auth.example.com"
    async with warden_at(urls, public_url=public + "/", jwt_issuer=public) as (_, http):
        async with http.get("/.well-known/oauth-authorization-server") as r:
            assert r.status == 200
            assert r.headers["Cache-Control"] == "public, max-age=300"
            metadata = await r.json()
        assert metadata["issuer"] == public
        assert metadata["token_endpoint"] == f"{public}/api/v1/auth/login"
        assert metadata["jwks_uri"] == f"{public}/.well-known/jwks.json"
        assert metadata["revocation_endpoint"] == f"{public}/api/v1/auth/revoke"
        assert metadata["grant_types_supported"] == ["password", "refresh_token"]
        assert metadata["token_endpoint_auth_methods_supported"] == ["none"]
        _, token = await log_in(http)
        verify_offline(token, await key_set(http), issuer=metadata["issuer"])


@pytest.mark.parametrize("env", ["dev"])
async def test_the_first_start_makes_the_first_key(urls: Urls, env: str) -> None:
    async with own_world(urls, "first") as own:
        settings = make_settings(own, env=env)
        code, out = await warden(settings, "keys", "list", **env_of(settings))
        assert (code, out.count("\n")) == (0, 1), out  # the header alone: no key yet
        async with running_worker(settings) as services:
            [key] = services.resources.key_ring.jwks()["keys"]
        code, out = await warden(settings, "keys", "list", **env_of(settings))
        assert re.search(rf"{re.escape(key['kid'])}\s+EdDSA\s+active", out), out


def env_of(settings: Settings) -> dict[str, str]:
    """The settings the CLI needs beside the URLs, as the environment names them."""
    return {
        "WARDEN_ENV": settings.env,
        "WARDEN_JWT_ALGORITHM": settings.jwt_algorithm,
        "WARDEN_JWKS_MAX_AGE": str(settings.jwks_max_age),
        "WARDEN_ACCESS_TOKEN_TTL": str(settings.access_token_ttl),
        "WARDEN_JWT_LEEWAY": str(settings.jwt_leeway),
    }


async def _published(http: aiohttp.ClientSession, expected: list[str]) -> bool:
    return sorted(kids(await key_set(http))) == sorted(expected)


async def _refused(http: aiohttp.ClientSession, token: str) -> bool:
    return await me(http, token) == (401, "invalid_token")


async def test_a_worker_under_another_encryption_key_refuses_to_start_until_rotate_now(
    urls: Urls,
) -> None:
    async with own_world(urls, "kek") as own:
        settings = make_settings(own)
        assert (await warden(settings, "keys", "rotate", **env_of(settings)))[0] == 0
        other = {"WARDEN_KEY_ENCRYPTION_KEY": "another key of at least thirty-two bytes!"}
        env = env_of(settings) | other | {"WARDEN_METRICS_PORT": "0"}
        code, out = await warden(settings, "worker", **env)
        assert code == 1, out
        assert "does not open with WARDEN_KEY_ENCRYPTION_KEY" in out
        assert other["WARDEN_KEY_ENCRYPTION_KEY"] not in out
        assert "Traceback" not in out
        code, out = await warden(settings, "keys", "rotate", "--now", **env)
        assert code == 0, out
        _, listing = await warden(settings, "keys", "list", **env)
        assert sorted(re.findall(r"EdDSA\s+(\w+)", listing)) == ["active", "revoked"], listing
