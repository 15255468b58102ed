"""Login: one answer for unknown user and wrong password, throttled, announced without secrets."""

from __future__ import annotations

import pytest

from domain import events
from domain.auth import Auth, LogIn
from domain.errors import InactiveUser, InvalidCredentials, TooManyAttempts
from domain.model import Origin, User
from tests.unit.fakes import (
    FakeClock,
    FakeLoginThrottle,
    FakePasswordHasher,
    FakeSessionStore,
    FakeTokenIssuer,
    FakeUnitOfWorkFactory,
)
from tests.unit.support import ACCESS_TTL, REFRESH_TTL, People, holder

PASSWORD = "alice-password"


@pytest.fixture
async def alice(people: People) -> User:
    return await people.add("Alice", email="alice@example.com", password=PASSWORD)


async def fail_logins(auth: Auth, login: str, times: int, origin: Origin | None = None) -> None:
    for _ in range(times):
        with pytest.raises(InvalidCredentials):
            await auth.login(LogIn(login, "wrong-password", origin))


@pytest.mark.parametrize(
    "login", ["Alice", "alice", "ALICE", "alice@example.com", "Alice@Example.COM", " alice "]
)
async def test_a_user_logs_in_by_username_or_email_in_any_case(
    auth: Auth, tokens: FakeTokenIssuer, alice: User, login: str
) -> None:
    pair = await auth.login(LogIn(login, PASSWORD))

    assert tokens.read_access(pair.access_token).user_id == alice.id
    assert tokens.read_refresh(pair.refresh_token).user_id == alice.id


async def test_a_login_name_that_is_one_users_username_and_anothers_email_is_the_usernames(
    auth: Auth, tokens: FakeTokenIssuer, people: People
) -> None:
    """The exact username wins, as in Postgres (storage.users). The wire's username rule
    allows no '@', but a name made before it, or by the CLI, may look like an email."""
    await people.add("carol", email="eve@example.com")  # first, so a scan in order meets her
    eve = await people.add("Eve@Example.com", email="someone@example.com")

    pair = await auth.login(LogIn("eve@example.com", people.password_of(eve)))

    assert tokens.read_access(pair.access_token).user_id == eve.id


async def test_a_login_opens_a_session_and_returns_a_bearer_pair(
    auth: Auth, tokens: FakeTokenIssuer, sessions: FakeSessionStore, alice: User
) -> None:
    pair = await auth.login(LogIn("alice", PASSWORD))

    access = tokens.read_access(pair.access_token)
    refresh = tokens.read_refresh(pair.refresh_token)
    assert access.session_id == refresh.session_id
    assert sessions.of_user(alice.id) == [access.session_id]
    assert pair.token_type == "bearer"
    assert pair.expires_in == ACCESS_TTL
    assert pair.refresh_expires_in == REFRESH_TTL


async def test_each_login_is_a_new_session(
    auth: Auth, sessions: FakeSessionStore, alice: User
) -> None:
    await auth.login(LogIn("alice", PASSWORD))
    await auth.login(LogIn("alice", PASSWORD))

    assert len(sessions.of_user(alice.id)) == 2


async def test_a_wrong_password_is_invalid_credentials(
    auth: Auth, sessions: FakeSessionStore, alice: User
) -> None:
    with pytest.raises(InvalidCredentials):
        await auth.login(LogIn("alice", "wrong-password"))

    assert sessions.of_user(alice.id) == []


async def test_an_unknown_user_is_invalid_credentials_too(auth: Auth, alice: User) -> None:
    with pytest.raises(InvalidCredentials) as unknown:
        await auth.login(LogIn("nobody", PASSWORD))
    with pytest.raises(InvalidCredentials) as wrong:
        await auth.login(LogIn("alice", "wrong-password"))

    assert unknown.value.as_error() == wrong.value.as_error()


