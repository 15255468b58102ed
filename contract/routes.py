"""The HTTP routes: each is a translation to one RPC queue of the catalogue.

The edge registers exactly these; its OpenAPI document describes them. Method, path, queue
and success status are the contract's; `body` says where the RPC body comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BodyKind = Literal["json", "optional_json", "login", "query", "none"]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    queue: str
    success: int = 200
    body: BodyKind = "json"
    tokens: bool = False  # a TokenPair reply: Cache-Control: no-store
    location: bool = False  # a created User: Location: USER_LOCATION
    summary: str = ""


API = "/api/v1"
ID = "{id:[0-9]{1,18}}"
SID = "{sid:[A-Za-z0-9_-]{1,64}}"  # a session id, as wire.SESSION_ID_PATTERN
# Where a user is read: the Location of a created one.
USER_LOCATION = API + "/users/{id}"

ROUTES: tuple[Route, ...] = (
    Route(
        "POST",
        f"{API}/users",
        "warden.users.register",
        201,
        location=True,
        summary="Register a user",
    ),
    Route(
        "POST",
        f"{API}/auth/login",
        "warden.auth.login",
        body="login",
        tokens=True,
        summary="Log in (JSON or OAuth2 password form)",
    ),
    Route(
        "POST",
        f"{API}/auth/refresh",
        "warden.auth.refresh",
        tokens=True,
        summary="Spend a refresh token for a new pair",
    ),
    Route(
        "POST",
        f"{API}/auth/logout",
        "warden.auth.logout",
        204,
        body="optional_json",
        summary="End the caller's session",
    ),
    Route("GET", f"{API}/users/me", "warden.users.me", body="none", summary="Read yourself"),
    Route("PATCH", f"{API}/users/me", "warden.users.update_me", summary="Update yourself"),
    Route(
        "POST",
        f"{API}/users/me/password",
        "warden.users.change_password",
        204,
        summary="Change your password",
    ),
    Route("GET", f"{API}/users", "warden.users.list", body="query", summary="List users"),
    Route("GET", f"{API}/users/{ID}", "warden.users.get", body="none", summary="Read a user"),
    Route("PATCH", f"{API}/users/{ID}", "warden.users.update", summary="Update a user"),
    Route(
        "DELETE",
        f"{API}/users/{ID}",
        "warden.users.delete",
        204,
        body="none",
        summary="Delete a user",
    ),
    Route("GET", f"{API}/audit", "warden.audit.list", body="query", summary="Read the audit log"),
    Route(
        "GET",
        f"{API}/users/me/sessions",
        "warden.sessions.list",
        body="none",
        summary="List your live sessions",
    ),
    Route(
        "DELETE",
        f"{API}/users/me/sessions/{SID}",
        "warden.sessions.revoke",
        204,
        body="none",
        summary="End one of your sessions",
    ),
    Route(
        "DELETE",
        f"{API}/users/me/sessions",
        "warden.sessions.revoke_others",
        204,
        body="none",
        summary="End every session of yours but this one",
    ),
    Route(
        "DELETE",
        f"{API}/users/{ID}/sessions",
        "warden.users.revoke_sessions",
        204,
        body="none",
        summary="End every session of a user",
    ),
)
