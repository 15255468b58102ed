"""RFC 6749 5.2's `error` for Warden's codes, on the routes a stock OAuth 2.0 client calls.

The token endpoint, /auth/refresh and /auth/revoke answer problem details (RFC 9457) like
every route, with the contract's status and code; beside them they carry `error` (and
`error_description`, the problem's detail), which an OAuth 2.0 client reads to tell what
went wrong. The README has this table too.
"""

from __future__ import annotations

from typing import Any

# Our code -> RFC 6749's error. A grant refused for the user's sake (wrong or locked
# credentials, a deactivated account, a refresh token that is no good any more) is
# `invalid_grant`: the client can do nothing but ask its user again. The status stays ours
# (401, 403, 429 with Retry-After): RFC 6749 would answer 400.
ERRORS: dict[str, str] = {
    "invalid_credentials": "invalid_grant",
    "inactive_user": "invalid_grant",
    "too_many_attempts": "invalid_grant",
    "invalid_token": "invalid_grant",
    "token_expired": "invalid_grant",
    "token_revoked": "invalid_grant",
    "token_reused": "invalid_grant",
    "unsupported_grant_type": "unsupported_grant_type",
    "validation_error": "invalid_request",
    "malformed_json": "invalid_request",
    "malformed_message": "invalid_request",
    "unsupported_media_type": "invalid_request",
    "payload_too_large": "invalid_request",
    "idempotency_key_reused": "invalid_request",
    "idempotency_key_in_use": "invalid_request",
    "service_unavailable": "temporarily_unavailable",
    "upstream_timeout": "temporarily_unavailable",
    "internal_error": "server_error",
}
# RFC 6749 5.2: error_description is these characters only (no '"' or '\\', ASCII).
_DESCRIPTION_CHARS = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def error_of(code: str, status: int) -> str:
    """RFC 6749's error for one of our codes; for any other, by its status."""
    if code in ERRORS:
        return ERRORS[code]
    return "server_error" if status >= 500 else "invalid_request"


def oauth_fields(problem: dict[str, Any]) -> dict[str, str]:
    """`error` and `error_description` for a problem's body."""
    detail = str(problem.get("detail", ""))
    description = "".join(c if c in _DESCRIPTION_CHARS else "?" for c in detail)
    fields = {"error": error_of(str(problem.get("code")), int(problem.get("status", 500)))}
    if description:
        fields["error_description"] = description
    return fields
