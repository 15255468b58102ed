"""Subscribers of account recovery by email: ask for a mail, spend its token (CONTRACT §7)."""

from __future__ import annotations

from typing import Any

from faststream.rabbit import RabbitRouter

from contract.wire import AcceptedOut, EmailRequest, ResetPasswordRequest, VerifyEmailRequest, dump
from domain.model import User
from domain.recovery import Recovery, ResetPassword
from handlers.background import Background
from handlers.deps import WorkerDeps
from handlers.envelope import Call, no_content
from handlers.views import user_body


def accepted(_: object) -> dict[str, Any]:
    """The one 202 body of both requests, whoever asks: it says nothing about the address."""
    return dump(AcceptedOut, {})


def router(deps: WorkerDeps, recovery: Recovery, background: Background) -> RabbitRouter:
    """The two requests answer before their work (handlers.background): the same 202, in the
    same time, whatever the address."""
    r = RabbitRouter()

    @deps.rpc(r, "warden.auth.request_verification", reply=accepted)
    async def request_verification(call: Call[EmailRequest]) -> None:
        """Mail a verification link to the address if it is an unverified account's (anyone)."""
        work = recovery.using(call.units).request_verification(str(call.body.email))
        await background.run(work, "request_verification")

    @deps.rpc(r, "warden.auth.verify", reply=user_body)
    async def verify(call: Call[VerifyEmailRequest]) -> User:
        """Spend a verification mail's token: the account's email is verified (anyone)."""
        return await recovery.using(call.units).verify(call.body.token)

    @deps.rpc(r, "warden.auth.forgot_password", reply=accepted)
    async def forgot_password(call: Call[EmailRequest]) -> None:
        """Mail a password reset link to the address if it is an active account's (anyone)."""
        work = recovery.using(call.units).forgot_password(str(call.body.email))
        await background.run(work, "forgot_password")

    @deps.rpc(r, "warden.auth.reset_password", bcrypt=True, reply=no_content, changes=True)
    async def reset_password(call: Call[ResetPasswordRequest]) -> None:
        """Set a new password with a reset mail's token; every session ends (anyone)."""
        b = call.body
        await recovery.using(call.units).reset_password(ResetPassword(b.token, b.new_password))

    return r
