"""The business facts Warden answers with, and the failures of what it depends on.

Each carries its contract code and status once; the edge and the worker both translate them
to the reply envelope / problem details, and neither keeps a table of its own. Refusals of a
request's form (its encoding, size, route, Idempotency-Key) are transport errors, in
contract/errors.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldError:
    """One invalid input field, in the shape of the contract's `errors` items."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class WardenError(Exception):
    """A failure with a contract code; its message is the human-readable `detail`."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"
    default_detail: ClassVar[str] = "An unexpected error occurred."

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)

    def as_error(self) -> dict[str, Any]:
        """The `error` object of the RPC envelope."""
        return {
            "status": self.status,
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
        }


class InternalError(WardenError):
    """A fault that names no internals."""


class ValidationFailed(WardenError):
    """The input does not have the required shape."""

    status = 422
    code = "validation_error"
    title = "Validation error"
    default_detail = "The request is not valid."

    def __init__(self, errors: Sequence[FieldError] = (), detail: str | None = None) -> None:
        super().__init__(detail)
        # Every 422 names at least one offending input: the body itself if nothing finer.
        self.errors = tuple(errors) or (FieldError(("body",), self.detail, "value_error"),)

    def as_error(self) -> dict[str, Any]:
        error = super().as_error()
        error["errors"] = [e.as_dict() for e in self.errors]
        return error


class EmailTaken(WardenError):
    """Another user already has this email."""

    status = 409
    code = "email_taken"
    title = "Email taken"
    default_detail = "A user with this email already exists."


class UsernameTaken(WardenError):
    """Another user already has this username."""

    status = 409
    code = "username_taken"
    title = "Username taken"
    default_detail = "A user with this username already exists."


class InvalidCredentials(WardenError):
    """Unknown user or wrong password; the two are never told apart."""

    status = 401
    code = "invalid_credentials"
    title = "Invalid credentials"
    default_detail = "The username or password is wrong."


class InactiveUser(WardenError):
    """The account is deactivated."""

    status = 403
    code = "inactive_user"
    title = "Inactive user"
    default_detail = "This account is deactivated."


class TooManyAttempts(WardenError):
    """Too many failed logins (or registrations) for this account or address in the window."""

    status = 429
    code = "too_many_attempts"
    title = "Too many attempts"
    default_detail = "Too many failed logins; try again later."

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(detail)
        self.retry_after = max(1, math.ceil(retry_after))

    def as_error(self) -> dict[str, Any]:
        error = super().as_error()
        error["retry_after"] = self.retry_after
        return error


class WrongPassword(WardenError):
    """The current password given for a password change is wrong."""

    status = 400
    code = "wrong_password"
    title = "Wrong password"
    default_detail = "The current password is wrong."


class BearerError(WardenError):
    """A failure of bearer authentication (answered with WWW-Authenticate)."""

    status = 401
    # RFC 6750's error code in the WWW-Authenticate challenge: a token was given and is no
    # good, whatever the reason. None: a bare challenge (no token was given at all).
    challenge: ClassVar[str | None] = "invalid_token"


class MissingToken(BearerError):
    """No Authorization header."""

    challenge = None
    code = "missing_token"
    title = "Missing token"
    default_detail = "This operation needs a bearer token."


class InvalidToken(BearerError):
    """The token is not a valid access token of this service."""

    code = "invalid_token"
    title = "Invalid token"
    default_detail = "The token is not valid."


class TokenExpired(BearerError):
    """The token's lifetime is over."""

    code = "token_expired"
    title = "Token expired"
    default_detail = "The token has expired."


class TokenRevoked(BearerError):
    """The token's session was ended (logout, reuse, password change, deactivation)."""

    code = "token_revoked"
    title = "Token revoked"
    default_detail = "The token has been revoked."


class TokenReused(BearerError):
    """A spent refresh token was presented again; its session is now revoked."""

    code = "token_reused"
    title = "Token reused"
    default_detail = "This refresh token was already used; the session has been revoked."


class Forbidden(WardenError):
    """The caller may not do this."""

    status = 403
    code = "forbidden"
    title = "Forbidden"
    default_detail = "You are not allowed to do this."


class UserNotFound(WardenError):
    """No user has this id."""

    status = 404
    code = "user_not_found"
    title = "User not found"
    default_detail = "No user has this id."


class SessionNotFound(WardenError):
    """The caller has no live session with this id (another user's is not the caller's)."""

    status = 404
    code = "session_not_found"
    title = "Session not found"
    default_detail = "You have no live session with this id."


class LastSuperuser(WardenError):
    """The change would leave no active superuser."""

    status = 409
    code = "last_superuser"
    title = "Last superuser"
    default_detail = "This would leave no active superuser."


class InvalidEmailToken(WardenError):
    """A mail's token that is unknown, already used, expired, or no longer the account's."""

    status = 400
    code = "invalid_email_token"
    title = "Invalid email token"
    default_detail = "This link is not valid: it was used already, has expired, or is wrong."


class EmailNotVerified(WardenError):
    """Login refused until the account's email is verified (WARDEN_REQUIRE_VERIFIED_EMAIL)."""

    status = 403
    code = "email_not_verified"
    title = "Email not verified"
    default_detail = "Verify your email address before logging in."


class UpstreamTimeout(WardenError):
    """No reply in time: from a worker, at the edge; from the database, in the worker."""

    status = 504
    code = "upstream_timeout"
    title = "Upstream timeout"
    default_detail = "No reply from the service in time."


class ServiceUnavailable(WardenError):
    """A dependency (broker, database, Redis) cannot be reached."""

    status = 503
    code = "service_unavailable"
    title = "Service unavailable"
    default_detail = "The service is temporarily unavailable."


class MfaRequired(WardenError):
    """The password was right; the account has a second factor: finish at POST /auth/mfa.

    Carries `mfa_token`, an extension member of the problem (and of the RPC error object).
    """

    status = 403
    code = "mfa_required"
    title = "Second factor required"
    default_detail = "This account has a second factor: send a code with the mfa_token."

    def __init__(self, mfa_token: str, detail: str | None = None) -> None:
        super().__init__(detail)
        self.mfa_token = mfa_token

    def as_error(self) -> dict[str, Any]:
        error = super().as_error()
        error["mfa_token"] = self.mfa_token
        return error


class InvalidMfaCode(WardenError):
    """A TOTP code that is wrong, out of its window or already used, or a spent or unknown
    recovery code."""

    status = 401
    code = "invalid_mfa_code"
    title = "Invalid code"
    default_detail = "The code is wrong, or was already used."


class MfaAlreadyEnabled(WardenError):
    """The account's TOTP is confirmed already: disable it before enrolling again."""

    status = 409
    code = "mfa_already_enabled"
    title = "Second factor already enabled"
    default_detail = "TOTP is already enabled for this account; disable it first."


class MfaNotEnrolled(WardenError):
    """There is no pending TOTP enrolment to confirm."""

    status = 409
    code = "mfa_not_enrolled"
    title = "No enrolment to confirm"
    default_detail = "Start a TOTP enrolment before confirming it."
