"""A user's sessions: listed with where and when, one ended, the others ended; and two tabs
refreshing at once within the reuse interval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from domain import events
from domain.auth import Auth
from domain.errors import SessionNotFound, TokenReused, TokenRevoked
from domain.model import Origin, User
from domain.sessions import Sessions
from tests.unit.fakes import (
    FakeClock,
    FakeLoginThrottle,
    FakePasswordHasher,
    FakeRegistrationThrottle,
    FakeSessionStore,
    FakeTokenIssuer,
    FakeUnitOfWorkFactory,
)
from tests.unit.support import People, holder, unit_settings
from warden.bootstrap import Services, build_services

FIREFOX = Origin(client_ip="203.0.113.7", publisher="edge", user_agent="Firefox/140")
PHONE = Origin(client_ip="198.51.100.2", publisher="edge", user_agent="Phone/1.0")


@pytest.fixture
async def alice(people: People) -> User:
    return await people.add("alice")


async def test_a_session_lists_where_and_when_it_was_opened_and_marks_the_callers(
    sessions_of_users: Sessions, people: People, clock: FakeClock, alice: User
) -> None:
    laptop = await people.sign_in(alice, FIREFOX)
    opened = clock.now()
    clock.advance(30)
    phone = await people.sign_in(alice, PHONE)
    await people.sign_in(await people.add("bob"), FIREFOX)  # not alice's

    entries = await sessions_of_users.list_mine(laptop.principal)

    assert [(e.session.id, e.current) for e in entries] == [
        (phone.session_id, False),  # newest first
        (laptop.session_id, True),
    ]
    first = entries[1].session
    assert (first.ip, first.user_agent) == ("203.0.113.7", "Firefox/140")
    assert first.created_at == first.last_used_at == opened
    assert entries[0].session.user_agent == "Phone/1.0"


async def test_a_refresh_and_a_bearer_call_a_minute_apart_note_the_sessions_use(
    auth: Auth, sessions_of_users: Sessions, people: People, clock: FakeClock, alice: User
) -> None:
    login = await people.sign_in(alice)
    opened = clock.now()
    clock.advance(10)
    await auth.refresh(login.pair.refresh_token)
    refreshed = clock.now()
    clock.advance(30)
    await auth.authenticate(login.bearer)  # within the minute: not noted

    (entry,) = await sessions_of_users.list_mine(login.principal)
    assert (entry.session.created_at, entry.session.last_used_at) == (opened, refreshed)

    clock.advance(31)
    await auth.authenticate(login.bearer)
    (entry,) = await sessions_of_users.list_mine(login.principal)
    assert entry.session.last_used_at == clock.now()


async def test_a_user_ends_one_session_whose_tokens_then_stop_at_once(
    auth: Auth, sessions_of_users: Sessions, people: People, alice: User
) -> None:
    here, phone = await people.sign_in(alice), await people.sign_in(alice)

    await sessions_of_users.revoke_mine(here.principal, phone.session_id)

    with pytest.raises(TokenRevoked):
        await auth.authenticate(phone.bearer)
    with pytest.raises(TokenRevoked):
        await auth.refresh(phone.pair.refresh_token)
    assert await holder(auth, here.pair) == alice.id
    assert [e.session.id for e in await sessions_of_users.list_mine(here.principal)] == [
        here.session_id
    ]


async def test_another_users_or_an_unknown_session_is_not_found_and_left_alone(
    auth: Auth, sessions_of_users: Sessions, people: People, alice: User
) -> None:
    here = await people.sign_in(alice)
    bob = await people.sign_in(await people.add("bob"))

    with pytest.raises(SessionNotFound):
        await sessions_of_users.revoke_mine(here.principal, bob.session_id)
    with pytest.raises(SessionNotFound):
        await sessions_of_users.revoke_mine(here.principal, "no-such-session")

    assert await holder(auth, bob.pair) == bob.principal.user.id


async def test_ending_the_others_keeps_only_the_callers_session(
    auth: Auth, sessions_of_users: Sessions, people: People, alice: User
) -> None:
    here, *others = [await people.sign_in(alice) for _ in range(3)]
    bob = await people.sign_in(await people.add("bob"))

    await sessions_of_users.revoke_others(here.principal)

    for other in others:
        with pytest.raises(TokenRevoked):
            await auth.authenticate(other.bearer)
    assert await holder(auth, here.pair) == alice.id
    assert await holder(auth, bob.pair) == bob.principal.user.id


async def test_ending_ones_own_session_from_the_list_is_a_logout(
    auth: Auth, sessions_of_users: Sessions, people: People, alice: User
) -> None:
    here = await people.sign_in(alice)

    await sessions_of_users.revoke_mine(here.principal, here.session_id)

    with pytest.raises(TokenRevoked):
        await auth.authenticate(here.bearer)


# --- the reuse interval -------------------------------------------------------------------

INTERVAL = 5


@pytest.fixture
async def lenient(
    uow: FakeUnitOfWorkFactory,
    hasher: FakePasswordHasher,
    tokens: FakeTokenIssuer,
    sessions: FakeSessionStore,
    throttle: FakeLoginThrottle,
    registrations: FakeRegistrationThrottle,
    clock: FakeClock,
) -> AsyncIterator[Services]:
    """The services with WARDEN_REFRESH_REUSE_INTERVAL=5."""
    services = build_services(
        unit_settings(refresh_reuse_interval=INTERVAL),
        uow=uow,
        hasher=hasher,
        tokens=tokens,
        sessions=sessions,
        throttle=throttle,
        registrations=registrations,
        clock=clock,
    )
    yield services
    await services.close()


async def test_without_an_interval_the_second_tab_is_reuse_and_ends_the_session(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    login = await people.sign_in(alice)
    first_tab = await auth.refresh(login.pair.refresh_token)

    with pytest.raises(TokenReused):
        await auth.refresh(login.pair.refresh_token)

    with pytest.raises(TokenRevoked):
        await auth.authenticate(f"Bearer {first_tab.access_token}")
    assert len(uow.events(events.SESSION_REVOKED)) == 1


async def test_within_the_interval_both_tabs_come_away_with_a_working_pair(
    lenient: Services,
    people: People,
    tokens: FakeTokenIssuer,
    clock: FakeClock,
    uow: FakeUnitOfWorkFactory,
    alice: User,
) -> None:
    auth = lenient.auth
    login = await people.sign_in(alice)
    first_tab = await auth.refresh(login.pair.refresh_token)
    clock.advance(INTERVAL - 1)

    second_tab = await auth.refresh(login.pair.refresh_token)

    assert await holder(auth, first_tab) == await holder(auth, second_tab) == alice.id
    # Both hold the session's current refresh token: either may refresh next.
    first_refresh = tokens.read_refresh(first_tab.refresh_token)
    assert tokens.read_refresh(second_tab.refresh_token).token_id == first_refresh.token_id
    third = await auth.refresh(second_tab.refresh_token)
    assert tokens.read_access(third.access_token).session_id == login.session_id
    assert uow.events(events.SESSION_REVOKED) == []


async def test_after_the_interval_the_spent_token_is_reuse_again(
    lenient: Services, people: People, clock: FakeClock, alice: User
) -> None:
    auth = lenient.auth
    login = await people.sign_in(alice)
    first_tab = await auth.refresh(login.pair.refresh_token)
    clock.advance(INTERVAL)

    with pytest.raises(TokenReused):
        await auth.refresh(login.pair.refresh_token)

    with pytest.raises(TokenRevoked):
        await auth.authenticate(f"Bearer {first_tab.access_token}")


async def test_the_interval_covers_only_the_token_the_last_refresh_spent(
    lenient: Services, people: People, alice: User
) -> None:
    auth = lenient.auth
    login = await people.sign_in(alice)
    second = await auth.refresh(login.pair.refresh_token)
    await auth.refresh(second.refresh_token)

    with pytest.raises(TokenReused):  # spent two rotations ago: a copy, not a second tab
        await auth.refresh(login.pair.refresh_token)


async def test_a_retry_within_the_interval_extends_when_the_sessions_tokens_die(
    lenient: Services,
    people: People,
    clock: FakeClock,
    uow: FakeUnitOfWorkFactory,
    alice: User,
) -> None:
    auth = lenient.auth
    login = await people.sign_in(alice)
    await auth.refresh(login.pair.refresh_token)
    clock.advance(INTERVAL - 1)
    await auth.refresh(login.pair.refresh_token)
    retried = clock.now()

    await auth.logout(login.principal)

    (event,) = uow.events(events.SESSION_REVOKED)
    assert event.extra["expires_at"] == retried + timedelta(seconds=1800)
