"""In-memory fakes of the domain's ports: small, honest stand-ins, never mocks of our own ports.

Each fake keeps the semantics the use cases rely on (unique clashes, keyset paging,
transactions, token rotation, login windows) so a unit test fails where a real adapter would.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Literal

from contract.events import cloudevent
from domain.errors import EmailTaken, InvalidToken, TokenExpired, UsernameTaken, UserNotFound
from domain.events import Event
from domain.listing import (
    AuditEntry,
    AuditPage,
    AuditQuery,
    UserKey,
    UserPage,
    UserQuery,
    sort_value,
)
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
from domain.ports import (
    AuditLog,
    EmailTokenRepository,
    EventOutbox,
    Lockout,
    MailQueue,
    MfaRepository,
    Rotated,
    Rotation,
    UserRepository,
)

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """A UTC clock that stands still until a test moves it."""

    def __init__(self, now: datetime = EPOCH) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def set(self, now: datetime) -> None:
        if now.utcoffset() != timedelta(0):
            raise ValueError("FakeClock tells UTC only")
        self._now = now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)


def _as_postgres_keeps(*texts: object) -> None:
    """Postgres text holds no NUL: asyncpg fails such a statement, and so does the fake."""
    if any(isinstance(text, str) and "\x00" in text for text in texts):
        raise ValueError("invalid byte sequence for encoding UTF8: 0x00")


class FakeUserRepository:
    """Users in a dict; email and username are unique case-insensitively, as the indexes are."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._users: dict[int, User] = {}
        self._next_id = 1  # like a sequence: a rolled-back insert still spends its id
        self.superuser_locks = 0

    async def add(self, new: NewUser) -> User:
        _as_postgres_keeps(*dataclasses.astuple(new))
        await self.clash(new.email, new.username, exclude=None)
        now = self._clock.now()
        user = User(
            id=self._next_id,
            email=new.email,
            username=new.username,
            hashed_password=new.hashed_password,
            full_name=new.full_name,
            is_active=new.is_active,
            is_superuser=new.is_superuser,
            created_at=now,
            updated_at=now,
            is_verified=new.is_verified,
        )
        self._next_id += 1
        self._users[user.id] = user
        return user

    async def get(self, user_id: int) -> User | None:
        return self._users.get(user_id)

    async def get_by_login(self, login: str) -> User | None:
        _as_postgres_keeps(login)
        wanted = login.lower()
        found = [u for u in self._users.values() if wanted in (u.username.lower(), u.email.lower())]
        # A username may look like another user's email: the username wins, as in Postgres.
        return max(found, key=lambda u: u.username.lower() == wanted, default=None)

    async def clash(self, email: str | None, username: str | None, exclude: int | None) -> None:
        others = [u for u in self._users.values() if u.id != exclude]
        if email is not None and any(u.email.lower() == email.lower() for u in others):
            raise EmailTaken
        if username is not None and any(u.username.lower() == username.lower() for u in others):
            raise UsernameTaken

    async def update(self, user: User, changes: UserChanges) -> User:
        current = self._users.get(user.id)
        if current is None:
            raise UserNotFound
        fields = changes.as_dict()
        _as_postgres_keeps(*fields.values())
        await self.clash(fields.get("email"), fields.get("username"), exclude=user.id)
        updated = dataclasses.replace(current.with_changes(changes), updated_at=self._clock.now())
        self._users[user.id] = updated
        return updated

    async def delete(self, user_id: int) -> None:
        self._users.pop(user_id, None)

    async def lock_superusers(self) -> Sequence[int]:
        self.superuser_locks += 1
        return sorted(u.id for u in self._users.values() if u.is_active_superuser)

    def snapshot(self) -> dict[int, User]:
        return dict(self._users)

    def restore(self, snapshot: dict[int, User]) -> None:
        self._users = dict(snapshot)

    async def list(self, query: UserQuery) -> UserPage:
        matching = _sorted_page_source(self._users.values(), query)
        items = matching[: query.limit]
        if len(matching) <= query.limit:
            return UserPage(items, None)
        last = items[-1]
        return UserPage(items, UserKey(sort_value(last, query.sort.key), last.id))


