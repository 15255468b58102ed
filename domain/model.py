"""Entities and value objects: plain dataclasses, no framework."""

from __future__ import annotations

import enum
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


_UNSET: Any = object()


@dataclass(frozen=True)
class UserChanges:
    """A partial update: only the fields that were given are applied."""

    email: str = _UNSET
    username: str = _UNSET
    full_name: str | None = _UNSET
    is_active: bool = _UNSET
    is_superuser: bool = _UNSET
    hashed_password: str = field(default=_UNSET, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not _UNSET}

    def __bool__(self) -> bool:
        return bool(self.as_dict())


@dataclass(frozen=True)
class AccessClaims:
    """The verified claims of an access token."""

    user_id: int
    session_id: str
    token_id: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True)
class RefreshClaims:
    """The verified claims of a refresh token."""

    user_id: int
    session_id: str
    token_id: str


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
