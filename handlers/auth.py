"""Subscribers of the auth queues: log in, refresh, log out, introspect."""

from __future__ import annotations

from typing import Any

from faststream.rabbit import RabbitRouter

from domain.auth import LogIn
from handlers.app import WorkerDeps
from handlers.rpc import Call
from handlers.views import introspection_body, token_body
from handlers.wire import Empty, IntrospectRequest, LoginRequest, RefreshRequest


def router(deps: WorkerDeps) -> RabbitRouter:
    r = RabbitRouter()
    auth = deps.auth

    @deps.rpc(r, "warden.auth.login", bcrypt=True)
    async def login(call: Call[LoginRequest]) -> dict[str, Any]:
        """Log in with a username (or email) and password; opens a session."""
        body = call.body
        return token_body(await auth.login(LogIn(body.username, body.password, call.origin)))

    @deps.rpc(r, "warden.auth.refresh")
    async def refresh(call: Call[RefreshRequest]) -> dict[str, Any]:
        """Spend a refresh token for a new token pair of the same session."""
        return token_body(await auth.refresh(call.body.refresh_token))

    @deps.rpc(r, "warden.auth.logout")
    async def logout(call: Call[Empty]) -> None:
        """End the caller's session (bearer)."""
        await auth.logout(await auth.authenticate(call.authorization))

    @deps.rpc(r, "warden.auth.introspect")
    async def introspect(call: Call[IntrospectRequest]) -> dict[str, Any]:
        """RFC 7662 introspection of an access token, for other services."""
        return introspection_body(await auth.introspect(call.body.token))

    return r
