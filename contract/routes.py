"""The HTTP routes: each is a translation to one RPC queue of the catalogue.

The edge registers exactly these; its OpenAPI document describes them. Method, path, queue
and success status are the contract's; `body` says where the RPC body comes from, and `form`
which OAuth 2.0 form (RFC 6749, RFC 7009) a route takes beside JSON, and where each goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BodyKind = Literal["json", "optional_json", "query", "none"]


@dataclass(frozen=True)
class Grant:
    """What one OAuth 2.0 form is forwarded as: the queue and the parameters it reads.

    Any other parameter of the form (client_id, scope, ...) is not forwarded: RFC 6749 3.2
    tells a server to ignore what it does not recognise, and Warden has no clients or scopes.
    """

    queue: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Form:
    """An application/x-www-form-urlencoded body a route takes beside JSON.

    `grants` maps each grant_type it takes to its Grant; a form without grant_type is
    `implied`. A route with no `grants` does not read grant_type at all (RFC 7009's form
    has none).
    """

    implied: Grant
    grants: tuple[tuple[str, Grant], ...] = ()

    def grant(self, grant_type: str | None) -> Grant | None:
        """The grant a form with this grant_type is; None for one the route does not take."""
        if grant_type is None or not self.grants:
            return self.implied
        return dict(self.grants).get(grant_type)

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue a form of this route may go to, each once."""
        return tuple(dict.fromkeys([self.implied.queue, *(g.queue for _, g in self.grants)]))


PASSWORD_GRANT = Grant("warden.auth.login", ("username", "password"))
REFRESH_GRANT = Grant("warden.auth.refresh", ("refresh_token",))
REVOCATION = Grant("warden.auth.revoke", ("token", "token_type_hint"))


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    queue: str
    success: int = 200
    body: BodyKind = "json"
    tokens: bool = False  # a reply holding a credential (a TokenPair, a TOTP secret): no-store
    form: Form | None = None  # an OAuth 2.0 form it takes beside JSON
    # Its problem details carry RFC 6749 5.2's `error` too (see contract.oauth).
    oauth: bool = False
    location: bool = False  # a created User: Location: USER_LOCATION
    public: bool = False  # Cache-Control: public, max-age=WARDEN_JWKS_MAX_AGE
    summary: str = ""


API = "/api/v1"
ID = "{id:[0-9]{1,18}}"
# The key set (RFC 7517) and the authorization server's metadata (RFC 8414).
JWKS_PATH = "/.well-known/jwks.json"
METADATA_PATH = "/.well-known/oauth-authorization-server"
TOKEN_PATH = API + "/auth/login"
REVOCATION_PATH = API + "/auth/revoke"
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
        tokens=True,
        # The token endpoint of OAuth 2.0: JSON is a login; a form is the password grant
        # (also without grant_type) or the refresh grant (RFC 6749 4.3 and 6).
        form=Form(
            PASSWORD_GRANT,
            (("password", PASSWORD_GRANT), ("refresh_token", REFRESH_GRANT)),
        ),
        oauth=True,
        summary="Log in, or refresh (JSON, or the OAuth 2.0 password or refresh_token grant)",
    ),
    Route(
        "POST",
        f"{API}/auth/refresh",
        "warden.auth.refresh",
        tokens=True,
        form=Form(REFRESH_GRANT, (("refresh_token", REFRESH_GRANT),)),
        oauth=True,
        summary="Spend a refresh token for a new pair (JSON or the OAuth 2.0 refresh form)",
    ),
    Route(
        "POST",
        f"{API}/auth/revoke",
        "warden.auth.revoke",
        form=Form(REVOCATION),
        oauth=True,
        summary="Revoke the session of an access or refresh token (RFC 7009)",
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
    Route(
        "POST",
        f"{API}/auth/mfa",
        "warden.auth.mfa",
        tokens=True,
        summary="Finish a login with a TOTP or recovery code",
    ),
    Route(
        "POST",
        f"{API}/users/me/mfa/totp",
        "warden.mfa.enroll",
        body="optional_json",
        tokens=True,  # the reply holds a secret: never cached
        summary="Start a TOTP enrolment",
    ),
    Route(
        "POST",
        f"{API}/users/me/mfa/totp/confirm",
        "warden.mfa.confirm",
        tokens=True,  # the reply holds the recovery codes: never cached
        summary="Confirm the TOTP enrolment with a code; get the recovery codes",
    ),
    Route(
        "DELETE",
        f"{API}/users/me/mfa/totp",
        "warden.mfa.disable",
        204,
        summary="Turn TOTP off (with the password)",
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
        JWKS_PATH,
        "warden.auth.jwks",
        body="none",
        public=True,
        summary="The public keys that verify access tokens (JWKS)",
    ),
    Route(
        "POST",
        f"{API}/auth/verify/request",
        "warden.auth.request_verification",
        202,
        summary="Ask for a verification mail",
    ),
    Route(
        "POST",
        f"{API}/auth/verify",
        "warden.auth.verify",
        summary="Verify an email address with a mail's token",
    ),
    Route(
        "POST",
        f"{API}/auth/password/forgot",
        "warden.auth.forgot_password",
        202,
        summary="Ask for a password reset mail",
    ),
    Route(
        "POST",
        f"{API}/auth/password/reset",
        "warden.auth.reset_password",
        204,
        summary="Set a new password with a mail's token",
    ),
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
