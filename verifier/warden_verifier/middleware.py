"""An aiohttp middleware: every request (but the ones you leave open) needs a valid token.

The claims are put on the request (`request[CLAIMS]`); a refused token gets the 401 problem
details Warden's own edge answers with (`application/problem+json`, `type`, `title`,
`status`, `detail`, `code`) and an RFC 6750 `WWW-Authenticate` challenge.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from warden_verifier.claims import Claims
from warden_verifier.errors import VerificationError
from warden_verifier.verifier import Verifier, bearer_token

CLAIMS = web.RequestKey("warden_claims", Claims)
PROBLEM_JSON = "application/problem+json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_response(error: VerificationError) -> web.Response:
    """The response Warden's edge gives for `error`."""
    headers: dict[str, str] = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = (
            f'Bearer error="{error.challenge}"' if error.challenge else "Bearer"
        )
    return web.Response(
        text=json.dumps(error.as_problem()),
        status=error.status,
        content_type=PROBLEM_JSON,
        headers=headers,
    )


def warden_auth(
    verifier: Verifier, *, open_paths: Callable[[web.Request], bool] | None = None
) -> Middleware:
    """The middleware; requests for which `open_paths(request)` is true pass without a token."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if open_paths is not None and open_paths(request):
            return await handler(request)
        try:
            token = bearer_token(request.headers.get("Authorization"))
            request[CLAIMS] = await verifier.verify_async(token)
        except VerificationError as error:
            return problem_response(error)
        return await handler(request)

    return middleware
