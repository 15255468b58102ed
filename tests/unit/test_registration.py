"""Registration: a new, active, ordinary account, announced once and never with its hash."""

from __future__ import annotations

import pytest

from domain import events
from domain.accounts import Accounts, RegisterUser
from domain.errors import EmailTaken, TooManyAttempts, UsernameTaken
from domain.model import NewUser, Origin, UserView
from tests.unit.fakes import (
    FakeClock,
    FakePasswordHasher,
    FakeRegistrationThrottle,
    FakeUnitOfWorkFactory,
)

ALICE = RegisterUser("Alice@Example.COM", "Alice", "alice-password", "Alice Liddell")


async def test_registration_stores_the_email_lower_cased(accounts: Accounts) -> None:
    user = await accounts.register(ALICE)

    assert user.email == "alice@example.com"


async def test_registration_keeps_the_username_as_given(accounts: Accounts) -> None:
    user = await accounts.register(ALICE)

    assert user.username == "Alice"


async def test_a_registered_user_is_active_and_no_superuser(
    accounts: Accounts, uow: FakeUnitOfWorkFactory, clock: FakeClock
) -> None:
    user = await accounts.register(ALICE)

    assert await uow.users.get(user.id) == user
    assert user.is_active
    assert not user.is_superuser
    assert user.full_name == "Alice Liddell"
    assert user.created_at == user.updated_at == clock.now()


async def test_registration_commits_the_new_user_as_its_one_change(
    accounts: Accounts, uow: FakeUnitOfWorkFactory
) -> None:
    # The unit of work keeps an idempotent request's reply, rendered from the user it
    # changed, with the change it answers: that user must be the one registration returns.
    user = await accounts.register(ALICE)

    assert uow.changed() == [user]


async def test_a_registration_using_other_units_of_work_commits_through_them_alone(
    accounts: Accounts, uow: FakeUnitOfWorkFactory, clock: FakeClock
) -> None:
    """A worker binds the use cases to each request's units; the unbound ones stay as they were."""
    requests = FakeUnitOfWorkFactory(clock)

    user = await accounts.using(requests).register(ALICE)

    assert await requests.users.get(user.id) == user
    assert requests.changed() == [user]
    assert [e.type for e in requests.events()] == [
        events.USER_REGISTERED,
        events.USER_VERIFICATION_REQUESTED,
    ]
    assert [m.to for m in requests.mails.sent()] == [user.email]
    assert uow.mails.sent() == []
    assert await uow.users.get(user.id) is None
    assert uow.events() == []
    assert await accounts.register(ALICE) == await uow.users.get(user.id)  # its own, unbound


async def test_registration_stores_the_hash_never_the_password(
    accounts: Accounts, hasher: FakePasswordHasher
) -> None:
    user = await accounts.register(ALICE)

    assert hasher.hash_calls == 1
    assert user.hashed_password == "hashed:alice-password"
    assert await hasher.verify("alice-password", user.hashed_password)


async def test_registration_records_user_registered_with_a_view_and_no_hash(
    accounts: Accounts, uow: FakeUnitOfWorkFactory, clock: FakeClock
) -> None:
    user = await accounts.register(ALICE)

    [event] = uow.events(events.USER_REGISTERED)
    assert event.time == clock.now()
    assert isinstance(event.user, UserView)
    assert event.user == user.view()
    assert event.subject == str(user.id)
    assert event.extra == {}
    assert "hashed" not in repr(event)
    assert not hasattr(event.user, "hashed_password")


@pytest.mark.parametrize("email", ["alice@example.com", "ALICE@EXAMPLE.COM", " Alice@example.com "])
async def test_a_taken_email_in_any_case_raises_email_taken_without_hashing(
    accounts: Accounts, hasher: FakePasswordHasher, uow: FakeUnitOfWorkFactory, email: str
) -> None:
    await accounts.register(ALICE)
    hashes = hasher.hash_calls

    with pytest.raises(EmailTaken):
        await accounts.register(RegisterUser(email, "someone_else", "another-password"))

    assert hasher.hash_calls == hashes
    assert len(uow.events(events.USER_REGISTERED)) == 1


