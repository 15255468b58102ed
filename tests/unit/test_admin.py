"""Administration: only superusers, and never without an active superuser left."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from domain import events
from domain.accounts import Accounts
from domain.auth import Auth
from domain.errors import Forbidden, LastSuperuser, TokenRevoked, UserNotFound
from domain.listing import AuditQuery, UserQuery
from domain.model import Principal, User, UserChanges
from tests.unit.fakes import FakeSessionStore, FakeUnitOfWorkFactory
from tests.unit.support import People


@pytest.fixture
async def root(people: People) -> User:
    return await people.add("root", superuser=True)


@pytest.fixture
async def alice(people: People) -> User:
    return await people.add("alice")


@pytest.fixture
async def admin(people: People, root: User) -> Principal:
    return (await people.sign_in(root)).principal


@pytest.fixture
async def plain(people: People, alice: User) -> Principal:
    return (await people.sign_in(alice)).principal


Call = Callable[[Accounts, Principal, int], Awaitable[Any]]

ADMIN_ONLY: dict[str, Call] = {
    "list_users": lambda a, p, _: a.list_users(p, UserQuery()),
    "get_user": lambda a, p, uid: a.get_user(p, uid),
    "update_user": lambda a, p, uid: a.update_user(p, uid, UserChanges(full_name="x")),
    "delete_user": lambda a, p, uid: a.delete_user(p, uid),
    "list_audit": lambda a, p, _: a.list_audit(p, AuditQuery()),
}


@pytest.mark.parametrize("call", ADMIN_ONLY.values(), ids=ADMIN_ONLY.keys())
async def test_an_ordinary_user_may_not_administer(
    accounts: Accounts, plain: Principal, root: User, uow: FakeUnitOfWorkFactory, call: Call
) -> None:
    before = len(uow.events())

    with pytest.raises(Forbidden):
        await call(accounts, plain, root.id)

    assert await uow.users.get(root.id) == root
    assert len(uow.events()) == before


async def test_a_user_may_read_itself_without_being_a_superuser(
    accounts: Accounts, plain: Principal, alice: User
) -> None:
    assert await accounts.get_user(plain, alice.id) == alice


async def test_a_superuser_reads_any_user(
    accounts: Accounts, admin: Principal, alice: User
) -> None:
    assert await accounts.get_user(admin, alice.id) == alice


@pytest.mark.parametrize(
    "call", [ADMIN_ONLY["get_user"], ADMIN_ONLY["update_user"], ADMIN_ONLY["delete_user"]]
)
async def test_an_unknown_id_is_user_not_found(
    accounts: Accounts, admin: Principal, call: Call
) -> None:
    with pytest.raises(UserNotFound):
        await call(accounts, admin, 999)


async def test_a_superuser_updates_a_user_and_it_is_recorded(
    accounts: Accounts, admin: Principal, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    changes = UserChanges(email="Alice@New.IO", full_name="Alice L.", is_superuser=True)

    changed = await accounts.update_user(admin, alice.id, changes)

    assert (changed.email, changed.full_name, changed.is_superuser) == (
        "alice@new.io",
        "Alice L.",
        True,
    )
    assert await uow.users.get(alice.id) == changed
    [event] = uow.events(events.USER_UPDATED)
    assert event.user == changed.view()
    assert uow.changed()[-1] == changed  # kept with the change for idempotent repeats


async def test_an_update_that_changes_nothing_records_no_event(
    accounts: Accounts, admin: Principal, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    for changes in (UserChanges(), UserChanges(is_active=True, username="alice")):
        assert await accounts.update_user(admin, alice.id, changes) == alice

    assert uow.events(events.USER_UPDATED) == []


async def test_deactivating_a_user_ends_all_their_sessions(
    accounts: Accounts,
    auth: Auth,
    uow: FakeUnitOfWorkFactory,
    people: People,
    admin: Principal,
    sessions: FakeSessionStore,
    alice: User,
) -> None:
    login = await people.sign_in(alice)

    changed = await accounts.update_user(admin, alice.id, UserChanges(is_active=False))

    assert not changed.is_active
    assert uow.changed()[-1] == changed
    assert sessions.of_user(alice.id) == []
    with pytest.raises(TokenRevoked):
        await auth.authenticate(login.bearer)


async def test_a_superuser_deletes_a_user_and_ends_their_sessions(
    accounts: Accounts,
    people: People,
    admin: Principal,
    uow: FakeUnitOfWorkFactory,
    sessions: FakeSessionStore,
    alice: User,
) -> None:
    await people.sign_in(alice)

    await accounts.delete_user(admin, alice.id)

    assert await uow.users.get(alice.id) is None
    assert sessions.of_user(alice.id) == []


async def test_a_deletion_records_user_deleted_with_the_user_as_it_was(
    accounts: Accounts, admin: Principal, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    await accounts.delete_user(admin, alice.id)

    [event] = uow.events(events.USER_DELETED)
    assert event.user == alice.view()
    assert event.subject == str(alice.id)


LOSING_CHANGES = {
    "demote": UserChanges(is_superuser=False),
    "deactivate": UserChanges(is_active=False),
    "both": UserChanges(is_active=False, is_superuser=False),
}


@pytest.mark.parametrize("changes", LOSING_CHANGES.values(), ids=LOSING_CHANGES.keys())
async def test_the_only_active_superuser_may_not_be_demoted_or_deactivated(
    accounts: Accounts,
    admin: Principal,
    root: User,
    uow: FakeUnitOfWorkFactory,
    changes: UserChanges,
) -> None:
    with pytest.raises(LastSuperuser):
        await accounts.update_user(admin, root.id, changes)

    assert await uow.users.get(root.id) == root
    assert uow.events(events.USER_UPDATED) == []


async def test_the_only_active_superuser_may_not_be_deleted(
    accounts: Accounts,
    admin: Principal,
    root: User,
    uow: FakeUnitOfWorkFactory,
    sessions: FakeSessionStore,
) -> None:
    with pytest.raises(LastSuperuser):
        await accounts.delete_user(admin, root.id)

    assert await uow.users.get(root.id) == root
    assert sessions.of_user(root.id) != []
    assert uow.events(events.USER_DELETED) == []


async def test_an_inactive_second_superuser_does_not_count(
    accounts: Accounts, people: People, admin: Principal, root: User
) -> None:
    await people.add("dormant_root", superuser=True, active=False)

    with pytest.raises(LastSuperuser):
        await accounts.update_user(admin, root.id, UserChanges(is_superuser=False))


@pytest.mark.parametrize("changes", LOSING_CHANGES.values(), ids=LOSING_CHANGES.keys())
async def test_a_superuser_may_be_demoted_or_deactivated_while_another_remains(
    accounts: Accounts,
    people: People,
    admin: Principal,
    root: User,
    uow: FakeUnitOfWorkFactory,
    changes: UserChanges,
) -> None:
    await people.add("deputy", superuser=True)

    changed = await accounts.update_user(admin, root.id, changes)

    assert not changed.is_active_superuser
    assert uow.users.superuser_locks == 1


async def test_a_superuser_may_be_deleted_while_another_remains(
    accounts: Accounts, people: People, admin: Principal, root: User, uow: FakeUnitOfWorkFactory
) -> None:
    deputy = await people.add("deputy", superuser=True)

    await accounts.delete_user(admin, deputy.id)

    assert await uow.users.get(deputy.id) is None
    assert uow.users.superuser_locks == 1


async def test_changes_that_keep_a_superuser_take_no_superuser_lock(
    accounts: Accounts, admin: Principal, root: User, alice: User, uow: FakeUnitOfWorkFactory
) -> None:
    await accounts.update_user(admin, root.id, UserChanges(full_name="Root"))
    await accounts.update_user(admin, alice.id, UserChanges(is_active=False))
    await accounts.delete_user(admin, alice.id)

    assert uow.users.superuser_locks == 0


async def test_a_demoted_superuser_loses_admin_rights_at_once(
    accounts: Accounts, auth: Auth, people: People, admin: Principal, alice: User
) -> None:
    deputy = await people.add("deputy", superuser=True)
    deputy_login = await people.sign_in(deputy)

    await accounts.update_user(admin, deputy.id, UserChanges(is_superuser=False))

    principal = await auth.authenticate(deputy_login.bearer)
    with pytest.raises(Forbidden):
        await accounts.get_user(principal, alice.id)


async def test_a_superuser_lists_users(
    accounts: Accounts, admin: Principal, root: User, alice: User
) -> None:
    page = await accounts.list_users(admin, UserQuery())

    assert [u.id for u in page.items] == [alice.id, root.id]  # newest first by default
    assert page.next_key is None


async def test_a_superuser_reads_the_audit_newest_first(
    accounts: Accounts, admin: Principal, root: User, alice: User
) -> None:
    page = await accounts.list_audit(admin, AuditQuery(type=events.USER_REGISTERED))

    assert [e.user_id for e in page.items] == [alice.id, root.id]
    assert page.next_after is None


async def test_the_audit_pages_and_filters_by_user(
    accounts: Accounts, admin: Principal, root: User
) -> None:
    first = await accounts.list_audit(admin, AuditQuery(limit=1, user_id=root.id))
    rest = await accounts.list_audit(
        admin, AuditQuery(limit=2, user_id=root.id, after=first.next_after)
    )

    assert [e.type for e in first.items + rest.items] == [
        events.USER_LOGGED_IN,
        events.USER_VERIFICATION_REQUESTED,
        events.USER_REGISTERED,
    ]
    assert rest.next_after is None
