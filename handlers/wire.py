"""Wire models of the RPC messages and replies: pydantic at the boundary, mapped to domain objects.

The edge reads these too, for its OpenAPI document; nothing here does I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from domain import rules
from domain.listing import DEFAULT_LIMIT, MAX_LIMIT

Username = Annotated[
    str,
    Field(
        description="3-32 characters of [A-Za-z0-9_.-]; unique, case-insensitively.",
        examples=["alice"],
        # Documented for the schemas; checked by the rule, whose message is clearer.
        json_schema_extra={"pattern": rules.USERNAME_PATTERN, "minLength": 3, "maxLength": 32},
    ),
    AfterValidator(rules.check_username),
]
Password = Annotated[
    str,
    Field(
        description="At least 8 characters and at most 72 bytes in UTF-8.",
        examples=["correct horse battery"],
        json_schema_extra={"minLength": rules.PASSWORD_MIN_CHARS, "maxLength": 72},
    ),
    AfterValidator(rules.check_password),
]
Email = Annotated[
    EmailStr,
    Field(
        max_length=rules.EMAIL_MAX_CHARS,
        description="Stored lower-cased; unique.",
        examples=["alice@example.com"],
    ),
]
FullName = Annotated[
    str | None,
    Field(
        max_length=rules.FULL_NAME_MAX_CHARS,
        description="Free text; null clears it.",
        examples=["Alice Liddell"],
    ),
]
Text = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class Strict(BaseModel):
    """Unknown fields are refused: no mass assignment."""

    model_config = ConfigDict(extra="forbid")


class Empty(Strict):
    """No fields (an empty object)."""


class RegisterRequest(Strict):
    email: Email
    username: Username
    password: Password
    full_name: FullName = None


class LoginRequest(Strict):
    username: Text = Field(description="The username or the email, any case.")
    password: Annotated[str, StringConstraints(max_length=4096)]


class RefreshRequest(Strict):
    refresh_token: Text


class IntrospectRequest(Strict):
    token: Annotated[str, StringConstraints(max_length=8192)]


class UpdateMeRequest(Strict):
    """Only the fields sent are changed; null is a value only for full_name (it clears it)."""

    email: Email | SkipJsonSchema[None] = None
    username: Username | SkipJsonSchema[None] = None
    full_name: FullName = None


class UpdateUserRequest(UpdateMeRequest):
    is_active: bool | SkipJsonSchema[None] = None
    is_superuser: bool | SkipJsonSchema[None] = None


class UpdateUserMessage(UpdateUserRequest):
    id: int = Field(ge=1)


class ChangePasswordRequest(Strict):
    current_password: Annotated[str, StringConstraints(max_length=4096)]
    new_password: Password


class UserIdMessage(Strict):
    id: int = Field(ge=1)


class ListUsersQuery(Strict):
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(
        default=None, max_length=2048, description="Opaque; from next_cursor."
    )
    q: str | None = Field(
        default=None,
        max_length=254,
        description="Case-insensitive substring of email, username or full name.",
    )
    is_active: bool | None = None
    is_superuser: bool | None = None
    sort: Literal["created_at", "-created_at", "username", "-username", "email", "-email"] = (
        "-created_at"
    )


class AuditListQuery(Strict):
    limit: int = Field(default=DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    cursor: str | None = Field(default=None, max_length=2048)
    user_id: int | None = Field(default=None, ge=1)
    type: str | None = Field(default=None, max_length=64)


# --- replies -------------------------------------------------------------------------------


class UserOut(BaseModel):
    id: int
    email: str
    username: str
    full_name: str | None
    is_active: bool
    is_superuser: bool
    created_at: datetime
    updated_at: datetime


class TokenPairOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(examples=[1800])
    refresh_expires_in: int = Field(examples=[604800])


class UserPageOut(BaseModel):
    items: list[UserOut]
    next_cursor: str | None


class AuditEntryOut(BaseModel):
    id: int
    event_id: str
    type: str
    user_id: int | None
    time: datetime
    data: dict[str, Any]


class AuditPageOut(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None


class IntrospectionOut(BaseModel):
    active: bool
    sub: str | None = None
    sid: str | None = None
    username: str | None = None
    is_superuser: bool | None = None
    exp: int | None = None
    iat: int | None = None


class CheckOut(BaseModel):
    status: Literal["pass", "fail"]
    latency_ms: float
    error: str | None = None


class PingOut(BaseModel):
    postgres: CheckOut
    redis: CheckOut


class FieldErrorOut(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    status: int
    code: str
    title: str
    detail: str
    errors: list[FieldErrorOut] | None = None
    retry_after: int | None = None


T = TypeVar("T")


class Success(BaseModel, Generic[T]):
    ok: Literal[True] = True
    data: T


class Failure(BaseModel):
    ok: Literal[False] = False
    error: ErrorOut


# --- events (CloudEvents 1.0, structured JSON) ---------------------------------------------


class UserEventData(BaseModel):
    user: UserOut = Field(description="The user after the change; as it was, for user.deleted.")


class SessionEventData(UserEventData):
    session_id: str


class LoggedInData(SessionEventData):
    client_ip: str | None = Field(default=None, description="Present when the caller gave one.")


class LoginFailedData(BaseModel):
    """For too_many_attempts, one event per locked window (see `limited_by`), not per refusal."""

    user: UserOut | None = Field(description="Null when no such user exists.")
    reason: Literal["invalid_credentials", "inactive_user", "too_many_attempts"]
    client_ip: str | None = Field(default=None, description="Present when the caller gave one.")
    attempts: int | None = Field(
        default=None,
        description=(
            "On too_many_attempts only: the failed logins counted in the window that refused "
            "this login, when the event was written."
        ),
        examples=[10],
    )
    limited_by: Literal["account", "client_ip"] | None = Field(
        default=None,
        description=(
            "On too_many_attempts only: whose limit refused the login. The event is written "
            "once per window of that limit: further refusals in it, for this account or "
            "(client_ip) for any account from that address, write none."
        ),
    )


D = TypeVar("D")


class CloudEvent(BaseModel, Generic[D]):
    specversion: Literal["1.0"] = "1.0"
    id: str = Field(description="Unique; subscribers de-duplicate on it.")
    source: Literal["warden"] = "warden"
    type: str
    time: datetime
    subject: str | None = Field(default=None, description="The user id; absent without a user.")
    datacontenttype: Literal["application/json"] = "application/json"
    requestid: str | None = Field(
        default=None, description="Extension attribute: the request that caused the event."
    )
    data: D


EVENT_DATA: dict[str, type[BaseModel]] = {
    "user.registered": UserEventData,
    "user.updated": UserEventData,
    "user.deleted": UserEventData,
    "user.password_changed": UserEventData,
    "user.logged_in": LoggedInData,
    "user.logged_out": SessionEventData,
    "user.login_failed": LoginFailedData,
    "user.token_reuse_detected": SessionEventData,
}