@pytest.mark.parametrize("username", ["Alice", "alice", "ALICE"])
async def test_a_taken_username_in_any_case_raises_username_taken_without_hashing(
    accounts: Accounts, hasher: FakePasswordHasher, uow: FakeUnitOfWorkFactory, username: str
) -> None:
    await accounts.register(ALICE)
    hashes = hasher.hash_calls

    with pytest.raises(UsernameTaken):
        await accounts.register(RegisterUser("other@example.com", username, "another-password"))

    assert hasher.hash_calls == hashes
    assert len(uow.events(events.USER_REGISTERED)) == 1


async def test_a_clash_that_slips_past_the_check_is_refused_by_the_store_with_no_event(
    accounts: Accounts, uow: FakeUnitOfWorkFactory
) -> None:
    # Two registrations racing: both pass the check, the unique index stops the second.
    await accounts.register(ALICE)

    with pytest.raises(EmailTaken):
        await accounts.create(NewUser("alice@example.com", "bob", "hashed:x"))

    assert len(uow.events(events.USER_REGISTERED)) == 1
    assert len(uow.mails.sent()) == 1  # the first registration's; none for the refused one
    assert await uow.users.get_by_login("bob") is None


async def test_create_stores_a_superuser_as_given(
    accounts: Accounts, uow: FakeUnitOfWorkFactory
) -> None:
    new = NewUser("root@example.com", "root", "hashed:root-password", is_superuser=True)

    user = await accounts.create(new)

    assert user.is_superuser
    assert user.is_active_superuser
    assert [e.user for e in uow.events(events.USER_REGISTERED)] == [user.view()]


# --- registrations per client address ----------------------------------------------------


def newcomer(n: int, client_ip: str | None) -> RegisterUser:
    return RegisterUser(
        f"new{n}@example.com",
        f"new{n}",
        "a-good-password",
        None,
        Origin(client_ip) if client_ip else None,
    )


async def test_registrations_past_an_addresss_limit_are_refused_before_hashing(
    accounts: Accounts,
    registrations: FakeRegistrationThrottle,
    hasher: FakePasswordHasher,
    uow: FakeUnitOfWorkFactory,
    clock: FakeClock,
) -> None:
    limit = registrations.max_per_address
    for n in range(limit):
        await accounts.register(newcomer(n, "203.0.113.9"))
    clock.advance(600)
    hashes = hasher.hash_calls

    with pytest.raises(TooManyAttempts) as refused:
        await accounts.register(newcomer(limit, "203.0.113.9"))

    assert refused.value.retry_after == 3000  # what is left of the address's hour
    assert hasher.hash_calls == hashes
    assert await uow.users.get_by_login(f"new{limit}") is None
    await accounts.register(newcomer(limit, "198.51.100.7"))  # another address is not limited
    clock.advance(3000)
    await accounts.register(newcomer(limit + 1, "203.0.113.9"))  # nor this one, a window on


async def test_a_registration_refused_before_hashing_is_not_counted(
    accounts: Accounts, registrations: FakeRegistrationThrottle
) -> None:
    await accounts.register(ALICE)
    taken = RegisterUser(
        "alice@example.com", "someone", "a-good-password", None, Origin("203.0.113.9")
    )

    for _ in range(registrations.max_per_address + 1):
        with pytest.raises(EmailTaken):
            await accounts.register(taken)

    assert registrations.counted("203.0.113.9") == 0
    await accounts.register(newcomer(1, "203.0.113.9"))


async def test_a_registration_without_a_client_address_has_no_address_limit(
    accounts: Accounts, registrations: FakeRegistrationThrottle
) -> None:
    for n in range(registrations.max_per_address + 2):
        await accounts.register(newcomer(n, None))
