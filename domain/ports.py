"""The ports the use cases need, named by role; adapters live in storage/ and warden/."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Literal, Protocol

from domain.events import Event
from domain.listing import AuditPage, AuditQuery, UserPage, UserQuery
from domain.model import (
    AccessClaims,
    EndedSession,
    NewUser,
    RefreshClaims,
    SessionInfo,
    SessionStart,
    User,
    UserChanges,
)


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
    RETRIED = "retried"  # the token just spent, again within the reuse interval: not reuse
    REUSED = "reused"
    MISSING = "missing"


@dataclass(frozen=True)
class Rotated:
    """A rotation's outcome: the refresh token id the new pair carries (ROTATED: the new one;
    RETRIED: the session's current one, which the first refresh handed out), and the session
    a reuse ended (REUSED, for this call only: a racing reuse finds it MISSING)."""

    outcome: Rotation
    refresh_id: str | None = None
    ended: EndedSession | None = None


class SessionStore(Protocol):
    """Live sessions (one login each) and the refresh token each currently accepts.

    Every revocation returns the sessions it ended itself: of two racing revocations of one
    session, exactly one gets it (and writes its one `session.revoked`). The store tells the
    time of creation and use by its own clock, one for every worker.
    """

    async def create(
        self, user_id: int, session_id: str, refresh_id: str, start: SessionStart
    ) -> None: ...

    async def rotate(
        self,
        session_id: str,
        user_id: int,
        presented_id: str,
        new_id: str,
        access_expires_at: datetime,
        reuse_interval: int = 0,
    ) -> Rotated:
        """Atomically swap the session's refresh token; a spent one revokes the session.

        The token spent by the last rotation, presented again less than `reuse_interval`
        seconds after it, is RETRIED (0: never). A session that is not `user_id`'s is MISSING
        and left as it is. `access_expires_at` is the new access token's expiry.
        """

    async def is_active(self, session_id: str, user_id: int) -> bool:
        """True while the session is live and belongs to `user_id`; notes its use (at most
        once a minute)."""

    async def current(self, session_id: str) -> tuple[int, str] | None:
        """A live session's user id and the refresh token id it accepts; None once it ended."""

    async def revoke(self, session_id: str, user_id: int | None = None) -> EndedSession | None:
        """End the session (only if it is `user_id`'s, when given); None if this call did not
        end it: unknown, already ended, or another user's."""

    async def revoke_all(self, user_id: int, keep: str | None = None) -> list[EndedSession]:
        """End every session of the user but `keep`; the ones this call ended."""

    async def live(self, user_id: int) -> list[SessionInfo]:
        """The user's live sessions, newest first."""


@dataclass(frozen=True)
class Lockout:
    """A login refused by the throttle: the window whose limit refused it, and its state."""

    retry_after: int  # seconds until that window ends
    failures: int  # the failed logins counted in it
    limited_by: Literal["account", "client_ip"]


class LoginThrottle(Protocol):
    """Failed-login counters per account and per client address, shared by every worker."""

    async def lockout(self, account: str, client_ip: str | None) -> Lockout | None:
        """What refuses a login of the account from the address now; None when it may be tried."""

    async def record_failure(self, account: str, client_ip: str | None) -> None: ...

    async def clear(self, account: str) -> None:
        """Forget the account's failures, and that its lockout was reported."""

    async def report_once(self, account: str, client_ip: str | None, lockout: Lockout) -> bool:
        """True for only the first refusal in the lockout's window, across every worker."""


class RegistrationThrottle(Protocol):
    """Registrations that reach the password hashing, counted per client address."""

    async def admit(self, client_ip: str) -> int:
        """Count one from the address: 0 when it may go on, else seconds until one may."""


class UserRepository(Protocol):
    """Users in the store; unique clashes raise EmailTaken or UsernameTaken."""

    async def add(self, new: NewUser) -> User: ...

    async def get(self, user_id: int) -> User | None: ...

    async def get_by_login(self, login: str) -> User | None:
        """The user whose username or email equals `login`, case-insensitively; a username
        that equals another user's email wins."""

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

    async def commit(self) -> None:
        """Make the changes and their events stand together."""
        ...


class UnitOfWorkFactory(Protocol):
    """Opens a new unit of work."""

    def __call__(self) -> UnitOfWork: ...
