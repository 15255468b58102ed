"""Use cases of account recovery by email: verify an address, reset a forgotten password."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from domain import events
from domain.errors import InvalidEmailToken
from domain.mail import RESET_PASSWORD, VERIFY_EMAIL, Mailbox, digest
from domain.model import EmailToken, RevokeReason, User, UserChanges
from domain.ports import Clock, PasswordHasher, SessionStore, UnitOfWork, UnitOfWorkFactory
from domain.rules import normalize_email
from domain.sessions import commit_ending_sessions


@dataclass(frozen=True)
class ResetPassword:
    """Set a new password with the token of a reset mail (the wire model checked the rules)."""

    token: str
    new_password: str


class Recovery:
    """Mails that prove an address is the user's, and what their tokens unlock."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        hasher: PasswordHasher,
        sessions: SessionStore,
        clock: Clock,
        mailbox: Mailbox,
    ) -> None:
        self._uow = uow
        self._hasher = hasher
        self._sessions = sessions
        self._clock = clock
        self._mailbox = mailbox

    def using(self, uow: UnitOfWorkFactory) -> Recovery:
        """These use cases with their units of work opened by `uow` (one request's, say)."""
        bound = copy.copy(self)
        bound._uow = uow
        return bound

    async def request_verification(self, email: str) -> None:
        """Mail a verification link to an active, unverified account's address; else nothing."""
        await self._offer(email, VERIFY_EMAIL, lambda u: u.is_active and not u.is_verified)

    async def forgot_password(self, email: str) -> None:
        """Mail a password reset link to an active account's address; else nothing."""
        await self._offer(email, RESET_PASSWORD, lambda u: u.is_active)

    async def verify(self, token: str) -> User:
        """Spend a verification token: the address it was sent to is now verified."""
        async with self._uow() as uow:
            spent = await uow.tokens.spend(digest(token), VERIFY_EMAIL, self._clock.now())
            user = await _owner(uow, spent)
            if not user.is_verified:
                user = await uow.users.update(user, UserChanges(is_verified=True))
                uow.outbox.add(events.Event(events.USER_VERIFIED, self._clock.now(), user.view()))
            await uow.commit()
        return user

    async def reset_password(self, cmd: ResetPassword) -> None:
        """Spend a reset token: set the new password, end every session of the user, and spend
        the user's other reset tokens. The reset proves the address, so it is verified too."""
        hashed_token = digest(cmd.token)
        async with self._uow() as uow:
            # Looked at first, so a wrong token costs no bcrypt; spent below, atomically.
            if await uow.tokens.find(hashed_token, RESET_PASSWORD, self._clock.now()) is None:
                raise InvalidEmailToken
        hashed = await self._hasher.hash(cmd.new_password)
        async with self._uow() as uow:
            now = self._clock.now()
            user = await _owner(uow, await uow.tokens.spend(hashed_token, RESET_PASSWORD, now))
            await uow.tokens.spend_all(user.id, RESET_PASSWORD, now)
            changes = UserChanges(hashed_password=hashed, is_verified=True)
            changed = await uow.users.update(user, changes)
            uow.outbox.add(events.Event(events.USER_PASSWORD_RESET, now, changed.view()))
            # Redis away leaves the password as it was; a login that raced the commit with
            # the old password does not outlive it.
            reason = RevokeReason.PASSWORD_RESET
            await commit_ending_sessions(uow, self._sessions, self._clock, user.id, reason)

    async def _offer(self, email: str, kind: str, eligible: Callable[[User], bool]) -> None:
        """Queue a mail of `kind` if the address is an eligible account's and the hourly limit
        allows. Every address costs the same statements: the limit's count (and its lock) is
        asked before the user is known, and the unit commits either way."""
        address = normalize_email(email)
        async with self._uow() as uow:
            allowed = await self._mailbox.allowed(uow, kind, address)
            user = await uow.users.get_by_login(address)
            if allowed and user is not None and user.email == address and eligible(user):
                await self._mailbox.queue(uow, user, kind, address)
            await uow.commit()


async def _owner(uow: UnitOfWork, spent: EmailToken | None) -> User:
    """The active user a spent token belongs to, while the address it went to is still theirs."""
    if spent is None:
        raise InvalidEmailToken
    user = await uow.users.get(spent.user_id)
    if user is None or not user.is_active or user.email != spent.email:
        raise InvalidEmailToken
    return user
