"""Use cases of accounts: register, read and change yourself, administer users, read the audit."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from domain import events
from domain.auth import account_of
from domain.errors import Forbidden, LastSuperuser, TooManyAttempts, UserNotFound, WrongPassword
from domain.listing import AuditPage, AuditQuery, UserPage, UserQuery
from domain.mail import EMAIL_CHANGED, VERIFY_EMAIL, Mailbox, MailPolicy
from domain.model import (
    NewUser,
    Origin,
    Principal,
    RevokeReason,
    User,
    UserChanges,
)
from domain.ports import (
    Clock,
    LoginThrottle,
    PasswordHasher,
    RegistrationThrottle,
    SessionStore,
    UnitOfWork,
    UnitOfWorkFactory,
)
from domain.rules import normalize_email
from domain.sessions import announce, commit_ending_sessions


@dataclass(frozen=True)
class RegisterUser:
    """Create an account (the wire model has already checked the rules)."""

    email: str
    username: str
    password: str
    full_name: str | None = None
    origin: Origin | None = None  # None: a caller in this process; no per-address limit


@dataclass(frozen=True)
class ChangePassword:
    current_password: str
    new_password: str


SELF_EDITABLE = frozenset({"email", "username", "full_name"})
WRONG_PASSWORDS = "Too many wrong passwords for this account; try again later."
TOO_MANY_REGISTRATIONS = "Too many registrations from this address; try again later."


class Accounts:
    """Accounts and their administration."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        hasher: PasswordHasher,
        sessions: SessionStore,
        throttle: LoginThrottle,
        registrations: RegistrationThrottle,
        clock: Clock,
        mailbox: Mailbox | None = None,
    ) -> None:
        self._uow = uow
        self._mailbox = mailbox or Mailbox(clock, MailPolicy())
        self._hasher = hasher
        self._sessions = sessions
        self._throttle = throttle
        self._registrations = registrations
        self._clock = clock

    def using(self, uow: UnitOfWorkFactory) -> Accounts:
        """These use cases with their units of work opened by `uow` (one request's, say)."""
        bound = copy.copy(self)
        bound._uow = uow
        return bound

    async def register(self, cmd: RegisterUser) -> User:
        """Store a new, active, non-superuser account and announce it."""
        email = normalize_email(cmd.email)
        async with self._uow() as uow:
            # Checked before hashing so a taken name costs no bcrypt; the unique
            # indexes still decide races between concurrent registrations.
            await uow.users.clash(email, cmd.username, exclude=None)
        await self._admit_registration(cmd.origin)
        hashed = await self._hasher.hash(cmd.password)
        return await self.create(NewUser(email, cmd.username, hashed, cmd.full_name))

    async def create(self, new: NewUser) -> User:
        """Store an account whose password is already hashed (registration, create-superuser);
        an unverified one is sent a verification mail, in the same transaction."""
        async with self._uow() as uow:
            user = await uow.users.add(new)
            self._record(uow, events.USER_REGISTERED, user)
            if not user.is_verified:
                await self._mailbox.send(uow, user, VERIFY_EMAIL, user.email)
            await uow.commit()
        return user

    async def update_me(self, principal: Principal, changes: UserChanges) -> User:
        """Change your own email, username or full name (and nothing else, whatever is sent)."""
        own = {k: v for k, v in changes.as_dict().items() if k in SELF_EDITABLE}
        return await self._update(principal.user.id, _normalized(UserChanges(**own)))

    async def change_password(self, principal: Principal, cmd: ChangePassword) -> None:
        """Set a new password; every other session of the user ends, this one goes on.

        A wrong current password counts toward the account's login lockout (a stolen access
        token must not buy unlimited password guesses), and a locked account's change is
        refused like its logins, before any bcrypt.
        """
        user = principal.user
        account = account_of(user.id)
        lockout = await self._throttle.lockout(account, None)
        if lockout is not None:
            raise TooManyAttempts(lockout.retry_after, WRONG_PASSWORDS)
        if not await self._hasher.verify(cmd.current_password, user.hashed_password):
            await self._throttle.record_failure(account, None)
            raise WrongPassword
        await self._throttle.clear(account)  # as a successful login does
        hashed = await self._hasher.hash(cmd.new_password)
        async with self._uow() as uow:
            changed = await uow.users.update(user, UserChanges(hashed_password=hashed))
            self._record(uow, events.USER_PASSWORD_CHANGED, changed)
            # Ended after the change is written, before it commits: Redis unreachable leaves
            # the old password in place, and the ended sessions' events commit with it.
            ended = await self._sessions.revoke_all(user.id, keep=principal.claims.session_id)
            announce(uow, ended, RevokeReason.PASSWORD_CHANGED, self._clock.now())
            await uow.commit()

    async def list_users(self, principal: Principal, query: UserQuery) -> UserPage:
        _require_superuser(principal)
        async with self._uow() as uow:
            return await uow.users.list(query)

    async def get_user(self, principal: Principal, user_id: int) -> User:
        """Superusers read anyone; a user reads only itself."""
        if principal.user.id == user_id:
            return principal.user
        _require_superuser(principal)
        async with self._uow() as uow:
            return await _existing(uow, user_id)

    async def update_user(self, principal: Principal, user_id: int, changes: UserChanges) -> User:
        """A superuser changes any account; deactivation ends its sessions at once."""
        _require_superuser(principal)
        return await self._update(user_id, _normalized(changes))

    async def delete_user(self, principal: Principal, user_id: int) -> None:
        """A superuser deletes an account; its sessions end at once."""
        _require_superuser(principal)
        async with self._uow() as uow:
            user = await _existing(uow, user_id)
            if user.is_active_superuser:
                await _keep_a_superuser(uow, user_id)
            await uow.users.delete(user_id)
            self._record(uow, events.USER_DELETED, user)
            await commit_ending_sessions(
                uow, self._sessions, self._clock, user_id, RevokeReason.DELETED
            )

    async def list_audit(self, principal: Principal, query: AuditQuery) -> AuditPage:
        _require_superuser(principal)
        async with self._uow() as uow:
            return await uow.audit.list(query)

    async def _update(self, user_id: int, changes: UserChanges) -> User:
        async with self._uow() as uow:
            user = await _existing(uow, user_id)
            changes = _unverified_if_moved(user, changes)
            if user.is_active_superuser and not user.with_changes(changes).is_active_superuser:
                await _keep_a_superuser(uow, user_id)
                user = await _existing(uow, user_id)  # re-read under the lock
            if user.with_changes(changes) == user:
                return user
            updated = await uow.users.update(user, changes)
            self._record(uow, events.USER_UPDATED, updated)
            if updated.email != user.email:
                await self._moved(uow, user, updated)
            if updated.is_active:
                await uow.commit()
            else:
                reason = RevokeReason.DEACTIVATED
                await commit_ending_sessions(uow, self._sessions, self._clock, user_id, reason)
        return updated

    async def revoke_sessions(self, principal: Principal, user_id: int) -> None:
        """A superuser ends every session of a user (404 for no such user)."""
        _require_superuser(principal)
        async with self._uow() as uow:
            await _existing(uow, user_id)
            ended = await self._sessions.revoke_all(user_id)
            announce(uow, ended, RevokeReason.ADMIN, self._clock.now())
            await uow.commit()

    async def _moved(self, uow: UnitOfWork, before: User, after: User) -> None:
        """An email change: a verification mail to the new address (unless a superuser set
        the account verified in the same change) and a notice to the old one."""
        extra = {"previous_email": before.email}
        uow.outbox.add(
            events.Event(events.USER_EMAIL_CHANGED, self._clock.now(), after.view(), extra)
        )
        if not after.is_verified:
            await self._mailbox.send(uow, after, VERIFY_EMAIL, after.email)
        await self._mailbox.send(uow, after, EMAIL_CHANGED, before.email)

    async def _admit_registration(self, origin: Origin | None) -> None:
        """Count a registration about to cost a bcrypt hash against its address's limit."""
        if origin is None:
            return
        wait = await self._registrations.admit(origin.address)
        if wait:
            raise TooManyAttempts(wait, TOO_MANY_REGISTRATIONS)

    def _record(self, uow: UnitOfWork, kind: str, user: User) -> None:
        uow.outbox.add(events.Event(kind, self._clock.now(), user.view()))


def _require_superuser(principal: Principal) -> None:
    if not principal.user.is_superuser:
        raise Forbidden


async def _existing(uow: UnitOfWork, user_id: int) -> User:
    user = await uow.users.get(user_id)
    if user is None:
        raise UserNotFound
    return user


async def _keep_a_superuser(uow: UnitOfWork, losing: int) -> None:
    """Refuse a change that leaves no active superuser, serialised against concurrent ones."""
    remaining = [uid for uid in await uow.users.lock_superusers() if uid != losing]
    if not remaining:
        raise LastSuperuser


def _unverified_if_moved(user: User, changes: UserChanges) -> UserChanges:
    """A new email is unverified, unless the change itself says otherwise (a superuser's)."""
    given = changes.as_dict()
    if given.get("email", user.email) == user.email or "is_verified" in given:
        return changes
    return UserChanges(**(given | {"is_verified": False}))


def _normalized(changes: UserChanges) -> UserChanges:
    email = changes.as_dict().get("email")
    if email is None:
        return changes
    return UserChanges(**(changes.as_dict() | {"email": normalize_email(email)}))
