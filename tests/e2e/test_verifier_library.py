"""The verifier library (verifier/) against a running Warden: a service that knows only
Warden's URL verifies its tokens, refuses every forgery, and hears a logout within a second.

Each test waits for the slice it needs: the published key set (signing keys, CONTRACT §6) and
the `session.revoked` event; until those are merged they are skipped, not passed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp
import pytest
from warden_verifier import RevokedSessions, Verifier
from warden_verifier.follower import SessionRevokedFollower

from contract import routes
from domain import events
from tests.e2e.test_tokens import bearer, live_pair
from tests.support.infra import Urls
from tests.support.verifier import judge_with_library
from tests.verifier.test_follower import refused_within

needs_key_set = pytest.mark.skipif(
    not hasattr(routes, "METADATA_PATH"), reason="Warden publishes no key set yet"
)
needs_session_revoked = pytest.mark.skipif(
    not hasattr(events, "SESSION_REVOKED"), reason="Warden publishes no session.revoked yet"
)


def on_this_edge(jwks_uri: str, edge_url: str) -> str:
    """The metadata's links start with WARDEN_PUBLIC_URL; the test's edge has a port of its own."""
    path = urlsplit(jwks_uri).path
    assert path == "/.well-known/jwks.json"
    return edge_url + path


@needs_key_set
async def test_a_service_that_knows_only_wardens_url_verifies_its_tokens(
    edge_url: str, http: aiohttp.ClientSession
) -> None:
    _, pair = await live_pair(http)
    verifier = await Verifier.discover_async(edge_url)
    claims = await judge_with_library(
        on_this_edge(verifier.keys.url, edge_url),
        pair["access_token"],
        issuer=verifier.issuer,
        refresh_token=pair["refresh_token"],
    )
    async with http.get("/api/v1/users/me", headers=bearer(pair["access_token"])) as r:
        assert r.status == 200
        me = await r.json()
    assert claims.user_id == str(me["id"])


@needs_key_set
@needs_session_revoked
async def test_the_follower_refuses_a_logged_out_session_within_a_second(
    edge_url: str, http: aiohttp.ClientSession, urls: Urls, warden_user: str
) -> None:
    revoked = RevokedSessions()
    discovered = await Verifier.discover_async(edge_url)
    jwks_url = on_this_edge(discovered.keys.url, edge_url)
    verifier = Verifier(jwks_url, issuer=discovered.issuer, revoked=revoked)
    follower = SessionRevokedFollower(urls.amqp, revoked, trusted_publisher=warden_user)
    async with follower:
        await follower.wait_ready()
        _, pair = await live_pair(http)
        token = pair["access_token"]
        await verifier.verify_async(token)
        async with http.post("/api/v1/auth/logout", json={}, headers=bearer(token)) as r:
            assert r.status in (200, 204), await r.text()
        # Within a second of the logout's answer (it is published after the commit).
        await refused_within(verifier, token, 1.0)
