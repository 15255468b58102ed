"""Wire models of the RPC messages and replies: pydantic at the boundary, mapped to domain objects.

The edge reads these too, for its OpenAPI document; nothing here does I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    TypeAdapter,
    field_validator,
)

from domain import rules
from domain.errors import FieldError, ValidationFailed
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
# Ids are Postgres bigints: a larger number is no user's id, and no query may carry it.
UserId = Annotated[int, Field(ge=1, le=2**63 - 1)]
# A request is a flat object; nothing a caller may send nests this deep, and the bound keeps
# every body re-encodable (orjson writes at most 254 levels) and cheap to validate.
MAX_JSON_DEPTH = 32


def load_json(raw: bytes) -> Any:
    """The JSON value of a request body, or ValueError: not UTF-8 JSON, or nested too deep.

    The error's message, when it has one, is for the caller (it never quotes the input).
    A lone UTF-16 surrogate escape ("\\ud800") is not JSON here (RFC 7493, I-JSON): it has
    no UTF-8 form, just as a lone surrogate's bytes are not UTF-8.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError from None
    if _deeper_than(data, MAX_JSON_DEPTH):
        raise ValueError(f"The JSON is nested deeper than {MAX_JSON_DEPTH} levels.")
    return data


def json_object(data: Any) -> dict[str, Any]:
    """A request body's JSON value, which must be an object (422 where it is anything else)."""
    if not isinstance(data, dict):
        raise ValidationFailed(
            [FieldError(("body",), "the body must be a JSON object", "dict_type")]
        )
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` levels (without recursing, however deep)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = list(node.values())
        if not isinstance(node, list):
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in node)
    return False


def _without_null(schema: dict[str, Any]) -> None:
    """The schema of an optional field whose null is refused: only its non-null branch."""
    branches = [b for b in schema.pop("anyOf") if b.get("type") != "null"]
    schema.update(branches[0])
    schema.pop("default", None)  # None stands for "left out": not a value the type allows


# A field that may be left out but not sent as null. Optional (not a union with a hidden
# None, whose validation errors would name the union's branches instead of the field);
# handlers refuse an explicit null.
NotNull = Field(json_schema_extra=_without_null)


class Shape(BaseModel):
    """Unknown fields are refused: no mass assignment."""

    model_config = ConfigDict(extra="forbid")


class Strict(Shape):
    """A request that may be stored: no string in it holds what a store cannot keep."""

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        return rules.check_text(value) if isinstance(value, str) else value


class Empty(Strict):
    """No fields (an empty object)."""


class RegisterRequest(Strict):
    email: Email
    username: Username
    password: Password
    full_name: FullName = None


class LoginRequest(Shape):
    """A username, or an email, and a password: one that no account can have (over 72 bytes,
    or with a NUL) fails as any wrong password does."""

    # Not Strict: a 422 for such input would answer sooner than a bcrypt check, and differ
    # from what a known user's wrong password gets. The use case and the hasher take any.

    username: Text = Field(description="The username or the email, any case.")
    password: str


class RefreshRequest(Strict):
    refresh_token: Text


class IntrospectRequest(Strict):
    token: Annotated[str, StringConstraints(max_length=8192)]


class RevokeRequest(Strict):
    """RFC 7009: an access or refresh token whose session is to end."""

    token: Annotated[str, StringConstraints(min_length=1, max_length=8192)] = Field(
        description="An access or refresh token. The reply is the same whether or not it was "
        "valid, expired or already revoked."
    )
    token_type_hint: str | None = Field(
        default=None,
        max_length=64,
        description="access_token or refresh_token; accepted and not needed: a Warden token "
        "says its own type, and either kind is looked for.",
        examples=["refresh_token"],
    )


class UpdateMeRequest(Strict):
    """Only the fields sent are changed; null is a value only for full_name (it clears it)."""

    email: Annotated[Email | None, NotNull] = None
    username: Annotated[Username | None, NotNull] = None
    full_name: FullName = None


class UpdateUserRequest(UpdateMeRequest):
    is_active: Annotated[bool | None, NotNull] = None
    is_superuser: Annotated[bool | None, NotNull] = None
    is_verified: Annotated[bool | None, NotNull] = None


class UpdateUserMessage(UpdateUserRequest):
    id: UserId


class ChangePasswordRequest(Strict):
    current_password: Annotated[str, StringConstraints(max_length=4096)]
    new_password: Password


MfaCode = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    Field(
        description="A 6-digit TOTP code, or (at POST /auth/mfa) an unused recovery code; "
        "spaces and hyphens are ignored.",
        examples=["492039"],
    ),
]


class MfaCodeRequest(Strict):
    code: MfaCode


class DisableMfaRequest(Strict):
    password: Annotated[str, StringConstraints(max_length=4096)] = Field(
        description="The account's password."
    )


class MfaLoginRequest(Strict):
    mfa_token: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="From the 403 mfa_required answer of the login; single use, 5 minutes."
    )
    code: MfaCode


class EmailRequest(Strict):
    """An address to send a mail to, if it is an account's that needs one."""

    email: Email


EmailToken = Annotated[
    str,
    StringConstraints(min_length=1, max_length=512),
    Field(description="The token of the link in the mail.", examples=["bSx3...Q"]),
]


class VerifyEmailRequest(Strict):
    token: EmailToken


class ResetPasswordRequest(Strict):
    token: EmailToken
    new_password: Password


class UserIdMessage(Strict):
    id: UserId


SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class SessionIdMessage(Strict):
    id: str = Field(
        pattern=SESSION_ID_PATTERN,
        description="A session id (the `sid` of its tokens), as the session list gives it.",
    )


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
    user_id: UserId | None = None
    type: str | None = Field(default=None, max_length=64)


# --- replies -------------------------------------------------------------------------------
# Every reply is written through its model (see views()): built from the domain object it
# answers with, validated once, dumped as JSON.


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


# RFC 3339 in UTC, written with a `Z`, whatever zone the domain's datetime is in.
Timestamp = Annotated[datetime, AfterValidator(_utc)]
_TIMESTAMP: TypeAdapter[datetime] = TypeAdapter(Timestamp)


def rfc3339(moment: datetime) -> str:
    """A timestamp as the contract writes it: RFC 3339 in UTC with a `Z`."""
    written: str = _TIMESTAMP.dump_python(_TIMESTAMP.validate_python(moment), mode="json")
    return written


def _absent(value: object) -> bool:
    return value is None


def absent_when_none(**kwargs: Any) -> Any:
    """A field left out of the JSON, not written as null, when it has no value."""
    return Field(default=None, exclude_if=_absent, **kwargs)


class Reply(BaseModel):
    """A reply model: read from the attributes of the domain object it answers with."""

    model_config = ConfigDict(from_attributes=True)


class UserOut(Reply):
    id: int
    email: str
    username: str
    full_name: str | None
    is_active: bool
    is_superuser: bool
    created_at: Timestamp
    updated_at: Timestamp
    is_verified: bool = Field(
        description="The email was shown to be the user's (read-only but for a superuser)."
    )


class TokenPairOut(Reply):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(examples=[1800])
    refresh_expires_in: int = Field(examples=[604800])


class TotpEnrollmentOut(Reply):
    secret: str = Field(description="Base32; shown once. Not active until confirmed.")
    otpauth_uri: str = Field(
        description="The otpauth://totp/ URI (with the issuer) an authenticator app reads.",
        examples=[
            "otpauth://totp/Warden:alice?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Warden"
        ],
    )


class RecoveryCodesOut(Reply):
    recovery_codes: list[str] = Field(
        description="Ten single-use codes, shown once: each finishes one login instead of a "
        "TOTP code.",
        examples=[["k7dq-3xwm-p2ha-9rtv"]],
    )


ACCEPTED_DETAIL = "If this address belongs to an account that needs this mail, it is on its way."


class AcceptedOut(Reply):
    """The same for every address, known or not: it tells nobody whether an account exists."""

    status: Literal["accepted"] = "accepted"
    detail: str = Field(default=ACCEPTED_DETAIL, examples=[ACCEPTED_DETAIL])


class SessionOut(Reply):
    id: str = Field(description="The session id: the `sid` claim of its tokens.")
    created_at: Timestamp = Field(description="When the login that opened it happened.")
    last_used_at: Timestamp = Field(
        description="Its last refresh, or bearer call (noted at most once a minute)."
    )
    ip: str | None = Field(description="The client address of the login, when known.")
    user_agent: str | None = Field(
        description="The User-Agent of the login, as the client sent it (at most 256 "
        "printable characters)."
    )
    current: bool = Field(description="Whether this is the session the call came with.")


class SessionListOut(Reply):
    items: list[SessionOut]


class UserPageOut(Reply):
    items: list[UserOut]
    next_cursor: str | None


class AuditEntryOut(Reply):
    id: int
    event_id: str
    type: str
    user_id: int | None
    time: Timestamp
    data: dict[str, Any]


class AuditPageOut(Reply):
    items: list[AuditEntryOut]
    next_cursor: str | None


class IntrospectionOut(Reply):
    # RFC 7662: every member but `active` is absent for an inactive token.
    active: bool
    sub: str | None = absent_when_none()
    sid: str | None = absent_when_none()
    username: str | None = absent_when_none()
    is_superuser: bool | None = absent_when_none()
    exp: int | None = absent_when_none()
    iat: int | None = absent_when_none()


class JwkOut(BaseModel):
    """One public key (RFC 7517): an Ed25519 key (`kty` OKP) or a P-256 key (`kty` EC)."""

    kty: Literal["OKP", "EC"]
    crv: Literal["Ed25519", "P-256"]
    x: str = Field(description="The public key (base64url).")
    y: str | None = absent_when_none(description="EC keys only: the second coordinate.")
    kid: str = Field(description="The key id a token's header names (its RFC 7638 thumbprint).")
    use: Literal["sig"]
    alg: Literal["EdDSA", "ES256"] = Field(
        description="The only algorithm this key verifies: refuse a token whose `alg` differs."
    )


class JwksOut(BaseModel):
    """The published key set (RFC 7517): every key an access token may be signed with now or
    within the Cache-Control max-age. Empty when tokens are signed with a shared secret."""

    keys: list[JwkOut]


class CheckOut(Reply):
    status: Literal["pass", "fail"]
    latency_ms: float
    error: str | None = absent_when_none()


class PingOut(Reply):
    postgres: CheckOut
    redis: CheckOut
    # host:port of the broker node the answering worker is connected to (CONTRACT §10).
    node: str | None = absent_when_none()


class FieldErrorOut(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorOut(BaseModel):
    status: int
    code: str
    title: str
    detail: str
    errors: list[FieldErrorOut] | None = absent_when_none()
    retry_after: int | None = absent_when_none()
    mfa_token: str | None = absent_when_none(
        description="On mfa_required only: send it with a code to warden.auth.mfa."
    )


T = TypeVar("T")


class Success(BaseModel, Generic[T]):
    ok: Literal[True] = True
    data: T


class Failure(BaseModel):
    ok: Literal[False] = False
    error: ErrorOut


R = TypeVar("R", bound=BaseModel)


def dump(model: type[R], source: object) -> dict[str, Any]:
    """`source` (a domain object, or a dict of one's parts) written through `model`.

    Validated once, with any member the model does not name refused rather than dropped, so
    what leaves the service is exactly what the model documents.
    """
    return model.model_validate(source, extra="forbid").model_dump(mode="json")