async def test_an_unknown_user_burns_one_hash_like_a_wrong_password_costs_one(
    auth: Auth, hasher: FakePasswordHasher, alice: User
) -> None:
    with pytest.raises(InvalidCredentials):
        await auth.login(LogIn("nobody", "whatever-password"))
    assert (hasher.burn_calls, hasher.verify_calls) == (1, 0)

    with pytest.raises(InvalidCredentials):
        await auth.login(LogIn("alice", "wrong-password"))
    assert (hasher.burn_calls, hasher.verify_calls) == (1, 1)


@pytest.mark.parametrize("login", ["alice\x00", "\x00", "al\x00ice@example.com"], ids=ascii)
async def test_a_login_name_no_store_can_keep_is_an_unknown_user(
    auth: Auth, hasher: FakePasswordHasher, alice: User, login: str
) -> None:
    with pytest.raises(InvalidCredentials):
        await auth.login(LogIn(login, PASSWORD))

    assert (hasher.burn_calls, hasher.verify_calls) == (1, 0)  # the time of a wrong password


async def test_an_inactive_user_with_the_right_password_is_inactive_user(
    auth: Auth, people: People, sessions: FakeSessionStore
) -> None:
    dormant = await people.add("dormant", password=PASSWORD, active=False)

    with pytest.raises(InactiveUser):
        await auth.login(LogIn("dormant", PASSWORD))

    assert sessions.of_user(dormant.id) == []


async def test_an_inactive_user_with_a_wrong_password_is_only_invalid_credentials(
    auth: Auth, people: People
) -> None:
    await people.add("dormant", password=PASSWORD, active=False)

    with pytest.raises(InvalidCredentials):
        await auth.login(LogIn("dormant", "wrong-password"))


async def test_after_too_many_failures_even_the_right_password_is_refused_with_retry_after(
    auth: Auth, throttle: FakeLoginThrottle, hasher: FakePasswordHasher, alice: User
) -> None:
    await fail_logins(auth, "alice", throttle.max_failures)
    checks = hasher.checks

    with pytest.raises(TooManyAttempts) as blocked:
        await auth.login(LogIn("alice", PASSWORD))

    assert blocked.value.retry_after == throttle.window
    assert blocked.value.as_error()["retry_after"] == throttle.window
    assert hasher.checks == checks  # a blocked login costs no bcrypt


async def test_failures_by_username_and_by_email_count_for_the_same_account(
    auth: Auth, alice: User
) -> None:
    await fail_logins(auth, "alice", 2)
    await fail_logins(auth, "ALICE@example.com", 1)

    with pytest.raises(TooManyAttempts):
        await auth.login(LogIn("Alice", PASSWORD))


async def test_a_blocked_account_may_log_in_again_once_the_window_is_over(
    auth: Auth, throttle: FakeLoginThrottle, clock: FakeClock, alice: User
) -> None:
    await fail_logins(auth, "alice", throttle.max_failures)
    clock.advance(throttle.window - 100)
    with pytest.raises(TooManyAttempts) as blocked:
        await auth.login(LogIn("alice", PASSWORD))
    assert blocked.value.retry_after == 100

    clock.advance(100)

    assert await holder(auth, await auth.login(LogIn("alice", PASSWORD))) == alice.id


async def test_a_blocked_unknown_login_is_refused_as_well(
    auth: Auth, throttle: FakeLoginThrottle
) -> None:
    await fail_logins(auth, "nobody", throttle.max_failures)

    with pytest.raises(TooManyAttempts):
        await auth.login(LogIn("nobody", "whatever-password"))


async def test_a_successful_login_clears_the_account_count(
    auth: Auth, throttle: FakeLoginThrottle, alice: User
) -> None:
    await fail_logins(auth, "alice", throttle.max_failures - 1)
    await auth.login(LogIn("alice", PASSWORD))
    assert throttle.failures(f"user:{alice.id}") == 0

    await fail_logins(auth, "alice", throttle.max_failures - 1)

    assert await holder(auth, await auth.login(LogIn("alice", PASSWORD))) == alice.id


