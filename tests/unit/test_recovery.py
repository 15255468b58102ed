"""Account recovery by email, on the fakes: which mails are queued, what their tokens unlock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain import events
from domain.accounts import Accounts
from domain.auth import Auth, LogIn, TokenLifetimes
from domain.errors import EmailNotVerified, InvalidCredentials, InvalidEmailToken, TokenRevoked
from domain.mail import EMAIL_CHANGED, RESET_PASSWORD, VERIFY_EMAIL, digest
from domain.model import Mail, NewUser, User, UserChanges
from domain.recovery import Recovery, ResetPassword
from tests.unit.fakes import (
    FakeClock,
    FakeLoginThrottle,
    FakeMfaChallenges,
    FakePasswordHasher,
    FakeSessionStore,
    FakeTokenIssuer,
    FakeUnitOfWorkFactory,
)
from tests.unit.support import ACCESS_TTL, REFRESH_TTL, People
from warden.bootstrap import Services

NEW_PASSWORD = "a brand new passphrase"
TTL = 3600  # the default WARDEN_EMAIL_TOKEN_TTL
LIMIT = 5  # the default WARDEN_MAIL_MAX_PER_HOUR


@pytest.fixture
def recovery(services: Services) -> Recovery:
    return services.recovery


def mails(uow: FakeUnitOfWorkFactory, kind: str, to: str) -> list[Mail]:
    return uow.mails.sent(kind, to)


def last_token(uow: FakeUnitOfWorkFactory, kind: str, to: str) -> str:
    token = mails(uow, kind, to)[-1].token
    assert token is not None
    return token


# --- registration and verification -----------------------------------------------------------


async def test_a_new_account_is_unverified_and_gets_one_verification_mail(
    people: People, uow: FakeUnitOfWorkFactory, clock: FakeClock
) -> None:
    created_at = clock.now()
    user = await people.add("alice")  # the clock moves on a second after it

    assert user.is_verified is False
    [mail] = uow.mails.sent()
    assert (mail.kind, mail.to, mail.user_id, mail.username) == (
        VERIFY_EMAIL,
        "alice@example.com",
        user.id,
        "alice",
    )
    assert mail.token is not None
    assert len(mail.token) >= 43  # 256 bits, URL-safe
    assert mail.expires_at == created_at + timedelta(seconds=TTL)


async def test_only_the_hash_of_a_token_is_stored(
    people: People, uow: FakeUnitOfWorkFactory
) -> None:
    await people.add("alice")
    token = last_token(uow, VERIFY_EMAIL, "alice@example.com")
    [stored] = uow.tokens.rows
    assert stored == digest(token)
    assert token.encode() not in stored


async def test_the_verification_token_verifies_the_address_once(
    people: People, recovery: Recovery, uow: FakeUnitOfWorkFactory
) -> None:
    user = await people.add("alice")
    token = last_token(uow, VERIFY_EMAIL, user.email)

    verified = await recovery.verify(token)

    assert verified.is_verified
    assert verified.id == user.id
    assert [e.user for e in uow.events(events.USER_VERIFIED)] == [verified.view()]
    with pytest.raises(InvalidEmailToken):
        await recovery.verify(token)


async def test_a_token_past_its_lifetime_is_refused(
    people: People, recovery: Recovery, uow: FakeUnitOfWorkFactory, clock: FakeClock
) -> None:
    user = await people.add("alice")
    token = last_token(uow, VERIFY_EMAIL, user.email)
    clock.advance(TTL - 2)
    assert (await recovery.verify(token)).is_verified

    await recovery.request_verification(user.email)  # verified: nothing is sent
    other = await people.add("bob")
    stale = last_token(uow, VERIFY_EMAIL, other.email)
    clock.advance(TTL)
    with pytest.raises(InvalidEmailToken):
        await recovery.verify(stale)


async def test_a_token_of_one_kind_does_not_do_the_other(
    people: People, recovery: Recovery, uow: FakeUnitOfWorkFactory
) -> None:
    user = await people.add("alice")
    verify = last_token(uow, VERIFY_EMAIL, user.email)
    with pytest.raises(InvalidEmailToken):
        await recovery.reset_password(ResetPassword(verify, NEW_PASSWORD))
    await recovery.forgot_password(user.email)
    reset = last_token(uow, RESET_PASSWORD, user.email)
    with pytest.raises(InvalidEmailToken):
        await recovery.verify(reset)


async def test_an_inactive_users_token_verifies_nothing(
    people: People, recovery: Recovery, uow: FakeUnitOfWorkFactory
) -> None:
    user = await people.add("alice")
    token = last_token(uow, VERIFY_EMAIL, user.email)
    await uow.users.update(user, UserChanges(is_active=False))
    with pytest.raises(InvalidEmailToken):
        await recovery.verify(token)


async def test_asking_for_verification_mails_only_an_active_unverified_account(
    people: People, recovery: Recovery, uow: FakeUnitOfWorkFactory
) -> None:
    unverified = await people.add("alice")
    verified = await people.add("bob")
    await recovery.verify(last_token(uow, VERIFY_EMAIL, verified.email))
    inactive = await people.add("carol", active=False)
    before = len(uow.mails.sent())

    for address in ("nobody@example.com", verified.email, inactive.email, "ALICE@example.com "):
        await recovery.request_verification(address)

    assert [m.to for m in uow.mails.sent()[before:]] == [unverified.email]
    assert len(uow.events(events.USER_VERIFICATION_REQUESTED)) == 4  # registrations + 1


async def test_a_username_that_looks_like_the_address_is_not_its_owner(
    people: People, recovery: Recovery, uow: FakeUnitOfWorkFactory
) -> None:
    await people.add("alice")
    before = len(uow.mails.sent())
    await recovery.forgot_password("alice")  # a username, not an email
    assert len(uow.mails.sent()) == before


async def test_past_the_hourly_limit_nothing_more_is_queued_and_an_hour_later_it_is(
    people: People, recovery: Recovery, uow: FakeUnitOfWorkFactory, clock: FakeClock
) -> None:
    user = await people.add("alice")  # the first verification mail of the hour
    for _ in range(LIMIT + 2):
        await recovery.request_verification(user.email)
        await recovery.forgot_password(user.email)
    assert len(mails(uow, VERIFY_EMAIL, user.email)) == LIMIT
    assert len(mails(uow, RESET_PASSWORD, user.email)) == LIMIT

    clock.advance(3600)
    await recovery.forgot_password(user.email)
    assert len(mails(uow, RESET_PASSWORD, user.email)) == LIMIT + 1


async def test_recovery_using_other_units_of_work_commits_through_them_alone(
    people: People, recovery: Recovery, uow: FakeUnitOfWorkFactory, clock: FakeClock
) -> None:
    """A worker binds the use cases to each request's units; the unbound ones stay as they were."""
    user = await people.add("alice")
    requests = FakeUnitOfWorkFactory(clock)
    requests.users = uow.users  # the same users, seen through other units of work
    before = len(uow.mails.sent())

    await recovery.using(requests).forgot_password(user.email)

    assert [m.to for m in requests.mails.sent(RESET_PASSWORD)] == [user.email]
    assert len(uow.mails.sent()) == before
    await recovery.forgot_password(user.email)  # its own, unbound
    assert len(uow.mails.sent(RESET_PASSWORD)) == 1


