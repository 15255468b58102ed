"""Use cases of authentication: log in, refresh, log out, revoke, check a bearer token,
introspect."""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from domain import events
from domain.errors import (
    BearerError,
    EmailNotVerified,
    InactiveUser,
    InvalidCredentials,
    InvalidToken,
    MfaRequired,
    MissingToken,
    TokenReused,
    TokenRevoked,
    TooManyAttempts,
)
from domain.model import (
    PASSWORD_ONLY,
    EndedSession,
    Introspection,
    MfaChallenge,
    Origin,
    Principal,
    RevokeReason,
    SessionStart,
    TokenPair,
    User,
)
from domain.ports import (
    Clock,
    Lockout,
    LoginThrottle,
    MfaChallenges,
    PasswordHasher,
    Rotation,
    SessionStore,
    TokenIssuer,
    UnitOfWorkFactory,
)
from domain.rules import is_text, normalize_login


@dataclass(frozen=True)
class LogIn:
    """Exchange a username (or email) and password for a new session's tokens."""

    login: str
    password: str
    origin: Origin | None = None  # None: a caller in this process; no per-address limit


@dataclass(frozen=True)
class TokenLifetimes:
    access: int
    refresh: int
    # Seconds after a rotation in which the refresh token just spent is a retry, not reuse
    # (WARDEN_REFRESH_REUSE_INTERVAL; 0: any spent token is reuse).
    reuse_interval: int = 0


def account_of(user_id: int) -> str:
    """The login throttle's account of a known user (an unknown login name has its own)."""
    return f"user:{user_id}"


def new_id() -> str:
    """A random identifier for sessions and tokens (128 bits)."""
    return secrets.token_urlsafe(16)


MFA_TOKEN_TTL = 300  # seconds an mfa_token waits for its code (CONTRACT §8: 5 minutes)


def address_of(origin: Origin | None) -> str | None:
    """The key of per-address limits; None for a caller in this process (no such limit)."""
    return origin.address if origin else None


