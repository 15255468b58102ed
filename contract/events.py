"""Domain events on the wire: CloudEvents 1.0 (structured JSON), one data model per type.

The event types are the domain's own names (domain/events.py); this module holds what each
one carries and writes every event through its model, so the JSON and its documented schema
cannot drift.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from contract.wire import Timestamp, UserOut, absent_when_none, dump
from domain import events
from domain.events import Event


class UserEventData(BaseModel):
    user: UserOut = Field(description="The user after the change; as it was, for user.deleted.")


class SessionEventData(UserEventData):
    session_id: str


class LoggedInData(SessionEventData):
    client_ip: str | None = absent_when_none(description="Present when the caller gave one.")
    amr: list[Literal["pwd", "otp", "recovery"]] = Field(
        description="RFC 8176: the factors the login gave: a password, then a TOTP code "
        "(`otp`) or a recovery code (`recovery`) for an account with a second factor.",
        examples=[["pwd"], ["pwd", "otp"]],
    )


class LoginFailedData(BaseModel):
    """For too_many_attempts, one event per locked window (see `limited_by`), not per refusal."""

    user: UserOut | None = Field(description="Null when no such user exists.")
    reason: Literal["invalid_credentials", "inactive_user", "too_many_attempts", "invalid_mfa_code"]
    client_ip: str | None = absent_when_none(description="Present when the caller gave one.")
    attempts: int | None = absent_when_none(
        description=(
            "On too_many_attempts only: the failed logins counted in the window that refused "
            "this login, when the event was written."
        ),
        examples=[10],
    )
    limited_by: Literal["account", "client_ip"] | None = absent_when_none(
        description=(
            "On too_many_attempts only: whose limit refused the login. The event is written "
            "once per window of that limit: further refusals in it, for this account or "
            "(client_ip) for any account from that address, write none."
        )
    )


class SigningKeysChangedData(BaseModel):
    kids: list[str] = Field(
        description=(
            "The key ids of the key set now published at /.well-known/jwks.json (and by "
            "warden.auth.jwks), in its order: refetch it to learn the keys themselves."
        ),
        examples=[["k3XjR2w6T1o", "a9QpL0vZ8sE"]],
    )


class EmailChangedData(UserEventData):
    previous_email: str = Field(description="The address the account had before the change.")


class SessionRevokedData(BaseModel):
    """One per session that ended, whatever ended it; a subscriber that refuses tokens itself
    refuses this session's until `expires_at`, after which none of them is valid anyway."""

    session_id: str = Field(description="The `sid` claim of the session's tokens.")
    user_id: int
    reason: Literal[
        "logout",
        "token_reuse",
        "password_changed",
        "password_reset",
        "deactivated",
        "deleted",
        "admin",
        "user",
    ] = Field(
        description=(
            "logout: the session's own logout; token_reuse: a spent refresh token came back; "
            "password_changed / password_reset: the user's password changed; deactivated / "
            "deleted: the user was; admin: a superuser ended all the user's sessions; user: "
            "the user ended it from another session (or all but the current one)."
        )
    )
    expires_at: Timestamp = Field(
        description=(
            "The `exp` of the newest access token issued for the session: the last moment "
            "any access token of it can still pass an offline check (add your own leeway)."
        )
    )


D = TypeVar("D")


class CloudEvent(BaseModel, Generic[D]):
    specversion: Literal["1.0"] = "1.0"
    id: str = Field(description="Unique; subscribers de-duplicate on it.")
    source: Literal["warden"] = "warden"
    type: str
    time: Timestamp
    subject: str | None = absent_when_none(description="The user id; absent without a user.")
    datacontenttype: Literal["application/json"] = "application/json"
    requestid: str | None = absent_when_none(
        description="Extension attribute: the request that caused the event."
    )
    data: D


# Each event type of the domain, and what its `data` holds.
EVENT_DATA: dict[str, type[BaseModel]] = {
    events.USER_REGISTERED: UserEventData,
    events.USER_UPDATED: UserEventData,
    events.USER_DELETED: UserEventData,
    events.USER_PASSWORD_CHANGED: UserEventData,
    events.USER_LOGGED_IN: LoggedInData,
    events.USER_LOGGED_OUT: SessionEventData,
    events.USER_LOGIN_FAILED: LoginFailedData,
    events.USER_TOKEN_REUSE_DETECTED: SessionEventData,
    events.SIGNING_KEYS_CHANGED: SigningKeysChangedData,
    events.USER_MFA_ENABLED: UserEventData,
    events.USER_MFA_DISABLED: UserEventData,
    # CONTRACT §7: never the token; the mail that carries it leaves on warden.mail.
    events.USER_VERIFICATION_REQUESTED: UserEventData,
    events.USER_VERIFIED: UserEventData,
    events.USER_PASSWORD_RESET_REQUESTED: UserEventData,
    events.USER_PASSWORD_RESET: UserEventData,
    events.USER_EMAIL_CHANGED: EmailChangedData,
    events.SESSION_REVOKED: SessionRevokedData,
}
if set(EVENT_DATA) != set(events.EVENT_TYPES):  # pragma: no cover - a start-up error
    raise RuntimeError("every event type of the domain needs its data model here")

_ENVELOPES: dict[str, type[CloudEvent[Any]]] = {
    kind: CloudEvent[data]  # type: ignore[valid-type]
    for kind, data in EVENT_DATA.items()
}


def cloudevent(event: Event, request_id: str | None = None) -> dict[str, Any]:
    """The CloudEvents 1.0 structured form of `event`; `requestid` is an extension attribute.

    Validated against the type's model (an `extra` key no model names is refused, not
    dropped), then written by it.
    """
    model = _ENVELOPES[event.type]
    about_a_user = "user" in EVENT_DATA[event.type].model_fields
    data = {"user": event.user, **event.extra} if about_a_user else dict(event.extra)
    envelope = {
        "id": event.id,
        "type": event.type,
        "time": event.time,
        "subject": event.subject,
        "requestid": request_id or None,
        "data": data,
    }
    return dump(model, envelope)
