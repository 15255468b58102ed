"""Your own account: profile changes and password changes."""

from __future__ import annotations

import pytest

from domain import events
from domain.accounts import Accounts, ChangePassword
from domain.auth import Auth, LogIn
from domain.errors import (
    EmailTaken,
    InvalidCredentials,
    TokenRevoked,
    TooManyAttempts,
    UsernameTaken,
    WrongPassword,
)
from domain.model import User, UserChanges
from tests.unit.fakes import (
    FakeClock,
    FakeLoginThrottle,
    FakePasswordHasher,
    FakeUnitOfWorkFactory,
)
from tests.unit.support import People, holder

OLD = "alice-password"
NEW = "a-brand-new-password"


@pytest.fixture
async def alice(people: People) -> User:
    return await people.add("alice", password=OLD, full_name="Alice")


async def test_a_user_changes_their_own_profile(
    accounts: Accounts, people: People, clock: FakeClock, alice: User
) -> None:
    me = await people.sign_in(alice)
    clock.advance(60)

    changed = await accounts.update_me(
        me.principal, UserChanges(email="New@Example.COM", username="Alicia", full_name=None)
    )

    assert (changed.email, changed.username, changed.full_name) == (
        "new@example.com",
        "Alicia",
        None,
    )
    assert changed.updated_at == clock.now()
    assert changed.created_at == alice.created_at


