"""Subscribers of the session queues: a user's own sessions, and a superuser ending a user's."""

from __future__ import annotations

from typing import Any

from faststream.rabbit import RabbitRouter

from contract.wire import Empty, SessionIdMessage, UserIdMessage
from handlers.deps import WorkerDeps
from handlers.envelope import Call, no_content
from handlers.views import session_list_body


def router(deps: WorkerDeps) -> RabbitRouter:
    r = RabbitRouter()
    auth, accounts, sessions = deps.auth, deps.accounts, deps.sessions

    @deps.rpc(r, "warden.sessions.list")
    async def list_sessions(call: Call[Empty]) -> dict[str, Any]:
        """The caller's live sessions, the current one marked (bearer)."""
        principal = await auth.authenticate(call.authorization)
        return session_list_body(await sessions.list_mine(principal))

    @deps.rpc(r, "warden.sessions.revoke", reply=no_content)
    async def revoke(call: Call[SessionIdMessage]) -> None:
        """End one of the caller's sessions; another user's id is not found (bearer)."""
        principal = await auth.authenticate(call.authorization)
        await sessions.using(call.units).revoke_mine(principal, call.body.id)

    @deps.rpc(r, "warden.sessions.revoke_others", reply=no_content)
    async def revoke_others(call: Call[Empty]) -> None:
        """End every session of the caller but the one it calls with (bearer)."""
        principal = await auth.authenticate(call.authorization)
        await sessions.using(call.units).revoke_others(principal)

    @deps.rpc(r, "warden.users.revoke_sessions", reply=no_content)
    async def revoke_sessions(call: Call[UserIdMessage]) -> None:
        """End every session of a user (superuser)."""
        principal = await auth.authenticate(call.authorization)
        await accounts.using(call.units).revoke_sessions(principal, call.body.id)

    return r
