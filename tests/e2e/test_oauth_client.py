"""A stock OAuth 2.0 client (authlib's, on httpx) against the real edge and worker.

Nothing here builds a request by hand: the client sends the password grant, the refresh
grant (RFC 6749 6) and the revocation (RFC 7009) as it would to any OAuth 2.0 server, and
reads our errors as RFC 6749 5.2's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import httpx
import jwt
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from tests.conftest import PASSWORD, fresh_ip, unique
from tests.e2e.test_sessions import admin_token
from tests.support.amqp import AmqpCaller
from tests.support.events import EventTap
from warden.bootstrap import Services, token_issuer
from warden.security import JwtTokenIssuer
from warden.settings import Settings

TOKEN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
REVOKE = "/api/v1/auth/revoke"
ME = "/api/v1/users/me"


@pytest.fixture(params=["public", "confidential"])
async def client(request: pytest.FixtureRequest, edge_url: str) -> AsyncIterator[AsyncOAuth2Client]:
    """A client as an app would make one: a public one (client_id in the body) or one with a
    secret (HTTP Basic). Warden registers no clients: both are served alike."""
    secret = "app-secret" if request.param == "confidential" else None
    async with AsyncOAuth2Client(
        client_id="some-app",
        client_secret=secret,
        base_url=edge_url,
        headers={"X-Forwarded-For": fresh_ip()},  # login limits of this test's own
    ) as oauth:
        yield oauth


async def new_user(edge_url: str) -> dict[str, Any]:
    name = unique("oauth")
    body = {"email": f"{name}@example.com", "username": name, "password": PASSWORD}
    async with httpx.AsyncClient(base_url=edge_url) as plain:
        r = await plain.post("/api/v1/users", json=body)
    assert r.status_code == 201, r.text
    user: dict[str, Any] = r.json()
    return user


async def me(edge_url: str, access_token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=edge_url) as plain:
        return await plain.get(ME, headers={"Authorization": f"Bearer {access_token}"})


def issuer(settings: Settings, worker: Services) -> JwtTokenIssuer:
    """Signs as the worker does (its signing key), for tokens a test cannot wait for."""
    return token_issuer(settings, worker.resources.key_ring)


def session_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["sid"])


async def test_a_stock_client_logs_in_refreshes_and_uses_the_new_pair(
    client: AsyncOAuth2Client, edge_url: str
) -> None:
    user = await new_user(edge_url)

    first = await client.fetch_token(TOKEN, username=user["username"], password=PASSWORD)
    second = await client.refresh_token(TOKEN, refresh_token=first["refresh_token"])

    assert second["token_type"] == "bearer"
    assert second["access_token"] != first["access_token"]
    assert session_of(second["access_token"]) == session_of(first["access_token"])
    r = await client.get(ME)  # the client sends its newest access token itself
    assert r.status_code == 200, r.text
    assert r.json()["id"] == user["id"]
    with pytest.raises(OAuthError) as spent:  # the first refresh token was spent: reuse
        await client.refresh_token(TOKEN, refresh_token=first["refresh_token"])
    assert spent.value.error == "invalid_grant"


async def test_a_stock_client_refreshes_at_the_refresh_route_too(
    client: AsyncOAuth2Client, edge_url: str
) -> None:
    user = await new_user(edge_url)
    first = await client.fetch_token(TOKEN, username=user["email"], password=PASSWORD)

    second = await client.refresh_token(REFRESH, refresh_token=first["refresh_token"])

    assert (await me(edge_url, second["access_token"])).status_code == 200


async def test_token_responses_of_both_grants_are_not_to_be_stored(edge_url: str) -> None:
    user = await new_user(edge_url)
    responses: list[httpx.Response] = []

    async def keep(response: httpx.Response) -> None:
        responses.append(response)

    hooks = {"response": [keep]}
    async with AsyncOAuth2Client(client_id="app", base_url=edge_url, event_hooks=hooks) as oauth:
        pair = await oauth.fetch_token(TOKEN, username=user["username"], password=PASSWORD)
        await oauth.refresh_token(TOKEN, refresh_token=pair["refresh_token"])
        await oauth.refresh_token(REFRESH)

    assert [r.status_code for r in responses] == [200, 200, 200]
    for response in responses:
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Pragma"] == "no-cache"


@pytest.mark.parametrize(
    ("kind", "hint"),
    [("refresh_token", "refresh_token"), ("access_token", None), ("access_token", "refresh_token")],
)
async def test_a_revoked_tokens_session_is_over_for_both_of_its_tokens(
    client: AsyncOAuth2Client, edge_url: str, kind: str, hint: str | None
) -> None:
    user = await new_user(edge_url)
    pair = await client.fetch_token(TOKEN, username=user["username"], password=PASSWORD)

    revoked = await client.revoke_token(REVOKE, token=pair[kind], token_type_hint=hint)

    assert revoked.status_code == 200
    assert revoked.content == b""
    with pytest.raises(OAuthError) as refused:
        await client.refresh_token(TOKEN, refresh_token=pair["refresh_token"])
    assert refused.value.error == "invalid_grant"
    r = await me(edge_url, pair["access_token"])
    assert (r.status_code, r.json()["code"]) == (401, "token_revoked")


async def test_a_revocation_leaves_the_users_other_sessions_alone(
    client: AsyncOAuth2Client, edge_url: str
) -> None:
    user = await new_user(edge_url)
    leaving = await client.fetch_token(TOKEN, username=user["username"], password=PASSWORD)
    staying = await client.fetch_token(TOKEN, username=user["username"], password=PASSWORD)

    revoked = await client.revoke_token(REVOKE, token=leaving["refresh_token"])

    assert revoked.status_code == 200
    assert (await me(edge_url, leaving["access_token"])).status_code == 401
    assert (await me(edge_url, staying["access_token"])).status_code == 200


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "x" * 8192],
    ids=["garbage", "three-parts", "8-KiB"],
)
async def test_revoking_anything_that_is_no_token_is_a_200_that_changes_nothing(
    client: AsyncOAuth2Client, edge_url: str, token: str
) -> None:
    user = await new_user(edge_url)
    pair = await client.fetch_token(TOKEN, username=user["username"], password=PASSWORD)

    revoked = await client.revoke_token(REVOKE, token=token)

    assert (revoked.status_code, revoked.content) == (200, b"")
    assert (await me(edge_url, pair["access_token"])).status_code == 200


async def test_revoking_a_revoked_token_again_is_a_200(
    client: AsyncOAuth2Client, edge_url: str
) -> None:
    user = await new_user(edge_url)
    pair = await client.fetch_token(TOKEN, username=user["username"], password=PASSWORD)
    await client.revoke_token(REVOKE, token=pair["access_token"])

    again = await client.revoke_token(REVOKE, token=pair["access_token"])

    assert (again.status_code, again.content) == (200, b"")


async def test_an_expired_but_genuine_token_still_ends_its_session(
    client: AsyncOAuth2Client, edge_url: str, settings: Settings, worker: Services
) -> None:
    user = await new_user(edge_url)
    pair = await client.fetch_token(TOKEN, username=user["username"], password=PASSWORD)
    long_ago = datetime.now(UTC) - timedelta(days=1)
    expired = issuer(settings, worker).issue_access(
        user["id"], session_of(pair["access_token"]), long_ago
    )
    assert (await me(edge_url, expired)).json()["code"] == "token_expired"

    await client.revoke_token(REVOKE, token=expired)

    assert (await me(edge_url, pair["access_token"])).json()["code"] == "token_revoked"


async def test_a_token_signed_for_another_user_does_not_end_someones_session(
    client: AsyncOAuth2Client, edge_url: str, settings: Settings, worker: Services
) -> None:
    victim = await new_user(edge_url)
    other = await new_user(edge_url)
    pair = await client.fetch_token(TOKEN, username=victim["username"], password=PASSWORD)
    now = datetime.now(UTC)
    crossed = issuer(settings, worker).issue_refresh(
        other["id"], session_of(pair["access_token"]), "x", now
    )

    refused = await client.revoke_token(REVOKE, token=crossed)

    assert refused.status_code == 200  # as for any token: the caller learns nothing
    assert (await me(edge_url, pair["access_token"])).status_code == 200
    # The same token signed for the session's own user does end it.
    genuine = issuer(settings, worker).issue_refresh(
        victim["id"], session_of(pair["access_token"]), "x", now
    )
    await client.revoke_token(REVOKE, token=genuine)
    assert (await me(edge_url, pair["access_token"])).status_code == 401


async def test_a_revocation_records_logged_out_with_the_session(
    client: AsyncOAuth2Client, edge_url: str, tap: EventTap
) -> None:
    user = await new_user(edge_url)
    pair = await client.fetch_token(TOKEN, username=user["username"], password=PASSWORD)

    await client.revoke_token(REVOKE, token=pair["refresh_token"])

    arrival = await tap.wait_for("user.logged_out", str(user["id"]))
    assert arrival.event["data"]["session_id"] == session_of(pair["access_token"])
    assert pair["refresh_token"] not in arrival.message.body.decode()


# --- errors, as the client reads them --------------------------------------------------------


async def test_a_wrong_password_is_invalid_grant(client: AsyncOAuth2Client, edge_url: str) -> None:
    user = await new_user(edge_url)

    with pytest.raises(OAuthError) as refused:
        await client.fetch_token(TOKEN, username=user["username"], password=PASSWORD + "!")

    assert refused.value.error == "invalid_grant"
    assert refused.value.description == "The username or password is wrong."


async def test_a_grant_warden_does_not_take_is_unsupported_grant_type(
    client: AsyncOAuth2Client,
) -> None:
    with pytest.raises(OAuthError) as refused:
        await client.fetch_token(TOKEN, grant_type="client_credentials")

    assert refused.value.error == "unsupported_grant_type"


@pytest.mark.parametrize("route", [TOKEN, REFRESH])
async def test_a_refresh_token_that_is_no_token_is_invalid_grant(
    client: AsyncOAuth2Client, route: str
) -> None:
    with pytest.raises(OAuthError) as refused:
        await client.refresh_token(route, refresh_token="not-a-token")

    assert refused.value.error == "invalid_grant"


async def test_an_access_token_is_no_refresh_token(
    client: AsyncOAuth2Client, edge_url: str
) -> None:
    user = await new_user(edge_url)
    pair = await client.fetch_token(TOKEN, username=user["username"], password=PASSWORD)

    with pytest.raises(OAuthError) as refused:
        await client.refresh_token(TOKEN, refresh_token=pair["access_token"])

    assert refused.value.error == "invalid_grant"


async def test_a_deactivated_account_is_invalid_grant(
    client: AsyncOAuth2Client, edge_url: str, http: aiohttp.ClientSession, worker: Services
) -> None:
    user = await new_user(edge_url)
    admin = await admin_token(worker, http)
    body = {"is_active": False}
    headers = {"Authorization": f"Bearer {admin}"}
    async with http.patch(f"/api/v1/users/{user['id']}", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()

    with pytest.raises(OAuthError) as refused:
        await client.fetch_token(TOKEN, username=user["username"], password=PASSWORD)

    assert refused.value.error == "invalid_grant"


async def test_another_service_revokes_over_the_queue_with_the_same_answer(
    client: AsyncOAuth2Client, edge_url: str, amqp: AmqpCaller
) -> None:
    user = await new_user(edge_url)
    pair = await client.fetch_token(TOKEN, username=user["username"], password=PASSWORD)

    assert await amqp.call("warden.auth.revoke", {"token": "garbage"}) == {"ok": True, "data": None}
    reply = await amqp.call("warden.auth.revoke", {"token": pair["access_token"]})

    assert reply == {"ok": True, "data": None}
    assert (await me(edge_url, pair["access_token"])).json()["code"] == "token_revoked"
    refused = await amqp.call("warden.auth.revoke", {"token": pair["access_token"], "x": 1})
    assert refused["error"]["code"] == "validation_error"
