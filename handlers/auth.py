"""Subscribers of the auth queues: log in, refresh, log out, revoke, introspect, the key set."""

from __future__ import annotations

from typing import Any

from faststream.rabbit import RabbitRouter

from contract.wire import (
    Empty,
    IntrospectRequest,
    JwksOut,
    LoginRequest,
    RefreshRequest,
    RevokeRequest,
    dump,
)
from domain.auth import Auth, LogIn
from domain.errors import TokenRevoked
from domain.model import Introspection, TokenPair
from handlers.deps import WorkerDeps
from handlers.envelope import Call, no_content
from handlers.idempotency import Envelope, Replay
from handlers.views import introspection_body, token_body


def router(deps: WorkerDeps) -> RabbitRouter:
    r = RabbitRouter()
    auth = deps.auth

    @deps.rpc(r, "warden.auth.login", bcrypt=True, reply=token_body, replay=login_replay(auth))
    async def login(call: Call[LoginRequest]) -> TokenPair:
        """Log in with a username (or email) and password; opens a session."""
        body = call.body
        return await auth.using(call.units).login(LogIn(body.username, body.password, call.origin))

    @deps.rpc(r, "warden.auth.refresh", reply=token_body, replay=refresh_replay(auth))
    async def refresh(call: Call[RefreshRequest]) -> TokenPair:
        """Spend a refresh token for a new token pair of the same session."""
        return await auth.using(call.units).refresh(call.body.refresh_token)

    @deps.rpc(r, "warden.auth.logout", reply=no_content)
    async def logout(call: Call[Empty]) -> None:
        """End the caller's session (bearer)."""
        await auth.using(call.units).logout(await auth.authenticate(call.authorization))

    @deps.rpc(r, "warden.auth.revoke", reply=no_content)
    async def revoke(call: Call[RevokeRequest]) -> None:
        """RFC 7009: end the session of an access or refresh token, whoever holds it."""
        await auth.using(call.units).revoke(call.body.token)

    @deps.rpc(r, "warden.auth.introspect", reply=introspection_body, replay=introspect_replay)
    async def introspect(call: Call[IntrospectRequest]) -> Introspection:
        """RFC 7662 introspection of an access token, for other services."""
        return await auth.introspect(call.body.token)

    @deps.rpc(r, "warden.auth.jwks")
    async def jwks(call: Call[Empty]) -> dict[str, Any]:
        """The published key set (RFC 7517), as this worker's ring holds it."""
        return dump(JwksOut, deps.jwks())

    return r


# A kept token pair is a live credential: a repeat gets it only while it is still what its
# session accepts (see Auth.is_current). Otherwise nothing dead is handed out as live:


def login_replay(auth: Auth) -> Replay:
    """A repeated login gets its pair, or 401 token_revoked once that pair is no longer live."""

    async def replay(reply: Envelope) -> Envelope:
        if reply["ok"] and not await auth.is_current(reply["data"]["refresh_token"]):
            raise TokenRevoked(
                "The session this login opened has ended, or its pair was refreshed since: "
                "log in again with a new Idempotency-Key."
            )
        return reply

    return replay


def refresh_replay(auth: Auth) -> Replay:
    """A repeated refresh gets its pair while that is live; else the refresh is done again, so
    a spent refresh token is reuse (401 token_reused, the session revoked) as without a key."""

    async def replay(reply: Envelope) -> Envelope | None:
        if reply["ok"] and not await auth.is_current(reply["data"]["refresh_token"]):
            return None
        return reply

    return replay


async def introspect_replay(reply: Envelope) -> Envelope | None:
    """An inactive answer stays true (a dead token never comes back); an active one is asked
    again, so a repeat never vouches for a token revoked since, or for stale rights."""
    if reply["ok"] and reply["data"]["active"]:
        return None
    return reply