def _sorted_page_source(users: Iterable[User], query: UserQuery) -> list[User]:
    """Users matching the filters, in sort order, after the query's keyset position."""
    key = query.sort.key

    def position(user: User) -> tuple[str, int]:
        return (sort_value(user, key), user.id)

    found = sorted(
        (u for u in users if _matches(u, query)),
        key=position,
        reverse=query.sort.descending,
    )
    if query.after is None:
        return found
    mark = (query.after.value, query.after.id)
    if query.sort.descending:
        return [u for u in found if position(u) < mark]
    return [u for u in found if position(u) > mark]


def _matches(user: User, query: UserQuery) -> bool:
    if query.is_active is not None and user.is_active != query.is_active:
        return False
    if query.is_superuser is not None and user.is_superuser != query.is_superuser:
        return False
    if not query.q:
        return True
    needle = query.q.lower()
    return any(needle in text.lower() for text in (user.email, user.username, user.full_name or ""))


class FakeEventOutbox:
    """Events added in a transaction; only `committed` ones would ever reach the broker."""

    def __init__(self) -> None:
        self.pending: list[Event] = []
        self.committed: list[Event] = []

    def add(self, event: Event) -> None:
        self.pending.append(event)

    def commit(self) -> list[Event]:
        done, self.pending = self.pending, []
        self.committed.extend(done)
        return done

    def rollback(self) -> None:
        self.pending.clear()


class FakeAuditLog:
    """The stored history; here fed straight from commits, standing in for relay and consumer."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def record(self, event: Event) -> None:
        self.entries.append(
            AuditEntry(
                id=len(self.entries) + 1,
                event_id=event.id,
                type=event.type,
                user_id=event.user_id,
                time=event.time,
                data=cloudevent(event)["data"],
            )
        )

    async def list(self, query: AuditQuery) -> AuditPage:
        found = [
            e
            for e in reversed(self.entries)  # newest first
            if (query.user_id is None or e.user_id == query.user_id)
            and (query.type is None or e.type == query.type)
            and (query.after is None or e.id < query.after)
        ]
        items = found[: query.limit]
        more = len(found) > query.limit
        return AuditPage(items, items[-1].id if more else None)


@dataclass(frozen=True)
class _Totp:
    sealed_secret: bytes
    confirmed: bool = False
    last_step: int | None = None


class FakeMfaRepository:
    """Enrolments and recovery digests in dicts, rolled back with their unit of work; like
    the foreign keys, a deleted user's are gone."""

    def __init__(self, users: FakeUserRepository) -> None:
        self._users = users
        self.totp: dict[int, _Totp] = {}
        self.recovery: dict[int, frozenset[bytes]] = {}

    def snapshot(self) -> tuple[dict[int, _Totp], dict[int, frozenset[bytes]]]:
        return dict(self.totp), dict(self.recovery)

    def restore(self, snapshot: tuple[dict[int, _Totp], dict[int, frozenset[bytes]]]) -> None:
        self.totp, self.recovery = dict(snapshot[0]), dict(snapshot[1])

    def _live(self, user_id: int) -> _Totp | None:
        if user_id not in self._users.snapshot():
            self.totp.pop(user_id, None)
            self.recovery.pop(user_id, None)
        return self.totp.get(user_id)

    async def get(self, user_id: int) -> TotpState | None:
        found = self._live(user_id)
        return None if found is None else TotpState(user_id, found.sealed_secret, found.confirmed)

    async def enabled(self, user_id: int) -> bool:
        found = self._live(user_id)
        return found is not None and found.confirmed

    async def put_pending(self, user_id: int, sealed_secret: bytes) -> bool:
        found = self._live(user_id)
        if found is not None and found.confirmed:
            return False
        self.totp[user_id] = _Totp(sealed_secret)
        return True

    async def confirm(
        self, user_id: int, sealed_secret: bytes, step: int, recovery_digests: Sequence[bytes]
    ) -> bool:
        found = self._live(user_id)
        if found is None or found.confirmed or found.sealed_secret != sealed_secret:
            return False
        self.totp[user_id] = _Totp(sealed_secret, True, step)
        self.recovery[user_id] = frozenset(recovery_digests)
        return True

    async def remove(self, user_id: int) -> bool:
        found = self.totp.pop(user_id, None)
        self.recovery.pop(user_id, None)
        return found is not None and found.confirmed

    async def spend_step(self, user_id: int, step: int) -> bool:
        found = self._live(user_id)
        if found is None or not found.confirmed:
            return False
        if found.last_step is not None and step <= found.last_step:
            return False
        self.totp[user_id] = dataclasses.replace(found, last_step=step)
        return True

    async def spend_recovery_code(self, user_id: int, digest: bytes) -> bool:
        codes = self.recovery.get(user_id, frozenset())
        if digest not in codes:
            return False
        self.recovery[user_id] = codes - {digest}
        return True


