"""Sessions: refresh rotates, a spent refresh token revokes the session, logout ends it."""

from __future__ import annotations

import pytest

from domain import events
from domain.accounts import Accounts
from domain.auth import Auth
from domain.errors import InvalidToken, TokenExpired, TokenReused, TokenRevoked
from domain.model import User, UserChanges
from tests.unit.fakes import (
    FakeClock,
    FakeSession,
    FakeSessionStore,
    FakeTokenIssuer,
    FakeUnitOfWorkFactory,
)
from tests.unit.support import ACCESS_TTL, REFRESH_TTL, People, holder


@pytest.fixture
async def alice(people: People) -> User:
    return await people.add("alice")


@pytest.fixture
async def admin(people: People) -> User:
    return await people.add("admin", superuser=True)


async def test_a_refresh_returns_a_new_pair_of_the_same_session(
    auth: Auth, people: People, tokens: FakeTokenIssuer, alice: User
) -> None:
    login = await people.sign_in(alice)

    pair = await auth.refresh(login.pair.refresh_token)

    assert pair.refresh_token != login.pair.refresh_token
    assert pair.access_token != login.pair.access_token
    assert tokens.read_access(pair.access_token).session_id == login.session_id
    assert tokens.read_refresh(pair.refresh_token).session_id == login.session_id
    assert (pair.expires_in, pair.refresh_expires_in) == (ACCESS_TTL, REFRESH_TTL)
    principal = await auth.authenticate(f"Bearer {pair.access_token}")
    assert principal.user == alice


async def test_a_rotated_refresh_token_can_be_rotated_again(
    auth: Auth, people: People, alice: User
) -> None:
    login = await people.sign_in(alice)

    second = await auth.refresh(login.pair.refresh_token)
    third = await auth.refresh(second.refresh_token)

    assert third.refresh_token not in (login.pair.refresh_token, second.refresh_token)


async def test_a_spent_refresh_token_revokes_the_whole_session(
    auth: Auth, people: People, alice: User
) -> None:
    login = await people.sign_in(alice)
    newest = await auth.refresh(login.pair.refresh_token)

    with pytest.raises(TokenReused):
        await auth.refresh(login.pair.refresh_token)

    with pytest.raises(TokenRevoked):
        await auth.refresh(newest.refresh_token)
    with pytest.raises(TokenRevoked):
        await auth.authenticate(f"Bearer {newest.access_token}")
    with pytest.raises(TokenRevoked):
        await auth.authenticate(login.bearer)


async def test_a_reuse_leaves_the_users_other_sessions_alone(
    auth: Auth, people: People, alice: User
) -> None:
    stolen = await people.sign_in(alice)
    other = await people.sign_in(alice)
    await auth.refresh(stolen.pair.refresh_token)

    with pytest.raises(TokenReused):
        await auth.refresh(stolen.pair.refresh_token)

    assert await holder(auth, await auth.refresh(other.pair.refresh_token)) == alice.id


