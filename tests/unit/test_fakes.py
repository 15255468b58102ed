"""The fakes keep the ports' promises; the use-case tests lean on that."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain import events
from domain.errors import InvalidToken, TokenExpired
from domain.events import Event
from domain.model import NewUser, SessionStart, UserChanges
from domain.ports import Lockout, Rotation
from tests.unit.fakes import (
    EPOCH,
    FakeClock,
    FakeLoginThrottle,
    FakeRegistrationThrottle,
    FakeSessionStore,
    FakeTokenIssuer,
    FakeUnitOfWorkFactory,
)


async def test_a_unit_of_work_left_without_commit_keeps_nothing(
    uow: FakeUnitOfWorkFactory, clock: FakeClock
) -> None:
    async with uow() as tx:
        user = await tx.users.add(NewUser("a@b.io", "alice", "hashed:x"))
        tx.outbox.add(Event(events.USER_REGISTERED, clock.now(), user.view()))
        assert uow.events() == []  # not before commit

    assert await uow.users.get(user.id) is None
    assert uow.events() == []
    assert uow.audit.entries == []


async def test_a_committed_unit_of_work_keeps_its_changes_and_events(
    uow: FakeUnitOfWorkFactory, clock: FakeClock
) -> None:
    async with uow() as tx:
        user = await tx.users.add(NewUser("a@b.io", "alice", "hashed:x"))
        event = Event(events.USER_REGISTERED, clock.now(), user.view())
        tx.outbox.add(event)
        await tx.commit()

    assert uow.opened[-1].committed
    assert await uow.users.get(user.id) == user
    assert uow.events() == [event]
    assert [e.event_id for e in uow.audit.entries] == [event.id]


async def test_the_user_repository_fails_on_a_nul_as_postgres_does(
    uow: FakeUnitOfWorkFactory,
) -> None:
    async with uow() as tx:
        with pytest.raises(ValueError, match="0x00"):
            await tx.users.get_by_login("al\x00ice")
        with pytest.raises(ValueError, match="0x00"):
            await tx.users.add(NewUser("a@b.io", "alice", "hashed:x", full_name="A\x00"))
        user = await tx.users.add(NewUser("a@b.io", "alice", "hashed:x"))
        with pytest.raises(ValueError, match="0x00"):
            await tx.users.update(user, UserChanges(full_name="A\x00"))


async def test_the_user_repository_finds_a_username_before_another_users_equal_email(
    uow: FakeUnitOfWorkFactory,
) -> None:
    async with uow() as tx:
        await tx.users.add(NewUser("eve@example.com", "carol", "hashed:x"))
        eve = await tx.users.add(NewUser("someone@example.com", "Eve@Example.com", "hashed:y"))

        assert await tx.users.get_by_login("eve@example.com") == eve


async def test_a_committed_unit_of_work_names_the_users_it_added_or_changed(
    uow: FakeUnitOfWorkFactory,
) -> None:
    async with uow() as tx:
        alice = await tx.users.add(NewUser("a@b.io", "alice", "hashed:x"))
        await tx.commit()
    async with uow() as tx:
        await tx.users.update(alice, UserChanges(full_name="Alice"))
        await tx.users.add(NewUser("b@b.io", "bob", "hashed:x"))  # never committed
    async with uow() as tx:
        renamed = await tx.users.update(alice, UserChanges(full_name="Alice L."))
        await tx.commit()

    assert uow.changed() == [alice, renamed]


START = SessionStart(EPOCH + timedelta(seconds=1800))


async def rotate(store: FakeSessionStore, sid: str, uid: int, old: str, new: str) -> Rotation:
    return (await store.rotate(sid, uid, old, new, EPOCH)).outcome


async def test_the_session_store_accepts_only_the_newest_refresh_id() -> None:
    store = FakeSessionStore()
    await store.create(1, "s1", "r1", START)

    assert await rotate(store, "s1", 1, "r1", "r2") is Rotation.ROTATED
    assert await rotate(store, "s1", 1, "r1", "r3") is Rotation.REUSED
    assert not await store.is_active("s1", 1)
    assert await rotate(store, "s1", 1, "r2", "r4") is Rotation.MISSING


async def test_the_session_store_answers_for_another_users_session_as_for_none() -> None:
    store = FakeSessionStore()
    await store.create(1, "s1", "r1", START)

    assert not await store.is_active("s1", 2)
    assert await rotate(store, "s1", 2, "r1", "r2") is Rotation.MISSING
    assert await rotate(store, "s1", 2, "spent", "r3") is Rotation.MISSING
    assert await store.revoke("s1", 2) is None
    # Neither rotated nor revoked: the owner's refresh token still works.
    assert await store.is_active("s1", 1)
    assert await rotate(store, "s1", 1, "r1", "r4") is Rotation.ROTATED


async def test_revoking_all_of_a_users_sessions_can_keep_one() -> None:
    store = FakeSessionStore()
    for sid, uid in (("s1", 1), ("s2", 1), ("s3", 1), ("other", 2)):
        await store.create(uid, sid, f"r-{sid}", START)

    ended = await store.revoke_all(1, keep="s2")

    assert sorted(e.session_id for e in ended) == ["s1", "s3"]
    assert store.of_user(1) == ["s2"]
    assert store.of_user(2) == ["other"]
    assert await store.revoke_all(1, keep="s2") == []  # each ending is reported once


async def test_a_session_outlives_its_refresh_lifetime_only_when_refreshed(
    clock: FakeClock,
) -> None:
    store = FakeSessionStore(clock, ttl=100)
    await store.create(1, "s1", "r1", START)
    await store.create(1, "s2", "r2", START)
    clock.advance(60)
    await store.rotate("s1", 1, "r1", "r1b", EPOCH)
    clock.advance(60)

    assert [s.id for s in await store.live(1)] == ["s1"]
    assert await store.revoke("s2") is None


async def test_the_throttle_blocks_at_the_limit_until_the_window_ends(clock: FakeClock) -> None:
    throttle = FakeLoginThrottle(clock, max_failures=2, ip_max_failures=3, window=60)
    for _ in range(2):
        assert await throttle.lockout("user:1", "10.0.0.1") is None
        await throttle.record_failure("user:1", "10.0.0.1")

    assert await throttle.lockout("user:1", None) == Lockout(60, 2, "account")
    clock.advance(59.5)
    assert await throttle.lockout("user:1", None) == Lockout(1, 2, "account")
    clock.advance(0.5)
    assert await throttle.lockout("user:1", None) is None
    assert throttle.failures("user:1") == 0


async def test_the_throttle_answers_with_the_longest_wait_of_the_limits_reached(
    clock: FakeClock,
) -> None:
    throttle = FakeLoginThrottle(clock, max_failures=2, ip_max_failures=3, window=60)
    for n in range(3):
        await throttle.record_failure(f"login:stranger{n}", "10.0.0.1")
    clock.advance(10)
    for _ in range(2):
        await throttle.record_failure("user:1", None)

    assert await throttle.lockout("user:1", "10.0.0.1") == Lockout(60, 2, "account")
    assert await throttle.lockout("user:2", "10.0.0.1") == Lockout(50, 3, "client_ip")


async def test_a_lockout_is_reported_once_per_window_and_again_after_it(clock: FakeClock) -> None:
    throttle = FakeLoginThrottle(clock, max_failures=1, window=60)
    await throttle.record_failure("user:1", None)
    lockout = await throttle.lockout("user:1", None)
    assert lockout is not None

    assert await throttle.report_once("user:1", None, lockout)
    assert not await throttle.report_once("user:1", None, lockout)
    clock.advance(60)
    await throttle.record_failure("user:1", None)
    again = await throttle.lockout("user:1", None)
    assert again is not None
    assert await throttle.report_once("user:1", None, again)


async def test_the_registration_throttle_counts_per_address_in_fixed_windows(
    clock: FakeClock,
) -> None:
    throttle = FakeRegistrationThrottle(clock, max_per_address=2, window=60)
    assert [await throttle.admit("10.0.0.1") for _ in range(2)] == [0, 0]
    clock.advance(20)

    assert await throttle.admit("10.0.0.1") == 40
    assert await throttle.admit("10.0.0.2") == 0
    clock.advance(40)
    assert await throttle.admit("10.0.0.1") == 0


def test_the_token_issuer_refuses_what_it_did_not_issue(
    tokens: FakeTokenIssuer, clock: FakeClock
) -> None:
    access = tokens.issue_access(1, "s1", clock.now())

    assert tokens.read_access(access).user_id == 1
    with pytest.raises(InvalidToken):
        tokens.read_access(access.replace("access:1:", "access:2:"))
    with pytest.raises(InvalidToken):
        tokens.read_refresh(access)


def test_the_token_issuer_expires_tokens_by_the_clock(
    tokens: FakeTokenIssuer, clock: FakeClock
) -> None:
    access = tokens.issue_access(1, "s1", clock.now())
    clock.advance(1799)
    assert tokens.read_access(access).session_id == "s1"

    clock.advance(1)

    with pytest.raises(TokenExpired):
        tokens.read_access(access)