class FakeEmailTokens:
    """Tokens by hash: spent and expired ones are never found; changes roll back."""

    def __init__(self) -> None:
        self.rows: dict[bytes, tuple[EmailToken, datetime | None]] = {}  # hash -> (token, used)
        self._snapshot = dict(self.rows)

    async def add(self, token: EmailToken) -> None:
        assert token.digest not in self.rows, "a token hash is a primary key"
        self.rows[token.digest] = (token, None)

    async def find(self, digest: bytes, kind: str, now: datetime) -> EmailToken | None:
        token, used = self.rows.get(digest, (None, None))
        if token is None or used is not None or token.kind != kind or token.expires_at <= now:
            return None
        return token

    async def spend(self, digest: bytes, kind: str, now: datetime) -> EmailToken | None:
        token = await self.find(digest, kind, now)
        if token is not None:
            self.rows[digest] = (token, now)
        return token

    async def spend_all(self, user_id: int, kind: str, now: datetime) -> None:
        for digest, (token, used) in list(self.rows.items()):
            if token.user_id == user_id and token.kind == kind and used is None:
                self.rows[digest] = (token, now)

    def begin(self) -> None:
        self._snapshot = dict(self.rows)

    def rollback(self) -> None:
        self.rows = dict(self._snapshot)


class FakeMailQueue:
    """Mails queued in a transaction; `committed` ones are what the relay would publish."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.pending: list[Mail] = []
        self.committed: list[tuple[datetime, Mail]] = []

    async def count_since(self, kind: str, address: str, since: datetime) -> int:
        return sum(1 for t, m in self.committed if m.kind == kind and m.to == address and t > since)

    def add(self, mail: Mail) -> None:
        self.pending.append(mail)

    def commit(self) -> None:
        self.committed.extend((self._clock.now(), m) for m in self.pending)
        self.pending.clear()

    def rollback(self) -> None:
        self.pending.clear()

    def sent(self, kind: str | None = None, to: str | None = None) -> list[Mail]:
        return [
            m
            for _, m in self.committed
            if (kind is None or m.kind == kind) and (to is None or m.to == to)
        ]


class FakeUnitOfWork:
    """One 'transaction': user changes, tokens, mails and events stand only once committed."""

    def __init__(
        self,
        users: FakeUserRepository,
        outbox: FakeEventOutbox,
        audit: FakeAuditLog,
        mfa: FakeMfaRepository,
        tokens: FakeEmailTokens,
        mails: FakeMailQueue,
    ) -> None:
        # Typed as the ports: the protocol's attributes are invariant, and the use cases
        # must see nothing more than the ports anyway.
        self.users: UserRepository = users
        self.outbox: EventOutbox = outbox
        self.audit: AuditLog = audit
        self.mfa: MfaRepository = mfa
        self.tokens: EmailTokenRepository = tokens
        self.mails: MailQueue = mails
        self.committed = False
        self.changed: list[User] = []  # what a recorder would render its reply from
        self._users = users
        self._outbox = outbox
        self._audit = audit
        self._mfa = mfa
        self._tokens = tokens
        self._mails = mails
        self._snapshot = users.snapshot()
        self._mfa_snapshot = mfa.snapshot()

    async def __aenter__(self) -> FakeUnitOfWork:
        self._snapshot = self._users.snapshot()
        self._mfa_snapshot = self._mfa.snapshot()
        self._tokens.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Like a session closed without commit: whatever was not committed is gone.
        self.rollback()

    async def commit(self) -> None:
        for event in self._outbox.commit():
            self._audit.record(event)
        self._mails.commit()
        self._tokens.begin()
        before, self._snapshot = self._snapshot, self._users.snapshot()
        # A unit may commit again (late events): what it changed stays what it changed.
        self.changed += [u for uid, u in self._snapshot.items() if before.get(uid) != u]
        self._mfa_snapshot = self._mfa.snapshot()
        self.committed = True

    def rollback(self) -> None:
        self._users.restore(self._snapshot)
        self._mfa.restore(self._mfa_snapshot)
        self._outbox.rollback()
        self._tokens.rollback()
        self._mails.rollback()


class FakeUnitOfWorkFactory:
    """Opens units of work over one shared in-memory store."""

    def __init__(self, clock: FakeClock) -> None:
        self.users = FakeUserRepository(clock)
        self.outbox = FakeEventOutbox()
        self.audit = FakeAuditLog()
        self.mfa = FakeMfaRepository(self.users)
        self.tokens = FakeEmailTokens()
        self.mails = FakeMailQueue(clock)
        self.opened: list[FakeUnitOfWork] = []

    def __call__(self) -> FakeUnitOfWork:
        uow = FakeUnitOfWork(self.users, self.outbox, self.audit, self.mfa, self.tokens, self.mails)
        self.opened.append(uow)
        return uow

    def for_request(self, request_id: str) -> FakeUnitOfWorkFactory:
        """The same units: in memory, an event needs no request id to be told apart."""
        return self

    def recording(self, recorder: object) -> FakeUnitOfWorkFactory:
        """The same units: what a reply would render is `changed()`."""
        return self

    def changed(self) -> list[User]:
        """The users each committed unit of work added or changed, oldest first: what the
        reply of an idempotent change renders (storage.uow)."""
        return [user for u in self.opened if u.committed for user in u.changed]

    def events(self, kind: str | None = None) -> list[Event]:
        """Committed events, optionally of one type, oldest first."""
        return [e for e in self.outbox.committed if kind is None or e.type == kind]


class FakePasswordHasher:
    """A deterministic 'hash' that counts the work, so tests can see what a login costs."""

    PREFIX = "hashed:"

    def __init__(self) -> None:
        self.hash_calls = 0
        self.verify_calls = 0
        self.burn_calls = 0

    async def hash(self, password: str) -> str:
        self.hash_calls += 1
        return self.PREFIX + password

    async def verify(self, password: str, hashed: str) -> bool:
        self.verify_calls += 1
        return hashed == self.PREFIX + password

    async def burn(self, password: str) -> None:
        self.burn_calls += 1
        password.encode()  # bcrypt reads the password too: a None fails here as there

    @property
    def checks(self) -> int:
        """Verifies and burns: what one login attempt spends in bcrypt time."""
        return self.verify_calls + self.burn_calls


class FakeTokenIssuer:
    """Readable tokens ('access:uid:sid:jti:iat:exp'), valid only if this issuer made them."""

    def __init__(self, clock: FakeClock, access_ttl: int = 1800, refresh_ttl: int = 604800) -> None:
        self._clock = clock
        self._access_ttl = access_ttl
        self._refresh_ttl = refresh_ttl
        self._issued: set[str] = set()  # stands in for the signature

    def issue_access(
        self, user_id: int, session_id: str, now: datetime, amr: Sequence[str] = PASSWORD_ONLY
    ) -> str:
        iat = int(now.timestamp())
        jti = uuid.uuid4().hex
        exp = iat + self._access_ttl
        return self._sign(f"access:{user_id}:{session_id}:{jti}:{iat}:{exp}:{'+'.join(amr)}")

    def issue_refresh(
        self,
        user_id: int,
        session_id: str,
        token_id: str,
        now: datetime,
        amr: Sequence[str] = PASSWORD_ONLY,
    ) -> str:
        exp = int(now.timestamp()) + self._refresh_ttl
        return self._sign(f"refresh:{user_id}:{session_id}:{token_id}:{exp}:{'+'.join(amr)}")

    def read_access(self, token: str) -> AccessClaims:
        _, uid, sid, jti, iat, exp, amr = self._open(token, "access", 7)
        self._check_live(int(exp))
        return AccessClaims(int(uid), sid, jti, int(iat), int(exp), tuple(amr.split("+")))

    def read_refresh(self, token: str) -> RefreshClaims:
        _, uid, sid, token_id, exp, amr = self._open(token, "refresh", 6)
        self._check_live(int(exp))
        return RefreshClaims(int(uid), sid, token_id, tuple(amr.split("+")))

    def read_session(self, token: str) -> TokenSession:
        kind = token.split(":", 1)[0]
        fields = self._open(token, kind, 7 if kind == "access" else 6)  # expired or not
        return TokenSession(int(fields[1]), fields[2])

    def _sign(self, token: str) -> str:
        self._issued.add(token)
        return token

    def _open(self, token: str, kind: str, parts: int) -> list[str]:
        if token not in self._issued:
            raise InvalidToken  # forged, tampered or garbage
        fields = token.split(":")
        if fields[0] != kind or len(fields) != parts:
            raise InvalidToken(f"Not an {kind} token.")
        return fields

    def _check_live(self, exp: int) -> None:
        if self._clock.now().timestamp() >= exp:
            raise TokenExpired


@dataclass
class FakeSession:
    user_id: int
    refresh_id: str
    access_expires_at: datetime = EPOCH
    created_at: datetime = EPOCH
    last_used_at: datetime = EPOCH
    ip: str | None = None
    user_agent: str | None = None
    previous_id: str | None = None  # the refresh token id the last rotation spent
    rotated_at: datetime | None = None
    expires_at: datetime | None = None  # None: never (a session made by hand in a test)


TOUCH_EVERY = 60  # seconds: as the Redis store, a bearer call notes a session's use this often


class FakeSessionStore:
    """Sessions keyed by id, each accepting only its newest refresh token id (or, within the
    reuse interval after a rotation, the one just spent); every ending reported once."""

    def __init__(self, clock: FakeClock | None = None, ttl: int = 604800) -> None:
        self.clock = clock or FakeClock()
        self.ttl = ttl
        self.sessions: dict[str, FakeSession] = {}

    async def create(
        self, user_id: int, session_id: str, refresh_id: str, start: SessionStart
    ) -> None:
        now = self.clock.now()
        self.sessions[session_id] = FakeSession(
            user_id,
            refresh_id,
            start.access_expires_at,
            created_at=now,
            last_used_at=now,
            ip=start.ip,
            user_agent=start.user_agent,
            expires_at=now + timedelta(seconds=self.ttl),
        )

    async def rotate(
        self,
        session_id: str,
        user_id: int,
        presented_id: str,
        new_id: str,
        access_expires_at: datetime,
        reuse_interval: int = 0,
    ) -> Rotated:
        session = self._live(session_id)
        if session is None or session.user_id != user_id:
            return Rotated(Rotation.MISSING)  # another user's session is left untouched
        now = self.clock.now()
        outcome, refresh_id = Rotation.ROTATED, new_id
        if presented_id == session.refresh_id:
            session.previous_id, session.rotated_at = presented_id, now
            session.refresh_id = new_id
        elif self._retried(session, presented_id, reuse_interval):
            outcome, refresh_id = Rotation.RETRIED, session.refresh_id
        else:
            # Not the current token, so a spent one: someone holds a copy; end the session.
            del self.sessions[session_id]
            return Rotated(Rotation.REUSED, ended=self._ended(session_id, session))
        session.access_expires_at = max(session.access_expires_at, access_expires_at)
        session.last_used_at = now
        session.expires_at = now + timedelta(seconds=self.ttl)
        return Rotated(outcome, refresh_id)

    def _retried(self, session: FakeSession, presented_id: str, reuse_interval: int) -> bool:
        if session.previous_id != presented_id or session.rotated_at is None:
            return False
        return self.clock.now() - session.rotated_at < timedelta(seconds=reuse_interval)

    async def is_active(self, session_id: str, user_id: int) -> bool:
        session = self._live(session_id)
        if session is None or session.user_id != user_id:
            return False
        now = self.clock.now()
        if now - session.last_used_at >= timedelta(seconds=TOUCH_EVERY):
            session.last_used_at = now
        return True

    async def current(self, session_id: str) -> tuple[int, str] | None:
        session = self._live(session_id)
        return None if session is None else (session.user_id, session.refresh_id)

    async def revoke(self, session_id: str, user_id: int | None = None) -> EndedSession | None:
        session = self._live(session_id)
        if session is None or user_id not in (None, session.user_id):
            return None
        del self.sessions[session_id]
        return self._ended(session_id, session)

    async def revoke_all(self, user_id: int, keep: str | None = None) -> list[EndedSession]:
        ended = []
        for sid in self.of_user(user_id):
            if sid != keep:
                ended.append(self._ended(sid, self.sessions.pop(sid)))
        return ended

    async def live(self, user_id: int) -> list[SessionInfo]:
        found = [
            SessionInfo(sid, s.created_at, s.last_used_at, s.ip, s.user_agent)
            for sid in self.of_user(user_id)
            for s in [self.sessions[sid]]
        ]
        return sorted(found, key=lambda s: s.created_at, reverse=True)

    def of_user(self, user_id: int) -> list[str]:
        return [
            sid for sid in list(self.sessions) if (s := self._live(sid)) and s.user_id == user_id
        ]

    def _live(self, session_id: str) -> FakeSession | None:
        """The session, unless its lifetime is over (then it is gone, as an expired key)."""
        session = self.sessions.get(session_id)
        if session is not None and session.expires_at and session.expires_at <= self.clock.now():
            del self.sessions[session_id]
            return None
        return session

    @staticmethod
    def _ended(session_id: str, session: FakeSession) -> EndedSession:
        return EndedSession(session_id, session.user_id, session.access_expires_at)


@dataclass
class _Window:
    started: datetime
    failures: int = 0


class _FixedWindows:
    """Counters whose window starts at the first count and is never extended (INCR + EXPIRE NX)."""

    def __init__(self, clock: FakeClock, window: int) -> None:
        self._clock = clock
        self.window = window
        self._counters: dict[str, _Window] = {}

    def count(self, key: str) -> int:
        window = self.live(key) or self._counters.setdefault(key, _Window(self._clock.now()))
        window.failures += 1
        return window.failures

    def left(self, key: str) -> int:
        """Whole seconds until the key's window ends (at least 1 while it is live)."""
        window = self.live(key)
        if window is None:
            return 0
        left = window.started + timedelta(seconds=self.window) - self._clock.now()
        return max(1, math.ceil(left.total_seconds()))

    def forget(self, key: str) -> None:
        self._counters.pop(key, None)

    def live(self, key: str) -> _Window | None:
        window = self._counters.get(key)
        if window is None or self._clock.now() < window.started + timedelta(seconds=self.window):
            return window
        del self._counters[key]  # the window is over, as a Redis key would have expired
        return None