async def test_a_change_that_keeps_the_email_keeps_it_verified(
    people: People, recovery: Recovery, accounts: Accounts, uow: FakeUnitOfWorkFactory
) -> None:
    user = await people.add("alice")
    await recovery.verify(last_token(uow, VERIFY_EMAIL, user.email))
    me = await people.sign_in(user)

    changed = await accounts.update_me(me.principal, UserChanges(full_name="Alice"))

    assert changed.is_verified is True
    assert len(uow.mails.sent(VERIFY_EMAIL)) == 1  # its registration's only


async def test_a_second_link_of_a_verified_address_still_works_and_records_nothing_new(
    people: People, recovery: Recovery, uow: FakeUnitOfWorkFactory
) -> None:
    user = await people.add("alice")
    await recovery.request_verification(user.email)
    first, second = (m.token or "" for m in mails(uow, VERIFY_EMAIL, user.email))
    await recovery.verify(second)

    again = await recovery.verify(first)

    assert again.is_verified
    assert len(uow.events(events.USER_VERIFIED)) == 1
    with pytest.raises(InvalidEmailToken):
        await recovery.verify(first)


async def test_an_account_created_verified_is_sent_no_verification_mail(
    accounts: Accounts, uow: FakeUnitOfWorkFactory
) -> None:
    created = await accounts.create(
        NewUser("root@example.com", "root", "hashed:x", is_verified=True)
    )
    assert created.is_verified is True
    assert uow.mails.sent() == []
    assert uow.events(events.USER_VERIFICATION_REQUESTED) == []