async def test_only_invalid_credentials_count_as_failures(
    auth: Auth, people: People, throttle: FakeLoginThrottle
) -> None:
    dormant = await people.add("dormant", password=PASSWORD, active=False)

    for _ in range(throttle.max_failures + 1):
        with pytest.raises(InactiveUser):
            await auth.login(LogIn("dormant", PASSWORD))

    assert throttle.failures(f"user:{dormant.id}") == 0


async def test_too_many_failures_from_one_address_block_every_account_from_it(
    auth: Auth, throttle: FakeLoginThrottle, alice: User
) -> None:
    for n in range(throttle.ip_max_failures):
        await fail_logins(auth, f"stranger{n}", 1, Origin(client_ip="203.0.113.9"))

    with pytest.raises(TooManyAttempts):
        await auth.login(LogIn("alice", PASSWORD, Origin(client_ip="203.0.113.9")))
    elsewhere = await auth.login(LogIn("alice", PASSWORD, Origin(client_ip="198.51.100.7")))
    assert await holder(auth, elsewhere) == alice.id


async def test_a_publisher_that_states_no_address_is_counted_as_one_address(
    auth: Auth, throttle: FakeLoginThrottle, alice: User
) -> None:
    billing = Origin(publisher="billing")
    for n in range(throttle.ip_max_failures):
        await fail_logins(auth, f"stranger{n}", 1, billing)

    with pytest.raises(TooManyAttempts):
        await auth.login(LogIn("alice", PASSWORD, billing))
    for elsewhere in (Origin(publisher="shipping"), Origin(client_ip="198.51.100.7")):
        assert await holder(auth, await auth.login(LogIn("alice", PASSWORD, elsewhere))) == alice.id


