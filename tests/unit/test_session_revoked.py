"""session.revoked: one event per session that ended, whatever ended it, and never two."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from domain import events
from domain.accounts import Accounts, ChangePassword
from domain.auth import Auth
from domain.errors import ServiceUnavailable, TokenReused, TokenRevoked
from domain.model import EndedSession, RevokeReason, SessionStart, User, UserChanges
from domain.sessions import Sessions
from tests.unit.fakes import EPOCH, FakeClock, FakeSessionStore, FakeUnitOfWorkFactory
from tests.unit.support import ACCESS_TTL, People, SignedIn


@pytest.fixture
async def alice(people: People) -> User:
    return await people.add("alice")


@pytest.fixture
async def boss(people: People) -> SignedIn:
    return await people.sign_in(await people.add("boss", superuser=True))


def revoked(uow: FakeUnitOfWorkFactory, user: User) -> dict[str, str]:
    """session id -> reason, of every session.revoked about the user; one per session."""
    found = [e for e in uow.events(events.SESSION_REVOKED) if e.user_id == user.id]
    by_session = {e.extra["session_id"]: e.extra["reason"] for e in found}
    assert len(by_session) == len(found), "a session was announced twice"
    return by_session


async def test_a_logout_announces_its_session_once_with_when_its_tokens_die(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, clock: FakeClock, alice: User
) -> None:
    login = await people.sign_in(alice)
    issued = clock.now()
    clock.advance(100)

    await auth.logout(login.principal)

    (event,) = uow.events(events.SESSION_REVOKED)
    assert event.extra == {
        "session_id": login.session_id,
        "user_id": alice.id,
        "reason": "logout",
        "expires_at": issued + timedelta(seconds=ACCESS_TTL),
    }
    assert event.subject == str(alice.id)
    assert [e.type for e in uow.events()][-2:] == [events.USER_LOGGED_OUT, events.SESSION_REVOKED]


async def test_the_expiry_is_that_of_the_newest_access_token_of_the_session(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, clock: FakeClock, alice: User
) -> None:
    login = await people.sign_in(alice)
    clock.advance(600)
    await auth.refresh(login.pair.refresh_token)
    refreshed = clock.now()
    clock.advance(60)

    await auth.logout(login.principal)

    (event,) = uow.events(events.SESSION_REVOKED)
    assert event.extra["expires_at"] == refreshed + timedelta(seconds=ACCESS_TTL)


async def test_a_reuse_announces_the_session_it_ended_with_the_reuse(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    login = await people.sign_in(alice)
    await auth.refresh(login.pair.refresh_token)

    with pytest.raises(TokenReused):
        await auth.refresh(login.pair.refresh_token)
    with pytest.raises(TokenRevoked):  # the same spent token once more: nothing ends twice
        await auth.refresh(login.pair.refresh_token)

    assert revoked(uow, alice) == {login.session_id: "token_reuse"}
    kinds = [e.type for e in uow.events()]
    assert kinds[-2:] == [events.USER_TOKEN_REUSE_DETECTED, events.SESSION_REVOKED]


async def test_a_reuse_for_a_user_gone_meanwhile_still_announces_the_session(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    login = await people.sign_in(alice)
    await auth.refresh(login.pair.refresh_token)
    await uow.users.delete(alice.id)  # behind the service's back: its sessions live on

    with pytest.raises(TokenReused):
        await auth.refresh(login.pair.refresh_token)

    assert revoked(uow, alice) == {login.session_id: "token_reuse"}


async def test_a_password_change_announces_every_other_session(
    accounts: Accounts, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    here = await people.sign_in(alice)
    others = [await people.sign_in(alice) for _ in range(2)]

    change = ChangePassword(people.password_of(alice), "a-new-password")
    await accounts.change_password(here.principal, change)

    assert revoked(uow, alice) == {o.session_id: "password_changed" for o in others}
    kinds = [e.type for e in uow.events()][-3:]
    assert kinds == [events.USER_PASSWORD_CHANGED, events.SESSION_REVOKED, events.SESSION_REVOKED]


async def test_a_password_change_that_redis_refuses_announces_nothing_and_changes_nothing(
    accounts: Accounts,
    people: People,
    uow: FakeUnitOfWorkFactory,
    sessions: FakeSessionStore,
    alice: User,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    here = await people.sign_in(alice)
    await people.sign_in(alice)

    async def unreachable(user_id: int, keep: str | None = None) -> list[EndedSession]:
        raise ServiceUnavailable

    monkeypatch.setattr(sessions, "revoke_all", unreachable)
    with pytest.raises(ServiceUnavailable):
        await accounts.change_password(here.principal, ChangePassword("alice-password", "n-e-w-pw"))

    assert revoked(uow, alice) == {}
    assert uow.events(events.USER_PASSWORD_CHANGED) == []
    assert (await uow.users.get(alice.id)) == alice


@pytest.mark.parametrize(
    ("change", "reason"), [("deactivate", "deactivated"), ("delete", "deleted")]
)
async def test_a_deactivation_or_deletion_announces_every_session_of_the_user(
    accounts: Accounts,
    people: People,
    uow: FakeUnitOfWorkFactory,
    boss: SignedIn,
    alice: User,
    change: str,
    reason: str,
) -> None:
    logins = [await people.sign_in(alice) for _ in range(2)]

    if change == "delete":
        await accounts.delete_user(boss.principal, alice.id)
    else:
        await accounts.update_user(boss.principal, alice.id, UserChanges(is_active=False))

    assert revoked(uow, alice) == {login.session_id: reason for login in logins}
    assert revoked(uow, boss.principal.user) == {}


async def test_a_session_that_raced_a_deactivation_is_announced_after_its_commit(
    people: People,
    uow: FakeUnitOfWorkFactory,
    sessions: FakeSessionStore,
    boss: SignedIn,
    alice: User,
    accounts: Accounts,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = await people.sign_in(alice)
    calls = 0
    plain = sessions.revoke_all

    async def a_login_lands_between(user_id: int, keep: str | None = None) -> list[EndedSession]:
        nonlocal calls
        calls += 1
        ended = await plain(user_id, keep)
        if calls == 1:  # a login that read alice as active opens its session now
            await sessions.create(alice.id, "raced", "raced-refresh", SessionStart(EPOCH))
        return ended

    monkeypatch.setattr(sessions, "revoke_all", a_login_lands_between)
    await accounts.update_user(boss.principal, alice.id, UserChanges(is_active=False))

    assert revoked(uow, alice) == {first.session_id: "deactivated", "raced": "deactivated"}
    kinds = [e.type for e in uow.events() if e.user_id == alice.id][-3:]
    assert kinds == [events.USER_UPDATED, events.SESSION_REVOKED, events.SESSION_REVOKED]
    assert uow.changed()[-1].is_active is False  # a second commit keeps what the unit changed


async def test_a_superuser_ends_every_session_of_a_user(
    accounts: Accounts,
    auth: Auth,
    people: People,
    uow: FakeUnitOfWorkFactory,
    boss: SignedIn,
    alice: User,
) -> None:
    logins = [await people.sign_in(alice) for _ in range(2)]

    await accounts.revoke_sessions(boss.principal, alice.id)

    assert revoked(uow, alice) == {login.session_id: "admin" for login in logins}
    for login in logins:
        with pytest.raises(TokenRevoked):
            await auth.authenticate(login.bearer)
    await auth.authenticate(boss.bearer)  # the superuser's own go on


async def test_a_user_ending_a_session_or_the_others_announces_each_as_the_users(
    sessions_of_users: Sessions,
    people: People,
    uow: FakeUnitOfWorkFactory,
    alice: User,
) -> None:
    here, phone, laptop, tablet = [await people.sign_in(alice) for _ in range(4)]

    await sessions_of_users.revoke_mine(here.principal, phone.session_id)
    await sessions_of_users.revoke_others(here.principal)

    assert revoked(uow, alice) == {s.session_id: "user" for s in (phone, laptop, tablet)}


async def test_revocations_racing_for_the_same_sessions_announce_each_once(
    auth: Auth,
    accounts: Accounts,
    sessions_of_users: Sessions,
    people: People,
    uow: FakeUnitOfWorkFactory,
    boss: SignedIn,
    alice: User,
) -> None:
    here, other = await people.sign_in(alice), await people.sign_in(alice)

    await asyncio.gather(
        auth.logout(other.principal),
        sessions_of_users.revoke_others(here.principal),
        sessions_of_users.revoke_others(here.principal),
        accounts.revoke_sessions(boss.principal, alice.id),
        accounts.revoke_sessions(boss.principal, alice.id),
        return_exceptions=True,
    )

    assert set(revoked(uow, alice)) == {here.session_id, other.session_id}


async def test_no_event_for_a_revocation_that_ended_nothing(
    accounts: Accounts,
    sessions_of_users: Sessions,
    uow: FakeUnitOfWorkFactory,
    people: People,
    boss: SignedIn,
    alice: User,
) -> None:
    here = await people.sign_in(alice)

    await sessions_of_users.revoke_others(here.principal)
    await accounts.revoke_sessions(boss.principal, (await people.add("nobody")).id)

    assert uow.events(events.SESSION_REVOKED) == []


def test_the_reasons_of_the_domain_are_the_contracts() -> None:
    assert {r.value for r in RevokeReason} == {
        "logout",
        "token_reuse",
        "password_changed",
        "password_reset",
        "deactivated",
        "deleted",
        "admin",
        "user",
    }


async def test_ending_a_session_that_is_not_live_writes_nothing(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    login = await people.sign_in(alice)
    before = len(uow.events())

    assert not await auth.end_session("no-such-session", alice.id, RevokeReason.LOGOUT)
    assert not await auth.end_session(login.session_id, alice.id + 1, RevokeReason.LOGOUT)

    assert len(uow.events()) == before
    assert await auth.end_session(login.session_id, alice.id, RevokeReason.LOGOUT)
    assert revoked(uow, alice) == {login.session_id: "logout"}


async def test_a_users_revocation_using_a_requests_units_writes_its_events_through_them(
    sessions_of_users: Sessions,
    people: People,
    uow: FakeUnitOfWorkFactory,
    clock: FakeClock,
    alice: User,
) -> None:
    here, other = await people.sign_in(alice), await people.sign_in(alice)
    requests = FakeUnitOfWorkFactory(clock)

    await sessions_of_users.using(requests).revoke_others(here.principal)

    [event] = requests.events(events.SESSION_REVOKED)
    assert event.extra["session_id"] == other.session_id
    assert uow.events(events.SESSION_REVOKED) == []


@pytest.mark.parametrize(
    ("change", "reason"), [("deactivate", "deactivated"), ("delete", "deleted")]
)
async def test_a_refresh_that_finds_its_user_gone_or_inactive_announces_why(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, alice: User, change: str, reason: str
) -> None:
    # A change made outside the use cases left the session open; the refresh ends it.
    login = await people.sign_in(alice)
    if change == "delete":
        await uow.users.delete(alice.id)
    else:
        await uow.users.update(alice, UserChanges(is_active=False))

    with pytest.raises(TokenRevoked):
        await auth.refresh(login.pair.refresh_token)

    assert revoked(uow, alice) == {login.session_id: reason}
