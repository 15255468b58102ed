"""Subscribers of the second factor's queues: enrol, confirm, disable TOTP; finish a login."""

from __future__ import annotations

from typing import Any

from faststream.rabbit import RabbitRouter

from contract.wire import (
    DisableMfaRequest,
    Empty,
    MfaCodeRequest,
    MfaLoginRequest,
    RecoveryCodesOut,
    TotpEnrollmentOut,
    dump,
)
from domain.mfa import Enrollment, MfaLogIn
from domain.model import TokenPair
from handlers.auth import login_replay
from handlers.deps import WorkerDeps
from handlers.envelope import Call, no_content
from handlers.views import token_body


def enrollment_body(enrollment: Enrollment) -> dict[str, Any]:
    return dump(TotpEnrollmentOut, enrollment)


def recovery_codes_body(codes: list[str]) -> dict[str, Any]:
    return dump(RecoveryCodesOut, {"recovery_codes": codes})


def router(deps: WorkerDeps) -> RabbitRouter:
    r = RabbitRouter()
    auth, mfa = deps.auth, deps.mfa

    @deps.rpc(r, "warden.auth.mfa", reply=token_body, replay=login_replay(auth))
    async def log_in(call: Call[MfaLoginRequest]) -> TokenPair:
        """Finish a login with its mfa_token and a TOTP or recovery code; opens a session."""
        b = call.body
        return await mfa.using(call.units).log_in(MfaLogIn(b.mfa_token, b.code, call.origin))

    @deps.rpc(r, "warden.mfa.enroll", reply=enrollment_body)
    async def enroll(call: Call[Empty]) -> Enrollment:
        """Start a TOTP enrolment: a new secret, pending until confirmed (bearer)."""
        principal = await auth.authenticate(call.authorization)
        return await mfa.using(call.units).enroll(principal)

    @deps.rpc(r, "warden.mfa.confirm", reply=recovery_codes_body)
    async def confirm(call: Call[MfaCodeRequest]) -> list[str]:
        """Confirm the pending TOTP with a current code; answers the recovery codes (bearer)."""
        principal = await auth.authenticate(call.authorization)
        return await mfa.using(call.units).confirm(principal, call.body.code)

    @deps.rpc(r, "warden.mfa.disable", bcrypt=True, reply=no_content)
    async def disable(call: Call[DisableMfaRequest]) -> None:
        """Turn TOTP off with the account's password (bearer)."""
        principal = await auth.authenticate(call.authorization)
        await mfa.using(call.units).disable(principal, call.body.password)

    return r
