"""RFC 9457 problem details: the edge's only error shape."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from contract.errors import every_error
from contract.oauth import oauth_fields
from domain.errors import BearerError, WardenError

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://warden.dev/problems/"
# A bearer failure's code -> its RFC 6750 challenge, as each error states it (BearerError
# itself names no code of its own).
# Extension members (RFC 9457 §3.2) an error may carry beside the standard ones.
EXTENSIONS = ("errors", "mfa_token")
_CHALLENGES = {
    e.code: e.challenge
    for e in every_error()
    if issubclass(e, BearerError) and "code" in vars(e) and e.challenge
}


def problem_from_error(error: dict[str, Any], oauth: bool = False) -> web.Response:
    """The HTTP response for an RPC envelope's `error` (or a local WardenError's); `oauth`
    adds RFC 6749 5.2's `error` and `error_description` to the problem's fields."""
    status = int(error.get("status", 500))
    body: dict[str, Any] = {
        "type": TYPE_BASE + str(error.get("code", "internal_error")),
        "title": error.get("title", "Error"),
        "status": status,
        "detail": error.get("detail", ""),
        "code": error.get("code", "internal_error"),
    }
    for member in EXTENSIONS:
        if member in error:
            body[member] = error[member]
    if oauth:
        body |= oauth_fields(body)
    headers: dict[str, str] = {}
    if status == 401:
        challenge = _CHALLENGES.get(body["code"])
        headers["WWW-Authenticate"] = f'Bearer error="{challenge}"' if challenge else "Bearer"
    if "retry_after" in error:
        headers["Retry-After"] = str(int(error["retry_after"]))
    return web.Response(
        body=orjson.dumps(body), status=status, content_type=PROBLEM_JSON, headers=headers
    )


def problem(exc: WardenError, oauth: bool = False) -> web.Response:
    return problem_from_error(exc.as_error(), oauth)
