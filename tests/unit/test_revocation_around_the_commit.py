"""A deactivation (and a password reset) ends the user's sessions on both sides of its commit.

Before it: Redis lost just after the commit must leave no session to come back to life with a
reactivation (the contract: a deactivated user's tokens stay dead after a reactivation).
After it: a login that read the user as still active, and opened its session once the first
revocation was done, must not outlive the deactivation either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from domain.accounts import Accounts
from domain.auth import Auth
from domain.errors import ServiceUnavailable, TokenRevoked
from domain.mail import RESET_PASSWORD
from domain.model import EndedSession, Principal, SessionStart, User, UserChanges
from domain.recovery import Recovery, ResetPassword
from tests.unit.fakes import EPOCH, FakeClock, FakeSessionStore, FakeUnitOfWorkFactory
from tests.unit.support import People
from warden.bootstrap import Services


class SessionsAroundTheCommit(FakeSessionStore):
    """Sessions where something happens right after the next revocation of all of a user's
    sessions, while the change is being committed: Redis goes away, or a racing login lands."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.down = False
        self.after_next_revocation: Callable[[], Awaitable[None]] | None = None

    async def revoke_all(self, user_id: int, keep: str | None = None) -> list[EndedSession]:
        if self.down:
            raise ServiceUnavailable("Redis cannot be reached.")
        ended = await super().revoke_all(user_id, keep)
        then, self.after_next_revocation = self.after_next_revocation, None
        if then is not None:
            await then()
        return ended


@pytest.fixture
def sessions(clock: FakeClock) -> SessionsAroundTheCommit:
    return SessionsAroundTheCommit(clock)


@pytest.fixture
async def alice(people: People) -> User:
    return await people.add("alice")


@pytest.fixture
async def admin(people: People) -> Principal:
    return (await people.sign_in(await people.add("root", superuser=True))).principal


async def test_redis_lost_after_the_commit_leaves_no_session_to_come_back_on_reactivation(
    accounts: Accounts,
    auth: Auth,
    people: People,
    sessions: SessionsAroundTheCommit,
    admin: Principal,
    alice: User,
) -> None:
    login = await people.sign_in(alice)

    async def redis_goes_away() -> None:
        sessions.down = True

    sessions.after_next_revocation = redis_goes_away
    with pytest.raises(ServiceUnavailable):  # the caller hears of the outage
        await accounts.update_user(admin, alice.id, UserChanges(is_active=False))
    sessions.down = False
    await accounts.update_user(admin, alice.id, UserChanges(is_active=True))

    assert sessions.of_user(alice.id) == []
    with pytest.raises(TokenRevoked):
        await auth.authenticate(login.bearer)


async def test_a_login_that_raced_the_deactivation_does_not_outlive_it(
    accounts: Accounts,
    sessions: SessionsAroundTheCommit,
    admin: Principal,
    alice: User,
) -> None:
    async def a_login_that_read_alice_as_active_opens_its_session() -> None:
        await sessions.create(alice.id, "raced-session", "raced-refresh", SessionStart(EPOCH))

    sessions.after_next_revocation = a_login_that_read_alice_as_active_opens_its_session
    await accounts.update_user(admin, alice.id, UserChanges(is_active=False))

    assert sessions.of_user(alice.id) == []


# A password reset by mail ends every session of the user the same way, on both sides.


async def reset_token(recovery: Recovery, uow: FakeUnitOfWorkFactory, user: User) -> str:
    await recovery.forgot_password(user.email)
    token = uow.mails.sent(RESET_PASSWORD, user.email)[-1].token
    assert token is not None
    return token


async def test_redis_lost_after_a_reset_commits_leaves_no_session_of_the_user(
    services: Services,
    uow: FakeUnitOfWorkFactory,
    people: People,
    sessions: SessionsAroundTheCommit,
    alice: User,
) -> None:
    await people.sign_in(alice)
    token = await reset_token(services.recovery, uow, alice)

    async def redis_goes_away() -> None:
        sessions.down = True

    sessions.after_next_revocation = redis_goes_away
    with pytest.raises(ServiceUnavailable):
        await services.recovery.reset_password(ResetPassword(token, "a brand new passphrase"))
    sessions.down = False

    assert sessions.of_user(alice.id) == []


async def test_a_login_that_raced_a_reset_does_not_outlive_it(
    services: Services,
    uow: FakeUnitOfWorkFactory,
    sessions: SessionsAroundTheCommit,
    alice: User,
) -> None:
    token = await reset_token(services.recovery, uow, alice)

    async def a_login_with_the_old_password_opens_its_session() -> None:
        await sessions.create(alice.id, "raced-session", "raced-refresh", SessionStart(EPOCH))

    sessions.after_next_revocation = a_login_with_the_old_password_opens_its_session
    await services.recovery.reset_password(ResetPassword(token, "a brand new passphrase"))

    assert sessions.of_user(alice.id) == []