async def test_a_publishers_name_is_never_written_as_the_client_ip(
    auth: Auth, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    await fail_logins(auth, "alice", 1, Origin(publisher="billing"))
    await auth.login(LogIn("alice", PASSWORD, Origin(publisher="billing")))

    [failed] = uow.events(events.USER_LOGIN_FAILED)
    [logged_in] = uow.events(events.USER_LOGGED_IN)
    assert failed.extra == {"reason": "invalid_credentials"}
    assert set(logged_in.extra) == {"session_id", "amr"}  # no client_ip


async def test_a_login_records_logged_in_with_the_session_client_ip_and_factors(
    auth: Auth, uow: FakeUnitOfWorkFactory, tokens: FakeTokenIssuer, alice: User
) -> None:
    pair = await auth.login(LogIn("alice", PASSWORD, Origin(client_ip="198.51.100.7")))

    [event] = uow.events(events.USER_LOGGED_IN)
    assert event.user == alice.view()
    assert event.extra == {
        "session_id": tokens.read_access(pair.access_token).session_id,
        "client_ip": "198.51.100.7",
        "amr": ["pwd"],
    }


async def test_a_login_without_a_client_ip_records_none_in_the_event(
    auth: Auth, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    await auth.login(LogIn("alice", PASSWORD))

    [event] = uow.events(events.USER_LOGGED_IN)
    assert set(event.extra) == {"session_id", "amr"}


async def test_a_wrong_password_records_login_failed_for_the_user(
    auth: Auth, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    await fail_logins(auth, "alice", 1, Origin(client_ip="198.51.100.7"))

    [event] = uow.events(events.USER_LOGIN_FAILED)
    assert event.user == alice.view()
    assert event.extra == {"reason": "invalid_credentials", "client_ip": "198.51.100.7"}


async def test_an_unknown_user_records_login_failed_with_no_user_and_no_attempted_name(
    auth: Auth, uow: FakeUnitOfWorkFactory
) -> None:
    await fail_logins(auth, "nobody", 1)

    [event] = uow.events(events.USER_LOGIN_FAILED)
    assert event.user is None
    assert event.subject is None
    assert event.user_id is None
    assert event.extra == {"reason": "invalid_credentials"}
    assert "nobody" not in repr(event)


async def test_an_inactive_user_records_login_failed_as_inactive_user(
    auth: Auth, people: People, uow: FakeUnitOfWorkFactory
) -> None:
    dormant = await people.add("dormant", password=PASSWORD, active=False)

    with pytest.raises(InactiveUser):
        await auth.login(LogIn("dormant", PASSWORD, Origin(client_ip="198.51.100.7")))

    [event] = uow.events(events.USER_LOGIN_FAILED)
    assert event.user == dormant.view()
    assert event.extra == {"reason": "inactive_user", "client_ip": "198.51.100.7"}


async def test_a_blocked_login_records_login_failed_as_too_many_attempts(
    auth: Auth, throttle: FakeLoginThrottle, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    await fail_logins(auth, "alice", throttle.max_failures)

    with pytest.raises(TooManyAttempts):
        await auth.login(LogIn("alice", PASSWORD, Origin(client_ip="198.51.100.7")))

    event = uow.events(events.USER_LOGIN_FAILED)[-1]
    assert event.user == alice.view()
    assert event.extra == {
        "reason": "too_many_attempts",
        "attempts": throttle.max_failures,
        "limited_by": "account",
        "client_ip": "198.51.100.7",
    }
    assert uow.events(events.USER_LOGGED_IN) == []


def lockouts(uow: FakeUnitOfWorkFactory) -> list[events.Event]:
    return [
        e for e in uow.events(events.USER_LOGIN_FAILED) if e.extra["reason"] == TooManyAttempts.code
    ]


async def test_further_blocked_logins_in_the_window_record_no_more_events(
    auth: Auth,
    throttle: FakeLoginThrottle,
    clock: FakeClock,
    uow: FakeUnitOfWorkFactory,
    alice: User,
) -> None:
    await fail_logins(auth, "alice", throttle.max_failures)

    for password in (PASSWORD, "wrong-password", PASSWORD, PASSWORD):
        with pytest.raises(TooManyAttempts):
            await auth.login(LogIn("alice", password, Origin(client_ip="198.51.100.7")))

    [event] = lockouts(uow)
    assert event.extra["attempts"] == throttle.max_failures
    # The next window that locks the account is reported again, once.
    clock.advance(throttle.window)
    await fail_logins(auth, "alice", throttle.max_failures)
    for _ in range(3):
        with pytest.raises(TooManyAttempts):
            await auth.login(LogIn("alice", PASSWORD))
    assert len(lockouts(uow)) == 2


async def test_a_blocked_address_records_one_event_whatever_accounts_it_tries(
    auth: Auth, throttle: FakeLoginThrottle, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    for n in range(throttle.ip_max_failures):
        await fail_logins(auth, f"stranger{n}", 1, Origin(client_ip="203.0.113.9"))

    for login in ("alice", "nobody", "somebody-else", "alice"):
        with pytest.raises(TooManyAttempts):
            await auth.login(LogIn(login, PASSWORD, Origin(client_ip="203.0.113.9")))

    [event] = lockouts(uow)
    assert event.user == alice.view()
    assert event.extra == {
        "reason": "too_many_attempts",
        "attempts": throttle.ip_max_failures,
        "limited_by": "client_ip",
        "client_ip": "203.0.113.9",
    }


async def test_no_login_event_carries_a_password_or_hash(
    auth: Auth, uow: FakeUnitOfWorkFactory, alice: User
) -> None:
    await fail_logins(auth, "alice", 1)
    await auth.login(LogIn("alice", PASSWORD))

    for event in uow.events():
        assert PASSWORD not in repr(event)
        assert "wrong-password" not in repr(event)
        assert "hashed" not in repr(event)
