"""The fakes keep the ports' promises; the use-case tests lean on that."""

from __future__ import annotations

import pytest

from domain import events
from domain.errors import InvalidToken, TokenExpired
from domain.events import Event
from domain.model import NewUser, UserChanges
from domain.ports import Rotation
from tests.unit.fakes import (
    FakeClock,
    FakeLoginThrottle,
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


async def test_the_session_store_accepts_only_the_newest_refresh_id() -> None:
    store = FakeSessionStore()
    await store.create(1, "s1", "r1")

    assert await store.rotate("s1", "r1", "r2") is Rotation.ROTATED
    assert await store.rotate("s1", "r1", "r3") is Rotation.REUSED
    assert not await store.is_active("s1")
    assert await store.rotate("s1", "r2", "r4") is Rotation.MISSING


async def test_revoking_all_of_a_users_sessions_can_keep_one() -> None:
    store = FakeSessionStore()
    for sid, uid in (("s1", 1), ("s2", 1), ("s3", 1), ("other", 2)):
        await store.create(uid, sid, f"r-{sid}")

    await store.revoke_all(1, keep="s2")

    assert store.of_user(1) == ["s2"]
    assert store.of_user(2) == ["other"]


async def test_the_throttle_blocks_at_the_limit_until_the_window_ends(clock: FakeClock) -> None:
    throttle = FakeLoginThrottle(clock, max_failures=2, ip_max_failures=3, window=60)
    for _ in range(2):
        assert await throttle.blocked_for("user:1", "10.0.0.1") == 0
        await throttle.record_failure("user:1", "10.0.0.1")

    assert await throttle.blocked_for("user:1", None) == 60
    clock.advance(59.5)
    assert await throttle.blocked_for("user:1", None) == 1
    clock.advance(0.5)
    assert await throttle.blocked_for("user:1", None) == 0
    assert throttle.failures("user:1") == 0


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