class Auth:
    """Sessions, tokens and the login rules."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        hasher: PasswordHasher,
        tokens: TokenIssuer,
        sessions: SessionStore,
        throttle: LoginThrottle,
        clock: Clock,
        lifetimes: TokenLifetimes,
        challenges: MfaChallenges,
        require_verified: bool = False,
    ) -> None:
        self._uow = uow
        self._challenges = challenges
        self._hasher = hasher
        self._tokens = tokens
        self._sessions = sessions
        self._throttle = throttle
        self._clock = clock
        self._lifetimes = lifetimes
        self._require_verified = require_verified  # WARDEN_REQUIRE_VERIFIED_EMAIL

    def using(self, uow: UnitOfWorkFactory) -> Auth:
        """These use cases with their units of work opened by `uow` (one request's, say)."""
        bound = copy.copy(self)
        bound._uow = uow
        return bound

    async def login(self, cmd: LogIn) -> TokenPair:
        """Check the password, open a session and issue its first token pair.

        An account with a second factor gets MfaRequired (its mfa_token) instead, and its
        failure count stands until the second factor is given: a right password must not
        wipe the wrong codes counted against the account.
        """
        user = await self._find(cmd.login)
        account = account_of(user.id) if user else f"login:{normalize_login(cmd.login)}"
        address = address_of(cmd.origin)
        client_ip = cmd.origin.client_ip if cmd.origin else None
        await self.refuse_if_locked(user, account, address, client_ip)
        if user is None:
            await self._hasher.burn(cmd.password)
        if user is None or not await self._hasher.verify(cmd.password, user.hashed_password):
            await self._throttle.record_failure(account, address)
            await self.record_failure(user, client_ip, InvalidCredentials.code)
            raise InvalidCredentials
        if not user.is_active:
            await self.record_failure(user, client_ip, InactiveUser.code)
            raise InactiveUser
        # Told only to whoever knows the password: it says nothing to anyone else.
        if self._require_verified and not user.is_verified:
            raise EmailNotVerified
        if await self._has_second_factor(user):
            raise MfaRequired(await self._challenge(user, address))
        await self._throttle.clear(account)
        return await self.open_session(user, PASSWORD_ONLY, cmd.origin)

    async def refuse_if_locked(
        self, user: User | None, account: str, address: str | None, client_ip: str | None
    ) -> None:
        """Raise TooManyAttempts while the throttle refuses the account or the address."""
        lockout = await self._throttle.lockout(account, address)
        if lockout is not None:
            # One event per locked window, not one per refused try: a flood of refused
            # logins must not become a flood of outbox and audit rows.
            if await self._throttle.report_once(account, address, lockout):
                await self._record_lockout(user, client_ip, lockout)
            raise TooManyAttempts(lockout.retry_after)

    async def open_session(
        self, user: User, amr: tuple[str, ...], origin: Origin | None
    ) -> TokenPair:
        """Open a session of a user who authenticated by `amr`; issue its first pair."""
        session_id = new_id()
        refresh_id = new_id()
        now = self._clock.now()
        client_ip = origin.client_ip if origin else None
        start = SessionStart(
            self._access_expiry(now),
            ip=client_ip,
            user_agent=origin.user_agent if origin else None,
        )
        await self._sessions.create(user.id, session_id, refresh_id, start)
        pair = self._pair(user.id, session_id, refresh_id, now, amr)
        extra = {"session_id": session_id, "amr": list(amr)} | _ip(client_ip)
        await self._record(events.USER_LOGGED_IN, user, extra)
        return pair

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Spend a refresh token for a new pair of the same session; a reused one revokes it."""
        claims = self._tokens.read_refresh(refresh_token)
        now = self._clock.now()
        rotated = await self._sessions.rotate(
            claims.session_id,
            claims.user_id,
            claims.token_id,
            new_id(),
            self._access_expiry(now),
            self._lifetimes.reuse_interval,
        )
        if rotated.outcome is Rotation.MISSING:
            raise TokenRevoked
        async with self._uow() as uow:
            user = await uow.users.get(claims.user_id)
        if rotated.outcome is Rotation.REUSED:
            found: list[events.Event] = []
            if user is not None:
                extra = {"session_id": claims.session_id}
                found.append(self._event(events.USER_TOKEN_REUSE_DETECTED, user, extra))
            await self._announce(rotated.ended, RevokeReason.TOKEN_REUSE, *found)
            raise TokenReused
        if user is None or not user.is_active:
            # A deactivation or deletion ended its sessions; this one raced it.
            reason = RevokeReason.DELETED if user is None else RevokeReason.DEACTIVATED
            await self.end_session(claims.session_id, claims.user_id, reason)
            raise TokenRevoked
        assert rotated.refresh_id is not None  # ROTATED or RETRIED: the pair's refresh id
        return self._pair(user.id, claims.session_id, rotated.refresh_id, now, claims.amr)

    async def logout(self, principal: Principal) -> None:
        """End the caller's session: its access and refresh tokens stop working."""
        session_id = principal.claims.session_id
        extra = {"session_id": session_id}
        logged_out = self._event(events.USER_LOGGED_OUT, principal.user, extra)
        await self.end_session(session_id, principal.user.id, RevokeReason.LOGOUT, logged_out)

    async def end_session(
        self, session_id: str, user_id: int, reason: RevokeReason, *also: events.Event
    ) -> bool:
        """End one session of the user, writing its `session.revoked` (if this call ended it:
        a racing revocation writes its own) together with `also`. False: it was not live."""
        ended = await self._sessions.revoke(session_id, user_id)
        await self._announce(ended, reason, *also)
        return ended is not None

    async def revoke(self, token: str) -> None:
        """RFC 7009: end the session an access or refresh token names, even an expired one.

        A token this service did not sign, or whose session is over or is not the token's
        user's, changes nothing: the caller learns nothing either way.
        """
        try:
            named = self._tokens.read_session(token)
        except BearerError:
            return
        # Ended only if it is the token's user's: a token signed for one user must not end
        # another user's session. None: not live, not theirs, or a racing revocation won.
        ended = await self._sessions.revoke(named.session_id, named.user_id)
        if ended is None:
            return
        async with self._uow() as uow:
            user = await uow.users.get(named.user_id)
        also = []
        if user is not None:  # a user deleted meanwhile had its sessions ended already
            extra = {"session_id": named.session_id}
            also.append(self._event(events.USER_LOGGED_OUT, user, extra))
        await self._announce(ended, RevokeReason.LOGOUT, *also)

    async def authenticate(self, authorization: str | None) -> Principal:
        """The bearer's caller, checked against revocation and the user's current state."""
        if not authorization:
            raise MissingToken
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("The Authorization header must be 'Bearer <access token>'.")
        return await self._verify(token.strip())

    async def introspect(self, token: str) -> Introspection:
        """RFC 7662: active with the claims for a live access token, inactive for anything else."""
        try:
            principal = await self._verify(token)
        except BearerError:
            return Introspection(active=False)
        return Introspection(active=True, claims=principal.claims, user=principal.user)

    async def is_current(self, refresh_token: str) -> bool:
        """Whether a pair handed out earlier is still live: its refresh token is the one its
        session accepts, the session is its user's, and the user is active."""
        try:
            claims = self._tokens.read_refresh(refresh_token)
        except BearerError:
            return False
        if await self._sessions.current(claims.session_id) != (claims.user_id, claims.token_id):
            return False
        async with self._uow() as uow:
            user = await uow.users.get(claims.user_id)
        return user is not None and user.is_active

    async def _verify(self, token: str) -> Principal:
        claims = self._tokens.read_access(token)
        # The session must be the token's user's: a token signed for another user with a
        # session of one's own is refused as any dead session is.
        if not await self._sessions.is_active(claims.session_id, claims.user_id):
            raise TokenRevoked
        async with self._uow() as uow:
            user = await uow.users.get(claims.user_id)
        if user is None or not user.is_active:
            raise TokenRevoked
        return Principal(user=user, claims=claims)

    async def _find(self, login: str) -> User | None:
        """The user of a login name; no one has a name that no store can keep (a NUL)."""
        if not is_text(login):
            return None
        async with self._uow() as uow:
            return await uow.users.get_by_login(normalize_login(login))

    async def _has_second_factor(self, user: User) -> bool:
        async with self._uow() as uow:
            return await uow.mfa.enabled(user.id)

    async def _challenge(self, user: User, address: str | None) -> str:
        """A new mfa_token (256 random bits) for the user, bound to the login's address."""
        token = secrets.token_urlsafe(32)
        await self._challenges.open(token, MfaChallenge(user.id, address or ""), MFA_TOKEN_TTL)
        return token

    def _access_expiry(self, now: datetime) -> datetime:
        """The `exp` of an access token issued at `now` (whole seconds, as the token has it)."""
        return datetime.fromtimestamp(int(now.timestamp()) + self._lifetimes.access, UTC)

    def _pair(
        self, user_id: int, session_id: str, refresh_id: str, now: datetime, amr: tuple[str, ...]
    ) -> TokenPair:
        return TokenPair(
            access_token=self._tokens.issue_access(user_id, session_id, now, amr),
            refresh_token=self._tokens.issue_refresh(user_id, session_id, refresh_id, now, amr),
            expires_in=self._lifetimes.access,
            refresh_expires_in=self._lifetimes.refresh,
        )

    async def record_failure(self, user: User | None, client_ip: str | None, reason: str) -> None:
        """A user.login_failed event (the throttle's count is the caller's to keep)."""
        await self._record(events.USER_LOGIN_FAILED, user, {"reason": reason} | _ip(client_ip))

    async def _record_lockout(
        self, user: User | None, client_ip: str | None, lockout: Lockout
    ) -> None:
        extra = {
            "reason": TooManyAttempts.code,
            "attempts": lockout.failures,
            "limited_by": lockout.limited_by,
        }
        await self._record(events.USER_LOGIN_FAILED, user, extra | _ip(client_ip))

    async def _record(self, kind: str, user: User | None, extra: dict[str, Any]) -> None:
        await self._commit(self._event(kind, user, extra))

    async def _announce(
        self, ended: EndedSession | None, reason: RevokeReason, *also: events.Event
    ) -> None:
        """Commit `also` and, if a session was ended, its one `session.revoked`.

        Written after the store ended it: only the store knows which call did, so a
        revocation that raced another writes nothing twice. (A worker dying in between
        loses the event; the session is ended all the same: see README, Sessions.)
        """
        found = list(also)
        if ended is not None:
            found.append(events.session_revoked(ended, reason, self._clock.now()))
        await self._commit(*found)

    def _event(self, kind: str, user: User | None, extra: dict[str, Any]) -> events.Event:
        view = None if user is None else user.view()
        return events.Event(kind, self._clock.now(), view, extra)

    async def _commit(self, *found: events.Event) -> None:
        if not found:
            return
        async with self._uow() as uow:
            for event in found:
                uow.outbox.add(event)
            await uow.commit()


def _ip(client_ip: str | None) -> dict[str, str]:
    return {"client_ip": client_ip} if client_ip else {}
