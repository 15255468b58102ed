"""RFC 7009 revocation: any genuine token of a session, even an expired one, ends it; nothing
else changes anything, and the caller is told the same either way."""

from __future__ import annotations

import pytest

from domain import events
from domain.auth import Auth
from domain.errors import TokenRevoked
from domain.model import User
from tests.unit.fakes import FakeClock, FakeSessionStore, FakeTokenIssuer, FakeUnitOfWorkFactory
from tests.unit.support import ACCESS_TTL, REFRESH_TTL, People, holder


@pytest.fixture
async def alice(people: People) -> User:
    return await people.add("alice")


@pytest.fixture
async def bob(people: People) -> User:
    return await people.add("bob")


@pytest.mark.parametrize("kind", ["access_token", "refresh_token"])
async def test_revoking_either_token_ends_its_whole_session(
    auth: Auth, people: People, alice: User, kind: str
) -> None:
    login = await people.sign_in(alice)

    await auth.revoke(getattr(login.pair, kind))

    with pytest.raises(TokenRevoked):
        await auth.authenticate(login.bearer)
    with pytest.raises(TokenRevoked):
        await auth.refresh(login.pair.refresh_token)


async def test_a_revocation_records_logged_out_with_the_session_as_a_logout_does(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    login = await people.sign_in(alice)

    await auth.revoke(login.pair.refresh_token)

    [event] = uow.events(events.USER_LOGGED_OUT)
    assert event.user == alice.view()
    assert event.extra == {"session_id": login.session_id}
    [ended] = uow.events(events.SESSION_REVOKED)  # and its session.revoked, as a logout's
    assert (ended.extra["session_id"], ended.extra["reason"]) == (login.session_id, "logout")


async def test_a_revocation_leaves_the_users_other_sessions_alone(
    auth: Auth, people: People, alice: User
) -> None:
    leaving = await people.sign_in(alice)
    staying = await people.sign_in(alice)

    await auth.revoke(leaving.pair.access_token)

    assert (await auth.authenticate(staying.bearer)).user == alice
    assert await holder(auth, await auth.refresh(staying.pair.refresh_token)) == alice.id


async def test_an_expired_but_genuine_access_token_still_ends_its_session(
    auth: Auth, people: People, clock: FakeClock, alice: User
) -> None:
    login = await people.sign_in(alice)
    clock.advance(ACCESS_TTL + 1)  # the access token is over; its session lives on

    await auth.revoke(login.pair.access_token)

    with pytest.raises(TokenRevoked):
        await auth.refresh(login.pair.refresh_token)


async def test_an_expired_refresh_token_ends_its_session_too(
    auth: Auth,
    people: People,
    clock: FakeClock,
    sessions: FakeSessionStore,
    alice: User,
) -> None:
    login = await people.sign_in(alice)
    clock.advance(REFRESH_TTL + 1)  # the fake store's sessions do not expire: still live

    await auth.revoke(login.pair.refresh_token)

    assert login.session_id not in sessions.sessions


async def test_a_spent_refresh_token_of_the_session_ends_it(
    auth: Auth, people: People, sessions: FakeSessionStore, alice: User
) -> None:
    login = await people.sign_in(alice)
    newest = await auth.refresh(login.pair.refresh_token)

    await auth.revoke(login.pair.refresh_token)

    with pytest.raises(TokenRevoked):
        await auth.refresh(newest.refresh_token)


@pytest.mark.parametrize(
    "token", ["", "garbage", "access:1:sid:jti:0:9999999999", "refresh:1:sid:jti:9999999999"]
)
async def test_a_token_this_service_never_signed_changes_nothing(
    auth: Auth,
    people: People,
    uow: FakeUnitOfWorkFactory,
    sessions: FakeSessionStore,
    alice: User,
    token: str,
) -> None:
    login = await people.sign_in(alice)
    before = dict(sessions.sessions)

    await auth.revoke(token.replace("sid", login.session_id).replace(":1:", f":{alice.id}:"))

    assert sessions.sessions == before
    assert uow.events(events.USER_LOGGED_OUT) == []


async def test_a_token_signed_for_another_user_does_not_end_someone_elses_session(
    auth: Auth,
    people: People,
    tokens: FakeTokenIssuer,
    clock: FakeClock,
    uow: FakeUnitOfWorkFactory,
    alice: User,
    bob: User,
) -> None:
    victim = await people.sign_in(alice)
    # Genuinely signed, but for bob, naming alice's session (as a leaked signing key or a
    # confused issuer could make): it must not reach her session.
    crossed = tokens.issue_refresh(bob.id, victim.session_id, "x", clock.now())

    await auth.revoke(crossed)

    assert (await auth.authenticate(victim.bearer)).user == alice
    assert uow.events(events.USER_LOGGED_OUT) == []


async def test_revoking_an_ended_session_again_records_nothing_more(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    login = await people.sign_in(alice)
    await auth.revoke(login.pair.access_token)

    await auth.revoke(login.pair.access_token)
    await auth.revoke(login.pair.refresh_token)

    assert len(uow.events(events.USER_LOGGED_OUT)) == 1


async def test_a_revocation_for_a_user_gone_meanwhile_ends_the_session_without_an_event(
    auth: Auth,
    people: People,
    uow: FakeUnitOfWorkFactory,
    sessions: FakeSessionStore,
    alice: User,
) -> None:
    login = await people.sign_in(alice)
    await uow.users.delete(alice.id)  # behind the service's back: its sessions live on

    await auth.revoke(login.pair.refresh_token)

    assert login.session_id not in sessions.sessions
    assert uow.events(events.USER_LOGGED_OUT) == []
