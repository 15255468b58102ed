"""Entities and value objects: plain dataclasses, no framework."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class UserView:
    """What may leave the service about a user: never the password hash."""

    id: int
    email: str
    username: str
    full_name: str | None
    is_active: bool
    is_superuser: bool
    created_at: datetime
    updated_at: datetime
    is_verified: bool = False


@dataclass(frozen=True)
class User:
    """A stored account."""

    id: int
    email: str
    username: str
    hashed_password: str = field(repr=False)
    full_name: str | None
    is_active: bool
    is_superuser: bool
    created_at: datetime
    updated_at: datetime
    is_verified: bool = False  # the email was shown to be the user's (CONTRACT §7)

    def view(self) -> UserView:
        return UserView(
            id=self.id,
            email=self.email,
            username=self.username,
            full_name=self.full_name,
            is_active=self.is_active,
            is_superuser=self.is_superuser,
            created_at=self.created_at,
            updated_at=self.updated_at,
            is_verified=self.is_verified,
        )

    def with_changes(self, changes: UserChanges) -> User:
        return replace(self, **changes.as_dict())

    @property
    def is_active_superuser(self) -> bool:
        return self.is_active and self.is_superuser


@dataclass(frozen=True)
class NewUser:
    """An account about to be stored."""

    email: str
    username: str
    hashed_password: str = field(repr=False)
    full_name: str | None = None
    is_active: bool = True
    is_superuser: bool = False
    is_verified: bool = False


_UNSET: Any = object()


@dataclass(frozen=True)
class UserChanges:
    """A partial update: only the fields that were given are applied."""

    email: str = _UNSET
    username: str = _UNSET
    full_name: str | None = _UNSET
    is_active: bool = _UNSET
    is_superuser: bool = _UNSET
    is_verified: bool = _UNSET
    hashed_password: str = field(default=_UNSET, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not _UNSET}

    def __bool__(self) -> bool:
        return bool(self.as_dict())


# RFC 8176 authentication methods of a session: a password, then a TOTP code or a recovery code.
PASSWORD_ONLY: tuple[str, ...] = ("pwd",)
WITH_TOTP: tuple[str, ...] = ("pwd", "otp")
WITH_RECOVERY_CODE: tuple[str, ...] = ("pwd", "recovery")


@dataclass(frozen=True)
class AccessClaims:
    """The verified claims of an access token."""

    user_id: int
    session_id: str
    token_id: str
    issued_at: int
    expires_at: int
    amr: tuple[str, ...] = PASSWORD_ONLY  # RFC 8176: how the session's user authenticated


@dataclass(frozen=True)
class RefreshClaims:
    """The verified claims of a refresh token."""

    user_id: int
    session_id: str
    token_id: str
    amr: tuple[str, ...] = PASSWORD_ONLY  # the session's, carried to each pair it refreshes to


@dataclass(frozen=True)
class TokenSession:
    """The user and session a genuine token names, whatever its kind, expired or not."""

    user_id: int
    session_id: str


@dataclass(frozen=True)
class TokenPair:
    """What a login or refresh hands back."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int
    refresh_expires_in: int
    token_type: str = "bearer"


@dataclass(frozen=True)
class Principal:
    """The caller behind a verified, unrevoked bearer token, with the user as it is now."""

    user: User
    claims: AccessClaims


@dataclass(frozen=True)
class Introspection:
    """RFC 7662 answer for a token."""

    active: bool
    claims: AccessClaims | None = None
    user: User | None = None


@dataclass(frozen=True)
class Origin:
    """Where a request came from, as far as Warden can tell.

    `client_ip` is the end user's address, known only when a caller Warden trusts (its own
    edge) vouched for it; only then do events carry it. `publisher` names the service that
    sent the request. Per-address limits count `address`, so a caller that states no address
    is still counted, as itself.
    """

    client_ip: str | None = None
    publisher: str | None = None
    user_agent: str | None = None  # as the client stated it; shown in its session list only

    @property
    def address(self) -> str:
        """The key of per-address limits: the end user's address, else the publisher's."""
        if self.client_ip:
            return self.client_ip
        return f"publisher:{self.publisher or 'unknown'}"


@dataclass(frozen=True)
class TotpState:
    """A user's TOTP enrolment as stored: the secret sealed, confirmed or still pending."""

    user_id: int
    sealed_secret: bytes = field(repr=False)
    confirmed: bool


@dataclass(frozen=True)
class MfaChallenge:
    """A login whose password was right, waiting for its second factor (an mfa_token)."""

    user_id: int
    address: str  # Origin.address of the login; the code must come from the same


@dataclass(frozen=True)
class EmailToken:
    """A stored token: its hash, what it may do, for whom, to which address it was sent."""

    digest: bytes = field(repr=False)
    kind: str
    user_id: int
    email: str
    expires_at: datetime


@dataclass(frozen=True)
class Mail:
    """One mail to send. `token` is the secret its link carries (None for a notice)."""

    kind: str
    to: str
    user_id: int
    username: str
    token: str | None = field(default=None, repr=False)
    expires_at: datetime | None = None
    new_email: str | None = None  # EMAIL_CHANGED: the address the account moved to
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


class RevokeReason(enum.StrEnum):
    """Why a session ended, as its `session.revoked` event says."""

    LOGOUT = "logout"
    TOKEN_REUSE = "token_reuse"
    PASSWORD_CHANGED = "password_changed"
    PASSWORD_RESET = "password_reset"
    DEACTIVATED = "deactivated"
    DELETED = "deleted"
    ADMIN = "admin"  # a superuser ended every session of the user
    USER = "user"  # the user ended one of their sessions, or all but the current one


@dataclass(frozen=True)
class SessionStart:
    """What a new session records beside its user: until when its first access token lives,
    and the client that opened it (the store adds when)."""

    access_expires_at: datetime
    ip: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True)
class SessionInfo:
    """A live session as its user may see it (never a token or a token id)."""

    id: str
    created_at: datetime
    last_used_at: datetime
    ip: str | None
    user_agent: str | None


@dataclass(frozen=True)
class EndedSession:
    """A session that one revocation actually ended (no other revocation ended it too).

    `access_expires_at`: the `exp` of the newest access token issued for it, so the last
    moment any of its access tokens can pass a check that does not ask Warden.
    """

    session_id: str
    user_id: int
    access_expires_at: datetime