class FakeLoginThrottle:
    """Fixed-window failure counters per account and per client address (like INCR + EXPIRE)."""

    def __init__(
        self,
        clock: FakeClock,
        max_failures: int = 10,
        ip_max_failures: int = 100,
        window: int = 900,
    ) -> None:
        self._clock = clock
        self.max_failures = max_failures
        self.ip_max_failures = ip_max_failures
        self.window = window
        self._counters = _FixedWindows(clock, window)
        self._reported: dict[str, datetime] = {}  # the mark's key -> when it expires

    async def lockout(self, account: str, client_ip: str | None) -> Lockout | None:
        found = None
        for whose, key, limit in self._limits(account, client_ip):
            window = self._counters.live(key)
            if window is None or window.failures < limit:
                continue
            wait = self._counters.left(key)
            if found is None or wait > found.retry_after:
                found = Lockout(wait, window.failures, whose)
        return found

    async def record_failure(self, account: str, client_ip: str | None) -> None:
        for _, key, _ in self._limits(account, client_ip):
            self._counters.count(key)

    async def clear(self, account: str) -> None:
        self._counters.forget(f"account:{account}")
        self._reported.pop(f"account:{account}", None)

    async def report_once(self, account: str, client_ip: str | None, lockout: Lockout) -> bool:
        key = f"account:{account}" if lockout.limited_by == "account" else f"ip:{client_ip}"
        window = self._counters.live(key)
        if window is None:
            return False  # the window that refused is over: nothing left to mark
        expires = self._reported.get(key)
        if expires is not None and self._clock.now() < expires:
            return False
        # The mark ends with the window, as the Redis mark expires with its counter.
        self._reported[key] = window.started + timedelta(seconds=self.window)
        return True

    def failures(self, account: str) -> int:
        window = self._counters.live(f"account:{account}")
        return 0 if window is None else window.failures

    def failures_from(self, client_ip: str) -> int:
        window = self._counters.live(f"ip:{client_ip}")
        return 0 if window is None else window.failures

    def _limits(
        self, account: str, client_ip: str | None
    ) -> list[tuple[Literal["account", "client_ip"], str, int]]:
        limits: list[tuple[Literal["account", "client_ip"], str, int]] = [
            ("account", f"account:{account}", self.max_failures)
        ]
        if client_ip:
            limits.append(("client_ip", f"ip:{client_ip}", self.ip_max_failures))
        return limits


