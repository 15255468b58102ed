"""The aiohttp middleware: a real consumer app answers as Warden's edge does."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from warden_verifier import RevokedSessions, Verifier
from warden_verifier.middleware import CLAIMS, PROBLEM_JSON, warden_auth

from tests.support.verifier import ISSUER, KeySetServer, SigningKey

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code"}


async def whoami(request: web.Request) -> web.Response:
    claims = request[CLAIMS]
    return web.json_response({"user": claims.user_id, "session": claims.session_id})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


class Consumer:
    def __init__(self, url: str, key: SigningKey, revoked: RevokedSessions) -> None:
        self.url, self.key, self.revoked = url, key, revoked


@pytest_asyncio.fixture
async def consumer() -> AsyncIterator[Consumer]:
    key = SigningKey("EdDSA")
    keys = await KeySetServer(key).start()
    revoked = RevokedSessions()
    verifier = Verifier(keys.jwks_url, issuer=ISSUER, revoked=revoked)
    app = web.Application(
        middlewares=[warden_auth(verifier, open_paths=lambda r: r.path == "/health")]
    )
    app.router.add_get("/me", whoami)
    app.router.add_get("/health", health)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield Consumer(str(server.make_url("")).rstrip("/"), key, revoked)
    await server.close()
    await keys.close()


async def get(url: str, authorization: str | None) -> tuple[int, str, dict[str, str], object]:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return (
            response.status,
            response.content_type,
            dict(response.headers),
            await response.json(content_type=None),
        )


async def test_a_good_token_reaches_the_handler_with_its_claims(consumer: Consumer) -> None:
    sid = uuid.uuid4().hex
    status, _, _, body = await get(consumer.url + "/me", f"Bearer {consumer.key.sign(sid=sid)}")
    assert (status, body) == (200, {"user": "42", "session": sid})


async def test_an_open_path_needs_no_token(consumer: Consumer) -> None:
    assert (await get(consumer.url + "/health", None))[0] == 200


async def test_each_refusal_is_warden_s_401_problem(consumer: Consumer) -> None:
    sid = uuid.uuid4().hex
    consumer.revoked.revoke(sid, time.time() + 60)
    cases = [
        (None, "missing_token", "Bearer"),
        ("", "missing_token", "Bearer"),
        ("Basic dXNlcjpwYXNz", "invalid_token", 'Bearer error="invalid_token"'),
        ("Bearer ", "invalid_token", None),
        ("Bearer", "invalid_token", None),
        ("Bearer not.a.token", "invalid_token", 'Bearer error="invalid_token"'),
        (f"Bearer {consumer.key.sign(exp=int(time.time()) - 60)}", "token_expired", None),
        (f"Bearer {consumer.key.sign(sid=sid)}", "token_revoked", None),
        (f"Bearer {SigningKey('EdDSA').sign()}", "invalid_token", None),
    ]
    for authorization, code, challenge in cases:
        status, content_type, headers, body = await get(consumer.url + "/me", authorization)
        assert (status, content_type) == (401, PROBLEM_JSON), authorization
        assert isinstance(body, dict)
        assert set(body) == PROBLEM_FIELDS
        assert (body["code"], body["status"]) == (code, 401)
        assert body["type"].endswith("/" + code)
        expected = challenge or 'Bearer error="invalid_token"'
        assert headers["WWW-Authenticate"] == expected, authorization


async def test_without_a_key_set_the_answer_is_503_not_a_refusal() -> None:
    """Warden unreachable since the start: the token is neither good nor bad yet."""
    keys = await KeySetServer(SigningKey("EdDSA")).start()
    keys.failing = True
    app = web.Application(middlewares=[warden_auth(Verifier(keys.jwks_url, issuer=ISSUER))])
    app.router.add_get("/me", whoami)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        token = keys.keys[0].sign()
        status, content_type, headers, body = await get(
            str(server.make_url("/me")), f"Bearer {token}"
        )
        assert (status, content_type) == (503, PROBLEM_JSON)
        assert isinstance(body, dict)
        assert (body["code"], body["status"]) == ("service_unavailable", 503)
        assert "WWW-Authenticate" not in headers
    finally:
        await server.close()
        await keys.close()
