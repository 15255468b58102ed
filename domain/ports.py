"""The ports the use cases need, named by role; adapters live in storage/ and warden/."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol

from domain.events import Event
from domain.listing import AuditPage, AuditQuery, UserPage, UserQuery
from domain.model import AccessClaims, NewUser, RefreshClaims, User, UserChanges


class Clock(Protocol):
    """Tells the time in UTC."""

    def now(self) -> datetime: ...


class PasswordHasher(Protocol):
    """Hashes and checks passwords, off the event loop."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password: str, hashed: str) -> bool: ...

    async def burn(self, password: str) -> None:
        """Spend the time of one verify, for an unknown user."""


class TokenIssuer(Protocol):
    """Signs and verifies access and refresh tokens."""

    def issue_access(self, user_id: int, session_id: str, now: datetime) -> str: ...

    def issue_refresh(self, user_id: int, session_id: str, token_id: str, now: datetime) -> str: ...

    def read_access(self, token: str) -> AccessClaims:
        """Raise InvalidToken or TokenExpired unless the token is a live access token."""

    def read_refresh(self, token: str) -> RefreshClaims:
        """Raise InvalidToken or TokenExpired unless the token is a live refresh token."""


class Rotation(enum.Enum):
    """What happened when a refresh token was presented."""

    ROTATED = "rotated"
    REUSED = "reused"
    MISSING = "missing"


class SessionStore(Protocol):
    """Live sessions (one login each) and the refresh token each currently accepts."""

    async def create(self, user_id: int, session_id: str, refresh_id: str) -> None: ...

    async def rotate(self, session_id: str, presented_id: str, new_id: str) -> Rotation:
        """Atomically swap the session's refresh token; a spent one revokes the session."""

    async def is_active(self, session_id: str) -> bool: ...

    async def current(self, session_id: str) -> tuple[int, str] | None:
        """A live session's user id and the refresh token id it accepts; None once it ended."""

    async def revoke(self, session_id: str) -> None: ...

    async def revoke_all(self, user_id: int, keep: str | None = None) -> None:
        """Revoke every session of the user but `keep`."""


class LoginThrottle(Protocol):
    """Failed-login counters per account and per client address, shared by every worker."""

    async def blocked_for(self, account: str, client_ip: str | None) -> int:
        """Seconds until a login may be tried again; 0 when it may now."""

    async def record_failure(self, account: str, client_ip: str | None) -> None: ...

    async def clear(self, account: str) -> None: ...


class UserRepository(Protocol):
    """Users in the store; unique clashes raise EmailTaken or UsernameTaken."""

    async def add(self, new: NewUser) -> User: ...

    async def get(self, user_id: int) -> User | None: ...

    async def get_by_login(self, login: str) -> User | None:
        """The user whose username or email equals `login`, case-insensitively."""

    async def clash(self, email: str | None, username: str | None, exclude: int | None) -> None:
        """Raise EmailTaken or UsernameTaken if another user already has either."""

    async def update(self, user: User, changes: UserChanges) -> User: ...

    async def delete(self, user_id: int) -> None: ...

    async def lock_superusers(self) -> Sequence[int]:
        """Serialise superuser changes for this transaction; return the active superusers' ids."""

    async def list(self, query: UserQuery) -> UserPage: ...


class EventOutbox(Protocol):
    """Events to publish, written in the same transaction as the change they describe."""

    def add(self, event: Event) -> None: ...


class AuditLog(Protocol):
    """The stored history of events."""

    async def list(self, query: AuditQuery) -> AuditPage: ...


class UnitOfWork(Protocol):
    """One transaction over users and the outbox."""

    @property
    def users(self) -> UserRepository: ...

    @property
    def outbox(self) -> EventOutbox: ...

    @property
    def audit(self) -> AuditLog: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self, outcome: object = None) -> None:
        """Make the changes stand; `outcome` is what they produced (the changed user, say).

        A unit of work may keep the outcome with the changes, in the same transaction: the
        answer to a repeat of the same request must exist exactly when the change does.
        """
        ...


class UnitOfWorkFactory(Protocol):
    """Opens a new unit of work."""

    def __call__(self) -> UnitOfWork: ...