async def test_email_changes_past_the_hourly_limit_change_the_email_but_mail_no_more(
    people: People, accounts: Accounts, uow: FakeUnitOfWorkFactory
) -> None:
    user = await people.add("alice", email="a0@example.com")
    me = await people.sign_in(user)
    for n in range(1, 2 * LIMIT + 3):  # back and forth: LIMIT + 1 moves to a1, and back
        await accounts.update_me(me.principal, UserChanges(email=f"a{n % 2}@example.com"))
    assert len(mails(uow, VERIFY_EMAIL, "a1@example.com")) == LIMIT
    assert len(mails(uow, EMAIL_CHANGED, "a0@example.com")) == LIMIT
    current = await uow.users.get(user.id)
    assert current is not None
    assert current.email == "a0@example.com"


# --- password reset --------------------------------------------------------------------------


async def test_a_reset_sets_the_password_ends_every_session_and_spends_the_other_links(
    people: People,
    recovery: Recovery,
    auth: Auth,
    uow: FakeUnitOfWorkFactory,
    sessions: FakeSessionStore,
) -> None:
    user = await people.add("alice")
    signed_in = [await people.sign_in(user) for _ in range(2)]
    await recovery.forgot_password(user.email)
    await recovery.forgot_password(user.email)
    first, second = (m.token or "" for m in mails(uow, RESET_PASSWORD, user.email))

    await recovery.reset_password(ResetPassword(second, NEW_PASSWORD))

    assert sessions.of_user(user.id) == []
    for s in signed_in:
        with pytest.raises(TokenRevoked):
            await auth.authenticate(s.bearer)
    with pytest.raises(InvalidCredentials):
        await auth.login(LogIn("alice", people.password_of(user)))
    assert (await auth.login(LogIn("alice", NEW_PASSWORD))).access_token
    changed = await uow.users.get(user.id)
    assert changed is not None
    assert changed.is_verified  # the reset proved the address
    assert [e.type for e in uow.events() if e.type == events.USER_PASSWORD_RESET] == [
        events.USER_PASSWORD_RESET
    ]
    for spent in (first, second):
        with pytest.raises(InvalidEmailToken):
            await recovery.reset_password(ResetPassword(spent, "yet another passphrase"))


async def test_a_wrong_reset_token_costs_no_bcrypt(
    recovery: Recovery, hasher: FakePasswordHasher
) -> None:
    with pytest.raises(InvalidEmailToken):
        await recovery.reset_password(ResetPassword("not-a-token", NEW_PASSWORD))
    assert hasher.hash_calls == 0


async def test_forgot_password_mails_only_an_active_account(
    people: People, recovery: Recovery, uow: FakeUnitOfWorkFactory
) -> None:
    active = await people.add("alice")
    inactive = await people.add("bob", active=False)
    await recovery.forgot_password(active.email)
    await recovery.forgot_password(inactive.email)
    await recovery.forgot_password("nobody@example.com")
    assert [m.to for m in uow.mails.sent(RESET_PASSWORD)] == [active.email]
    assert [e.user_id for e in uow.events(events.USER_PASSWORD_RESET_REQUESTED)] == [active.id]


async def test_a_reset_link_sent_before_an_email_change_no_longer_works(
    people: People, recovery: Recovery, accounts: Accounts, uow: FakeUnitOfWorkFactory
) -> None:
    user = await people.add("alice")
    await recovery.forgot_password(user.email)
    token = last_token(uow, RESET_PASSWORD, user.email)
    me = await people.sign_in(user)
    await accounts.update_me(me.principal, UserChanges(email="alice@elsewhere.example"))
    with pytest.raises(InvalidEmailToken):
        await recovery.reset_password(ResetPassword(token, NEW_PASSWORD))


# --- email change ----------------------------------------------------------------------------


