"""The catalogue of RPC queues: for each, its request and reply model, who may call it and
the errors a reply may carry, written once.

The worker subscribes to exactly these queues and parses each request with its model; the
edge's routes name them; both interface documents (the AsyncAPI document of the worker, the
OpenAPI document of the edge, whose per-route error table is derived from `errors`) are
generated from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from contract import wire
from contract.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    MalformedMessage,
    PayloadTooLarge,
)
from domain.errors import (
    EmailNotVerified,
    EmailTaken,
    Forbidden,
    InactiveUser,
    InternalError,
    InvalidCredentials,
    InvalidEmailToken,
    InvalidMfaCode,
    InvalidToken,
    LastSuperuser,
    MfaAlreadyEnabled,
    MfaNotEnrolled,
    MfaRequired,
    MissingToken,
    ServiceUnavailable,
    SessionNotFound,
    TokenExpired,
    TokenReused,
    TokenRevoked,
    TooManyAttempts,
    UpstreamTimeout,
    UsernameTaken,
    UserNotFound,
    ValidationFailed,
    WardenError,
    WrongPassword,
)

Errors = tuple[type[WardenError], ...]
# Who may call, as the contract says.
Caller = Literal[
    "anyone",
    "any service",
    "bearer",
    "superuser",
    "superuser or self",
    "the edge's readiness check",
]

PING_QUEUE = "warden.ping"

# What any request may be answered with, whatever its queue: a body that is no JSON object
# of the queue's shape, one over the size limit, a deadline or a dependency missed, a fault.
EVERY_QUEUE: Errors = (
    ValidationFailed,
    MalformedMessage,
    PayloadTooLarge,
    UpstreamTimeout,
    ServiceUnavailable,
    InternalError,
)
# A request with an Idempotency-Key: the key reused with another body, or still at work.
IDEMPOTENCY: Errors = (IdempotencyKeyReused, IdempotencyKeyInUse)
# A bearer token missing, bad, expired or revoked; then a caller without the right.
BEARER: Errors = (MissingToken, InvalidToken, TokenExpired, TokenRevoked)
CALLER_ERRORS: dict[Caller, Errors] = {
    "anyone": (),
    "any service": (),
    "the edge's readiness check": (),
    "bearer": BEARER,
    "superuser": (*BEARER, Forbidden),
    "superuser or self": (*BEARER, Forbidden),
}


@dataclass(frozen=True)
class RpcSpec:
    request: type[BaseModel]
    reply: type[BaseModel] | None  # None: the reply's data is null (HTTP 204)
    caller: Caller
    errors: Errors = ()  # what the use case answers, beside EVERY_QUEUE's and the caller's
    idempotent: bool = True  # an Idempotency-Key makes a repeat get the first reply

    @property
    def bearer(self) -> bool:
        """Whether a call needs a bearer token."""
        return bool(CALLER_ERRORS[self.caller])

    @property
    def every_error(self) -> Errors:
        """Every error a reply of this queue may carry, each once."""
        kinds = (
            *EVERY_QUEUE,
            *(IDEMPOTENCY if self.idempotent else ()),
            *CALLER_ERRORS[self.caller],
            *self.errors,
        )
        return tuple(dict.fromkeys(kinds))


RPC: dict[str, RpcSpec] = {
    "warden.users.register": RpcSpec(
        wire.RegisterRequest,
        wire.UserOut,
        "anyone",
        # TooManyAttempts: too many registrations from one address.
        (EmailTaken, UsernameTaken, TooManyAttempts),
    ),
    "warden.auth.login": RpcSpec(
        wire.LoginRequest,
        wire.TokenPairOut,
        "anyone",
        # TokenRevoked: a repeat whose kept pair is no longer live. EmailNotVerified: with
        # WARDEN_REQUIRE_VERIFIED_EMAIL, the right password of an unverified account.
        (
            InvalidCredentials,
            InactiveUser,
            TooManyAttempts,
            MfaRequired,
            TokenRevoked,
            EmailNotVerified,
        ),
    ),
    "warden.auth.mfa": RpcSpec(
        wire.MfaLoginRequest,
        wire.TokenPairOut,
        "anyone",
        # InvalidToken: an mfa_token unknown, expired, spent, dead after five wrong codes or
        # from another address. TooManyAttempts: the account is locked. TokenRevoked: a
        # repeat whose kept pair is no longer live.
        (InvalidToken, InvalidMfaCode, InactiveUser, TooManyAttempts, TokenRevoked),
    ),
    "warden.mfa.enroll": RpcSpec(
        wire.Empty, wire.TotpEnrollmentOut, "bearer", (MfaAlreadyEnabled,)
    ),
    "warden.mfa.confirm": RpcSpec(
        wire.MfaCodeRequest,
        wire.RecoveryCodesOut,
        "bearer",
        (InvalidMfaCode, MfaNotEnrolled, MfaAlreadyEnabled),
    ),
    "warden.mfa.disable": RpcSpec(
        wire.DisableMfaRequest,
        None,
        "bearer",
        # TooManyAttempts: an account locked by wrong passwords or codes.
        (WrongPassword, TooManyAttempts),
    ),
    "warden.auth.refresh": RpcSpec(
        wire.RefreshRequest,
        wire.TokenPairOut,
        "anyone",
        (InvalidToken, TokenExpired, TokenRevoked, TokenReused),
    ),
    "warden.auth.logout": RpcSpec(wire.Empty, None, "bearer"),
    # RFC 7009: the same reply whether or not the token was any good, so it has no errors of
    # its own. A repeat with the same Idempotency-Key gets the kept (empty) reply.
    "warden.auth.revoke": RpcSpec(wire.RevokeRequest, None, "anyone"),
    "warden.auth.introspect": RpcSpec(wire.IntrospectRequest, wire.IntrospectionOut, "any service"),
    "warden.auth.jwks": RpcSpec(wire.Empty, wire.JwksOut, "anyone", idempotent=False),
    "warden.users.me": RpcSpec(wire.Empty, wire.UserOut, "bearer"),
    "warden.users.update_me": RpcSpec(
        wire.UpdateMeRequest, wire.UserOut, "bearer", (EmailTaken, UsernameTaken, UserNotFound)
    ),
    "warden.users.change_password": RpcSpec(
        wire.ChangePasswordRequest,
        None,
        "bearer",
        # TooManyAttempts: an account locked by wrong passwords, here or at login.
        (WrongPassword, TooManyAttempts),
    ),
    "warden.users.list": RpcSpec(wire.ListUsersQuery, wire.UserPageOut, "superuser"),
    "warden.users.get": RpcSpec(
        wire.UserIdMessage, wire.UserOut, "superuser or self", (UserNotFound,)
    ),
    "warden.users.update": RpcSpec(
        wire.UpdateUserMessage,
        wire.UserOut,
        "superuser",
        (UserNotFound, EmailTaken, UsernameTaken, LastSuperuser),
    ),
    "warden.users.delete": RpcSpec(
        wire.UserIdMessage, None, "superuser", (UserNotFound, LastSuperuser)
    ),
    "warden.audit.list": RpcSpec(wire.AuditListQuery, wire.AuditPageOut, "superuser"),
    # CONTRACT §7. The two requests answer the same 202 whatever the address.
    "warden.auth.request_verification": RpcSpec(wire.EmailRequest, wire.AcceptedOut, "anyone"),
    "warden.auth.verify": RpcSpec(
        wire.VerifyEmailRequest, wire.UserOut, "anyone", (InvalidEmailToken,)
    ),
    "warden.auth.forgot_password": RpcSpec(wire.EmailRequest, wire.AcceptedOut, "anyone"),
    "warden.auth.reset_password": RpcSpec(
        wire.ResetPasswordRequest, None, "anyone", (InvalidEmailToken,)
    ),
    "warden.sessions.list": RpcSpec(wire.Empty, wire.SessionListOut, "bearer"),
    "warden.sessions.revoke": RpcSpec(wire.SessionIdMessage, None, "bearer", (SessionNotFound,)),
    "warden.sessions.revoke_others": RpcSpec(wire.Empty, None, "bearer"),
    "warden.users.revoke_sessions": RpcSpec(wire.UserIdMessage, None, "superuser", (UserNotFound,)),
    PING_QUEUE: RpcSpec(wire.Empty, wire.PingOut, "the edge's readiness check", idempotent=False),
}
