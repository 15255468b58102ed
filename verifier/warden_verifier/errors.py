"""Why a token was refused: each error carries the code and status Warden itself answers with.

The codes are those of Warden's contract (§5), so a service can pass a refusal on to its own
callers unchanged (`as_problem()` is the RFC 9457 body Warden's edge writes).
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_TYPE_BASE = "https://warden.dev/problems/"


class VerificationError(Exception):
    """A token was not accepted; `code` says why in Warden's words."""

    status: ClassVar[int] = 401
    code: ClassVar[str] = "invalid_token"
    title: ClassVar[str] = "Invalid token"
    default_detail: ClassVar[str] = "The token is not valid."
    # RFC 6750's error in the WWW-Authenticate challenge; None: a bare challenge.
    challenge: ClassVar[str | None] = "invalid_token"

    def __init__(self, detail: str | None = None) -> None:
        self.detail = detail or self.default_detail
        super().__init__(self.detail)

    def as_problem(self) -> dict[str, Any]:
        """The RFC 9457 problem details Warden's edge answers with for this error."""
        return {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }


class MissingToken(VerificationError):
    """No bearer token was given."""

    code = "missing_token"
    title = "Missing token"
    default_detail = "This operation needs a bearer token."
    challenge = None


class InvalidToken(VerificationError):
    """The token is not a valid access token of this Warden."""


class TokenExpired(VerificationError):
    """The token's lifetime is over."""

    code = "token_expired"
    title = "Token expired"
    default_detail = "The token has expired."


class TokenRevoked(VerificationError):
    """The token's session was ended (Warden published `session.revoked` for it)."""

    code = "token_revoked"
    title = "Token revoked"
    default_detail = "The token has been revoked."


class KeySetUnavailable(VerificationError):
    """No key set could be had from Warden yet: the token can be judged neither way."""

    status = 503
    code = "service_unavailable"
    title = "Service unavailable"
    default_detail = "The token cannot be checked now: Warden's key set is unreachable."
    challenge = None