async def test_an_email_change_unverifies_mails_the_new_address_and_notifies_the_old(
    people: People, recovery: Recovery, accounts: Accounts, uow: FakeUnitOfWorkFactory
) -> None:
    user = await people.add("alice")
    await recovery.verify(last_token(uow, VERIFY_EMAIL, user.email))
    me = await people.sign_in(user)

    changed = await accounts.update_me(me.principal, UserChanges(email="Alice@New.example"))

    assert changed.email == "alice@new.example"
    assert changed.is_verified is False
    [notice] = mails(uow, EMAIL_CHANGED, "alice@example.com")
    assert notice.token is None
    assert notice.new_email == "alice@new.example"
    [verification] = mails(uow, VERIFY_EMAIL, "alice@new.example")
    [event] = uow.events(events.USER_EMAIL_CHANGED)
    assert event.extra == {"previous_email": "alice@example.com"}
    assert (await recovery.verify(verification.token or "")).is_verified


async def test_a_superuser_may_change_an_email_and_mark_it_verified_at_once(
    people: People, accounts: Accounts, uow: FakeUnitOfWorkFactory
) -> None:
    root = await people.add("root", superuser=True)
    admin = (await people.sign_in(root)).principal
    user = await people.add("alice")

    changed = await accounts.update_user(
        admin, user.id, UserChanges(email="alice@new.example", is_verified=True)
    )

    assert changed.is_verified is True
    assert mails(uow, VERIFY_EMAIL, "alice@new.example") == []
    assert len(mails(uow, EMAIL_CHANGED, "alice@example.com")) == 1


async def test_a_user_cannot_verify_itself_through_its_profile(
    people: People, accounts: Accounts
) -> None:
    user = await people.add("alice")
    me = await people.sign_in(user)
    changed = await accounts.update_me(me.principal, UserChanges(is_verified=True))
    assert changed.is_verified is False


async def test_changing_nothing_but_the_case_of_nothing_sends_nothing(
    people: People, accounts: Accounts, uow: FakeUnitOfWorkFactory
) -> None:
    user = await people.add("alice")
    me = await people.sign_in(user)
    before = len(uow.mails.sent())
    await accounts.update_me(me.principal, UserChanges(email="ALICE@example.com"))
    await accounts.update_me(me.principal, UserChanges(full_name="Alice"))
    assert len(uow.mails.sent()) == before
    assert uow.events(events.USER_EMAIL_CHANGED) == []


# --- login with WARDEN_REQUIRE_VERIFIED_EMAIL ------------------------------------------------


def strict_auth(
    uow: FakeUnitOfWorkFactory,
    hasher: FakePasswordHasher,
    tokens: FakeTokenIssuer,
    sessions: FakeSessionStore,
    throttle: FakeLoginThrottle,
    clock: FakeClock,
) -> Auth:
    lifetimes = TokenLifetimes(ACCESS_TTL, REFRESH_TTL)
    challenges = FakeMfaChallenges(clock)
    return Auth(
        uow, hasher, tokens, sessions, throttle, clock, lifetimes, challenges, require_verified=True
    )


async def test_requiring_verified_email_refuses_an_unverified_login_only_with_the_right_password(
    people: People,
    recovery: Recovery,
    uow: FakeUnitOfWorkFactory,
    hasher: FakePasswordHasher,
    tokens: FakeTokenIssuer,
    sessions: FakeSessionStore,
    throttle: FakeLoginThrottle,
    clock: FakeClock,
) -> None:
    auth = strict_auth(uow, hasher, tokens, sessions, throttle, clock)
    user: User = await people.add("alice")
    with pytest.raises(InvalidCredentials):
        await auth.login(LogIn("alice", "wrong password"))
    with pytest.raises(EmailNotVerified):
        await auth.login(LogIn("alice", people.password_of(user)))
    assert sessions.of_user(user.id) == []

    await recovery.verify(last_token(uow, VERIFY_EMAIL, user.email))
    assert (await auth.login(LogIn("alice", people.password_of(user)))).access_token


async def test_without_the_requirement_an_unverified_user_logs_in(
    people: People, auth: Auth
) -> None:
    user = await people.add("alice")
    assert (await auth.login(LogIn("alice", people.password_of(user)))).access_token