class FakeRegistrationThrottle:
    """Registrations per client address in fixed windows, counted as each is admitted."""

    def __init__(self, clock: FakeClock, max_per_address: int = 20, window: int = 3600) -> None:
        self.max_per_address = max_per_address
        self._counters = _FixedWindows(clock, window)

    async def admit(self, client_ip: str) -> int:
        if self._counters.count(client_ip) <= self.max_per_address:
            return 0
        return self._counters.left(client_ip)

    def counted(self, client_ip: str) -> int:
        window = self._counters.live(client_ip)
        return 0 if window is None else window.failures


@dataclass
class _Challenge:
    challenge: MfaChallenge
    expires: datetime
    failures: int = 0


class FakeMfaChallenges:
    """mfa_tokens that expire by the clock, die at their failure limit, are spent once."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.challenges: dict[str, _Challenge] = {}

    async def open(self, token: str, challenge: MfaChallenge, ttl: int) -> None:
        expires = self._clock.now() + timedelta(seconds=ttl)
        self.challenges[token] = _Challenge(challenge, expires)

    def _live(self, token: str) -> _Challenge | None:
        found = self.challenges.get(token)
        if found is not None and self._clock.now() >= found.expires:
            del self.challenges[token]
            return None
        return found

    async def find(self, token: str) -> MfaChallenge | None:
        token.encode()  # the Redis adapter keys a token by its digest: a lone surrogate fails
        found = self._live(token)
        return None if found is None else found.challenge

    async def fail(self, token: str, max_failures: int) -> None:
        found = self._live(token)
        if found is None:
            return
        found.failures += 1
        if found.failures >= max_failures:
            del self.challenges[token]

    async def spend(self, token: str) -> bool:
        return self._live(token) is not None and self.challenges.pop(token) is not None
