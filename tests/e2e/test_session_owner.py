"""A session belongs to one user: a token whose `sub` is not its session's user is refused.

The tokens here are what a holder of the signing key could make (signed with the test
settings' secret, by PyJWT directly): rightly signed, naming a live session, but another
user. Over HTTP and over raw AMQP, for the bearer check, introspection and refresh.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import jwt

from tests.conftest import PASSWORD
from tests.e2e.test_sessions import new_user
from tests.support.amqp import AmqpCaller
from tests.support.tokens import sign_as_warden
from warden.bootstrap import Services
from warden.settings import Settings

Answer = tuple[int, str | None]


def claims_of(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def signed(settings: Settings, worker: Services, claims: dict[str, Any]) -> str:
    """A token made with the service's own key: valid in every way but whose it says it is."""
    return sign_as_warden(settings, worker, claims)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def signed_in(http: aiohttp.ClientSession) -> tuple[int, dict[str, Any]]:
    """A new user's id and the token pair of a live session of theirs."""
    user_id, name = await new_user(http)
    async with http.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD}) as r:
        assert r.status == 200, await r.text()
        return user_id, dict(await r.json())


async def me(http: aiohttp.ClientSession, access: str) -> Answer:
    async with http.get("/api/v1/users/me", headers=bearer(access)) as r:
        body = await r.json(content_type=None)
        return r.status, body.get("code") if r.status != 200 else body["username"]


async def refresh(http: aiohttp.ClientSession, token: str) -> Answer:
    async with http.post("/api/v1/auth/refresh", json={"refresh_token": token}) as r:
        body = await r.json(content_type=None)
        return r.status, body.get("code")


def failure(reply: dict[str, Any]) -> Answer:
    assert reply["ok"] is False, reply
    return reply["error"]["status"], reply["error"]["code"]


async def test_an_access_token_for_another_user_with_ones_own_session_is_refused(
    http: aiohttp.ClientSession, amqp: AmqpCaller, settings: Settings, worker: Services
) -> None:
    victim_id, _ = await new_user(http)
    _, mallory = await signed_in(http)
    claims = claims_of(mallory["access_token"])
    forged = signed(settings, worker, claims | {"sub": str(victim_id), "jti": uuid.uuid4().hex})

    assert await me(http, forged) == (401, "token_revoked")
    assert failure(await amqp.call("warden.users.me", {}, token=forged)) == (401, "token_revoked")
    reply = await amqp.call("warden.auth.introspect", {"token": forged})
    assert reply == {"ok": True, "data": {"active": False}}
    # Mallory's own token, on the same session, still works: only the forged one is refused.
    assert (await me(http, mallory["access_token"]))[0] == 200


async def test_a_refresh_token_for_another_user_with_ones_own_session_is_refused(
    http: aiohttp.ClientSession, amqp: AmqpCaller, settings: Settings, worker: Services
) -> None:
    victim_id, _ = await new_user(http)
    _, mallory = await signed_in(http)
    forged = signed(settings, worker, claims_of(mallory["refresh_token"]) | {"sub": str(victim_id)})

    assert await refresh(http, forged) == (401, "token_revoked")
    reply = await amqp.call("warden.auth.refresh", {"refresh_token": forged})
    assert failure(reply) == (401, "token_revoked")
    # Not rotated by the forgery: mallory's refresh token is still the one her session takes.
    assert (await refresh(http, mallory["refresh_token"]))[0] == 200


async def test_a_refresh_token_naming_another_users_session_neither_rotates_nor_revokes_it(
    http: aiohttp.ClientSession, amqp: AmqpCaller, settings: Settings, worker: Services
) -> None:
    _, victim = await signed_in(http)
    mallory_id, _ = await new_user(http)
    claims = claims_of(victim["refresh_token"]) | {"sub": str(mallory_id)}
    # With the session's current refresh id (it would rotate) and a spent one (reuse: revoke).
    current, spent = (
        signed(settings, worker, claims),
        signed(settings, worker, claims | {"jti": "spent"}),
    )

    assert await refresh(http, current) == (401, "token_revoked")
    assert await refresh(http, spent) == (401, "token_revoked")
    for token in (current, spent):
        reply = await amqp.call("warden.auth.refresh", {"refresh_token": token})
        assert failure(reply) == (401, "token_revoked")
    # The owner's session is untouched: its access token works, its refresh token rotates.
    assert (await me(http, victim["access_token"]))[0] == 200
    assert (await refresh(http, victim["refresh_token"]))[0] == 200
