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
    PASSWORD_ONLY,
    AccessClaims,
    EmailToken,
    EndedSession,
    Mail,
    MfaChallenge,
    NewUser,
    RefreshClaims,
    SessionInfo,
    SessionStart,
    TokenSession,
    TotpState,
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

    def issue_access(
        self, user_id: int, session_id: str, now: datetime, amr: Sequence[str] = PASSWORD_ONLY
    ) -> str:
        """An access token whose `amr` claim says how the session authenticated."""

    def issue_refresh(
        self,
        user_id: int,
        session_id: str,
        token_id: str,
        now: datetime,
        amr: Sequence[str] = PASSWORD_ONLY,
    ) -> str:
        """A refresh token carrying the session's `amr`, for the pairs it is spent for."""

    def read_access(self, token: str) -> AccessClaims:
        """Raise InvalidToken or TokenExpired unless the token is a live access token."""

    def read_refresh(self, token: str) -> RefreshClaims:
        """Raise InvalidToken or TokenExpired unless the token is a live refresh token."""

    def read_session(self, token: str) -> TokenSession:
        """The user and session of an access or refresh token this issuer signed, even an
        expired one; InvalidToken for anything else."""


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


class MfaRepository(Protocol):
    """TOTP enrolments and recovery code digests, in the unit of work's transaction."""

    async def get(self, user_id: int) -> TotpState | None: ...

    async def enabled(self, user_id: int) -> bool:
        """Whether the user has a confirmed TOTP (a login then needs a second factor)."""

    async def put_pending(self, user_id: int, sealed_secret: bytes) -> bool:
        """Store (or replace) a pending enrolment; False, changing nothing, once confirmed."""

    async def confirm(
        self, user_id: int, sealed_secret: bytes, step: int, recovery_digests: Sequence[bytes]
    ) -> bool:
        """Confirm the pending enrolment of exactly this secret, remembering `step` as used
        and keeping the digests as the recovery codes; False if it is not pending (any more)."""

    async def remove(self, user_id: int) -> bool:
        """Delete the enrolment and the recovery codes; True if a confirmed one was removed."""

    async def spend_step(self, user_id: int, step: int) -> bool:
        """Atomically record `step` as the last used time-step if it is later than the last
        one: False for a code of a step already used (a replay) or earlier."""

    async def spend_recovery_code(self, user_id: int, digest: bytes) -> bool:
        """Atomically delete an unused recovery code: True for the one request that spent it."""


class MfaChallenges(Protocol):
    """Pending second-factor logins (mfa_tokens), shared by every worker; each expires."""

    async def open(self, token: str, challenge: MfaChallenge, ttl: int) -> None: ...

    async def find(self, token: str) -> MfaChallenge | None:
        """The live challenge of a token; None for an unknown, spent or expired one."""

    async def fail(self, token: str, max_failures: int) -> None:
        """Count a wrong code against the token; at `max_failures` it dies."""

    async def spend(self, token: str) -> bool:
        """Atomically end the challenge: True for the one request that spent it."""


class Totp(Protocol):
    """RFC 6238 time-based one-time passwords."""

    def new_secret(self) -> str:
        """A new random secret, base32."""

    def uri(self, secret: str, account: str, issuer: str) -> str:
        """The otpauth:// URI an authenticator app reads (as a QR code)."""

    def matching_step(self, secret: str, code: str, now: datetime) -> int | None:
        """The time-step (within the allowed drift) whose code `code` is, else None."""


class Sealer(Protocol):
    """Authenticated encryption of a value kept at rest, bound to a context."""

    def seal(self, plaintext: bytes, context: bytes) -> bytes: ...

    def open(self, sealed: bytes, context: bytes) -> bytes | None:
        """The plaintext; None when it fails authentication (another key or context)."""


class EventOutbox(Protocol):
    """Events to publish, written in the same transaction as the change they describe."""

    def add(self, event: Event) -> None: ...


class EmailTokenRepository(Protocol):
    """Mail tokens, stored only as their hashes."""

    async def add(self, token: EmailToken) -> None: ...

    async def find(self, digest: bytes, kind: str, now: datetime) -> EmailToken | None:
        """The unspent, unexpired token of `kind` with this hash, left as it is."""

    async def spend(self, digest: bytes, kind: str, now: datetime) -> EmailToken | None:
        """Mark the unspent, unexpired token used and return it; None if there is none.

        Atomic: of two concurrent spends of one token, one gets it.
        """

    async def spend_all(self, user_id: int, kind: str, now: datetime) -> None:
        """Spend every unspent token of `kind` of the user."""


class MailQueue(Protocol):
    """Mails to send, written in the same transaction as the change that asks for them."""

    async def count_since(self, kind: str, address: str, since: datetime) -> int:
        """Mails of `kind` queued for `address` since `since`; concurrent counts of the same
        (kind, address) wait for this transaction to end."""

    def add(self, mail: Mail) -> None: ...


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

    @property
    def mfa(self) -> MfaRepository: ...

    @property
    def tokens(self) -> EmailTokenRepository: ...

    @property
    def mails(self) -> MailQueue: ...

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