async def test_a_profile_change_records_user_updated_with_the_changed_user(
    accounts: Accounts, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    me = await people.sign_in(alice)

    changed = await accounts.update_me(me.principal, UserChanges(full_name="Alice L."))

    [event] = uow.events(events.USER_UPDATED)
    assert event.user == changed.view()
    assert event.extra == {}


async def test_a_profile_change_to_a_taken_email_is_email_taken(
    accounts: Accounts, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    await people.add("bob", email="bob@example.com")
    me = await people.sign_in(alice)

    with pytest.raises(EmailTaken):
        await accounts.update_me(me.principal, UserChanges(email="BOB@example.com"))

    assert await uow.users.get(alice.id) == alice
    assert uow.events(events.USER_UPDATED) == []


async def test_a_profile_change_to_a_taken_username_is_username_taken(
    accounts: Accounts, people: People, alice: User
) -> None:
    await people.add("bob")
    me = await people.sign_in(alice)

    with pytest.raises(UsernameTaken):
        await accounts.update_me(me.principal, UserChanges(username="BOB"))


async def test_changing_only_the_case_of_your_own_username_is_no_clash(
    accounts: Accounts, people: People, alice: User
) -> None:
    me = await people.sign_in(alice)

    changed = await accounts.update_me(me.principal, UserChanges(username="ALICE"))

    assert changed.username == "ALICE"


async def test_a_profile_change_that_changes_nothing_records_no_event(
    accounts: Accounts, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    me = await people.sign_in(alice)

    same = await accounts.update_me(
        me.principal, UserChanges(email="ALICE@example.com", full_name="Alice")
    )

    assert same == alice
    assert uow.events(events.USER_UPDATED) == []


async def test_a_wrong_current_password_is_wrong_password_and_changes_nothing(
    accounts: Accounts,
    auth: Auth,
    people: People,
    hasher: FakePasswordHasher,
    uow: FakeUnitOfWorkFactory,
    alice: User,
) -> None:
    me = await people.sign_in(alice)
    other = await people.sign_in(alice)
    hashes = hasher.hash_calls

    with pytest.raises(WrongPassword):
        await accounts.change_password(me.principal, ChangePassword("not-my-password", NEW))

    assert hasher.hash_calls == hashes
    assert (await auth.authenticate(other.bearer)).user.id == alice.id
    assert await holder(auth, await auth.login(LogIn("alice", OLD))) == alice.id
    assert uow.events(events.USER_PASSWORD_CHANGED) == []


async def test_wrong_current_passwords_count_toward_the_accounts_login_lockout(
    accounts: Accounts,
    auth: Auth,
    people: People,
    throttle: FakeLoginThrottle,
    hasher: FakePasswordHasher,
    alice: User,
) -> None:
    me = await people.sign_in(alice)
    for _ in range(throttle.max_failures):
        with pytest.raises(WrongPassword):
            await accounts.change_password(me.principal, ChangePassword("a-guess", NEW))
    checks = hasher.checks

    with pytest.raises(TooManyAttempts) as locked:
        await accounts.change_password(me.principal, ChangePassword(OLD, NEW))
    with pytest.raises(TooManyAttempts):
        await auth.login(LogIn("alice", OLD))  # one counter: the account's

    assert locked.value.retry_after == throttle.window
    assert hasher.checks == checks  # refused before any bcrypt
    assert throttle.failures(f"user:{alice.id}") == throttle.max_failures


async def test_an_account_locked_by_failed_logins_cannot_change_its_password_until_the_window_ends(
    accounts: Accounts,
    auth: Auth,
    people: People,
    throttle: FakeLoginThrottle,
    clock: FakeClock,
    uow: FakeUnitOfWorkFactory,
    alice: User,
) -> None:
    me = await people.sign_in(alice)
    for _ in range(throttle.max_failures):
        with pytest.raises(InvalidCredentials):
            await auth.login(LogIn("alice", "wrong-password"))

    with pytest.raises(TooManyAttempts):
        await accounts.change_password(me.principal, ChangePassword(OLD, NEW))
    assert uow.events(events.USER_PASSWORD_CHANGED) == []

    clock.advance(throttle.window)
    await accounts.change_password(me.principal, ChangePassword(OLD, NEW))
    assert await holder(auth, await auth.login(LogIn("alice", NEW))) == alice.id


async def test_a_password_change_clears_the_accounts_failures(
    accounts: Accounts, people: People, throttle: FakeLoginThrottle, alice: User
) -> None:
    me = await people.sign_in(alice)
    for _ in range(throttle.max_failures - 1):
        with pytest.raises(WrongPassword):
            await accounts.change_password(me.principal, ChangePassword("a-guess", NEW))

    await accounts.change_password(me.principal, ChangePassword(OLD, NEW))

    assert throttle.failures(f"user:{alice.id}") == 0


async def test_a_new_password_replaces_the_old_one(
    accounts: Accounts, auth: Auth, people: People, alice: User
) -> None:
    me = await people.sign_in(alice)

    await accounts.change_password(me.principal, ChangePassword(OLD, NEW))

    assert await holder(auth, await auth.login(LogIn("alice", NEW))) == alice.id
    with pytest.raises(InvalidCredentials):
        await auth.login(LogIn("alice", OLD))


async def test_a_password_change_revokes_every_other_session_and_keeps_the_current(
    accounts: Accounts, auth: Auth, people: People, alice: User
) -> None:
    me = await people.sign_in(alice)
    laptop = await people.sign_in(alice)
    phone = await people.sign_in(alice)

    await accounts.change_password(me.principal, ChangePassword(OLD, NEW))

    assert (await auth.authenticate(me.bearer)).user.id == alice.id
    assert await holder(auth, await auth.refresh(me.pair.refresh_token)) == alice.id
    for other in (laptop, phone):
        with pytest.raises(TokenRevoked):
            await auth.authenticate(other.bearer)
        with pytest.raises(TokenRevoked):
            await auth.refresh(other.pair.refresh_token)


async def test_a_password_change_leaves_other_users_sessions_alone(
    accounts: Accounts, auth: Auth, people: People, alice: User
) -> None:
    bob = await people.sign_in(await people.add("bob"))
    me = await people.sign_in(alice)

    await accounts.change_password(me.principal, ChangePassword(OLD, NEW))

    assert (await auth.authenticate(bob.bearer)).user.id == bob.principal.user.id


async def test_a_password_change_records_password_changed_without_a_hash(
    accounts: Accounts, people: People, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    me = await people.sign_in(alice)

    await accounts.change_password(me.principal, ChangePassword(OLD, NEW))

    [event] = uow.events(events.USER_PASSWORD_CHANGED)
    stored = await uow.users.get(alice.id)
    assert stored is not None
    assert event.user == stored.view()
    assert NEW not in repr(event)
    assert "hashed" not in repr(event)
