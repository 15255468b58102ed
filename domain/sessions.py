"""Use cases of a user's own sessions: see where you are logged in, end one, end the others."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from domain import events
from domain.errors import SessionNotFound
from domain.model import EndedSession, Principal, RevokeReason, SessionInfo
from domain.ports import Clock, SessionStore, UnitOfWork, UnitOfWorkFactory


@dataclass(frozen=True)
class SessionEntry:
    """One line of the caller's session list: `current` marks the caller's own."""

    session: SessionInfo
    current: bool


class Sessions:
    """The caller's live sessions (superusers end another user's in Accounts)."""

    def __init__(self, uow: UnitOfWorkFactory, sessions: SessionStore, clock: Clock) -> None:
        self._uow = uow
        self._sessions = sessions
        self._clock = clock

    def using(self, uow: UnitOfWorkFactory) -> Sessions:
        """These use cases with their units of work opened by `uow` (one request's, say)."""
        bound = copy.copy(self)
        bound._uow = uow
        return bound

    async def list_mine(self, principal: Principal) -> list[SessionEntry]:
        """The caller's live sessions, newest first; none of another user's."""
        own = principal.claims.session_id
        found = await self._sessions.live(principal.user.id)
        return [SessionEntry(s, s.id == own) for s in found]

    async def revoke_mine(self, principal: Principal, session_id: str) -> None:
        """End one of the caller's sessions (the current one too: that is a logout).

        Another user's session, an unknown or an already ended one is SessionNotFound alike,
        so the answer tells nothing of sessions that are not the caller's.
        """
        ended = await self._sessions.revoke(session_id, principal.user.id)
        if ended is None:
            raise SessionNotFound
        await self._announce([ended])

    async def revoke_others(self, principal: Principal) -> None:
        """End every session of the caller but the one the call came with."""
        own = principal.claims.session_id
        await self._announce(await self._sessions.revoke_all(principal.user.id, keep=own))

    async def _announce(self, ended: list[EndedSession]) -> None:
        if not ended:
            return
        async with self._uow() as uow:
            for session in ended:
                uow.outbox.add(
                    events.session_revoked(session, RevokeReason.USER, self._clock.now())
                )
            await uow.commit()


def announce(
    uow: UnitOfWork, ended: Iterable[EndedSession], reason: RevokeReason, now: datetime
) -> None:
    """One `session.revoked` per session a revocation ended, in the unit that ended it."""
    for session in ended:
        uow.outbox.add(events.session_revoked(session, reason, now))


async def commit_ending_sessions(
    uow: UnitOfWork, sessions: SessionStore, clock: Clock, user_id: int, reason: RevokeReason
) -> None:
    """Commit a change (deactivation, deletion, password reset) with every session of the user
    gone.

    Revoked before the commit, so a Redis failure leaves nothing changed (and no session
    that would come back to life with a reactivation); again after it, for a login that
    raced the commit. Each ended session's event commits with what ended it: the first
    ones with the change; a raced one's in a second commit of the same unit (which, for
    an idempotent change, writes the same reply again rather than a second one).
    """
    announce(uow, await sessions.revoke_all(user_id), reason, clock.now())
    await uow.commit()
    late = await sessions.revoke_all(user_id)
    if late:
        announce(uow, late, reason, clock.now())
        await uow.commit()