async def test_a_reuse_records_token_reuse_detected_with_the_session(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    login = await people.sign_in(alice)
    await auth.refresh(login.pair.refresh_token)

    with pytest.raises(TokenReused):
        await auth.refresh(login.pair.refresh_token)

    [event] = uow.events(events.USER_TOKEN_REUSE_DETECTED)
    assert event.user == alice.view()
    assert event.extra == {"session_id": login.session_id}


async def test_a_reuse_for_a_user_gone_meanwhile_is_refused_without_an_event(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    login = await people.sign_in(alice)
    await auth.refresh(login.pair.refresh_token)
    await uow.users.delete(alice.id)  # behind the service's back: its sessions live on

    with pytest.raises(TokenReused):
        await auth.refresh(login.pair.refresh_token)

    assert uow.events(events.USER_TOKEN_REUSE_DETECTED) == []


async def test_a_deactivated_users_refresh_token_is_revoked(
    auth: Auth, accounts: Accounts, people: People, admin: User, alice: User
) -> None:
    login = await people.sign_in(alice)
    boss = await people.sign_in(admin)

    await accounts.update_user(boss.principal, alice.id, UserChanges(is_active=False))

    with pytest.raises(TokenRevoked):
        await auth.refresh(login.pair.refresh_token)


async def test_a_reactivated_users_old_tokens_stay_dead(
    auth: Auth, accounts: Accounts, people: People, admin: User, alice: User
) -> None:
    login = await people.sign_in(alice)
    boss = await people.sign_in(admin)
    await accounts.update_user(boss.principal, alice.id, UserChanges(is_active=False))

    await accounts.update_user(boss.principal, alice.id, UserChanges(is_active=True))

    with pytest.raises(TokenRevoked):
        await auth.refresh(login.pair.refresh_token)
    with pytest.raises(TokenRevoked):
        await auth.authenticate(login.bearer)


async def test_a_deleted_users_refresh_token_is_revoked(
    auth: Auth, accounts: Accounts, people: People, admin: User, alice: User
) -> None:
    login = await people.sign_in(alice)
    boss = await people.sign_in(admin)

    await accounts.delete_user(boss.principal, alice.id)

    with pytest.raises(TokenRevoked):
        await auth.refresh(login.pair.refresh_token)


@pytest.mark.parametrize("change", ["deactivate", "delete"])
async def test_a_refresh_for_a_user_no_longer_active_ends_a_session_left_open(
    auth: Auth,
    people: People,
    uow: FakeUnitOfWorkFactory,
    sessions: FakeSessionStore,
    alice: User,
    change: str,
) -> None:
    # A change made outside the use cases leaves the session open; refresh must still refuse.
    login = await people.sign_in(alice)
    if change == "delete":
        await uow.users.delete(alice.id)
    else:
        await uow.users.update(alice, UserChanges(is_active=False))

    with pytest.raises(TokenRevoked):
        await auth.refresh(login.pair.refresh_token)

    assert not await sessions.is_active(login.session_id, alice.id)


async def test_a_refresh_token_signed_for_another_user_with_ones_own_session_is_revoked(
    auth: Auth, people: People, tokens: FakeTokenIssuer, clock: FakeClock, alice: User
) -> None:
    mallory = await people.sign_in(await people.add("mallory"))
    current = tokens.read_refresh(mallory.pair.refresh_token).token_id
    forged = tokens.issue_refresh(alice.id, mallory.session_id, current, clock.now())

    with pytest.raises(TokenRevoked):
        await auth.refresh(forged)

    # Mallory's session was neither rotated nor revoked by it.
    assert (await auth.authenticate(mallory.bearer)).user.username == "mallory"
    await auth.refresh(mallory.pair.refresh_token)


@pytest.mark.parametrize("presented", ["current", "spent"])
async def test_a_refresh_token_naming_another_users_session_leaves_that_session_alone(
    auth: Auth,
    people: People,
    tokens: FakeTokenIssuer,
    clock: FakeClock,
    uow: FakeUnitOfWorkFactory,
    alice: User,
    presented: str,
) -> None:
    login = await people.sign_in(alice)
    mallory = await people.add("mallory")
    current = tokens.read_refresh(login.pair.refresh_token).token_id
    token_id = current if presented == "current" else "a-spent-id"
    forged = tokens.issue_refresh(mallory.id, login.session_id, token_id, clock.now())

    with pytest.raises(TokenRevoked):
        await auth.refresh(forged)

    # Neither a rotation nor a reuse: alice's tokens go on working, and no reuse is told.
    assert (await auth.authenticate(login.bearer)).user == alice
    await auth.refresh(login.pair.refresh_token)
    assert uow.events(events.USER_TOKEN_REUSE_DETECTED) == []


async def test_an_access_token_is_no_refresh_token(auth: Auth, people: People, alice: User) -> None:
    login = await people.sign_in(alice)

    with pytest.raises(InvalidToken):
        await auth.refresh(login.pair.access_token)


@pytest.mark.parametrize("token", ["", "garbage", "refresh:1:sid:rid:9999999999"])
async def test_a_forged_or_garbled_refresh_token_is_invalid(auth: Auth, token: str) -> None:
    with pytest.raises(InvalidToken):
        await auth.refresh(token)


async def test_an_expired_refresh_token_is_expired(
    auth: Auth, people: People, clock: FakeClock, alice: User
) -> None:
    login = await people.sign_in(alice)
    clock.advance(REFRESH_TTL)

    with pytest.raises(TokenExpired):
        await auth.refresh(login.pair.refresh_token)


async def test_logout_revokes_the_callers_access_and_refresh_tokens(
    auth: Auth, people: People, alice: User
) -> None:
    login = await people.sign_in(alice)

    await auth.logout(login.principal)

    with pytest.raises(TokenRevoked):
        await auth.authenticate(login.bearer)
    with pytest.raises(TokenRevoked):
        await auth.refresh(login.pair.refresh_token)


async def test_logout_leaves_the_users_other_sessions_alone(
    auth: Auth, people: People, alice: User
) -> None:
    leaving = await people.sign_in(alice)
    staying = await people.sign_in(alice)

    await auth.logout(leaving.principal)

    assert (await auth.authenticate(staying.bearer)).user == alice
    assert await holder(auth, await auth.refresh(staying.pair.refresh_token)) == alice.id


async def test_logout_records_logged_out_with_the_session(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    login = await people.sign_in(alice)

    await auth.logout(login.principal)

    [event] = uow.events(events.USER_LOGGED_OUT)
    assert event.user == alice.view()
    assert event.extra == {"session_id": login.session_id}


async def test_a_logout_using_a_requests_units_of_work_records_its_event_through_them(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory, clock: FakeClock, alice: User
) -> None:
    """A worker binds the use cases to each request's units (their events carry its id)."""
    login = await people.sign_in(alice)
    requests = FakeUnitOfWorkFactory(clock)

    await auth.using(requests).logout(login.principal)

    [event] = requests.events(events.USER_LOGGED_OUT)
    assert event.extra == {"session_id": login.session_id}
    assert uow.events(events.USER_LOGGED_OUT) == []


# --- is a pair handed out earlier still live? (what an idempotent replay may hand out) ----


async def test_a_pair_is_current_until_it_is_refreshed_and_its_successor_then_is(
    auth: Auth, people: People, alice: User
) -> None:
    login = await people.sign_in(alice)
    assert await auth.is_current(login.pair.refresh_token)

    newer = await auth.refresh(login.pair.refresh_token)

    assert not await auth.is_current(login.pair.refresh_token)
    assert await auth.is_current(newer.refresh_token)


async def test_a_pair_of_an_ended_session_is_not_current(
    auth: Auth, people: People, alice: User
) -> None:
    login = await people.sign_in(alice)
    await auth.logout(login.principal)
    assert not await auth.is_current(login.pair.refresh_token)


async def test_a_pair_whose_session_belongs_to_another_user_is_not_current(
    auth: Auth, people: People, sessions: FakeSessionStore, alice: User, admin: User
) -> None:
    login = await people.sign_in(alice)
    stored = sessions.sessions[login.session_id]
    sessions.sessions[login.session_id] = FakeSession(admin.id, stored.refresh_id)
    assert not await auth.is_current(login.pair.refresh_token)


async def test_a_pair_of_an_inactive_user_or_past_its_lifetime_is_not_current(
    auth: Auth,
    people: People,
    uow: FakeUnitOfWorkFactory,
    clock: FakeClock,
    alice: User,
    admin: User,
) -> None:
    login = await people.sign_in(alice)
    await uow.users.update(alice, UserChanges(is_active=False))  # its session left in place
    assert not await auth.is_current(login.pair.refresh_token)

    lasting = await people.sign_in(admin)
    clock.advance(REFRESH_TTL + 1)
    assert not await auth.is_current(lasting.pair.refresh_token)
    assert not await auth.is_current("garbage")
